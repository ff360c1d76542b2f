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

Those writes are :class:`channels.twilio.records.TurnJob`'s, in the intake writer's thread, in the
transaction of the turn's request (one commit for both): the first stored turn of the calls of one intake batch in a few statements for
all of them. The greeting stores nothing and the concern step reads nothing (there is nothing of the
call yet; the caller's SMS opt-out is read with the batch), so a call's first two webhooks cost one
group-committed write and no round trip of their own.

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
from channels.twilio.records import TurnJob, new_call_row, record_turn
from hub.queue.intake import IntakeUnavailable, RequestRejected
from hub.queue.requests import Contact, InboundRequest

log = logging.getLogger(__name__)

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
    if flow is not None:
        return flow
    kb, service = webhooks.kb(request), webhooks.queue_service(request)
    if kb is not None and service is not None:
        s = st.settings
        flow = voice.VoiceFlow(
            base_url=s.public_url,
            style=voice.VoiceStyle(language=s.voice_language, voice=s.voice, speech_model=s.speech_model,
                                   speech_timeout=s.speech_timeout_seconds, timeout=s.gather_timeout_seconds),
            kb=kb, calendar=service.policy.clock.calendar, transfer=s.transfer_target,
            caller_id=s.phone_numbers[0] if s.phone_numbers else None,
            response_hours=service.policy.settings.first_response_hours)
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
    return (row if row is not None else new_call_row(call_sid, caller, now)), opted


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
    log.info("phone: call %s in", call.call_sid)
    return webhooks.twiml(flow.greeting().twiml)


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
    caller, tries = webhooks.phone_or_none(gather.from_), _tries(request)
    try:
        if step == voice.CONCERN:
            # Nothing of a call is stored before its concern (the greeting and silence store nothing), so
            # there is nothing to read: the call is new, and the caller's opt-out (which only changes the
            # SMS offer of a direct answer) is read where the turn is written.
            row, unread = new_call_row(gather.call_sid, caller, now), True
            opted = False
        else:
            (row, opted), unread = await asyncio.to_thread(_load, engine, gather.call_sid, caller, now), False
        ctx = _context(row, opted, tries, now)
        turn = flow.handle(step, ctx, gather.speech_result, gather.digits)
        req = request_of(turn, row, now)
        if unread and req is None and _changes_anything(turn, row):
            # Not what the concern step does; should it ever, the turn is made again from what is stored.
            (row, opted), unread = await asyncio.to_thread(_load, engine, gather.call_sid, caller, now), False
            ctx = _context(row, opted, tries, now)
            turn = flow.handle(step, ctx, gather.speech_result, gather.digits)
            req = request_of(turn, row, now)
        turn = await apply_turn(request, row, req, now, TurnJob(
            webhooks.kb(request), flow, webhooks.queue_service(request), row, turn, now, ctx, step,
            gather.speech_result, gather.digits, opt_out_unread=unread))
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


#: The text of the phone case of a call put through to an agent before the caller said what it is about.
TRANSFERRED_WITHOUT_CONCERN = ("Anruf an eine Mitarbeiterin oder einen Mitarbeiter durchgestellt (das Anliegen "
                               "wurde im Sprachmenü nicht genannt)")


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
        if turn.outcome == voice.TRANSFERRED and not has_case:
            # Put through before saying what it is about (the caller asked for a person, or the menu gave up):
            # the call is a phone case all the same, which the agent who takes it records.
            return InboundRequest(**opening, contact=Contact(phone=caller), text=TRANSFERRED_WITHOUT_CONCERN)
    except ValidationError as exc:  # e.g. control characters in a transcript: nothing half-stored
        raise RequestRejected(f"the caller's words cannot be stored ({exc.error_count()} errors)") from None
    return None


def _changes_anything(turn: voice.Turn, row: dict[str, Any]) -> bool:
    """Whether a turn without a request still has something to store."""
    return bool(turn.send_details or turn.outcome or turn.extra.get("transfer_failed")
                or (turn.pending_number or None) != row["pending_number"])


async def apply_turn(request: web.Request, row: dict[str, Any], req: InboundRequest | None, now: datetime,
                     job: TurnJob) -> voice.Turn:
    """Store what ``job.turn`` decided before it is answered, and return the turn to answer: its request
    (``req``, :func:`request_of`) through intake, and the call's, the case's and the record's writes
    (``job``, :class:`~channels.twilio.records.TurnJob`) with it in the intake writer's thread (in the
    batch's transaction); a turn without a request (a choice in the menu) in a transaction of its own."""
    service, turn = job.service, job.turn
    after = webhooks.state(request).extra.get("after")
    if service is None or after is None:
        raise IntakeUnavailable("the queue is not running")
    if req is None:
        if _changes_anything(turn, row):
            await asyncio.to_thread(_record_alone, service.engine, job)
        return turn
    # A request that opens the call's case counts against the caller's budget (and the callback number's),
    # shared with every channel; what the caller adds within the same call does not.
    keys = webhooks.limit_keys(row["caller"], req.contact.phone) if req.external_id == row["call_sid"] else ()
    if keys:
        limited = webhooks.check_limits(request, "/twilio/voice", keys)
        if limited is not None:
            raise CallerLimited(limited.retry_after)
    key = req.key()
    written = after.expect(key, job)
    try:
        result = await service.writer.submit(req)
    except BaseException:
        after.forget(key, written)
        webhooks.refund_limits(request, keys)
        raise
    if not result.created:
        webhooks.refund_limits(request, keys)  # Twilio's retry of the same turn costs nothing
    return await written


def _record_alone(engine, job: TurnJob) -> None:
    with engine.begin() as conn:
        record_turn(conn, job.kb, job.flow, job.service, job.seen, job.turn, job.seen["case_id"], job.now,
                    fresh=True)


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
