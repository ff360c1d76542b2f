"""Hostile input against the real listener, and the promise behind every 250.

Each hostile mail goes through smtplib to a real aiosmtpd listener with a real SQLite database. The rule
checked is the one a mail server lives by: the listener answers every mail with a clear code and keeps
serving, and a mail that got a 250 is in the database with its original bytes — also when the process
is killed right after the 250 (the commit comes before it)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from queue_support import sqlite_engine
from sqlalchemy import select
from test_email_inbound import CLI, OURS, crlf, send, simple_mail, start_hub

from channels.email.parse import parse_mail
from hub.db import make_engine
from hub.queue.cases import attachment_t, case_t, message_t


@pytest.fixture
async def hub(tmp_path):
    engine = sqlite_engine(tmp_path)
    h = await start_hub(engine, tmp_path)
    yield h
    await h.stop()
    engine.dispose()


def head(subject: str, msgid: str, extra: bytes = b"") -> bytes:
    return (b"From: Max Muster <max.muster@example.org>\r\nTo: " + OURS.encode() + b"\r\nSubject: "
            + subject.encode() + b"\r\nMessage-ID: " + msgid.encode() + b"\r\n" + extra)


def nested_rfc822(depth: int) -> bytes:
    inner = b"From: ganz.unten@example.org\r\nSubject: ganz unten\r\n\r\nDer eigentliche Text liegt ganz unten.\r\n"
    for i in range(depth):
        inner = (f"From: ebene{i}@example.org\r\nSubject: Fwd: Ebene {i}\r\nMIME-Version: 1.0\r\n"
                 "Content-Type: message/rfc822\r\n\r\n").encode() + inner
    return inner


def nested_multipart(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nTief verschachtelt.\r\n"
    for i in range(depth):
        body = (f"Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n").encode() + body + \
            f"\r\n--b{i}--\r\n".encode()
    return body


# name → (raw mail, words the stored text must contain)
HOSTILE: dict[str, tuple[bytes, list[str]]] = {
    "nul_bytes": (
        head("Null\x00bytes", "<nul@example.org>")
        + b"Content-Type: text/plain; charset=utf-8\r\n\r\nHallo\x00 Welt,\x00\x00 mein Antrag.\r\n",
        ["Hallo Welt", "mein Antrag"],
    ),
    "boundary_never_used": (
        head("Grenze fehlt", "<bnd-1@example.org>", b'Content-Type: multipart/mixed; boundary="GIBTESNICHT"\r\n')
        + b"\r\n--ANDERS\r\nContent-Type: text/plain\r\n\r\nText hinter falscher Grenze.\r\n--ANDERS--\r\n",
        ["Text hinter falscher Grenze"],
    ),
    "boundary_not_closed": (
        head("Nicht geschlossen", "<bnd-2@example.org>", b'Content-Type: multipart/mixed; boundary="XYZ"\r\n')
        + b"\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\nErster Teil.\r\n--XYZ\r\nContent-Type: text/plain\r\n"
        b"\r\nZweiter Teil ohne Ende.\r\n",
        ["Erster Teil", "Zweiter Teil ohne Ende"],
    ),
    "multipart_without_boundary": (
        head("Ohne Parameter", "<bnd-3@example.org>", b"Content-Type: multipart/alternative\r\n")
        + b"\r\nNur ein Text ohne jede Grenze.\r\n",
        ["Nur ein Text ohne jede Grenze"],
    ),
    "ten_thousand_header_lines": (
        head("Viele Kopfzeilen", "<hdr@example.org>", b"".join(b"X-Spam-%05d: v\r\n" % i for i in range(10_000))
             + b"Received: from x\r\n\tby y\r\n" * 50)
        + b"\r\nDer Text nach zehntausend Kopfzeilen.\r\n",
        ["nach zehntausend Kopfzeilen"],
    ),
    "invalid_base64_body": (
        head("Kaputtes base64", "<b64-1@example.org>",
             b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n")
        + b"\r\n" + base64.b64encode("Grüße aus Bad Segeberg".encode())[:-3] + b"!!*%$\r\n====\r\n",
        ["Grüße aus Bad Segeberg"[:12]],
    ),
    "invalid_base64_attachment": (
        head("Anhang kaputt", "<b64-2@example.org>", b'Content-Type: multipart/mixed; boundary="m"\r\n')
        + b"\r\n--m\r\nContent-Type: text/plain\r\n\r\nAnbei der Antrag.\r\n--m\r\n"
        b'Content-Type: application/pdf; name="antrag.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
        b'Content-Disposition: attachment; filename="antrag.pdf"\r\n\r\n%%% kein base64 ###\r\n@@@@\r\n--m--\r\n',
        ["Anbei der Antrag"],
    ),
    "rfc822_nested_100_deep": (
        head("Fwd: Fwd: Fwd: …", "<deep-rfc822@example.org>", b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n")
        + b"\r\n" + nested_rfc822(100),
        ["Weitergeleitete Nachricht", "Ebene 99"],
    ),
    "multipart_nested_2000_deep": (
        head("Matroschka", "<deep-mp@example.org>", b"MIME-Version: 1.0\r\n") + nested_multipart(2000),
        [],  # the structure is unreadable; the request must still be stored with the original kept
    ),
    "bad_encoded_words_and_8bit_headers": (
        b"From: =?utf-8?B?!!!?= <=?x-unknown?q?=FF?=@example.org>\r\nTo: " + OURS.encode()
        + b"\r\nSubject: =?utf-8?q?Gr=C3=BC=C3?= \xff\xfe M\xfcll =?koi8-r?B?8NLJ18XU?=\r\n"
        b"Message-ID: <hdr-8bit@example.org>\r\nDate: Blursday, 99 Foo 20245 99:99:99\r\n"
        b"Content-Type: text/plain; charset=\"\xff\"\r\n\r\nM\xfcllabfuhr bitte.\r\n",
        ["Müllabfuhr bitte"],
    ),
    "headers_only_no_body": (head("Nur Betreff: Reisepass", "<nobody@example.org>"), ["Reisepass"]),
    "garbage_bytes": (bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"") * 3 + b"\r\n", []),
    "five_hundred_tiny_attachments": (
        head("Viele Anhänge", "<many@example.org>", b'Content-Type: multipart/mixed; boundary="z"\r\n') + b"\r\n"
        + b"--z\r\nContent-Type: text/plain\r\n\r\nViele Fotos.\r\n"
        + b"".join(b'--z\r\nContent-Type: image/png; name="f%d.png"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n'
                   % i for i in range(500)) + b"--z--\r\n",
        ["Viele Fotos", "mehr als 20 Anhänge"],
    ),
}


def _alive(port: int) -> bool:
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    try:
        return client.noop()[0] == 250
    finally:
        client.close()


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_mail_gets_250_only_once_it_is_stored(hub, name):
    raw, words = HOSTILE[name]
    raw = crlf(raw)
    code, text, _ = await send(hub.port, raw)
    assert code == 250, f"{name}: {code} {text}"
    match = re.search(r"stored as message (\d+)", text)
    assert match, text
    (row,) = hub.rows(message_t, message_t.c.id == int(match.group(1)))
    # aiosmtpd hands on the bytes as received (dot-unstuffed); smtplib sends exactly these.
    assert Path(row["raw_ref"]).read_bytes() == raw
    assert row["text"].strip()
    assert "\x00" not in row["text"] and "\x00" not in (row["subject"] or "")
    for word in words:
        assert word in row["text"], f"{name}: {word!r} not in {row['text'][:300]!r}"
    assert await asyncio.to_thread(_alive, hub.port)


async def test_hostile_mail_in_one_session_after_another(hub):
    """All of them back to back on one connection: the session survives each one."""
    def run() -> list[int]:
        client = smtplib.SMTP("127.0.0.1", hub.port, timeout=60)
        client.ehlo("client.example.org")
        codes = []
        try:
            for raw, _ in HOSTILE.values():
                codes.append(_one(client, crlf(raw)))
        finally:
            client.quit()
        return codes

    codes = await asyncio.to_thread(run)
    assert codes == [250] * len(HOSTILE)
    assert len(hub.inbound()) == len(HOSTILE)


def _one(client: smtplib.SMTP, raw: bytes) -> int:
    client.mail("max.muster@example.org")
    client.rcpt(OURS)
    return client.data(raw)[0]


def test_the_parser_reads_what_can_be_read():
    deep = parse_mail(crlf(HOSTILE["rfc822_nested_100_deep"][0]))
    assert deep.is_forward and deep.attachments  # beyond the depth limit the rest is one opaque file
    assert deep.text.count("Weitergeleitete Nachricht") >= 10
    many = parse_mail(crlf(HOSTILE["five_hundred_tiny_attachments"][0]))
    assert len(many.attachments) == 20 and len(many.dropped) == 480
    broken = parse_mail(crlf(HOSTILE["invalid_base64_attachment"][0]))
    assert [a.filename for a in broken.attachments] == ["antrag.pdf"]


async def test_a_line_over_the_smtp_limit_is_refused_clearly_and_nothing_half_is_stored(hub):
    raw = crlf(head("Lange Zeile", "<long@example.org>") + b"\r\n" + b"x" * 5000 + b"\r\n")
    code, text, _ = await send(hub.port, raw)
    assert code == 500 and "too long" in text.lower()
    assert hub.inbound() == []
    assert (await send(hub.port, simple_mail("danach", "geht")))[0] == 250


async def test_a_connection_dropped_in_the_middle_of_data_stores_nothing(hub):
    def drop() -> None:
        with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()
            for line in (b"EHLO x.example.org", b"MAIL FROM:<a@example.org>", f"RCPT TO:<{OURS}>".encode(), b"DATA"):
                s.sendall(line + b"\r\n")
                reply = f.readline()
                while reply[3:4] == b"-":
                    reply = f.readline()
            assert reply.startswith(b"354")
            s.sendall(head("halb", "<half@example.org>") + b"\r\nNur die Haelfte")

    await asyncio.to_thread(drop)
    await asyncio.sleep(0.2)
    assert hub.inbound() == []
    assert await asyncio.to_thread(_alive, hub.port)


async def test_smtp_command_garbage_gets_errors_not_a_crash(hub):
    def garbage() -> list[bytes]:
        replies = []
        with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()
            for line in (b"\x00\x01\x02", b"MAIL FROM:<a@example.org>", b"RCPT TO:<" + b"a" * 3000 + b">",
                         b"HELO", b"EHLO x", b"RCPT TO:<x@y>", b"DATA", b"BDAT 10", b"\xff\xfe" * 100):
                s.sendall(line + b"\r\n")
                reply = f.readline()
                while reply[3:4] == b"-":
                    reply = f.readline()
                replies.append(reply[:3])
        return replies

    replies = await asyncio.to_thread(garbage)
    assert all(r[:1] in (b"2", b"5") for r in replies), replies
    assert b"250" in replies and b"503" in replies  # EHLO works; DATA without a recipient is out of order
    assert hub.inbound() == []
    assert (await send(hub.port, simple_mail("danach", "geht")))[0] == 250


# -- 250 means committed ---------------------------------------------------------------------------------


def test_a_250_survives_a_kill_right_after_it(tmp_path):
    """``email serve`` in its own process; every 250 is followed at once by SIGKILL (no shutdown, no flush):
    each mail that got its 250 is in the database, with its original, when the process is gone."""
    db = f"sqlite:///{tmp_path / 'kill.sqlite3'}"
    (tmp_path / "none.toml").write_text("")
    env = {**os.environ, "CITIZEN_HUB_CONFIG": str(tmp_path / "none.toml")}
    accepted: list[tuple[str, bytes]] = []
    for round_ in range(3):
        log = tmp_path / f"serve-{round_}.log"
        with log.open("w") as err:
            proc = subprocess.Popen([sys.executable, "-c", CLI, "email", "serve", "--db", db, "--host", "127.0.0.1",
                                     "--port", "0"], cwd=tmp_path, env=env, stderr=err, text=True)
        try:
            deadline = time.monotonic() + 60
            while not (found := re.search(r"listener on 127\.0\.0\.1:(\d+)", log.read_text())):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            port = int(found.group(1))
            client = smtplib.SMTP("127.0.0.1", port, timeout=60)
            client.ehlo("client.example.org")
            for i in range(5):
                msgid = f"<kill-{round_}-{i}@example.org>"
                raw = simple_mail(f"Anliegen {round_}/{i}", "Bitte um Rückruf.", msgid=msgid)
                client.mail("max.muster@example.org")
                client.rcpt("anliegen@hub.localhost")
                code, text = client.data(raw)
                assert code == 250, (code, text, log.read_text()[-3000:])
                accepted.append((msgid, raw))
            os.kill(proc.pid, signal.SIGKILL)  # right after the last 250
            proc.wait(30)
            client.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            rows = {r.external_id: r.raw_ref for r in conn.execute(
                select(message_t.c.external_id, message_t.c.raw_ref).where(message_t.c.direction == "in"))}
            cases = conn.execute(select(case_t.c.id)).all()
    finally:
        engine.dispose()
    assert set(rows) == {m for m, _ in accepted}
    assert len(cases) == len(accepted)
    for msgid, raw in accepted:
        ref = Path(rows[msgid])
        ref = ref if ref.is_absolute() else tmp_path / ref
        assert ref.read_bytes() == raw and ref.name == hashlib.sha256(raw).hexdigest()


async def test_a_10_mb_attachment_is_stored_and_one_over_the_limit_is_listed_not_lost(hub):
    big = os.urandom(10 * 1024 * 1024)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Bau <bau@example.org>", OURS, "Pläne"
    msg["Message-ID"] = "<ten-mb@example.org>"
    msg.set_content("Anbei die Pläne und ein Video.")
    msg.add_attachment(big, maintype="application", subtype="pdf", filename="plaene.pdf")
    msg.add_attachment(b"v" * (10 * 1024 * 1024 + 1), maintype="video", subtype="mp4", filename="video.mp4")
    raw = crlf(msg.as_bytes())
    code, text, _ = await send(hub.port, raw)
    assert code == 250, text
    (row,) = hub.inbound()
    (att,) = hub.rows(attachment_t, attachment_t.c.message_id == row["id"])
    assert att["filename"] == "plaene.pdf" and att["sha256"] == hashlib.sha256(big).hexdigest()
    assert "video.mp4" in row["text"] and "nicht übernommen" in row["text"]
    assert Path(row["raw_ref"]).read_bytes() == raw  # the video is in the kept original
