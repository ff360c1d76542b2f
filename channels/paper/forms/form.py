"""The pre-filled paper form: an A4 PDF made with reportlab.

One page, laid out by :mod:`channels.paper.forms.layout` (DIN 5008 form B): the responsible office's address
where a window envelope shows it, the service and what to enclose, the citizen's known data in AcroForm
text fields (so the form can be completed on screen too), a box with the AcroForm text field
``anliegen`` to write the concern into, and the signed 2D code (:mod:`channels.paper.code`) that
makes the scan a request of the right case.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date

from reportlab.graphics import renderPDF
from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from channels.paper.code import FormCode, Prefill, encode_fitting, new_form_id
from channels.paper.forms import layout as L
from channels.paper.forms.fonts import printable, text_fonts

#: Colour of the guide lines in the concern box: light enough that binarisation drops it.
DROPOUT = colors.Color(0.80, 0.86, 0.95)
_GREY = colors.Color(0.35, 0.35, 0.35)


@dataclass(frozen=True)
class Office:
    """The responsible office, as printed in the address field."""

    id: str
    name: str
    street: str = ""
    postcode: str = ""
    city: str = ""
    phone: str = ""
    email: str = ""

    @classmethod
    def from_authority(cls, a) -> Office:  # knowledge.models.Authority
        return cls(id=a.id, name=a.name, street=a.street or "", postcode=a.postcode or "", city=a.city or "",
                   phone=a.phone or "", email=a.email or "")

    def address_lines(self) -> list[str]:
        lines = [self.name]
        if self.street:
            lines.append(self.street)
        place = " ".join(p for p in (self.postcode, self.city) if p)
        if place:
            lines.append(place)
        return lines


@dataclass(frozen=True)
class FormSpec:
    """Everything one form shows. Build it with :func:`channels.paper.forms.spec.form_spec`."""

    service_id: str
    service_name: str
    office: Office
    documents: tuple[str, ...] = ()
    online_url: str = ""
    location: str = ""  # ARS of the place
    location_name: str = ""
    case_id: int | None = None
    case_token: str | None = None
    prefill: Prefill = field(default_factory=Prefill)
    form_id: str = field(default_factory=new_form_id)
    issued: date = field(default_factory=date.today)


@dataclass(frozen=True)
class RenderedForm:
    pdf: bytes
    code: FormCode  # what the printed code carries (pre-filled values may have been left out to fit)
    code_text: str


def _y(top_mm: float) -> float:
    """reportlab's y (points from the bottom) of a position given in mm from the top."""
    return (L.PAGE_H - top_mm) * mm


def _fit(text: str, font: str, size: float, width_mm: float) -> str:
    if stringWidth(text, font, size) <= width_mm * mm:
        return text
    while text and stringWidth(text + "…", font, size) > width_mm * mm:
        text = text[:-1]
    return text.rstrip() + "…"


def render_form(spec: FormSpec, key: bytes) -> RenderedForm:
    """The form as PDF bytes, its code signed with ``key``."""
    code = FormCode(
        form_id=spec.form_id, service_id=spec.service_id, authority_id=spec.office.id, location=spec.location,
        case_id=spec.case_id, case_token=spec.case_token, issued=spec.issued, page=1, layout=L.LAYOUT,
        prefill=spec.prefill,
    )
    code_text, code = encode_fitting(code, key, L.QR_CAPACITY)
    regular, bold = text_fonts()

    def text(x: float, top: float, value: str, size: float = 10, font: str = regular, width: float | None = None,
             color=colors.black) -> None:
        value = printable(value, font)
        if width is not None:
            value = _fit(value, font, size, width)
        c.setFont(font, size)
        c.setFillColor(color)
        c.drawString(x * mm, _y(top), value)

    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4, pageCompression=1)
    c.setTitle(f"Formular {spec.form_id}: {spec.service_name}")
    c.setAuthor(spec.office.name)
    c.setSubject("Antwortformular")
    c.setCreator("citizen-hub")

    # Letterhead.
    text(L.MARGIN_LEFT, 16, spec.office.name, 12, bold, width=120)
    contact = " · ".join(p for p in (spec.office.phone and f"Telefon {spec.office.phone}", spec.office.email) if p)
    if contact:
        text(L.MARGIN_LEFT, 21, contact, 8.5, width=120, color=_GREY)
    text(L.MARGIN_LEFT, 26, "Antwortformular · bitte ausgefüllt zurücksenden", 8.5, width=120, color=_GREY)

    # Address field (form B): the return address in the note zone, the office in the address zone.
    sender = [spec.prefill.name, *spec.prefill.address.splitlines()]
    sender_line = ", ".join(p.strip() for p in sender if p.strip())
    if sender_line:
        text(L.ADDRESS_X + 5, L.ADDRESS_Y + L.ADDRESS_NOTE_H - 2.5, sender_line, 7, width=L.ADDRESS_W - 5,
             color=_GREY)
    top = L.ADDRESS_Y + L.ADDRESS_NOTE_H + 4.2
    for line in spec.office.address_lines():
        text(L.ADDRESS_X + 5, top, line, 10.5, width=L.ADDRESS_W - 5)
        top += 4.6

    # The code: version 12-M, always the same size, at its place (the scanner relies on both).
    widget = QrCodeWidget(code_text, barLevel=L.QR_LEVEL, qrVersion=L.QR_VERSION, barBorder=L.QR_QUIET,
                          barWidth=L.QR_SIZE * mm, barHeight=L.QR_SIZE * mm)
    drawing = Drawing(L.QR_SIZE * mm, L.QR_SIZE * mm)
    drawing.add(widget)
    renderPDF.draw(drawing, c, L.QR_X * mm, _y(L.QR_Y + L.QR_SIZE))
    text(L.QR_X + 2.5, L.QR_Y + L.QR_SIZE + 2.5, f"{spec.form_id} · Seite 1/1", 7, color=_GREY)

    # Information block.
    info = [("Formular-Nr.", spec.form_id)]
    if spec.case_token:
        info.append(("Ihr Zeichen", spec.case_token))
    if spec.location_name:
        info.append(("Ort", spec.location_name))
    info.append(("Datum", spec.issued.strftime("%d.%m.%Y")))
    top = L.INFO_Y + 3
    for label, value in info:
        text(L.INFO_X, top, label, 8, color=_GREY)
        text(L.INFO_X + 24, top, value, 9, width=L.PAGE_W - L.MARGIN_RIGHT - L.INFO_X - 24)
        top += 4.6

    # Service and what to enclose.
    text(L.MARGIN_LEFT, L.BODY_Y + 3, f"Anliegen: {spec.service_name}", 12.5, bold,
         width=L.PAGE_W - L.MARGIN_LEFT - L.MARGIN_RIGHT)
    top = L.BODY_Y + 10
    last = L.FIELDS["name"][1].y - 8
    if spec.documents:
        text(L.MARGIN_LEFT, top, "Bitte legen Sie Kopien dieser Unterlagen bei:", 9.5, bold)
        top += 4.8
        docs = list(spec.documents)
        while docs and top <= last:
            doc = docs.pop(0)
            if docs and top + 4.4 > last:  # the last line that fits says what is left out
                more = f"… und {len(docs) + 1} weitere" + (f": {spec.online_url}" if spec.online_url else "")
                text(L.MARGIN_LEFT + 3, top, more, 9, width=L.PAGE_W - L.MARGIN_LEFT - L.MARGIN_RIGHT - 3)
                break
            text(L.MARGIN_LEFT + 3, top, f"•  {doc}", 9, width=L.PAGE_W - L.MARGIN_LEFT - L.MARGIN_RIGHT - 3)
            top += 4.4
    else:
        text(L.MARGIN_LEFT, top, "Für dieses Anliegen sind keine Unterlagen beizulegen.", 9.5)

    # The citizen's data: AcroForm fields over printed boxes (the print shows the boxes either way).
    form = c.acroForm
    values = {"name": spec.prefill.name, "telefon": spec.prefill.phone, "anschrift": spec.prefill.address,
              "email": spec.prefill.email}
    for name, (label, rect, multiline) in L.FIELDS.items():
        text(rect.x, rect.y - 1.2, label, 7.5, color=_GREY)
        c.setStrokeColor(_GREY)
        c.setLineWidth(0.5)
        c.rect(rect.x * mm, _y(rect.y + rect.h), rect.w * mm, rect.h * mm)
        form.textfield(name=name, tooltip=label, value=printable(values[name], "Helvetica"),
                       x=(rect.x + 0.5) * mm, y=_y(rect.y + rect.h - 0.5), width=(rect.w - 1) * mm,
                       height=(rect.h - 1) * mm, borderWidth=0, fillColor=None, borderColor=None,
                       textColor=colors.black, fontName="Helvetica", fontSize=9 if multiline else 10,
                       fieldFlags="multiline" if multiline else "", maxlen=300)

    # The concern box.
    box = L.ANLIEGEN_BOX
    text(box.x, box.y - 2.0, "Ihr Anliegen – bitte deutlich in Druckschrift in das Feld schreiben:", 10, bold)
    c.setStrokeColor(DROPOUT)
    c.setLineWidth(0.6)
    line = box.y + L.GUIDE_LINE_SPACING
    while line < box.y + box.h - 2:
        c.line((box.x + 3) * mm, _y(line), (box.x + box.w - 3) * mm, _y(line))
        line += L.GUIDE_LINE_SPACING
    c.setStrokeColor(colors.black)
    c.setLineWidth(0.8)
    c.rect(box.x * mm, _y(box.y + box.h), box.w * mm, box.h * mm)
    inner = L.ANLIEGEN_READ
    form.textfield(name=L.ANLIEGEN, tooltip="Ihr Anliegen", value="", x=inner.x * mm, y=_y(inner.y + inner.h),
                   width=inner.w * mm, height=inner.h * mm, borderWidth=0, fillColor=None, borderColor=None,
                   textColor=colors.black, fontName="Helvetica", fontSize=11, fieldFlags="multiline",
                   maxlen=5000)
    # The code's text once more, for a form completed on screen and saved (read without rasterising).
    form.textfield(name=L.CODE_FIELD, value=code_text, x=0, y=0, width=1, height=1, borderWidth=0,
                   fillColor=None, borderColor=None, fieldFlags="readOnly", annotationFlags="hidden",
                   maxlen=len(code_text) + 1, fontName="Helvetica", fontSize=1)

    # Fold and punch marks, and the footer.
    c.setStrokeColor(_GREY)
    c.setLineWidth(0.4)
    for fold in L.FOLD_MARKS:
        c.line(4 * mm, _y(fold), 9 * mm, _y(fold))
    c.line(4 * mm, _y(L.PUNCH_MARK), 7 * mm, _y(L.PUNCH_MARK))
    text(L.MARGIN_LEFT, L.FOOTER_Y, "Bitte nicht über den Code schreiben oder knicken. Sie können das Formular "
         "auch am Bildschirm ausfüllen.", 7.5, color=_GREY, width=L.PAGE_W - L.MARGIN_LEFT - L.MARGIN_RIGHT)
    text(L.MARGIN_LEFT, L.FOOTER_Y + 3.5, "Ihre Angaben werden nur zur Bearbeitung Ihres Anliegens verwendet.",
         7.5, color=_GREY, width=L.PAGE_W - L.MARGIN_LEFT - L.MARGIN_RIGHT)
    c.showPage()
    c.save()
    return RenderedForm(buf.getvalue(), code, code_text)
