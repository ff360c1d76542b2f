"""Privacy across the routing stage: what the knowledge base writes about a case (its reasons can quote
the citizen's words) goes with ``purge`` and ``forget`` like everything else personal."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from queue_support import case_row, req, sqlite_engine
from sqlalchemy import select, update

from hub.queue.cases import audit_t, case_t, example_t, message_t
from hub.queue.intake import write_requests
from hub.queue.privacy import forget, purge, statistics_of_route
from hub.queue.routing import RoutingStage
from hub.queue.settings import PrivacySettings

PLACE = "Musterweg 12, bei Familie Schulz"


@pytest.fixture
def engine(tmp_path):
    return sqlite_engine(tmp_path)


def _routed(engine, kb, ext: str, email: str) -> int:
    case_id = write_requests(engine, [req(ext, channel="email", text="Ich brauche einen Personalausweis",
                                          location=PLACE, contact={"email": email})])[0].case_id
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings()]
    RoutingStage(engine, kb).process_rows(rows)
    return case_id


def _texts(engine, table, case_id: int) -> str:
    column = table.c.id if table is case_t else table.c.case_id
    with engine.connect() as conn:
        return " ".join(str(tuple(r)) for r in conn.execute(select(table).where(column == case_id)).all())


def test_the_router_quotes_the_place_and_purge_removes_the_quote(engine, kb):
    case_id = _routed(engine, kb, "<p1@x>", "erika@example.de")
    row = case_row(engine, case_id)
    assert row["state"] == "needs_clarification" and "Musterweg" in row["route_reason"]  # what makes it personal
    with engine.begin() as conn:
        conn.execute(update(case_t).where(case_t.c.id == case_id).values(
            state="closed", closed_at=datetime(2020, 1, 1, tzinfo=UTC)))
    assert purge(engine, PrivacySettings(closed_retention_days=30)).cases == 1
    for table in (case_t, message_t, example_t):
        assert "Musterweg" not in _texts(engine, table, case_id), table.name
    row = case_row(engine, case_id)
    assert row["route_json"]["service"]["id"] == "sh-personalausweis"  # the decision stays for statistics
    assert "reason" not in row["route_json"] and row["route_reason"] is None


def test_statistics_of_a_route_keep_the_decision_only():
    route = {"service": {"id": "s"}, "authority": None, "location": {"ars": "01"}, "candidates": [{"id": "s"}],
             "location_candidates": [{"name": "Muster"}], "needs_clarification": True, "reason": f"no place {PLACE}"}
    assert statistics_of_route(route) == {"service": {"id": "s"}, "authority": None, "location": {"ars": "01"},
                                          "candidates": [{"id": "s"}], "needs_clarification": True}
    assert statistics_of_route(None) is None


def test_after_forget_no_audit_entry_quotes_the_citizen(engine, kb):
    case_id = _routed(engine, kb, "<f1@x>", "max@example.de")
    assert forget(engine, email="max@example.de").cases == 1
    with engine.connect() as conn:
        reasons = conn.execute(select(audit_t.c.reason).where(audit_t.c.case_id == case_id)).scalars().all()
    assert reasons and not any(PLACE.split(",")[0] in (r or "") for r in reasons)
