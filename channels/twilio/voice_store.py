"""What a turn of the phone menu writes, in the intake writer's thread, right after its request committed.

:class:`TurnJob` is the work :class:`~channels.twilio.records.AfterCommit` runs for a turn whose request
(the concern, the place, a callback number) intake stored. Calling it writes one turn
(:func:`record_turn`); :meth:`TurnJob.batch` writes the turns of one intake batch that open their call's
row — the first thing a caller says, i.e. one turn of every call — with a few statements for all of them:

* the SMS opt-outs of the callers (one query), so the handler did not have to read them first;
* the direct answers: :func:`hub.casework.answer_many` (the cases to ``answered``, one statement per step)
  and :func:`hub.casework.send_many` (what the menu said, recorded as delivered);
* the call records of agent ``ivr`` the dashboard counts, and the calls' rows: one multi-row ``INSERT``
  each, straight on the driver's cursor (as intake writes its own rows).

Everything else (a follow-up of a call already stored, Twilio's repeat of a webhook, a callback, a
transfer, the details by SMS) goes through :func:`record_turn` one by one. A write that fails for the
batch (a call row another process inserted meanwhile, a case that moved) rolls the batch back and
:class:`AfterCommit` writes its turns one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from channels.twilio import store, voice
from channels.twilio.answer import Answer
from channels.twilio.records import (
    IVR_AGENT,
    IVR_OUTCOMES,
    answered,
    record_ivr_call,
    record_reply,
    request_callback,
)
from hub import casework
from hub.casework import actor_name
from hub.console.calls import call_t as hub_call_t
from hub.console.calls import card_text
from hub.queue.cases import audit, case_t
from hub.queue.intake import IntakeResult
from hub.queue.routing import route_cache
from knowledge.base import authority_json, service_json

try:  # intake's raw multi-row INSERT, the one implementation (public as hub.queue.bulk once h16-sms is merged)
    from hub.queue.bulk import BulkWriter as Inserter  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - until then, where it lives now
    from hub.queue.intake import _Inserter as Inserter

IVR = IVR_AGENT  # the phone menu as the "agent" of hub.casework
ANSWER_REASON = "answered by the phone menu"


def _opted_out(conn: Connection, phones: list[str]) -> set[str]:
    """Which of ``phones`` opted out of SMS: one query on the driver's cursor (through SQLAlchemy, the
    statement with its list of numbers was compiled anew for every batch)."""
    ins = Inserter(conn)
    table = conn.dialect.identifier_preparer.format_table(store.opt_out_t)
    found: set[str] = set()
    for start in range(0, len(phones), 500):
        part = phones[start : start + 500]
        found.update(row[0] for row in ins.query(
            f"SELECT phone FROM {table} WHERE phone IN ({', '.join([ins.mark] * len(part))})", part))
    return found


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
                    fresh=result.created)
        return turn

    def opens(self, result: IntakeResult, turn: voice.Turn) -> bool:
        """Whether the turn is one :meth:`batch` writes: it creates its call's row, its request is new, and it
        writes nothing but the case's answer and the call record (no callback, transfer or SMS)."""
        return (self.seen["id"] is None and result.created and turn.callback_number is None and not turn.send_details
                and not turn.extra and (turn.outcome is None or (turn.outcome == voice.ANSWERED and turn.answer is not None)))

    @staticmethod
    def batch(conn: Connection, items: list[tuple[TurnJob, IntakeResult]]) -> list[voice.Turn]:
        """The turns of one intake batch, written together where they open their call (see the module)."""
        callers = sorted({job.ctx.caller for job, _ in items if job._checks_opt_out()})
        opted = _opted_out(conn, callers) if callers else set()
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
                            fresh=result.created)
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
    ins = Inserter(conn)
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
                turn: voice.Turn, case_id: int | None, now: datetime, *, fresh: bool) -> None:
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
        service_row, authority_row = answer_rows(kb, turn.answer)
    if turn.answer is not None and case_id is not None and fresh:
        case = answered(conn, case_id, service=service_row, authority=authority_row, agent=IVR,
                        reason=ANSWER_REASON, policy=service.policy, now=now)
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

