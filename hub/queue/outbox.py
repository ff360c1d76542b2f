"""The outbox: answers and forwards are outbound messages; a dispatcher sends them.

``enqueue`` writes an outbound message in the same transaction as the state change that caused it,
so an answer is never lost and never sent for a change that was rolled back.

The :class:`Dispatcher` claims due messages, sends each through the adapter of its channel (see
:mod:`channels`) and records the outcome:

* sent → ``sent``;
* temporary failure → ``pending`` again, next try after a delay that grows by ``outbox_retry_factor``
  (capped at ``outbox_retry_max_seconds``); once past the message's deadline → ``failed``;
* permanent failure, or no adapter for the channel → ``failed``.

**Never twice.** A message is claimed (still ``pending``), then marked ``sending`` just before the
adapter is called, then ``sent``. A worker that dies after the claim loses nothing: the claim runs out
and the message is sent by another. A worker that dies *while sending* leaves ``sending``; that
message is marked ``uncertain`` and not sent again automatically (it may have gone out), and an
agent decides. Adapters get the message's stable ``external_id`` for providers that de-duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from hub.queue.adapters import ChannelAdapter, OutboundMessage, SendResult
from hub.queue.bulk import BulkWriter
from hub.queue.cases import FINAL_STATES, audit, case_t, message_t, subject_tag
from hub.queue.claims import claim, new_worker_id
from hub.queue.settings import QueueSettings

log = logging.getLogger(__name__)


class PickupAdapter:
    """Channels whose client fetches answers (HTTP API, web form): storing the answer delivers it."""

    def __init__(self, name: str = "pickup") -> None:
        self.name = name

    async def send(self, message: OutboundMessage) -> SendResult:
        return SendResult.sent("stored for pick-up")


def build_pickup_adapter(settings: Any) -> PickupAdapter:
    return PickupAdapter()


def recipient_for(channel: str, case: Mapping[str, Any]) -> str | None:
    """Where a reply on ``channel`` goes, from the case's contact columns."""
    if channel == "email":
        return case.get("contact_email")
    if channel in ("sms", "phone"):
        return case.get("contact_phone")
    if channel == "paper":
        parts = [case.get("contact_name"), case.get("contact_address")]
        return "\n".join(p for p in parts if p) or None
    return None


def answer_route(case: Mapping[str, Any]) -> tuple[str, str | None]:
    """The channel an answer to the citizen goes by, and the recipient there: the one rule for every entry
    point (console, API, calls, channels) that answers without naming a channel.

    The channel the citizen chose (``reply_channel``: a web-form citizen who asked for "Per E-Mail") wins
    over the one the request came by; the recipient is that channel's address from the case's contact.
    """
    channel = case.get("reply_channel") or case["channel"]
    return channel, recipient_for(channel, case)


#: The reply channel of a citizen who asked to be called back (the web form's "Per Telefon (Rückruf)", the phone
#: menu's callback): the answer is an agent's call, recorded as a call (:mod:`hub.console.calls`), not a message.
CALLBACK_CHANNEL = "phone"


def callback_number(case: Mapping[str, Any], *, pending: bool = True) -> str | None:
    """The number the citizen asked to be called back on; None when they asked for no callback. The one rule
    of what a callback request is, for the console, the API, the status page and the channels.

    ``pending`` (default): only while the call is still to be made, i.e. the case is open and has had no
    first response yet (a recorded call that answered or forwarded it is one); its deadline is the case's
    ``first_response_due`` (``[sla] first_response_hours`` working hours)."""
    if case.get("reply_channel") != CALLBACK_CHANNEL or not case.get("contact_phone"):
        return None
    if pending and (case.get("first_responded_at") is not None or case.get("state") in FINAL_STATES):
        return None
    return case["contact_phone"]


def new_external_id(channel: str, token: str, domain: str = "hub.localhost") -> str | None:
    """The stable id of an outbound message: an e-mail Message-ID (``domain``: ``[queue]
    message_id_domain``, fully qualified as RFC 5322 asks), a paper form id; None elsewhere."""
    if channel == "email":
        return f"<{token}.{secrets.token_hex(8)}@{domain}>"
    if channel == "paper":
        return "F-" + secrets.token_hex(6).upper()
    return None


def message_row(
    case: Mapping[str, Any],
    *,
    text: str,
    author: str,
    kind: str = "reply",
    channel: str | None = None,
    recipient: str | None = None,
    subject: str | None = None,
    settings: QueueSettings | None = None,
    now: datetime | None = None,
    delivered: bool = False,
) -> dict[str, Any]:
    """The columns of one outbound message of ``case`` (a mapping of its columns).

    ``delivered``: the channel handed it to the citizen itself (an SMS answer in the webhook's TwiML, the
    phone menu's spoken answer); it is stored as ``sent`` and the dispatcher never sends it.
    """
    settings = settings or QueueSettings()
    now = now or datetime.now(UTC)
    if channel is None:
        channel, routed = answer_route(case)
        recipient = routed if recipient is None else recipient
    elif recipient is None:
        recipient = recipient_for(channel, case)
    if subject is None and channel == "email":
        subject = f"Ihr Anliegen {subject_tag(case['token'])}"
    state = {"send_state": "sent", "send_attempts": 1, "next_attempt_at": None, "sent_at": now} if delivered else \
        {"send_state": "pending", "send_attempts": 0, "next_attempt_at": now, "sent_at": None}
    return {
        "case_id": case["id"], "direction": "out", "kind": kind, "channel": channel,
        "external_id": new_external_id(channel, case["token"], settings.message_id_domain), "created_at": now,
        "subject": subject, "text": text,
        "author": author, "recipient": recipient, "send_deadline": now + timedelta(hours=settings.outbox_deadline_hours),
        **state,
    }


def enqueue(conn: Connection, case: Mapping[str, Any], **message: Any) -> int:
    """Write one outbound message of ``case`` (the keywords of :func:`message_row`); returns its id."""
    return conn.execute(insert(message_t).values(**message_row(case, **message)).returning(message_t.c.id)
                        ).scalar_one()


#: What tells the outbound messages of one :func:`enqueue_many` apart (rows equal in these are alike).
_MESSAGE_KEY = ("case_id", "kind", "channel", "author", "recipient", "subject", "text")


def enqueue_many(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Write many :func:`message_row` rows in one statement; their ids, in order.

    On the driver's cursor (:meth:`hub.queue.bulk.BulkWriter.insert_ids`): SQLAlchemy, asked for the ids in
    order, wrote SQLite one row per statement."""
    if not rows:
        return []
    return BulkWriter(conn).insert_ids(message_t, rows, key=_MESSAGE_KEY)


def retry_delay(attempt: int, settings: QueueSettings) -> float:
    """Seconds before try ``attempt + 1`` after ``attempt`` temporary failures (1-based)."""
    delay = settings.outbox_retry_first_seconds * settings.outbox_retry_factor ** max(0, attempt - 1)
    return min(delay, settings.outbox_retry_max_seconds)


class Dispatcher:
    """Sends due outbound messages through their channel adapters (async; database work in threads)."""

    def __init__(
        self,
        engine: Engine,
        adapters: Mapping[str, ChannelAdapter] | None,
        settings: QueueSettings | None = None,
        worker: str | None = None,
        metrics: Any = None,
    ) -> None:
        self.engine = engine
        self.adapters = dict(adapters or {})
        self.settings = settings or QueueSettings()
        self.worker = worker or new_worker_id("outbox")
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._stopped = False

    # -- database steps (run in a thread) ---------------------------------------------------------

    def _claim(self, now: datetime) -> list[dict[str, Any]]:
        with self.engine.begin() as conn:
            # A message some worker was sending when its claim ran out: it may have gone out.
            stuck = conn.execute(
                update(message_t)
                .where(message_t.c.send_state == "sending", message_t.c.claimed_until < now)
                .values(send_state="uncertain", claimed_by=None, claimed_until=None,
                        last_error="the sender stopped while sending; check before sending again")
                .returning(message_t.c.id, message_t.c.case_id)
            ).all()
            for _mid, case_id in stuck:
                audit(conn, case_id, "outbox", "send_uncertain", reason="a worker stopped while sending a message",
                      now=now)
            due = and_(message_t.c.send_state == "pending",
                       or_(message_t.c.next_attempt_at.is_(None), message_t.c.next_attempt_at <= now))
            ids = claim(conn, message_t, due, worker=self.worker, limit=self.settings.worker_batch,
                        timeout=self.settings.claim_timeout_seconds, now=now, counter="send_attempts",
                        order_by=message_t.c.next_attempt_at)
            if not ids:
                return []
            rows = conn.execute(
                select(message_t, case_t.c.token, case_t.c.contact_name, case_t.c.contact_email,
                       case_t.c.contact_phone, case_t.c.contact_address)
                .select_from(message_t.join(case_t, message_t.c.case_id == case_t.c.id))
                .where(message_t.c.id.in_(ids))
                .order_by(message_t.c.id)
            ).mappings().all()
            refs = {}
            for row in rows:
                refs[row["id"]] = tuple(conn.execute(
                    select(message_t.c.external_id)
                    # An automatic answer (out-of-office) is never what our mail replies to.
                    .where(message_t.c.case_id == row["case_id"], message_t.c.direction == "in",
                           message_t.c.channel == row["channel"], message_t.c.external_id.isnot(None),
                           message_t.c.kind != "auto_reply")
                    .order_by(message_t.c.id)
                ).scalars())
        return [dict(row) | {"in_reply_to": refs[row["id"]]} for row in rows]

    def _mark_sending(self, message_id: int) -> bool:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            result = conn.execute(
                update(message_t)
                .where(message_t.c.id == message_id, message_t.c.claimed_by == self.worker,
                       message_t.c.send_state == "pending")
                .values(send_state="sending",
                        claimed_until=now + timedelta(seconds=self.settings.claim_timeout_seconds))
            )
            return result.rowcount == 1

    def _record(self, row: Mapping[str, Any], result: SendResult) -> str:
        now = datetime.now(UTC)
        mine = and_(message_t.c.id == row["id"], message_t.c.claimed_by == self.worker,
                    message_t.c.send_state == "sending")
        detail = (result.detail or "")[:500]
        with self.engine.begin() as conn:
            if result.ok:
                state, values = "sent", {"sent_at": now, "last_error": None}
            elif result.temporary:
                attempt = row["send_attempts"]
                nxt = now + timedelta(seconds=retry_delay(attempt, self.settings))
                if row["send_deadline"] is not None and nxt > row["send_deadline"]:
                    state, values = "failed", {"last_error": f"gave up at the deadline: {detail}"}
                else:
                    state, values = "pending", {"next_attempt_at": nxt, "last_error": detail}
            else:
                state, values = "failed", {"last_error": detail}
            conn.execute(update(message_t).where(mine)
                         .values(send_state=state, claimed_by=None, claimed_until=None, **values))
            if state == "failed":
                audit(conn, row["case_id"], "outbox", "send_failed",
                      reason=f"{row['kind']} on {row['channel']} failed: {values['last_error']}"[:1000], now=now)
        if self.metrics is not None:
            self.metrics.count_send(row["channel"], state)
        return state

    # -- sending -------------------------------------------------------------------------------------

    async def _send(self, row: Mapping[str, Any]) -> tuple[SendResult, bool]:
        """The adapter's result, and whether the outcome is unknown (the message may have gone out)."""
        adapter = self.adapters.get(row["channel"])
        if adapter is None:
            return SendResult.failed(f"no adapter for channel {row['channel']!r}"), False
        message = OutboundMessage(
            message_id=row["id"], case_id=row["case_id"], case_token=row["token"], channel=row["channel"],
            kind=row["kind"], recipient=row["recipient"], subject=row["subject"], text=row["text"],
            external_id=row["external_id"], in_reply_to=row["in_reply_to"],
            contact={"name": row["contact_name"], "email": row["contact_email"], "phone": row["contact_phone"],
                     "postal_address": row["contact_address"]},
        )
        try:
            # Half the claim time, so the claim never runs out while the adapter still works.
            result = await asyncio.wait_for(adapter.send(message), self.settings.claim_timeout_seconds / 2)
        except TimeoutError:
            return SendResult.failed("the adapter did not answer in time"), True
        except Exception as exc:  # adapters must not raise; if one does, its message may be half-sent
            log.warning("adapter %s raised %s", row["channel"], type(exc).__name__)
            return SendResult.failed(f"the adapter raised {type(exc).__name__}"), True
        if not isinstance(result, SendResult):
            return SendResult.failed(f"the adapter returned {type(result).__name__}, not a SendResult"), True
        return result, False

    async def run_once(self) -> int:
        """Send what is due now; returns how many messages were claimed."""
        rows = await asyncio.to_thread(self._claim, datetime.now(UTC))
        for row in rows:
            if not await asyncio.to_thread(self._mark_sending, row["id"]):
                continue
            result, unknown = await self._send(row)
            if unknown:
                await asyncio.to_thread(self._mark_uncertain, row, result.detail)
                continue
            await asyncio.to_thread(self._record, row, result)
        return len(rows)

    def _mark_uncertain(self, row: Mapping[str, Any], detail: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(message_t).where(message_t.c.id == row["id"], message_t.c.claimed_by == self.worker)
                         .values(send_state="uncertain", claimed_by=None, claimed_until=None, last_error=detail))
            audit(conn, row["case_id"], "outbox", "send_uncertain", reason=detail)
        if self.metrics is not None:
            self.metrics.count_send(row["channel"], "uncertain")

    async def run_until_empty(self) -> int:
        total = 0
        while n := await self.run_once():
            total += n
        return total

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    async def run_forever(self) -> None:
        while not self._stopped:
            self._wake.clear()
            try:
                n = await self.run_once()
            except Exception:
                log.exception("outbox: a round failed; trying again")
                n = 0
            if n == 0 and not self._stopped:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)
                except TimeoutError:
                    pass
