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
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_component
from sqlalchemy import select
from test_email_inbound import CLI, Hub, fixture, simple_mail, start_hub

from channels.email.listener import ImapPoller
from channels.email.settings import EmailSettings
from hub.db import make_engine
from hub.queue.cases import case_t, message_t

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
USER, PASSWORD = "hub", 'pa"ss w\\ord'  # a quote, a space and a backslash: imaplib must quote them right
GMAIL_FWD_ID = "<CAHv8uYq3+Lm7Qx1RzT5wPq9dK2sN4bF0gE6cJ8hA1vB3nM5kQ@mail.gmail.com>"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dovecot:
    """A running Dovecot instance; ``client()`` is an independent, logged-in IMAP connection."""

    root: Path
    proc: subprocess.Popen
    port: int  # plain IMAP, STARTTLS offered
    tls_port: int  # implicit TLS (imaps)

    def client(self) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        c.login(USER, PASSWORD)
        c.select("INBOX")
        return c

    def append(self, raw: bytes, flags: str = "") -> int:
        """Deliver one mail into INBOX (IMAP APPEND); returns its UID."""
        c = self.client()
        try:
            typ, data = c.append("INBOX", f"({flags})" if flags else None, None, raw)
            assert typ == "OK", data
            return int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
        finally:
            c.logout()

    def flags(self) -> dict[int, set[str]]:
        """UID → flags of every mail in INBOX, read without changing anything."""
        c = self.client()
        try:
            typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
            assert typ == "OK"
            out: dict[int, set[str]] = {}
            for item in data or []:
                if not item:
                    continue
                line = item.decode() if isinstance(item, bytes) else item[0].decode()
                m = re.search(r"UID (\d+)", line)
                f = re.search(r"FLAGS \(([^)]*)\)", line)
                if m and f:
                    out[int(m.group(1))] = set(f.group(1).split())
            return out
        finally:
            c.logout()

    def clear(self) -> None:
        c = self.client()
        try:
            c.uid("STORE", "1:*", "+FLAGS.SILENT", r"(\Deleted)")
            c.expunge()
        finally:
            c.logout()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _config(root: Path, port: int, tls_port: int, uid: int, gid: int, as_root: bool) -> str:
    lines = [
        "protocols = imap",
        "listen = 127.0.0.1",
        f"base_dir = {root}/run",
        f"state_dir = {root}/state",
        f"log_path = {root}/dovecot.log",
        "ssl = yes",
        f"ssl_cert = <{root}/cert.pem",
        f"ssl_key = <{root}/key.pem",
        "disable_plaintext_auth = no",  # the plain-port tests log in over loopback without TLS
        "auth_mechanisms = plain login",
        "first_valid_uid = 1",
        "last_valid_uid = 0",
        "mail_location = maildir:~/Maildir",
        "passdb {", "  driver = passwd-file", f"  args = scheme=PLAIN username_format=%u {root}/passwd", "}",
        "userdb {", "  driver = static", f"  args = uid={uid} gid={gid} home={root}/home/%u", "}",
        "service imap-login {", "  chroot =",
        "  inet_listener imap {", "    address = 127.0.0.1", f"    port = {port}", "  }",
        "  inet_listener imaps {", "    address = 127.0.0.1", f"    port = {tls_port}", "  }",
        "}",
        "service anvil {", "  chroot =", "}",
    ]
    if not as_root:  # Dovecot runs unprivileged: every internal process as this user
        user = __import__("pwd").getpwuid(uid).pw_name
        lines += [f"default_internal_user = {user}", f"default_login_user = {user}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def dovecot():
    require_component(DOVECOT is not None, "Dovecot is not installed (apt-get install dovecot-imapd)")
    require_component(shutil.which("openssl") is not None, "openssl is not installed (needed for a test certificate)")
    as_root = os.geteuid() == 0
    # Dovecot refuses mail access as root; as root the mailbox belongs to 'nobody', so the directory
    # must be reachable by it (pytest's tmp_path is 0700).
    root = Path(tempfile.mkdtemp(prefix="hub-dovecot-"))
    root.chmod(0o755)
    uid, gid = (65534, 65534) if as_root else (os.getuid(), os.getgid())
    (root / "home").mkdir()
    (root / "run").mkdir()
    (root / "state").mkdir()
    if as_root:
        os.chown(root / "home", uid, gid)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"), "-days", "2",
                    "-subj", "/CN=localhost"], check=True, capture_output=True)
    port, tls_port = _free_port(), _free_port()
    (root / "dovecot.conf").write_text(_config(root, port, tls_port, uid, gid, as_root))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(root / "dovecot.conf")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    server = Dovecot(root, proc, port, tls_port)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                log = (root / "dovecot.log").read_text(errors="replace") if (root / "dovecot.log").exists() else ""
                pytest.fail(f"Dovecot did not start: {out}\n{log}")
            try:
                server.client().logout()
                break
            except (OSError, imaplib.IMAP4.error):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


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
