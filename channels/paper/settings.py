"""The ``[paper]`` config section: the form code's key, the folders, and the limits of scan intake.

Code reads it through :func:`paper_settings`, which falls back to the defaults while a ``Settings``
object has no such section. The HMAC key is a secret: give it as ``CITIZEN_HUB_PAPER__HMAC_KEY``
(and retired keys as ``CITIZEN_HUB_PAPER__PREVIOUS_HMAC_KEYS``), never in ``config.toml``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from knowledge.settings import ConfigError, Section

#: Shortest HMAC key accepted: 32 characters (a key of `openssl rand -base64 32` has 44).
MIN_KEY_CHARS = 32


def _key(value: str) -> str:
    value = value.strip()
    if value and len(value) < MIN_KEY_CHARS:
        raise ValueError(f"an HMAC key needs at least {MIN_KEY_CHARS} characters (e.g. `openssl rand -base64 32`)")
    return value


class PaperSettings(Section):
    """Paper forms out, scanned forms in, answers as letters."""

    # -- the form code ------------------------------------------------------------------------------
    hmac_key: str = Field(
        "",
        description="Secret key of the HMAC-SHA256 that protects the 2D code on every form (at least 32 "
        "characters). Give it as CITIZEN_HUB_PAPER__HMAC_KEY, never in this file. Empty = the paper channel is "
        "not configured: forms cannot be made nor scans read.",
    )
    previous_hmac_keys: list[str] = Field(
        default_factory=list,
        description="Retired HMAC keys whose forms are still accepted (forms in the post when the key was "
        "changed). New forms are always signed with hmac_key. In the environment: a comma-separated list.",
    )
    # -- folders ------------------------------------------------------------------------------------
    print_dir: str = Field(
        "var/paper/print",
        description="Folder the letter adapter writes answer letters into (one PDF per letter, never written "
        "twice), for the print room or a hybrid-mail service.",
    )
    letter_sender: str = Field(
        "Bürgerservice",
        description="Sender printed on an answer letter when its case has no responsible office yet (else the "
        "office's name and address are the sender).",
    )
    letter_signature: str = Field(
        "Ihr Bürgerservice", description="Line printed under the closing of every answer letter."
    )
    letter_reply_form: bool = Field(
        True,
        description="Add a pre-filled form for the citizen's reply as the last page of an answer letter (when the "
        "case has a service and an office), so the reply comes back by post to the same case.",
    )
    inbox_dir: str = Field(
        "var/paper/inbox",
        description="Default folder of 'citizen-hub paper watch': scanned files put here are read; they move "
        "to done/ or rejected/ (with a .json reason beside them), an original is never deleted.",
    )
    rejected_retention_days: float = Field(
        90.0,
        gt=0,
        description="How long a rejected page (no valid code, unreadable) is kept for the review queue, with "
        "its image, before 'citizen-hub purge' deletes it; pages that became requests follow their case's "
        "retention ([privacy]).",
    )
    # -- limits of scan intake ----------------------------------------------------------------------
    max_file_bytes: int = Field(
        52_428_800,
        ge=1024,
        description="Largest scan file accepted (bytes); a larger one is rejected unread.",
    )
    max_pages: int = Field(
        20,
        ge=1,
        le=1000,
        description="Most pages one scan file may have (PDF pages, TIFF frames); a file with more is rejected "
        "whole, before any page is read.",
    )
    max_pixels: int = Field(
        40_000_000,
        ge=1_000_000,
        description="Most pixels one page may have (an A4 page at 300 dpi has 8.7 million, at 600 dpi 34.8 "
        "million); a larger image (a decompression bomb) is rejected before it is decoded.",
    )
    min_dpi: int = Field(
        140,
        ge=50,
        le=600,
        description="Lowest resolution accepted, estimated from the size of the form code on the page; below "
        "it a page is rejected (the code must be printed at >= 3 pixels a module at 150 dpi).",
    )
    max_dpi: int = Field(
        320,
        ge=100,
        le=1200,
        description="Pages of higher resolution are scaled down to this before they are read (more pixels "
        "only cost time); PDFs are rasterised at this resolution at most.",
    )
    pdf_dpi: int = Field(
        300,
        ge=100,
        le=600,
        description="Resolution PDF pages are rasterised at (poppler's pdftoppm).",
    )
    pdf_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest time poppler may take for the page count or one page of a PDF; a PDF that takes "
        "longer (a PDF bomb) is rejected.",
    )
    pdf_memory_bytes: int = Field(
        1_073_741_824,
        ge=67_108_864,
        description="Address-space limit of the poppler process rendering a page (bytes); a PDF that needs "
        "more is rejected instead of taking the machine's memory.",
    )
    # -- OCR ----------------------------------------------------------------------------------------
    ocr_language: str = Field(
        "deu",
        description="Tesseract language(s) of the concern box, e.g. 'deu' or 'deu+eng' (Debian package "
        "tesseract-ocr-deu).",
    )
    ocr_dpi: int = Field(
        300,
        ge=100,
        le=600,
        description="Resolution the concern box is resampled to before OCR (Tesseract reads best at about "
        "300 dpi).",
    )
    ocr_timeout_seconds: float = Field(
        60.0, gt=0, description="Longest time Tesseract may take for one box; a page that takes longer is "
        "accepted with no text and marked for review."
    )
    ocr_confidence_threshold: float = Field(
        70.0,
        ge=0,
        le=100,
        description="Mean word confidence (0-100) below which a page's OCR text is marked for an agent to check "
        "and correct in the console's review queue.",
    )

    @field_validator("hmac_key")
    @classmethod
    def _hmac_key(cls, v: str) -> str:
        return _key(v)

    @field_validator("previous_hmac_keys", mode="before")
    @classmethod
    def _previous(cls, v: Any) -> Any:
        if isinstance(v, str):  # from the environment: "key1,key2"
            v = [part for part in v.split(",") if part.strip()]
        if isinstance(v, list | tuple):
            return [_key(str(k)) for k in v if str(k).strip()]
        return v

    @model_validator(mode="after")
    def _ranges(self) -> PaperSettings:
        if self.min_dpi > self.max_dpi:
            raise ValueError(f"min_dpi ({self.min_dpi}) is above max_dpi ({self.max_dpi})")
        if self.pdf_dpi > self.max_dpi or self.pdf_dpi < self.min_dpi:
            raise ValueError(f"pdf_dpi ({self.pdf_dpi}) must lie between min_dpi and max_dpi")
        return self

    def signing_key(self) -> bytes:
        """The key new forms are signed with; :class:`ConfigError` when the channel has none."""
        if not self.hmac_key:
            raise ConfigError("[paper] hmac_key is not set (give it as CITIZEN_HUB_PAPER__HMAC_KEY)")
        return self.hmac_key.encode("utf-8")

    def verification_keys(self) -> tuple[bytes, ...]:
        """Every key a code may be signed with, the current one first."""
        return (self.signing_key(), *(k.encode("utf-8") for k in self.previous_hmac_keys))


def paper_settings(settings: Any) -> PaperSettings:
    """The ``[paper]`` section of ``settings``, or the defaults when it has none."""
    value = getattr(settings, "paper", None)
    return value if isinstance(value, PaperSettings) else PaperSettings()
