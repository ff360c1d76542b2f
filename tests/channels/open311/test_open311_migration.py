"""Migration 0008_open311: requests that came in over Open311 before it (channel ``api``, external id
``open311:…``) become ``open311`` cases, answers included; other API cases stay ``api``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select

from hub.db import make_engine
from hub.migrate import upgrade
from hub.queue.cases import case_t, message_t


def test_old_open311_cases_get_their_channel_and_other_api_cases_keep_theirs(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    upgrade(engine, "0007_security")
    now = datetime.now(UTC)
    cols = ("token", "state", "channel", "created_at", "updated_at", "state_changed_at", "last_inbound_at")
    with engine.begin() as conn:
        for i, ext in enumerate(("open311:city-app:sh-sperrmuell:00ff00ff00ff00ff", "crm-4711"), 1):
            conn.execute(insert(case_t).values(id=i, sla_pauses=[], attempts=0,
                                               **dict(zip(cols, (f"tok{i:013d}", "answered", "api", now, now, now, now),
                                                          strict=True))))
            conn.execute(insert(message_t).values(case_id=i, direction="in", kind="request", channel="api",
                                                  external_id=ext, text="x", created_at=now, send_attempts=0))
            conn.execute(insert(message_t).values(case_id=i, direction="out", kind="reply", channel="api",
                                                  text="Antwort", created_at=now, send_attempts=0, send_state="sent"))
    upgrade(engine)
    with engine.connect() as conn:
        cases = dict(conn.execute(select(case_t.c.id, case_t.c.channel)).all())
        messages = sorted(conn.execute(select(message_t.c.case_id, message_t.c.direction, message_t.c.channel)).all())
        assert conn.execute(select(case_t.c.requested_service_id)).scalars().all() == [None, None]
    assert cases == {1: "open311", 2: "api"}
    assert messages == [(1, "in", "open311"), (1, "out", "open311"), (2, "in", "api"), (2, "out", "api")]
    engine.dispose()
