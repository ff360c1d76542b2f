"""Workers: claim work from the queue, process it, release it (the Mailman runner model).

**Claims.** A worker claims items by setting ``claimed_by`` and ``claimed_until`` in one UPDATE:

* PostgreSQL: ``UPDATE … WHERE id IN (SELECT id … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING id`` – several
  hub processes never claim the same row, and none waits for another;
* SQLite: the same statement without ``FOR UPDATE`` – SQLite has one writer at a time, so the UPDATE is
  atomic by itself.

A claim runs out after ``[queue] claim_timeout_seconds``; the item is then claimable again, which is
how the work of a worker that died returns to the queue. On start-up a hub also releases at once the
claims of dead processes on the same host. Every claim counts an attempt; an item that keeps failing
(or keeps killing its worker) goes to the dead-letter state after ``max_attempts``.

:class:`Runner` is the base of a worker: subclasses say what to claim and how to dispose of one item.
:class:`QueueService` runs intake, routing, SLA flagging and the outbox inside one hub process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, event, or_, select, update
from sqlalchemy.engine import Connection, Engine

from hub.queue.cases import CaseState, SlaPolicy, audit, case_t, message_t, overdue_clause, transition
from hub.queue.intake import IntakeWriter
from hub.queue.routing import Router, RoutingStage, case_texts
from hub.queue.settings import QueueSettings, queue_settings
from hub.queue.sla import SlaSettings

log = logging.getLogger(__name__)

HOST = socket.gethostname()


def new_worker_id(role: str = "worker") -> str:
    """``host:pid:role:random`` – unique per process, and tells which host and process held a claim."""
    return f"{HOST}:{os.getpid()}:{role}:{secrets.token_hex(3)}"


def claim(
    conn: Connection,
    table: Table,
    condition: Any,
    *,
    worker: str,
    limit: int,
    timeout: float,
    now: datetime,
    counter: str = "attempts",
    order_by: Any = None,
) -> list[int]:
    """Claim up to ``limit`` rows of ``table`` matching ``condition`` whose claim is free or ran out."""
    rows = claim_rows(conn, table, condition, worker=worker, limit=limit, timeout=timeout, now=now,
                      counter=counter, order_by=order_by, columns=[table.c.id])
    return sorted(r["id"] for r in rows)


def claim_rows(
    conn: Connection,
    table: Table,
    condition: Any,
    *,
    worker: str,
    limit: int,
    timeout: float,
    now: datetime,
    counter: str = "attempts",
    order_by: Any = None,
    columns: Any = None,
    cache_key: str | None = None,
) -> list[dict[str, Any]]:
    """Like :func:`claim`, returning the claimed rows (``columns``, default all) as they are after the claim.

    ``cache_key`` names a ``condition`` that is always the same expression: its statement is then
    built once (the times and the worker are parameters), which saves building it in every round.
    """
    params = {"claim_now": now, "claim_until": now + timedelta(seconds=timeout), "claim_worker": worker}
    key = (cache_key, table.name, limit, counter) if cache_key is not None and order_by is None and columns is None \
        else None
    stmt = _CLAIM_STATEMENTS.get(key) if key is not None else None
    if stmt is None:
        stmt = _claim_statement(table, condition, limit=limit, counter=counter, order_by=order_by, columns=columns)
        if key is not None:
            _CLAIM_STATEMENTS[key] = stmt
    return sorted((dict(r) for r in conn.execute(stmt, params).mappings()), key=lambda r: r["id"])


_CLAIM_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _claim_statement(table: Table, condition: Any, *, limit: int, counter: str, order_by: Any, columns: Any) -> Any:
    c = table.c
    now = bindparam("claim_now", type_=c.claimed_until.type)
    free = or_(c.claimed_until.is_(None), c.claimed_until < now)
    pick = (
        select(c.id)
        .where(and_(condition, free))
        .order_by(order_by if order_by is not None else c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite renders nothing and needs nothing
    )
    return (
        update(table)
        .where(c.id.in_(pick.scalar_subquery()), free)
        .values({"claimed_by": bindparam("claim_worker", type_=c.claimed_by.type),
                 "claimed_until": bindparam("claim_until", type_=c.claimed_until.type),
                 counter: getattr(c, counter) + 1})
        .returning(*(columns if columns is not None else table.columns))
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie answers signal 0 but runs no more: a killed server process whose parent died too
    # (``--processes N``) stays one until something reaps it. Linux tells by its state in /proc.
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def dead_local_workers(worker_ids: list[str]) -> list[str]:
    """The ids among ``worker_ids`` that belong to processes of this host that no longer run."""
    dead = []
    for wid in worker_ids:
        host, _, rest = wid.partition(":")
        pid = rest.split(":", 1)[0]
        if host == HOST and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            dead.append(wid)
    return dead


def release_dead_claims(engine: Engine, now: datetime | None = None) -> int:
    """Release at once the claims of dead processes on this host (instead of waiting for the timeout).

    An outbound message that such a process was *sending* is marked ``uncertain``, not sent again:
    it may have gone out, and the outbox never sends a message twice.
    """
    now = now or datetime.now(UTC)
    released = 0
    with engine.begin() as conn:
        for table in (case_t, message_t):
            holders = conn.execute(
                select(table.c.claimed_by).where(table.c.claimed_by.isnot(None)).distinct()
            ).scalars().all()
            dead = dead_local_workers(list(holders))
            if not dead:
                continue
            if table is message_t:
                conn.execute(
                    update(message_t)
                    .where(message_t.c.claimed_by.in_(dead), message_t.c.send_state == "sending")
                    .values(send_state="uncertain", claimed_by=None, claimed_until=None,
                            last_error="the worker stopped while sending; check before sending again")
                )
            result = conn.execute(
                update(table).where(table.c.claimed_by.in_(dead)).values(claimed_by=None, claimed_until=None)
            )
            released += result.rowcount or 0
    if released:
        log.info("released %d claims of dead workers on this host", released)
    return released


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
        from hub.http.metrics import Metrics
        from hub.queue.outbox import Dispatcher

        self.engine = engine
        self.settings = settings
        self.queue = queue_settings(settings)
        sla_settings = getattr(settings, "sla", None)
        self.policy = SlaPolicy(sla_settings if isinstance(sla_settings, SlaSettings) else None)
        lookup = getattr(settings, "lookup", None)
        min_confidence = float(getattr(lookup, "confident_score", 80.0))
        self.metrics = metrics or Metrics()
        self.writer = IntakeWriter(engine, self.queue, self.policy)
        self.stage = RoutingStage(engine, router, min_confidence=min_confidence, policy=self.policy,
                                  observe=self.metrics.observe_routing)
        self.routing = RoutingRunner(engine, self.stage, self.queue, yield_to=lambda: self.writer.saturated)
        self.sla = SlaRunner(engine, self.queue)
        self.dispatcher = Dispatcher(engine, adapters, self.queue, metrics=self.metrics)
        self.run_workers = run_workers
        self.checkpointer = SqliteCheckpointer(engine) if engine.dialect.name == "sqlite" else None
        self.writer.add_listener(self._after_intake)
        self._dispatch_task: asyncio.Task | None = None

    def _after_intake(self, reqs: list[Any], outcomes: list[Any]) -> None:
        self.metrics.count_intake(reqs, outcomes)
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
