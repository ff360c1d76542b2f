"""Every action an agent takes on a case, implemented once.

The console's pages, the JSON API (``/api/cases/{id}/…``), the phone-call records and the channels all
call these functions; none of them writes a case's state or an outbound message on its own. Each action
is one step inside the caller's transaction (``conn``): it checks what the state table allows, moves the
case through :func:`hub.queue.cases.transition` (which keeps the SLA clock and writes the audit log),
and puts any message for the citizen or an office into the outbox in the same transaction, so an answer
is never sent for a change that was rolled back. :func:`run` opens that transaction for one case.

The actions:

* :func:`take` – a case the router has not seen yet (``new``) goes to ``routed`` (or
  ``needs_clarification`` without an office) before an agent acts on it, and gets its agent;
* :func:`reply` – answer the citizen by the channel they chose (else the case's own); the case is ``answered``, or
  ``waiting_for_citizen`` when the answer asks something back;
* :func:`forward` – send the case to the responsible office by e-mail; its answer is due within the
  forwarded-answer hours (D115: 24 working hours);
* :func:`reroute` – correct service and office; the correction is kept as a labelled example;
* :func:`close` – close with a reason;
* :func:`acknowledge` – a channel's automatic acknowledgement of a request (no agent, no state change);
* :func:`send` – a message to the citizen that does not change the state (the answer card of a call);
  :func:`send_many` the same for many, e.g. answers a channel delivered itself;
* :func:`answer_many` – cases a channel answered itself (the direct answer of an SMS or of the phone menu);
* :func:`move` – any other transition the state table allows;
* :func:`request_callback` – the citizen asked to be called back (web form, phone menu): the case's number and
  reply channel (:func:`hub.queue.outbox.callback_number`); the agent's call answers it (:mod:`hub.console.calls`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from hub.plugins import recipient_refusal
from hub.queue.cases import (
    CaseState,
    SlaPolicy,
    StaleState,
    audit,
    case_t,
    example_t,
    transition,
    transition_many,
    utcnow,
)
from hub.queue.outbox import (
    CALLBACK_CHANNEL,
    answer_route,
    callback_number,
    enqueue,
    enqueue_many,
    message_row,
)
from hub.queue.requests import channel_label
from hub.queue.routing import case_text
from hub.queue.settings import QueueSettings

__all__ = [
    "PICKUP_CHANNELS",
    "acknowledge",
    "CaseNotFound",
    "CaseworkError",
    "actor_name",
    "answer_many",
    "close",
    "forward",
    "forward_body",
    "load",
    "move",
    "reply",
    "reroute",
    "request_callback",
    "route_values",
    "run",
    "send",
    "send_many",
    "take",
]

#: Channels whose answers the citizen picks up (API client, status page, an Open311 client's GET requests):
#: no address is needed.
PICKUP_CHANNELS = frozenset({"api", "web", "open311"})

T = TypeVar("T")


class CaseworkError(Exception):
    """An action that cannot be done as asked; the message says why in German, ``status`` is the HTTP
    status the entry points answer and ``code`` the stable, machine-readable kind (the API's ``code``)."""

    def __init__(self, message: str, status: int = 409, code: str = "conflict", **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details


class CaseNotFound(CaseworkError):
    def __init__(self, case_id: int) -> None:
        super().__init__(f"Fall {case_id} gibt es nicht", 404, "not_found", case_id=case_id)


def actor_name(agent: str) -> str:
    """How an agent appears in the audit log and as a message's author."""
    return f"agent:{agent}"


def load(conn: Connection, case_id: int) -> dict[str, Any]:
    """The case's columns; :class:`CaseNotFound` when there is none."""
    row = conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().first()
    if row is None:
        raise CaseNotFound(case_id)
    return dict(row)


def run(engine: Engine, case_id: int, action: Callable[..., T], /, *,
        visible: Callable[[Mapping[str, Any]], bool] | None = None, **kwargs: Any) -> T:
    """Run ``action(conn, case_row, **kwargs)`` in one transaction on the case as it is now.

    ``visible(case_row)`` (the caller's scope, :meth:`hub.scope.Scope.covers_case`) is asked inside that
    transaction: a case outside it is :class:`CaseNotFound`, as if it did not exist. The routing worker
    may move a ``new`` case at the same moment; the action is then tried again on the case as the worker
    left it (up to three times), never applied to a state that has changed.
    """
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                row = load(conn, case_id)
                if visible is not None and not visible(row):
                    raise CaseNotFound(case_id)
                return action(conn, row, **kwargs)
        except StaleState:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _assign(row: Mapping[str, Any], agent: str) -> dict[str, Any]:
    """The agent who first acts on a case becomes its agent."""
    return {} if row.get("assigned_agent") else {"assigned_agent": agent}


def route_values(service: Mapping[str, Any], authority: Mapping[str, Any], agent: str,
                 now: datetime) -> dict[str, Any]:
    """The case columns of a route an agent set (``{"id", "name"}`` of service and office)."""
    return {"service_id": service["id"], "service_name": service.get("name"),
            "authority_id": authority["id"], "authority_name": authority.get("name"),
            "route_reason": f"zugeordnet von {actor_name(agent)}", "routed_at": now}


def take(conn: Connection, row: dict[str, Any], *, agent: str, policy: SlaPolicy,
         service: Mapping[str, Any] | None = None, authority: Mapping[str, Any] | None = None,
         reason: str = "von der Sachbearbeitung übernommen", now: datetime | None = None) -> dict[str, Any]:
    """A case still ``new`` leaves the router's hands: ``routed`` when it has an office (its own or the
    ``service``/``authority`` given), else ``needs_clarification``. Returns the case as it is now."""
    if row["state"] != CaseState.NEW:
        return row
    now = now or utcnow()
    values = _assign(row, agent)
    if service is not None and authority is not None:
        values |= route_values(service, authority, agent, now)
    target = CaseState.ROUTED if values.get("authority_id") or row["authority_id"] else CaseState.NEEDS_CLARIFICATION
    changes = transition(conn, row, target, actor=actor_name(agent), reason=reason, policy=policy, now=now,
                         values=values)
    return {**row, **changes}


def move(conn: Connection, row: dict[str, Any], *, target: str, agent: str, policy: SlaPolicy,
         reason: str | None = None, values: Mapping[str, Any] | None = None,
         now: datetime | None = None) -> dict[str, Any]:
    """Any transition the state table allows (``POST /api/cases/{id}/transition``); returns the columns written."""
    return transition(conn, row, target, actor=actor_name(agent), reason=reason, policy=policy, now=now,
                      values={**_assign(row, agent), **(values or {})})


def reply(conn: Connection, row: dict[str, Any], *, text: str, agent: str, policy: SlaPolicy,
          queue: QueueSettings, await_citizen: bool = False, reason: str | None = None,
          sendable: Collection[str] | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Answer the citizen through the outbox, by the channel :func:`hub.queue.outbox.answer_route` names
    (the one the citizen chose, else the case's own).

    ``sendable``, if given, are the channels this hub can send on: an answer on any other channel is
    refused (409) instead of failing later in the outbox, and so is one to a recipient the channel cannot
    reach (``Channel.recipients``: a number that sent STOP). Returns ``{"message_id", "state"}``.
    """
    now = now or utcnow()
    channel, recipient = answer_route(row)
    number = callback_number(row)
    if number is not None:
        raise CaseworkError(f"Rückruf erbeten: {number}. Bitte rufen Sie an und halten Sie den Anruf fest "
                            "(Rückruf starten); eine schriftliche Antwort geht hier nicht.", code="callback_requested",
                            case_id=row["id"])
    if sendable is not None and channel not in sendable and channel not in PICKUP_CHANNELS:
        raise CaseworkError(f"Auf diesem Hub ist der Kanal „{channel_label(channel)}“ nicht eingerichtet; "
                            "bitte antworten Sie auf anderem Weg", code="channel_missing", channel=channel)
    if channel not in PICKUP_CHANNELS and recipient is None:
        raise CaseworkError(f"Der Fall hat keine Adresse für eine Antwort über „{channel_label(channel)}“",
                            code="no_address", channel=channel)
    refusal = recipient_refusal(conn, channel, recipient)
    if refusal:
        raise CaseworkError(refusal, code="recipient_refused", channel=channel)
    row = take(conn, row, agent=agent, policy=policy, now=now)
    target = CaseState.WAITING_FOR_CITIZEN if await_citizen else CaseState.ANSWERED
    if row["state"] == target:
        audit(conn, row["id"], actor_name(agent), "reply", from_state=row["state"], to_state=row["state"],
              reason=reason or "erneut beantwortet", now=now)
    else:
        transition(conn, row, target, actor=actor_name(agent), reason=reason or "von der Sachbearbeitung beantwortet",
                   policy=policy, now=now, values=_assign(row, agent))
    message_id = send(conn, row, text=text, agent=agent, queue=queue, now=now)
    return {"message_id": message_id, "state": str(target)}


def request_callback(conn: Connection, case_id: int, number: str, *, actor: str, now: datetime | None = None) -> None:
    """The citizen wants to be called back on ``number`` (E.164): it becomes the case's number and the case a
    callback request (``reply_channel`` :data:`~hub.queue.outbox.CALLBACK_CHANNEL`); audited, no number in the
    log. The case stays open with its first-response clock; the agent's recorded call answers it."""
    now = now or utcnow()
    case = load(conn, case_id)
    values: dict[str, Any] = {}
    if case["contact_phone"] != number:
        values["contact_phone"] = number
    if case.get("reply_channel") != CALLBACK_CHANNEL:
        values["reply_channel"] = CALLBACK_CHANNEL
    if values:
        conn.execute(update(case_t).where(case_t.c.id == case_id).values(updated_at=now, **values))
    audit(conn, case_id, actor, "callback_requested",
          reason="Rückruf erbeten" + ("" if case["contact_phone"] in (None, number) else " unter einer anderen Nummer"),
          now=now)


def send(conn: Connection, row: Mapping[str, Any], *, text: str, agent: str, queue: QueueSettings,
         channel: str | None = None, recipient: str | None = None, subject: str | None = None,
         now: datetime | None = None, delivered: bool = False) -> int:
    """Put a message for the citizen into the outbox without changing the case's state (the answer
    card sent during a call); by :func:`hub.queue.outbox.answer_route` unless a channel is given. Returns its id.

    ``delivered``: the channel gave it to the citizen itself (the SMS answer in a webhook's TwiML, the
    phone menu's spoken answer): it is recorded as sent, never sent again."""
    return enqueue(conn, row, text=text, author=actor_name(agent), kind="reply", channel=channel,
                   recipient=recipient, subject=subject, settings=queue, now=now, delivered=delivered)


def acknowledge(conn: Connection, row: Mapping[str, Any], *, text: str, subject: str, channel: str,
                recipient: str, kind: str, author: str, queue: QueueSettings, now: datetime | None = None) -> int:
    """Put a channel's automatic acknowledgement of a request into the outbox (the confirmation mail of a
    web-form request whose citizen chose e-mail): no state change, no agent. Returns its id.

    ``kind`` is the channel's automatic kind (``confirmation``), which its adapter sends as automatic mail."""
    return enqueue(conn, row, text=text, author=author, kind=kind, channel=channel, recipient=recipient,
                   subject=subject, settings=queue, now=now)


def send_many(conn: Connection, sends: Sequence[tuple[Mapping[str, Any], str, str, str | None]], *,
              queue: QueueSettings, channel: str, delivered: bool = False, now: datetime | None = None) -> list[int]:
    """:func:`send` for many ``(case row, text, agent, recipient)`` at once, in one statement (a channel's
    answers to the requests of one intake batch). Their ids, in order."""
    now = now or utcnow()
    return enqueue_many(conn, [message_row(row, text=text, author=actor_name(agent), kind="reply", channel=channel,
                                           recipient=recipient, settings=queue, now=now, delivered=delivered)
                               for row, text, agent, recipient in sends])


def answer_many(conn: Connection, answers: Sequence[tuple[dict[str, Any], Mapping[str, Any], Mapping[str, Any]]],
                *, agent: str, policy: SlaPolicy, reason: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Cases a channel answered itself (an SMS's or the phone menu's direct answer), many at once: each
    ``(row, service, authority)`` gets that route and moves to ``answered`` — through ``routed`` when still
    ``new``, as :func:`take` and :func:`move` would (both audit entries), with one UPDATE a case and one
    statement per column set for all of them. Raises :class:`~hub.queue.cases.StaleState` when any case
    moved meanwhile (the caller rolls back and acts on the cases one at a time). Returns the cases as they
    are now."""
    now = now or utcnow()
    actor = actor_name(agent)
    moves = []
    for row, service, authority in answers:
        state = row["state"]
        if state == CaseState.NEW:
            path: tuple[CaseState, ...] = _TAKE_AND_ANSWER
        elif state in (CaseState.ROUTED, CaseState.NEEDS_CLARIFICATION):
            path = _ANSWER
        else:  # past answering already
            continue
        moves.append((row, path, route_values(service, authority, agent, now) | _assign(row, agent), reason))
    transition_many(conn, moves, actor=actor, policy=policy, now=now)
    return [{**row, "state": CaseState.ANSWERED.value} for row, *_ in moves]


_TAKE_AND_ANSWER = (CaseState.ROUTED, CaseState.ANSWERED)
_ANSWER = (CaseState.ANSWERED,)


def forward_body(row: Mapping[str, Any], text: str, note: str | None, due: datetime | None,
                 policy: SlaPolicy) -> str:
    """The e-mail to the office: the agent's note, the citizen's concern, how to reach them, by when."""
    contact = "\n".join(f"{label}: {row[col]}" for label, col in (
        ("Name", "contact_name"), ("E-Mail", "contact_email"), ("Telefon", "contact_phone"),
        ("Anschrift", "contact_address")) if row.get(col))
    due_line = (f"Bitte antworten Sie bis {due.astimezone(policy.clock.calendar.tz):%d.%m.%Y %H:%M} Uhr "
                f"({policy.settings.forwarded_answer_hours:g} Arbeitsstunden).") if due else None
    return "\n\n".join(p for p in (note, "Anliegen:\n" + text, "Kontakt:\n" + contact if contact else None,
                                   due_line) if p)


def forward(conn: Connection, row: dict[str, Any], *, authority: Mapping[str, Any], agent: str,
            policy: SlaPolicy, queue: QueueSettings, note: str | None = None,
            service: Mapping[str, Any] | None = None, body: Callable[[datetime | None], str] | None = None,
            now: datetime | None = None) -> dict[str, Any]:
    """Forward the case by e-mail to ``authority`` (``{"id", "name", "email"}``), which becomes its office.

    With ``service`` the case also gets that service (a call forwarded with the agent's route).
    ``body(due)`` writes the e-mail instead of :func:`forward_body` (a phone call's note). Returns
    ``{"message_id", "state", "forward_due", "authority"}``.
    """
    if not authority.get("email"):
        raise CaseworkError(f"{authority.get('name') or authority['id']} hat keine E-Mail-Adresse; bitte leiten "
                            "Sie von Hand weiter und halten Sie das als Zustandswechsel fest", code="no_email",
                            authority=authority["id"])
    now = now or utcnow()
    row = take(conn, row, agent=agent, policy=policy, now=now,
               service=service, authority=authority if service is not None else None)
    values = {"authority_id": authority["id"], "authority_name": authority.get("name"), **_assign(row, agent)}
    if service is not None:
        values |= {"service_id": service["id"], "service_name": service.get("name")}
    changes = transition(conn, row, CaseState.FORWARDED, actor=actor_name(agent),
                         reason=f"weitergeleitet an {authority['id']}", policy=policy, now=now, values=values)
    due = changes.get("forward_due") or row.get("forward_due")
    if body is not None:
        message = body(due)
    else:
        text, _ = case_text(conn, row["id"])
        message = forward_body(row, text, note, due, policy)
    message_id = enqueue(conn, row, text=message, author=actor_name(agent), kind="forward", channel="email",
                         recipient=authority["email"], subject=f"Weitergeleitetes Anliegen [#{row['token']}]",
                         settings=queue, now=now)
    return {"message_id": message_id, "state": CaseState.FORWARDED.value, "forward_due": due,
            "authority": authority["id"]}


def reroute(conn: Connection, row: dict[str, Any], *, service: Mapping[str, Any], authority: Mapping[str, Any],
            agent: str, policy: SlaPolicy, reason: str | None = None,
            now: datetime | None = None) -> dict[str, Any]:
    """Set the case's service and office by hand (``{"id", "name"}`` each); the case is ``routed``.

    What the router said and what the agent set is kept as a labelled example, the routers' training
    data. Raises :class:`~hub.queue.cases.TransitionError` when the state does not allow it.
    """
    now = now or utcnow()
    values = {**route_values(service, authority, agent, now), **_assign(row, agent)}
    text, location = case_text(conn, row["id"])
    conn.execute(insert(example_t).values(
        case_id=row["id"], created_at=now, agent=actor_name(agent), text=text,
        location=row.get("location") or location, predicted_service_id=row.get("service_id"),
        predicted_authority_id=row.get("authority_id"), service_id=service["id"], authority_id=authority["id"],
    ))
    why = reason or "von der Sachbearbeitung neu zugeordnet"
    if row["state"] == CaseState.ROUTED:
        # Staying in ``routed`` is not a transition: update in place, still compare-and-set on the state.
        result = conn.execute(update(case_t).where(case_t.c.id == row["id"], case_t.c.state == CaseState.ROUTED)
                              .values(updated_at=now, **values))
        if result.rowcount != 1:
            raise StaleState(f"Fall {row['id']} wurde während der Neuzuordnung geändert; bitte laden Sie ihn neu",
                             case_id=row["id"])
        audit(conn, row["id"], actor_name(agent), "reroute", from_state=row["state"], to_state=row["state"],
              reason=why, now=now)
    else:
        transition(conn, row, CaseState.ROUTED, actor=actor_name(agent), reason=why, policy=policy,
                   values=values, action="reroute", now=now)
    return {"state": CaseState.ROUTED.value}


def close(conn: Connection, row: dict[str, Any], *, agent: str, policy: SlaPolicy, reason: str | None = None,
          now: datetime | None = None) -> dict[str, Any]:
    """Close the case with a reason."""
    transition(conn, row, CaseState.CLOSED, actor=actor_name(agent), reason=reason or "von der Sachbearbeitung geschlossen",
               policy=policy, now=now, values=_assign(row, agent))
    return {"state": CaseState.CLOSED.value}


def import_examples(conn: Connection, rows: list[Mapping[str, Any]], *, agent: str,
                    now: datetime | None = None) -> int:
    """Store past decisions (``{"text", "location", "service_id", "authority_id"}`` each) as labelled
    examples without a case: ``citizen-hub history import``. The caller's transaction makes it all or none."""
    now = now or utcnow()
    if rows:
        conn.execute(insert(example_t), [
            {"case_id": None, "created_at": now, "agent": agent, "text": r["text"], "location": r.get("location"),
             "predicted_service_id": None, "predicted_authority_id": None, "service_id": r["service_id"],
             "authority_id": r.get("authority_id")} for r in rows])
    return len(rows)
