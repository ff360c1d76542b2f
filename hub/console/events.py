"""Live updates of the console: which cases changed, for the open event streams of the accounts that see them.

``GET /console/events`` (:mod:`hub.console.pages`) streams what :class:`EventHub` publishes: ``case``
events (id, state, authority, kind; never content), read from a poll of the audit log and the messages
so that changes made by other hub processes arrive too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from hub.console.auth import Principal
from hub.queue.cases import audit_t, case_t, message_t

log = logging.getLogger(__name__)


@dataclass(eq=False)  # identity, so that subscribers can live in a set
class Subscriber:
    """One open event stream."""

    principal: Principal
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=200))


class EventHub:
    """Polls the audit log and the messages for changes and hands them to the open event streams.

    Reading by primary key ranges (``id > last``) costs two index range scans per poll. While nobody
    listens only the newest ids are read, so a first listener does not get old news.
    """

    def __init__(self, engine, poll_seconds: float, kb_getter) -> None:
        self.engine = engine
        self.poll_seconds = poll_seconds
        self.kb_getter = kb_getter
        self.subscribers: set[Subscriber] = set()
        self.last_audit = 0
        self.last_message = 0
        self._task: asyncio.Task | None = None
        self.polls = 0

    def _max_ids(self) -> tuple[int, int]:
        with self.engine.connect() as conn:
            return (conn.execute(select(func.max(audit_t.c.id))).scalar() or 0,
                    conn.execute(select(func.max(message_t.c.id))).scalar() or 0)

    def _changes(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            audits = conn.execute(select(audit_t.c.id, audit_t.c.case_id, audit_t.c.action)
                                  .where(audit_t.c.id > self.last_audit).order_by(audit_t.c.id).limit(2000)).all()
            messages = conn.execute(select(message_t.c.id, message_t.c.case_id, message_t.c.direction)
                                    .where(message_t.c.id > self.last_message).order_by(message_t.c.id)
                                    .limit(2000)).all()
            if audits:
                self.last_audit = audits[-1][0]
            if messages:
                self.last_message = messages[-1][0]
            kinds: dict[int, str] = {}
            for _id, case_id, action in audits:
                if case_id is not None:
                    kinds[case_id] = "created" if action == "create" else "changed"
            for _id, case_id, direction in messages:
                kinds.setdefault(case_id, "message" if direction == "in" else "outbound")
            if not kinds:
                return []
            rows = conn.execute(select(case_t.c.id, case_t.c.state, case_t.c.channel, case_t.c.authority_id,
                                       case_t.c.route_json).where(case_t.c.id.in_(sorted(kinds)))).mappings().all()
        return [dict(r) | {"kind": kinds[r["id"]]} for r in rows]

    def poll_once(self) -> list[dict[str, Any]]:
        """One poll (blocking): the changed cases since the last poll, or nothing while nobody listens."""
        self.polls += 1
        if not self.subscribers:
            self.last_audit, self.last_message = self._max_ids()
            return []
        return self._changes()

    def publish(self, rows: list[dict[str, Any]]) -> None:
        kb = self.kb_getter()
        for row in rows:
            event = {"case_id": row["id"], "state": row["state"], "channel": row["channel"],
                     "authority_id": row["authority_id"], "kind": row["kind"]}
            for sub in list(self.subscribers):
                if sub.principal.scope.covers_case(row, kb):
                    try:
                        sub.queue.put_nowait(event)
                    except asyncio.QueueFull:  # a stalled client: tell it to reload instead
                        with contextlib.suppress(asyncio.QueueEmpty):
                            while True:
                                sub.queue.get_nowait()
                        sub.queue.put_nowait({"kind": "resync"})

    async def _run(self) -> None:
        while True:
            try:
                rows = await asyncio.to_thread(self.poll_once)
                if rows:
                    self.publish(rows)
            except Exception:
                log.exception("console events: a poll failed; trying again")
            await asyncio.sleep(self.poll_seconds)

    async def start(self) -> None:
        self.last_audit, self.last_message = await asyncio.to_thread(self._max_ids)
        self._task = asyncio.create_task(self._run(), name="console-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sub in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)

    def subscribe(self, principal: Principal) -> Subscriber:
        sub = Subscriber(principal)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
