"""Helpers of the console tests: the real hub app (``hub.http.app.create_app`` with every module of
``hub.http.routes``) on a migrated copy of the demo database, a real SMTP sink (aiosmtpd) behind the e-mail
channel, accounts, log-in, and cases in known states."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from web_support import hub_engine  # noqa: F401  (the console tests' database, re-exported)

from hub.config import Settings
from hub.console import auth
from hub.console.auth import add_user
from hub.console.settings import ConsoleSettings
from hub.http import api_cases
from hub.http.app import create_app
from hub.queue.adapters import SendResult
from hub.queue.cases import CaseState, SlaPolicy, case_t, transition
from hub.queue.intake import write_requests
from hub.queue.outbox import PickupAdapter
from hub.queue.requests import Contact, InboundRequest
from hub.queue.settings import QueueSettings
from hub.queue.workers import QueueService

PASSWORD = "correct horse battery staple"
_real_hash_password = auth.hash_password


def settings_for(tmp_path: Path, url: str, *, smtp_port: int | None = None, **console_values: Any) -> Settings:
    """The hub's own Settings for a test: this database, http:// cookies, and the SMTP sink if given."""
    s = Settings()
    s.database.url = url
    s.queue = QueueSettings(attachment_dir=str(tmp_path / "attachments"))
    s.console = ConsoleSettings(**({"cookie_secure": False, "csrf_secret": "c" * 40} | console_values))
    if smtp_port is not None:
        # Imported here: importing channels.email.settings before hub.config is a circular import.
        from channels.email.settings import EmailSettings

        s.email = EmailSettings(smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_starttls=False, smtp_tls=False,
                                address="anliegen@hub.example", smtp_timeout_seconds=5)
    return s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink:
    """A real local SMTP server (aiosmtpd) that keeps every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.port = _free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                      policy=email.policy.default))
        return "250 OK"

    def received(self, recipient: str) -> list[email.message.EmailMessage]:
        return [m for (_s, rcpts), m in zip(self.envelopes, self.messages, strict=False) if recipient in rcpts]

    def wait_for(self, recipient: str, timeout: float = 15.0) -> email.message.EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.received(recipient)
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no mail to {recipient} reached the SMTP sink; got {self.envelopes}")

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


class RecordingAdapter:
    """Stand-in for the SMS channel only: the hub has no SMS adapter module yet (see channels.CHANNELS).

    E-mail always goes through the real adapter to an :class:`SmtpSink`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[Any] = []

    async def send(self, message):
        self.sent.append(message)
        return SendResult.sent("recorded")


def make_app(settings: Settings, engine: Engine, kb, adapters: dict[str, Any] | None = None,
             run_workers: bool = False) -> tuple[web.Application, QueueService]:
    """The real hub app (every module of hub.http.routes) with a queue service the test controls.

    E-mail goes out through the real SMTP adapter to ``settings.email`` (point it at an SmtpSink).
    """
    from channels.email.outbound import build_email_adapter

    app = create_app(settings, kb=kb, engine=engine)
    if adapters is None:
        adapters = {"api": PickupAdapter(), "web": PickupAdapter(), "email": build_email_adapter(settings),
                    "sms": RecordingAdapter("sms")}
    service = QueueService(engine, settings, router=kb, adapters=adapters, run_workers=run_workers)
    app[api_cases.QUEUE].service = service
    return app, service


_HASHES: dict[str, str] = {}  # password -> its argon2id hash, made once per test process


def _hash_once(password: str) -> str:
    if password not in _HASHES:
        _HASHES[password] = _real_hash_password(password)
    return _HASHES[password]


def new_user(engine: Engine, name: str, role: str = "agent", *, authorities: Iterable[str] = (),
             regions: Iterable[str] = (), password: str = PASSWORD) -> int:
    """An account made by the real ``add_user``. Its argon2id hash (production parameters) is made once per
    password and test process and reused, salt and all, for later accounts with the same password: one
    hash costs ~0.4 s of CPU and is not what these tests check. Logging in still verifies it with argon2;
    the hashing itself is tested where ``add_user``, ``set_password`` and the CLI are called directly
    (tests/console/test_auth.py)."""
    auth.hash_password = _hash_once
    try:
        return add_user(engine, name, role, password, authorities=authorities, regions=regions)
    finally:
        auth.hash_password = _real_hash_password


_META = re.compile(r'<meta name="csrf-token" content="([^"]*)"')
_LOGIN_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


async def login_form_token(client) -> str:
    resp = await client.get("/console/login")
    assert resp.status == 200
    match = _LOGIN_TOKEN.search(await resp.text())
    assert match, "the log-in form carries a CSRF token"
    return match.group(1)


async def try_login(client, name: str, password: str):
    token = await login_form_token(client)
    return await client.post("/console/login", data={"name": name, "password": password, "csrf_token": token,
                                                     "next": "/console/"}, allow_redirects=False)


async def login(client, name: str, password: str = PASSWORD) -> str:
    """Log in; returns the session's CSRF token (from the page's meta tag)."""
    resp = await try_login(client, name, password)
    assert resp.status == 303, await resp.text()
    page = await client.get("/console/")
    assert page.status == 200
    match = _META.search(await page.text())
    assert match and match.group(1)
    return match.group(1)


def make_case(engine: Engine, *, text: str, channel: str = "web", authority: tuple[str, str] | None = None,
              service: tuple[str, str] | None = None, email: str | None = None, phone: str | None = None,
              state: CaseState = CaseState.ROUTED, external_id: str | None = None,
              received_at: datetime | None = None, policy: SlaPolicy | None = None) -> int:
    """A case through intake, then routed to ``authority`` (``(id, name)``) and moved to ``state``."""
    policy = policy or SlaPolicy()
    req = InboundRequest(channel=channel, external_id=external_id or f"t-{datetime.now(UTC).timestamp()}-{text[:8]}",
                         text=text, contact=Contact(email=email, phone=phone),
                         received_at=received_at or datetime.now(UTC))
    case_id = write_requests(engine, [req], policy=policy)[0].case_id
    if state == CaseState.NEW:
        return case_id
    values: dict[str, Any] = {}
    if authority:
        values |= {"authority_id": authority[0], "authority_name": authority[1]}
    if service:
        values |= {"service_id": service[0], "service_name": service[1]}
    with engine.begin() as conn:
        row = dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())
        first = CaseState.ROUTED if state != CaseState.NEEDS_CLARIFICATION else CaseState.NEEDS_CLARIFICATION
        transition(conn, row, first, actor="test", policy=policy, values=values)
        if state not in (CaseState.ROUTED, CaseState.NEEDS_CLARIFICATION):
            row = dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())
            transition(conn, row, state, actor="test", policy=policy)
    return case_id


def set_case(engine: Engine, case_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(case_t).where(case_t.c.id == case_id).values(**values))


KREIS = ("kreis-01060", "Kreis Segeberg – Kreisverwaltung")
AMT_LEEZEN = ("amt-010605053", "Amt Leezen")
SOEST = ("kreis-05974", "Kreis Soest – Kreishaus")
