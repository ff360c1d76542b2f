"""Channel drivers: each channel as its clients see it, for the crash harness and the soak.

A driver knows three things about its channel (see :class:`Driver`):

1. how to send one request (:meth:`Driver.send`), the way a real client does (a browser's GET then
   POST, an Open311 app's form post, a mail server's SMTP transaction, an IMAP APPEND into the mailbox
   the hub polls);
2. how to recognise that the hub acknowledged it (the 2xx with a case reference, the SMTP 250, the
   ``\\Seen`` flag the poller sets after its commit);
3. how to find it in the database (:meth:`Driver.stored`: how many inbound messages are this request).

Adding a channel (SMS and voice from ``channels/twilio``, paper from ``channels/paper``) is one subclass
and one line in :data:`DRIVERS`; see ``bench/traffic/__init__.py``.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiohttp
import aiosmtplib
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from hub.queue.cases import message_t

from .hub import HUB_ADDRESS, HubProcesses

#: What a client sees when the hub is gone (killed, restarting): the request's fate is unknown.
HTTP_GONE = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError, TimeoutError,
             ConnectionError, OSError)
SMTP_GONE = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError,
             aiosmtplib.SMTPReadTimeoutError, ConnectionError, OSError, TimeoutError, asyncio.TimeoutError)

TEXTS = (
    "Ich brauche einen neuen Reisepass, mein alter läuft im Mai ab.",
    "Wie melde ich meinen Wohnsitz um? Wir ziehen nächste Woche um.",
    "Ich möchte ein Wunschkennzeichen für mein Auto reservieren.",
    "Wo kann ich meinen Hund anmelden? Hundesteuer",
    "Ich brauche ein Führungszeugnis für meinen neuen Arbeitgeber.",
    "Wir möchten einen Carport bauen, brauchen wir eine Baugenehmigung?",
    "Mein Personalausweis ist verloren gegangen, was muss ich tun?",
    "Wann hat das Bürgerbüro geöffnet? Ich brauche eine Meldebescheinigung.",
    "Ich möchte Wohngeld beantragen.",
    "Sperrmüll abholen lassen, wie geht das?",
)
PLACES = ("Todesfelde", "23795", "Bad Segeberg", "Norderstedt", "Kaltenkirchen", "Soest", "Lippstadt", "Leezen",
          "59494", "Wahlstedt")

#: A valid 1x1 PNG (web form and Open311 attachments) and a tiny PDF (mail attachments).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
    "0000000a49444154789c63600000000200013e45a0a80000000049454e44ae426082")
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


@dataclass(eq=False)
class Ticket:
    """One request a driver sent (or tried to): ``key`` is how the driver finds it in the database."""

    channel: str
    key: str
    data: dict[str, Any] = field(default_factory=dict)
    acked: bool = False
    sends: int = 0


@dataclass
class Tokens:
    service: str
    open311: str
    agent: str


@dataclass
class Context:
    """What drivers share during a run: the hub's processes, an HTTP session, tokens, the mailbox."""

    hub: HubProcesses
    session: aiohttp.ClientSession
    tokens: Tokens
    rng: random.Random
    dovecot: Any = None  # tests/dovecot_support.Dovecot, for the IMAP driver
    twilio: Any = None  # TwilioAccount, for the SMS driver
    service_codes: list[str] = field(default_factory=list)


ACK, SENT, LOST, SKIP = "ack", "sent", "lost", "skip"


def refused(why: Any) -> str:
    """An answer that is neither an acknowledgement nor a lost connection (a 4xx/5xx, an SMTP 4xx/5xx)."""
    return f"refused:{why}"


class Driver:
    """One channel as its clients see it (see the module docstring)."""

    name = "?"
    #: The entry of channels.REGISTRY this driver exercises (None: the hub's own API, or agents).
    channel: str | None = None
    roles: tuple[str, ...] = ("http",)  # the hub processes it talks to (bench.traffic.hub.HubProcesses)
    clients = 4  # concurrent clients during a load
    idempotent = True  # sending a ticket again is the same request: the hub must not store it twice
    must_arrive = False  # the source keeps what was sent (a mailbox): every ticket must end up stored once

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._n = 0

    def new_ticket(self, ctx: Context) -> Ticket:
        self._n += 1
        return Ticket(self.name, f"{self.prefix}-{self.name}-{self._n}")

    async def setup(self, ctx: Context) -> None:
        """Once per run, after the first start (e.g. read the service codes)."""

    async def send(self, ctx: Context, ticket: Ticket) -> str:
        """Send ``ticket``; :data:`ACK`, :data:`SENT` (acknowledged later, see :meth:`settle`), :data:`LOST`
        (the hub went away: fate unknown), :data:`SKIP` (nothing was sent) or :func:`refused`."""
        raise NotImplementedError

    async def settle(self, ctx: Context, tickets: list[Ticket], timeout: float) -> None:
        """Mark tickets acknowledged asynchronously (IMAP: ``\\Seen``); wait up to ``timeout`` for it."""

    def stored(self, conn: Connection, tickets: list[Ticket]) -> Counter[str]:
        """How many inbound messages in the database are each ticket's request (by key)."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of connections (end of a run)."""


def _count_by_external_id(conn: Connection, channel: str, pattern: str) -> Counter[str]:
    rows = conn.execute(
        select(message_t.c.external_id, func.count())
        .where(message_t.c.channel == channel, message_t.c.direction == "in", message_t.c.external_id.like(pattern))
        .group_by(message_t.c.external_id)
    ).all()
    return Counter({ext: n for ext, n in rows})


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- HTTP API --------------------------------------------------------------------------------------------


class ApiDriver(Driver):
    """``POST /api/requests`` with a service token; the external id is the idempotency key."""

    name = "api"
    clients = 6

    async def send(self, ctx: Context, ticket: Ticket) -> str:
        if not ticket.data:
            ticket.data = {"channel": "api", "external_id": ticket.key, "text": ctx.rng.choice(TEXTS),
                           "location": ctx.rng.choice(PLACES), "contact": {"email": f"{ticket.key}@citizen.example"}}
        try:
            async with ctx.session.post(f"{ctx.hub.http_url}/api/requests", json=ticket.data,
                                        headers={"Authorization": f"Bearer {ctx.tokens.service}"}) as resp:
                body = await resp.read()
                if resp.status in (200, 201) and b'"case_id"' in body:
                    return ACK
                return refused(resp.status)
        except HTTP_GONE:
            return LOST

    def stored(self, conn: Connection, tickets: list[Ticket]) -> Counter[str]:
        return _count_by_external_id(conn, "api", _like_prefix(f"{self.prefix}-api-") + "%")


# -- the citizen web form ----------------------------------------------------------------------------------

_HIDDEN = re.compile(r'name="(csrf_token|submission)" value="([^"]*)"')


class WebFormDriver(Driver):
    """A browser: ``GET /`` (cookie, CSRF token, submission id), then the multipart ``POST /``.

    The submission id the form carries, with the digest of what was entered, is the idempotency key
    (``web:<submission>:<digest>``): a browser sending the same form again is the same request.
    """

    name = "web"
    channel = "web"
    clients = 3

    async def send(self, ctx: Context, ticket: Ticket) -> str:
        base = ctx.hub.http_url
        try:
            async with ctx.session.get(f"{base}/") as resp:
                html = await resp.text()
                if resp.status != 200:
                    return refused(f"GET {resp.status}")
                cookie = resp.cookies.get("chub_csrf")
            hidden = dict(_HIDDEN.findall(html))
            if not ticket.data:
                ticket.key = hidden.get("submission", uuid.uuid4().hex)
                ticket.data = {"text": ctx.rng.choice(TEXTS), "location": ctx.rng.choice(PLACES),
                               "name": "Erika Mustermann", "email": f"w{ticket.key[:12]}@citizen.example",
                               "with_file": ctx.rng.random() < 0.2}
            form = aiohttp.FormData(quote_fields=False)
            fields = {"csrf_token": hidden.get("csrf_token", ""), "submission": ticket.key, "lang": "de",
                      "reply": "web", "text": ticket.data["text"], "location": ticket.data["location"],
                      "name": ticket.data["name"], "email": ticket.data["email"], "phone": ""}
            for k, v in fields.items():
                form.add_field(k, v)
            if ticket.data["with_file"]:
                form.add_field("attachments", PNG, filename="foto.png", content_type="image/png")
            else:
                form.add_field("attachments", b"", filename="", content_type="application/octet-stream")
            headers = {"Cookie": f"chub_csrf={cookie.value}"} if cookie is not None else {}
            async with ctx.session.post(f"{base}/", data=form, headers=headers) as resp:
                html = await resp.text()
                if resp.status == 200 and 'id="case-token"' in html:
                    return ACK
                return refused(resp.status)
        except HTTP_GONE:
            return LOST

    def stored(self, conn: Connection, tickets: list[Ticket]) -> Counter[str]:
        wanted = {t.key for t in tickets}
        found: Counter[str] = Counter()
        for ext, n in _count_by_external_id(conn, "web", "web:%").items():
            submission = ext.split(":")[1] if ext.count(":") >= 2 else ""
            if submission in wanted:
                found[submission] += n
        return found


# -- Open311 -----------------------------------------------------------------------------------------------


class Open311Driver(Driver):
    """An Open311 client (``POST /open311/v2/requests.json`` with an ``api_key``).

    GeoReport v2 has no idempotency key: a client that lost the answer and posts again makes a second
    request, so this driver never sends a ticket twice; each carries a marker in its description.
    """

    name = "open311"
    channel = "open311"
    clients = 2
    idempotent = False

    async def setup(self, ctx: Context) -> None:
        async with ctx.session.get(f"{ctx.hub.http_url}/open311/v2/services.json") as resp:
            resp.raise_for_status()
            ctx.service_codes = [s["service_code"] for s in await resp.json()]

    async def send(self, ctx: Context, ticket: Ticket) -> str:
        form = {"api_key": ctx.tokens.open311, "service_code": ctx.rng.choice(ctx.service_codes),
                "address_string": ctx.rng.choice(PLACES), "email": f"o{ticket.key.rsplit('-', 1)[1]}@citizen.example",
                "description": f"{ctx.rng.choice(TEXTS)} [{ticket.key}]"}
        data: Any = form
        if ctx.rng.random() < 0.2:
            data = aiohttp.FormData(form)
            data.add_field("media", PNG, filename="schaden.png", content_type="image/png")
        try:
            async with ctx.session.post(f"{ctx.hub.http_url}/open311/v2/requests.json", data=data) as resp:
                body = await resp.text()
                if resp.status in (200, 201) and "service_request_id" in body:
                    ticket.data["case_id"] = int(json.loads(body)[0]["service_request_id"])
                    return ACK
                return refused(resp.status)
        except HTTP_GONE:
            return LOST

    def stored(self, conn: Connection, tickets: list[Ticket]) -> Counter[str]:
        marker = re.compile(r"\[(" + re.escape(self.prefix) + r"-open311-\d+)\]")
        texts = conn.execute(select(message_t.c.text).where(
            message_t.c.channel == "open311", message_t.c.direction == "in",
            message_t.c.external_id.like("open311:%"),
            message_t.c.text.like("%[" + _like_prefix(self.prefix) + "-open311-%", escape="\\"))).scalars()
        return Counter(m.group(1) for text in texts for m in marker.finditer(text or ""))


# -- e-mail ------------------------------------------------------------------------------------------------


def mail_bytes(sender: str, message_id: str, rng: random.Random, attach: bool) -> bytes:
    """A citizen's mail as a mail client writes it (the Message-ID is the idempotency key)."""
    msg = EmailMessage()
    msg["From"] = f"Max Mustermann <{sender}>"
    msg["To"] = HUB_ADDRESS
    msg["Subject"] = rng.choice(("Frage", "Anliegen", "Bitte um Auskunft", "Termin"))
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id
    msg.set_content(f"Guten Tag,\n\n{rng.choice(TEXTS)}\nIch wohne in {rng.choice(PLACES)}.\n\nMit freundlichen Grüßen\n")
    if attach:
        msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="antrag.pdf")
    return msg.as_bytes()


class SmtpDriver(Driver):
    """A mail server delivering to ``citizen-hub email serve``; 250 after DATA is the acknowledgement."""

    name = "smtp"
    channel = "email"
    roles = ("smtp",)
    clients = 4

    def new_ticket(self, ctx: Context) -> Ticket:
        t = super().new_ticket(ctx)
        t.data["message_id"] = f"<{t.key}@crash.example>"
        t.data["sender"] = f"{self.name}{self._n}@citizen.example"
        t.data["raw"] = mail_bytes(t.data["sender"], t.data["message_id"], ctx.rng, ctx.rng.random() < 0.2)
        return t

    async def send(self, ctx: Context, ticket: Ticket) -> str:
        try:
            await aiosmtplib.send(ticket.data["raw"], sender=ticket.data["sender"], recipients=[HUB_ADDRESS], hostname="127.0.0.1",
                                  port=ctx.hub.smtp_port, timeout=30)
            return ACK
        except aiosmtplib.SMTPResponseException as exc:  # a 4xx/5xx answer
            return refused(exc.code)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return refused(exc.recipients[0].code if exc.recipients else "rcpt")
        except SMTP_GONE:
            return LOST

    def stored(self, conn: Connection, tickets: list[Ticket]) -> Counter[str]:
        by_id = _count_by_external_id(conn, "email", "<" + _like_prefix(f"{self.prefix}-{self.name}-") + "%")
        return Counter({t.key: by_id.get(t.data["message_id"], 0) for t in tickets})


class ImapDriver(SmtpDriver):
    """Mail delivered into the mailbox ``citizen-hub email poll-imap`` polls (IMAP APPEND into Dovecot).

    The mailbox keeps every mail, so every one must end up stored exactly once (``must_arrive``); the
    poller's acknowledgement is the ``\\Seen`` flag it sets after the commit.
    """

    name = "imap"
    roles = ("imap",)
    clients = 1
    idempotent = False  # nothing to send again: the mail waits in the mailbox
    must_arrive = True

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self._conn: imaplib.IMAP4 | None = None

    def _append(self, ctx: Context, raw: bytes) -> int:
        if self._conn is None:
            self._conn = ctx.dovecot.client()
        typ, data = self._conn.append("INBOX", None, None, raw)
        if typ != "OK":
            raise imaplib.IMAP4.error(str(data))
        return int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))

    async def send(self, ctx: Context, ticket: Ticket) -> str:
        ticket.data["uid"] = await asyncio.to_thread(self._append, ctx, ticket.data["raw"])
        await asyncio.sleep(0.02)  # a mailbox fills at the pace of its senders, not of a loop
        return SENT

    async def settle(self, ctx: Context, tickets: list[Ticket], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            flags = await asyncio.to_thread(ctx.dovecot.flags)
            for t in tickets:
                t.acked = "\\Seen" in flags.get(t.data.get("uid", -1), set())
            if all(t.acked for t in tickets) or loop.time() > deadline:
                return
            await asyncio.sleep(0.5)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.logout()
            except (OSError, imaplib.IMAP4.error):
                pass
            self._conn = None


# -- agents answering (the outbox) ---------------------------------------------------------------------------


class AgentReplyDriver(Driver):
    """Agents answering e-mail cases through the API (``POST /api/cases/{id}/reply``, agent token).

    Each acknowledged reply (201) is an outbound message the dispatcher sends to the SMTP sink; the
    harness checks the outbox against what the sink received.
    """

    name = "reply"
    clients = 2
    idempotent = False

    async def send(self, ctx: Context, ticket: Ticket) -> str:
        headers = {"Authorization": f"Bearer {ctx.tokens.agent}"}
        base = ctx.hub.http_url
        try:
            async with ctx.session.get(f"{base}/api/cases", params={"channel": "email", "per_page": "50"},
                                       headers=headers) as resp:
                if resp.status != 200:
                    return refused(f"list {resp.status}")
                listed = await resp.json()
            total = listed["total"]
            if not total:
                await asyncio.sleep(0.2)
                return SKIP
            page = ctx.rng.randint(1, max(1, (total + 49) // 50))
            async with ctx.session.get(f"{base}/api/cases", headers=headers,
                                       params={"channel": "email", "per_page": "50", "page": str(page)}) as resp:
                cases = [c for c in (await resp.json())["cases"] if c["state"] not in ("closed", "dead_letter")]
            if not cases:
                return SKIP
            case = ctx.rng.choice(cases)
            body = {"text": f"Guten Tag, Ihr Anliegen ist in Bearbeitung. [{ticket.key}]"}
            async with ctx.session.post(f"{base}/api/cases/{case['id']}/reply", json=body, headers=headers) as resp:
                if resp.status == 201:
                    ticket.data["message_id"] = (await resp.json())["message_id"]
                    return ACK
                if resp.status == 409:  # the case moved on meanwhile (closed by the SLA, say): not an error
                    return SKIP
                return refused(resp.status)
        except HTTP_GONE:
            return LOST

    def stored(self, conn: Connection, tickets: list[Ticket]) -> Counter[str]:
        marker = re.compile(r"\[(" + re.escape(self.prefix) + r"-reply-\d+)\]")
        texts = conn.execute(select(message_t.c.text).where(and_(
            message_t.c.direction == "out", message_t.c.kind == "reply",
            message_t.c.text.like("%[" + _like_prefix(self.prefix) + "-reply-%", escape="\\")))).scalars()
        return Counter(m.group(1) for text in texts for m in marker.finditer(text or ""))


# -- SMS (Twilio) ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwilioAccount:
    """The Twilio account the hub is configured with (``[twilio]``); webhooks are signed with its token."""

    account_sid: str
    auth_token: str
    public_url: str
    number: str

    def signature(self, path: str, form: dict[str, str]) -> str:
        """``X-Twilio-Signature`` of ``form`` posted to ``path``, as Twilio computes it: twilio's own
        ``RequestValidator`` (what the hub checks with, channels.twilio.signature, and the tests sign with)."""
        from twilio.request_validator import RequestValidator

        return RequestValidator(self.auth_token).compute_signature(self.public_url + path, form)


async def post_webhook(ctx: Context, path: str, form: dict[str, str]) -> tuple[int, str]:
    """Deliver a Twilio webhook to the hub as Twilio does: the form, signed (:meth:`TwilioAccount.signature`);
    the one place the SMS and voice drivers sign."""
    account: TwilioAccount = ctx.twilio
    async with ctx.session.post(f"{ctx.hub.http_url}{path}", data=form,
                                headers={"X-Twilio-Signature": account.signature(path, form)}) as resp:
        return resp.status, await resp.text()


class SmsDriver(Driver):
    """Twilio delivering an SMS: the signed ``POST /twilio/sms`` webhook; the acknowledgement is the 200 with
    TwiML that is not the "could not be stored" answer. Twilio sends a webhook again with the same
    ``MessageSid`` when it got no answer, so the ``MessageSid`` is the idempotency key."""

    name = "sms"
    channel = "twilio"
    clients = 2

    def new_ticket(self, ctx: Context) -> Ticket:
        t = super().new_ticket(ctx)
        n = self._n
        t.data["sid"] = "SM" + uuid.uuid5(uuid.NAMESPACE_URL, t.key).hex
        t.data["from"] = f"+49151{n % 10_000_000:07d}{len(self.prefix) % 10}"
        t.data["body"] = f"{ctx.rng.choice(TEXTS)} Ich wohne in {ctx.rng.choice(PLACES)}."
        return t

    async def send(self, ctx: Context, ticket: Ticket) -> str:
        from channels.twilio.sms import TEXTS as ANSWERS

        account: TwilioAccount = ctx.twilio
        form = {"MessageSid": ticket.data["sid"], "SmsSid": ticket.data["sid"], "SmsMessageSid": ticket.data["sid"],
                "AccountSid": account.account_sid, "From": ticket.data["from"], "To": account.number,
                "Body": ticket.data["body"], "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received",
                "ApiVersion": "2010-04-01", "FromCountry": "DE", "ToCountry": "DE"}
        try:
            status, body = await post_webhook(ctx, "/twilio/sms", form)
        except HTTP_GONE:
            return LOST
        if status != 200 or "<Response" not in body:
            return refused(status)
        for what in ("unavailable", "refused", "limited"):
            if ANSWERS[what].split(".")[0] in body:
                return refused(what)
        return ACK

    def stored(self, conn: Connection, tickets: list[Ticket]) -> Counter[str]:
        by_sid = _count_by_external_id(conn, "sms", "SM%")
        return Counter({t.key: by_sid.get(t.data["sid"], 0) for t in tickets})


# -- paper (scanned or on-screen completed forms) -----------------------------------------------------------


class PaperDriver(Driver):
    """A scanning office posting forms to ``POST /api/paper/scans`` (service token): forms the hub made
    (``GET /api/paper/form``, agent token) and the citizen completed on screen, so the AcroForm values are
    read directly (no OCR under load). The same file posted again is the same request (form id + page
    content), so a ticket keeps its exact bytes for a resend."""

    name = "paper"
    channel = "paper"
    clients = 2
    forms = 8  # blank forms fetched once a run; each ticket fills one with its own words

    async def setup(self, ctx: Context) -> None:
        base = ctx.hub.http_url
        if not ctx.service_codes:
            async with ctx.session.get(f"{base}/open311/v2/services.json") as resp:
                resp.raise_for_status()
                ctx.service_codes = [s["service_code"] for s in await resp.json()]
        self._blank: list[bytes] = []
        headers = {"Authorization": f"Bearer {ctx.tokens.agent}"}
        for i in range(self.forms):
            params = {"service": ctx.service_codes[i % len(ctx.service_codes)], "location": PLACES[i % len(PLACES)]}
            async with ctx.session.get(f"{base}/api/paper/form", params=params, headers=headers) as resp:
                if resp.status == 200:
                    self._blank.append(await resp.read())
        if not self._blank:
            raise RuntimeError("the hub made no paper form (is [paper] hmac_key set?)")

    def new_ticket(self, ctx: Context) -> Ticket:
        import io

        from pypdf import PdfReader, PdfWriter

        t = super().new_ticket(ctx)
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(ctx.rng.choice(self._blank))))
        writer.update_page_form_field_values(writer.pages[0], {"anliegen": f"{ctx.rng.choice(TEXTS)} [{t.key}]"},
                                             auto_regenerate=False)
        buf = io.BytesIO()
        writer.write(buf)
        t.data["pdf"] = buf.getvalue()
        return t

    async def send(self, ctx: Context, ticket: Ticket) -> str:
        data = aiohttp.FormData()
        data.add_field("file", ticket.data["pdf"], filename=f"{ticket.key}.pdf", content_type="application/pdf")
        try:
            async with ctx.session.post(f"{ctx.hub.http_url}/api/paper/scans", data=data,
                                        headers={"Authorization": f"Bearer {ctx.tokens.service}"}) as resp:
                if resp.status not in (200, 201):  # 201: a new request; 200: this scan was already taken
                    return refused(resp.status)
                pages = (await resp.json()).get("pages") or [{}]
                return ACK if pages[0].get("status") == "accepted" and pages[0].get("case_id") else refused("rejected")
        except HTTP_GONE:
            return LOST

    def stored(self, conn: Connection, tickets: list[Ticket]) -> Counter[str]:
        marker = re.compile(r"\[(" + re.escape(self.prefix) + r"-paper-\d+)\]")
        texts = conn.execute(select(message_t.c.text).where(
            message_t.c.channel == "paper", message_t.c.direction == "in",
            message_t.c.text.like("%[" + _like_prefix(self.prefix) + "-paper-%", escape="\\"))).scalars()
        return Counter(m.group(1) for text in texts for m in marker.finditer(text or ""))


class VoiceDriver(Driver):
    """Twilio delivering a call: the signed ``POST /twilio/voice`` (the greeting; nothing stored) and then the
    caller's concern, ``POST /twilio/voice/concern``, whose 200 TwiML (not the apology for a technical fault,
    not "please call again later") acknowledges the phone case. Twilio repeats a webhook it got no answer to
    with the same ``CallSid`` and the same words, so the ``CallSid`` is the idempotency key."""

    name = "voice"
    channel = "twilio"
    clients = 2

    def new_ticket(self, ctx: Context) -> Ticket:
        t = super().new_ticket(ctx)
        n = self._n
        t.data["sid"] = "CA" + uuid.uuid5(uuid.NAMESPACE_URL, t.key).hex
        t.data["from"] = f"+49171{n % 10_000_000:07d}{len(self.prefix) % 10}"
        t.data["said"] = f"{ctx.rng.choice(TEXTS)} Ich wohne in {ctx.rng.choice(PLACES)}."
        return t

    async def _post(self, ctx: Context, path: str, form: dict[str, str]) -> tuple[int, str]:
        return await post_webhook(ctx, path, form)

    async def send(self, ctx: Context, ticket: Ticket) -> str:
        from channels.twilio.phone import LIMITED, SORRY

        account: TwilioAccount = ctx.twilio
        call = {"CallSid": ticket.data["sid"], "AccountSid": account.account_sid, "From": ticket.data["from"],
                "Caller": ticket.data["from"], "To": account.number, "Called": account.number,
                "Direction": "inbound", "ApiVersion": "2010-04-01", "FromCountry": "DE", "ToCountry": "DE"}
        try:
            status, body = await self._post(ctx, "/twilio/voice", call | {"CallStatus": "ringing"})
            if status != 200 or "<Response" not in body:
                return refused(status)
            status, body = await self._post(ctx, "/twilio/voice/concern", call | {
                "CallStatus": "in-progress", "SpeechResult": ticket.data["said"], "Confidence": "0.91"})
            if status != 200 or "<Response" not in body:
                return refused(status)
            for why, text in (("unavailable", SORRY), ("limited", LIMITED)):
                if text.split(".")[0] in body:
                    return refused(why)
            return ACK
        except HTTP_GONE:
            return LOST

    def stored(self, conn: Connection, tickets: list[Ticket]) -> Counter[str]:
        by_sid = _count_by_external_id(conn, "phone", "CA%")
        return Counter({t.key: by_sid.get(t.data["sid"], 0) for t in tickets})


#: Every driver by name. A new channel adds its driver here (see bench/traffic/__init__.py).
DRIVERS: dict[str, type[Driver]] = {
    "api": ApiDriver,
    "web": WebFormDriver,
    "open311": Open311Driver,
    "smtp": SmtpDriver,
    "imap": ImapDriver,
    "sms": SmsDriver,
    "paper": PaperDriver,
    "voice": VoiceDriver,
    "reply": AgentReplyDriver,
}


def build(names: Iterable[str], prefix: str) -> list[Driver]:
    unknown = set(names) - set(DRIVERS)
    if unknown:
        raise ValueError(f"unknown channel driver(s): {', '.join(sorted(unknown))}; have {', '.join(DRIVERS)}")
    return [DRIVERS[n](prefix) for n in names]
