"""The phone channel's webhooks: ``POST /twilio/voice`` (a call comes in) and the menu's follow-ups.

The menu itself is :mod:`channels.twilio.voice` (pure functions); these handlers keep the call's state in
``twilio_call`` (by ``CallSid``) and store what a turn decided before answering with its TwiML:

* the first thing the caller says opens the call's ``phone`` case through intake (external id ``CallSid``,
  the caller's number as contact: the queue's phone rules thread a second call onto an open case); what
  they add (the place, a callback number) joins it as messages replying to it, with external ids made
  from the ``CallSid`` and what was said, so a repeated webhook stores nothing twice;
* the spoken answer is recorded in the case, which becomes ``answered`` (service and office set); a
  confirmed callback sets the case's number and leaves it open for agents on its first-response clock
  (24 working hours); a transfer is noted in the audit log;
* a call the menu finished (answered, callback) gets a call record of agent ``ivr`` for the dashboard's
  first-contact rate; a transferred call is recorded by the agent who takes it, as any call;
* the details by SMS go through the outbox (the ``sms`` adapter, which honours opt-outs).

When the call ends (``/twilio/voice/status``) the call row loses the caller's number and words; what is
kept of the call is in its case, where ``purge`` and ``forget`` reach it. A call with no outcome by then
was ``abandoned``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from channels.twilio import store, voice, webhooks
from channels.twilio.payload import (
    CallStatusWebhook,
    GatherWebhook,
    TransferWebhook,
    VoiceWebhook,
    WebhookError,
)
from channels.twilio.records import answered, record_ivr_call, record_reply, request_callback
from hub import casework
from hub.casework import actor_name
from hub.console.calls import card_text
from hub.queue.cases import audit
from hub.queue.intake import IntakeUnavailable, RequestRejected
from hub.queue.requests import Contact, InboundRequest
from knowledge.base import authority_json, service_json

log = logging.getLogger(__name__)

IVR = "ivr"  # the phone menu as the "agent" of hub.casework
ENDED = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
MAX_TRY = 5
SORRY = ("Entschuldigung, es gibt gerade eine technische Störung. Bitte rufen Sie in einigen Minuten noch "
         "einmal an. Auf Wiederhören.")


LIMITED = ("Von Ihrer Nummer haben wir in kurzer Zeit sehr viele Anliegen erhalten. Ihr Anliegen wurde nicht "
           "gespeichert. Bitte rufen Sie {wait} wieder an. Auf Wiederhören.")


class CallerLimited(Exception):
    """The caller's number is over its intake limit ([limits] sender_per_hour); retry in ``retry_after`` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"over the intake limit; try again in {retry_after} seconds")
        self.retry_after = retry_after


def flow_for(request: web.Request) -> voice.VoiceFlow | None:
    """The menu of this app (built once the knowledge base and the queue are there)."""
    st = webhooks.state(request)
    flow = st.extra.get("flow")
    kb, service = webhooks.kb(request), webhooks.queue_service(request)
    if flow is None and kb is not None and service is not None:
        s = st.settings
        flow = voice.VoiceFlow(
            base_url=s.public_url,
            style=voice.VoiceStyle(language=s.voice_language, voice=s.voice, speech_model=s.speech_model,
                                   speech_timeout=s.speech_timeout_seconds, timeout=s.gather_timeout_seconds),
            kb=kb, calendar=service.policy.clock.calendar, transfer=s.transfer_target,
            caller_id=s.phone_numbers[0] if s.phone_numbers else None)
        st.extra["flow"] = flow
    return flow


def _style(request: web.Request) -> voice.VoiceStyle:
    s = webhooks.state(request).settings
    return voice.VoiceStyle(language=s.voice_language, voice=s.voice)


def _sorry(request: web.Request) -> web.Response:
    return webhooks.twiml(voice.goodbye(_style(request), SORRY))


def _start(engine, call_sid: str, caller: str | None) -> tuple[dict[str, Any], bool]:
    """The call's row (created when missing) and whether the caller opted out of SMS: its own transaction,
    for the rare webhooks that store something without a request (a transfer's result, the call's end)."""
    with engine.begin() as conn:
        row = store.start_call(conn, call_sid, caller, voice.CONCERN)
        opted = caller is not None and store.is_opted_out(conn, caller)
    return row, opted


def _load(engine, call_sid: str, caller: str | None, now: datetime) -> tuple[dict[str, Any], bool]:
    """The call's row as stored (or as it will be: nothing is stored until the caller says something) and
    whether the caller opted out of SMS. Only reads, which never wait for the intake writer."""
    with engine.connect() as conn:
        row = store.get_call(conn, call_sid)
        opted = caller is not None and store.is_opted_out(conn, caller)
    if row is None:
        row = {"id": None, "call_sid": call_sid, "caller": caller, "concern": None, "place": None,
               "pending_number": None, "case_id": None, "outcome": None, "hub_call_id": None, "service_id": None,
               "authority_id": None, "turns": 0, "extra": {}, "started_at": now}
    return row, opted


def _context(row: dict[str, Any], opted: bool, tries: int, now: datetime) -> voice.CallContext:
    caller = row["caller"]
    return voice.CallContext(now=now, caller=caller, concern=row["concern"] or "", place=row["place"],
                             pending_number=row["pending_number"], sms_allowed=bool(caller) and not opted,
                             tries=tries)


async def call_webhook(request: web.Request) -> web.Response:
    """``POST /twilio/voice``: the greeting. The call is stored with the first thing the caller says (a call
    that ends before that is recorded by its status callback, as ``abandoned``)."""
    try:
        call = await webhooks.parse(request, VoiceWebhook, "/twilio/voice")
    except WebhookError as exc:
        return webhooks.refused(exc)
    flow = flow_for(request)
    if flow is None:
        return _sorry(request)
    caller = webhooks.phone_or_none(call.from_)
    log.info("phone: call %s in", call.call_sid)
    context = voice.CallContext(now=webhooks.now(request), caller=caller, sms_allowed=caller is not None)
    return webhooks.twiml(flow.greeting(context).twiml)


def _tries(request: web.Request) -> int:
    raw = request.query.get("try", "0")
    return min(int(raw), MAX_TRY) if raw.isascii() and raw.isdigit() and len(raw) <= 2 else 0


async def gather_webhook(request: web.Request) -> web.Response:
    """``POST /twilio/voice/<step>``: what the caller said or typed at one step of the menu."""
    step = request.match_info["step"]
    if step not in voice.STEPS or step == voice.TRANSFER:
        raise web.HTTPNotFound(text="no such step of the phone menu")
    try:
        gather = await webhooks.parse(request, GatherWebhook, f"/twilio/voice/{step}")
    except WebhookError as exc:
        return webhooks.refused(exc)
    flow = flow_for(request)
    if flow is None:
        return _sorry(request)
    engine, now = webhooks.engine(request), webhooks.now(request)
    try:
        row, opted = await asyncio.to_thread(_load, engine, gather.call_sid, webhooks.phone_or_none(gather.from_),
                                             now)
        turn = flow.handle(step, _context(row, opted, _tries(request), now), gather.speech_result, gather.digits)
        await apply_turn(request, row, turn, now)
    except CallerLimited as exc:
        log.info("phone: call %s: the caller is over the intake limit; nothing stored", gather.call_sid)
        return webhooks.twiml(voice.goodbye(_style(request), LIMITED.format(wait=webhooks.wait_text(exc.retry_after))))
    except (IntakeUnavailable, RequestRejected):
        log.warning("phone: call %s: what the caller said could not be stored", gather.call_sid)
        return _sorry(request)
    except Exception:
        log.exception("phone: call %s: the turn at %s failed", gather.call_sid, step)
        return _sorry(request)
    return webhooks.twiml(turn.twiml)


def _said_id(call_sid: str, what: str, text: str) -> str:
    """A stable external id for something said in a call: a repeated webhook makes the same one."""
    return f"{call_sid}/{what}/" + hashlib.sha256(text.encode()).hexdigest()[:12]


def request_of(turn: voice.Turn, row: dict[str, Any], now: datetime) -> InboundRequest | None:
    """The request a turn hands to intake: the concern (which opens the call's case), or what the caller
    added to it (the place, a callback number). At most one per turn; None when the turn adds nothing."""
    call_sid, caller, has_case = row["call_sid"], row["caller"], row["case_id"] is not None
    follow_up = {"channel": "phone", "in_reply_to": [call_sid], "received_at": now}
    opening = {"channel": "phone", "external_id": call_sid, "received_at": now, "raw_ref": f"twilio:{call_sid}"}
    try:
        if turn.concern and turn.concern != row["concern"]:
            if not has_case:
                return InboundRequest(**opening, text=turn.concern, contact=Contact(phone=caller))
            return InboundRequest(external_id=_said_id(call_sid, "concern", turn.concern), text=turn.concern,
                                  **follow_up)
        if turn.place and has_case and turn.place != row["place"]:
            return InboundRequest(external_id=_said_id(call_sid, "place", turn.place), text=f"Ort: {turn.place}",
                                  location=turn.place, **follow_up)
        if turn.callback_number:
            text = f"Rückruf erbeten unter {turn.callback_number}"
            if not has_case:
                return InboundRequest(**opening, contact=Contact(phone=turn.callback_number),
                                      text=f"{text} (das Anliegen wurde im Sprachmenü nicht genannt)")
            return InboundRequest(external_id=_said_id(call_sid, "callback", turn.callback_number), text=text,
                                  **follow_up)
    except ValidationError as exc:  # e.g. control characters in a transcript: nothing half-stored
        raise RequestRejected(f"the caller's words cannot be stored ({exc.error_count()} errors)") from None
    return None


def _changes_anything(turn: voice.Turn, row: dict[str, Any]) -> bool:
    """Whether a turn without a request still has something to store."""
    return bool(turn.send_details or turn.outcome or turn.extra.get("transfer_failed")
                or (turn.pending_number or None) != row["pending_number"])


async def apply_turn(request: web.Request, row: dict[str, Any], turn: voice.Turn, now: datetime) -> None:
    """Store what ``turn`` decided before it is answered: its request through intake and the call's, the
    case's and the record's writes right after it in the intake writer's thread (one transaction per
    batch); a turn without a request (a choice in the menu) in a transaction of its own."""
    service, kb, flow = webhooks.queue_service(request), webhooks.kb(request), flow_for(request)
    after = webhooks.state(request).extra.get("after")
    if service is None or after is None:
        raise IntakeUnavailable("the queue is not running")
    req = request_of(turn, row, now)
    if req is None:
        if _changes_anything(turn, row):
            await asyncio.to_thread(_record_alone, service.engine, kb, flow, service, row, turn, now)
        return
    # A request that opens the call's case counts against the caller's budget (and the callback number's),
    # shared with every channel; what the caller adds within the same call does not.
    keys = webhooks.limit_keys(row["caller"], req.contact.phone) if req.external_id == row["call_sid"] else ()
    if keys:
        limited = webhooks.check_limits(request, "/twilio/voice", keys)
        if limited is not None:
            raise CallerLimited(limited.retry_after)
    key = req.key()
    written = after.expect(key, lambda conn, result: record_turn(
        conn, kb, flow, service, row, turn, result.case_id, now, fresh=result.created))
    try:
        result = await service.writer.submit(req)
    except BaseException:
        after.forget(key)
        webhooks.refund_limits(request, keys)
        raise
    if not result.created:
        webhooks.refund_limits(request, keys)  # Twilio's retry of the same turn costs nothing
    await written


def _record_alone(engine, kb, flow, service, row: dict[str, Any], turn: voice.Turn, now: datetime) -> None:
    with engine.begin() as conn:
        record_turn(conn, kb, flow, service, row, turn, row["case_id"], now, fresh=True)


def record_turn(conn, kb, flow: voice.VoiceFlow, service: Any, seen: dict[str, Any], turn: voice.Turn,
                case_id: int | None, now: datetime, *, fresh: bool) -> None:
    """Write one turn: the call's row (created with the first), the answer in the case (``answered``, the
    spoken text), the details SMS, the callback, the transfer, the call record. ``fresh`` is False when the
    turn's request was stored before (Twilio repeated the webhook): what it wrote then is not written again."""
    row = store.start_call(conn, seen["call_sid"], seen["caller"], turn.step, now, known=seen["id"] is not None)
    extra = dict(row["extra"] or {})
    values: dict[str, Any] = {"step": turn.step, "tries": 0, "turns": row["turns"] + 1,
                              "case_id": case_id or row["case_id"]}
    case_id = values["case_id"]
    if turn.concern is not None:
        values["concern"] = turn.concern
    if turn.place is not None:
        values["place"] = turn.place
    if turn.pending_number is not None or turn.step != voice.CALLBACK:
        values["pending_number"] = turn.pending_number
    if turn.extra.get("transfer_failed"):
        values["outcome"] = None
        values["transfer_result"] = turn.extra["transfer_failed"]
    elif turn.outcome and row["outcome"] in (None, voice.TRANSFERRED):
        values["outcome"] = turn.outcome
    service_row = authority_row = None
    if turn.answer is not None:
        values |= {"service_id": turn.answer.service_id, "authority_id": turn.answer.office_id}
        service_row = service_json(kb.view_at(turn.answer.service_id, turn.answer.place)) if turn.answer.service_id in kb.services \
            else {"id": turn.answer.service_id, "name": turn.answer.service}
        authority_row = authority_json(kb.authorities[turn.answer.office_id]) \
            if turn.answer.office_id in kb.authorities else {"id": turn.answer.office_id, "name": turn.answer.office}
    if turn.answer is not None and case_id is not None and fresh:
        case = answered(conn, case_id, service=service_row, authority=authority_row, agent=IVR,
                        reason="answered by the phone menu", policy=service.policy, now=now)
        record_reply(conn, case_id, text=" ".join(flow.answer_lines(turn.answer)), channel="phone",
                     recipient=row["caller"], agent=IVR, settings=service.queue, now=now, case=case)
    if turn.send_details and case_id is not None and row["caller"] and not extra.get("details_sent") \
            and row["service_id"]:
        svc = kb.view_at(row["service_id"], row["place"])
        office = kb.authorities.get(row["authority_id"] or "")
        if svc is not None:  # the answer card, as an agent sends it during a call
            casework.send(conn, casework.load(conn, case_id),
                          text=card_text(service_json(svc), authority_json(office) if office else None),
                          agent=IVR, queue=service.queue, channel="sms", recipient=row["caller"], now=now)
            extra["details_sent"] = True
    if turn.callback_number and case_id is not None and fresh:
        request_callback(conn, case_id, turn.callback_number, actor=actor_name(IVR), now=now)
    if turn.outcome == voice.TRANSFERRED and case_id is not None and row["outcome"] != voice.TRANSFERRED:
        audit(conn, case_id, actor_name(IVR), "transferred", reason="the caller was put through to an agent",
              now=now)
    outcome = values.get("outcome", row["outcome"])
    if outcome in ("answered", "callback") and row["hub_call_id"] is None:
        svc = service_row or ({"id": row["service_id"], "name": None} if row["service_id"] else None)
        auth = authority_row or ({"id": row["authority_id"], "name": None} if row["authority_id"] else None)
        values["hub_call_id"] = record_ivr_call(conn, started_at=row["started_at"], outcome=outcome,
                                                case_id=case_id, service=svc, authority=auth, now=now)
    values["extra"] = extra
    store.update_call(conn, row["id"], now, **values)


async def transfer_webhook(request: web.Request) -> web.Response:
    """``POST /twilio/voice/transfer``: how the transfer to an agent ended (callback offer when it failed)."""
    try:
        result = await webhooks.parse(request, TransferWebhook, "/twilio/voice/transfer")
    except WebhookError as exc:
        return webhooks.refused(exc)
    flow = flow_for(request)
    if flow is None:
        return _sorry(request)
    engine = webhooks.engine(request)
    try:
        row, opted = await asyncio.to_thread(_start, engine, result.call_sid, webhooks.phone_or_none(result.from_))
        turn = flow.transferred(_context(row, opted, 0, webhooks.now(request)), result.result)
        await asyncio.to_thread(_record_transfer, engine, row, turn, result)
    except Exception:
        log.exception("phone: call %s: the transfer result could not be stored", result.call_sid)
        return _sorry(request)
    return webhooks.twiml(turn.twiml)


def _record_transfer(engine, row: dict[str, Any], turn: voice.Turn, result: TransferWebhook) -> None:
    values: dict[str, Any] = {"step": turn.step, "transfer_result": (result.result or "")[:32],
                              "pending_number": turn.pending_number}
    if result.queue_time is not None:
        values["queue_seconds"] = result.queue_time
    if turn.extra.get("transfer_failed"):
        values["outcome"] = None
    with engine.begin() as conn:
        store.update_call(conn, row["id"], **values)


async def call_status_webhook(request: web.Request) -> web.Response:
    """``POST /twilio/voice/status``: the call ended; its personal data leaves the call row."""
    try:
        status = await webhooks.parse(request, CallStatusWebhook, "/twilio/voice/status")
    except WebhookError as exc:
        return webhooks.refused(exc)
    if status.call_status in ENDED:
        await asyncio.to_thread(_end, webhooks.engine(request), status)
    return web.Response(status=204)


def _end(engine, status: CallStatusWebhook) -> None:
    with engine.begin() as conn:
        # A call that ended before the caller said anything has no row yet: it is recorded now (without
        # the number, which a finished call does not keep).
        store.start_call(conn, status.call_sid, None, voice.DONE)
        row = store.end_call(conn, status.call_sid, duration=status.call_duration)
        if row is not None and row["outcome"] is None:
            store.update_call(conn, row["id"], outcome=voice.ABANDONED)
