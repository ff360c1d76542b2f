"""The crash harness's checks find what they look for: each is shown a database or an outbox with exactly the
fault it must report (a lost acknowledged request, a duplicate, a half-stored request, a mail sent twice)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from queue_support import req, sqlite_engine
from sqlalchemy import delete, insert, select, update

from bench.crash import check_integrity, check_outbox, check_requests
from bench.traffic.drivers import Driver, Ticket
from hub.queue.cases import attachment_t, case_t, message_t
from hub.queue.intake import AttachmentStore, write_requests
from hub.queue.requests import AttachmentIn


class _Fixed(Driver):
    name = "fixed"

    def __init__(self, counts: dict[str, int], must_arrive: bool = False) -> None:
        super().__init__("p")
        self.counts = counts
        self.must_arrive = must_arrive

    def stored(self, conn, tickets):
        return Counter(self.counts)


def test_check_requests_reports_a_lost_acknowledged_request_and_a_duplicate(tmp_path):
    engine = sqlite_engine(tmp_path)
    tickets = [Ticket("fixed", "a", acked=True), Ticket("fixed", "b", acked=True), Ticket("fixed", "c"),
               Ticket("fixed", "d")]
    problems = check_requests([_Fixed({"a": 1, "b": 0, "c": 2, "d": 0})], {"fixed": tickets}, engine)
    assert len(problems) == 2
    assert "b was acknowledged and is not stored" in problems[0] and "c is stored 2 times" in problems[1]
    # d was never acknowledged: not stored is fine, unless the source keeps it until it is (a mailbox)
    assert check_requests([_Fixed({"a": 1, "b": 1, "c": 1}, must_arrive=True)], {"fixed": tickets}, engine) == [
        "fixed: request d waited in the mailbox and was never stored"]


def _routed_db(tmp_path):
    engine = sqlite_engine(tmp_path)
    store = AttachmentStore(tmp_path / "attachments")
    att = AttachmentIn(filename="a.png", content_type="image/png", data=b"\x89PNG-data")
    write_requests(engine, [req("x-1", attachments=[att]), req("x-2")], store=store)
    with engine.begin() as conn:
        conn.execute(update(case_t).values(state="routed"))
    return engine, store


def test_check_integrity_passes_a_whole_database_and_names_each_half_stored_thing(tmp_path):
    engine, store = _routed_db(tmp_path)
    assert check_integrity(engine, tmp_path / "attachments") == []

    with engine.connect() as conn:
        sha = conn.execute(select(attachment_t.c.sha256)).scalar_one()
    store.path(sha).write_bytes(b"\x89PN")  # a torn file
    assert any("is not whole" in p for p in check_integrity(engine, tmp_path / "attachments"))
    store.path(sha).unlink()
    assert any("is missing" in p for p in check_integrity(engine, tmp_path / "attachments"))

    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # the fault the database itself would refuse
        conn.execute(insert(message_t).values(case_id=9999, direction="in", kind="request", channel="api",
                                              external_id="orphan", text="x", send_attempts=0,
                                              created_at=datetime.now(UTC)))
        copy = dict(conn.execute(select(case_t).where(case_t.c.id == 1)).mappings().one())
        copy.update(id=None, token="t" * 16)  # a case written without its audit entry (audit is append-only)
        conn.execute(insert(case_t).values(**copy))
        conn.execute(delete(message_t).where(message_t.c.external_id == "x-2"))
        conn.execute(update(case_t).where(case_t.c.id == 1).values(state="new"))
        conn.commit()
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    problems = "\n".join(check_integrity(engine, tmp_path / "attachments"))
    for expected in ("messages without their case", "cases without an inbound message",
                     "without their 'create' audit entry", "still 'new'", "foreign_key_check"):
        assert expected in problems, problems


def test_check_outbox_reports_twice_sent_lost_and_stuck_messages_and_allows_uncertain():
    rows = [(1, "<a>", "sent"), (2, "<b>", "sent"), (3, "<c>", "uncertain"), (4, "<d>", "uncertain"),
            (5, "<e>", "pending")]
    ok = check_outbox(rows[:4], Counter({"<a>": 1, "<b>": 1, "<c>": 1}))
    assert ok == []  # uncertain: arrived once or not at all, as the outbox defines
    problems = check_outbox(rows, Counter({"<a>": 2, "<c>": 1, "<z>": 1}),
                            [Ticket("reply", "r1", {"message_id": 77}, acked=True)])
    text = "\n".join(problems)
    assert "<a> reached the outside server 2 times" in text
    assert "message 2 is marked sent and arrived 0 times" in text
    assert "message 5 is still pending" in text
    assert "<z>, which is not in the outbox" in text
    assert "acknowledged reply r1" in text
