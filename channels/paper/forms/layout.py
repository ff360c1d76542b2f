"""The geometry of the paper form, shared by the form that prints it and the scanner that reads it.

All positions are millimetres from the top-left corner of an A4 page (210 × 297 mm), the way DIN 5008
gives them. The scanner finds the 2D code on a page, maps the code's four corners (known here) onto
where it found them, and so knows where every other part of the page is, at any scale and rotation.
That is why the code has a fixed version and size: a code that grew with its content would move the
map.

Layout 1 follows DIN 5008 form B (the address field 45 mm from the top, fold marks at 105 and 210 mm),
so that the folded form shows the office's address in the window of a DL or C6/5 envelope.
"""

from __future__ import annotations

from dataclasses import dataclass

LAYOUT = 1

PAGE_W = 210.0
PAGE_H = 297.0

#: DIN 5008 form B address field: 20 mm from the left, 45 mm from the top, 85 × 45 mm; its top 17.7 mm are
#: the Zusatz- und Vermerkzone (return address, postal notes), the rest the Anschriftzone (9 lines).
ADDRESS_X = 20.0
ADDRESS_Y = 45.0
ADDRESS_W = 85.0
ADDRESS_H = 45.0
ADDRESS_NOTE_H = 17.7
#: Fold marks (form B) and the punch mark, on the left edge.
FOLD_MARKS = (105.0, 210.0)
PUNCH_MARK = 148.5
#: Left and right margins of the text (DIN 5008: at least 25 mm and 20 mm).
MARGIN_LEFT = 25.0
MARGIN_RIGHT = 20.0
#: Information block (form B: 125 mm from the left).
INFO_X = 125.0
INFO_Y = 60.0
#: The text starts below the address field.
BODY_Y = 98.5

# -- the code ---------------------------------------------------------------------------------------
#: QR code version 12 (65 × 65 modules) at error-correction level M (15 % of the symbol may be lost).
QR_VERSION = 12
QR_LEVEL = "M"
QR_MODULES = 17 + 4 * QR_VERSION
#: Alphanumeric characters a version-12-M symbol holds (ISO/IEC 18004, table 7).
QR_CAPACITY = 419
QR_QUIET = 4  # modules of white around the symbol (the standard's minimum)
QR_SIZE = 46.0  # mm, symbol and quiet zone
QR_X = 152.0
QR_Y = 8.0
QR_MODULE_MM = QR_SIZE / (QR_MODULES + 2 * QR_QUIET)
#: The symbol's own corners (without the quiet zone): top-left, top-right, bottom-right, bottom-left.
_S0 = QR_QUIET * QR_MODULE_MM
_S1 = _S0 + QR_MODULES * QR_MODULE_MM
QR_CORNERS = (
    (QR_X + _S0, QR_Y + _S0),
    (QR_X + _S1, QR_Y + _S0),
    (QR_X + _S1, QR_Y + _S1),
    (QR_X + _S0, QR_Y + _S1),
)
QR_SYMBOL_MM = _S1 - _S0


@dataclass(frozen=True)
class Rect:
    """A rectangle on the page: left, top, width, height in mm."""

    x: float
    y: float
    w: float
    h: float

    def inset(self, d: float) -> Rect:
        return Rect(self.x + d, self.y + d, self.w - 2 * d, self.h - 2 * d)


# -- fields -----------------------------------------------------------------------------------------
#: The citizen's data, pre-filled when known (AcroForm text fields with these names).
FIELDS: dict[str, tuple[str, Rect, bool]] = {
    # name: (label, rectangle, multiline)
    "name": ("Name, Vorname", Rect(25.0, 140.0, 100.0, 8.0), False),
    "telefon": ("Telefon (tagsüber)", Rect(130.0, 140.0, 60.0, 8.0), False),
    "anschrift": ("Anschrift (Straße, Hausnummer, PLZ, Ort)", Rect(25.0, 155.0, 100.0, 13.0), True),
    "email": ("E-Mail (freiwillig)", Rect(130.0, 155.0, 60.0, 8.0), False),
}
#: The box the citizen writes the concern into; an AcroForm text field of the same name and place.
ANLIEGEN = "anliegen"
ANLIEGEN_BOX = Rect(25.0, 182.0, 165.0, 90.0)
#: What OCR reads: the box less a margin, so that its printed border is not read as text.
ANLIEGEN_READ = ANLIEGEN_BOX.inset(1.5)
#: Guide lines inside the box, printed in a light drop-out colour that binarisation removes.
GUIDE_LINE_SPACING = 9.0
#: Hidden, read-only AcroForm field that repeats the code's text for a form completed on screen.
CODE_FIELD = "formcode"
#: Where the footer line sits.
FOOTER_Y = 285.0
