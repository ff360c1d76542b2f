"""Workers: claim work from the queue, process it, release it (the Mailman runner model).

Claims (who holds a case or a message, and until when) are :mod:`hub.queue.claims`.

:class:`Runner` is the base of a worker: subclasses say what to claim and how to dispose of one item.
:class:`QueueService` runs intake, routing, SLA flagging and the outbox inside one hub process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, update
from sqlalchemy.engine import Connection, Engine

from hub.queue.cases import CaseState, SlaPolicy, audit, case_t, overdue_clause, transition
from hub.queue.claims import claim_rows, new_worker_id, release_dead_claims
from hub.queue.intake import IntakeWriter
from hub.queue.routing import Router, RoutingStage, case_texts
from hub.queue.settings import QueueSettings, queue_settings
from hub.queue.sla import SlaSettings

log = logging.getLogger(__name__)

class Runner:
    """One worker loop: a round of work (:meth:`run_once`), repeat; sleep when there is no work.

    ``wake()`` (called by intake after a commit) ends the sleep at once, so work of the own process
    starts without polling delay.
    """

    name = "runner"

    #: Longest pause between two busy rounds while ``yield_to()`` says so (see :meth:`_loop`).
    yield_max_seconds = 1.0

    def __init__(self, engine: Engine, settings: QueueSettings | None = None, worker: str | None = None,
                 yield_to: Callable[[], bool] | None = None) -> None:
        self.engine = engine
        self.settings = settings or QueueSettings()
        self.worker = worker or new_worker_id(self.name)
        self.yield_to = yield_to
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.processed = 0

    def run_once(self) -> int:
        """Do one round of work; returns how many items it took (0 = idle, the loop sleeps)."""
        raise NotImplementedError

    def drained(self, taken: int) -> bool:
        """Whether a round that took ``taken`` items left nothing to do (the loop then sleeps until woken)."""
        return taken == 0

    def run_until_empty(self, max_rounds: int = 10_000) -> int:
        """Process until nothing is claimable (tests and the ``worker --once`` command)."""
        total = 0
        for _ in range(max_rounds):
            n = self.run_once()
            if n == 0:
                break
            total += n
        return total

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> Runner:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def pause_under_load(self, used_cpu: float) -> float:
        """Seconds to pause after a round that used ``used_cpu`` seconds of this thread's CPU.

        Intake is saturated: clients are waiting for their commit, and they share one interpreter
        with this thread. The pause makes this work take about ``[queue] routing_share_under_load``
        of the process; what is left waits in the queue, durable, until the load passes.
        """
        share = self.settings.routing_share_under_load
        return min(self.yield_max_seconds, used_cpu * (1 - share) / share)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            started = time.thread_time()
            try:
                n = self.run_once()
            except Exception:
                log.exception("%s: a round failed; trying again", self.name)
                n = 0
            if n == 0:
                self._wake.wait(self.settings.poll_seconds)
            elif self.yield_to is not None and self.yield_to():
                self._stop.wait(self.pause_under_load(time.thread_time() - started))
            elif self.drained(n):
                # The round took all there was. Work that came since has woken us (the event was
                # cleared before the round), so an empty round to find that out is not needed:
                # at a steady trickle it was a second round per case.
                self._wake.wait(self.settings.poll_seconds)


class RoutingRunner(Runner):
    """Claims new cases and routes them; a case that fails ``max_attempts`` times becomes a dead letter."""

    name = "routing"

    def __init__(self, engine: Engine, stage: RoutingStage, settings: QueueSettings | None = None,
                 worker: str | None = None, yield_to: Callable[[], bool] | None = None) -> None:
        super().__init__(engine, settings, worker, yield_to)
        self.stage = stage
        self._limit = self.settings.worker_batch  # of the last claim

    def drained(self, taken: int) -> bool:
        """A claim that got fewer new cases than it asked for took every one there was."""
        return taken < self._limit

    def _claim_rows(self, conn: Connection, now: datetime) -> list[dict[str, Any]]:
        limit = self.settings.worker_batch
        if self.yield_to is not None and self.yield_to():
            limit = max(1, limit // 8)  # intake is saturated: short rounds, each holds the interpreter
        self._limit = limit
        return claim_rows(conn, case_t, case_t.c.state == CaseState.NEW.value, worker=self.worker,
                          limit=limit, timeout=self.settings.claim_timeout_seconds, now=now, cache_key="new cases")

    def run_once(self) -> int:
        """Claim a batch of new cases, route them, write all decisions in one transaction.

        One connection for the whole round, and the claim returns the rows: few round trips, which is
        what the latency from arrival to routed is made of on PostgreSQL.
        """
        now = datetime.now(UTC)
        with self.engine.connect() as conn:
            with conn.begin():
                rows = self._claim_rows(conn, now)
                if not rows:
                    return 0
                live = [r["id"] for r in rows if r["attempts"] <= self.settings.max_attempts]
                texts = case_texts(conn, live) if live else {}
            for row in [r for r in rows if r["attempts"] > self.settings.max_attempts]:
                self._dead_letter(row)
            todo = [r for r in rows if r["attempts"] <= self.settings.max_attempts]
            try:
                outcome = self.stage.process_rows(todo, actor=f"router:{self.worker}", conn=conn, texts=texts)
            except Exception as exc:  # the database failed: the claims run out and the cases come back
                log.warning("routing a batch of %d failed: %s", len(todo), type(exc).__name__)
                outcome = {r["id"]: exc for r in todo}
        for row in todo:
            result = outcome.get(row["id"])
            if isinstance(result, Exception):
                log.warning("routing case %s failed: %s", row["id"], type(result).__name__)
                self._retry_later(row, result)
            elif result is None:  # someone else moved it meanwhile
                self._release(row["id"])
        self.processed += len(rows)
        return len(rows)

    def _release(self, case_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(case_t).where(case_t.c.id == case_id, case_t.c.claimed_by == self.worker)
                         .values(claimed_by=None, claimed_until=None))

    def _retry_later(self, row: Mapping[str, Any], exc: Exception) -> None:
        delay = min(self.settings.claim_timeout_seconds, 2.0 ** row["attempts"])
        with self.engine.begin() as conn:
            conn.execute(
                update(case_t).where(case_t.c.id == row["id"], case_t.c.claimed_by == self.worker)
                .values(claimed_until=datetime.now(UTC) + timedelta(seconds=delay),
                        last_error=f"{type(exc).__name__}: {str(exc)[:200]}")
            )

    def _dead_letter(self, row: Mapping[str, Any]) -> None:
        why = f"routing failed {row['attempts'] - 1} times"
        if row.get("last_error"):
            # Only the exception's type goes into the append-only audit log: its message may quote the
            # citizen's text. The whole message stays in last_error, which purge and forget clear.
            why += f"; last error: {str(row['last_error']).split(':', 1)[0]}"
        with self.engine.begin() as conn:
            transition(conn, row, CaseState.DEAD_LETTER, actor=f"router:{self.worker}", reason=why,
                       policy=self.stage.policy)
        log.warning("case %s moved to the dead-letter state after %d attempts", row["id"], row["attempts"] - 1)


class SlaRunner(Runner):
    """Flags cases whose running SLA deadline passed (``sla_breached_at``) and audits the breach."""

    name = "sla"

    def run_once(self) -> int:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            rows = conn.execute(
                update(case_t)
                .where(overdue_clause(now), case_t.c.sla_breached_at.is_(None))
                .values(sla_breached_at=now)
                .returning(case_t.c.id, case_t.c.state)
            ).all()
            for case_id, state in rows:
                audit(conn, case_id, "sla", "sla_breach", from_state=state, to_state=state,
                      reason="an SLA deadline passed", now=now)
        self.processed += len(rows)
        return 0  # never busy-loop: check again after sla_check_seconds

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("sla: a round failed")
            self._stop.wait(self.settings.sla_check_seconds)


class SqliteCheckpointer(Runner):
    """Moves SQLite's WAL checkpoints off the commit path.

    By default the connection whose commit fills the WAL past 1000 pages copies it back into the
    database file, fsync included; that commit (and every request waiting for it) then takes tens of
    milliseconds longer. Here a background thread checkpoints (PASSIVE: never blocks a writer) every
    ``interval`` seconds, and the automatic checkpoint stays on only as a safety net at 10,000 pages.
    """

    name = "sqlite-checkpoint"
    autocheckpoint_pages = 10_000

    def __init__(self, engine: Engine, interval: float = 1.0) -> None:
        super().__init__(engine)
        self.interval = interval

        @event.listens_for(engine, "connect")
        def _later_autocheckpoint(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA wal_autocheckpoint={self.autocheckpoint_pages}")
            cur.close()

    def run_once(self) -> int:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("sqlite checkpoint failed")
            self._stop.wait(self.interval)


class QueueService:
    """Everything of the queue that runs inside one hub process.

    ``writer`` (group-commit intake), ``routing`` (routing stage runner), ``sla`` (overdue flagging),
    ``dispatcher`` (outbox). ``router`` may be a callable returning the router, for a knowledge base
    that is loaded after the service is built. With ``run_workers=False`` only intake runs (a hub that
    leaves routing and sending to ``citizen-hub worker`` processes).
    """

    def __init__(
        self,
        engine: Engine,
        settings: Any = None,
        *,
        router: Router | Any = None,
        adapters: Mapping[str, Any] | None = None,
        run_workers: bool = True,
        metrics: Any = None,
    ) -> None:
        from hub.queue.metrics import Metrics
        from hub.queue.outbox import Dispatcher

        self.engine = engine
        self.settings = settings
        self.queue = queue_settings(settings)
        sla_settings = getattr(settings, "sla", None)
        self.policy = SlaPolicy(sla_settings if isinstance(sla_settings, SlaSettings) else None)
        self.metrics = metrics or Metrics()
        self.writer = IntakeWriter(engine, self.queue, self.policy)
        # No score floor: the knowledge base's one clarification rule (knowledge.clarify) decides; a clear
        # best candidate is not sent to an agent for its absolute score (issue 13).
        self.stage = RoutingStage(engine, router, policy=self.policy,
                                  observe=self.metrics.observe_routing)
        self.routing = RoutingRunner(engine, self.stage, self.queue, yield_to=lambda: self.writer.saturated)
        self.sla = SlaRunner(engine, self.queue)
        self.dispatcher = Dispatcher(engine, adapters, self.queue, metrics=self.metrics)
        self.run_workers = run_workers
        self.checkpointer = SqliteCheckpointer(engine) if engine.dialect.name == "sqlite" else None
        # Counted before the handlers are answered (a scrape after an acknowledgement shows it); routing is
        # woken after the channels' own listeners (see IntakeWriter.add_listener).
        self.writer.add_observer(self.metrics.count_intake)
        self.writer.add_listener(self._after_intake)
        self._dispatch_task: asyncio.Task | None = None

    def _after_intake(self, reqs: list[Any], outcomes: list[Any]) -> None:
        if any(getattr(o, "created", False) for o in outcomes):
            self.routing.wake()

    async def start(self) -> None:
        await asyncio.to_thread(release_dead_claims, self.engine)
        if self.checkpointer is not None:
            self.checkpointer.start()
        self.writer.start()
        if self.run_workers:
            self.routing.start()
            self.sla.start()
            self._dispatch_task = asyncio.create_task(self.dispatcher.run_forever(), name="outbox")

    async def stop(self) -> None:
        if self._dispatch_task is not None:
            self.dispatcher.stop()
            try:
                await asyncio.wait_for(self._dispatch_task, 30)
            except (TimeoutError, asyncio.CancelledError):
                self._dispatch_task.cancel()
            self._dispatch_task = None
        await asyncio.to_thread(self.writer.stop)
        await asyncio.to_thread(self.routing.stop)
        await asyncio.to_thread(self.sla.stop)
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)
