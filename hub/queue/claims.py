"""Work claims: a worker takes cases or outbound messages for a while, and gives back those of the dead.

A worker claims items by setting ``claimed_by`` and ``claimed_until`` in one UPDATE:

* PostgreSQL: ``UPDATE … WHERE id IN (SELECT id … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING id`` – several
  hub processes never claim the same row, and none waits for another;
* SQLite: the same statement without ``FOR UPDATE`` – SQLite has one writer at a time, so the UPDATE is
  atomic by itself.

A claim runs out after ``[queue] claim_timeout_seconds``; the item is then claimable again, which is
how the work of a worker that died returns to the queue. On start-up a hub also releases at once the
claims of dead processes on the same host. Every claim counts an attempt; an item that keeps failing
(or keeps killing its worker) goes to the dead-letter state after ``max_attempts``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, or_, select, update
from sqlalchemy.engine import Connection, Engine

from hub.queue.cases import case_t, message_t

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
