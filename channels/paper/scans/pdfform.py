"""A form completed on screen: its AcroForm values, read straight from the PDF with pypdf.

No OCR is needed: the citizen typed into the fields, and the code's text is in the hidden read-only
field ``formcode`` (it is checked like the printed code, so an edited PDF is rejected the same way).
Only PDFs that ``pdfinfo`` found to have a form get here, after the file passed its size and page
limits; pypdf's own limits bound what a hostile stream can inflate to.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from pypdf import PdfReader
from pypdf.errors import PyPdfError

from channels.paper.forms import layout as L

log = logging.getLogger(__name__)

#: The field names a filled form may carry, besides the concern and the code.
CONTACT_FIELDS = tuple(L.FIELDS)
_MAX_VALUE = 20_000


@dataclass(frozen=True)
class ScreenForm:
    """The values of a form completed on screen; ``page`` is the 1-based page its widgets are on."""

    page: int
    code_text: str
    values: dict[str, str]

    @property
    def concern(self) -> str:
        return self.values.get(L.ANLIEGEN, "")


def _text(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    return text[:_MAX_VALUE].replace("\r\n", "\n").replace("\r", "\n").strip()


def read_screen_form(data: bytes) -> ScreenForm | None:
    """The form's values when the PDF is one of our forms with a typed concern, else None.

    A PDF of our form whose ``anliegen`` field is empty (printed, filled by hand and scanned into the
    same file, or sent back blank) is None too: its pages are read as scans.
    """
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            return None
        fields = reader.get_fields() or {}
        if L.CODE_FIELD not in fields or L.ANLIEGEN not in fields:
            return None
        values = {name: _text(fields[name].get("/V")) for name in (*CONTACT_FIELDS, L.ANLIEGEN) if name in fields}
        code_text = _text(fields[L.CODE_FIELD].get("/V"))
        if not values.get(L.ANLIEGEN) or not code_text:
            return None
        page = _widget_page(reader)
    except (PyPdfError, ValueError, TypeError, KeyError, AttributeError, RecursionError, OSError) as exc:
        log.info("the PDF's form cannot be read (%s); reading its pages as scans", type(exc).__name__)
        return None
    return ScreenForm(page, code_text, values)


def _widget_page(reader: PdfReader) -> int:
    """The page whose annotations hold the ``anliegen`` widget (1 if none says so)."""
    for number, page in enumerate(reader.pages, start=1):
        for annot in page.get("/Annots") or []:
            obj = annot.get_object()
            name = obj.get("/T")
            if name is None and obj.get("/Parent") is not None:
                name = obj["/Parent"].get_object().get("/T")
            if name == L.ANLIEGEN:
                return number
    return 1
