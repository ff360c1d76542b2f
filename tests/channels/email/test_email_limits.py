"""Issue 14, items 2 and 3 on the real SMTP listener: intake limits and hostile MIME structures.

* 1,000 mails from one address opened 1,000 cases. Replayed: every mail gets either 250 (stored) or
  ``451 4.7.1`` with the seconds to wait (the sending server keeps it), never a silent drop; per sender,
  per connecting address, and per From address when the envelope sender changes.
* a mail of 330,000 tiny MIME parts (13.7 MB) took 22 s and 433 MB. Replayed: the listener stores it
  with 250, parsing stops at ``[email] max_mime_parts`` (and nesting at ``max_mime_depth``), the raw mail
  is kept whole and the case's text says what was cut. The time is not asserted (no timed tests);
  ``bench/bench_email.py`` style figures are in the report.
"""

from __future__ import annotations

import asyncio
import smtplib
from email import message_from_bytes
from pathlib import Path

import pytest
from queue_support import sqlite_engine
from sqlalchemy import func, select
from test_email_inbound import OURS, send, simple_mail, start_hub

from channels.email.parse import MAX_PARTS, POLICY, _BoundedParser, parse_mail, parse_message
from hub.http.ratelimit import IntakeLimits, IntakeLimitSettings
from hub.queue.cases import case_t


@pytest.fixture
def engine(tmp_path):
    engine = sqlite_engine(tmp_path)
    yield engine
    engine.dispose()


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def flood(port: int, mails: list[tuple[str, bytes]]) -> list[tuple[int, str]]:
    """Many transactions on one connection, as a spamming client sends them: (code, text) of each."""
    out = []
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    try:
        client.ehlo("flood.example.org")
        for mail_from, raw in mails:
            code, text = client.mail(mail_from)
            if code == 250:
                client.rcpt(OURS)
                code, text = client.data(raw)
            else:
                client.rset()
            out.append((code, text.decode()))
    finally:
        client.quit()
    return out


async def test_one_sender_flooding_gets_451_4_7_1_after_its_burst_and_nothing_is_dropped(engine, tmp_path):
    limits = IntakeLimits(IntakeLimitSettings(sender_burst=10, sender_per_hour=30, client_burst=10_000))
    hub = await start_hub(engine, tmp_path, limits=limits)
    try:
        mails = [("spam@example.org", simple_mail(f"Nr. {n}", f"Anliegen {n}", sender="spam@example.org"))
                 for n in range(300)]
        replies = await asyncio.to_thread(flood, hub.port, mails)
    finally:
        await hub.stop()
    accepted = [r for r in replies if r[0] == 250]
    refused = [r for r in replies if r[0] != 250]
    assert len(accepted) == 10 and len(refused) == 290
    assert all(code == 451 and text.startswith("4.7.1 Too many messages from this sender; try again in ")
               for code, text in refused), refused[:3]
    assert _count(engine, case_t) == 10, "exactly the acknowledged mails are cases"


async def test_a_changing_envelope_sender_is_caught_by_the_from_address(engine, tmp_path):
    limits = IntakeLimits(IntakeLimitSettings(sender_burst=3, client_burst=10_000))
    hub = await start_hub(engine, tmp_path, limits=limits)
    try:
        codes = []
        for n in range(6):
            raw = simple_mail(f"Nr. {n}", "Anliegen", sender="same.from@example.org")
            code, text, _ = await send(hub.port, raw, mail_from=f"bounce-{n}@lists.example.org")
            codes.append(code)
            if code != 250:
                assert text.startswith("4.7.1 ")
        assert codes == [250, 250, 250, 451, 451, 451]
        assert _count(engine, case_t) == 3
    finally:
        await hub.stop()


async def test_one_client_address_is_limited_whatever_senders_it_uses(engine, tmp_path):
    limits = IntakeLimits(IntakeLimitSettings(client_burst=5, client_per_hour=60))
    hub = await start_hub(engine, tmp_path, limits=limits)
    try:
        mails = [(f"s{n}@example.org", simple_mail(f"Nr. {n}", "Anliegen", sender=f"s{n}@example.org"))
                 for n in range(8)]
        replies = await asyncio.to_thread(flood, hub.port, mails)
        assert [c for c, _ in replies] == [250] * 5 + [451] * 3
        assert replies[-1][1].startswith("4.7.1 Too many messages from this address")
    finally:
        await hub.stop()


async def test_a_repeat_of_a_stored_mail_costs_nothing(engine, tmp_path):
    limits = IntakeLimits(IntakeLimitSettings(sender_burst=2, client_burst=10_000))
    hub = await start_hub(engine, tmp_path, limits=limits)
    try:
        raw = simple_mail("Reisepass", "Anliegen", sender="retry@example.org", msgid="<same@example.org>")
        for _ in range(10):  # a sending server that never saw our 250 sends it again and again
            code, text, _ = await send(hub.port, raw, mail_from="retry@example.org")
            assert code == 250, text
        other = simple_mail("Ummeldung", "Anliegen 2", sender="retry@example.org")
        assert (await send(hub.port, other, mail_from="retry@example.org"))[0] == 250
        assert _count(engine, case_t) == 2
    finally:
        await hub.stop()


def test_an_imap_mail_over_the_limit_is_left_for_later(engine, tmp_path):
    """The poller has no SMTP answer to give: ``limited`` leaves the mail unseen (see ImapPoller)."""
    from channels.email.listener import EmailIntake
    from channels.email.settings import EmailSettings
    from hub.queue.intake import IntakeWriter
    from hub.queue.settings import QueueSettings

    writer = IntakeWriter(engine, QueueSettings(attachment_dir=str(tmp_path / "a")))
    writer.start()
    intake = EmailIntake(writer, EmailSettings(address=OURS, raw_mail_dir=str(tmp_path / "mail")),
                         limits=IntakeLimits(IntakeLimitSettings(sender_burst=1)))
    try:
        first = intake.accept_sync(simple_mail("a", "eins", sender="imap@example.org"))
        second = intake.accept_sync(simple_mail("b", "zwei", sender="imap@example.org"))
    finally:
        writer.stop()
        intake.close()
    assert first.status == "stored" and second.status == "limited" and not second.accepted
    assert second.smtp.startswith("451 4.7.1")


# -- hostile MIME structures ------------------------------------------------------------------------------


def many_parts(n: int) -> bytes:
    """The attack's shape: one multipart/mixed of ``n`` tiny text parts."""
    part = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    return (b"From: Eve <eve@example.org>\r\nTo: " + OURS.encode() + b"\r\nSubject: parts\r\n"
            b"Message-ID: <many-parts@example.org>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + part * n + b"--b--\r\n")


def deep(levels: int) -> bytes:
    head = (b"From: Eve <eve@example.org>\r\nTo: " + OURS.encode() + b"\r\nSubject: deep\r\n"
            b"Message-ID: <deep@example.org>\r\nMIME-Version: 1.0\r\n")
    body = b"Content-Type: text/plain\r\n\r\nganz unten\r\n"
    for n in range(levels):
        body = (f"Content-Type: multipart/mixed; boundary=b{n}\r\n\r\n--b{n}\r\n".encode() + body
                + f"--b{n}--\r\n".encode())
    return head + body


async def test_330000_tiny_parts_are_stored_with_what_was_read_and_a_note(engine, tmp_path):
    raw = many_parts(330_000)
    assert len(raw) > 11_000_000
    hub = await start_hub(engine, tmp_path, max_message_bytes=40_000_000)
    try:
        code, text, _ = await send(hub.port, raw, mail_from="eve@example.org")
        assert code == 250, text
        [message] = hub.inbound()
    finally:
        await hub.stop()
    assert f"mehr als {MAX_PARTS} MIME-Teile" in message["text"]
    assert "Die Original-E-Mail ist gespeichert" in message["text"]
    kept = Path(message["raw_ref"]).read_bytes()
    assert kept == raw, "the original is kept whole, byte for byte"


def test_the_parse_stops_at_the_part_limit_and_the_depth_limit():
    msg, cut, parts = parse_message(many_parts(330_000), max_parts=500)
    assert parts == 500 and "mehr als 500 MIME-Teile" in cut
    assert len(msg.get_payload()) == 499  # the root is the first of the 500 parts
    parsed = parse_mail(many_parts(330_000), max_parts=500)
    assert parsed.cut == cut and parsed.full_text.count("x") == 499
    assert "nur teilweise gelesen" in parsed.request_text()

    msg, cut, parts = parse_message(deep(5_000), max_depth=20)
    assert "tiefer als 20 Ebenen" in cut and parts == 21
    assert parse_mail(deep(5_000)).cut == cut  # no RecursionError, no fallback: a cut parse


def test_a_normal_mail_parses_exactly_as_the_standard_library_does():
    """The bounded parser relies on FeedParser._new_message/_msgstack: this fails if Python changes them."""
    for path in sorted((Path(__file__).resolve().parents[2] / "fixtures" / "mail").glob("*.eml")):
        raw = path.read_bytes()
        ours, cut, _ = parse_message(raw)
        theirs = message_from_bytes(raw, policy=POLICY)
        assert cut is None, path.name
        assert [p.get_content_type() for p in ours.walk()] == [p.get_content_type() for p in theirs.walk()]
        assert ours.as_bytes() == theirs.as_bytes(), path.name
    assert hasattr(_BoundedParser, "_new_message") and "_msgstack" in vars(_BoundedParser(
        policy=POLICY, max_parts=1, max_depth=1))


async def test_a_deeply_nested_mail_is_stored_with_a_note(engine, tmp_path):
    hub = await start_hub(engine, tmp_path)
    try:
        code, text, _ = await send(hub.port, deep(3_000), mail_from="eve@example.org")
        assert code == 250, text
        [message] = hub.inbound()
    finally:
        await hub.stop()
    assert "tiefer als 20 Ebenen verschachtelt" in message["text"]
    assert _count(engine, case_t) == 1
