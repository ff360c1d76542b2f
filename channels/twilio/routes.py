"""The Twilio channels' HTTP routes and what their handlers share.

``setup(app)`` (``Channel.routes``) adds, when ``[twilio] account_sid`` is set:

* ``POST /twilio/sms`` — an incoming SMS or MMS (:mod:`channels.twilio.inbound`);
* ``POST /twilio/status?message_id=N`` — delivery reports of the hub's SMS (:mod:`channels.twilio.inbound`);
* ``POST /twilio/voice`` and ``POST /twilio/voice/<step>`` — the phone menu; ``/twilio/voice/status`` — the
  call ended; ``/twilio/voice/transfer`` — how a transfer to an agent ended (:mod:`channels.twilio.phone`).

A channel that is on but lacks its token or public URL stops the start (:meth:`TwilioSettings.require`).
Every handler reads the body once (at most ``[twilio] max_webhook_bytes``), passes it through the one
parser (:func:`channels.twilio.payload.parse_webhook`: signature, account, fields) and answers a refusal
as plain text with its 4xx status, which Twilio's debugger shows; nothing of a refused webhook is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.engine import Engine

from channels.twilio.payload import TooLarge, TwilioForm, WebhookError, parse_webhook
from channels.twilio.settings import TwilioSettings, twilio_settings
from channels.twilio.signature import SignatureChecker
from hub.http.app import ENGINE, KB, SETTINGS
from hub.queue.requests import normalise_phone

log = logging.getLogger(__name__)

TWIML = "application/xml"
Model = TypeVar("Model", bound=TwilioForm)


@dataclass
class TwilioState:
    """What the Twilio handlers share in one app."""

    settings: TwilioSettings
    checker: SignatureChecker
    hub_settings: Any
    extra: dict[str, Any] = field(default_factory=dict)
    #: The clock of the menu's service hours and the answers' "today" (tests set it).
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


TWILIO = web.AppKey("twilio_state", TwilioState)


def state(request: web.Request) -> TwilioState:
    return request.app[TWILIO]


def now(request: web.Request) -> datetime:
    return request.app[TWILIO].clock()


def engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


def kb(request: web.Request) -> Any:
    return request.app.get(KB)


def queue_service(request: web.Request) -> Any:
    """The app's queue service (intake writer, SLA policy, metrics), or None while it starts."""
    from hub.http.api_cases import QUEUE  # late: the queue's HTTP module imports the whole queue

    holder = request.app.get(QUEUE)
    return holder.service if holder is not None else None


def twiml(document: str, status: int = 200) -> web.Response:
    return web.Response(text=document, status=status, content_type=TWIML, charset="utf-8")


def refused(exc: WebhookError) -> web.Response:
    """A refusal Twilio's debugger shows: the status and a short text, never echoing the payload."""
    return web.Response(status=exc.status, text=exc.public + "\n", content_type="text/plain")


async def parse(request: web.Request, model: type[Model], route: str) -> Model:
    """The webhook as ``model``, or a :class:`WebhookError` (signature, account, fields; see payload.py)."""
    s = state(request)
    limit = s.settings.max_webhook_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the webhook body is larger than {limit} bytes")
    try:
        body = await request.read()  # bounded by [server] max_body_bytes; parse_webhook checks ours
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"the webhook body is larger than {limit} bytes") from None
    return parse_webhook(model, body, request.headers, url=s.checker.url_for(request.raw_path),
                         checker=s.checker, account_sid=s.settings.account_sid, route=route, max_bytes=limit)


#: What Twilio puts into From/Caller when the caller withheld the number (besides words like "anonymous").
WITHHELD = frozenset({"+266696687", "+7378742833", "+2562533", "+8656696", "+86282452253"})


def phone_or_none(value: str) -> str | None:
    """The number in E.164 form, or None for a withheld, anonymous or alphanumeric sender."""
    try:
        number = normalise_phone(value) if value else None
    except ValueError:
        return None
    return None if number in WITHHELD else number


def setup(app: web.Application) -> None:
    """Add the Twilio routes when the channel is on (and stop the start when it is half-configured)."""
    settings = twilio_settings(app[SETTINGS])
    if not settings.enabled:
        log.info("twilio: [twilio] account_sid is empty; the SMS and phone channels are off")
        return
    settings.require()
    app[TWILIO] = TwilioState(settings=settings, checker=SignatureChecker(settings.auth_token, settings.public_url),
                              hub_settings=app[SETTINGS])
    from channels.twilio import inbound, phone

    app.router.add_post("/twilio/sms", inbound.sms_webhook)
    app.router.add_post("/twilio/status", inbound.status_webhook)
    app.router.add_post("/twilio/voice", phone.call_webhook)
    app.router.add_post("/twilio/voice/status", phone.call_status_webhook)
    app.router.add_post("/twilio/voice/transfer", phone.transfer_webhook)
    app.router.add_post("/twilio/voice/{step}", phone.gather_webhook)
    log.info("twilio: SMS and phone webhooks under %s/twilio/", settings.public_url)
