"""Config section of the web channel (``[web]``): citizen form, status page and the Open311 endpoint.

It is the ``web`` section of :class:`hub.config.Settings`; the channels read it as
``app[hub.http.app.SETTINGS].web``. Secrets come from the environment: ``CITIZEN_HUB_WEB__CSRF_SECRET``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from knowledge.settings import Section

#: Attachment types the form can accept: the type is taken from the file's first bytes (see
#: ``channels.web.form.sniff_type``), never from what the browser claims.
SNIFFABLE_TYPES = ("application/pdf", "image/jpeg", "image/png", "image/gif", "image/webp")


class WebSettings(Section):
    """Citizen web form, status page and Open311 GeoReport v2."""

    default_language: Literal["de", "en"] = Field(
        "de", description="Language of the citizen pages when the citizen has not chosen one (de or en)."
    )
    public_base_url: str = Field(
        "",
        description="Public address of the hub as citizens and 311 clients reach it "
        "(https://service.example.de), for absolute links; empty = taken from each request's Host header.",
    )
    csrf_secret: str = Field(
        "",
        repr=False,
        description="Key that signs the form tokens (at least 32 characters); give it as the environment "
        "variable CITIZEN_HUB_WEB__CSRF_SECRET. Empty = a random key per process: forms opened before a "
        "restart, or served by another hub process, are then refused once.",
    )
    csrf_max_age_seconds: int = Field(
        7200, ge=60, description="How long a loaded form can be sent (seconds); older forms must be reloaded."
    )
    write_rate_per_minute: float = Field(
        6.0,
        gt=0,
        description="Form posts (submit, show suggestions, follow-ups) one client may send per minute "
        "on average; more get 429.",
    )
    write_burst: int = Field(
        10, ge=1, description="Form posts one client may send at once before the rate applies."
    )
    read_rate_per_minute: float = Field(
        60.0,
        gt=0,
        description="Suggestion look-ups and status page views one client may make per minute on average.",
    )
    read_burst: int = Field(
        30, ge=1, description="Look-ups one client may make at once before the rate applies."
    )
    trust_forwarded_for: bool = Field(
        False,
        description="Take the client address for rate limits from the last X-Forwarded-For entry. Only "
        "behind a reverse proxy that sets it; otherwise clients could choose their own address.",
    )
    max_text_chars: int = Field(10_000, ge=100, description="Longest text the form accepts (characters).")
    max_upload_bytes: int = Field(
        5_242_880,
        ge=1024,
        description="Largest single attachment of the form or of an Open311 request (bytes); "
        "larger gets 413.",
    )
    max_attachments: int = Field(
        3, ge=0, le=20, description="Most attachments one form submission may carry."
    )
    allowed_attachment_types: list[str] = Field(
        default_factory=lambda: ["application/pdf", "image/jpeg", "image/png"],
        description="Attachment types accepted, judged by the file content: any of "
        + ", ".join(SNIFFABLE_TYPES)
        + ".",
    )
    suggest_max_services: int = Field(
        3, ge=1, le=10, description="Most matching services shown to the citizen while typing."
    )
    open311_type: Literal["realtime", "batch"] = Field(
        "realtime",
        description="Open311 service type: 'realtime' answers a POST with the service_request_id, "
        "'batch' with a token that GET tokens/{token} turns into the id.",
    )
    open311_endpoint_type: Literal["production", "test"] = Field(
        "production", description="Open311 discovery: whether requests sent to this endpoint are acted upon."
    )
    open311_jurisdiction_ids: list[str] = Field(
        default_factory=list,
        description="Extra jurisdiction_id values accepted besides the ARS/AGS of any known region "
        "(for instance the municipality's domain, 'norderstedt.de'). An unknown jurisdiction_id gets 404.",
    )
    imprint_url: str = Field(
        "",
        description="Address of the operator's Impressum (legal notice, § 5 DDG), linked in the footer of every "
        "citizen page; http(s) or a path on this host. Empty = no link (and a warning at start-up).",
    )
    privacy_url: str = Field(
        "",
        description="Address of the privacy notice (Datenschutzerklärung, Art. 13 DSGVO), linked in the footer "
        "of every citizen page. Empty = no link (and a warning at start-up).",
    )
    accessibility_url: str = Field(
        "",
        description="Address of the accessibility statement (Erklärung zur Barrierefreiheit, BITV 2.0), linked "
        "in the footer of every citizen page. Empty = no link (and a warning at start-up).",
    )
    open311_contact: str = Field(
        "Ask the operator of this citizen-hub.",
        description="Open311 discovery: how to reach the people who run this endpoint.",
    )
    open311_key_service: str = Field(
        "API keys are issued by the operator: citizen-hub token add NAME --role open311",
        description="Open311 discovery: how a 311 client gets an api_key.",
    )

    @field_validator("csrf_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("must be at least 32 characters (or empty for a random key per process)")
        return value

    @field_validator("allowed_attachment_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        out = [v.strip().lower() for v in value]
        unknown = [v for v in out if v not in SNIFFABLE_TYPES]
        if unknown:
            raise ValueError(f"cannot check {', '.join(unknown)}; known types: {', '.join(SNIFFABLE_TYPES)}")
        return out

    @field_validator("imprint_url", "privacy_url", "accessibility_url")
    @classmethod
    def _link(cls, value: str) -> str:
        value = value.strip()
        if value and not (value.startswith(("http://", "https://")) or (value.startswith("/")
                                                                       and not value.startswith("//"))):
            raise ValueError("must start with http://, https:// or / (a path on this host)")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

