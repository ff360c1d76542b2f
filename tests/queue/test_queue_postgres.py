"""Scale-out on the real local PostgreSQL: claims, idempotency and sending with several workers.

Every test runs in a private schema of database ``test`` (127.0.0.1:5432), from the ``postgres_url``
fixture of ``tests/conftest.py``: without the server the tests are skipped with the reason, except in
CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from itertools import product

import pytest
from queue_support import case_row, count_messages, req
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DatabaseError

from hub.db import make_engine
from hub.intake_server import demo_router
from hub.migrate import current_revision, head_revision, upgrade
from hub.queue.adapters import SendResult
from hub.queue.cases import (
    TRANSITIONS,
    CaseState,
    InvalidTransition,
    SlaPolicy,
    audit_t,
    case_t,
    message_t,
    transition,
)
from hub.queue.claims import claim, release_dead_claims
from hub.queue.intake import write_requests
from hub.queue.outbox import Dispatcher, enqueue
from hub.queue.privacy import forget, purge
from hub.queue.routing import RoutingStage
from hub.queue.settings import PrivacySettings, QueueSettings
from hub.queue.workers import RoutingRunner

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(postgres_url):
    e = make_engine(postgres_url)
    upgrade(e)
    yield e
    e.dispose()


def _engines(url: str, n: int):
    return [make_engine(url) for _ in range(n)]


def test_migrations_and_the_append_only_audit_log_on_postgres(engine):
    assert current_revision(engine) == head_revision()
    upgrade(engine)  # idempotent
    case_id = write_requests(engine, [req("pg-audit")])[0].case_id
    with engine.begin() as conn:
        transition(conn, case_row(engine, case_id), "needs_clarification", actor="agent:x", reason="why",
                   policy=SlaPolicy())
    before = _trail(engine, case_id)
    assert [(e["actor"], e["action"], e["from_state"], e["to_state"], e["reason"]) for e in before] == [
        ("intake:api", "create", None, "new", None), ("agent:x", "transition", "new", "needs_clarification", "why")]
    assert all(e["at"].tzinfo is not None for e in before)
    for statement in (update(audit_t).values(reason="x"), delete(audit_t), delete(audit_t).where(audit_t.c.id > 0)):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(statement)
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE hub_audit")
    assert _trail(engine, case_id) == before


def _trail(engine, case_id: int) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(audit_t).where(audit_t.c.case_id == case_id)
                                              .order_by(audit_t.c.id)).mappings()]


def test_every_pair_of_states_is_accepted_or_rejected_on_postgres(engine):
    """The whole transition table on PostgreSQL: allowed moves change the row and are audited, the rest fail."""
    pairs = list(product(CaseState, CaseState))
    ids = [r.case_id for r in write_requests(engine, [req(f"pg-pair-{n}") for n in range(len(pairs))])]
    for case_id, (frm, _to) in zip(ids, pairs, strict=True):
        with engine.begin() as conn:
            conn.execute(update(case_t).where(case_t.c.id == case_id).values(state=frm.value))
    for case_id, (frm, to) in zip(ids, pairs, strict=True):
        row = case_row(engine, case_id)
        before = len(_trail(engine, case_id))
        if to in TRANSITIONS[frm]:
            with engine.begin() as conn:
                transition(conn, row, to, actor="agent:pg", reason="walk", policy=SlaPolicy())
            assert case_row(engine, case_id)["state"] == to.value
            last = _trail(engine, case_id)[-1]
            assert (last["from_state"], last["to_state"], last["actor"], last["reason"]) == (
                frm.value, to.value, "agent:pg", "walk")
        else:
            with pytest.raises(InvalidTransition), engine.begin() as conn:
                transition(conn, row, to, actor="agent:pg", policy=SlaPolicy())
            assert case_row(engine, case_id)["state"] == frm.value
            assert len(_trail(engine, case_id)) == before


def test_a_claim_skips_rows_locked_by_another_worker_instead_of_waiting(postgres_url):
    """FOR UPDATE SKIP LOCKED: while worker A's claim is uncommitted, worker B gets the other rows at once.

    Without SKIP LOCKED, B would wait for A's row locks; the lock timeout turns that wait into a failure.
    """
    setup = make_engine(postgres_url)
    upgrade(setup)
    write_requests(setup, [req(f"skip-{i}") for i in range(10)])
    a, b = _engines(postgres_url, 2)
    now = datetime.now(UTC)
    with a.begin() as conn_a:
        first = claim(conn_a, case_t, case_t.c.state == "new", worker="a", limit=5, timeout=60, now=now)
        with b.begin() as conn_b:
            conn_b.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            # A wait for A's locks would end in the lock timeout's error, not in a result.
            second = claim(conn_b, case_t, case_t.c.state == "new", worker="b", limit=10, timeout=60, now=now)
    assert len(first) == 5 and len(second) == 5 and not set(first) & set(second)
    for e in (setup, a, b):
        e.dispose()


def test_purge_and_forget_on_postgres_are_audited(engine):
    old, mine, other = (r.case_id for r in write_requests(engine, [
        req("<p1@x>", channel="email", contact={"email": "old@example.de"}),
        req("<p2@x>", channel="email", contact={"email": "max@example.de"}),
        req("<p3@x>", channel="email", contact={"email": "eve@example.de"})]))
    with engine.begin() as conn:
        conn.execute(update(case_t).where(case_t.c.id == old).values(
            state="closed", closed_at=datetime(2020, 1, 1, tzinfo=UTC), service_id="reisepass"))
    assert purge(engine, PrivacySettings(closed_retention_days=30)).cases == 1
    assert forget(engine, email="MAX@example.de").cases == 1
    row = case_row(engine, old)
    assert row["contact_email"] is None and row["service_id"] == "reisepass" and row["anonymised_at"]
    with engine.connect() as conn:
        left = set(conn.execute(select(case_t.c.id)).scalars())
        actions = dict(conn.execute(select(audit_t.c.case_id, audit_t.c.action)
                                    .where(audit_t.c.action.in_(["purge", "forget"]))).all())
    assert left == {old, other}
    assert actions == {old: "purge", mine: "forget"}


def test_two_workers_never_claim_the_same_case(postgres_url):
    """Two workers with their own connections claim 400 cases at the same time and keep their claims."""
    setup = make_engine(postgres_url)
    upgrade(setup)
    for i in range(0, 400, 100):
        write_requests(setup, [req(f"claim-{k}") for k in range(i, i + 100)])
    engines = _engines(postgres_url, 2)
    claimed: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def work(n: int) -> None:
        barrier.wait()
        while True:
            with engines[n].begin() as conn:
                ids = claim(conn, case_t, case_t.c.state == "new", worker=f"w{n}", limit=7, timeout=600,
                            now=datetime.now(UTC))
                if ids:
                    time.sleep(0.002)  # hold the row locks a moment, as a slow worker would
            if not ids:
                return
            claimed[n].extend(ids)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = Counter(claimed[0] + claimed[1])
    assert len(both) == 400 and max(both.values()) == 1, "a case was claimed twice"
    assert claimed[0] and claimed[1], "both workers should have got work"
    with setup.connect() as conn:
        holders = dict(conn.execute(select(case_t.c.claimed_by, func.count()).group_by(case_t.c.claimed_by)).all())
    assert holders == {"w0": len(claimed[0]), "w1": len(claimed[1])}
    for e in [setup, *engines]:
        e.dispose()


def test_a_dead_workers_claim_returns_after_the_timeout(engine):
    write_requests(engine, [req(f"dead-{i}") for i in range(3)])
    with engine.begin() as conn:
        first = claim(conn, case_t, case_t.c.state == "new", worker="dies", limit=10, timeout=0.5,
                      now=datetime.now(UTC))
    with engine.begin() as conn:
        assert claim(conn, case_t, case_t.c.state == "new", worker="other", limit=10, timeout=60,
                     now=datetime.now(UTC)) == []
    time.sleep(0.6)
    with engine.begin() as conn:
        again = claim(conn, case_t, case_t.c.state == "new", worker="other", limit=10, timeout=60,
                      now=datetime.now(UTC))
    assert again == first and len(first) == 3
    with engine.connect() as conn:
        assert set(conn.execute(select(case_t.c.attempts)).scalars()) == {2}


def test_claims_of_dead_local_processes_are_released_at_start_up(engine):
    import socket

    write_requests(engine, [req("orphan")])
    with engine.begin() as conn:
        conn.execute(update(case_t).values(claimed_by=f"{socket.gethostname()}:999999:routing:abc",
                                           claimed_until=datetime(2100, 1, 1, tzinfo=UTC)))
    assert release_dead_claims(engine) == 1
    with engine.connect() as conn:
        assert conn.execute(select(case_t.c.claimed_by)).scalar() is None


def test_routing_with_two_workers_routes_every_case_exactly_once(postgres_url):
    setup = make_engine(postgres_url)
    upgrade(setup)
    for i in range(0, 300, 100):
        write_requests(setup, [req(f"route-{k}") for k in range(i, i + 100)])
    engines = _engines(postgres_url, 2)
    settings = QueueSettings(worker_batch=16)
    runners = [RoutingRunner(e, RoutingStage(e, demo_router()), settings, worker=f"router-{n}")
               for n, e in enumerate(engines)]
    threads = [threading.Thread(target=r.run_until_empty) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with setup.connect() as conn:
        states = dict(conn.execute(select(case_t.c.state, func.count()).group_by(case_t.c.state)).all())
        per_case = conn.execute(
            select(audit_t.c.case_id, func.count()).where(audit_t.c.from_state == "new")
            .group_by(audit_t.c.case_id)).all()
        actors = set(conn.execute(select(audit_t.c.actor).where(audit_t.c.from_state == "new")).scalars())
    assert states == {"routed": 300}
    assert len(per_case) == 300 and {n for _, n in per_case} == {1}
    assert {a.split(":")[1] for a in actors} == {"router-0", "router-1"}
    for e in [setup, *engines]:
        e.dispose()


def test_concurrent_duplicates_from_two_processes_store_each_key_once(postgres_url):
    setup = make_engine(postgres_url)
    upgrade(setup)
    engines = _engines(postgres_url, 2)
    barrier = threading.Barrier(2)
    results: list[list] = [[], []]

    def run(n: int) -> None:
        barrier.wait()
        for i in range(0, 200, 20):
            results[n].extend(write_requests(engines[n], [req(f"dup-{k}") for k in range(i, i + 20)]))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count_messages(setup) == 200
    assert sum(r.created for r in results[0] + results[1]) == 200
    assert [r.case_id for r in results[0]] == [r.case_id for r in results[1]]
    for e in [setup, *engines]:
        e.dispose()


class CountingAdapter:
    name = "api"

    def __init__(self) -> None:
        self.sent: Counter[int] = Counter()

    async def send(self, message):
        self.sent[message.message_id] += 1
        await asyncio.sleep(0.001)
        return SendResult.sent()


def test_two_dispatchers_never_send_a_message_twice(postgres_url):
    setup = make_engine(postgres_url)
    upgrade(setup)
    case_ids = [r.case_id for r in write_requests(setup, [req(f"out-{i}") for i in range(60)])]
    with setup.begin() as conn:
        rows = conn.execute(select(case_t).where(case_t.c.id.in_(case_ids))).mappings().all()
        for row in rows:
            enqueue(conn, row, text="Antwort", author="agent:test")
    adapter = CountingAdapter()
    engines = _engines(postgres_url, 2)
    dispatchers = [Dispatcher(e, {"api": adapter}, QueueSettings(worker_batch=5), worker=f"d{n}")
                   for n, e in enumerate(engines)]

    async def both() -> None:
        await asyncio.gather(*(d.run_until_empty() for d in dispatchers))

    asyncio.run(both())
    assert len(adapter.sent) == 60 and max(adapter.sent.values()) == 1
    with setup.connect() as conn:
        assert set(conn.execute(select(message_t.c.send_state).where(message_t.c.direction == "out"))
                   .scalars()) == {"sent"}
    for e in [setup, *engines]:
        e.dispose()


def test_several_processes_migrating_at_once_do_not_collide(postgres_url):
    engines = _engines(postgres_url, 3)
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run(e) -> None:
        barrier.wait()
        try:
            upgrade(e)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,), daemon=True) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "concurrent migrations block each other"
    assert errors == []
    assert current_revision(engines[0]) == head_revision()
    for e in engines:
        e.dispose()
