"""The inbound request model and what intake stores of it; attachments outside the row; SQLite in WAL mode.

Every part of the issue's model is checked against the stored rows: channel, external id, received
time, contact (name, e-mail, phone, postal address), text, location hint, attachments (files outside
the database, with size and count limits), the reference to the raw payload.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError
from queue_support import case_row, count_messages, req, sqlite_engine
from sqlalchemy import func, select, text

from hub.queue.cases import CaseState, attachment_t, case_t, message_t
from hub.queue.intake import AttachmentStore, IntakeWriter, RequestRejected, write_requests
from hub.queue.requests import InboundRequest
from hub.queue.settings import QueueSettings


@pytest.fixture
def engine(tmp_path):
    return sqlite_engine(tmp_path)


def test_the_model_has_every_field_the_issue_names():
    fields = set(InboundRequest.model_fields)
    assert {"channel", "external_id", "received_at", "contact", "text", "location", "attachments",
            "raw_ref"} <= fields
    assert set(InboundRequest.model_fields["contact"].annotation.model_fields) == {
        "name", "email", "phone", "postal_address"}
    # Every part of the contact is optional, and so is the location.
    bare = InboundRequest(channel="web", external_id="w-1", text="Hallo")
    assert bare.contact.is_empty() and bare.location is None and bare.raw_ref is None
    assert bare.received_at.tzinfo is not None
    with pytest.raises(ValidationError):  # frozen: a validated request cannot be changed afterwards
        bare.text = "anders"


def test_every_field_is_stored_where_the_case_and_its_message_keep_it(engine, tmp_path):
    received = datetime(2026, 3, 2, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    request = InboundRequest(
        channel="paper", external_id="FORM-2026-0042", received_at=received,
        contact={"name": "Erika  Musterfrau", "email": "Erika@Example.DE", "phone": "04551 123-456",
                 "postal_address": "Hauptstr. 1\n23795 Bad Segeberg"},
        text="Ich beantrage einen Anwohnerparkausweis.", subject="Antrag", location="Bad Segeberg",
        attachments=[{"filename": "scan.pdf", "content_type": "application/pdf", "data": b"%PDF-1.7 page 1"}],
        raw_ref="file:///var/spool/paper/2026/0042.tiff",
    )
    result = write_requests(engine, [request], store=AttachmentStore(tmp_path / "att"))[0]
    case = case_row(engine, result.case_id)
    assert (case["channel"], case["state"]) == ("paper", CaseState.NEW)
    assert (case["contact_name"], case["contact_email"], case["contact_phone"], case["contact_address"]) == (
        "Erika  Musterfrau", "erika@example.de", "+494551123456", "Hauptstr. 1\n23795 Bad Segeberg")
    assert case["location"] == "Bad Segeberg"
    assert case["created_at"] == received.astimezone(UTC)  # the SLA clock starts at arrival, not at storage
    with engine.connect() as conn:
        msg = conn.execute(select(message_t).where(message_t.c.id == result.message_id)).mappings().one()
    assert (msg["direction"], msg["kind"], msg["channel"], msg["external_id"]) == (
        "in", "request", "paper", "FORM-2026-0042")
    assert msg["received_at"] == received.astimezone(UTC)
    assert (msg["text"], msg["subject"], msg["location"], msg["raw_ref"]) == (
        "Ich beantrage einen Anwohnerparkausweis.", "Antrag", "Bad Segeberg", "file:///var/spool/paper/2026/0042.tiff")


def test_attachment_bytes_live_in_files_and_nowhere_in_the_database(engine, tmp_path):
    store = AttachmentStore(tmp_path / "att")
    marker = b"UNIQUE-ATTACHMENT-BYTES-" + b"7" * 4000
    r = req("<att@x>", channel="email", contact={"email": "max@example.de"},
            attachments=[{"filename": "brief.txt", "content_type": "text/plain", "data": marker},
                         {"filename": "kopie.txt", "content_type": "text/plain", "data": marker}])
    write_requests(engine, [r], store=store)
    digest = hashlib.sha256(marker).hexdigest()
    with engine.connect() as conn:
        rows = conn.execute(select(attachment_t)).mappings().all()
        conn.execute(text("PRAGMA wal_checkpoint(FULL)"))
    assert [(a["filename"], a["size_bytes"], a["sha256"]) for a in rows] == [
        ("brief.txt", len(marker), digest), ("kopie.txt", len(marker), digest)]
    assert store.read(digest) == marker
    assert len([p for p in store.root.rglob("*") if p.is_file()]) == 1  # the same bytes are kept once
    db_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("hub.sqlite3*"))
    assert marker[:40] not in db_bytes, "attachment bytes were written into the database"


@pytest.mark.parametrize(
    "limits, attachments, text, message",
    [
        ({"attachment_max_bytes": 100}, [b"x" * 101], "Hallo", "Anhang ist größer als 100 Bytes"),
        ({"attachments_max_total_bytes": 150}, [b"x" * 80, b"y" * 80], "Hallo", "zusammen größer als 150"),
        ({"attachments_max_count": 2}, [b"a", b"b", b"c"], "Hallo", "Mehr als 2 Anhänge"),
        ({"max_text_chars": 100}, [], "x" * 101, "länger als 100 Zeichen"),
    ],
)
async def test_size_limits_reject_the_request_and_store_nothing(engine, tmp_path, limits, attachments, text,
                                                                message):
    store = AttachmentStore(tmp_path / "att")
    writer = IntakeWriter(engine, QueueSettings(**limits), store=store).start()
    try:
        r = req("big", text=text, attachments=[{"filename": f"f{i}.bin", "data": d} for i, d in enumerate(attachments)])
        with pytest.raises(RequestRejected, match=message) as info:
            await writer.submit(r)
        assert info.value.status == 413
        within = await writer.submit(req("fits", attachments=[{"filename": "ok.bin", "data": b"ok"}]))
    finally:
        writer.stop()
    assert within.created and count_messages(engine) == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(attachment_t)).scalar() == 1
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].read_bytes() == b"ok"  # nothing of the rejected request on disk


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"attachments": [{"filename": "..", "data": b"x"}]}, "not a file name"),
        ({"attachments": [{"filename": "/", "data": b"x"}]}, "not a file name"),
        ({"attachments": [{"filename": "a\x00b.pdf", "data": b"x"}]}, "control characters"),
        ({"attachments": [{"filename": "x" * 256, "data": b"x"}]}, "at most 255"),
        ({"attachments": [{"filename": "a.pdf", "content_type": "text/html; script", "data": b"x"}]},
         "not a media type"),
        ({"attachments": [{"filename": "a.pdf", "data": b"x", "path": "/etc/passwd"}]}, "Extra inputs"),
        ({"in_reply_to": [f"<{i}@x>" for i in range(101)]}, "at most 100"),
        ({"raw_ref": "a\nb"}, "single line"),
        ({"location": "Bad\nSegeberg"}, "single line"),
        ({"subject": "x" * 501}, "at most 500"),
        ({"contact": {"postal_address": "x" * 1001}}, "at most 1000"),
        ({"contact": {"name": "\ud800"}}, "unicode"),
        ({"external_id": "x" * 256}, "at most 255"),
    ],
)
def test_hostile_fields_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        InboundRequest(**{"channel": "email", "external_id": "<h@x>", "text": "Hallo", **fields})


def test_a_file_name_never_addresses_a_directory():
    r = InboundRequest(channel="web", external_id="w", text="x",
                       attachments=[{"filename": "C:\\Users\\max\\..\\scan.jpg", "data": b"x"}])
    assert r.attachments[0].filename == "scan.jpg"


def test_an_attachment_without_text_is_a_request():
    r = InboundRequest(channel="paper", external_id="FORM-1", attachments=[{"filename": "scan.tiff", "data": b"II*"}])
    assert r.text == "" and len(r.attachments) == 1


def test_sqlite_runs_in_wal_mode_with_foreign_keys(engine):
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_removing_a_case_removes_its_messages_and_attachment_rows(engine, tmp_path):
    r = req("<fk@x>", channel="email", attachments=[{"filename": "a.txt", "data": b"a"}])
    case_id = write_requests(engine, [r], store=AttachmentStore(tmp_path / "att"))[0].case_id
    with engine.begin() as conn:
        conn.execute(case_t.delete().where(case_t.c.id == case_id))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(message_t)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(attachment_t)).scalar() == 0
