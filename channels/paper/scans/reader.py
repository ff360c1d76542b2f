"""A scan file → one outcome per page: accepted (code, text, confidence, images) or rejected (reason).

This is the paper channel's parser: pure (no database), bounded, and it never raises for bad input.
The file's pages come from :mod:`channels.paper.scans.raster`; a PDF completed on screen is read from its
AcroForm (:mod:`channels.paper.scans.pdfform`), every other page through :mod:`channels.paper.scans.scan` and
:mod:`channels.paper.scans.ocr`. Turning an accepted page into a request is :mod:`channels.paper.request`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from channels.paper.code import CodeError, FormCode, decode
from channels.paper.forms import layout as L
from channels.paper.scans import ocr
from channels.paper.scans.pdfform import read_screen_form
from channels.paper.scans.raster import (
    FileRejected,
    PageImage,
    PageRejected,
    pages,
    pdf_info_of,
    pdf_pages,
    sniff,
)
from channels.paper.scans.scan import PageProblem, page_view, read_page
from channels.paper.settings import PaperSettings

log = logging.getLogger(__name__)

ACCEPTED = "accepted"
REJECTED = "rejected"


@dataclass
class PageOutcome:
    """What became of one page (``page`` is None when the whole file was rejected)."""

    file: str
    page: int | None
    status: str
    reason: str | None = None
    problem: str | None = None  # kind of rejection: file, blank, no_code, forged, altered, malformed, ...
    code: FormCode | None = None
    source: str = "scan"  # scan | screen (a PDF completed on screen)
    text: str = ""
    confidence: float | None = None
    review: list[str] = field(default_factory=list)  # why an agent should check the text
    content_hash: str = ""
    dpi: float | None = None
    angle: float | None = None
    page_jpeg: bytes | None = field(default=None, repr=False)  # the page, upright where the code was found
    box_jpeg: bytes | None = field(default=None, repr=False)  # the concern box as scanned
    fields: dict[str, str] = field(default_factory=dict)  # AcroForm values of a form completed on screen

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED

    @property
    def needs_review(self) -> bool:
        return bool(self.review)

    @property
    def external_id(self) -> str:
        """The request's idempotency key: the form, the page, and what is on the page."""
        assert self.code is not None
        return f"{self.code.form_id}/{self.page}/{self.content_hash[:24]}"

    def summary(self) -> dict[str, Any]:
        """The outcome without images, as plain JSON values."""
        code = self.code
        return {
            "file": self.file, "page": self.page, "status": self.status, "reason": self.reason,
            "problem": self.problem, "form_id": code.form_id if code else None,
            "service_id": code.service_id if code else None, "authority_id": code.authority_id if code else None,
            "case_id": code.case_id if code else None, "source": self.source, "text": self.text,
            "confidence": self.confidence, "review": list(self.review),
            "dpi": round(self.dpi) if self.dpi else None,
            "angle": round(self.angle, 2) if self.angle is not None else None,
        }


def jpeg(image: Image.Image) -> bytes:
    """An image for people to look at. JPEG, not PNG: a scan's noise makes PNG ten times larger and
    its encoder was a third of a page's time."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _pixels_hash(image: Image.Image) -> str:
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def read_scan(data: bytes, filename: str, settings: PaperSettings,
              keys: Sequence[bytes] | None = None) -> list[PageOutcome]:
    """Read every page of one scan file. Never raises for bad input: every problem is an outcome.

    Raises only when the hub itself cannot read scans (no key configured, poppler or tesseract
    missing: ``ConfigError``, ``RuntimeError``, :class:`ocr.OcrUnavailable`), so the file is left
    where it is rather than rejected for the hub's fault.
    """
    keys = tuple(keys) if keys is not None else settings.verification_keys()
    try:
        return list(_read(data, filename, settings, keys))
    except FileRejected as exc:
        return [PageOutcome(filename, None, REJECTED, str(exc), "file",
                            content_hash=hashlib.sha256(data).hexdigest())]


def _read(data: bytes, filename: str, settings: PaperSettings, keys: tuple[bytes, ...]) -> Iterator[PageOutcome]:
    if len(data) > settings.max_file_bytes:
        raise FileRejected(f"the file has {len(data):,} bytes; at most {settings.max_file_bytes:,} are accepted")
    source: Iterator[PageImage | PageRejected]
    if sniff(data) == "pdf":
        info = pdf_info_of(data, settings)
        screen = read_screen_form(data) if info.has_form else None
        skip: frozenset[int] = frozenset()
        if screen is not None:
            yield _screen_outcome(filename, screen, keys, settings)
            skip = frozenset({screen.page})
        source = pdf_pages(data, settings, skip=skip, info=info)
    else:
        source = pages(data, settings)
    for item in source:
        if isinstance(item, PageRejected):
            yield PageOutcome(filename, item.page, REJECTED, item.reason, "page")
            continue
        yield _scan_outcome(filename, item, keys, settings)


def _screen_outcome(filename: str, screen, keys: tuple[bytes, ...], settings: PaperSettings) -> PageOutcome:
    values = dict(screen.values)
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    try:
        code = decode(screen.code_text, keys)
    except CodeError as exc:
        return PageOutcome(filename, screen.page, REJECTED, exc.reason, exc.kind, source="screen",
                           content_hash=digest)
    text = values.get(L.ANLIEGEN, "")
    return PageOutcome(filename, screen.page, ACCEPTED, code=code, source="screen", text=text, confidence=100.0,
                       content_hash=digest, fields={k: v for k, v in values.items() if k != L.ANLIEGEN})


def _scan_outcome(filename: str, item: PageImage, keys: tuple[bytes, ...], settings: PaperSettings) -> PageOutcome:
    image = item.image
    digest = _pixels_hash(image)
    try:
        image, scanned = read_page(image, keys, min_dpi=settings.min_dpi, max_dpi=settings.max_dpi,
                                   ocr_dpi=settings.ocr_dpi)
    except PageProblem as exc:
        return PageOutcome(filename, item.page, REJECTED, exc.reason, exc.kind, content_hash=digest,
                           page_jpeg=jpeg(page_view(image, None)))
    geometry = scanned.located.geometry
    outcome = PageOutcome(filename, item.page, ACCEPTED, code=scanned.located.code, content_hash=digest,
                          dpi=geometry.dpi, angle=geometry.angle, page_jpeg=jpeg(page_view(image, geometry)),
                          box_jpeg=jpeg(scanned.box_view))
    if scanned.empty:
        outcome.confidence = 0.0
        outcome.review.append("nothing is written in the concern box")
        return outcome
    try:
        result = ocr.read_text(scanned.box, settings.ocr_language, settings.ocr_timeout_seconds)
    except TimeoutError as exc:
        outcome.confidence = 0.0
        outcome.review.append(f"the text could not be read ({exc})")
        return outcome
    outcome.text, outcome.confidence = result.text, result.confidence
    if result.confidence < settings.ocr_confidence_threshold:
        outcome.review.append(f"OCR confidence {result.confidence:.0f} is below "
                              f"{settings.ocr_confidence_threshold:.0f}")
    if not result.text.strip():
        outcome.review.append("no text was recognised in the concern box")
    return outcome
