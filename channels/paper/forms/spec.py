"""What a form shows, from the knowledge base and (optionally) a case: the one implementation behind
``citizen-hub paper form``, ``GET /api/paper/form`` and the console's "send the form by post".

The office is the authority responsible for the service at the citizen's place, resolved by the
knowledge base exactly as a lookup does. A case contributes its token (so the scan comes back to it),
the citizen's contact data (pre-filled) and, where an agent has routed or corrected it, its office.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.paper.code import Prefill
from channels.paper.forms.form import FormSpec, Office


class FormProblem(ValueError):
    """No form can be made; ``status`` is the HTTP status that fits (400, 404, 409)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def prefill_from_case(case: Mapping[str, Any]) -> Prefill:
    return Prefill(name=case.get("contact_name") or "", address=case.get("contact_address") or "",
                   email=case.get("contact_email") or "", phone=case.get("contact_phone") or "")


def form_spec(kb: Any, service_id: str, location: str | None = None,
              case: Mapping[str, Any] | None = None) -> FormSpec:
    """The form for ``service_id`` at ``location`` (default: the case's place). Raises :class:`FormProblem`."""
    service = kb.view_at(service_id)
    if service is None:
        raise FormProblem(f"Keine Leistung mit der Kennung {service_id!r}", 404)
    location = (location or "").strip() or (case.get("location") if case else None) or ""
    if not location:
        raise FormProblem("Um die zuständige Stelle zu finden, wird ein Ort gebraucht (location)")
    place = kb.resolve_place(location)
    if place is None or (place.match is None and not place.ambiguous):
        raise FormProblem(f"Kein Ort gefunden für {location!r}" + (f": {place.reason}" if place and place.reason else ""))
    service = kb.view_at(service, place)  # the text and fees the place's lookup shows (knowledge base rule)
    # The knowledge base's own rule for "this service at this place" (overrides, level marks, a
    # shared postcode whose places all have one office), the same a lookup shows the agent.
    answer = kb._answer(service, 100.0, "form", place)
    authority = answer.authority
    if case is not None and case.get("authority_id") and case.get("service_id") in (service.id, service_id.strip()):
        # An agent routed or corrected this case: its office is the one to write to.
        authority = kb.authorities.get(case["authority_id"]) or authority
    if authority is None:
        if answer.authority_candidates:
            names = "; ".join(f"{a.name} ({', '.join(r.display_name for r in places[:3])})"
                              for a, places in answer.authority_candidates[:4])
            raise FormProblem(f"Der Ort {location!r} ist mehrdeutig, und die Stellen unterscheiden sich: {names}", 409)
        reason = answer.responsible.reason if answer.responsible else None
        raise FormProblem(f"Keine Stelle ist zuständig für {service.name!r} in {location!r}"
                          + (f": {reason}" if reason else ""), 409)
    region = place.match
    return FormSpec(
        service_id=service.id, service_name=service.name, office=Office.from_authority(authority),
        documents=tuple(service.documents or ()), online_url=service.online_url or "",
        location=region.ars if region else location, location_name=region.display_name if region else location,
        case_id=case.get("id") if case else None, case_token=case.get("token") if case else None,
        prefill=prefill_from_case(case) if case else Prefill(),
    )
