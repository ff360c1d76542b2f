"""``POST /twilio/sms`` (an SMS or MMS in) and ``POST /twilio/status`` (delivery reports of SMS out).

An SMS: the one parser (signature against ``public_url`` + path, account, fields), then

1. keywords: ``STOP``/``STOPP``/``ABMELDEN``/... store the opt-out, ``START`` removes it — committed before
   the confirmation goes out (none when Twilio's Advanced Opt-Out answered already); ``HILFE`` explains;
2. an empty body (without media) or one over 1,600 characters: a clear answer, nothing stored;
3. otherwise an :class:`~hub.queue.requests.InboundRequest` (channel ``sms``, external id ``MessageSid``:
   Twilio's retry of the same SID is stored once; the sender's number threads it onto their open case
   by the queue's phone rules; MMS media become attachments by URL), handed to intake, which answers
   after the commit;
4. then the answer (:func:`decide`): the direct answer when the knowledge base is sure of the service and
   the place, else the acknowledgement with the case token and what happens next (or the question for the
   place). It is recorded in the case, the case is ``answered`` when it was the direct answer, and it goes
   out as TwiML ``<Message action=…>`` so its delivery report comes back. A number that opted out gets no
   SMS (the request is stored all the same).

A delivery report (``/twilio/status?message_id=N``, the URL every SMS of the hub names) moves the message's
state forward only: ``delivered``/``sent`` confirm a message whose outcome was unknown, ``failed`` and
``undelivered`` mark it failed for the agent (error 21610, "unsubscribed", also records the opt-out).
Message bodies and numbers are never logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import select, update

from channels.twilio import sms, store, webhooks
from channels.twilio.answer import Answer, direct_answer, route_text
from channels.twilio.outbound import OPTED_OUT_AT_TWILIO, status_callback_url
from channels.twilio.payload import InvalidPayload, MessageStatusWebhook, SmsWebhook, WebhookError
from channels.twilio.records import answered, case_history, record_reply, reply_to
from channels.twilio.voice import xml_attribute, xml_text
from hub import casework
from hub.casework import actor_name
from hub.queue.cases import audit, case_t, message_t
from hub.queue.intake import IntakeResult, IntakeUnavailable, RequestRejected
from hub.queue.requests import AttachmentIn, Contact, InboundRequest
from hub.queue.routing import route_cache
from knowledge.base import authority_json, service_json

log = logging.getLogger(__name__)

#: Who writes the automatic SMS (the "agent" of :mod:`hub.casework`; the message's author is ``agent:<name>``).
AUTO, ACK, ASK_PLACE = "sms-auto", "sms-ack", "sms-ask-place"  # direct answer, acknowledgement, question
AUTO_AUTHOR, ACK_AUTHOR, ASK_PLACE_AUTHOR = (actor_name(a) for a in (AUTO, ACK, ASK_PLACE))
AUTOMATIC = (AUTO_AUTHOR, ACK_AUTHOR, ASK_PLACE_AUTHOR)
#: A follow-up within this time of the hub's last automatic SMS gets no second acknowledgement.
QUIET_AFTER_ACK = timedelta(hours=1)
MEDIA_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp",
                    "video/mp4": "mp4", "audio/amr": "amr", "application/pdf": "pdf", "text/vcard": "vcf"}


# -- the answer ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmsReply:
    """What an SMS is answered and how the answer is recorded."""

    text: str
    agent: str  # AUTO, ACK or ASK_PLACE
    answer: Answer | None = None
    #: Whether the direct answer answers the case (it becomes ``answered``). Not when the case holds a question
    #: someone still owes an answer to (an acknowledged one, a callback): then the answer is only sent.
    closes: bool = True


def _certain_without_place(route: Any, confident: float) -> bool:
    return (route.service is not None and route.confidence >= confident and route.authority is None
            and (route.location is None or bool(route.location_candidates)))


@dataclass(frozen=True)
class Plan:
    """What a new SMS is answered, decided from its text alone (before intake, on the event loop)."""

    answer: Answer | None = None
    text: str | None = None  # the direct answer's text
    ask_place_for: str | None = None  # the service, when only the place is missing
    #: The direct answer's service and office as the case records them (:func:`route_of`), made with the
    #: plan: looking the service up at the place again for every SMS was a fifth of the writer's time.
    service: dict[str, Any] | None = None
    authority: dict[str, Any] | None = None


def route_of(kb: Any, answer: Answer) -> tuple[dict[str, Any], dict[str, Any]]:
    """The service (as the place sees it) and the office of a direct answer, as the case records them."""
    return service_json(kb.view_at(answer.service_id, answer.place)), authority_json(kb.authorities[answer.office_id])


def plan(kb: Any, body: str, *, local_now: datetime, is_holiday=None, max_segments: int = 2) -> Plan:
    """The direct answer when the service and the place are certain; the service when only the place is
    missing; else nothing (the acknowledgement).

    It depends on the text, the day (today's hours) and what the knowledge base knows, so it is kept in the
    knowledge base's :class:`~hub.queue.routing.RouteCache` with its decisions: the same text on the same
    day is planned once, until the catalogue or the learned models change."""
    return route_cache(kb).remember(
        ("sms-plan", body, local_now.date(), is_holiday, max_segments),
        lambda: _plan(kb, body, local_now=local_now, is_holiday=is_holiday, max_segments=max_segments))


def _plan(kb: Any, body: str, *, local_now: datetime, is_holiday=None, max_segments: int = 2) -> Plan:
    route = route_text(kb, body)
    answer = direct_answer(route, local_now, is_holiday)
    if answer is not None:
        service, authority = route_of(kb, answer)
        return Plan(answer, sms.answer_text(answer, max_segments), service=service, authority=authority)
    if _certain_without_place(route, kb.settings.confident_score):
        return Plan(ask_place_for=route.service.name)
    return Plan()


def decide(kb: Any, result: IntakeResult, body: str, history: list[str], last_out: dict[str, Any] | None, *,
           now: datetime, local_now: datetime, is_holiday=None, max_segments: int = 2,
           first: Plan | None = None, response_hours: float = 24) -> SmsReply | None:
    """The answer to a stored SMS, or None when the citizen gets none (a follow-up right after an ack).

    A new case: the direct answer when the service and the place are certain; the question for the place
    when only that is missing; else the acknowledgement (``first`` is its :func:`plan`, made beforehand).
    A follow-up: the citizen's texts of the case together are looked up again (the place they were asked
    for completes the first message), and answered directly when that is certain now; else an
    acknowledgement, at most one an hour. A follow-up of a direct answer is a new question answered
    directly when it is certain on its own, else acknowledged (never left without an answer).
    """
    if result.joined:
        earlier = [t for t in history if t and t != body]
        author = last_out.get("author") if last_out else None
        if author == AUTO_AUTHOR:
            # After a direct answer: a new question is answered directly too when it is certain on its own
            # (a different answer than the last one); anything else (a question about the answer, which the
            # direct answer invites) is acknowledged, and the case is an agent's again.
            answer = direct_answer(route_text(kb, body), local_now, is_holiday)
            text = sms.answer_text(answer, max_segments) if answer is not None else None
            if answer is not None and text != last_out.get("text"):
                return SmsReply(text, AUTO, answer)
            return SmsReply(sms.ack_text(result.token, joined=True, max_segments=max_segments,
                                         response_hours=response_hours), ACK)
        route = None
        if earlier and author == ASK_PLACE_AUTHOR:
            route = kb.route(earlier[0], body)  # the answer to "In welchem Ort wohnen Sie?"
        if route is None or route.needs_clarification:
            route = route_text(kb, "\n".join([*earlier, body]))
        answer = direct_answer(route, local_now, is_holiday)
        if answer is not None:
            return SmsReply(sms.answer_text(answer, max_segments), AUTO, answer,
                            closes=_settles_case(kb, answer, author, body, local_now, is_holiday))
        # One acknowledgement an hour is enough: a follow-up right after one gets none.
        if author in AUTOMATIC and last_out.get("created_at") is not None \
                and now - last_out["created_at"] < QUIET_AFTER_ACK:
            return None
        return SmsReply(sms.ack_text(result.token, joined=True, max_segments=max_segments,
                                         response_hours=response_hours), ACK)
    first = first or plan(kb, body, local_now=local_now, is_holiday=is_holiday, max_segments=max_segments)
    if first.answer is not None and first.text:
        return SmsReply(first.text, AUTO, first.answer)
    if first.ask_place_for:
        return SmsReply(sms.ack_text(result.token, ask_place_for=first.ask_place_for, max_segments=max_segments,
                                     response_hours=response_hours),
                        ASK_PLACE)
    return SmsReply(sms.ack_text(result.token, max_segments=max_segments, response_hours=response_hours), ACK)


def _settles_case(kb: Any, answer: Answer, author: str | None, body: str, local_now: datetime, is_holiday) -> bool:
    """Whether the direct answer to a follow-up answers the case, or only this message.

    It does when the hub had asked for the place (the follow-up completes the first message), or when the
    answer needed the case's earlier messages. A follow-up that is a new question of its own, in a case
    whose first question someone still owes an answer to (it was acknowledged, a callback was asked for),
    gets its answer, and the case stays open for the first question."""
    if author == ASK_PLACE_AUTHOR:
        return True
    own = direct_answer(route_text(kb, body), local_now, is_holiday)
    return own is None or own.service_id != answer.service_id


_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'
_NO_MESSAGE = _XML_HEAD + "<Response />"


def message_twiml(text: str | None, action: str | None = None) -> str:
    """``<Response><Message action=…>text</Message></Response>``; an empty ``<Response />`` for no answer.

    Exactly what twilio's ``MessagingResponse`` writes (``tests/channels/twilio/test_twilio_sms.py`` compares
    them on any text), without building an element tree for one element: that was a tenth of a webhook.
    """
    if not text:
        return _NO_MESSAGE
    if action:
        return f'{_XML_HEAD}<Response><Message action="{xml_attribute(action)}" method="POST">{xml_text(text)}</Message></Response>'
    return f"{_XML_HEAD}<Response><Message>{xml_text(text)}</Message></Response>"


# -- the request -----------------------------------------------------------------------------------------------


def to_request(sms_in: SmsWebhook, sender: str | None, received_at: datetime) -> InboundRequest:
    """The normalized request of an SMS (raises ValidationError for what the queue cannot take)."""
    attachments = [
        AttachmentIn(filename=f"mms-{i + 1}.{MEDIA_EXTENSIONS.get(m.content_type, 'bin')}", content_type=m.content_type,
                     url=m.url)
        for i, m in enumerate(sms_in.media)
    ]
    text = sms_in.body.strip() or ("(MMS ohne Text)" if attachments else "")
    return InboundRequest(channel="sms", external_id=sms_in.message_sid, received_at=received_at,
                          contact=Contact(phone=sender), text=text, attachments=attachments,
                          raw_ref=f"twilio:{sms_in.message_sid}")


def _opted_out(engine, sender: str | None) -> bool:
    """Whether the sender opted out of SMS (a read, which never waits for the intake writer)."""
    if sender is None:
        return True  # a withheld or alphanumeric sender cannot be answered by SMS anyway
    with engine.connect() as conn:
        return store.is_opted_out(conn, sender)


async def notice(request: web.Request, sender: str | None, text: str, why: str) -> web.Response:
    """A notice that is not an answer to a stored request (empty, too long, over the limit, not stored) as
    TwiML, unless the sender opted out: after STOP the number gets no SMS at all. When the opt-outs cannot
    be read (the database is down), the notice goes out: the citizen must learn that the SMS was not taken."""
    try:
        quiet = await asyncio.to_thread(_opted_out, webhooks.engine(request), sender)
    except Exception as exc:
        log.warning("sms: the opt-outs could not be read for a notice (%s: %s)", why, type(exc).__name__)
        quiet = False
    return webhooks.twiml(message_twiml(None if quiet else text))


def _keyword(engine, sender: str | None, word: str) -> bool:
    """Store an opt-out or opt-in; True when the state of the number changed."""
    if sender is None:
        return False
    with engine.begin() as conn:
        if word == sms.STOP:
            return store.opt_out(conn, sender, "keyword")
        return store.opt_in(conn, sender)


@dataclass
class ReplyJob:
    """The writes after one SMS is stored (run by :class:`~channels.twilio.records.WithIntake` in the intake
    writer's thread): decide the answer, record it in the case. Calling it (one SMS) or :meth:`batch` (the
    SMS of one intake batch) gives ``(kind, text, message_id)``."""

    kb: Any
    body: str
    sender: str | None
    settings: Any
    service: Any
    now: datetime
    first: Plan

    def reply(self, result: IntakeResult, history: list[str], last_out: dict[str, Any] | None) -> SmsReply | None:
        calendar = self.service.policy.clock.calendar
        return decide(self.kb, result, self.body, history, last_out, now=self.now,
                      local_now=self.now.astimezone(calendar.tz), is_holiday=calendar.is_holiday,
                      max_segments=self.settings.answer_max_segments, first=self.first,
                      response_hours=self.service.policy.settings.first_response_hours)

    def route(self, answer: Answer) -> tuple[dict[str, Any], dict[str, Any]]:
        """:func:`route_of` the answer; the plan's when it is the plan's answer."""
        if answer is self.first.answer and self.first.service is not None and self.first.authority is not None:
            return self.first.service, self.first.authority
        return route_of(self.kb, answer)

    def __call__(self, conn, result: IntakeResult) -> tuple[str, str | None, int | None]:
        if self.sender is None or store.is_opted_out(conn, self.sender):
            return "opted_out", None, None
        if not result.created:
            # Twilio sent the same MessageSid again: it does when the first webhook timed out or failed, so
            # the citizen never got the answer to it. Stored once; answered with the answer recorded then (its
            # delivery report comes to the same message), or nothing when that message got none.
            recorded = reply_to(conn, result.case_id, result.message_id, AUTOMATIC)
            if recorded is None:
                return "duplicate", None, None
            return "duplicate", recorded["text"], recorded["id"]
        history, last_out = case_history(conn, result.case_id, "sms") if result.joined else ([], None)
        reply = self.reply(result, history, last_out)
        if reply is None:
            return "quiet", None, None
        case = None
        if reply.answer is not None and reply.closes:
            service, authority = self.route(reply.answer)
            case = answered(conn, result.case_id, service=service, authority=authority, agent=AUTO,
                            reason="answered automatically by SMS", policy=self.service.policy, now=self.now)
        message_id = record_reply(conn, result.case_id, text=reply.text, channel="sms", recipient=self.sender,
                                  agent=reply.agent, settings=self.service.queue, now=self.now, case=case)
        return reply.agent, reply.text, message_id

    @staticmethod
    def batch(conn, items: list[tuple[ReplyJob, Any]]) -> list[Any]:
        """The same for the SMS of one intake batch, with a few statements for all of them: one query for the
        opt-outs, the new cases as intake wrote them (:attr:`IntakeResult.case`), :func:`hub.casework.answer_many`
        for the direct answers and :func:`hub.casework.send_many` for the texts. Follow-ups, which need their
        case's history, and Twilio's repeats go one by one, after those. A case the routing stage moved
        meanwhile raises StaleState, and :class:`WithIntake` writes the batch again one SMS at a time."""
        opted = store.opted_out_among(conn, (job.sender for job, _ in items if job.sender))
        results: list[Any] = [None] * len(items)
        new: list[tuple[int, ReplyJob, IntakeResult, SmsReply]] = []
        # Follow-ups and Twilio's repeats go after the new cases' answers: a follow-up of a case this batch
        # opened, or a repeat of an SMS in it, then finds the answer that SMS got.
        later: list[int] = []
        for index, (job, result) in enumerate(items):
            if job.sender is None or job.sender in opted:
                results[index] = ("opted_out", None, None)
            elif not result.created or result.joined:
                later.append(index)
            else:
                reply = job.reply(result, [], None)
                results[index] = ("quiet", None, None) if reply is None else None
                if reply is not None:
                    new.append((index, job, result, reply))
        if new:
            ReplyJob._write_new(conn, new, results)
        for index in later:
            job, result = items[index]
            results[index] = job(conn, result)
        return results

    @staticmethod
    def _write_new(conn, new: list[tuple[int, ReplyJob, IntakeResult, SmsReply]], results: list[Any]) -> None:
        now = max(job.now for _, job, _, _ in new)
        service = new[0][1].service
        # The cases as intake wrote them a moment ago (read back only for a result without them).
        rows = {result.case_id: result.case for _, _, result, _ in new if result.case is not None}
        unread = [result.case_id for _, _, result, _ in new if result.case_id not in rows]
        if unread:
            rows.update((row["id"], dict(row)) for row in conn.execute(
                select(case_t).where(case_t.c.id.in_(unread))).mappings())
        answers = [(rows[result.case_id], *job.route(reply.answer)) for _, job, result, reply in new
                   if reply.answer is not None]
        if answers:
            casework.answer_many(conn, answers, agent=AUTO, policy=service.policy,
                                 reason="answered automatically by SMS", now=now)
        ids = casework.send_many(conn, [(rows[result.case_id], reply.text, reply.agent, job.sender)
                                        for _, job, result, reply in new],
                                 queue=service.queue, channel="sms", delivered=True, now=now)
        for (index, _, _, reply), message_id in zip(new, ids, strict=True):
            results[index] = (reply.agent, reply.text, message_id)


async def sms_webhook(request: web.Request) -> web.Response:
    """``POST /twilio/sms``: store, then answer with TwiML."""
    st = webhooks.state(request)
    try:
        sms_in = await webhooks.parse(request, SmsWebhook, "/twilio/sms")
    except WebhookError as exc:
        return webhooks.refused(exc)
    sender = webhooks.phone_or_none(sms_in.from_)
    word = sms.keyword(sms_in.body, sms_in.opt_out_type)
    if word in (sms.STOP, sms.START):
        await asyncio.to_thread(_keyword, webhooks.engine(request), sender, word)
        # With Advanced Opt-Out Twilio confirmed the keyword itself; a second confirmation would be noise.
        text = None if sms_in.opt_out_type else sms.TEXTS["stopped" if word == sms.STOP else "started"]
        log.info("sms: %s from a sender recorded (message %s)", word, sms_in.message_sid)
        return webhooks.twiml(message_twiml(text))
    if word == sms.HELP:
        return webhooks.twiml(message_twiml(None if sms_in.opt_out_type else sms.TEXTS["help"]))
    problem = sms.refusal(sms_in.body, len(sms_in.media))
    if problem:
        log.info("sms: message %s not taken: %s", sms_in.message_sid, problem)
        return await notice(request, sender, sms.TEXTS[problem], problem)
    service, kb, after = webhooks.queue_service(request), webhooks.kb(request), st.extra.get("after")
    if service is None or kb is None or after is None:
        return await notice(request, sender, sms.TEXTS["unavailable"], "unavailable")
    now = st.clock()
    try:
        req = to_request(sms_in, sender, now)
    except ValidationError as exc:
        log.info("sms: message %s does not make a request (%d errors)", sms_in.message_sid, exc.error_count())
        return webhooks.refused(InvalidPayload("the message cannot be stored as a request"))
    # A new case's answer depends on its text alone: decided here, so the writer's thread only writes it.
    calendar = service.policy.clock.calendar
    first = plan(kb, req.text, local_now=now.astimezone(calendar.tz), is_holiday=calendar.is_holiday,
                 max_segments=st.settings.answer_max_segments)
    # The sender's budget of requests, shared with every channel ([limits] sender_per_hour): over it, the
    # citizen is told to send the SMS again later (Twilio gets its 200, so it does not retry); nothing stored.
    limit_keys = webhooks.limit_keys(sender)
    limited = webhooks.check_limits(request, "/twilio/sms", limit_keys)
    if limited is not None:
        log.info("sms: message %s not taken: the sender is over the intake limit", sms_in.message_sid)
        return await notice(request, sender, sms.TEXTS["limited"].format(wait=webhooks.wait_text(limited.retry_after)),
                            "limited")
    key = req.key()
    written = after.expect(key, ReplyJob(kb, req.text, sender, st.settings, service, now, first))
    try:
        result = await service.writer.submit(req)
    except RequestRejected as exc:
        after.forget(key, written)
        webhooks.refund_limits(request, limit_keys)
        log.info("sms: message %s refused by the queue's limits: %s", sms_in.message_sid, exc)
        return await notice(request, sender, sms.TEXTS["refused"], "refused")
    except IntakeUnavailable:
        after.forget(key, written)
        webhooks.refund_limits(request, limit_keys)
        log.warning("sms: intake unavailable; message %s not stored", sms_in.message_sid)
        return await notice(request, sender, sms.TEXTS["unavailable"], "unavailable")
    if not result.created:
        webhooks.refund_limits(request, limit_keys)  # Twilio's retry of a stored SMS costs nothing
    try:
        kind, text, message_id = await written
    except Exception as exc:  # the request is stored; without an answer now an agent answers it
        log.error("sms: the answer to message %s could not be recorded (%s)", sms_in.message_sid,
                  type(exc).__name__)
        return webhooks.twiml(message_twiml(None))
    action = status_callback_url(st.settings, message_id) if message_id is not None else None
    return webhooks.twiml(message_twiml(text, action))


# -- delivery reports ------------------------------------------------------------------------------------------

_RANK = {"accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3, "delivered": 4, "read": 5,
         "undelivered": 4, "failed": 4, "canceled": 4, "receiving": 0, "received": 0, "partially_delivered": 4}
_FAILED = frozenset({"failed", "undelivered", "canceled"})


def apply_status(engine, message_id: int, report: MessageStatusWebhook, now: datetime | None = None) -> str:
    """Record one delivery report on the hub's message ``message_id``; returns what it did (for tests, logs)."""
    now = now or datetime.now(UTC)
    status = report.message_status
    with engine.begin() as conn:
        row = conn.execute(select(message_t).where(message_t.c.id == message_id, message_t.c.direction == "out",
                                                   message_t.c.channel.in_(("sms", "phone")))).mappings().first()
        if row is None:
            return "unknown message"
        known = conn.execute(select(store.delivery_t).where(store.delivery_t.c.message_id == message_id)
                             ).mappings().first()
        if known is not None and known["message_sid"] not in (None, report.message_sid):
            return "another message's report"
        if known is not None and _RANK.get(known["status"], 0) > _RANK.get(status, 0):
            return "older than what is known"
        store.record_delivery(conn, message_id, status, message_sid=report.message_sid, error_code=report.error_code,
                              now=now)
        if status in _FAILED:
            code = f" {report.error_code}" if report.error_code else ""
            if row["send_state"] != "failed" or not (row["last_error"] or "").startswith("undelivered"):
                conn.execute(update(message_t).where(message_t.c.id == message_id).values(
                    send_state="failed", last_error=f"undelivered: Twilio reported {status}{code}"[:1000]))
                audit(conn, row["case_id"], "twilio:status", "send_bounced",
                      reason=f"Twilio reported the SMS {status}{code}", now=now)
            if report.error_code == OPTED_OUT_AT_TWILIO and row["recipient"]:
                store.opt_out(conn, row["recipient"], "twilio", now)
            return "failed"
        if row["send_state"] in ("uncertain", "failed"):
            # It reached Twilio after all: the send whose outcome was unknown went out.
            conn.execute(update(message_t).where(message_t.c.id == message_id)
                         .values(send_state="sent", sent_at=row["sent_at"] or now, last_error=None))
            audit(conn, row["case_id"], "twilio:status", "send_confirmed", reason=f"Twilio reported {status}",
                  now=now)
            return "confirmed"
        return "recorded"


async def status_webhook(request: web.Request) -> web.Response:
    """``POST /twilio/status?message_id=N``: a delivery report of one of the hub's SMS."""
    try:
        report = await webhooks.parse(request, MessageStatusWebhook, "/twilio/status")
    except WebhookError as exc:
        return webhooks.refused(exc)
    raw = request.query.get("message_id", "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        return webhooks.refused(InvalidPayload("message_id must be the hub's message number"))
    outcome = await asyncio.to_thread(apply_status, webhooks.engine(request), int(raw), report)
    log.info("sms: delivery report %s for message %s: %s", report.message_status, raw, outcome)
    return web.Response(status=204)
