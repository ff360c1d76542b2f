"""What the Twilio webhook handlers share: their state in the app, reading and checking a webhook, TwiML.

Every handler reads the body once (at most ``[twilio] max_webhook_bytes``), passes it through the one
parser (:func:`channels.twilio.payload.parse_webhook`: signature, account, fields) and answers a refusal
as plain text with its 4xx status, which Twilio's debugger shows; nothing of a refused webhook is stored.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.engine import Engine

from channels.twilio.payload import TooLarge, TwilioForm, WebhookError, parse_webhook
from channels.twilio.settings import TwilioSettings
from channels.twilio.signature import SignatureChecker
from hub.http.app import ENGINE, KB
from hub.http.ratelimit import LIMITS, IntakeLimited, IntakeLimits
from hub.queue.requests import normalise_phone

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
    #: Webhooks answered "try later" by the intake limits, by route (``/metrics``).
    limited: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count_limited(self, route: str) -> None:
        with self._lock:
            self.limited[route] += 1

    def limited_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.limited)


TWILIO = web.AppKey("twilio_state", TwilioState)


def state(request: web.Request) -> TwilioState:
    return request.app[TWILIO]


def now(request: web.Request) -> datetime:
    return request.app[TWILIO].clock()


def engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


def kb(request: web.Request) -> Any:
    return request.app.get(KB)


_QUEUE_KEY: list[Any] = []


def queue_service_of(app: web.Application) -> Any:
    """The app's queue service (intake writer, SLA policy, metrics), or None while it starts."""
    if not _QUEUE_KEY:
        from hub.http.api_cases import QUEUE  # late: the queue's HTTP module imports the whole queue

        _QUEUE_KEY.append(QUEUE)
    holder = app.get(_QUEUE_KEY[0])
    return holder.service if holder is not None else None


def queue_service(request: web.Request) -> Any:
    return queue_service_of(request.app)


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


def limit_keys(*numbers: str | None) -> tuple[tuple[str, str | None], ...]:
    """The intake-limit keys of a webhook: the sender's (caller's) number and any other number it names."""
    return tuple(("phone", n) for n in numbers)


def check_limits(request: web.Request, route: str, keys: tuple[tuple[str, str | None], ...]) -> IntakeLimited | None:
    """Count one request against the app's intake limits (:class:`hub.http.ratelimit.IntakeLimits`, the
    budget a number shares with every other channel); the refusal when it is over, counted by route."""
    limits: IntakeLimits | None = request.app.get(LIMITS)
    if limits is None:
        return None
    try:
        limits.check(*keys)
    except IntakeLimited as exc:
        state(request).count_limited(route)
        return exc
    return None


def refund_limits(request: web.Request, keys: tuple[tuple[str, str | None], ...]) -> None:
    """Give back what :func:`check_limits` counted for a request that cost nothing (a retry, a refusal)."""
    limits: IntakeLimits | None = request.app.get(LIMITS)
    if limits is not None:
        limits.refund(*keys)


def wait_text(seconds: int) -> str:
    """"in 5 Minuten" / "in einer Stunde": how long a limited sender should wait, in German."""
    minutes = max(1, (seconds + 59) // 60)
    if minutes >= 60:
        hours = (minutes + 59) // 60
        return "in einer Stunde" if hours == 1 else f"in {hours} Stunden"
    return "in einer Minute" if minutes == 1 else f"in {minutes} Minuten"


#: What Twilio puts into From/Caller when the caller withheld the number (besides words like "anonymous").
WITHHELD = frozenset({"+266696687", "+7378742833", "+2562533", "+8656696", "+86282452253"})


def phone_or_none(value: str) -> str | None:
    """The number in E.164 form, or None for a withheld, anonymous or alphanumeric sender."""
    try:
        number = normalise_phone(value) if value else None  # Twilio's E.164 as it is
    except ValueError:
        return None
    return None if number in WITHHELD else number
