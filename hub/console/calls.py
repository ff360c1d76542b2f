"""Phone calls taken in the console: the call record, first-contact answers, forwards, the card to the caller.

A :class:`CallRecord` is started when the agent picks up and ends with one outcome:

* ``first_contact`` – the agent answered the question during the call (the D115 first-contact rate);
* ``forwarded`` – the question goes to the responsible authority: a ``phone`` case is created through
  intake with the agent's note, routed to the service and authority the agent chose, moved to
  ``forwarded`` (which starts the 24-working-hour clock of :mod:`hub.queue.sla`) and a forward e-mail to the
  authority is written to the outbox in the same transaction.

"Send to caller" puts the answer card as an SMS or e-mail into the outbox. Outbound messages belong to a
case, so the call gets its case then (created once per call, external id ``call-<id>``).

The call record holds no personal data: who took it, when, how long the caller waited, the outcome,
service and authority. The caller's contact and the note live in the case, where ``purge`` and ``forget``
(:mod:`hub.queue.privacy`) deal with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Float, ForeignKey, Integer, String, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, SQLModel

from hub import casework
from hub.queue.cases import CaseState, SlaPolicy, StaleState, TransitionError, UtcDateTime, case_t
from hub.queue.intake import write_requests
from hub.queue.requests import Contact, InboundRequest
from hub.queue.settings import QueueSettings
from knowledge.models import format_hours

OUTCOMES = ("first_contact", "forwarded")
CARD_CHANNELS = ("sms", "email")
OUTCOME_LABELS = {"first_contact": "beim Erstkontakt beantwortet", "forwarded": "weitergeleitet"}


class CallRecord(SQLModel, table=True):
    """One phone call an agent took."""

    __tablename__ = "hub_call"

    id: int | None = Field(default=None, primary_key=True)
    agent: str = Field(sa_column=Column(String(100), nullable=False, index=True))
    started_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False, index=True))
    ended_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    #: Seconds the caller waited before the agent picked up (from the telephone system); None = unknown.
    answered_within_s: float | None = Field(default=None, sa_column=Column(Float))
    outcome: str | None = Field(default=None, sa_column=Column(String(16), index=True))
    service_id: str | None = Field(default=None, sa_column=Column(String(100)))
    service_name: str | None = Field(default=None, sa_column=Column(String(500)))
    authority_id: str | None = Field(default=None, sa_column=Column(String(100), index=True))
    authority_name: str | None = Field(default=None, sa_column=Column(String(500)))
    case_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("hub_case.id", ondelete="SET NULL"), index=True)
    )


call_t = CallRecord.__table__


class CallError(Exception):
    """The call cannot be changed like that; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def start_call(engine: Engine, agent: str, answered_within_s: float | None = None,
               now: datetime | None = None) -> int:
    """Record that ``agent`` picked up a call; returns the call id."""
    if answered_within_s is not None and not 0 <= answered_within_s <= 86_400:
        raise CallError("Die Wartezeit muss zwischen 0 und 86400 Sekunden liegen.", 422)
    with engine.begin() as conn:
        return conn.execute(insert(call_t).values(agent=agent, started_at=_now(now),
                                                  answered_within_s=answered_within_s)
                            .returning(call_t.c.id)).scalar_one()


def get_call(engine: Engine, call_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(call_t).where(call_t.c.id == call_id)).mappings().first()
    return dict(row) if row else None


def call_json(row: Mapping[str, Any]) -> dict[str, Any]:
    iso = lambda v: v.isoformat() if v else None  # noqa: E731
    return {
        "id": row["id"], "agent": row["agent"], "started_at": iso(row["started_at"]),
        "ended_at": iso(row["ended_at"]), "answered_within_s": row["answered_within_s"],
        "outcome": row["outcome"], "service": {"id": row["service_id"], "name": row["service_name"]}
        if row["service_id"] else None,
        "authority": {"id": row["authority_id"], "name": row["authority_name"]} if row["authority_id"] else None,
        "case_id": row["case_id"],
    }


def _open_call(conn: Connection, call_id: int, agent: str, *, may_be_any_agent: bool = False) -> dict[str, Any]:
    row = conn.execute(select(call_t).where(call_t.c.id == call_id)).mappings().first()
    if row is None or (row["agent"] != agent and not may_be_any_agent):
        raise CallError("Diesen Anruf gibt es nicht.", 404)
    if row["outcome"] is not None:
        raise CallError(f"Der Anruf ist bereits beendet ({OUTCOME_LABELS.get(row['outcome'], row['outcome'])}).")
    return dict(row)


def _route_values(service: Mapping[str, Any], authority: Mapping[str, Any]) -> dict[str, Any]:
    """The route columns of the call record itself."""
    return {"service_id": service["id"], "service_name": service.get("name"),
            "authority_id": authority["id"], "authority_name": authority.get("name")}


def _call_case(engine: Engine, call: Mapping[str, Any], *, text: str, contact: Contact, location: str | None,
               queue: QueueSettings, policy: SlaPolicy) -> int:
    """The call's case, created through intake the first time (idempotent by ``call-<id>``)."""
    if call["case_id"]:
        return call["case_id"]
    req = InboundRequest(channel="phone", external_id=f"call-{call['id']}", text=text, contact=contact,
                         location=location, received_at=call["started_at"])
    result = write_requests(engine, [req], settings=queue, policy=policy)[0]
    with engine.begin() as conn:
        conn.execute(update(call_t).where(call_t.c.id == call["id"]).values(case_id=result.case_id))
    return result.case_id


def _retrying(fn):
    """Run ``fn`` again when the routing worker changed the new case at the same moment (up to 3 times)."""
    for attempt in range(3):
        try:
            return fn()
        except StaleState:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def finish_first_contact(engine: Engine, call_id: int, agent: str, *, service: Mapping[str, Any] | None,
                         authority: Mapping[str, Any] | None, policy: SlaPolicy,
                         now: datetime | None = None) -> dict[str, Any]:
    """The agent answered the question during the call. A case the call got (card sent) is answered too."""
    now = _now(now)

    def run() -> dict[str, Any]:
        with engine.begin() as conn:
            call = _open_call(conn, call_id, agent)
            values: dict[str, Any] = {"outcome": "first_contact", "ended_at": now}
            if service and authority:
                values |= _route_values(service, authority)
            elif service:
                values |= {"service_id": service["id"], "service_name": service.get("name")}
            if call["case_id"]:
                case = casework.load(conn, call["case_id"])
                if case["state"] in (CaseState.NEW, CaseState.ROUTED, CaseState.NEEDS_CLARIFICATION):
                    routed = service is not None and authority is not None
                    case = casework.take(conn, case, agent=agent, policy=policy, now=now,
                                         service=service if routed else None, authority=authority,
                                         reason="taken by the agent on the phone")
                    casework.move(conn, case, target=CaseState.ANSWERED, agent=agent, policy=policy,
                                  reason="answered on the phone", now=now,
                                  values=casework.route_values(service, authority, agent, now) if routed else None)
            conn.execute(update(call_t).where(call_t.c.id == call_id).values(**values))
        return get_call(engine, call_id) or {}

    return _retrying(run)


def forward_call(engine: Engine, call_id: int, agent: str, *, service: Mapping[str, Any],
                 authority: Mapping[str, Any], note: str, contact: Contact, location: str | None,
                 policy: SlaPolicy, queue: QueueSettings, now: datetime | None = None) -> dict[str, Any]:
    """Forward the caller's question to ``authority`` (``{"id", "name", "email"}``) with the agent's note.

    Returns ``{"call", "case_id", "token", "forward_due", "message_id"}``. Raises :class:`CallError`
    when the authority has no e-mail address or the call is finished.
    """
    now = _now(now)
    if not authority.get("email"):
        raise CallError(f"{authority.get('name') or authority['id']} has no e-mail address; forward by hand")
    note = note.strip()
    if not note:
        raise CallError("Bitte eine Notiz für die Behörde schreiben: Was braucht der Anrufer?", 422)
    with engine.connect() as conn:
        call = _open_call(conn, call_id, agent)
    case_id = _call_case(engine, call, text=f"Anruf beim Bürgertelefon: {note}", contact=contact, location=location,
                         queue=queue, policy=policy)

    def run() -> dict[str, Any]:
        with engine.begin() as conn:
            _open_call(conn, call_id, agent)
            case = dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())
            fill = {col: value for col, value in (("contact_name", contact.name), ("contact_phone", contact.phone),
                                                   ("contact_email", contact.email))
                    if value and not case[col]}
            if fill:
                conn.execute(update(case_t).where(case_t.c.id == case_id).values(**fill))
                case.update(fill)
            result = casework.forward(
                conn, case, authority=authority, service=service, agent=agent, policy=policy, queue=queue, now=now,
                body=lambda due: forward_text(agent=agent, service=service, note=note, contact=contact,
                                              location=location, due=due, policy=policy))
            due, message_id = result["forward_due"], result["message_id"]
            conn.execute(update(call_t).where(call_t.c.id == call_id).values(
                outcome="forwarded", ended_at=now, case_id=case_id, **_route_values(service, authority)))
            return {"case_id": case_id, "token": case["token"], "forward_due": due, "message_id": message_id}

    out = _retrying(run)
    out["call"] = get_call(engine, call_id)
    return out


def forward_text(*, agent: str, service: Mapping[str, Any], note: str, contact: Contact, location: str | None,
                 due: datetime | None, policy: SlaPolicy) -> str:
    """The e-mail to the authority: what the caller needs, how to reach them, by when to answer."""
    lines = [f"Das Bürgertelefon 115 leitet Ihnen ein Anliegen weiter (Mitarbeiter/in: {agent}).", ""]
    lines.append(f"Leistung: {service.get('name') or service['id']}")
    if location:
        lines.append(f"Ort: {location}")
    lines += ["", "Anliegen (Notiz aus dem Telefonat):", note, ""]
    reach = [f"Name: {contact.name}" if contact.name else "", f"Telefon: {contact.phone}" if contact.phone else "",
             f"E-Mail: {contact.email}" if contact.email else ""]
    reach = [r for r in reach if r]
    if reach:
        lines += ["Kontakt:", *reach, ""]
    if due is not None:
        local = due.astimezone(policy.clock.calendar.tz)
        lines.append(f"Bitte antworten Sie bis {local:%d.%m.%Y %H:%M} Uhr "
                     f"({policy.settings.forwarded_answer_hours:g} Arbeitsstunden, Service-Versprechen D115).")
    return "\n".join(lines)


def card_text(service: Mapping[str, Any], authority: Mapping[str, Any] | None) -> str:
    """The answer card as plain text, for an SMS or an e-mail to the caller."""
    lines = [service["name"]]
    if service.get("short_text"):
        lines.append(service["short_text"])
    if service.get("documents"):
        lines.append("Mitbringen: " + "; ".join(service["documents"]))
    if service.get("fees"):
        lines.append(f"Gebühren: {service['fees']}")
    if service.get("processing_time"):
        lines.append(f"Bearbeitungszeit: {service['processing_time']}")
    if service.get("online_url"):
        lines.append(f"Online: {service['online_url']}")
    if authority:
        lines.append("")
        lines.append(f"Zuständig: {authority['name']}")
        address = ", ".join(x for x in (authority.get("street"),
                                        f"{authority.get('postcode', '')} {authority.get('city', '')}".strip()) if x)
        if address:
            lines.append(address)
        if authority.get("phone"):
            lines.append(f"Tel. {authority['phone']}")
        if authority.get("email"):
            lines.append(authority["email"])
        if authority.get("opening_hours"):
            lines.append("Öffnungszeiten: " + format_hours(authority["opening_hours"]))
        if authority.get("website"):
            lines.append(authority["website"])
    return "\n".join(lines)


def send_card(engine: Engine, call_id: int, agent: str, *, service: Mapping[str, Any],
              authority: Mapping[str, Any] | None, channel: str, recipient: str, location: str | None,
              policy: SlaPolicy, queue: QueueSettings, now: datetime | None = None) -> dict[str, Any]:
    """Put the answer card into the outbox as an SMS or e-mail to the caller; returns ``{"case_id", "message_id"}``.

    ``recipient`` must already be normalised (E.164 number or lower-case address).
    """
    if channel not in CARD_CHANNELS:
        raise CallError("Die Karte geht per SMS oder E-Mail.", 422)
    now = _now(now)
    contact = Contact(phone=recipient) if channel == "sms" else Contact(email=recipient)
    with engine.connect() as conn:
        call = _open_call(conn, call_id, agent)
    case_id = _call_case(engine, call, text=f"Anruf beim Bürgertelefon: Auskunft zu „{service['name']}“",
                         contact=contact, location=location, queue=queue, policy=policy)

    def run() -> dict[str, Any]:
        with engine.begin() as conn:
            case = dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())
            if authority is not None:
                case = casework.take(conn, case, agent=agent, policy=policy, service=service, authority=authority,
                                     reason="card sent", now=now)
            subject = f"Ihre Auskunft: {service['name']}" if channel == "email" else None
            message_id = casework.send(conn, case, text=card_text(service, authority), agent=agent, channel=channel,
                                       recipient=recipient, subject=subject, queue=queue, now=now)
            return {"case_id": case_id, "message_id": message_id}

    try:
        return _retrying(run)
    except TransitionError as exc:
        raise CallError(str(exc)) from None
