"""Who may see which case: the one scope rule of console accounts and agent API tokens.

A :class:`Scope` is a set of authorities and regions (ARS prefixes: ``01060`` is Kreis Segeberg and
everything in it), or ``everything``. The console (:mod:`hub.console.auth`, accounts) and the case API
(:mod:`hub.http.api_cases`, agent tokens from :mod:`hub.http.tokens`) both build one with
:func:`make_scope` from ``(kind, value)`` rows and ask it the same questions: :meth:`Scope.covers_case`
for one case, :meth:`Scope.case_clause` for a list, so a rule changed here changes for both.

Deny by default: a scope with neither authorities nor regions covers nothing.

**The clarification queue** (issue 15): a case without an office (no place given, or nothing matched)
belongs to no authority, and no authority scope would ever show it. It is worked by the agents of the
hub's own area (:meth:`Scope.works_clarification`): the ``[regions] clarification_team`` authorities,
or — when none are configured — the agents of ``[regions] home_region`` itself (a region scope equal to
it or containing it, or an authority seated at it, e.g. ``kreis-01060``). They see every case without an
office that names no place or lies in the home region; one whose place lies in another area stays with
that area's region scopes (a federated hub), as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_

from hub.queue.cases import case_t

#: Kinds of scope rows: an authority id, a region (ARS prefix), or every authority (``all``; tokens only,
#: ``citizen-hub token add --all-authorities``; admins get it from their role).
SCOPE_KINDS = ("authority", "region", "all")


@dataclass(frozen=True)
class Scope:
    """What an account or token may see. ``everything`` for admins; otherwise authorities and region prefixes."""

    everything: bool = False
    authorities: frozenset[str] = frozenset()
    regions: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Covers nothing at all (an agent token from before scopes existed, an account without scope)."""
        return not self.everything and not self.authorities and not self.regions

    def _in_regions(self, ars: str | None) -> bool:
        return bool(ars) and any(ars.startswith(r) for r in self.regions)

    def covers_authority(self, authority_id: str | None, kb: Any = None) -> bool:
        """Whether cases of ``authority_id`` are visible (regions need the knowledge base's authorities)."""
        if self.everything:
            return True
        if not authority_id:
            return False
        if authority_id in self.authorities:
            return True
        authority = kb.authorities.get(authority_id) if kb is not None else None
        return authority is not None and self._in_regions(authority.region_ars)

    def authority_ids(self, kb: Any = None) -> set[str] | None:
        """Every authority id the scope covers (None = all)."""
        if self.everything:
            return None
        ids = set(self.authorities)
        if kb is not None and self.regions:
            ids.update(a.id for a in kb.authorities.values() if self._in_regions(a.region_ars))
        return ids

    def works_clarification(self, kb: Any = None) -> bool:
        """Whether this scope works the clarification queue (see the module docstring)."""
        if self.everything:
            return True
        if kb is None:
            return False
        team = getattr(kb, "clarification_team", frozenset())
        if team:
            return bool(self.authorities & team)
        home = _home(kb)
        if not home:
            return False
        if any(home.startswith(r) for r in self.regions):
            return True
        return any((a := kb.authorities.get(aid)) is not None and a.region_ars == home for aid in self.authorities)

    def covers_case(self, row: Any, kb: Any = None) -> bool:
        """Whether a case (a mapping of its columns) is visible.

        A routed case belongs to its authority. A case without an authority yet is visible to region
        scopes that contain the place the router found for it (``route_json.location.ars``).
        """
        if self.everything:
            return True
        if row.get("authority_id"):
            return self.covers_authority(row["authority_id"], kb)
        location = (row.get("route_json") or {}).get("location") or {}
        ars = location.get("ars") if isinstance(location, dict) else None
        if self._in_regions(ars):
            return True
        # The clarification queue: no place, or a place in the home region.
        if not self.works_clarification(kb):
            return False
        if not isinstance(ars, str) or not ars:
            return True
        home = _home(kb)
        return bool(home) and ars.startswith(home)

    def case_clause(self, kb: Any = None):
        """SQL condition on ``hub_case`` matching :meth:`covers_case` (None = no condition)."""
        if self.everything:
            return None
        c = case_t.c
        parts = []
        ids = self.authority_ids(kb) or set()
        if ids:
            parts.append(c.authority_id.in_(sorted(ids)))
        ars = c.route_json["location"]["ars"].as_string()
        if self.regions:
            parts.append(and_(c.authority_id.is_(None), or_(*[ars.startswith(r) for r in self.regions])))
        if self.works_clarification(kb):
            home = _home(kb)
            here = [c.route_json.is_(None), ars.is_(None), ars == ""] + ([ars.startswith(home)] if home else [])
            parts.append(and_(c.authority_id.is_(None), or_(*here)))
        if not parts:
            return c.id.is_(None)  # matches nothing: deny by default
        return or_(*parts)

    def describe(self) -> str:
        if self.everything:
            return "alle"
        items = sorted(self.authorities) + [f"Region {r}" for r in self.regions]
        return ", ".join(items) or "keine"


def _home(kb: Any) -> str:
    """``[regions] home_region`` as the knowledge base's place index knows it ('' without one)."""
    regions = getattr(kb, "regions", None)
    return str(getattr(regions, "home_region", "") or "")


def make_scope(role: str, rows: Iterable[tuple[str, str]]) -> Scope:
    """The scope of an account or token of ``role`` with scope rows ``(kind, value)``.

    ``admin`` (an account role) and a row of kind ``all`` (an ``--all-authorities`` token) see everything.
    """
    rows = list(rows)
    if role == "admin" or any(kind == "all" for kind, _ in rows):
        return Scope(everything=True)
    authorities = frozenset(v for k, v in rows if k == "authority")
    regions = tuple(sorted({v for k, v in rows if k == "region"}))
    return Scope(False, authorities, regions)
