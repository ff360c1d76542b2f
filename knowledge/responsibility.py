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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

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


class ResponsibilityIndex:
    """In-memory view of the Responsibility table, updated incrementally by catalogue changes."""

    def __init__(self, rows: Iterable[object] = ()) -> None:
        # (service_id, region_ars) -> authority_id; (region_ars, level) -> authority_id
        self._overrides: dict[tuple[str, str], str] = {}
        self._levels: dict[tuple[str, str], str] = {}
        # Contact points (role "ansprechpunkt"): shown beside the office, never routed to.
        self._contacts: dict[tuple[str, str], str] = {}
        for row in rows:
            self.add(row)

    def add(self, row: object) -> None:
        """Register one Responsibility-like row (attributes service_id, region_ars, level, authority_id)."""
        service_id = getattr(row, "service_id", None)
        region = row.region_ars  # type: ignore[attr-defined]
        authority = row.authority_id  # type: ignore[attr-defined]
        if _role(row) != ROUTED_ROLE:
            self._contacts[(service_id or f"ebene={getattr(row, 'level', None)}", region)] = authority
            return
        if service_id:
            self._overrides[(service_id, region)] = authority
        else:
            level = getattr(row, "level", None)
            if level not in LEVELS:
                raise ValueError(f"level registration for region {region} needs a level in {LEVELS}, not {level!r}")
            self._levels[(region, level)] = authority

    def discard(self, row: object) -> None:
        """Forget one registration (no error when it is not there: deletes are idempotent)."""
        service_id = getattr(row, "service_id", None)
        if _role(row) != ROUTED_ROLE:
            self._contacts.pop((service_id or f"ebene={getattr(row, 'level', None)}", row.region_ars), None)  # type: ignore[attr-defined]
            return
        if service_id:
            self._overrides.pop((service_id, row.region_ars), None)  # type: ignore[attr-defined]
        else:
            self._levels.pop((row.region_ars, getattr(row, "level", None)), None)  # type: ignore[attr-defined]

    def resolve(self, service_id: str | Sequence[str], level: str, chain: Sequence[RegionLike]) -> Responsible:
        """Resolve one service for a place given as its region chain, most local region first.

        ``service_id`` may be the ids of all texts of one Leistung valid at the place (most local first):
        a registration for any of them counts, the most local region first.
        """
        if not chain:
            return Responsible(None, "none", None, None, level, "no place given")
        ids = (service_id,) if isinstance(service_id, str) else tuple(service_id)
        for region in chain:
            for sid in ids:
                authority = self._overrides.get((sid, region.ars))
                if authority:
                    return Responsible(authority, "override", region.ars, region.display_name, level)
        for region in chain:
            authority = self._levels.get((region.ars, level))
            if authority:
                return Responsible(authority, "level", region.ars, region.display_name, level)
        place = chain[0].display_name
        return Responsible(
            None,
            "none",
            None,
            None,
            level,
            f"no authority is registered for {level}-level services at {place} or above",
        )

    def level_of(self, authority_id: str, service_ids: Sequence[str], chain: Sequence[RegionLike]) -> str | None:
        """The level at which ``authority_id`` is registered on ``chain`` (most local first): for one of
        ``service_ids`` (an override: its region's level, as ``RegionLike.level`` says) or for a level
        mark; None when it is registered for neither (an office agents chose beyond the registry)."""
        for region in chain:
            for sid in service_ids:
                if self._overrides.get((sid, region.ars)) == authority_id:
                    return getattr(region, "level", None)
        for region in chain:
            for level in LEVELS:
                if self._levels.get((region.ars, level)) == authority_id:
                    return level
        return None

    def contact_points(self, service_ids: Sequence[str], level: str, chain: Sequence[RegionLike]) -> list[str]:
        """Offices registered as contact points (role ``ansprechpunkt``) for the service on the chain."""
        out: list[str] = []
        for region in chain:
            for head in (*service_ids, f"ebene={level}"):
                aid = self._contacts.get((head, region.ars))
                if aid and aid not in out:
                    out.append(aid)
        return out

    def __len__(self) -> int:
        return len(self._overrides) + len(self._levels) + len(self._contacts)
