"""The outbox dispatcher: retries with growing delays, permanent failures, deadlines, never twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from queue_support import req, sqlite_engine
from sqlalchemy import select, update

from hub.queue.adapters import SendResult, adapter_targets, load_adapters
from hub.queue.cases import audit_t, case_t, message_t
from hub.queue.intake import write_requests
from hub.queue.outbox import Dispatcher, PickupAdapter, enqueue, retry_delay
from hub.queue.settings import QueueSettings

SETTINGS = QueueSettings(outbox_retry_first_seconds=60, outbox_retry_factor=2, outbox_retry_max_seconds=200,
                         outbox_deadline_hours=1)


class ScriptedAdapter:
    """Answers with the given results in turn and records every message it got."""

    name = "email"

    def __init__(self, *results: SendResult | Exception) -> None:
        self.results = list(results)
        self.calls = []

    async def send(self, message):
        self.calls.append(message)
        result = self.results.pop(0) if self.results else SendResult.sent()
        if isinstance(result, Exception):
            raise result
        return result


@pytest.fixture
def engine(tmp_path):
    return sqlite_engine(tmp_path)


def _queue_reply(engine, channel="email") -> int:
    r = write_requests(engine, [req("<m1@x>", channel="email", contact={"email": "max@example.de"})])[0]
    with engine.begin() as conn:
        row = conn.execute(select(case_t).where(case_t.c.id == r.case_id)).mappings().one()
        return enqueue(conn, row, text="Ihre Antwort", author="agent:test", settings=SETTINGS, channel=channel)


def _msg(engine, mid):
    with engine.connect() as conn:
        return conn.execute(select(message_t).where(message_t.c.id == mid)).mappings().one()


def _make_due(engine, mid):
    with engine.begin() as conn:
        conn.execute(update(message_t).where(message_t.c.id == mid)
                     .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))


def test_retry_delays_grow_and_are_capped():
    assert [retry_delay(n, SETTINGS) for n in (1, 2, 3, 4)] == [60, 120, 200, 200]


async def test_temporary_failures_are_retried_with_growing_delays_until_sent(engine):
    mid = _queue_reply(engine)
    adapter = ScriptedAdapter(SendResult.retry("421 try later"), SendResult.retry("421 again"), SendResult.sent("250"))
    d = Dispatcher(engine, {"email": adapter}, SETTINGS)
    assert await d.run_once() == 1
    first = _msg(engine, mid)
    assert first["send_state"] == "pending" and first["last_error"] == "421 try later"
    assert 55 <= (first["next_attempt_at"] - datetime.now(UTC)).total_seconds() <= 60
    assert await d.run_once() == 0  # not due yet
    _make_due(engine, mid)
    await d.run_once()
    second = _msg(engine, mid)
    assert 115 <= (second["next_attempt_at"] - datetime.now(UTC)).total_seconds() <= 120
    _make_due(engine, mid)
    await d.run_once()
    done = _msg(engine, mid)
    assert done["send_state"] == "sent" and done["sent_at"] is not None and done["send_attempts"] == 3
    assert len(adapter.calls) == 3
    sent = adapter.calls[-1]
    assert sent.recipient == "max@example.de" and sent.in_reply_to == ("<m1@x>",)
    assert sent.subject.startswith("Ihr Anliegen [#") and sent.external_id.endswith("@hub.localhost>")  # [queue] message_id_domain
    assert await d.run_until_empty() == 0 and len(adapter.calls) == 3  # never again


async def test_a_permanent_failure_is_marked_and_audited(engine):
    mid = _queue_reply(engine)
    d = Dispatcher(engine, {"email": ScriptedAdapter(SendResult.failed("550 no such user"))}, SETTINGS)
    await d.run_until_empty()
    msg = _msg(engine, mid)
    assert msg["send_state"] == "failed" and "550" in msg["last_error"]
    with engine.connect() as conn:
        actions = conn.execute(select(audit_t.c.action).where(audit_t.c.case_id == msg["case_id"])).scalars().all()
    assert "send_failed" in actions


async def test_temporary_failures_give_up_at_the_deadline(engine):
    mid = _queue_reply(engine)
    with engine.begin() as conn:  # written long ago: the deadline is near
        conn.execute(update(message_t).where(message_t.c.id == mid)
                     .values(send_deadline=datetime.now(UTC) + timedelta(seconds=30)))
    d = Dispatcher(engine, {"email": ScriptedAdapter(SendResult.retry("timeout"))}, SETTINGS)
    await d.run_once()
    msg = _msg(engine, mid)
    assert msg["send_state"] == "failed" and msg["last_error"].startswith("gave up at the deadline")


async def test_a_channel_without_adapter_fails_permanently(engine):
    mid = _queue_reply(engine, channel="sms")
    await Dispatcher(engine, {"email": ScriptedAdapter()}, SETTINGS).run_until_empty()
    assert _msg(engine, mid)["last_error"] == "no adapter for channel 'sms'"


async def test_an_adapter_that_raises_leaves_the_message_uncertain_and_it_is_not_resent(engine):
    mid = _queue_reply(engine)
    adapter = ScriptedAdapter(RuntimeError("connection reset after DATA"))
    d = Dispatcher(engine, {"email": adapter}, SETTINGS)
    await d.run_until_empty()
    assert _msg(engine, mid)["send_state"] == "uncertain"
    _make_due(engine, mid)
    await d.run_until_empty()
    assert len(adapter.calls) == 1


async def test_a_worker_that_died_while_sending_does_not_cause_a_second_send(engine):
    mid = _queue_reply(engine)
    with engine.begin() as conn:  # what a killed dispatcher leaves: sending, claim ran out
        conn.execute(update(message_t).where(message_t.c.id == mid).values(
            send_state="sending", claimed_by="host:1:outbox:dead",
            claimed_until=datetime.now(UTC) - timedelta(seconds=1)))
    adapter = ScriptedAdapter()
    await Dispatcher(engine, {"email": adapter}, SETTINGS).run_until_empty()
    assert adapter.calls == [] and _msg(engine, mid)["send_state"] == "uncertain"


async def test_a_worker_that_died_after_claiming_loses_nothing(engine):
    mid = _queue_reply(engine)
    with engine.begin() as conn:  # claimed but not yet sending when it died
        conn.execute(update(message_t).where(message_t.c.id == mid).values(
            claimed_by="host:1:outbox:dead", claimed_until=datetime.now(UTC) - timedelta(seconds=1)))
    adapter = ScriptedAdapter()
    await Dispatcher(engine, {"email": adapter}, SETTINGS).run_until_empty()
    assert len(adapter.calls) == 1 and _msg(engine, mid)["send_state"] == "sent"


def test_the_registry_builds_the_pickup_adapters():
    adapters = load_adapters(None, {k: v for k, v in adapter_targets().items() if k in ("api", "web")})
    assert isinstance(adapters["api"], PickupAdapter)
