"""The ``[email]`` config section: inbound SMTP/LMTP listener, IMAP poller, outbound relay, acknowledgements.

The lead wires :class:`EmailSettings` into :class:`hub.config.Settings` as ``email``. Code reads it through
:func:`email_settings`, which falls back to the defaults while a ``Settings`` object has no such section.
Secrets (``smtp_password``, ``imap_password``) are given as environment variables
(``CITIZEN_HUB_EMAIL__SMTP_PASSWORD``), never written into ``config.toml``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hub.queue.requests import normalise_email
from knowledge.settings import Section


def _domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    if not value or "@" in value or " " in value:
        raise ValueError(f"{value!r} is not a domain name")
    return value


class EmailSettings(Section):
    """E-mail: what the hub accepts, how it answers, where it fetches mail hosted elsewhere."""

    # -- inbound listener ---------------------------------------------------------------------------
    listen_host: str = Field(
        "127.0.0.1",
        description="Address the inbound SMTP/LMTP listener binds to ('citizen-hub email serve'). Keep it on "
        "a local address behind the organisation's mail server.",
    )
    listen_port: int = Field(2525, ge=1, le=65535, description="TCP port of the inbound SMTP/LMTP listener.")
    lmtp: bool = Field(
        False,
        description="Speak LMTP instead of SMTP on the listener (delivery from a local mail server, e.g. "
        "Postfix's lmtp transport). The listener takes one recipient per LMTP transaction.",
    )
    hostname: str = Field(
        "", description="Host name the listener greets with; empty = this machine's fully qualified name."
    )
    address: str = Field(
        "anliegen@hub.localhost",
        description="The hub's own address: sender of acknowledgements and answers, envelope sender for "
        "bounces. Mail from it is never answered (no loops).",
    )
    display_name: str = Field(
        "Bürgerservice", description="Display name in the From header of outbound mail and the ack signature."
    )
    accepted_domains: list[str] = Field(
        default_factory=list,
        description="Recipient domains the listener accepts mail for, besides the domain of 'address'. Mail "
        "for any other domain is refused with 550 5.7.1 (the hub is never a relay). In the environment: "
        "a comma-separated list.",
    )
    max_message_bytes: int = Field(
        36_700_160,
        ge=10_000,
        description="Largest message the listener accepts (bytes, as transmitted, i.e. with base64 "
        "overhead); larger gets 552.",
    )
    max_attachment_bytes: int = Field(
        10_485_760,
        ge=1,
        description="Largest single attachment taken into a request (bytes, decoded); the [queue] limits "
        "apply too. A larger one is left out, the request text says so, and the original mail is kept.",
    )
    max_mime_parts: int = Field(
        1000,
        ge=1,
        description="Most MIME parts the listener parses of one mail; parsing stops there (the first parts are "
        "taken, the original mail is kept whole and the case says what was cut). A hostile mail of 330,000 "
        "tiny parts took 22 s and 433 MB to parse in full.",
    )
    max_mime_depth: int = Field(
        20,
        ge=1,
        le=100,
        description="Deepest MIME nesting the listener parses (multiparts and attached mails inside each "
        "other); parsing stops at the first deeper part, as for max_mime_parts.",
    )
    raw_mail_dir: str = Field(
        "var/mail",
        description="Directory where every accepted mail is kept byte for byte (named by its SHA-256), "
        "written and fsynced before the request is committed; the request's raw_ref points to it.",
    )
    io_threads: int = Field(
        16,
        ge=1,
        le=256,
        description="Threads that write (fsync) and parse inbound mail; fsync waits overlap across them, "
        "so more threads carry more concurrent mail on slow disks.",
    )
    # -- acknowledgements ---------------------------------------------------------------------------
    ack_enabled: bool = Field(
        True,
        description="Send an acknowledgement with the case token when a mail opens a new case, to its From "
        "address only (never Reply-To) and without repeating its subject (never to automatic mail, bulk/list "
        "mail, mailer-daemons or our own address).",
    )
    ack_language: Literal["auto", "de", "en"] = Field(
        "auto",
        description="Language of acknowledgements: de, en, or auto (English when the mail says it is English "
        "or reads like it, else German).",
    )
    ack_rate_limit: int = Field(
        3,
        ge=0,
        description="Most acknowledgements one sender address gets within ack_rate_window_seconds (per hub "
        "process); 0 = no acknowledgements.",
    )
    ack_rate_window_seconds: float = Field(
        3600.0, gt=0, description="Window of the acknowledgement limits, per address and global (seconds)."
    )
    ack_global_limit: int = Field(
        500,
        ge=0,
        description="Most acknowledgements (and web-form confirmation mails) all addresses together get within "
        "ack_rate_window_seconds (per hub process): a flood with forged senders cannot make the hub send more "
        "(backscatter). Cases are opened all the same; 0 = no acknowledgements.",
    )
    # -- outbound relay -----------------------------------------------------------------------------
    smtp_host: str = Field("localhost", description="Mail server (relay) outbound mail is handed to.")
    smtp_port: int = Field(
        25, ge=1, le=65535, description="Port of the relay: usually 25 (plain/STARTTLS), 587 (STARTTLS), 465 (TLS)."
    )
    smtp_starttls: bool = Field(
        False, description="Require STARTTLS on the relay connection (fail rather than send in clear)."
    )
    smtp_tls: bool = Field(False, description="Connect to the relay with implicit TLS (port 465).")
    smtp_validate_certs: bool = Field(
        True, description="Check the relay's TLS certificate (turn off only for a relay on localhost)."
    )
    smtp_username: str = Field("", description="User name for SMTP AUTH at the relay; empty = no AUTH.")
    smtp_password: str = Field(
        "",
        description="Password for SMTP AUTH. Give it as CITIZEN_HUB_EMAIL__SMTP_PASSWORD, not in the file.",
    )
    smtp_timeout_seconds: float = Field(
        30.0, gt=0, description="Give up one delivery attempt to the relay after this many seconds (retried later)."
    )
    # -- IMAP poller --------------------------------------------------------------------------------
    imap_host: str = Field(
        "", description="IMAP server of a mailbox hosted elsewhere ('citizen-hub email poll-imap'); empty = off."
    )
    imap_port: int = Field(993, ge=1, le=65535, description="IMAP port: 993 with imap_tls, 143 without.")
    imap_tls: bool = Field(True, description="Connect to the IMAP server with implicit TLS (port 993).")
    imap_starttls: bool = Field(False, description="Upgrade a plain IMAP connection with STARTTLS.")
    imap_validate_certs: bool = Field(
        True, description="Check the IMAP server's TLS certificate (turn off only for a server on localhost)."
    )
    imap_username: str = Field("", description="IMAP login name.")
    imap_password: str = Field(
        "", description="IMAP password. Give it as CITIZEN_HUB_EMAIL__IMAP_PASSWORD, not in the file."
    )
    imap_folder: str = Field("INBOX", description="Folder polled for unseen mail.")
    imap_poll_seconds: float = Field(
        60.0, gt=0, description="Pause between two polls of the IMAP folder (seconds)."
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return normalise_email(v)

    @field_validator("accepted_domains", mode="before")
    @classmethod
    def _domains(cls, v: Any) -> Any:
        if isinstance(v, str):  # from the environment: "a.de, b.de"
            v = [part for part in v.split(",") if part.strip()]
        if isinstance(v, list | tuple):
            return [_domain(str(d)) for d in v]
        return v

    @model_validator(mode="after")
    def _tls(self) -> EmailSettings:
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError("smtp_tls (implicit TLS) and smtp_starttls exclude each other; choose one")
        if self.imap_tls and self.imap_starttls:
            raise ValueError("imap_tls (implicit TLS) and imap_starttls exclude each other; choose one")
        if self.smtp_password and not self.smtp_username:
            raise ValueError("smtp_password is set but smtp_username is empty")
        return self

    @property
    def own_domain(self) -> str:
        return self.address.rsplit("@", 1)[1]

    def domains(self) -> frozenset[str]:
        """Every recipient domain the listener accepts."""
        return frozenset({self.own_domain, *self.accepted_domains})


def email_settings(settings: Any) -> EmailSettings:
    """The ``[email]`` section of ``settings``, or the defaults when it has none."""
    value = getattr(settings, "email", None)
    return value if isinstance(value, EmailSettings) else EmailSettings()
