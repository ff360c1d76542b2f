"""Workers on SQLite: routing decisions, retries and dead letters, claim expiry, SLA flagging."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from queue_support import case_row, req, sqlite_engine
from sqlalchemy import select, update

from hub.intake_server import DEMO_SERVICES
from hub.queue.cases import audit_t, case_t
from hub.queue.claims import claim, release_dead_claims
from hub.queue.intake import write_requests
from hub.queue.routing import KeywordRouter, NoRouter, RoutingStage
from hub.queue.settings import QueueSettings
from hub.queue.workers import RoutingRunner, SlaRunner


class FragileRouter(KeywordRouter):
    """The keyword router, except that it fails on texts that mention BOOM (a poison request)."""

    def route(self, text, location=None):
        if "BOOM" in text:
            raise ValueError("cannot route this")
        return super().route(text, location)


@pytest.fixture
def engine(tmp_path):
    return sqlite_engine(tmp_path)


def _runner(engine, router=None, **settings):
    stage = RoutingStage(engine, router or KeywordRouter(DEMO_SERVICES), min_confidence=80)
    return RoutingRunner(engine, stage, QueueSettings(**settings))


def _trail(engine, case_id):
    with engine.connect() as conn:
        return conn.execute(select(audit_t.c.action, audit_t.c.to_state, audit_t.c.reason)
                            .where(audit_t.c.case_id == case_id).order_by(audit_t.c.id)).all()


def test_routing_decides_routed_or_needs_clarification(engine):
    sure, tie, nothing = (r.case_id for r in write_requests(engine, [
        req("r1", text="Reisepass beantragen"), req("r2", text="Pass und Auto"), req("r3", text="Guten Tag")]))
    assert _runner(engine).run_until_empty() == 3
    row = case_row(engine, sure)
    assert (row["state"], row["service_id"], row["authority_id"]) == ("routed", "reisepass", "demo-buergerbuero")
    assert row["route_json"]["service"]["id"] == "reisepass" and row["routed_at"] and row["claimed_by"] is None
    assert case_row(engine, tie)["state"] == "needs_clarification"
    assert case_row(engine, tie)["route_reason"] == "two services match equally well"
    assert case_row(engine, nothing)["state"] == "needs_clarification"


def test_low_confidence_asks_an_agent(engine):
    case_id = write_requests(engine, [req("lc", text="Reisepass Reisepass Auto")])[0].case_id  # 2:1 → 67
    _runner(engine).run_until_empty()
    row = case_row(engine, case_id)
    assert row["state"] == "needs_clarification" and _trail(engine, case_id)[-1][2] == "low confidence (67 < 80)"


def test_without_a_knowledge_base_every_case_goes_to_an_agent(engine):
    case_id = write_requests(engine, [req("nk")])[0].case_id
    _runner(engine, NoRouter()).run_until_empty()
    assert case_row(engine, case_id)["state"] == "needs_clarification"


def test_a_failing_case_is_retried_then_dead_lettered_without_blocking_others(engine):
    poison, fine = (r.case_id for r in write_requests(engine, [req("p1", text="BOOM Reisepass"),
                                                               req("p2", text="Reisepass")]))
    runner = _runner(engine, FragileRouter(DEMO_SERVICES), max_attempts=2, claim_timeout_seconds=60)
    runner.run_until_empty()
    assert case_row(engine, fine)["state"] == "routed"
    row = case_row(engine, poison)
    assert row["state"] == "new" and row["last_error"] == "ValueError: cannot route this"
    assert row["claimed_until"] > datetime.now(UTC)  # held back before the next try
    for _ in range(2):  # the back-off runs out, the next claims fail again, then it is a dead letter
        with engine.begin() as conn:
            conn.execute(update(case_t).where(case_t.c.id == poison)
                         .values(claimed_until=datetime.now(UTC) - timedelta(seconds=1)))
        runner.run_until_empty()
    row = case_row(engine, poison)
    assert row["state"] == "dead_letter"
    # The append-only audit log names the error's type only; its message may quote the citizen and
    # stays in last_error, which purge and forget clear.
    assert _trail(engine, poison)[-1][1:] == ("dead_letter", "routing failed 2 times; last error: ValueError")
    assert row["last_error"] == "ValueError: cannot route this"


def test_an_expired_claim_is_taken_over_and_counted(engine):
    case_id = write_requests(engine, [req("exp")])[0].case_id
    with engine.begin() as conn:
        assert claim(conn, case_t, case_t.c.state == "new", worker="dead", limit=5, timeout=0.2,
                     now=datetime.now(UTC)) == [case_id]
    runner = _runner(engine)
    assert runner.run_until_empty() == 0  # still held
    time.sleep(0.25)
    assert runner.run_until_empty() == 1
    assert case_row(engine, case_id)["state"] == "routed"


def test_claims_of_a_dead_local_process_are_released(engine):
    import socket

    case_id = write_requests(engine, [req("orphan")])[0].case_id
    with engine.begin() as conn:
        conn.execute(update(case_t).values(claimed_by=f"{socket.gethostname()}:999999:routing:x",
                                           claimed_until=datetime(2100, 1, 1, tzinfo=UTC)))
    assert release_dead_claims(engine) == 1
    assert _runner(engine).run_until_empty() == 1
    assert case_row(engine, case_id)["state"] == "routed"


def test_claims_of_a_killed_process_that_is_still_a_zombie_are_released(engine):
    """A zombie still answers ``kill(pid, 0)``; its claims must not wait for the claim timeout."""
    import os
    import signal
    import socket

    from hub.queue.claims import _pid_alive

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only waits to be killed
        signal.pause()
        os._exit(0)
    try:
        assert _pid_alive(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:  # dead, not reaped: a zombie
            time.sleep(0.01)
        assert os.path.exists(f"/proc/{pid}"), "the zombie should still be there"
        case_id = write_requests(engine, [req("zombie")])[0].case_id
        with engine.begin() as conn:
            conn.execute(update(case_t).values(claimed_by=f"{socket.gethostname()}:{pid}:routing:x",
                                               claimed_until=datetime(2100, 1, 1, tzinfo=UTC)))
        assert release_dead_claims(engine) == 1
        assert _runner(engine).run_until_empty() == 1
        assert case_row(engine, case_id)["state"] == "routed"
    finally:
        os.waitpid(pid, 0)


def test_the_sla_runner_flags_overdue_cases_once(engine):
    late = write_requests(engine, [req("late", received_at=datetime(2026, 1, 5, 8, 0, tzinfo=UTC))])[0].case_id
    fresh = write_requests(engine, [req("fresh")])[0].case_id
    runner = SlaRunner(engine)
    runner.run_once()
    runner.run_once()
    assert case_row(engine, late)["sla_breached_at"] is not None
    assert case_row(engine, fresh)["sla_breached_at"] is None
    assert [a for a, _, _ in _trail(engine, late)].count("sla_breach") == 1


def test_queue_and_privacy_settings_document_every_key():
    from hub.queue.settings import PrivacySettings, QueueSettings, privacy_settings, queue_settings

    for model in (QueueSettings, PrivacySettings):
        for key, field in model.model_fields.items():
            assert field.description and len(field.description) > 10, f"{model.__name__}.{key} has no help"
            assert not field.is_required(), f"{model.__name__}.{key} has no default"
    assert isinstance(queue_settings(object()), QueueSettings)  # a Settings without the section yet
    assert isinstance(privacy_settings(None), PrivacySettings)


def test_while_intake_is_saturated_routing_keeps_to_its_share_in_short_rounds(engine):
    """Clients waiting for their commit come first; routing still goes on, at its configured share."""
    saturated = {"now": True}
    stage = RoutingStage(engine, KeywordRouter(DEMO_SERVICES))
    runner = RoutingRunner(engine, stage, QueueSettings(worker_batch=64, routing_share_under_load=0.05),
                           yield_to=lambda: saturated["now"])
    assert runner.pause_under_load(0.010) == pytest.approx(0.19)  # 10 ms of routing, 190 ms for intake
    assert runner.pause_under_load(5.0) == runner.yield_max_seconds  # never stalls for long
    assert RoutingRunner(engine, stage, QueueSettings(routing_share_under_load=1)).pause_under_load(0.5) == 0
    write_requests(engine, [req(f"sat-{i}", text="Ich brauche einen neuen Reisepass") for i in range(20)])
    assert runner.run_once() == 8  # a short round: an eighth of worker_batch
    saturated["now"] = False
    assert runner.run_once() == 12  # the rest at once when the load has passed


def test_a_round_that_took_every_new_case_does_not_run_an_empty_one_after_it(engine):
    """At a trickle each intake wakes routing for one case; the round that routed it took all there
    was, so the next round waits for the next wake instead of claiming nothing first."""
    runner = _runner(engine, poll_seconds=30, worker_batch=64)
    rounds = []
    real = runner.run_once
    runner.run_once = lambda: rounds.append(real()) or rounds[-1]
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while not rounds and time.monotonic() < deadline:  # the start-up round runs first, on a busy machine too
            time.sleep(0.01)
        for i in range(3):
            case_id = write_requests(engine, [req(f"trickle-{i}", text="Reisepass beantragen")])[0].case_id
            runner.wake()
            deadline = time.monotonic() + 10
            while case_row(engine, case_id)["state"] == "new" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert case_row(engine, case_id)["state"] == "routed"
            time.sleep(0.2)
        assert rounds == [0, 1, 1, 1]  # the first, empty, round at start; then one round per case
        # A full round (as many as it asked for) may have left more: the next round runs at once.
        write_requests(engine, [req(f"full-{i}", text="Reisepass beantragen") for i in range(70)])
        runner.wake()
        deadline = time.monotonic() + 10
        while sum(rounds) < 73 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rounds[4:6] == [64, 6]
    finally:
        runner.stop()
    assert runner.drained(0) and runner.drained(63) and not runner.drained(64)
