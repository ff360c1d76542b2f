"""Case states, the transition table, the append-only audit log and the SLA clock of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import product
from zoneinfo import ZoneInfo

import pytest
from queue_support import case_row, req, sqlite_engine
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DatabaseError

from hub.queue.cases import (
    TRANSITIONS,
    CaseState,
    InvalidTransition,
    SlaPolicy,
    StaleState,
    audit_t,
    case_t,
    check_transition,
    overdue_clause,
    token_in_subject,
    transition,
)
from hub.queue.intake import write_requests
from hub.queue.sla import SlaSettings

BERLIN = ZoneInfo("Europe/Berlin")
POLICY = SlaPolicy()


@pytest.fixture
def engine(tmp_path):
    return sqlite_engine(tmp_path)


def _new_case(engine, ext: str, **kw) -> int:
    return write_requests(engine, [req(ext, **kw)])[0].case_id


def _force_state(engine, case_id: int, state: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(case_t).where(case_t.c.id == case_id).values(state=state))


def _audit(engine, case_id: int) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(audit_t).where(audit_t.c.case_id == case_id).order_by(audit_t.c.id)).mappings()]


def test_transition_table_is_complete_and_final_states_are_final():
    assert set(TRANSITIONS) == set(CaseState)
    assert TRANSITIONS[CaseState.CLOSED] == frozenset()
    for frm, targets in TRANSITIONS.items():
        assert frm not in targets, f"{frm} → {frm} is not a transition"


def test_every_pair_of_states_is_accepted_or_rejected_as_the_table_says(engine):
    """All 64 (from, to) pairs against the real database: allowed ones move and are audited, the rest fail."""
    for n, (frm, to) in enumerate(product(CaseState, CaseState)):
        case_id = _new_case(engine, f"pair-{n}")
        _force_state(engine, case_id, frm.value)
        before = len(_audit(engine, case_id))
        row = case_row(engine, case_id)
        if to in TRANSITIONS[frm]:
            with engine.begin() as conn:
                transition(conn, row, to, actor="agent:test", reason="test", policy=POLICY)
            assert case_row(engine, case_id)["state"] == to.value
            last = _audit(engine, case_id)[-1]
            assert (last["from_state"], last["to_state"], last["actor"], last["reason"]) == (
                frm.value, to.value, "agent:test", "test")
        else:
            with pytest.raises(InvalidTransition), engine.begin() as conn:
                transition(conn, row, to, actor="agent:test", policy=POLICY)
            assert case_row(engine, case_id)["state"] == frm.value
            assert len(_audit(engine, case_id)) == before


def test_unknown_target_state_is_rejected():
    with pytest.raises(InvalidTransition, match="unbekannter Zustand .archived."):
        check_transition("new", "archived")


def test_a_stale_state_is_not_overwritten(engine):
    case_id = _new_case(engine, "stale")
    row = case_row(engine, case_id)  # read as "new"
    _force_state(engine, case_id, "routed")  # someone else moved it
    with pytest.raises(StaleState), engine.begin() as conn:
        transition(conn, row, "needs_clarification", actor="worker", policy=POLICY)
    assert case_row(engine, case_id)["state"] == "routed"


def test_intake_writes_a_create_entry_and_the_audit_log_is_append_only(engine):
    case_id = _new_case(engine, "audit")
    entries = _audit(engine, case_id)
    assert [(e["action"], e["from_state"], e["to_state"], e["actor"]) for e in entries] == [
        ("create", None, "new", "intake:api")]
    assert entries[0]["at"].tzinfo is not None
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(update(audit_t).values(reason="rewritten"))
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(delete(audit_t))
    assert _audit(engine, case_id) == entries


def test_case_token_is_found_in_a_subject():
    assert token_in_subject("Re: Ihr Anliegen [#Ab3dE_fGh-Jk1MnO] Reisepass") == "Ab3dE_fGh-Jk1MnO"
    assert token_in_subject("Re: Ihr Anliegen [#short]") is None
    assert token_in_subject(None) is None


# -- SLA ------------------------------------------------------------------------------------------------


def _berlin(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def test_first_response_deadline_runs_over_the_weekend(engine):
    # Friday 17:00 + 24 working hours (Mon-Fri 08-18): 1 h Friday, 10 Monday, 10 Tuesday, 3 Wednesday.
    case_id = write_requests(engine, [req("weekend", received_at=_berlin(2026, 3, 27, 17, 0))])[0].case_id
    assert case_row(engine, case_id)["first_response_due"] == _berlin(2026, 4, 1, 11, 0)


def test_first_response_deadline_skips_easter(engine):
    # Thursday before Easter 2026, 17:00: Good Friday (3 April) and Easter Monday (6 April) are holidays.
    case_id = write_requests(engine, [req("easter", received_at=_berlin(2026, 4, 2, 17, 0))])[0].case_id
    assert case_row(engine, case_id)["first_response_due"] == _berlin(2026, 4, 9, 11, 0)


def test_forward_deadline_is_24_working_hours_across_easter(engine):
    case_id = _new_case(engine, "fwd")
    _force_state(engine, case_id, "routed")
    forwarded = _berlin(2026, 4, 2, 12, 0)  # Thursday noon before Good Friday
    with engine.begin() as conn:
        transition(conn, case_row(engine, case_id), "forwarded", actor="agent", policy=POLICY, now=forwarded)
    row = case_row(engine, case_id)
    # 6 h Thursday; Friday to Monday closed (Good Friday, weekend, Easter Monday); 10 h Tuesday 7 April,
    # 8 h Wednesday 8 April → 16:00.
    assert row["forward_due"] == _berlin(2026, 4, 8, 16, 0)
    assert row["first_responded_at"] == forwarded  # forwarding is the first response


def test_waiting_for_the_citizen_pauses_the_clock(engine):
    received = _berlin(2026, 3, 2, 8, 0)  # Monday 08:00; due Wednesday 3 March 12:00 (10+10+4)
    case_id = write_requests(engine, [req("pause", received_at=received)])[0].case_id
    assert case_row(engine, case_id)["first_response_due"] == _berlin(2026, 3, 4, 12, 0)
    _force_state(engine, case_id, "routed")
    asked = _berlin(2026, 3, 2, 10, 0)
    with engine.begin() as conn:
        transition(conn, case_row(engine, case_id), "waiting_for_citizen", actor="agent", policy=POLICY, now=asked)
    now = _berlin(2026, 3, 10, 9, 0)  # long after the original deadline, but the clock is stopped
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(case_t).where(overdue_clause(now))).scalar() == 0
    # The citizen answers Tuesday 3 March 10:00: the pause took 10 working hours (Mon 10-18, Tue 8-10).
    answered = _berlin(2026, 3, 3, 10, 0)
    with engine.begin() as conn:
        transition(conn, case_row(engine, case_id), "routed", actor="intake", policy=POLICY, now=answered)
    row = case_row(engine, case_id)
    assert row["sla_paused_since"] is None and len(row["sla_pauses"]) == 1
    assert row["first_response_due"] == _berlin(2026, 3, 5, 12, 0)  # 10 working hours later than before


def test_overdue_cases_are_found_and_met_deadlines_are_not(engine):
    late = _new_case(engine, "late", received_at=datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
    answered = _new_case(engine, "answered", received_at=datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
    fresh = _new_case(engine, "fresh")
    _force_state(engine, answered, "routed")
    with engine.begin() as conn:
        transition(conn, case_row(engine, answered), "answered", actor="agent", policy=POLICY)
    now = datetime.now(UTC) + timedelta(minutes=1)
    with engine.connect() as conn:
        ids = set(conn.execute(select(case_t.c.id).where(overdue_clause(now))).scalars())
    assert late in ids and answered not in ids and fresh not in ids


def test_sla_uses_the_configured_calendar():
    policy = SlaPolicy(SlaSettings(open_days=[0, 1, 2, 3, 4, 5], first_response_hours=2))
    # Saturday is a working day in this configuration.
    assert policy.first_response_due(_berlin(2026, 3, 7, 9, 0)) == _berlin(2026, 3, 7, 11, 0)


@pytest.mark.parametrize("land, due", [("SH", _berlin(2026, 6, 8, 11, 0)), ("NW", _berlin(2026, 6, 9, 11, 0))])
def test_the_configured_land_decides_which_holidays_stop_the_clock(engine, land, due):
    """Fronleichnam (Thursday 4 June 2026, 60 days after Easter) is a holiday in NW, not in SH."""
    from hub.config import Settings
    from hub.queue.workers import QueueService

    settings = Settings()
    settings.sla.land = land
    service = QueueService(engine, settings)
    service.writer.start()
    try:
        # Wednesday 17:00: 1 h Wednesday, then 10 h a working day.
        result = service.writer.submit_sync(req(f"land-{land}", received_at=_berlin(2026, 6, 3, 17, 0)))
    finally:
        service.writer.stop()
    assert case_row(engine, result.case_id)["first_response_due"] == due


def test_a_case_waiting_for_the_citizen_is_not_flagged_and_is_once_the_clock_runs_again(engine):
    from hub.queue.workers import SlaRunner

    received = _berlin(2026, 1, 5, 9, 0)  # Monday; 24 working hours → Wednesday 7 January 13:00
    case_id = write_requests(engine, [req("wait-sla", received_at=received)])[0].case_id
    assert case_row(engine, case_id)["first_response_due"] == _berlin(2026, 1, 7, 13, 0)
    _force_state(engine, case_id, "routed")
    with engine.begin() as conn:  # Tuesday 15:00 the agent asks the citizen something
        transition(conn, case_row(engine, case_id), "waiting_for_citizen", actor="agent", policy=POLICY,
                   now=_berlin(2026, 1, 6, 15, 0))
    runner = SlaRunner(engine)
    runner.run_once()  # long past the deadline, but the clock is stopped
    assert case_row(engine, case_id)["sla_breached_at"] is None
    with engine.begin() as conn:  # Wednesday 10:00 the citizen answers: the pause took 3 + 2 working hours
        transition(conn, case_row(engine, case_id), "routed", actor="intake", policy=POLICY,
                   now=_berlin(2026, 1, 7, 10, 0))
    assert case_row(engine, case_id)["first_response_due"] == _berlin(2026, 1, 7, 18, 0)
    runner.run_once()
    runner.run_once()
    assert case_row(engine, case_id)["sla_breached_at"] is not None
    assert [e["action"] for e in _audit(engine, case_id)].count("sla_breach") == 1


def test_answer_many_writes_what_take_and_move_write_one_case_at_a_time(engine):
    """One UPDATE a case for new → routed → answered, and the same audit trail as the two transitions."""
    from hub import casework

    service, office = {"id": "svc-1", "name": "Reisepass"}, {"id": "amt-1", "name": "Bürgeramt"}
    now = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    alone, together, routed = (_new_case(engine, ext) for ext in ("one-1", "many-1", "many-2"))
    with engine.begin() as conn:
        conn.execute(update(case_t).where(case_t.c.id == routed).values(state=CaseState.ROUTED.value))
    with engine.begin() as conn:
        row = casework.take(conn, case_row(engine, alone), agent="sms-auto", policy=POLICY, service=service,
                            authority=office, reason="direkt", now=now)
        casework.move(conn, row, target=CaseState.ANSWERED, agent="sms-auto", policy=POLICY, reason="direkt",
                      values=casework.route_values(service, office, "sms-auto", now), now=now)
    with engine.begin() as conn:
        rows = casework.answer_many(conn, [(case_row(engine, cid), service, office) for cid in (together, routed)],
                                    agent="sms-auto", policy=POLICY, reason="direkt", now=now)
    assert [r["state"] for r in rows] == ["answered", "answered"]

    def written(case_id):
        row = case_row(engine, case_id)
        with engine.connect() as conn:
            trail = [tuple(a) for a in conn.execute(
                select(audit_t.c.actor, audit_t.c.action, audit_t.c.from_state, audit_t.c.to_state, audit_t.c.reason)
                .where(audit_t.c.case_id == case_id).order_by(audit_t.c.id))]
        return {k: v for k, v in row.items() if k not in ("id", "token", "created_at", "last_inbound_at",
                                                          "first_response_due")}, trail

    assert written(together) == written(alone)
    assert written(alone)[1][1:] == [("agent:sms-auto", "transition", "new", "routed", "direkt"),
                                     ("agent:sms-auto", "transition", "routed", "answered", "direkt")]
    assert written(routed)[1][1:] == [("agent:sms-auto", "transition", "routed", "answered", "direkt")]
