"""Outbound e-mail: message building, the adapter against a real aiosmtpd relay (plain, STARTTLS, TLS, AUTH),
retries through the outbox, and the whole loop mail → acknowledgement → reply → answer."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy

import pytest
from aiosmtpd.smtp import SMTP, AuthResult
from conftest import require_component
from pydantic import ValidationError
from queue_support import sqlite_engine
from sqlalchemy import select, update
from test_email_inbound import OURS, send, simple_mail, start_hub

from channels.email.outbound import (
    AckRateLimiter,
    EmailAdapter,
    ack_language,
    build_email_adapter,
    build_message,
    render_ack,
)
from channels.email.parse import DroppedAttachment
from channels.email.settings import EmailSettings, email_settings
from hub.config import ConfigError
from hub.queue.adapters import ChannelAdapter, OutboundMessage, load_adapters
from hub.queue.cases import case_t, message_t
from hub.queue.intake import write_requests
from hub.queue.outbox import Dispatcher, enqueue
from hub.queue.requests import InboundRequest
from hub.queue.settings import QueueSettings


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    content: bytes
    tls: bool
    login: bytes | None

    @property
    def message(self):
        return message_from_bytes(self.content, policy=email_policy.default)


@dataclass
class Sink:
    """The relay: accepts (or refuses, as told) and keeps what it got."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    received: list[Received] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        login = session.auth_data.login if session.authenticated else None
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                      session.ssl is not None, login))
        return "250 2.0.0 Ok: queued as 4VtQ2K1Fz9z9sWR"


class Relay:
    def __init__(self, sink: Sink, server: asyncio.base_events.Server) -> None:
        self.sink, self.server = sink, server
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_relay(sink: Sink, *, tls: ssl.SSLContext | None = None, implicit_tls: ssl.SSLContext | None = None,
                      users: dict[bytes, bytes] | None = None, auth_require_tls: bool = False) -> Relay:
    loop = asyncio.get_running_loop()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = users is not None and users.get(auth_data.login) == auth_data.password
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def factory():
        return SMTP(sink, hostname="relay.test", tls_context=tls, loop=loop,
                    authenticator=authenticator if users is not None else None, auth_require_tls=auth_require_tls)

    return Relay(sink, await loop.create_server(factory, "127.0.0.1", 0, ssl=implicit_tls))


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory) -> ssl.SSLContext:
    require_component(shutil.which("openssl") is not None, "openssl is not installed (needed for a test certificate)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


def settings(port: int, **kw) -> EmailSettings:
    values = dict(address=OURS, display_name="Bürgerservice Bad Segeberg", smtp_host="127.0.0.1", smtp_port=port,
                  smtp_timeout_seconds=10)
    return EmailSettings(**{**values, **kw})


def outbound(**kw) -> OutboundMessage:
    values = dict(message_id=7, case_id=3, case_token="Xk3mP9qR2sT5vW8y", channel="email", kind="reply",
                  recipient="petra.schulz@outlook.de", subject="Ihr Anliegen [#Xk3mP9qR2sT5vW8y]",
                  text="Guten Tag Frau Schulz,\n\nbitte bringen Sie ein biometrisches Passfoto mit. Gebühr: 70 €.\n",
                  external_id="<Xk3mP9qR2sT5vW8y.5f2a9c1e7b3d4a60@citizen-hub>",
                  in_reply_to=("<first@outlook.com>", "<second@outlook.com>"))
    values.update(kw)
    return OutboundMessage(**values)


# -- building -----------------------------------------------------------------------------------------------


def test_an_answer_is_threaded_and_not_marked_automatic():
    msg = build_message(outbound(), settings(25), now=datetime(2024, 6, 3, 14, 40, tzinfo=UTC))
    assert msg["Message-ID"] == "<Xk3mP9qR2sT5vW8y.5f2a9c1e7b3d4a60@citizen-hub>"
    assert msg["In-Reply-To"] == "<second@outlook.com>"
    assert msg["References"] == "<first@outlook.com> <second@outlook.com>"
    assert msg["Auto-Submitted"] is None and msg["X-Auto-Response-Suppress"] is None
    assert msg["From"].addresses[0].addr_spec == OURS
    assert msg["From"].addresses[0].display_name == "Bürgerservice Bad Segeberg"
    assert msg["Date"].datetime == datetime(2024, 6, 3, 14, 40, tzinfo=UTC)
    assert "70 €" in msg.get_content()


def test_an_acknowledgement_is_auto_submitted_and_the_subject_always_carries_the_token():
    msg = build_message(outbound(kind="ack", subject="Eingangsbestätigung", in_reply_to=()), settings(25))
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Subject"] == "Eingangsbestätigung [#Xk3mP9qR2sT5vW8y]"
    assert msg["In-Reply-To"] is None and msg["References"] is None
    no_id = build_message(outbound(external_id=None, subject=None), settings(25))
    assert no_id["Message-ID"].endswith("@buergerservice.example.de>")
    assert no_id["Subject"] == "Ihr Anliegen [#Xk3mP9qR2sT5vW8y]"


def test_ack_templates_in_german_and_english():
    subject, text = render_ack("de", token="Xk3mP9qR2sT5vW8y", sender="Bürgerservice")
    assert subject == "Eingangsbestätigung [#Xk3mP9qR2sT5vW8y]"  # the sender's subject is never echoed
    assert text.startswith("Guten Tag,\n") and "Xk3mP9qR2sT5vW8y" in text and "automatisch" in text
    assert "Anhänge" not in text and "Stand Ihres Anliegens" not in text
    subject, text = render_ack("en", token="Xk3mP9qR2sT5vW8y", sender="Citizen service",
                               status_url="https://buergerservice.example.de/status/Xk3mP9qR2sT5vW8y")
    assert subject == "We have received your message [#Xk3mP9qR2sT5vW8y]"
    assert text.startswith("Hello,") and "reference Xk3mP9qR2sT5vW8y" in text
    assert "https://buergerservice.example.de/status/Xk3mP9qR2sT5vW8y" in text
    assert ack_language("auto", "en") == "en" and ack_language("auto", None) == "de"
    assert ack_language("de", "en") == "de"


def test_an_ack_names_the_attachments_left_out_and_why():
    dropped = [DroppedAttachment("bauplan.pdf", 14_200_000, "größer als 10,5 MB"),
               DroppedAttachment("x" * 300 + ".zip", 10, "mehr als 20 Anhänge")]
    _subject, text = render_ack("de", token="Xk3mP9qR2sT5vW8y", sender="Bürgerservice", dropped=dropped)
    assert "Diese Anhänge haben wir nicht übernommen" in text
    assert "„bauplan.pdf“ (14,2 MB): größer als 10,5 MB" in text
    long_line = next(line for line in text.splitlines() if "mehr als 20 Anhänge" in line)
    assert len(long_line) < 140 and "…" in long_line  # a hostile file name is cut, not echoed whole


def test_ack_rate_limiter_counts_per_sender_within_the_window():
    now = [0.0]
    limiter = AckRateLimiter(2, 60, clock=lambda: now[0], max_senders=3)
    assert limiter.allow("a@x.de") and limiter.allow("A@X.DE")
    assert not limiter.allow("a@x.de")
    assert limiter.allow("b@x.de")
    now[0] = 61.0
    assert limiter.allow("a@x.de")
    for i in range(10):  # memory stays bounded by pruning expired senders
        now[0] += 100
        limiter.allow(f"s{i}@x.de")
    assert len(limiter._seen) <= 3
    assert not AckRateLimiter(0, 60).allow("a@x.de")


# -- settings ------------------------------------------------------------------------------------------------


def test_every_email_setting_has_a_default_and_a_description():
    for name, f in EmailSettings.model_fields.items():
        assert f.description and len(f.description) > 10, name
        assert not f.is_required(), name


def test_settings_validate_and_read_lists_from_the_environment():
    s = EmailSettings.model_validate({"accepted_domains": " Rathaus.Example.DE., kreis.example.de ",
                                      "address": "Anliegen@Stadt.Example.de"})
    assert s.accepted_domains == ["rathaus.example.de", "kreis.example.de"]
    assert s.domains() == {"stadt.example.de", "rathaus.example.de", "kreis.example.de"}
    with pytest.raises(ValidationError, match="exclude each other"):
        EmailSettings(smtp_tls=True, smtp_starttls=True)
    with pytest.raises(ValidationError, match="not an e-mail address"):
        EmailSettings(address="anliegen")
    with pytest.raises(ValidationError, match="smtp_username is empty"):
        EmailSettings(smtp_password="secret")
    assert email_settings(object()) == EmailSettings()


def test_a_bad_relay_config_fails_when_the_adapter_is_built():
    with pytest.raises(ConfigError, match="smtp_password is empty"):
        EmailAdapter(EmailSettings(smtp_username="hub"))
    with pytest.raises(ConfigError, match="smtp_host is empty"):
        EmailAdapter(EmailSettings(smtp_host=" "))
    adapters = load_adapters(None, {"email": "channels.email.outbound:build_email_adapter"})
    assert isinstance(adapters["email"], ChannelAdapter) and adapters["email"].name == "email"


# -- sending through a real relay -------------------------------------------------------------------------------


async def test_the_adapter_hands_a_threaded_mail_to_the_relay():
    relay = await start_relay(Sink())
    try:
        result = await EmailAdapter(settings(relay.port)).send(outbound())
        assert result.ok and "accepted by 127.0.0.1" in result.detail
        (got,) = relay.sink.received
        assert got.mail_from == OURS and got.rcpts == ["petra.schulz@outlook.de"]
        msg = got.message
        assert msg["Message-ID"] == "<Xk3mP9qR2sT5vW8y.5f2a9c1e7b3d4a60@citizen-hub>"
        assert msg["In-Reply-To"] == "<second@outlook.com>"
        assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
        assert "biometrisches Passfoto" in msg.get_content() and "70 €" in msg.get_content()
        assert not got.tls
    finally:
        await relay.close()


@pytest.mark.parametrize(
    "sink, temporary",
    [
        (Sink(rcpt_reply="450 4.2.1 Mailbox busy, try later"), True),
        (Sink(rcpt_reply="550 5.1.1 User unknown"), False),
        (Sink(data_reply="451 4.3.0 Local problem"), True),
        (Sink(data_reply="554 5.7.1 Message rejected as spam"), False),
    ],
)
async def test_relay_refusals_are_temporary_for_4xx_and_final_for_5xx(sink, temporary):
    relay = await start_relay(sink)
    try:
        result = await EmailAdapter(settings(relay.port)).send(outbound())
        assert not result.ok and result.temporary is temporary
        assert re.search(r"\b[45]\d\d\b", result.detail)
        assert sink.received == []
    finally:
        await relay.close()


async def test_an_unreachable_relay_is_a_temporary_failure_and_send_does_not_raise():
    relay = await start_relay(Sink())
    port = relay.port
    await relay.close()
    result = await EmailAdapter(settings(port)).send(outbound())
    assert not result.ok and result.temporary and "not reachable" in result.detail


async def test_smtp_auth_with_the_configured_login():
    relay = await start_relay(Sink(), users={b"hub": b"s3cret"})
    try:
        good = await EmailAdapter(settings(relay.port, smtp_username="hub", smtp_password="s3cret")).send(outbound())
        assert good.ok and relay.sink.received[0].login == b"hub"
        bad = await EmailAdapter(settings(relay.port, smtp_username="hub", smtp_password="wrong")).send(outbound())
        assert not bad.ok and bad.temporary and "login" in bad.detail
        assert len(relay.sink.received) == 1
    finally:
        await relay.close()


async def test_starttls_is_used_when_required_and_nothing_goes_out_in_clear_without_it(server_tls):
    relay = await start_relay(Sink(), tls=server_tls)
    plain = await start_relay(Sink())
    try:
        result = await EmailAdapter(settings(relay.port, smtp_starttls=True, smtp_validate_certs=False)).send(outbound())
        assert result.ok and relay.sink.received[0].tls
        # With certificate checks on, a self-signed relay is not trusted: retried, not sent.
        checked = await EmailAdapter(settings(relay.port, smtp_starttls=True)).send(outbound())
        assert not checked.ok and checked.temporary and len(relay.sink.received) == 1
        refused = await EmailAdapter(settings(plain.port, smtp_starttls=True, smtp_validate_certs=False)).send(outbound())
        assert not refused.ok and refused.temporary
        assert plain.sink.received == []
    finally:
        await relay.close()
        await plain.close()


async def test_starttls_then_auth_as_a_submission_relay_demands_it(server_tls):
    """Port-587 style: the relay offers AUTH only after STARTTLS; the password never crosses in clear."""
    relay = await start_relay(Sink(), tls=server_tls, users={b"hub": b"s3cret"}, auth_require_tls=True)
    try:
        login = dict(smtp_username="hub", smtp_password="s3cret", smtp_validate_certs=False)
        result = await EmailAdapter(settings(relay.port, smtp_starttls=True, **login)).send(outbound())
        assert result.ok, result.detail
        (got,) = relay.sink.received
        assert got.tls and got.login == b"hub"
        assert got.message["Message-ID"] == "<Xk3mP9qR2sT5vW8y.5f2a9c1e7b3d4a60@citizen-hub>"
        # Without STARTTLS in the config the relay offers no AUTH: retried later, nothing sent.
        clear = await EmailAdapter(settings(relay.port, **login)).send(outbound())
        assert not clear.ok and clear.temporary
        wrong = await EmailAdapter(settings(relay.port, smtp_starttls=True, **{**login, "smtp_password": "x"})
                                   ).send(outbound())
        assert not wrong.ok and wrong.temporary and "login" in wrong.detail
        assert len(relay.sink.received) == 1
    finally:
        await relay.close()


async def test_implicit_tls_with_auth(server_tls):
    # Every byte on this port is encrypted (aiosmtpd's auth_require_tls only knows STARTTLS, so it stays off).
    relay = await start_relay(Sink(), implicit_tls=server_tls, users={b"hub": b"s3cret"})
    try:
        result = await EmailAdapter(settings(relay.port, smtp_tls=True, smtp_validate_certs=False, smtp_username="hub",
                                             smtp_password="s3cret")).send(outbound())
        assert result.ok and relay.sink.received[0].login == b"hub"
        # The port speaks only TLS: without smtp_tls nothing gets through (and no password is sent).
        plain = await EmailAdapter(settings(relay.port, smtp_username="hub", smtp_password="s3cret",
                                            smtp_timeout_seconds=2)).send(outbound())
        assert not plain.ok and plain.temporary and len(relay.sink.received) == 1
    finally:
        await relay.close()


async def test_implicit_tls(server_tls):
    relay = await start_relay(Sink(), implicit_tls=server_tls)
    try:
        result = await EmailAdapter(settings(relay.port, smtp_tls=True, smtp_validate_certs=False)).send(outbound())
        assert result.ok and len(relay.sink.received) == 1
    finally:
        await relay.close()


async def test_no_mail_to_our_own_address_and_no_automatic_mail_to_robots():
    relay = await start_relay(Sink())
    try:
        adapter = EmailAdapter(settings(relay.port))
        for msg in (outbound(recipient=OURS.upper()), outbound(kind="ack", recipient="MAILER-DAEMON@example.org"),
                    outbound(kind="ack", recipient="noreply@example.org"), outbound(recipient=None),
                    outbound(recipient="not an address")):
            result = await adapter.send(msg)
            assert not result.ok and not result.temporary, msg.recipient
        assert relay.sink.received == []
        assert (await adapter.send(outbound(kind="reply", recipient="noreply@example.org"))).ok  # a person chose to
    finally:
        await relay.close()


# -- through the outbox ---------------------------------------------------------------------------------------


async def test_a_temporary_failure_is_retried_by_the_outbox_until_it_is_sent(tmp_path):
    engine = sqlite_engine(tmp_path)
    sink = Sink(data_reply="451 4.3.0 Try again later")
    relay = await start_relay(sink)
    try:
        (res,) = write_requests(engine, [InboundRequest(channel="email", external_id="<q@example.org>",
                                                        text="Frage", contact={"email": "q@example.org"})])
        with engine.begin() as conn:
            case = dict(conn.execute(select(case_t).where(case_t.c.id == res.case_id)).mappings().one())
            mid = enqueue(conn, case, text="Antwort", author="agent:test")
        dispatcher = Dispatcher(engine, {"email": EmailAdapter(settings(relay.port))}, QueueSettings())
        assert await dispatcher.run_once() == 1
        with engine.connect() as conn:
            row = conn.execute(select(message_t).where(message_t.c.id == mid)).mappings().one()
        assert row["send_state"] == "pending" and "451" in row["last_error"]
        assert row["next_attempt_at"] > datetime.now(UTC) + timedelta(seconds=60)
        assert await dispatcher.run_once() == 0  # not due yet

        sink.data_reply = None  # the relay recovers; time passes
        with engine.begin() as conn:
            conn.execute(update(message_t).where(message_t.c.id == mid).values(next_attempt_at=datetime.now(UTC)))
        assert await dispatcher.run_once() == 1
        with engine.connect() as conn:
            row = conn.execute(select(message_t).where(message_t.c.id == mid)).mappings().one()
        assert row["send_state"] == "sent" and row["send_attempts"] == 2
        (got,) = sink.received
        assert got.message["Message-ID"] == row["external_id"]
        assert got.message["In-Reply-To"] == "<q@example.org>"
    finally:
        await relay.close()
        engine.dispose()


async def test_mail_in_acknowledgement_out_reply_joins_answer_threads(tmp_path):
    engine = sqlite_engine(tmp_path)
    hub = await start_hub(engine, tmp_path)
    relay = await start_relay(Sink())
    try:
        dispatcher = Dispatcher(engine, {"email": build_email_adapter(_Cfg(settings(relay.port)))}, QueueSettings())
        first = simple_mail("Reisepass", "Wie beantrage ich einen Reisepass?", sender="petra@example.org",
                            msgid="<p1@example.org>")
        assert (await send(hub.port, first))[0] == 250
        await asyncio.to_thread(hub.acks.flush)
        assert await dispatcher.run_until_empty() == 1

        (ack,) = relay.sink.received
        msg = ack.message
        (case,) = hub.rows(case_t)
        # An automatic mail leaves with the null envelope sender (RFC 3834 section 3.3): no bounce loops.
        assert ack.rcpts == ["petra@example.org"] and ack.mail_from == "<>"
        assert msg["Auto-Submitted"] == "auto-replied"
        assert msg["Message-ID"].endswith("@hub.localhost>")  # fully qualified ([queue] message_id_domain)
        assert msg["In-Reply-To"] == "<p1@example.org>"
        assert f"[#{case['token']}]" in msg["Subject"] and case["token"] in msg.get_content()

        # Petra answers the acknowledgement: her mail refers to its Message-ID and joins the case.
        reply = simple_mail(f"Re: {msg['Subject']}", "Ich habe noch eine Frage zu den Gebühren.",
                            sender="petra@example.org", msgid="<p2@example.org>",
                            headers={"In-Reply-To": msg["Message-ID"], "References": f"<p1@example.org> {msg['Message-ID']}"})
        assert (await send(hub.port, reply))[0] == 250
        assert {m["case_id"] for m in hub.inbound()} == {case["id"]}
        assert len(hub.acks_sent()) == 1  # a follow-up is not acknowledged again

        # An agent answers: a person's mail, threaded to both of hers.
        with engine.begin() as conn:
            enqueue(conn, case, text="Der Reisepass kostet 70 €.", author="agent:anna")
        assert await dispatcher.run_until_empty() == 1
        answer = relay.sink.received[1].message
        assert relay.sink.received[1].mail_from == OURS  # a person's answer: bounces come back to us
        assert answer["Auto-Submitted"] is None
        assert answer["In-Reply-To"] == "<p2@example.org>"
        assert answer["References"] == "<p1@example.org> <p2@example.org>"
        assert answer.get_content().strip() == "Der Reisepass kostet 70 €."
    finally:
        await relay.close()
        await hub.stop()
        engine.dispose()


@dataclass
class _Cfg:
    """A settings object carrying only the [email] section (as the lead's Settings will)."""

    email: EmailSettings
