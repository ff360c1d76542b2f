"""Retention (purge), the right to erasure (forget) and the queue's CLI commands."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from queue_support import case_row, req, sqlite_engine
from sqlalchemy import func, select, update

from hub.cli import queue as cli_queue
from hub.http.tokens import TokenVerifier, token_t
from hub.queue.cases import attachment_t, audit_t, case_t, example_t, message_t
from hub.queue.intake import AttachmentStore, write_requests
from hub.queue.privacy import forget, purge
from hub.queue.settings import PrivacySettings

NOW = datetime.now(UTC)


@pytest.fixture
def engine(tmp_path):
    return sqlite_engine(tmp_path)


@pytest.fixture
def store(tmp_path):
    return AttachmentStore(tmp_path / "att")


def _case(engine, store, ext, email="erika@example.de", phone=None, state=None, days_ago=0, attachment=b""):
    r = req(ext, channel="email", text="Mein Reisepass ist weg, Hauptstr. 5",
            contact={"email": email, "phone": phone, "name": "Erika Musterfrau"}, location="Hauptstr. 5",
            attachments=[{"filename": "foto.jpg", "data": attachment}] if attachment else [])
    case_id = write_requests(engine, [r], store=store)[0].case_id
    if state:
        with engine.begin() as conn:
            conn.execute(update(case_t).where(case_t.c.id == case_id).values(
                state=state, closed_at=NOW - timedelta(days=days_ago) if state == "closed" else None,
                state_changed_at=NOW - timedelta(days=days_ago), service_id="reisepass", authority_id="amt"))
            conn.execute(example_t.insert().values(case_id=case_id, created_at=NOW, agent="a", text="Reisepass weg",
                                                   service_id="reisepass", authority_id="amt"))
    return case_id


def test_purge_anonymises_old_finished_cases_and_keeps_statistics(engine, store):
    old = _case(engine, store, "<old@x>", state="closed", days_ago=100, attachment=b"JPEG old")
    young = _case(engine, store, "<young@x>", state="closed", days_ago=10)
    open_ = _case(engine, store, "<open@x>")
    dead = _case(engine, store, "<dead@x>", state="dead_letter", days_ago=40)
    settings = PrivacySettings(closed_retention_days=90, dead_letter_retention_days=30)

    dry = purge(engine, settings, store=store, dry_run=True)
    assert (dry.cases, dry.attachments) == (2, 1)
    assert case_row(engine, old)["contact_email"] == "erika@example.de"  # a dry run changes nothing

    report = purge(engine, settings, store=store)
    assert (report.cases, report.attachments, report.files, report.examples) == (2, 1, 1, 2)
    for case_id in (old, dead):
        row = case_row(engine, case_id)
        assert row["anonymised_at"] is not None
        assert (row["contact_email"], row["contact_name"], row["location"]) == (None, None, None)
        assert (row["service_id"], row["authority_id"], row["channel"]) == ("reisepass", "amt", "email")
    with engine.connect() as conn:
        texts = conn.execute(select(message_t.c.text, message_t.c.external_id)
                             .where(message_t.c.case_id == old)).all()
        assert texts[0][0] == "" and texts[0][1].startswith("anon:")
        assert conn.execute(select(func.count()).select_from(attachment_t)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(example_t)
                            .where(example_t.c.case_id.in_([old, dead]))).scalar() == 0
        actions = conn.execute(select(audit_t.c.case_id).where(audit_t.c.action == "purge")).scalars().all()
    assert sorted(actions) == sorted([old, dead])
    assert not list((store.root).rglob("*")) or all(p.is_dir() for p in store.root.rglob("*"))
    for case_id in (young, open_):
        assert case_row(engine, case_id)["contact_email"] == "erika@example.de"
    assert purge(engine, settings, store=store).cases == 0  # nothing twice


def test_forget_deletes_every_case_of_one_citizen_only(engine, store):
    mine = [_case(engine, store, "<f1@x>", email="Max@Example.de", attachment=b"scan"),
            _case(engine, store, "<f2@x>", email="max@example.de", state="closed", days_ago=1)]
    sms = write_requests(engine, [req("SM1", channel="sms", contact={"phone": "0170 1234567"})])[0].case_id
    other = _case(engine, store, "<f3@x>", email="eve@example.de")

    report = forget(engine, email="MAX@example.de", store=store)
    assert (report.cases, report.attachments, report.files) == (2, 1, 1)
    by_phone = forget(engine, phone="+49 170 1234567", store=store)
    assert by_phone.cases == 1
    with engine.connect() as conn:
        left = set(conn.execute(select(case_t.c.id)).scalars())
        assert left == {other}
        assert conn.execute(select(func.count()).select_from(message_t)
                            .where(message_t.c.case_id.in_([*mine, sms]))).scalar() == 0
        trail = conn.execute(select(audit_t.c.case_id, audit_t.c.reason).where(audit_t.c.action == "forget")).all()
    assert sorted(c for c, _ in trail) == sorted([*mine, sms])
    assert all("example" not in (r or "") and "+49" not in (r or "") for _, r in trail)
    with pytest.raises(ValueError):
        forget(engine)


# -- CLI -----------------------------------------------------------------------------------------------------


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_queue.register(sub)
    return parser.parse_args(list(argv))


def test_cli_token_add_prints_a_working_token_stored_hashed(engine, capsys):
    url = str(engine.url)
    args = _cli("token", "add", "web-frontend", "--role", "service", "--db", url)
    assert args.func(args) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("chub_") and len(token) > 40
    with engine.connect() as conn:
        row = conn.execute(select(token_t)).mappings().one()
    assert token not in str(dict(row)) and row["role"] == "service"
    principal = asyncio.run(TokenVerifier(engine).verify(token))
    assert principal is not None and principal.name == "web-frontend"
    dup = _cli("token", "add", "web-frontend", "--role", "agent", "--all-authorities", "--db", url)
    with pytest.raises(cli_queue.UsageError, match="exists already"):
        dup.func(dup)


def test_cli_purge_and_forget(engine, store, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    _case(engine, store, "<c1@x>", state="closed", days_ago=400)
    _case(engine, store, "<c2@x>", email="max@example.de")
    url = str(engine.url)
    args = _cli("purge", "--db", url)
    assert args.func(args) == 0
    assert '"cases": 1' in capsys.readouterr().out
    args = _cli("forget", "--email", "max@example.de", "--db", url)
    assert args.func(args) == 0
    assert '"cases": 1' in capsys.readouterr().out
    with pytest.raises(cli_queue.UsageError):
        args = _cli("forget", "--db", url)
        args.func(args)
    with pytest.raises(cli_queue.UsageError, match="cannot use"):
        args = _cli("forget", "--phone", "12", "--db", url)
        args.func(args)


def test_cli_worker_once_routes_and_sends(engine, monkeypatch, tmp_path):
    from hub.queue.outbox import enqueue

    monkeypatch.chdir(tmp_path)
    first = write_requests(engine, [req("w-1")])[0]
    second = write_requests(engine, [req("w-2")])[0]
    with engine.begin() as conn:
        enqueue(conn, case_row(engine, second.case_id), text="Antwort", author="agent:test")
    args = _cli("worker", "--once", "--db", str(engine.url))
    assert args.func(args) == 0
    # The knowledge base of this database is empty: the router asks an agent.
    assert case_row(engine, first.case_id)["state"] == "needs_clarification"
    with engine.connect() as conn:
        assert conn.execute(select(message_t.c.send_state).where(message_t.c.direction == "out")).scalar() == "sent"
