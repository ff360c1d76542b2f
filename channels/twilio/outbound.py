"""Outbound SMS: the ``sms`` channel adapter of the outbox, sending through Twilio's Messages API.

It uses twilio's own async client (:class:`~twilio.http.async_http_client.AsyncTwilioHttpClient` under
:class:`twilio.rest.Client`) with the API's base URL taken from ``[twilio] api_base_url`` (tests point it at
a local server). Each message carries ``StatusCallback`` = ``public_url/twilio/status?message_id=N``, so a
delivery report finds the hub's message even when the API's answer to the send was lost.

``send`` never raises. What can be tried again is marked temporary and the outbox retries it with its
growing delays (a connection that could not be opened, 429, 502/503/504, a refused login: an operator
fixes the token); a refusal of the message itself (an invalid number, a recipient who opted out at Twilio,
error 21610) is final. When the request may have reached Twilio but no answer came (a timeout, a dropped
connection, a 500) the SMS may have gone out: that is reported as final, with a note to check, so that
it is never sent twice. Numbers that sent STOP are refused before any request (``opted_out``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from channels.twilio import gsm7
from channels.twilio.settings import TwilioSettings, twilio_settings
from channels.twilio.sms import MAX_BODY_CHARS
from hub.queue.adapters import OutboundMessage, SendResult
from hub.queue.requests import normalise_phone

log = logging.getLogger(__name__)

#: Twilio error codes that concern our configuration rather than the message: kept for retries until an
#: operator fixes it (20003 authentication, 20404 not found = wrong account, 21606/21659 the sender is not ours).
_CONFIG_CODES = frozenset({20003, 20005, 20404, 21606, 21659, 21212})
#: The recipient opted out at Twilio (STOP); final, and the hub should record it.
OPTED_OUT_AT_TWILIO = 21610

OptOutCheck = Callable[[str], "bool | Awaitable[bool]"]


def status_callback_url(settings: TwilioSettings, message_id: int) -> str:
    """Where Twilio reports the delivery of message ``message_id``."""
    return f"{settings.public_url}/twilio/status?message_id={int(message_id)}"  # an integer needs no quoting


#: A phone number (or what looks like one) in Twilio's error text: "Invalid 'To' Phone Number: +49151…".
_NUMBER_IN_TEXT = re.compile(r"\+?\d[\d ()/.-]{4,}\d")


def without_numbers(text: str) -> str:
    """Twilio's error text without the phone numbers it quotes: the detail goes into the log and the case's
    audit entries, which hold no personal data (and outlive ``forget``)."""
    return _NUMBER_IN_TEXT.sub("<Nummer>", text)


def classify(status: int, code: int | None, text: str) -> SendResult:
    """A Messages API error as a SendResult: temporary (the outbox retries) or final."""
    text = without_numbers(text)
    detail = f"Twilio {status}" + (f" error {code}" if code else "") + (f": {text}" if text else "")
    detail = detail[:500]
    if code == OPTED_OUT_AT_TWILIO:
        return SendResult.failed(f"the recipient opted out of SMS at Twilio ({detail})")
    if status in (401, 403) or (code in _CONFIG_CODES):
        return SendResult.retry(f"{detail}; check [twilio] account_sid, auth_token and the sender")
    if status == 429 or status in (502, 503, 504):
        return SendResult.retry(detail)
    if status >= 500:
        return SendResult.failed(f"{detail}; the SMS may have gone out: check the Twilio log before sending again")
    return SendResult.failed(detail)


def body_of(text: str) -> str:
    """The SMS body of an answer: with typographic characters as their GSM-7 twins (cheaper segments), unless
    that makes it longer than Twilio takes ("…" becomes "..."): then the text as it is (UCS-2)."""
    converted = gsm7.to_gsm7(text)
    return converted if len(converted) <= MAX_BODY_CHARS or len(text) > MAX_BODY_CHARS else text


class TwilioSmsAdapter:
    """The ``sms`` channel adapter: one outbound message → one POST to the Messages API. Never raises."""

    name = "sms"

    def __init__(self, settings: TwilioSettings, *, opted_out: OptOutCheck | None = None) -> None:
        self.settings = settings.require_sender()
        self.opted_out = opted_out
        self._client: Client | None = None
        self._http: AsyncTwilioHttpClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sent = 0

    def _twilio(self) -> Client:
        """The REST client of the running event loop (its aiohttp session belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._http = AsyncTwilioHttpClient()
            client = Client(self.settings.account_sid, self.settings.auth_token, http_client=self._http)
            client.api.base_url = self.settings.api_base_url  # the one place the API's address is set
            self._client, self._loop = client, loop
        return self._client

    async def close(self) -> None:
        """Close the HTTP session (at shutdown)."""
        http, self._http, self._client, self._loop = self._http, None, None, None
        if http is not None:
            await http.close()

    async def _refusal(self, message: OutboundMessage) -> str | None:
        if not message.recipient:
            return "the case has no phone number"
        try:
            recipient = normalise_phone(message.recipient)
        except ValueError:
            return "the recipient is not a phone number"
        if recipient in self.settings.phone_numbers:
            return "the recipient is one of the hub's own numbers (loop)"
        if not (message.text or "").strip():
            return "the answer is empty"
        if len(message.text) > MAX_BODY_CHARS:
            return f"the answer is longer than {MAX_BODY_CHARS} characters, the most an SMS can carry; shorten it"
        if self.opted_out is not None:
            verdict = self.opted_out(recipient)
            if asyncio.iscoroutine(verdict) or isinstance(verdict, Awaitable):
                verdict = await verdict
            if verdict:
                return "the recipient opted out of SMS (STOP); answer on another channel"
        return None

    def form(self, message: OutboundMessage) -> dict[str, Any]:
        """The Messages API parameters of ``message`` (as the client sends them)."""
        params: dict[str, Any] = {
            "to": normalise_phone(message.recipient or ""),
            "body": body_of(message.text),
            "status_callback": status_callback_url(self.settings, message.message_id),
        }
        if self.settings.messaging_service_sid:
            params["messaging_service_sid"] = self.settings.messaging_service_sid
        else:
            params["from_"] = self.settings.phone_numbers[0]
        return params

    async def send(self, message: OutboundMessage) -> SendResult:
        try:
            refusal = await self._refusal(message)
        except Exception as exc:  # the opt-out store failed: do not send blind, try again later
            return SendResult.retry(f"the opt-out check failed ({type(exc).__name__})")
        if refusal:
            return SendResult.failed(refusal)
        try:
            client = self._twilio()
            # Our own deadline: AsyncTwilioHttpClient hands aiohttp timeout=None for every request
            # (its own timeout setting is not used on the async path), which means no timeout at all.
            created = await asyncio.wait_for(
                client.api.v2010.accounts(self.settings.account_sid).messages.create_async(**self.form(message)),
                self.settings.send_timeout_seconds)
        except (TwilioRestException, TwilioServiceException) as exc:
            text = getattr(exc, "msg", None) or getattr(exc, "title", "") or ""
            result = classify(int(getattr(exc, "status", 0) or 0), getattr(exc, "code", None), str(text))
        except aiohttp.ClientConnectorError as exc:  # no connection: the request never left
            result = SendResult.retry(f"Twilio not reachable: {type(exc).__name__}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            result = SendResult.failed(f"no answer from Twilio ({type(exc).__name__}); the SMS may have gone "
                                       "out: check the Twilio log before sending again")
        except Exception as exc:  # e.g. an answer that is not JSON after the message was created
            result = SendResult.failed(f"unexpected {type(exc).__name__} from the Messages API; the SMS may "
                                       "have gone out: check the Twilio log before sending again")
        else:
            self.sent += 1
            return SendResult.sent(f"{created.sid} {created.status} at Twilio")
        log.warning("sms: message %s to Twilio failed (%s): %s", message.message_id,
                    "retry" if result.temporary else "final", result.detail)
        return result


def build_sms_adapter(settings: Any, opted_out: OptOutCheck | None = None) -> TwilioSmsAdapter:
    """Factory for the channel registry (outbound ``sms`` and ``phone``); ConfigError when Twilio is not set up.

    Without an ``opted_out`` check the adapter reads the opt-outs from the hub's database itself (its own
    small connection pool, opened at the first send).
    """
    section = twilio_settings(settings)
    if opted_out is None and getattr(settings, "database", None) is not None:
        opted_out = _database_check(settings.database.url)
    return TwilioSmsAdapter(section, opted_out=opted_out)


def _database_check(url: str) -> OptOutCheck:
    engine = None

    async def check(number: str) -> bool:
        nonlocal engine
        if engine is None:
            from hub.db import make_engine

            engine = make_engine(url)
        from channels.twilio.store import opted_out_checker

        return await opted_out_checker(engine)(number)

    return check
