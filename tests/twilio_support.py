"""Test support for the Twilio channels: recorded payloads, signing, and a local Twilio REST server.

* :func:`payload` loads a recorded webhook form from ``tests/fixtures/twilio`` (with changes);
* :func:`signed` encodes it and signs it with twilio's own ``RequestValidator(token).compute_signature``,
  returning the body and headers a test posts;
* :class:`FakeTwilio` is a real aiohttp server on a free port that speaks the Messages API
  (``POST /2010-04-01/Accounts/{sid}/Messages.json``): it checks HTTP basic auth like Twilio, records the
  exact form fields of every request, and answers with the recorded 201 (or a scripted error, a delay,
  a dropped connection). Point ``[twilio] api_base_url`` at ``FakeTwilio.url``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "twilio"

ACCOUNT_SID = "ACe870783051afd43fa447650f8f17f2c1"
AUTH_TOKEN = "0f8a1c7e2b9d4e6f8a1c7e2b9d4e6f80"
PUBLIC_URL = "https://hub.example.de"
HUB_NUMBER = "+4932221803115"
CITIZEN = "+4915112345678"
SERVICE_SID = "MGcea76da043ada909496ca476a4d13b7a"


def payload(name: str, **changes: Any) -> dict[str, str]:
    """The recorded form ``name`` (without .json) with ``changes``; a change to None removes the field."""
    data = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = str(value)
    return data


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def sign(url: str, params: Any, token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


def signed(path: str, params: dict[str, str] | list[tuple[str, str]], *, token: str = AUTH_TOKEN,
           public_url: str = PUBLIC_URL) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a webhook to ``path`` signed by Twilio with ``token``."""
    items = list(params.items()) if isinstance(params, dict) else list(params)
    body = urlencode(items).encode("ascii")
    signature = sign(public_url + path, MultiDict(items), token)
    return body, {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}


def twilio_settings(**changes: Any):
    from channels.twilio.settings import TwilioSettings

    values = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "public_url": PUBLIC_URL,
              "phone_numbers": [HUB_NUMBER]}
    values.update(changes)
    return TwilioSettings(**values)


@dataclass
class Recorded:
    """One request the fake server got: its path, headers and form fields in order."""

    method: str
    path: str
    headers: dict[str, str]
    form: list[tuple[str, str]]

    @property
    def fields(self) -> dict[str, str]:
        return dict(self.form)


@dataclass
class FakeTwilio:
    """A local Messages API. ``script`` holds the next answers: ``(status, json)``, ``("delay", s)``, ``"drop"``."""

    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    requests: list[Recorded] = field(default_factory=list)
    script: deque = field(default_factory=deque)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeTwilio:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._messages)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTwilio:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def _authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        self.requests.append(Recorded(request.method, request.path, dict(request.headers),
                                      [(k, str(v)) for k, v in form.items()]))
        step = self.script.popleft() if self.script else None
        if step == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if isinstance(step, tuple) and step[0] == "delay":
            await asyncio.sleep(step[1])
            step = None
        if not self._authorized(request):
            return web.json_response({"code": 20003, "message": "Authenticate",
                                      "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401},
                                     status=401)
        if request.match_info["sid"] != self.account_sid:
            return web.json_response({"code": 20404, "message": "The requested resource was not found",
                                      "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404},
                                     status=404)
        if isinstance(step, tuple):
            status, body = step
            if isinstance(body, str):
                return web.Response(status=status, text=body, content_type="text/html")
            return web.json_response(body, status=status)
        created = json.loads((FIXTURES / "rest_message_created.json").read_text(encoding="utf-8"))
        created |= {"sid": new_sid("SM"), "to": form.get("To"), "from": form.get("From"), "body": form.get("Body"),
                    "messaging_service_sid": form.get("MessagingServiceSid")}
        return web.json_response(created, status=201)


def rest_error(name: str) -> tuple[int, dict]:
    body = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return body["status"], body


# -- the real hub app with the Twilio channels on ------------------------------------------------------------


def hub_settings(tmp_path, url: str, **twilio: Any):
    """The hub's Settings for a test database with ``[twilio]`` configured (``twilio`` overrides keys)."""
    from web_support import settings_for

    settings = settings_for(tmp_path, url)
    settings.twilio = twilio_settings(**twilio)
    return settings


def make_twilio_app(tmp_path, engine, url: str, kb, *, clock=None, limits=None, **twilio: Any):
    """(app, queue service) of the real hub with the Twilio channels on; workers run only when a test asks.
    ``limits``: the ``[limits]`` section (:class:`hub.http.ratelimit.IntakeLimitSettings`) instead of the default."""
    from channels.twilio.webhooks import TWILIO
    from hub.http.api_cases import QUEUE
    from hub.http.app import create_app
    from hub.queue.adapters import load_adapters
    from hub.queue.workers import QueueService

    settings = hub_settings(tmp_path, url, **twilio)
    if limits is not None:
        settings.limits = limits
    app = create_app(settings, kb=kb, engine=engine)
    service = QueueService(engine, settings, router=kb, run_workers=False, adapters=load_adapters(settings))
    app[QUEUE].service = service
    if clock is not None:
        app[TWILIO].clock = clock
    return app, service


async def post(client, path: str, params: dict[str, str] | list[tuple[str, str]], **kwargs: Any):
    """POST a webhook signed as Twilio signs it for ``PUBLIC_URL + path``."""
    body, headers = signed(path, params, **kwargs)
    return await client.post(path, data=body, headers=headers)
