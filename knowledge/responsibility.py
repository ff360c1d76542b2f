"""Which authority does a service for a citizen's place.

The rule (after Klarschiff and FixMyStreet, see docs/examples-to-follow.md):

1. **Overrides** first: a registration for *this service* in a region of the citizen's chain, the
   most local one first (a municipality's override beats the county's).
2. Then the service's **level mark** (gemeinde | amt | kreis | land): walk the chain
   Gemeinde → Amt/Verband (when it belongs to one) → Kreis → Land and take the first authority
   registered for that region *and that level*. An Amt registered for level "amt" serves its member
   municipalities; an amt-free town registers itself for "amt"; a large town that took over a county
   task registers itself for that service (override) or for "kreis" as a whole.
3. Nothing registered → an explicit ``Responsible`` with ``authority_id=None`` and a reason. We never
   fall back silently to some other authority: a wrong office is worse than an honest "unknown".

Several offices registered for one key (service or level, same area) are one catalogue's locations: a
DLDB service is done at each of München's seven Bürgerbüros, Berlin lists 47 for "Anmeldung einer
Wohnung". All are kept (removing one location leaves the others responsible), and the answer is the same
in every process whatever order the rows were loaded in: the location that does the most services of its
catalogue (the full Bürgerbüro before a training desk that does three), then the smallest id. The others
are listed in ``Responsible.alternatives``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from knowledge.models import LEVELS

ROUTED_ROLE = "zustaendig"  # the role whose registrations decide the office (XZuFi Zuständigkeit)


def _role(row: object) -> str:
    return getattr(row, "role", None) or ROUTED_ROLE


class RegionLike(Protocol):
    ars: str
    level: str
    display_name: str


@dataclass(frozen=True, slots=True)
class Responsible:
    """The outcome of one resolution; ``authority_id`` is None when no authority is registered."""

    authority_id: str | None
    via: str  # "override" | "level" | "none"
    region_ars: str | None  # the region whose registration decided
    region_name: str | None
    level: str  # the service's level mark
    reason: str | None = None
    alternatives: tuple[str, ...] = ()  # further locations registered for the same key, in the same order


K = TypeVar("K")


class _Offices(Generic[K]):
    """key → the offices registered for it (usually one); the choice among several is deterministic."""

    __slots__ = ("_one", "_more")

    def __init__(self) -> None:
        # Most keys have one office: a plain dict keeps the national-scale index small; a set only for the rest.
        self._one: dict[K, str] = {}
        self._more: dict[K, set[str]] = {}

    def add(self, key: K, authority: str) -> bool:
        """Register; True when the (key, office) pair is new."""
        current = self._one.get(key)
        if current is None:
            self._one[key] = authority
            return True
        if current == authority:
            return False
        more = self._more.setdefault(key, {current})
        if authority in more:
            return False
        more.add(authority)
        return True

    def discard(self, key: K, authority: str) -> bool:
        """Forget one (key, office) pair; True when it was there."""
        more = self._more.get(key)
        if more is not None:
            if authority not in more:
                return False
            more.discard(authority)
            if len(more) == 1:
                self._one[key] = next(iter(more))
                del self._more[key]
            elif self._one[key] == authority:
                self._one[key] = next(iter(more))
            return True
        if self._one.get(key) == authority:
            del self._one[key]
            return True
        return False

    def has(self, key: K, authority: str) -> bool:
        """Whether ``authority`` is one of the offices of ``key``."""
        more = self._more.get(key)
        return authority in more if more is not None else self._one.get(key) == authority

    def drop(self, key: K) -> tuple[str, ...]:
        """Forget every office of ``key``; returns them."""
        more = self._more.pop(key, None)
        one = self._one.pop(key, None)
        if more is not None:
            return tuple(more)
        return (one,) if one is not None else ()

    def get(self, key: K, weight: Counter[str]) -> tuple[str, ...]:
        """The offices of ``key``, the chosen one first; empty when none is registered."""
        more = self._more.get(key)
        if more is None:
            one = self._one.get(key)
            return (one,) if one is not None else ()
        return tuple(sorted(more, key=lambda a: (-weight[a], a)))

    def __len__(self) -> int:
        return len(self._one) + sum(len(v) - 1 for v in self._more.values())


class ResponsibilityIndex:
    """In-memory view of the Responsibility table, updated incrementally by catalogue changes."""

    def __init__(self, rows: Iterable[object] = ()) -> None:
        # (service_id, region_ars) -> offices; (region_ars, level) -> offices
        self._overrides: _Offices[tuple[str, str]] = _Offices()
        self._levels: _Offices[tuple[str, str]] = _Offices()
        # Contact points (role "ansprechpunkt"): shown beside the office, never routed to.
        self._contacts: _Offices[tuple[str, str]] = _Offices()
        # How many routed registrations each office has: decides among several locations of one key.
        self._weight: Counter[str] = Counter()
        for row in rows:
            self.add(row)

    def add(self, row: object) -> None:
        """Register one Responsibility-like row (attributes service_id, region_ars, level, authority_id)."""
        service_id = getattr(row, "service_id", None)
        region = row.region_ars  # type: ignore[attr-defined]
        authority = row.authority_id  # type: ignore[attr-defined]
        if _role(row) != ROUTED_ROLE:
            self._contacts.add((service_id or f"ebene={getattr(row, 'level', None)}", region), authority)
            return
        if service_id:
            new = self._overrides.add((service_id, region), authority)
        else:
            level = getattr(row, "level", None)
            if level not in LEVELS:
                raise ValueError(f"level registration for region {region} needs a level in {LEVELS}, not {level!r}")
            new = self._levels.add((region, level), authority)
        if new:
            self._weight[authority] += 1

    def discard(self, row: object) -> None:
        """Forget one registration (no error when it is not there: deletes are idempotent).

        A row without an office (``authority_id`` empty) forgets its key with all its offices.
        """
        service_id = getattr(row, "service_id", None)
        region = row.region_ars  # type: ignore[attr-defined]
        authority = row.authority_id  # type: ignore[attr-defined]
        if _role(row) != ROUTED_ROLE:
            key = (service_id or f"ebene={getattr(row, 'level', None)}", region)
            if authority:
                self._contacts.discard(key, authority)
            else:
                self._contacts.drop(key)
            return
        offices = self._overrides if service_id else self._levels
        key = (service_id, region) if service_id else (region, getattr(row, "level", None))
        if not authority:
            gone = offices.drop(key)
        else:
            gone = (authority,) if offices.discard(key, authority) else ()
        for a in gone:
            self._weight[a] -= 1
            if self._weight[a] <= 0:
                del self._weight[a]

    def resolve(self, service_id: str | Sequence[str], level: str, chain: Sequence[RegionLike]) -> Responsible:
        """Resolve one service for a place given as its region chain, most local region first.

        ``service_id`` may be the ids of all texts of one Leistung valid at the place (most local first):
        a registration for any of them counts, the most local region first.
        """
        if not chain:
            return Responsible(None, "none", None, None, level, "kein Ort angegeben")
        ids = (service_id,) if isinstance(service_id, str) else tuple(service_id)
        for region in chain:
            for sid in ids:
                offices = self._overrides.get((sid, region.ars), self._weight)
                if offices:
                    return Responsible(offices[0], "override", region.ars, region.display_name, level,
                                       alternatives=offices[1:])
        for region in chain:
            offices = self._levels.get((region.ars, level), self._weight)
            if offices:
                return Responsible(offices[0], "level", region.ars, region.display_name, level,
                                   alternatives=offices[1:])
        place = chain[0].display_name
        return Responsible(
            None,
            "none",
            None,
            None,
            level,
            f"für Leistungen der Ebene {level} ist in {place} und darüber keine Stelle eingetragen",
        )

    def level_of(self, authority_id: str, service_ids: Sequence[str], chain: Sequence[RegionLike]) -> str | None:
        """The level at which ``authority_id`` is registered on ``chain`` (most local first): for one of
        ``service_ids`` (an override: its region's level, as ``RegionLike.level`` says) or for a level
        mark; None when it is registered for neither (an office agents chose beyond the registry)."""
        for region in chain:
            for sid in service_ids:
                if self._overrides.has((sid, region.ars), authority_id):
                    return getattr(region, "level", None)
        for region in chain:
            for level in LEVELS:
                if self._levels.has((region.ars, level), authority_id):
                    return level
        return None

    def contact_points(self, service_ids: Sequence[str], level: str, chain: Sequence[RegionLike]) -> list[str]:
        """Offices registered as contact points (role ``ansprechpunkt``) for the service on the chain."""
        out: list[str] = []
        for region in chain:
            for head in (*service_ids, f"ebene={level}"):
                for aid in self._contacts.get((head, region.ars), self._weight):
                    if aid not in out:
                        out.append(aid)
        return out

    def __len__(self) -> int:
        return len(self._overrides) + len(self._levels) + len(self._contacts)
