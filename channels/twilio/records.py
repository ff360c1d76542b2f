"""What the Twilio channels write into cases once intake has stored a request.

Built from the one implementation of case actions (:mod:`hub.casework`: take, move, send) and the audit
log, in the caller's transaction, before the webhook answers:

* :func:`answered` — the hub answered the citizen itself (the SMS or the phone menu gave the direct
  answer): the case gets the service and office and moves to ``answered``;
* :func:`record_reply` — the text the citizen got through TwiML, as an outbound message of the case that
  is already on its way (``sent``, never picked up by the outbox again); its delivery report comes back
  to ``/twilio/status?message_id=N``;
* :func:`request_callback` — the caller confirmed a number to be called back on: the case's contact
  number, an audit entry; the case stays open with its first-response clock (24 working hours);
* :func:`record_ivr_call` — a call the menu handled, as a call record (agent ``ivr``) the dashboard counts:
  ``answered`` → ``first_contact``, ``callback`` → ``forwarded`` (a person has to answer it later).
* :class:`TurnJob` — what a turn of the phone menu writes (:func:`record_turn`), and for the calls of one
  intake batch that are stored for the first time, all of them in a few statements (see its section).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from channels.twilio import store, voice
from channels.twilio.answer import Answer
from hub import casework
from hub.casework import actor_name
from hub.console.calls import call_t as hub_call_t
from hub.console.calls import card_text
from hub.queue.bulk import BulkWriter
from hub.queue.cases import CaseState, SlaPolicy, StaleState, audit, case_t, message_t
from hub.queue.intake import IntakeResult
from hub.queue.routing import route_cache
from hub.queue.settings import QueueSettings
from knowledge.base import authority_json, service_json

log = logging.getLogger(__name__)

#: Call record agent name of calls the phone menu handled alone.
IVR_AGENT = "ivr"
IVR_OUTCOMES = {"answered": "first_contact", "callback": "forwarded"}


def answered(conn: Connection, case_id: int, *, service: Mapping[str, Any], authority: Mapping[str, Any],
             agent: str, reason: str, policy: SlaPolicy, now: datetime | None = None) -> dict[str, Any] | None:
    """Move the case to ``answered`` with this route (:mod:`hub.casework`); returns the case as it is now,
    None when it was past that already.

    A new case is taken first (``routed``: the routing stage may be routing it at the same moment; its write
    then finds the case changed and leaves it). Tried again when the case changes under it.
    """
    now = now or datetime.now(UTC)
    route = casework.route_values(service, authority, agent, now)
    for _ in range(3):
        row = casework.load(conn, case_id)
        try:
            row = casework.take(conn, row, agent=agent, policy=policy, service=service, authority=authority,
                                reason=reason, now=now)
            if row["state"] not in (CaseState.ROUTED, CaseState.NEEDS_CLARIFICATION):
                return None
            changes = casework.move(conn, row, target=CaseState.ANSWERED, agent=agent, policy=policy,
                                    reason=reason, values=route, now=now)
            return {**row, **changes}
        except StaleState:
            continue
    return None


def record_reply(conn: Connection, case_id: int, *, text: str, channel: str, recipient: str | None, agent: str,
                 settings: QueueSettings | None = None, now: datetime | None = None,
                 case: Mapping[str, Any] | None = None) -> int:
    """A message the citizen already got through TwiML (or heard); returns its id (for the delivery report).

    Written by :func:`hub.casework.send` as delivered (``sent``): it was handed to Twilio in the webhook's
    answer, so the outbox never sends it a second time.
    """
    return casework.send(conn, case or casework.load(conn, case_id), text=text, agent=agent,
                         queue=settings or QueueSettings(), channel=channel, recipient=recipient, now=now,
                         delivered=True)


#: The caller wants to be called back: the hub's one rule (:func:`hub.casework.request_callback`), which the
#: web form's "Rückruf" uses too.
request_callback = casework.request_callback


def record_ivr_call(conn: Connection, *, started_at: datetime, outcome: str, case_id: int | None,
                    service: Mapping[str, Any] | None, authority: Mapping[str, Any] | None,
                    now: datetime | None = None) -> int | None:
    """The call record of a call the menu handled (None for outcomes a person records, e.g. a transfer)."""
    recorded = IVR_OUTCOMES.get(outcome)
    if recorded is None:
        return None
    values: dict[str, Any] = {"agent": IVR_AGENT, "started_at": started_at, "ended_at": now or datetime.now(UTC),
                              "answered_within_s": None, "outcome": recorded, "case_id": case_id}
    if service:
        values |= {"service_id": service["id"], "service_name": service.get("name")}
    if authority:
        values |= {"authority_id": authority["id"], "authority_name": authority.get("name")}
    return conn.execute(_INSERT_CALL_RECORD, values).scalar_one()


_INSERT_CALL_RECORD = insert(hub_call_t).returning(hub_call_t.c.id)


def case_history(conn: Connection, case_id: int, channel: str) -> tuple[list[str], dict[str, Any] | None]:
    """The citizen's texts of the case on ``channel`` (oldest first) and the last automatic message to them."""
    texts = list(conn.execute(
        select(message_t.c.text).where(message_t.c.case_id == case_id, message_t.c.direction == "in",
                                       message_t.c.channel == channel).order_by(message_t.c.id)).scalars())
    last = conn.execute(
        select(message_t.c.id, message_t.c.author, message_t.c.created_at, message_t.c.kind, message_t.c.text)
        .where(message_t.c.case_id == case_id, message_t.c.direction == "out")
        .order_by(message_t.c.id.desc()).limit(1)).mappings().first()
    return texts, dict(last) if last else None


def reply_to(conn: Connection, case_id: int, message_id: int | None, authors: tuple[str, ...]
             ) -> dict[str, Any] | None:
    """The automatic answer (by one of ``authors``) the hub recorded for the citizen's message ``message_id``:
    the first such outbound message of the case after it and before the citizen's next one. None when that
    message got no answer."""
    if message_id is None:
        return None
    later = conn.execute(
        select(message_t.c.id, message_t.c.direction, message_t.c.author, message_t.c.text)
        .where(message_t.c.case_id == case_id, message_t.c.id > message_id)
        .order_by(message_t.c.id).limit(20)).mappings()
    for row in later:
        if row["direction"] == "in":
            return None
        if row["author"] in authors:
            return dict(row)
    return None


# -- writing with the intake batch, in the writer's thread --------------------------------------------------


class WithIntake:
    """Runs a channel's writes for a request in the intake writer's thread, in its batch's transaction.

    A companion of :class:`~hub.queue.intake.IntakeWriter` (:class:`~hub.queue.intake.BatchCompanion`): the
    requests of a batch and these writes for them share one commit, written by the thread that writes intake
    (a second writer thread would sleep in SQLite's busy handler, which is what made every webhook slow), and
    each event loop is woken once for both. The handler registers ``work(conn, outcome)`` under the request's
    key *before* submitting it (:meth:`expect`), awaits the submit, then awaits the future :meth:`expect`
    returned: the value of ``work``, or the exception it (or the request) failed with. Both are answered only
    after the commit, so the webhook answers only what is stored.

    A ``work`` may carry a ``batch`` attribute, ``batch(conn, [(work, outcome), ...]) -> [result, ...]``:
    the works of one batch that share it run in one call, so their statements are written for many rows
    at once (an SMS's answer costs three statements a batch instead of nine a message).

    The works run under a SAVEPOINT: when one fails, their writes are rolled back (the requests stay stored)
    and each request's work runs again on its own, in a transaction of its own, so that one bad write does
    not cost the others theirs.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        # Several handlers may wait on one key: Twilio repeats a webhook (same MessageSid, same turn) while
        # the first is still being written. Each gets its own entry, taken in the order they were submitted.
        self._expected: dict[tuple[str, str], list[tuple[Callable[[Connection, Any], Any], Any, Any]]] = {}

    def attach(self, writer: Any) -> WithIntake:
        writer.add_companion(self)
        return self

    def expect(self, key: tuple[str, str], work: Callable[[Connection, Any], Any]) -> asyncio.Future:
        """Run ``work(conn, outcome)`` with the batch that stores the request ``key``; its result's future."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        # No lock: ``setdefault`` and ``list.append`` (here) and ``dict.pop`` (in the writer's :meth:`take`) are
        # atomic, and nothing else touches the dict (a lock here made every handler wait for the writer thread
        # while it took a batch's works). The handler submits its request right after this, before it awaits
        # anything, so the entries of one key are in the order of the key's requests in the writer's queue.
        self._expected.setdefault(key, []).append((work, future, loop))
        return future

    def forget(self, key: tuple[str, str], future: asyncio.Future | None = None) -> None:
        """The request never reached the writer: nothing to run (for the handler whose ``future`` it is; the
        oldest entry of ``key`` when none is named)."""
        entries = self._expected.get(key)
        if not entries:
            return
        entry = next((e for e in entries if e[1] is future), None) if future is not None else entries[0]
        if entry is None:
            return
        try:
            entries.remove(entry)
        except ValueError:  # the writer took it meanwhile
            return
        if not entries:
            self._expected.pop(key, None)
        if not entry[1].done():
            entry[1].cancel()

    # -- BatchCompanion ----------------------------------------------------------------------------------------

    def take(self, reqs: list[Any]) -> list[tuple[int, tuple[Callable[[Connection, Any], Any], Any, Any]]] | None:
        """The works expected for requests of the batch, by the request's place in it."""
        expected = self._expected
        share = []
        waiting: dict[tuple[str, str], list[Any]] = {}
        for index, req in enumerate(reqs):
            key = req.key()
            entries = waiting.get(key)
            if entries is None:
                entries = waiting[key] = expected.pop(key, None) or []
            if entries:
                share.append((index, entries.pop(0)))
        for key, rest in waiting.items():
            if rest:  # handlers of this key whose requests are in a later batch: theirs stay expected
                expected.setdefault(key, [])[:0] = rest
        return share or None

    def write(self, conn: Connection, share: list[tuple[int, Any]], outcomes: list[Any]) -> list[tuple[Any, Any, Any]]:
        results = self._run_all(conn, [(work, outcomes[index]) for index, (work, _, _) in share])
        return [(future, loop, value) for (_, (_, future, loop)), value in zip(share, results, strict=True)]

    def write_alone(self, share: list[tuple[int, Any]], outcomes: list[Any]) -> list[tuple[Any, Any, Any]]:
        log.warning("twilio: the writes of %d webhooks failed together; writing them one by one", len(share))
        settled = []
        for index, (work, future, loop) in share:
            try:
                with self.engine.begin() as conn:  # an exception rolls back this request's writes only
                    value = self._run(conn, work, outcomes[index])
            except Exception as exc:
                log.error("twilio: a webhook's writes failed (%s)", type(exc).__name__)
                value = exc
            settled.append((future, loop, value))
        return settled

    @classmethod
    def _run_all(cls, conn: Connection, items: list[tuple[Callable[[Connection, Any], Any], Any]]) -> list[Any]:
        results: list[Any] = [None] * len(items)
        groups: dict[Any, list[int]] = {}
        for index, (work, outcome) in enumerate(items):
            batch = getattr(work, "batch", None)
            if batch is None or isinstance(outcome, BaseException):
                results[index] = cls._run(conn, work, outcome)
            else:
                groups.setdefault(batch, []).append(index)
        for batch, indexes in groups.items():
            for index, value in zip(indexes, batch(conn, [items[i] for i in indexes]), strict=True):
                results[index] = value
        return results

    @staticmethod
    def _run(conn: Connection, work: Callable[[Connection, Any], Any], outcome: Any) -> Any:
        # A request that failed has nothing to write; its exception is what the handler gets.
        return outcome if isinstance(outcome, BaseException) else work(conn, outcome)


# -- the phone menu's turns ----------------------------------------------------------------------------------
# What a turn of the phone menu writes, in the intake writer's thread, with its request's batch.
#
# :class:`TurnJob` is the work :class:`WithIntake` runs for a turn whose request
# (the concern, the place, a callback number) intake stored. Calling it writes one turn
# (:func:`record_turn`); :meth:`TurnJob.batch` writes the turns of one intake batch that open their call's
# row — the first thing a caller says, i.e. one turn of every call — with a few statements for all of them:
#
# * the SMS opt-outs of the callers (one query), so the handler did not have to read them first;
# * the direct answers: :func:`hub.casework.answer_many` (the cases to ``answered``, one statement per step)
#   and :func:`hub.casework.send_many` (what the menu said, recorded as delivered);
# * the call records of agent ``ivr`` the dashboard counts, and the calls' rows: one multi-row ``INSERT``
#   each, straight on the driver's cursor (as intake writes its own rows).
#
# Everything else (a follow-up of a call already stored, Twilio's repeat of a webhook, a callback, a
# transfer, the details by SMS) goes through :func:`record_turn` one by one. A write that fails for the
# batch (a call row another process inserted meanwhile, a case that moved) rolls the batch back and
# :class:`WithIntake` writes its turns one at a time.


IVR = IVR_AGENT  # the phone menu as the "agent" of hub.casework
ANSWER_REASON = "answered by the phone menu"


def new_call_row(call_sid: str, caller: str | None, now: datetime) -> dict[str, Any]:
    """A call as the hub keeps it before anything of it is stored (the greeting stores nothing)."""
    return {"id": None, "call_sid": call_sid, "caller": caller, "concern": None, "place": None,
            "pending_number": None, "case_id": None, "outcome": None, "hub_call_id": None, "service_id": None,
            "authority_id": None, "turns": 0, "extra": {}, "started_at": now}


@dataclass
class TurnJob:
    """One turn to write after its request is stored; calling it (or :meth:`batch`) gives the turn answered.

    ``opt_out_unread``: the handler built the turn without reading the caller's SMS opt-out (the concern
    step, where nothing else needs reading); it is read here, and a caller who opted out gets the turn
    again without the SMS offer (the same request: only what is said at the end differs).
    """

    kb: Any
    flow: voice.VoiceFlow
    service: Any
    seen: dict[str, Any]
    turn: voice.Turn
    now: datetime
    ctx: voice.CallContext
    step: str
    speech: str = ""
    digits: str = ""
    opt_out_unread: bool = False

    def _checks_opt_out(self) -> bool:
        return self.opt_out_unread and self.ctx.sms_allowed and self.ctx.caller is not None

    def final(self, opted: bool) -> voice.Turn:
        """The turn as answered, given whether the caller opted out of SMS."""
        if not (opted and self._checks_opt_out()):
            return self.turn
        return self.flow.handle(self.step, replace(self.ctx, sms_allowed=False), self.speech, self.digits)

    def __call__(self, conn: Connection, result: IntakeResult) -> voice.Turn:
        turn = self.final(self._checks_opt_out() and store.is_opted_out(conn, self.ctx.caller))
        record_turn(conn, self.kb, self.flow, self.service, self.seen, turn, result.case_id, self.now,
                    fresh=result.created, closes=self.own_case(result))
        return turn

    def own_case(self, result: IntakeResult) -> bool:
        """Whether the request's case is this call's own. A call threaded by the caller's number onto a case
        opened before (an SMS, an earlier call) answers what the caller asked now; that case's question stays
        open for whoever owes its answer."""
        return not result.joined or self.seen["case_id"] == result.case_id

    def opens(self, result: IntakeResult, turn: voice.Turn) -> bool:
        """Whether the turn is one :meth:`batch` writes: it creates its call's row, its request is new, and it
        writes nothing but the case's answer and the call record (no callback, transfer or SMS)."""
        return (self.seen["id"] is None and result.created and self.own_case(result) and turn.callback_number is None
                and not turn.send_details
                and not turn.extra and (turn.outcome is None or (turn.outcome == voice.ANSWERED and turn.answer is not None)))

    @staticmethod
    def batch(conn: Connection, items: list[tuple[TurnJob, IntakeResult]]) -> list[voice.Turn]:
        """The turns of one intake batch, written together where they open their call (see the module)."""
        callers = sorted({job.ctx.caller for job, _ in items if job._checks_opt_out()})
        opted = store.opted_out_among(conn, callers)
        turns = [job.final(job.ctx.caller in opted) for job, _ in items]
        together: list[int] = []
        cases: set[int] = set()
        for index, ((job, result), turn) in enumerate(zip(items, turns, strict=True)):
            if job.opens(result, turn) and result.case_id not in cases:  # one turn per case in one statement
                together.append(index)
                cases.add(result.case_id)
        if together:
            _write_openings(conn, [(items[i][0], items[i][1], turns[i]) for i in together])
        alone = set(together)
        for index, ((job, result), turn) in enumerate(zip(items, turns, strict=True)):
            if index not in alone:  # after the openings: a repeat in the same batch finds its call's row
                record_turn(conn, job.kb, job.flow, job.service, job.seen, turn, result.case_id, job.now,
                            fresh=result.created, closes=job.own_case(result))
        return turns


def spoken_answer(flow: voice.VoiceFlow, turn: voice.Turn) -> str:
    """The answer as the caller heard it: the case's outbound message of the call."""
    assert turn.answer is not None
    return turn.answer_text if turn.answer_text is not None else " ".join(flow.answer_lines(turn.answer))


def answer_rows(kb: Any, answer: Answer) -> tuple[dict[str, Any], dict[str, Any]]:
    """The service and office of an answer as :mod:`hub.casework` records them (the names as the menu said
    them when the knowledge base no longer has one). Kept with the knowledge base's decisions, as the answer
    itself is (the service as the place sees it was a tenth of a batch's writes); shared, never changed."""
    return route_cache(kb).remember(("ivr-answer-rows", answer.service_id, answer.place, answer.office_id,
                                     answer.service, answer.office), lambda: _answer_rows(kb, answer))


def _answer_rows(kb: Any, answer: Answer) -> tuple[dict[str, Any], dict[str, Any]]:
    service = service_json(kb.view_at(answer.service_id, answer.place)) if answer.service_id in kb.services \
        else {"id": answer.service_id, "name": answer.service}
    office = authority_json(kb.authorities[answer.office_id]) if answer.office_id in kb.authorities \
        else {"id": answer.office_id, "name": answer.office}
    return service, office


def _write_openings(conn: Connection, items: list[tuple[TurnJob, IntakeResult, voice.Turn]]) -> None:
    """The first stored turn of many calls: answers, spoken texts, call records, the calls' rows."""
    first = items[0][0]
    service, now = first.service, max(job.now for job, _, _ in items)
    cases = {result.case_id: dict(result.case) for _, result, _ in items if result.case is not None}
    unread = [result.case_id for _, result, _ in items if result.case_id not in cases]
    if unread:  # threaded onto an open case of the same number: as it is now
        cases.update((row["id"], dict(row)) for row in conn.execute(
            select(case_t).where(case_t.c.id.in_(unread))).mappings())
    answered_ = [(job, result, turn, *answer_rows(job.kb, turn.answer)) for job, result, turn in items
                 if turn.answer is not None]
    if answered_:
        casework.answer_many(conn, [(cases[result.case_id], svc, office) for _, result, _, svc, office in answered_],
                             agent=IVR, policy=service.policy, reason=ANSWER_REASON, now=now)
        casework.send_many(conn, [(cases[result.case_id], spoken_answer(job.flow, turn), IVR,
                                   job.seen["caller"]) for job, result, turn, _, _ in answered_],
                           queue=service.queue, channel="phone", delivered=True, now=now)
    ins = BulkWriter(conn)
    records = [{"agent": IVR, "started_at": job.seen["started_at"], "ended_at": job.now,
                "answered_within_s": None, "outcome": IVR_OUTCOMES[voice.ANSWERED], "case_id": result.case_id,
                "service_id": svc["id"], "service_name": svc.get("name"),
                "authority_id": office["id"], "authority_name": office.get("name")}
               for job, result, turn, svc, office in answered_ if turn.outcome == voice.ANSWERED]
    record_ids = dict(ins.insert(hub_call_t, records, ("case_id", "id"))) if records else {}
    rows = []
    for job, result, turn in items:
        answer = turn.answer
        rows.append({
            "call_sid": job.seen["call_sid"], "started_at": job.seen["started_at"], "updated_at": job.now,
            "step": turn.step, "tries": 0, "turns": 1, "caller": job.seen["caller"], "concern": turn.concern,
            "place": turn.place, "pending_number": turn.pending_number, "outcome": turn.outcome,
            "service_id": answer.service_id if answer else None, "authority_id": answer.office_id if answer else None,
            "case_id": result.case_id, "hub_call_id": record_ids.get(result.case_id), "extra": {},
        })
    # A call row another writer inserted meanwhile makes this fail: the batch is then written turn by turn.
    ins.insert(store.call_t, rows)


def record_turn(conn: Connection, kb: Any, flow: voice.VoiceFlow, service: Any, seen: dict[str, Any],
                turn: voice.Turn, case_id: int | None, now: datetime, *, fresh: bool, closes: bool = True) -> None:
    """Write one turn: the call's row (created with the first), the answer in the case (``answered``, the
    spoken text), the details SMS, the callback, the transfer, the call record. ``fresh`` is False when the
    turn's request was stored before (Twilio repeated the webhook): what it wrote then is not written again.
    ``closes`` is False when the case holds an earlier question of its own: the spoken answer is recorded, and
    the case is not moved to ``answered``."""
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
        service_row, authority_row = answer_rows(kb, turn.answer)
    if turn.answer is not None and case_id is not None and fresh:
        case = answered(conn, case_id, service=service_row, authority=authority_row, agent=IVR,
                        reason=ANSWER_REASON, policy=service.policy, now=now) if closes else None
        record_reply(conn, case_id, text=spoken_answer(flow, turn), channel="phone",
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

