"""An accepted page → the normalized :class:`~hub.requests.InboundRequest` for the queue's intake.

* idempotency key: form id, page and a hash of the page's content, so the same scan ingested twice is
  one request, while a second, different page of the same form is another;
* the case: the token from the signed code (``case_token``) and the form id (``in_reply_to``, for a
  form sent as an outbound letter), so intake threads it onto the case the form was made for;
* the citizen: the pre-filled data from the code, overridden by what was typed into a form completed
  on screen; a value that does not validate (a mistyped e-mail address) is left out, not fatal;
* the page image and the cut-out box go along as attachments, for the agent and the audit.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import ValidationError

from channels.paper.scans.reader import PageOutcome
from hub.queue.requests import AttachmentIn, Contact, InboundRequest

# Control characters other than tab and line break: typed into a PDF form they would make the request
# invalid, and they carry nothing a person wrote.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")



def _clean(text: str) -> str:
    return _CONTROL.sub(" ", text.encode("utf-8", "replace").decode("utf-8"))


#: Form field name -> Contact attribute.
_CONTACT_FIELDS = {"name": "name", "anschrift": "postal_address", "email": "email", "telefon": "phone"}


def _valid(attr: str, value: str) -> bool:
    try:
        Contact(**{attr: value})
    except ValidationError:
        return False
    return True


def contact_of(outcome: PageOutcome) -> Contact:
    """The citizen: what the code was pre-filled with, where valid; a valid typed value replaces it."""
    values: dict[str, str] = {}
    if outcome.code is not None:
        p = outcome.code.prefill
        for attr, value in (("name", p.name), ("postal_address", p.address), ("email", p.email), ("phone", p.phone)):
            if value and _valid(attr, value):
                values[attr] = value
    for field, attr in _CONTACT_FIELDS.items():
        typed = _clean(outcome.fields.get(field, "")).strip()
        if typed and _valid(attr, typed):
            values[attr] = typed
    return Contact(**values)


def to_request(outcome: PageOutcome, *, service_name: str | None = None, raw_ref: str | None = None,
               received_at: datetime | None = None) -> InboundRequest:
    """The request of an accepted page. ``ValueError`` for a rejected one."""
    if not outcome.accepted or outcome.code is None:
        raise ValueError("only an accepted page becomes a request")
    code = outcome.code
    attachments = []
    stem = f"{code.form_id}-{outcome.page}"
    if outcome.page_jpeg:
        attachments.append(AttachmentIn(filename=f"{stem}-seite.jpg", content_type="image/jpeg",
                                        data=outcome.page_jpeg))
    if outcome.box_jpeg:
        attachments.append(AttachmentIn(filename=f"{stem}-anliegen.jpg", content_type="image/jpeg",
                                        data=outcome.box_jpeg))
    subject = f"Papierformular {code.form_id}" + (f": {service_name}" if service_name else "")
    return InboundRequest(
        channel="paper",
        external_id=outcome.external_id,
        received_at=received_at or datetime.now(UTC),
        contact=contact_of(outcome),
        text=_clean(outcome.text),
        subject=subject[:500],
        location=code.location or None,
        in_reply_to=[code.form_id],
        case_token=code.case_token,
        attachments=attachments,
        raw_ref=raw_ref,
    )
