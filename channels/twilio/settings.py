"""The ``[twilio]`` config section: the SMS and phone channels through Twilio.

The channel is on when ``account_sid`` is set. It then needs ``auth_token`` (give it as the environment
variable ``CITIZEN_HUB_TWILIO__AUTH_TOKEN``, never in ``config.toml``) and ``public_url``, the base URL
Twilio calls: webhook signatures are computed by Twilio over that URL, so behind a proxy it, not the Host
header of the request, is what they are checked against. :meth:`TwilioSettings.require` says which key is
missing; the channel's start-up calls it, so a half-configured channel stops the start instead of
refusing every webhook (the way Chatwoot lost messages).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from hub.queue.requests import normalise_phone
from knowledge.settings import ConfigError, Section

_ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}$")
_SERVICE_SID = re.compile(r"^MG[0-9a-f]{32}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}-[A-Z]{2}$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9 ._-]{1,64}$")

#: Where the Messages API is when nothing else is configured.
TWILIO_API = "https://api.twilio.com"


def _base_url(value: str, key: str) -> str:
    value = value.strip().rstrip("/")
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{key} must be an http(s) URL without query or fragment, e.g. https://hub.example.de")
    return value


class TwilioSettings(Section):
    """SMS and phone through Twilio: credentials, the public address, the numbers, the voice menu."""

    account_sid: str = Field(
        "",
        description="Account SID of the Twilio account (AC followed by 32 hex digits). Empty = the SMS and "
        "phone channels are off. Webhooks that name another account are refused with 403.",
    )
    auth_token: str = Field(
        "",
        repr=False,
        description="Auth token of the account: it signs every webhook (X-Twilio-Signature) and authenticates "
        "outbound SMS. Give it as the environment variable CITIZEN_HUB_TWILIO__AUTH_TOKEN, never in this file "
        "(the start is refused when it is here). Required when account_sid is set.",
        json_schema_extra={"environment_only": True},
    )
    public_url: str = Field(
        "",
        description="Base URL under which Twilio reaches this hub (https://hub.example.de, or with the path "
        "prefix a proxy strips). Webhook signatures are checked against it plus the request path, never "
        "against the Host header. Required when account_sid is set.",
    )
    phone_numbers: list[str] = Field(
        default_factory=list,
        description="The hub's Twilio numbers in E.164 form (+49...). The first one sends outbound SMS unless "
        "messaging_service_sid is set. In the environment: a comma-separated list.",
    )
    messaging_service_sid: str = Field(
        "",
        description="Messaging Service (MG followed by 32 hex digits) that sends outbound SMS; empty = send "
        "from the first of phone_numbers. Webhooks through a Messaging Service are checked like any other.",
    )
    api_base_url: str = Field(
        TWILIO_API,
        description="Base URL of Twilio's REST API for outbound SMS. Only tests and staging proxies change it.",
    )
    send_timeout_seconds: float = Field(
        15.0, gt=0, le=120, description="How long one outbound SMS may take at the Messages API before it "
        "counts as failed (seconds).",
    )
    max_webhook_bytes: int = Field(
        65_536, ge=4096, le=1_048_576, description="Largest webhook body accepted (bytes); larger gets 413. "
        "Twilio's largest, an MMS with ten media, is a few kilobytes.",
    )
    answer_max_segments: int = Field(
        2, ge=1, le=10, description="Most SMS segments a direct answer by SMS may take (2 = 306 GSM-7 "
        "characters or 134 UCS-2 characters); longer answers leave out details.",
    )
    voice_language: str = Field(
        "de-DE", description="Language of speech recognition (<Gather language>) and of <Say> in the phone "
        "menu, as Twilio writes it (de-DE).",
    )
    voice: str = Field(
        "Polly.Vicki", description="Voice of <Say> in the phone menu (a Twilio voice name that speaks "
        "voice_language, e.g. Polly.Vicki, Polly.Hans, Google.de-DE-Standard-A); empty = Twilio's default.",
    )
    speech_model: str = Field(
        "phone_call", description="speechModel of <Gather> (default, numbers_and_commands, phone_call or a "
        "provider model such as googlev2_telephony); empty = Twilio chooses. With a model set Twilio "
        "needs an integer speechTimeout (warning 13335 otherwise), which the menu always sends.",
    )
    speech_timeout_seconds: int = Field(
        2, ge=1, le=10, description="Seconds of silence after speech that end the caller's answer "
        "(speechTimeout of <Gather>; always an integer).",
    )
    gather_timeout_seconds: int = Field(
        6, ge=2, le=30, description="Seconds the menu waits for the caller to begin speaking or typing "
        "before it asks again.",
    )
    agent_queue: str = Field(
        "", description="Name of the Twilio queue (<Enqueue>) where callers wait for an agent during service "
        "hours. Empty = use agent_number; both empty = no transfer, the menu offers a callback.",
    )
    agent_number: str = Field(
        "", description="Phone number (E.164) the menu dials (<Dial>) to reach an agent during service hours "
        "when agent_queue is empty.",
    )

    @field_validator("account_sid")
    @classmethod
    def _account_sid(cls, value: str) -> str:
        value = value.strip()
        if value and not _ACCOUNT_SID.match(value):
            raise ValueError("account_sid must be AC followed by 32 lower-case hex digits")
        return value

    @field_validator("messaging_service_sid")
    @classmethod
    def _service_sid(cls, value: str) -> str:
        value = value.strip()
        if value and not _SERVICE_SID.match(value):
            raise ValueError("messaging_service_sid must be MG followed by 32 lower-case hex digits")
        return value

    @field_validator("auth_token")
    @classmethod
    def _token(cls, value: str) -> str:
        return value.strip()

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return _base_url(value, "public_url")

    @field_validator("api_base_url")
    @classmethod
    def _api_base_url(cls, value: str) -> str:
        value = _base_url(value, "api_base_url")
        if not value:
            raise ValueError("api_base_url must not be empty (Twilio's is " + TWILIO_API + ")")
        return value

    @field_validator("phone_numbers", mode="before")
    @classmethod
    def _split_numbers(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: "+4930123,+4940123"
            return [part.strip() for part in value.strip().strip("[]").split(",") if part.strip().strip("'\"")]
        return value

    @field_validator("phone_numbers")
    @classmethod
    def _numbers(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for raw in value:
            number = normalise_phone(raw.strip().strip("'\""))  # ValueError names the problem
            if number not in out:
                out.append(number)
        return out

    @field_validator("agent_number")
    @classmethod
    def _agent_number(cls, value: str) -> str:
        return normalise_phone(value) if value.strip() else ""

    @field_validator("agent_queue")
    @classmethod
    def _agent_queue(cls, value: str) -> str:
        value = value.strip()
        if value and not _QUEUE_NAME.match(value):
            raise ValueError("agent_queue must be 1-64 letters, digits, spaces, dots, dashes or underscores")
        return value

    @field_validator("voice_language")
    @classmethod
    def _language(cls, value: str) -> str:
        value = value.strip()
        if not _LANGUAGE.match(value):
            raise ValueError("voice_language must be a tag like de-DE (Twilio refuses 'de')")
        return value

    @property
    def enabled(self) -> bool:
        """Whether the channel is on (``account_sid`` is set)."""
        return bool(self.account_sid)

    def require(self) -> TwilioSettings:
        """Raise :class:`~hub.config.ConfigError` naming the key when the channel is on but unusable."""
        if not self.enabled:
            raise ConfigError("[twilio] account_sid is empty: the SMS and phone channels are off")
        if not self.auth_token:
            raise ConfigError("[twilio] account_sid is set but auth_token is empty: give it as the environment "
                              "variable CITIZEN_HUB_TWILIO__AUTH_TOKEN")
        if not self.public_url:
            raise ConfigError("[twilio] account_sid is set but public_url is empty: set the base URL Twilio "
                              "calls (e.g. https://hub.example.de); signatures are checked against it")
        return self

    def require_sender(self) -> TwilioSettings:
        """:meth:`require`, and a sender for outbound SMS (a number or a Messaging Service)."""
        self.require()
        if not self.messaging_service_sid and not self.phone_numbers:
            raise ConfigError("[twilio] phone_numbers and messaging_service_sid are both empty: outbound SMS "
                              "need a sender")
        return self

    @property
    def transfer_target(self) -> tuple[str, str] | None:
        """``("queue", name)`` or ``("number", e164)`` for a transfer to an agent, None when neither is set."""
        if self.agent_queue:
            return ("queue", self.agent_queue)
        if self.agent_number:
            return ("number", self.agent_number)
        return None


def twilio_settings(settings: Any) -> TwilioSettings:
    """The ``[twilio]`` section of the hub settings (the defaults while a Settings object has none)."""
    section = getattr(settings, "twilio", None)
    return section if isinstance(section, TwilioSettings) else TwilioSettings()
