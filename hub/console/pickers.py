"""Forward and re-route pick the office and the service from a search, never a typed internal id.

The offices offered for a case are the knowledge base's offices valid at the case's place: those seated
on the place's region chain (Gemeinde, Amt, Kreis, Land, and the Bund's), plus the office the catalogue
makes responsible at the place for the services the typed words find (:meth:`KnowledgeBase.search`, the
lookup's own ranking — "Führerschein" offers the Fahrerlaubnisbehörde). A case without a place sees every
office. The services offered are :meth:`KnowledgeBase.search` at the case's place, each with the office
responsible there.

The same rules check what the browser posts (:func:`check_office`, :func:`check_service`): an id that is
unknown or not valid at the case's place is refused with a German message (:class:`PickError`, 422).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from knowledge.regions import PlaceResolution, RegionInfo
from knowledge.text import fold, tokenize

MAX_QUERY = 200


class PickError(Exception):
    """The chosen office or service cannot be taken for this case (``status`` is the HTTP status)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def case_place(kb: Any, row: Mapping[str, Any]) -> RegionInfo | None:
    """The case's place: the one the router found (``route_json.location.ars``), else its location text."""
    location = (row.get("route_json") or {}).get("location") or {}
    ars = location.get("ars") if isinstance(location, dict) else None
    region = kb.regions.get(ars) if isinstance(ars, str) and ars else None
    if region is None and row.get("location"):
        found = kb.resolve_place(row["location"])
        region = found.match if found is not None else None
    return region


def _seated_here(kb: Any, region: RegionInfo | None) -> list[Any]:
    """Offices seated on the place's chain, most local first (every office when there is no place)."""
    offices = list(kb.authorities.values())
    if region is None:
        return sorted(offices, key=lambda a: (a.name, a.id))
    order = {r.ars: i for i, r in enumerate(kb.regions.chain(region.ars))}
    here = [a for a in offices if a.region_ars in order or not a.region_ars]
    return sorted(here, key=lambda a: (order.get(a.region_ars, len(order)), a.name, a.id))


def _haystack(a: Any) -> str:
    return fold(" ".join((a.name, a.kind or "", a.city or "", a.postcode or "", a.street or "")))


def _responsible(kb: Any, service: Any, region: RegionInfo | None) -> Any:
    if region is None:
        return None
    return kb.authorities.get(kb.responsible_for(service, region).authority_id or "")


def _service_hits(kb: Any, text: str, region: RegionInfo | None, limit: int) -> list[tuple[Any, float]]:
    place = PlaceResolution(region) if region is not None else None
    return [(v, score) for v, score, _m in kb.search(text, place, limit) if score >= kb.settings.min_score]


def office_json(a: Any, why: str = "") -> dict[str, Any]:
    address = ", ".join(x for x in (a.street, f"{a.postcode} {a.city}".strip()) if x)
    return {"id": a.id, "name": a.name, "kind": a.kind, "address": address, "why": why}


def find_offices(kb: Any, row: Mapping[str, Any], text: str, limit: int = 10) -> list[dict[str, Any]]:
    """Offices for the case's forward/re-route picker; the case's own office first when nothing is typed."""
    region = case_place(kb, row)
    words = tokenize((text or "")[:MAX_QUERY])
    out: dict[str, dict[str, Any]] = {}
    if not words:
        current = kb.authorities.get(row.get("authority_id") or "")
        if current is not None:
            out[current.id] = office_json(current, "bisher zuständig")
        for a in _seated_here(kb, region):
            if len(out) >= limit:
                break
            out.setdefault(a.id, office_json(a, "am Ort des Falls"))
        return list(out.values())
    for a in _seated_here(kb, region):
        hay = _haystack(a)
        if all(w in hay for w in words):
            out.setdefault(a.id, office_json(a))
            if len(out) >= limit:
                return list(out.values())
    for view, _score in _service_hits(kb, text, region, 5):
        a = _responsible(kb, view, region)
        if a is not None:
            out.setdefault(a.id, office_json(a, f"zuständig für {view.name}"))
    return list(out.values())[:limit]


def find_services(kb: Any, row: Mapping[str, Any], text: str, limit: int = 10) -> list[dict[str, Any]]:
    """Services valid at the case's place for the re-route picker, each with the office responsible there."""
    if not (text or "").strip():
        return []
    region = case_place(kb, row)
    out = []
    for view, score in _service_hits(kb, text[:MAX_QUERY], region, limit):
        a = _responsible(kb, view, region)
        out.append({"id": view.id, "name": view.name, "score": round(score, 1),
                    "authority": office_json(a) if a is not None else None})
    return out


def _place_name(region: RegionInfo | None) -> str:
    return region.display_name if region is not None else "ohne Ort"


def check_service(kb: Any, row: Mapping[str, Any], service_id: str | None) -> Any:
    """The service ``service_id`` if it is known and valid at the case's place; :class:`PickError` otherwise."""
    service = kb.services.get(service_id or "")
    if service is None:
        raise PickError("Unbekannte Leistung – bitte eine Leistung aus der Suche wählen.")
    region = case_place(kb, row)
    if region is not None and kb.view_at(service, region) is None and service.owner_ars:
        raise PickError(f"„{service.name}“ wird am Ort des Falls ({_place_name(region)}) nicht angeboten – "
                        "bitte eine Leistung aus der Suche wählen.")
    return service


def check_office(kb: Any, row: Mapping[str, Any], authority_id: str | None, service: Any = None) -> Any:
    """The office ``authority_id`` if it is known and valid at the case's place; :class:`PickError` otherwise.

    Valid: the case's own office, an office seated on the place's chain, or the office responsible there for
    the case's (or the chosen) service.
    """
    authority = kb.authorities.get(authority_id or "")
    if authority is None:
        raise PickError("Unbekannte Behörde – bitte eine Behörde aus der Suche wählen.")
    if authority.id == row.get("authority_id"):
        return authority
    region = case_place(kb, row)
    if region is None:
        return authority
    if any(a.id == authority.id for a in _seated_here(kb, region)):
        return authority
    for s in (service, kb.services.get(row.get("service_id") or "")):
        if s is not None and (r := _responsible(kb, s, region)) is not None and r.id == authority.id:
            return authority
    raise PickError(f"{authority.name} ist für den Ort des Falls ({_place_name(region)}) nicht zuständig – "
                    "bitte eine Behörde aus der Suche wählen.")


def responsible_office(kb: Any, row: Mapping[str, Any], service: Any) -> Any:
    """The office responsible for ``service`` at the case's place (None without a place or registration)."""
    return _responsible(kb, service, case_place(kb, row))
