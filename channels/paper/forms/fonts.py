"""Fonts for the PDFs the paper channel prints (forms and letters).

Names of people and places are not always in Latin-1, which is all the PDF standard fonts can show.
DejaVu Sans (Debian's fonts-dejavu-core, on every machine with a desktop or Chromium) covers them and
is embedded as a subset; without it the standard Helvetica is used, and characters it lacks print
as a replacement, which is readable for a human clerk but never silently dropped.
"""

from __future__ import annotations

import functools
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

_DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


@functools.cache
def text_fonts() -> tuple[str, str]:
    """Names of the regular and bold font registered with reportlab."""
    regular, bold = _DEJAVU / "DejaVuSans.ttf", _DEJAVU / "DejaVuSans-Bold.ttf"
    if regular.is_file() and bold.is_file():
        try:
            pdfmetrics.registerFont(TTFont("CHSans", str(regular)))
            pdfmetrics.registerFont(TTFont("CHSans-Bold", str(bold)))
            return "CHSans", "CHSans-Bold"
        except Exception:  # an unreadable font file: fall back rather than fail to print
            pass
    return "Helvetica", "Helvetica-Bold"


def printable(text: str, font: str) -> str:
    """``text`` with what the standard fonts cannot encode replaced by ``?`` (TrueType fonts take all)."""
    if font.startswith("CHSans"):
        return text
    return text.encode("cp1252", "replace").decode("cp1252")
