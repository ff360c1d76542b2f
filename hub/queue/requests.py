"""The normalized inbound request every channel hands to the queue.

A channel (web form, email, SMS, phone note, scanned paper form, the HTTP API) validates its raw
payload at the edge and builds one :class:`InboundRequest`; :mod:`hub.queue.intake` turns it into a message
of a case. Validation happens here, so a request that passes is safe to store and to show.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

#: Channels a request can arrive on. A case answers on the channel it arrived on.
#: ``open311`` is a GeoReport v2 client (FixMyStreet, a city app): answers are picked up with GET requests.
CHANNELS = ("api", "web", "email", "sms", "phone", "paper", "open311")

#: The channels as agents and citizens read them (console, messages): the one German name of each.
CHANNEL_LABELS = {"api": "API", "web": "Web", "email": "E-Mail", "sms": "SMS", "phone": "Telefon", "paper": "Papier",
                  "open311": "Open311"}


#: How an agent's written answer on a channel reaches the citizen, where that is not the channel itself: a written
#: answer to a phone case goes to the caller's number as an SMS (the console's "Antwort per SMS").
ANSWER_LABELS = {"api": "über die API", "web": "über die Statusseite (Web)", "email": "per E-Mail",
                 "sms": "per SMS", "phone": "per SMS an die Nummer des Anrufs", "paper": "per Brief",
                 "open311": "über Open311"}


def channel_label(channel: str | None) -> str:
    """The German name of a channel (the value itself when it is none of ours)."""
    return CHANNEL_LABELS.get(str(channel), str(channel))

#: Channels whose sender is identified by a phone number (threading by phone).
PHONE_CHANNELS = frozenset({"sms", "phone"})

# Control characters other than tab, line feed and carriage return are rejected rather than silently
# dropped: they never occur in honest input, and a payload that carries them is malformed.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_EMAIL_RE = re.compile(r"^[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+\.[^@\s<>\"(),;:]+$")
_SINGLE_LINE = re.compile(r"[\r\n\t]")


def clean_text(value: str, *, single_line: bool = False) -> str:
    """NFC-normalise ``value``; raise ``ValueError`` on control characters (and line breaks if single-line)."""
    if value.isascii() and value.isprintable():
        # The common case, answered by two C scans: printable ASCII has no control character, no
        # line break, no surrogate, and is its own NFC form.
        return value
    if _CONTROL_RE.search(value):
        raise ValueError("contains control characters")
    if single_line and _SINGLE_LINE.search(value):
        raise ValueError("must be a single line")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains invalid unicode (lone surrogates)") from None
    return unicodedata.normalize("NFC", value)


def normalise_email(value: str) -> str:
    """Lower-case and check the shape of an e-mail address (``ValueError`` if it has none)."""
    value = value.strip().lower()
    if not _EMAIL_RE.match(value) or len(value) > 254:
        raise ValueError("is not an e-mail address")
    return value


_TRUNK_ZERO = re.compile(r"^(?:\+|00)\s*(\d{1,3})\s*\(\s*0\s*\)")


def is_e164(value: str) -> bool:
    """Whether ``value`` is a number in E.164 form (``+`` and 6 to 15 digits): :func:`normalise_phone` of it."""
    digits = value[1:]
    return value[:1] == "+" and digits.isascii() and digits.isdigit() and 6 <= len(digits) <= 15


def normalise_phone(value: str, default_country: str = "49") -> str:
    """A phone number in E.164 form (``+4945511234``); German national numbers get ``+49``.

    Spaces, dashes, dots, slashes and parentheses are ignored; ``00`` is read as ``+``; the trunk zero
    written after a country code (``+49 (0)4551 …``) is dropped. Raises ``ValueError`` for anything that is
    not a plausible number.
    """
    if is_e164(value):  # as Twilio and the hub's own rows give it: the answer already
        return value
    raw = _TRUNK_ZERO.sub(r"+\1", value.strip())
    raw = re.sub(r"[\s\-./()]", "", raw)
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    elif raw.startswith("0"):
        raw = "+" + default_country + raw[1:]
    elif not raw.startswith("+"):
        raise ValueError("is not a phone number (give it with area code)")
    digits = raw[1:]
    if not (digits.isascii() and digits.isdigit()) or not 6 <= len(digits) <= 15:
        raise ValueError("is not a phone number")
    return "+" + digits


Line = Annotated[str, StringConstraints(max_length=500)]


class Contact(BaseModel):
    """How to reach the citizen; every part is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Line | None = Field(None, description="Name as the citizen gave it.")
    email: Line | None = Field(None, description="E-mail address (stored lower-case).")
    phone: Line | None = Field(None, description="Phone number (stored in E.164 form).")
    postal_address: Annotated[str, StringConstraints(max_length=1000)] | None = Field(
        None, description="Postal address, lines separated by line breaks."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return (clean_text(v, single_line=True).strip() or None) if v is not None else None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        return normalise_email(clean_text(v, single_line=True))

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if is_e164(v):  # a channel normalised it already (Twilio's From): once is enough
            return v
        if not v.strip():
            return None
        return normalise_phone(clean_text(v, single_line=True))

    @field_validator("postal_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return (clean_text(v).strip() or None) if v is not None else None

    def is_empty(self) -> bool:
        return not (self.name or self.email or self.phone or self.postal_address)


class AttachmentIn(BaseModel):
    """One file that came with a request; stored outside the database row by :mod:`hub.queue.intake`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    content_type: Annotated[str, StringConstraints(min_length=3, max_length=127)] = "application/octet-stream"
    data: bytes = Field(b"", repr=False)
    url: Annotated[str, StringConstraints(max_length=1000, pattern=r"^https://\S+$")] | None = Field(
        None, description="Where a provider keeps the file (MMS media): recorded instead of bytes.")

    @field_validator("filename")
    @classmethod
    def _filename(cls, v: str) -> str:
        v = clean_text(v, single_line=True).strip()
        # Only the last path component: a file name must never address a directory.
        v = v.replace("\\", "/").rsplit("/", 1)[-1]
        if v in ("", ".", ".."):
            raise ValueError("is not a file name")
        return v

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, v: str) -> str:
        v = v.strip().lower()
        if not re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*", v):
            raise ValueError("is not a media type")
        return v

    @model_validator(mode="after")
    def _bytes_or_url(self) -> AttachmentIn:
        if self.url is not None and self.data:
            raise ValueError("an attachment has either bytes or a URL, not both")
        return self


ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class InboundRequest(BaseModel):
    """One request from a citizen, the same for every channel.

    ``(channel, external_id)`` is the idempotency key: the e-mail Message-ID, the Twilio MessageSid,
    the web submission id, the paper form id. Handing the same key over twice creates nothing new.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str = Field(description="One of " + ", ".join(CHANNELS) + ".")
    external_id: ExternalId = Field(description="The channel's own id of this request (idempotency key).")
    received_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC), description="When the channel received it (timezone-aware)."
    )
    contact: Contact = Field(default_factory=Contact, description="The sender.")
    text: str = Field("", description="What the citizen wrote or said, as plain text.")
    subject: Line | None = Field(None, description="E-mail subject or form title, if any.")
    location: Line | None = Field(None, description="Place the request is about (name, postcode, AGS), if given.")
    in_reply_to: list[ExternalId] = Field(
        default_factory=list,
        max_length=100,
        description="External ids of earlier messages this one follows up on, on the same channel: the "
        "e-mail In-Reply-To and References ids, the form id printed on a paper reply form.",
    )
    case_token: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="A case token the channel found in the request (it is also looked for in the subject)."
    )
    attachments: list[AttachmentIn] = Field(default_factory=list, description="Files that came with it.")
    service_id: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        None, description="The service the client named (an Open311 service_code the catalogue knows): the "
        "case is routed by it, and its text decides only the office.")
    raw_ref: Annotated[str, StringConstraints(max_length=1000)] | None = Field(
        None, description="Where the raw payload is kept (path or URL), for audits; not the payload itself."
    )
    reply_channel: str | None = Field(
        None, description="The channel the citizen asked to be answered on, when it is not the one the request "
        "came by (a web-form citizen who chose 'Per E-Mail': email). None = the request's own channel.")
    auto_reply: Line | None = Field(
        None, description="Why this is an automatic answer (an out-of-office notice, an auto-responder), or None. "
        "It is recorded on the open case it threads onto, changes nothing there, and never opens a case.")

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        if v not in CHANNELS:
            raise ValueError(f"unknown channel; expected one of {', '.join(CHANNELS)}")
        return v

    @field_validator("reply_channel")
    @classmethod
    def _reply_channel(cls, v: str | None) -> str | None:
        if v is not None and v not in CHANNELS:
            raise ValueError(f"unknown channel; expected one of {', '.join(CHANNELS)}")
        return v

    @field_validator("external_id", "case_token", "raw_ref", "service_id")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = clean_text(v, single_line=True).strip()
        if not v:
            raise ValueError("must not be blank")
        return v

    @field_validator("in_reply_to")
    @classmethod
    def _refs(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for ref in v:
            ref = clean_text(ref, single_line=True).strip()
            if ref and ref not in out:
                out.append(ref)
        return out

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return clean_text(v)

    @field_validator("subject", "location")
    @classmethod
    def _line(cls, v: str | None) -> str | None:
        return (clean_text(v, single_line=True).strip() or None) if v is not None else None

    @field_validator("received_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("must be timezone-aware")
        return v.astimezone(UTC)

    @model_validator(mode="after")
    def _not_empty(self) -> InboundRequest:
        if not self.text.strip() and not self.attachments:
            raise ValueError("a request needs a text or an attachment")
        return self

    def key(self) -> tuple[str, str]:
        """The idempotency key."""
        return (self.channel, self.external_id)
