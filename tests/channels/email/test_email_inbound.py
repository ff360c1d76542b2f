"""Inbound e-mail against a real aiosmtpd listener on 127.0.0.1, real smtplib/aiosmtplib clients, a real
SQLite database. (The IMAP poller runs against a real Dovecot in test_email_imap.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from queue_support import sqlite_engine
from sqlalchemy import select, update

from channels.email.listener import AckWriter, EmailIntake, EmailServer
from channels.email.settings import EmailSettings
from hub.db import make_engine
from hub.http.ratelimit import IntakeLimits, IntakeLimitSettings
from hub.queue.cases import attachment_t, audit_t, case_t, message_t
from hub.queue.intake import IntakeWriter
from hub.queue.outbox import enqueue
from hub.queue.settings import QueueSettings

MAIL = Path(__file__).resolve().parents[2] / "fixtures" / "mail"
OURS = "anliegen@buergerservice.example.de"
OUR_ID = "<Xk3mP9qR2sT5vW8y.5f2a9c1e7b3d4a60@citizen-hub>"
TOKEN = "Xk3mP9qR2sT5vW8y"
REPORTS = {"dsn_bounce_postfix.eml", "dsn_delayed_postfix.eml", "mdn_read_receipt_outlook.eml"}
#: Automatic answers (out-of-office, vacation, auto-responders) and list mail: accepted, but with no open
#: case to thread onto (the corpus runs on an empty hub) nothing is stored (see test_email_autoreply.py).
DROPPED = {"exchange_out_of_office.eml", "newsletter_list_bulk.eml", "gmail_vacation_responder.eml",
           "outlook_com_automatic_reply_en.eml", "thunderbird_vacation_filter.eml", "sieve_vacation_dovecot.eml",
           "autoresponder_x_autorespond.eml"}


def crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


def fixture(name: str) -> bytes:
    return crlf((MAIL / name).read_bytes())


def simple_mail(subject: str, text: str, *, sender: str = "max.muster@example.org", msgid: str | None = None,
                headers: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Max Muster <{sender}>"
    msg["To"] = OURS
    msg["Subject"] = subject
    msg["Message-ID"] = msgid or f"<{os.urandom(8).hex()}@example.org>"
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(text)
    return crlf(msg.as_bytes())


@dataclass
class Hub:
    engine: object
    settings: EmailSettings
    queue: QueueSettings
    writer: IntakeWriter
    acks: AckWriter
    intake: EmailIntake
    server: EmailServer

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self) -> None:
        await self.server.stop()
        await asyncio.to_thread(self.writer.stop)
        await asyncio.to_thread(self.intake.close)

    def rows(self, table, *where):
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(table).where(*where).order_by(table.c.id)).mappings()]

    def inbound(self):
        return self.rows(message_t, message_t.c.direction == "in")

    def acks_sent(self):
        self.acks.flush()
        return self.rows(message_t, message_t.c.kind == "ack")


async def start_hub(engine, tmp_path, *, lmtp: bool = False, writer: IntakeWriter | None = None,
                    limits: IntakeLimits | None = None, **kw) -> Hub:
    settings = EmailSettings(address=OURS, accepted_domains=["Rathaus.Example.DE"], raw_mail_dir=str(tmp_path / "mail"),
                             hostname="hub.test", **kw)
    queue = QueueSettings(attachment_dir=str(tmp_path / "att"))
    writer = writer or IntakeWriter(engine, queue)
    writer.start()
    acks = AckWriter(engine, queue)
    # The corpus comes from few senders; the limits have their own tests (test_email_limits.py).
    limits = limits or IntakeLimits(IntakeLimitSettings(sender_burst=10_000, client_burst=10_000))
    intake = EmailIntake(writer, settings, acks=acks, limits=limits)
    server = await EmailServer(intake, settings, host="127.0.0.1", port=0, lmtp=lmtp).start()
    return Hub(engine, settings, queue, writer, acks, intake, server)


@pytest.fixture
def engine(tmp_path):
    engine = sqlite_engine(tmp_path)
    yield engine
    engine.dispose()


@pytest.fixture
async def hub(engine, tmp_path):
    h = await start_hub(engine, tmp_path)
    yield h
    await h.stop()


def transaction(port: int, raw: bytes, *, mail_from: str = "max.muster@example.org", rcpts=(OURS,),
                lmtp: bool = False, size: bool = True) -> tuple[int, str, dict[str, int]]:
    """One SMTP (or LMTP) transaction with smtplib; (code, text) of the last reply and refused recipients."""
    client = smtplib.LMTP("127.0.0.1", port) if lmtp else smtplib.SMTP("127.0.0.1", port, timeout=60)
    refused: dict[str, int] = {}
    try:
        client.ehlo("client.example.org")
        options = [f"SIZE={len(raw)}"] if size and client.has_extn("size") else []
        code, text = client.mail(mail_from, options)
        if code != 250:
            return code, text.decode(), refused
        for rcpt in rcpts:
            rc, rt = client.rcpt(rcpt)
            if rc != 250:
                refused[rcpt] = rc
                code, text = rc, rt
        if len(refused) == len(rcpts):
            return code, text.decode(), refused
        code, text = client.data(raw)
        return code, text.decode(), refused
    finally:
        try:
            client.quit()
        except smtplib.SMTPException:
            pass


async def send(port: int, raw: bytes, **kw) -> tuple[int, str, dict[str, int]]:
    return await asyncio.to_thread(transaction, port, raw, **kw)


# -- the corpus through the listener ---------------------------------------------------------------------


async def test_every_corpus_mail_gets_250_after_it_is_stored_with_its_original(hub):
    names = sorted(p.name for p in MAIL.glob("*.eml"))
    for name in names:
        raw = fixture(name)
        mail_from = "<>" if name.startswith(("dsn_", "mdn_")) else "sender@example.org"
        code, text, _ = await send(hub.port, raw, mail_from=mail_from)
        assert code == 250, f"{name}: {code} {text}"
        if name in REPORTS:
            continue
        if name in DROPPED:
            assert "not taken as a request" in text, f"{name}: {text}"
            continue
        # The 250 came after the commit: a fresh connection sees the message now.
        match = re.search(r"stored as message (\d+)", text)
        assert match, f"{name}: {text}"
        (row,) = hub.rows(message_t, message_t.c.id == int(match.group(1)))
        assert Path(row["raw_ref"]).read_bytes() == raw, name  # the original, byte for byte
        assert hashlib.sha256(raw).hexdigest() == Path(row["raw_ref"]).name
    stored = hub.inbound()
    assert len(stored) == len(names) - len(REPORTS) - len(DROPPED)
    assert not any(r["text"].strip() == "" and r["subject"] is None for r in stored)


async def test_attachments_and_inline_images_are_stored(hub):
    code, text, _ = await send(hub.port, fixture("apple_mail_inline_image.eml"))
    assert code == 250
    mid = int(re.search(r"message (\d+)", text).group(1))
    (att,) = hub.rows(attachment_t, attachment_t.c.message_id == mid)
    assert (att["filename"], att["content_type"], att["size_bytes"]) == ("IMG_4711.jpeg", "image/jpeg", 332)
    stored = Path(hub.queue.attachment_dir) / att["sha256"][:2] / att["sha256"]
    assert stored.read_bytes().startswith(b"\xff\xd8")


async def test_a_10_mb_attachment_arrives_whole(hub):
    payload = random.Random(1).randbytes(10_000_000)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Bauherr <bau@example.org>", OURS, "Bauantrag mit Plänen"
    msg["Message-ID"] = "<bauantrag-10mb@example.org>"
    msg.set_content("Anbei die Pläne für den Bauantrag.")
    msg.add_attachment(payload, maintype="application", subtype="pdf", filename="plaene.pdf")
    raw = crlf(msg.as_bytes())
    assert len(raw) > 13_000_000  # base64 on the wire
    response = await aiosmtplib.send(raw, sender="bau@example.org", recipients=[OURS], hostname="127.0.0.1",
                                     port=hub.port, timeout=120)
    assert response[1].startswith("2.0.0 Ok: stored as message")
    (row,) = hub.rows(message_t, message_t.c.external_id == "<bauantrag-10mb@example.org>")
    (att,) = hub.rows(attachment_t, attachment_t.c.message_id == row["id"])
    assert att["size_bytes"] == 10_000_000
    assert att["sha256"] == hashlib.sha256(payload).hexdigest()


async def test_an_attachment_over_the_limit_is_left_out_and_the_text_says_so(engine, tmp_path):
    h = await start_hub(engine, tmp_path, max_attachment_bytes=1000)
    try:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "a@example.org", OURS, "Foto"
        msg.set_content("Foto vom Schlagloch.")
        msg.add_attachment(b"\xff\xd8" + b"x" * 5000, maintype="image", subtype="jpeg", filename="loch.jpg")
        code, _, _ = await send(h.port, crlf(msg.as_bytes()))
        assert code == 250
        (row,) = h.inbound()
        assert "loch.jpg" in row["text"] and "nicht übernommen" in row["text"]
        assert h.rows(attachment_t) == []
        assert b"loch.jpg" in Path(row["raw_ref"]).read_bytes()  # nothing is lost: the original is kept
    finally:
        await h.stop()


# -- refusals ----------------------------------------------------------------------------------------------


async def test_mail_for_other_domains_is_refused_550_no_relay(hub):
    code, text, refused = await send(hub.port, simple_mail("x", "relay me"), rcpts=("victim@example.com",))
    assert code == 550 and text.startswith("5.7.1") and refused == {"victim@example.com": 550}
    code, _, refused = await send(hub.port, simple_mail("Frage", "Hallo"), rcpts=("victim@example.com", OURS))
    assert code == 250 and refused == {"victim@example.com": 550}
    # Accepted domains are matched without regard to case; so is our own.
    code, _, refused = await send(hub.port, simple_mail("Frage 2", "Hallo"), rcpts=("buergeramt@rathaus.example.de",))
    assert code == 250 and not refused
    code, _, _ = await send(hub.port, simple_mail("Frage 3", "Hallo"), rcpts=("Anliegen@BUERGERSERVICE.example.de",))
    assert code == 250
    # A look-alike domain is not ours.
    code, _, _ = await send(hub.port, simple_mail("x", "y"), rcpts=("a@buergerservice.example.de.evil.example",))
    assert code == 550
    assert len(hub.inbound()) == 3


async def test_a_message_over_the_size_limit_gets_552(engine, tmp_path):
    h = await start_hub(engine, tmp_path, max_message_bytes=20_000)
    try:
        big = simple_mail("groß", "x" * 30_000)
        code, _, _ = await send(h.port, big)  # announced with SIZE=: refused at MAIL FROM
        assert code == 552
        code, _, _ = await send(h.port, big, size=False)  # not announced: refused after DATA
        assert code == 552
        code, _, _ = await send(h.port, simple_mail("klein", "passt"))
        assert code == 250
        assert [r["subject"] for r in h.inbound()] == ["klein"]
    finally:
        await h.stop()


async def test_storage_trouble_answers_451_and_the_retry_is_stored_once(engine, tmp_path):
    h = await start_hub(engine, tmp_path)
    try:
        raw = simple_mail("Reisepass", "Wie lange dauert ein Reisepass?", msgid="<retry-1@example.org>")
        await asyncio.to_thread(h.writer.stop)  # the intake writer is down
        code, text, _ = await send(h.port, raw)
        assert code == 451 and text.startswith("4.3.0")
        assert h.inbound() == []
        h.writer.start()  # the sending server tries again later
        assert (await send(h.port, raw))[0] == 250
        code, text, _ = await send(h.port, raw)  # a duplicate delivery is acknowledged, not stored twice
        assert code == 250 and "already stored" in text
        assert len(h.rows(message_t, message_t.c.external_id == "<retry-1@example.org>")) == 1
    finally:
        await h.stop()


async def test_a_database_failure_answers_451_not_250(tmp_path):
    broken = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")  # no schema: every write fails
    h = await start_hub(broken, tmp_path)
    try:
        code, _, _ = await send(h.port, simple_mail("x", "y"))
        assert code == 451
        assert (await send(h.port, simple_mail("x", "y")))[0] == 451  # and the listener still answers
    finally:
        await h.stop()
        broken.dispose()


async def test_mangled_mail_never_crashes_the_listener_and_every_250_is_stored(hub):
    rng = random.Random(11)
    files = sorted(MAIL.glob("*.eml"))
    accepted: list[bytes] = []
    dropped: list[bytes] = []
    duplicates: list[int] = []
    for i in range(40):
        raw = bytearray(crlf(rng.choice(files).read_bytes()))
        for _ in range(rng.randint(1, 20)):
            pos = rng.randrange(len(raw))
            if rng.random() < 0.6:
                raw[pos] = rng.choice(b"\x00\x7f\x80\xff=?<>:;\t ")
            else:
                del raw[pos : pos + rng.randint(1, 80)]
        raw = bytearray(crlf(bytes(raw)).rstrip(b"\r\n") + b"\r\n")  # smtplib would add the last CRLF
        raw += b"\r\nMessage-ID: <ignored>\r\n" if i % 7 == 0 else b""
        code, text, _ = await send(hub.port, bytes(raw), mail_from="<>" if i % 5 == 0 else "x@example.org")
        assert code in (250, 451, 500, 552, 554), (i, code, text)
        if code == 250 and text.startswith("2.0.0 Ok: stored as message"):
            accepted.append(bytes(raw))
        elif code == 250 and "already stored" in text:  # the same Message-ID again: the first copy stands
            duplicates.append(int(text.rsplit(" ", 1)[1]))
        elif code == 250 and "not taken as a request" in text:  # a mangled out-of-office or newsletter
            dropped.append(bytes(raw))
        elif code == 250:
            assert text == "2.0.0 Ok: report recorded", text  # a mangled bounce is still a bounce
    assert len(accepted) > 20 and duplicates
    # Nothing that got a 250 is missing: every one has its row and its original.
    refs = {r["raw_ref"] for r in hub.inbound()}
    for raw in accepted:
        digest = hashlib.sha256(raw).hexdigest()
        assert any(ref.endswith(digest) for ref in refs)
    assert set(duplicates) <= {r["id"] for r in hub.inbound()}
    assert (await send(hub.port, simple_mail("noch da?", "ja")))[0] == 250


async def test_concurrent_clients_are_all_stored(hub):
    async def one(i: int) -> str:
        _, message = await aiosmtplib.send(simple_mail(f"Anfrage {i}", f"Text {i}", msgid=f"<c{i}@example.org>"),
                                           sender=f"b{i}@example.org", recipients=[OURS], hostname="127.0.0.1",
                                           port=hub.port, timeout=60)
        return message

    replies = await asyncio.gather(*(one(i) for i in range(60)))
    assert all(r.startswith("2.0.0 Ok: stored") for r in replies)
    assert len(hub.inbound()) == 60
    assert len({r["case_id"] for r in hub.inbound()}) == 60


# -- threading ---------------------------------------------------------------------------------------------


def answer_in_case(h: Hub, case_id: int, external_id: str, token: str | None = None) -> None:
    """What an agent's answer leaves in the database: an outbound message with our Message-ID."""
    with h.engine.begin() as conn:
        if token:
            conn.execute(update(case_t).where(case_t.c.id == case_id).values(token=token))
        case = dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())
        mid = enqueue(conn, case, text="Bitte vereinbaren Sie einen Termin.", author="agent:test")
        conn.execute(update(message_t).where(message_t.c.id == mid).values(external_id=external_id, send_state="sent"))


async def test_replies_join_their_case_by_references_or_token_and_new_subjects_open_new_cases(hub):
    # Petra writes; an agent answers with our Message-ID; her Outlook reply references it.
    first = simple_mail("Reisepass", "Ich brauche einen Reisepass.", sender="petra.schulz@outlook.de")
    assert (await send(hub.port, first))[0] == 250
    (case,) = hub.rows(case_t)
    answer_in_case(hub, case["id"], OUR_ID, token=TOKEN)
    assert (await send(hub.port, fixture("outlook_reply_de.eml")))[0] == 250
    reply = hub.rows(message_t, message_t.c.external_id.like("<AM9PR07MB7123%"))[0]
    assert reply["case_id"] == case["id"]
    assert "Tochter" in reply["text"] and "Am Markt 1" not in reply["text"]

    # Only the token in the subject, no references: joins too.
    tagged = simple_mail(f"Nachtrag [#{TOKEN}]", "Noch eine Frage.", sender="petra.schulz@outlook.de")
    assert (await send(hub.port, tagged))[0] == 250
    # The same citizen with a new subject and no reference: a new concern, a new case.
    other = simple_mail("Hundesteuer", "Wie melde ich meinen Hund an?", sender="petra.schulz@outlook.de")
    assert (await send(hub.port, other))[0] == 250
    # Someone else quoting the token does not get into her case.
    stranger = simple_mail(f"Re: [#{TOKEN}]", "Ich will mitlesen.", sender="mallory@example.net")
    assert (await send(hub.port, stranger))[0] == 250

    by_subject = {m["subject"]: m["case_id"] for m in hub.inbound()}
    assert by_subject[f"Nachtrag [#{TOKEN}]"] == case["id"]
    assert by_subject["Hundesteuer"] != case["id"]
    assert by_subject[f"Re: [#{TOKEN}]"] not in (case["id"], by_subject["Hundesteuer"])
    assert len(hub.rows(case_t)) == 3


async def test_a_reply_to_the_citizens_own_mail_joins_by_references(hub):
    assert (await send(hub.port, fixture("thunderbird_qp_flowed_signature.eml")))[0] == 250
    assert (await send(hub.port, fixture("thunderbird_inline_reply.eml")))[0] == 250
    cases = {m["case_id"] for m in hub.inbound()}
    assert len(cases) == 1
    texts = [m["text"] for m in hub.inbound()]
    assert texts[1].startswith("Ja, den Mietvertrag") and "Rentenbescheid" not in texts[1]


# -- delivery reports ----------------------------------------------------------------------------------------


async def test_a_bounce_marks_our_message_failed_instead_of_opening_a_case(hub):
    assert (await send(hub.port, simple_mail("Reisepass", "Frage", sender="m.mueller@example.org")))[0] == 250
    (case,) = hub.rows(case_t)
    answer_in_case(hub, case["id"], OUR_ID)
    answer_in_case(hub, case["id"], "<Qw7eR4tY1uI8oP2a.9d8c7b6a5f4e3d21@citizen-hub>")

    code, text, _ = await send(hub.port, fixture("dsn_bounce_postfix.eml"), mail_from="<>")
    assert code == 250 and "report" in text
    code, _, _ = await send(hub.port, fixture("dsn_delayed_postfix.eml"), mail_from="<>")
    assert code == 250
    code, _, _ = await send(hub.port, fixture("mdn_read_receipt_outlook.eml"))
    assert code == 250

    out = {m["external_id"]: m for m in hub.rows(message_t, message_t.c.direction == "out")}
    bounced = out[OUR_ID]
    assert bounced["send_state"] == "failed" and "5.1.1" in bounced["last_error"]
    delayed = out["<Qw7eR4tY1uI8oP2a.9d8c7b6a5f4e3d21@citizen-hub>"]
    assert delayed["send_state"] == "sent" and "delayed" in delayed["last_error"]
    assert len(hub.rows(case_t)) == 1 and len(hub.inbound()) == 1  # no case, no message from the reports
    actions = [a["action"] for a in hub.rows(audit_t, audit_t.c.case_id == case["id"])]
    assert "send_bounced" in actions


# -- acknowledgements ----------------------------------------------------------------------------------------


async def test_a_new_case_is_acknowledged_in_the_citizens_language(hub):
    assert (await send(hub.port, fixture("base64_body_webde.eml")))[0] == 250
    assert (await send(hub.port, fixture("outlook_new_en.eml")))[0] == 250
    acks = hub.acks_sent()
    assert [a["recipient"] for a in acks] == ["ayse.yilmaz@web.de", "james.oconnor@hotmail.com"]
    cases = {c["id"]: c for c in hub.rows(case_t)}
    de, en = acks
    token = cases[de["case_id"]]["token"]
    # Nothing the sender wrote comes back (backscatter): no subject, no display name.
    assert de["subject"] == f"Eingangsbestätigung [#{token}]"
    assert token in de["text"] and de["text"].startswith("Guten Tag,\n") and "Yılmaz" not in de["text"]
    assert en["subject"].startswith("We have received your message [#") and "reference" in en["text"]
    assert all(a["send_state"] == "pending" and a["channel"] == "email" and a["direction"] == "out" for a in acks)


async def test_robots_lists_bounces_our_own_address_and_follow_ups_get_no_acknowledgement(hub):
    no_ack = [
        ("exchange_out_of_office.eml", "x@example.org"),
        ("newsletter_list_bulk.eml", "bounce@mcdlv.net"),
        ("dsn_bounce_postfix.eml", "<>"),
    ]
    for name, mail_from in no_ack:
        assert (await send(hub.port, fixture(name), mail_from=mail_from))[0] == 250
    own = simple_mail("Schleife?", "Von uns selbst", sender=OURS)
    daemon = simple_mail("Hallo", "Text", sender="mailer-daemon@example.org")
    noreply = simple_mail("Ihr Termin", "Text", sender="no-reply@termine.example.org")
    null_sender = simple_mail("Bitte antworten", "Text", sender="person@example.org")
    for raw in (own, daemon, noreply):
        assert (await send(hub.port, raw))[0] == 250
    assert (await send(hub.port, null_sender, mail_from="<>"))[0] == 250
    assert hub.acks_sent() == []
    # Stored all the same, so nothing is lost: the robots' and the null sender's mails. Not stored: the
    # bounce (a report), the out-of-office (an automatic answer to no open case), the newsletter (list
    # mail) and the mail from our own address (a loop) — all accepted with 250 and dropped.
    assert len(hub.inbound()) == 3

    first = simple_mail("Wohngeld", "Frage", sender="karl@example.org", msgid="<k1@example.org>")
    assert (await send(hub.port, first))[0] == 250
    follow = simple_mail("Re: Wohngeld", "Noch was", sender="karl@example.org",
                         headers={"In-Reply-To": "<k1@example.org>"})
    assert (await send(hub.port, follow))[0] == 250
    assert [a["recipient"] for a in hub.acks_sent()] == ["karl@example.org"]


async def test_acknowledgements_are_rate_limited_per_sender(engine, tmp_path):
    h = await start_hub(engine, tmp_path, ack_rate_limit=2)
    try:
        for i in range(4):
            assert (await send(h.port, simple_mail(f"Thema {i}", "Text", sender="viel@example.org")))[0] == 250
        assert (await send(h.port, simple_mail("Anderes", "Text", sender="wenig@example.org")))[0] == 250
        recipients = [a["recipient"] for a in h.acks_sent()]
        assert recipients.count("viel@example.org") == 2 and recipients.count("wenig@example.org") == 1
        assert len(h.rows(case_t)) == 5  # every mail became a case
    finally:
        await h.stop()


async def test_an_acknowledgement_never_goes_to_reply_to(hub):
    """Backscatter replayed: a mail From one address with Reply-To a stranger and a spam subject."""
    spam = simple_mail("Billige Uhren unter www.spam.example", "Hallo", sender="angreifer@example.org",
                       headers={"Reply-To": "opfer@example.net"})
    assert (await send(hub.port, spam, mail_from="angreifer@example.org"))[0] == 250
    (ack,) = hub.acks_sent()
    assert ack["recipient"] == "angreifer@example.org", "the From address, never the Reply-To"
    assert "spam" not in ack["subject"].lower() and "spam" not in ack["text"].lower(), "nothing is echoed"
    assert "Max Muster" not in ack["text"]  # nor the display name
    (case,) = hub.rows(case_t)
    assert case["contact_email"] == "opfer@example.net"  # an agent's answer may go there: a person decides


async def test_acknowledgements_are_limited_globally_as_well_as_per_address(engine, tmp_path):
    h = await start_hub(engine, tmp_path, ack_rate_limit=5, ack_global_limit=3)
    try:
        for i in range(6):  # a flood with a new forged sender each time
            assert (await send(h.port, simple_mail(f"Thema {i}", "Text", sender=f"f{i}@example.org")))[0] == 250
        assert len(h.acks_sent()) == 3
        assert len(h.rows(case_t)) == 6, "every mail became a case all the same"
    finally:
        await h.stop()


# -- LMTP ------------------------------------------------------------------------------------------------


async def test_lmtp_answers_per_recipient_and_refuses_relaying(engine, tmp_path):
    h = await start_hub(engine, tmp_path, lmtp=True)
    try:
        code, text, refused = await send(h.port, fixture("gmail_forward_inline.eml"), lmtp=True,
                                         rcpts=(OURS, "buergeramt@rathaus.example.de", "x@example.com"))
        assert code == 250 and "stored as message" in text
        assert refused == {"buergeramt@rathaus.example.de": 452, "x@example.com": 550}
        # The client delivers the deferred recipient in its own transaction: the same mail, stored once.
        code, text, _ = await send(h.port, fixture("gmail_forward_inline.eml"), lmtp=True,
                                   rcpts=("buergeramt@rathaus.example.de",))
        assert code == 250 and "already stored" in text
        assert len(h.inbound()) == 1
        with pytest.raises(smtplib.SMTPHeloError):  # LMTP speaks LHLO, not EHLO
            await asyncio.to_thread(_ehlo, h.port)
    finally:
        await h.stop()


def _ehlo(port: int) -> None:
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    try:
        client.ehlo_or_helo_if_needed()
    finally:
        client.close()


# The IMAP poller is tested against a real Dovecot server in test_email_imap.py.


async def test_unusual_smtp_paths_still_work(hub):
    # A quoted local part and the null path go through aiosmtpd's full parser, plain ones through ours.
    code, _, refused = await send(hub.port, simple_mail("Quoted", "Text"), mail_from="<>",
                                  rcpts=('"anliegen team"@buergerservice.example.de',))
    assert code == 250 and not refused
    code, _, refused = await send(hub.port, simple_mail("Plain", "Text"), mail_from="<a.b+c@example.org>",
                                  rcpts=("<x@example.com>",))
    assert code == 550 and refused == {"<x@example.com>": 550}


# -- the command line ----------------------------------------------------------------------------------------

CLI = """
import argparse, sys
from channels.email import cli as cli_email
parser = argparse.ArgumentParser()
cli_email.register(parser.add_subparsers(dest="cmd"))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def test_email_serve_runs_the_listener_until_terminated(tmp_path):
    import signal
    import subprocess
    import sys

    db = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    env = {**os.environ, "CITIZEN_HUB_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    proc = subprocess.Popen([sys.executable, "-c", CLI, "email", "serve", "--db", db, "--host", "127.0.0.1",
                             "--port", "0"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        while line and "listener on" not in line:
            line = proc.stderr.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        code, text, _ = transaction(port, simple_mail("Per CLI", "Hallo"), rcpts=("anliegen@hub.localhost",))
        assert code == 250 and "stored as message" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    engine = make_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(select(message_t.c.direction, message_t.c.kind).order_by(message_t.c.id)).all()
    assert [tuple(r) for r in rows] == [("in", "request"), ("out", "ack")]  # stored, and acknowledged
    engine.dispose()
    assert any((tmp_path / "var" / "mail").rglob("*"))  # the raw mail, under the default directory


def test_poll_imap_without_a_mailbox_is_a_usage_error(tmp_path):
    import argparse

    from channels.email import cli as cli_email
    from hub.cli import UsageError

    parser = argparse.ArgumentParser()
    cli_email.register(parser.add_subparsers(dest="cmd"))
    (tmp_path / "none.toml").write_text("")
    args = parser.parse_args(["email", "poll-imap", "--once", "--config", str(tmp_path / "none.toml"),
                              "--db", f"sqlite:///{tmp_path / 'x.sqlite3'}"])
    with pytest.raises(UsageError, match="imap_host is empty"):
        args.func(args)
