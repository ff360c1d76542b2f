"""The queue's commands run as a user runs them: the installed ``citizen-hub`` program in a subprocess,
a temporary SQLite database and a config file with the retention periods.

``token add`` prints a working bearer token (stored hashed); ``purge`` anonymises finished cases
past the retention of their state and keeps the statistics; ``forget`` deletes one citizen's cases
by e-mail address or phone number; both are audited and neither prints or logs personal data.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from queue_support import case_row, req, sqlite_engine
from sqlalchemy import func, select, update

from hub.http.tokens import TokenVerifier, token_t
from hub.queue.cases import attachment_t, audit_t, case_t, message_t
from hub.queue.intake import AttachmentStore, write_requests

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC)


def _program() -> list[str]:
    """The console script pip installed next to this interpreter (``python -m hub.cli`` if there is none)."""
    script = Path(sys.executable).with_name("citizen-hub")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hub.cli"]


@pytest.fixture
def hub(tmp_path):
    engine = sqlite_engine(tmp_path)
    store = AttachmentStore(tmp_path / "attachments")
    config = tmp_path / "config.toml"
    config.write_text(
        "[privacy]\nclosed_retention_days = 30\ndead_letter_retention_days = 7\n\n"
        f"[queue]\nattachment_dir = {json.dumps(str(store.root))}\n",
        encoding="utf-8",
    )

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITIZEN_HUB_")}
        done = subprocess.run([*_program(), *args, "--config", str(config), "--db", str(engine.url)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == expect, f"exit {done.returncode}: {done.stderr[-2000:]}"
        return done

    yield engine, store, run
    engine.dispose()


def _case(engine, store, ext, *, email="erika@example.de", phone=None, state=None, days_ago=0):
    r = req(ext, channel="email", text="Mein Reisepass ist weg. Erika, Hauptstr. 5",
            contact={"email": email, "phone": phone, "name": "Erika Musterfrau"}, location="Hauptstr. 5",
            attachments=[{"filename": "ausweis.jpg", "data": f"JPEG {ext}".encode()}])
    case_id = write_requests(engine, [r], store=store)[0].case_id
    if state:
        at = NOW - timedelta(days=days_ago)
        with engine.begin() as conn:
            conn.execute(update(case_t).where(case_t.c.id == case_id).values(
                state=state, state_changed_at=at, closed_at=at if state == "closed" else None,
                service_id="reisepass", authority_id="buergerbuero"))
    return case_id


def _actions(engine, action: str) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(audit_t.c.case_id).where(audit_t.c.action == action)).scalars())


def test_token_add_prints_a_working_token_that_is_stored_hashed(hub):
    engine, _store, run = hub
    service = run("token", "add", "web-frontend", "--role", "service").stdout.strip()
    refused = run("token", "add", "agent.any", "--role", "agent", expect=2).stderr
    assert "needs --authority ID or --region ARS" in refused and "--all-authorities" in refused
    agent = run("token", "add", "agent.meier", "--role", "agent", "--all-authorities").stdout.strip()
    assert service != agent and all(t.startswith("chub_") and len(t) > 40 for t in (service, agent))
    with engine.connect() as conn:
        stored = conn.execute(select(token_t.c.name, token_t.c.role, token_t.c.token_hash)).all()
    assert {(n, r) for n, r, _ in stored} == {("web-frontend", "service"), ("agent.meier", "agent")}
    assert not any(t in h for _, _, h in stored for t in (service, agent))  # only the hash is kept
    verifier = TokenVerifier(engine)
    principal = asyncio.run(verifier.verify(service))
    assert (principal.name, principal.role) == ("web-frontend", "service")
    assert asyncio.run(verifier.verify(agent)).role == "agent"
    assert "exists already" in run("token", "add", "web-frontend", "--role", "agent", "--all-authorities",
                                   expect=2).stderr
    listed = run("token", "list").stdout
    assert "agent.meier\tagent\tactive\tall authorities" in listed and "agent.any" not in listed
    assert "invalid choice" in run("token", "add", "x", "--role", "root", expect=2).stderr


def test_purge_anonymises_by_the_configured_retention_keeps_statistics_and_is_audited(hub):
    engine, store, run = hub
    old = _case(engine, store, "<old@x>", state="closed", days_ago=40)
    young = _case(engine, store, "<young@x>", state="closed", days_ago=10)
    dead = _case(engine, store, "<dead@x>", state="dead_letter", days_ago=8)
    open_ = _case(engine, store, "<open@x>")

    dry = run("purge", "--dry-run")
    assert json.loads(dry.stdout)["cases"] == 2 and "would anonymise 2 cases" in dry.stderr
    assert case_row(engine, old)["contact_email"] == "erika@example.de" and _actions(engine, "purge") == []

    done = run("purge")
    report = json.loads(done.stdout)
    assert (report["cases"], report["attachments"], report["files"]) == (2, 2, 2)
    for case_id in (old, dead):
        row = case_row(engine, case_id)
        assert row["anonymised_at"] is not None
        assert (row["contact_name"], row["contact_email"], row["contact_phone"], row["location"]) == (
            None, None, None, None)
        # Statistics stay: channel, state, route, timestamps, SLA figures.
        assert (row["channel"], row["service_id"], row["authority_id"]) == ("email", "reisepass", "buergerbuero")
        assert row["created_at"] and row["first_response_due"]
    with engine.connect() as conn:
        texts = conn.execute(select(message_t.c.text, message_t.c.external_id)
                             .where(message_t.c.case_id.in_([old, dead]))).all()
        attachments = conn.execute(select(func.count()).select_from(attachment_t)).scalar()
    assert texts and all(t == "" and e.startswith("anon:") for t, e in texts)
    assert attachments == 2  # those of the young and the open case
    assert len([p for p in store.root.rglob("*") if p.is_file()]) == 2
    for case_id in (young, open_):
        assert case_row(engine, case_id)["contact_email"] == "erika@example.de"
    assert _actions(engine, "purge") == sorted([old, dead])
    assert "Erika" not in done.stdout + done.stderr and "Reisepass ist weg" not in done.stdout + done.stderr
    assert json.loads(run("purge").stdout)["cases"] == 0  # nothing twice, no second audit entry
    assert _actions(engine, "purge") == sorted([old, dead])


def test_forget_deletes_one_citizens_cases_by_email_or_phone_and_is_audited(hub):
    engine, store, run = hub
    mine = [_case(engine, store, "<m1@x>", email="max@example.de"),
            _case(engine, store, "<m2@x>", email="max@example.de", state="closed", days_ago=3)]
    by_phone = _case(engine, store, "<m3@x>", email="handy@example.de", phone="+491701234567")
    other = _case(engine, store, "<o1@x>", email="eva@example.de")

    dry = run("forget", "--email", "MAX@Example.de", "--dry-run")
    assert json.loads(dry.stdout)["cases"] == 2 and _actions(engine, "forget") == []
    done = run("forget", "--email", "MAX@Example.de")
    assert json.loads(done.stdout)["cases"] == 2
    assert "max@example.de" not in (done.stdout + done.stderr).lower()
    phone = run("forget", "--phone", "0170 123 45 67")
    assert json.loads(phone.stdout)["cases"] == 1

    with engine.connect() as conn:
        assert set(conn.execute(select(case_t.c.id)).scalars()) == {other}
        assert conn.execute(select(func.count()).select_from(message_t)
                            .where(message_t.c.case_id.in_([*mine, by_phone]))).scalar() == 0
        reasons = conn.execute(select(audit_t.c.reason, audit_t.c.actor).where(audit_t.c.action == "forget")).all()
    assert _actions(engine, "forget") == sorted([*mine, by_phone])
    assert all("@" not in reason and "+49" not in reason for reason, _ in reasons)  # the log keeps no address
    assert len([p for p in store.root.rglob("*") if p.is_file()]) == 1  # only the other citizen's file
    assert "give --email or --phone" in run("forget", expect=2).stderr
    assert "cannot use" in run("forget", "--phone", "12", expect=2).stderr
