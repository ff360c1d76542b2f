"""The IMAP poller against a real IMAP server: Dovecot (Debian package ``dovecot-imapd``), started by the
fixture below on 127.0.0.1 with its own configuration, a passwd-file user and a Maildir in a temporary
directory, plain, STARTTLS and implicit TLS with a self-signed certificate made for the test.

Mail is put into the mailbox with IMAP APPEND and its flags are read back with a second, independent
IMAP connection, so what the tests see is what a person's mail client would see."""

from __future__ import annotations

import asyncio
import imaplib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_component
from dovecot_support import PASSWORD, USER, Dovecot, dovecot_missing, running_dovecot
from sqlalchemy import select
from test_email_inbound import CLI, Hub, fixture, simple_mail, start_hub

from channels.email.listener import ImapPoller
from channels.email.settings import EmailSettings
from hub.db import make_engine
from hub.queue.cases import case_t, message_t

GMAIL_FWD_ID = "<CAHv8uYq3+Lm7Qx1RzT5wPq9dK2sN4bF0gE6cJ8hA1vB3nM5kQ@mail.gmail.com>"


@pytest.fixture(scope="module")
def dovecot():
    require_component(dovecot_missing() is None, dovecot_missing() or "")
    try:
        with running_dovecot() as server:
            yield server
    except RuntimeError as exc:  # it is installed but did not start: a failure, not a skip
        pytest.fail(str(exc))


@pytest.fixture
def mailbox(dovecot):
    dovecot.clear()
    yield dovecot
    dovecot.clear()


@pytest.fixture
async def hub(tmp_path):
    from queue_support import sqlite_engine

    engine = sqlite_engine(tmp_path)
    h = await start_hub(engine, tmp_path)
    yield h
    await h.stop()
    engine.dispose()


def imap_settings(h: Hub, server: Dovecot, **kw) -> EmailSettings:
    values = dict(imap_host="127.0.0.1", imap_port=server.port, imap_tls=False, imap_username=USER,
                  imap_password=PASSWORD)
    values.update(kw)
    return h.settings.model_copy(update=values)


def poll(h: Hub, settings: EmailSettings, **kw):
    return asyncio.to_thread(ImapPoller(h.intake, settings, **kw).poll_once)


# -- the poller ---------------------------------------------------------------------------------------------


async def test_unseen_mail_is_stored_and_marked_seen_while_read_mail_is_left_alone(hub, mailbox):
    fwd = mailbox.append(fixture("gmail_forward_inline.eml"))
    read = mailbox.append(fixture("windows1252_8bit.eml"), flags=r"\Seen")  # a person read it already
    bounce = mailbox.append(fixture("dsn_bounce_postfix.eml"))
    stats = await poll(hub, imap_settings(hub, mailbox))
    assert (stats.seen, stats.stored, stats.deferred, stats.flagged) == (2, 2, 0, 0)
    flags = mailbox.flags()
    assert r"\Seen" in flags[fwd] and r"\Seen" in flags[bounce] and r"\Seen" in flags[read]
    (row,) = hub.inbound()  # the mail a person already read is not the hub's; the bounce opens no case
    assert row["external_id"] == GMAIL_FWD_ID and "412,00 EUR" in row["text"]
    assert Path(row["raw_ref"]).read_bytes() == fixture("gmail_forward_inline.eml")  # byte for byte
    assert len(hub.rows(case_t)) == 1
    assert hub.acks_sent()[0]["recipient"] == "frank.hansen1962@gmail.com"
    assert (await poll(hub, imap_settings(hub, mailbox))).seen == 0  # nothing left


async def test_seen_is_set_only_after_the_commit(hub, mailbox):
    uid = mailbox.append(simple_mail("Reisepass", "Wie lange dauert ein Reisepass?", msgid="<order@example.org>"))
    observed: list[tuple[set[str], int]] = []
    real = hub.intake.accept_sync

    def watched(raw: bytes, **kw):
        before = mailbox.flags()[uid]  # fetched with BODY.PEEK[]: still unseen
        outcome = real(raw, **kw)  # returns once the request is committed
        observed.append((before, len(hub.inbound())))
        observed.append((mailbox.flags()[uid], len(hub.inbound())))
        return outcome

    hub.intake.accept_sync = watched
    try:
        stats = await poll(hub, imap_settings(hub, mailbox))
    finally:
        del hub.intake.accept_sync
    assert stats.stored == 1
    (before, _), (after_commit, rows) = observed
    assert r"\Seen" not in before
    assert rows == 1 and r"\Seen" not in after_commit  # committed, not yet marked
    assert r"\Seen" in mailbox.flags()[uid]  # marked once the commit was done


async def test_storage_down_leaves_the_mail_unseen_for_the_next_round(hub, mailbox):
    first = mailbox.append(simple_mail("Wohngeld", "Frage 1", msgid="<down-1@example.org>"))
    second = mailbox.append(simple_mail("Hundesteuer", "Frage 2", msgid="<down-2@example.org>"))
    await asyncio.to_thread(hub.writer.stop)
    stats = await poll(hub, imap_settings(hub, mailbox))
    assert (stats.seen, stats.stored, stats.deferred) == (1, 0, 1)  # stops at the first: storage is down
    assert all(r"\Seen" not in f for f in mailbox.flags().values())
    assert hub.inbound() == []

    hub.writer.start()
    stats = await poll(hub, imap_settings(hub, mailbox))
    assert (stats.seen, stats.stored) == (2, 2)
    assert r"\Seen" in mailbox.flags()[first] and r"\Seen" in mailbox.flags()[second]
    assert {r["external_id"] for r in hub.inbound()} == {"<down-1@example.org>", "<down-2@example.org>"}


async def test_a_lost_connection_after_the_commit_refetches_and_stores_nothing_twice(hub, mailbox):
    uid = mailbox.append(simple_mail("Sperrmüll", "Wann wird abgeholt?", msgid="<lost@example.org>"))
    conns: list[imaplib.IMAP4] = []
    settings = imap_settings(hub, mailbox)

    def connect() -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", mailbox.port, timeout=30)
        c.login(USER, PASSWORD)
        conns.append(c)
        return c

    real = hub.intake.accept_sync

    def then_drop(raw: bytes, **kw):
        outcome = real(raw, **kw)
        conns[-1].sock.shutdown(socket.SHUT_RDWR)  # the server goes away between commit and STORE
        return outcome

    hub.intake.accept_sync = then_drop
    try:
        with pytest.raises((OSError, imaplib.IMAP4.abort)):
            await poll(hub, settings, connect=connect)
    finally:
        del hub.intake.accept_sync
    assert r"\Seen" not in mailbox.flags()[uid] and len(hub.inbound()) == 1

    stats = await poll(hub, settings)  # next round: fetched again, the Message-ID makes it a no-op
    assert (stats.seen, stats.stored) == (1, 1)
    assert r"\Seen" in mailbox.flags()[uid]
    assert len(hub.rows(message_t, message_t.c.external_id == "<lost@example.org>")) == 1


async def test_a_mail_over_the_limit_is_flagged_for_a_person_and_kept(hub, mailbox):
    uid = mailbox.append(simple_mail("groß", "x" * 50_000))
    hub.intake.settings = hub.settings.model_copy(update={"max_message_bytes": 20_000})
    stats = await poll(hub, imap_settings(hub, mailbox))
    assert stats.flagged == 1
    assert {r"\Seen", r"\Flagged"} <= mailbox.flags()[uid]  # still in the mailbox, marked for a person
    assert hub.inbound() == []


async def test_hostile_mail_in_the_mailbox_is_stored(hub, mailbox):
    mailbox.append(b"From: a@example.org\r\nSubject: ohne Grenze\r\nContent-Type: multipart/mixed\r\n"
                   b"Message-ID: <nob@example.org>\r\n\r\nText ohne Grenze\r\n")
    mailbox.append(b"From: b@example.org\r\nSubject: kaputt\r\nMessage-ID: <b64@example.org>\r\n"
                   b"Content-Transfer-Encoding: base64\r\n\r\n!!!kein base64***\r\n")
    stats = await poll(hub, imap_settings(hub, mailbox))
    assert stats.stored == 2
    texts = {r["external_id"]: r["text"] for r in hub.inbound()}
    assert texts["<nob@example.org>"] == "Text ohne Grenze"
    assert set(texts) == {"<nob@example.org>", "<b64@example.org>"}


async def test_a_wrong_password_fetches_and_stores_nothing(hub, mailbox):
    uid = mailbox.append(simple_mail("x", "y"))
    with pytest.raises(imaplib.IMAP4.error):
        await poll(hub, imap_settings(hub, mailbox, imap_password="wrong"))
    assert r"\Seen" not in mailbox.flags()[uid] and hub.inbound() == []


async def test_a_folder_other_than_inbox(hub, mailbox):
    c = mailbox.client()
    try:
        c.create('"Buerger Post"')
        c.append('"Buerger Post"', None, None, simple_mail("Ordner", "Im Ordner", msgid="<folder@example.org>"))
    finally:
        c.logout()
    stats = await poll(hub, imap_settings(hub, mailbox, imap_folder="Buerger Post"))
    assert stats.stored == 1 and hub.inbound()[0]["external_id"] == "<folder@example.org>"
    with pytest.raises(imaplib.IMAP4.error, match="cannot select"):
        await poll(hub, imap_settings(hub, mailbox, imap_folder="Gibt es nicht"))


# -- TLS -------------------------------------------------------------------------------------------------


async def test_starttls_and_implicit_tls(hub, mailbox):
    mailbox.append(simple_mail("TLS 1", "über STARTTLS", msgid="<tls-1@example.org>"))
    stats = await poll(hub, imap_settings(hub, mailbox, imap_starttls=True, imap_validate_certs=False))
    assert stats.stored == 1
    mailbox.append(simple_mail("TLS 2", "über TLS", msgid="<tls-2@example.org>"))
    stats = await poll(hub, imap_settings(hub, mailbox, imap_port=mailbox.tls_port, imap_tls=True,
                                          imap_validate_certs=False))
    assert stats.stored == 1
    assert [r["external_id"] for r in hub.inbound()] == ["<tls-1@example.org>", "<tls-2@example.org>"]
    log = (mailbox.root / "dovecot.log").read_text(errors="replace")
    assert re.search(r"Login: user=<hub>.*TLS", log)


async def test_an_untrusted_certificate_is_refused_before_the_login(hub, mailbox):
    uid = mailbox.append(simple_mail("x", "y"))
    for kw in (dict(imap_starttls=True), dict(imap_port=mailbox.tls_port, imap_tls=True)):
        with pytest.raises(OSError):  # ssl.SSLCertVerificationError: self-signed
            await poll(hub, imap_settings(hub, mailbox, **kw))
    assert r"\Seen" not in mailbox.flags()[uid] and hub.inbound() == []


# -- the command line ---------------------------------------------------------------------------------------


def test_poll_imap_once_from_the_command_line(tmp_path, mailbox):
    mailbox.append(fixture("outlook_new_en.eml"))
    db = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    (tmp_path / "none.toml").write_text("")
    env = {**os.environ, "CITIZEN_HUB_CONFIG": str(tmp_path / "none.toml"),
           "CITIZEN_HUB_EMAIL__IMAP_HOST": "127.0.0.1", "CITIZEN_HUB_EMAIL__IMAP_PORT": str(mailbox.port),
           "CITIZEN_HUB_EMAIL__IMAP_TLS": "false", "CITIZEN_HUB_EMAIL__IMAP_STARTTLS": "true",
           "CITIZEN_HUB_EMAIL__IMAP_VALIDATE_CERTS": "false", "CITIZEN_HUB_EMAIL__IMAP_USERNAME": USER,
           "CITIZEN_HUB_EMAIL__IMAP_PASSWORD": PASSWORD}
    done = subprocess.run([sys.executable, "-c", CLI, "email", "poll-imap", "--once", "--db", db], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 unseen, 1 stored" in done.stderr
    assert all(r"\Seen" in f for f in mailbox.flags().values())
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(message_t.c.direction, message_t.c.kind).order_by(message_t.c.id)).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("in", "request"), ("out", "ack")]
