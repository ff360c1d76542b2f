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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from hub import casework
from hub.console.calls import call_t as hub_call_t
from hub.queue.cases import CaseState, SlaPolicy, StaleState, message_t
from hub.queue.settings import QueueSettings

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
        select(message_t.c.id, message_t.c.author, message_t.c.created_at, message_t.c.kind)
        .where(message_t.c.case_id == case_id, message_t.c.direction == "out")
        .order_by(message_t.c.id.desc()).limit(1)).mappings().first()
    return texts, dict(last) if last else None


# -- writing right after the intake commit, in the writer's thread ----------------------------------------------


class AfterCommit:
    """Runs a channel's writes for a request in the intake writer's thread, right after its batch commits.

    A listener of :class:`~hub.queue.intake.IntakeWriter` (the pattern of the e-mail channel's ``AckWriter``):
    the writes of a whole batch share one transaction, and since the thread that writes intake writes them
    too they never wait for each other's SQLite lock (a second writer thread would sleep in the busy
    handler, which is what made every webhook slow). The handler registers ``work(conn, outcome)`` under
    the request's key *before* submitting it (:meth:`expect`), awaits the submit, then awaits the future
    :meth:`expect` returned: the value of ``work``, or the exception it (or the request) failed with. The
    webhook answers only after both are committed.

    A ``work`` may carry a ``batch`` attribute, ``batch(conn, [(work, outcome), ...]) -> [result, ...]``:
    the works of one batch that share it run in one call, so their statements are written for many rows
    at once (an SMS's answer costs three statements a batch instead of nine a message).

    When the shared transaction fails, each request's work runs again on its own, in a transaction of its
    own, so that one bad write does not cost the others theirs.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._expected: dict[tuple[str, str], tuple[Callable[[Connection, Any], Any], Any, Any]] = {}

    def attach(self, writer: Any) -> AfterCommit:
        # First: the cases this channel answers are answered before the routing stage is woken for the batch.
        writer.add_listener(self._after_batch, first=True)
        return self

    def expect(self, key: tuple[str, str], work: Callable[[Connection, Any], Any]) -> asyncio.Future:
        """Run ``work(conn, outcome)`` after the batch that stores the request ``key``; its result's future."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        # No lock: setting and popping one key of a dict are atomic, and nothing else touches it (a lock
        # here made every handler wait for the writer thread while it took a batch's works).
        self._expected[key] = (work, future, loop)
        return future

    def forget(self, key: tuple[str, str]) -> None:
        """The request never reached the writer: nothing to run."""
        entry = self._expected.pop(key, None)
        if entry is not None and not entry[1].done():
            entry[1].cancel()

    def _after_batch(self, reqs: list[Any], outcomes: list[Any]) -> None:
        jobs = []
        expected = self._expected
        for req, outcome in zip(reqs, outcomes, strict=True):
            entry = expected.pop(req.key(), None)
            if entry is not None:
                jobs.append((entry, outcome))
        if not jobs:
            return
        try:
            with self.engine.begin() as conn:
                results = self._run_all(conn, [(work, outcome) for (work, _, _), outcome in jobs])
        except Exception:
            log.warning("twilio: the writes of %d webhooks failed together; writing them one by one", len(jobs))
            results = []
            for (work, _, _), outcome in jobs:
                try:
                    with self.engine.begin() as conn:  # an exception rolls back this request's writes only
                        results.append(self._run(conn, work, outcome))
                except Exception as exc:
                    log.error("twilio: a webhook's writes failed (%s)", type(exc).__name__)
                    results.append(exc)
        # One wake-up per event loop for the whole batch (each wake-up is a write to the loop's self-pipe).
        by_loop: dict[Any, list[tuple[asyncio.Future, Any]]] = {}
        for ((_, future, loop), _), value in zip(jobs, results, strict=True):
            by_loop.setdefault(loop, []).append((future, value))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

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


def _settle(settled: list[tuple[asyncio.Future, Any]]) -> None:
    for future, value in settled:
        if future.done():  # the handler was cancelled
            continue
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)
