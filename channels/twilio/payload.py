"""Twilio's webhook forms as validated models, and the one parser every webhook goes through.

:func:`parse_webhook` is a pure function from the raw body bytes and the headers to a validated payload,
or a :class:`WebhookError` that says what to answer (status and a short text). It checks, in this order:
size, content type, UTF-8, the signature (twilio's ``RequestValidator`` over ``public_url`` + path and
*every* parameter sent, known or not: Twilio adds parameters without notice), the account, and only then
the fields. So an unsigned or forged request learns nothing about which fields the hub expects, and a
new Twilio parameter never breaks the check. Hypothesis fuzzes this function (``tests/test_twilio_fuzz.py``).

The models name every field Twilio sends on that webhook (see the recorded payloads in
``tests/fixtures/twilio/``); fields the hub does not use are kept for completeness and unknown ones are
ignored. Error messages name fields, never their values (which are citizens' messages and numbers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import unquote_to_bytes

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_pascal

from channels.twilio.signature import SignatureChecker

#: Most parameters one webhook may carry (an MMS with ten media has about 45).
MAX_FIELDS = 400
#: Most media Twilio attaches to one MMS.
MAX_MEDIA = 10

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")

Short = Annotated[str, StringConstraints(max_length=200)]
AccountSid = Annotated[str, StringConstraints(pattern=r"^AC[0-9a-f]{32}$")]
MessageSid = Annotated[str, StringConstraints(pattern=r"^(SM|MM)[0-9a-f]{32}$")]
CallSid = Annotated[str, StringConstraints(pattern=r"^CA[0-9a-f]{32}$")]
OptionalServiceSid = Annotated[str, StringConstraints(pattern=r"^(MG[0-9a-f]{32})?$")]
Address = Annotated[str, StringConstraints(max_length=64)]


# -- errors ---------------------------------------------------------------------------------------------------


class WebhookError(Exception):
    """A webhook the hub does not take; ``status`` and ``public`` are the HTTP answer, ``reason`` a label."""

    status = 400
    reason = "invalid"

    def __init__(self, public: str) -> None:
        super().__init__(public)
        self.public = public


class TooLarge(WebhookError):
    status, reason = 413, "too_large"


class NotAForm(WebhookError):
    status, reason = 415, "not_a_form"


class NotUtf8(WebhookError):
    status, reason = 400, "not_utf8"


class BadSignature(WebhookError):
    """Unsigned, forged or signed with an algorithm the hub does not know: 403, nothing stored."""

    status, reason = 403, "signature"


class WrongAccount(WebhookError):
    status, reason = 403, "wrong_account"


class InvalidPayload(WebhookError):
    status, reason = 400, "invalid_payload"


# -- models ---------------------------------------------------------------------------------------------------


def _clean(value: str) -> str:
    """Control characters (other than tab and line breaks) become spaces: they carry nothing a citizen meant."""
    return _CONTROL.sub(" ", value) if not (value.isascii() and value.isprintable()) else value


class TwilioForm(BaseModel):
    """What every Twilio webhook carries: the account, the API version, the two ends and their geography."""

    model_config = ConfigDict(extra="ignore", frozen=True, alias_generator=to_pascal, populate_by_name=True,
                              str_max_length=20_000)

    account_sid: AccountSid
    api_version: Short = ""
    from_: Address = Field("", validation_alias=AliasChoices("From", "from_"), serialization_alias="From")
    to: Address = ""
    from_city: Short = ""
    from_state: Short = ""
    from_zip: Short = ""
    from_country: Short = ""
    to_city: Short = ""
    to_state: Short = ""
    to_zip: Short = ""
    to_country: Short = ""


class Media(BaseModel):
    """One media item of an MMS: where Twilio keeps it and its type (the hub stores the URL, not the bytes)."""

    model_config = ConfigDict(frozen=True)

    url: Annotated[str, StringConstraints(max_length=1000, pattern=r"^https://[^\s]+$")]
    content_type: str

    @field_validator("content_type")
    @classmethod
    def _type(cls, value: str) -> str:
        value = value.strip().lower()
        if not _MEDIA_TYPE.match(value) or len(value) > 127:
            raise ValueError("is not a media type")
        return value


class SmsWebhook(TwilioForm):
    """An incoming SMS or MMS (``POST /twilio/sms``)."""

    message_sid: MessageSid
    sms_sid: Short = ""
    sms_message_sid: Short = ""
    sms_status: Short = ""
    messaging_service_sid: OptionalServiceSid = ""
    body: str = ""
    num_media: int = Field(0, ge=0, le=MAX_MEDIA)
    num_segments: int = Field(1, ge=0, le=100)
    referral_num_media: int = Field(0, ge=0, le=MAX_MEDIA)
    #: Set by Twilio's Advanced Opt-Out when it recognised a keyword itself: STOP, START or HELP.
    opt_out_type: Short = ""
    media: tuple[Media, ...] = Field((), alias="Media")

    @field_validator("body")
    @classmethod
    def _body(cls, value: str) -> str:
        return _clean(value)

    @model_validator(mode="before")
    @classmethod
    def _collect_media(cls, data: Any) -> Any:
        """MediaUrl0/MediaContentType0 ... MediaUrlN-1 become one list (only as many as NumMedia says)."""
        if not isinstance(data, Mapping) or "Media" in data:
            return data
        try:
            count = int(str(data.get("NumMedia", "0")).strip() or "0")
        except ValueError:
            return data  # the field validator reports it
        if count <= 0:
            return data  # no media: the field keeps its default, and the form is not copied
        items = []
        for index in range(min(count, MAX_MEDIA)):
            url, kind = data.get(f"MediaUrl{index}"), data.get(f"MediaContentType{index}")
            if url is None or kind is None:
                raise ValueError(f"NumMedia is {count} but MediaUrl{index}/MediaContentType{index} is missing")
            items.append({"url": url, "content_type": kind})
        return {**data, "Media": items}

    @property
    def keyword(self) -> str:
        """The body as a keyword is compared: trimmed, upper-case, without trailing punctuation."""
        return self.body.strip().rstrip(".!").strip().upper()


CallStatus = Literal["queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed", "no-answer",
                     "canceled"]


class VoiceWebhook(TwilioForm):
    """An incoming call (``POST /twilio/voice``); the fields every voice webhook of the call repeats."""

    call_sid: CallSid
    call_status: CallStatus
    direction: Short = "inbound"
    call_token: Annotated[str, StringConstraints(max_length=4000)] = ""
    caller: Address = ""
    called: Address = ""
    caller_name: Short = ""
    forwarded_from: Address = ""
    parent_call_sid: Short = ""
    stir_verstat: Short = ""
    caller_city: Short = ""
    caller_state: Short = ""
    caller_zip: Short = ""
    caller_country: Short = ""
    called_city: Short = ""
    called_state: Short = ""
    called_zip: Short = ""
    called_country: Short = ""


class GatherWebhook(VoiceWebhook):
    """The result of a ``<Gather>`` (``POST /twilio/voice/...``): what the caller said or typed."""

    speech_result: Annotated[str, StringConstraints(max_length=5000)] = ""
    confidence: float | None = Field(None, ge=0.0, le=1.0)
    digits: Annotated[str, StringConstraints(max_length=64, pattern=r"^[0-9*#wW]*$")] = ""
    finished_on_key: Annotated[str, StringConstraints(max_length=1)] = ""
    msg: Short = ""

    @field_validator("speech_result")
    @classmethod
    def _speech(cls, value: str) -> str:
        return " ".join(_clean(value).split())

    @field_validator("confidence", mode="before")
    @classmethod
    def _confidence(cls, value: Any) -> Any:
        return None if value in ("", None) else value


class TransferWebhook(VoiceWebhook):
    """How a transfer to an agent ended: the action of ``<Enqueue>`` or ``<Dial>``."""

    queue_result: Short = ""  # bridged, bridging-in-process, queue-full, redirected, hangup, leave, error, system-error
    queue_sid: Short = ""
    queue_time: int | None = Field(None, ge=0)
    dial_call_status: Short = ""  # completed, answered, busy, no-answer, failed, canceled
    dial_call_sid: Short = ""
    dial_call_duration: int | None = Field(None, ge=0)

    @field_validator("queue_time", "dial_call_duration", mode="before")
    @classmethod
    def _blank_int(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    @property
    def result(self) -> str:
        return self.queue_result or self.dial_call_status


class CallStatusWebhook(VoiceWebhook):
    """A call's status callback (``POST /twilio/voice/status``): the call ended, and how."""

    call_duration: int | None = Field(None, ge=0)
    duration: int | None = Field(None, ge=0)
    timestamp: Short = ""
    callback_source: Short = ""
    sequence_number: int | None = Field(None, ge=0)
    sip_response_code: Short = ""

    @field_validator("call_duration", "duration", "sequence_number", mode="before")
    @classmethod
    def _blank_int(cls, value: Any) -> Any:
        return None if value in ("", None) else value


MessageStatus = Literal["accepted", "scheduled", "canceled", "queued", "sending", "sent", "failed", "delivered",
                        "undelivered", "receiving", "received", "read", "partially_delivered"]


class MessageStatusWebhook(TwilioForm):
    """A status callback of an outbound SMS (``POST /twilio/status``)."""

    message_sid: MessageSid
    message_status: MessageStatus
    sms_sid: Short = ""
    sms_status: Short = ""
    messaging_service_sid: OptionalServiceSid = ""
    error_code: int | None = Field(None, ge=0, le=999_999)
    error_message: Short = ""
    raw_dlr_done_date: Short = ""
    channel_to_address: Address = ""
    channel_prefix: Short = ""
    channel_install_sid: Short = ""

    @field_validator("error_code", mode="before")
    @classmethod
    def _blank_code(cls, value: Any) -> Any:
        return None if value in ("", None) else value


# -- parsing --------------------------------------------------------------------------------------------------


def parse_form(body: bytes, content_type: str | None, *, max_bytes: int) -> MultiDict[str]:
    """The ``application/x-www-form-urlencoded`` body as a multidict (every value, in order).

    Raises :class:`TooLarge`, :class:`NotAForm` or :class:`NotUtf8`. A percent-escape that is not UTF-8
    is refused, never stored as U+FFFD.
    """
    return MultiDict(parse_pairs(body, content_type, max_bytes=max_bytes))


def parse_pairs(body: bytes, content_type: str | None, *, max_bytes: int) -> list[tuple[str, str]]:
    """:func:`parse_form` as the list of ``(name, value)`` pairs, in order (what :func:`parse_webhook` uses:
    the signature and the fields are read from the pairs, without building a multidict)."""
    if len(body) > max_bytes:
        raise TooLarge(f"the webhook body is larger than {max_bytes} bytes")
    media_type, _, params = (content_type or "").partition(";")
    if media_type.strip().lower() != "application/x-www-form-urlencoded":
        raise NotAForm("a Twilio webhook is an application/x-www-form-urlencoded form")
    if params:
        charset = re.search(r"charset\s*=\s*\"?([A-Za-z0-9_-]+)", params)
        if charset and charset.group(1).lower().replace("_", "-") not in ("utf-8", "utf8", "us-ascii"):
            raise NotUtf8("the form must be UTF-8")
    try:
        text = body.decode("utf-8")
        pairs = form_pairs(text)
    except UnicodeDecodeError:
        raise NotUtf8("the form is not valid UTF-8") from None
    except ValueError:  # more fields than MAX_FIELDS
        raise TooLarge(f"the form has more than {MAX_FIELDS} fields") from None
    if "\x00" in text or "%00" in text:  # the field names are looked at only when a NUL may be in one
        for key, _value in pairs:
            if "\x00" in key:
                raise InvalidPayload("a field name contains a NUL character")
    return pairs


def form_pairs(text: str) -> list[tuple[str, str]]:
    """``parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)``, in a third of
    its time: most of Twilio's fields need no unquoting (the fuzz tests check the two agree on any text).
    Raises ValueError for too many fields and UnicodeDecodeError for an escape that is not UTF-8."""
    if text.count("&") + 1 > MAX_FIELDS:
        raise ValueError("too many fields")
    pairs: list[tuple[str, str]] = []
    append = pairs.append
    for piece in text.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        # unquote_to_bytes + a strict decode is unquote(…, "utf-8", "strict") in half its time: the text
        # came from UTF-8, so an escape sequence broken by a literal non-ASCII character is invalid either way.
        if "+" in name or "%" in name:
            name = unquote_to_bytes(name.replace("+", " ")).decode("utf-8")
        if "+" in value or "%" in value:
            value = unquote_to_bytes(value.replace("+", " ")).decode("utf-8")
        append((name, value))
    return pairs


def first_values(form: MultiDict[str] | list[tuple[str, str]]) -> dict[str, str]:
    """One value per key: the first, as Twilio sends each key once (``form``: a multidict or its pairs)."""
    pairs = form if isinstance(form, list) else list(form.items())
    return dict(reversed(pairs))  # the first of a repeated key is put last, so it stays


def _describe(exc: ValidationError) -> str:
    fields = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error.get("loc", ())) or "form"
        fields.append(f"{where} ({error.get('type', 'invalid')})")
    return "invalid webhook fields: " + ", ".join(sorted(set(fields))[:10])


Model = TypeVar("Model", bound=TwilioForm)


def parse_webhook(
    model: type[Model],
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str,
    checker: SignatureChecker,
    account_sid: str,
    route: str = "",
    max_bytes: int = 65_536,
) -> Model:
    """Raw webhook (body bytes, headers, the URL Twilio signed) → validated ``model``, or a :class:`WebhookError`.

    Never raises anything else. Signature failures are logged and counted by ``checker`` under ``route``.
    """
    headers = headers if isinstance(headers, CIMultiDict | CIMultiDictProxy) else CIMultiDict(headers)
    pairs = parse_pairs(body, headers.get("Content-Type"), max_bytes=max_bytes)
    reason = checker.check(route or url, url, pairs, headers)
    if reason is not None:
        raise BadSignature("the request is not signed by this hub's Twilio account (X-Twilio-Signature)")
    values = first_values(pairs)
    if values.get("AccountSid") != account_sid:
        raise WrongAccount("the webhook names another Twilio account")
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise InvalidPayload(_describe(exc)) from None
    except (ValueError, TypeError) as exc:  # a before-validator refused the shape
        raise InvalidPayload(f"invalid webhook: {type(exc).__name__}") from None
