"""An answer on paper: a DIN 5008 letter (form B) as PDF, made with reportlab's platypus.

The citizen's address sits in the address field for a window envelope, the office's return address in
the note zone above it; the information block carries the case token ("Ihr Zeichen"), the letter's id
and the date; the text flows onto as many pages as it needs, later pages numbered. The agent's text is
escaped before it becomes a paragraph: it is plain text, never markup.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import BaseDocTemplate, Frame, NextPageTemplate, PageTemplate, Paragraph, Spacer

from channels.paper.forms import layout as L
from channels.paper.forms.fonts import printable, text_fonts
from channels.paper.forms.form import Office

_GREY = colors.Color(0.35, 0.35, 0.35)


@dataclass(frozen=True)
class LetterSpec:
    """One letter. ``recipient`` are the address lines (name first); ``letter_id`` is printed and kept."""

    sender: Office
    recipient: tuple[str, ...]
    text: str
    subject: str = "Ihr Anliegen"
    case_token: str | None = None
    letter_id: str | None = None
    issued: date = field(default_factory=date.today)
    salutation: str = "Guten Tag,"
    closing: str = "Mit freundlichen Grüßen"
    signature: str = ""


def _y(top_mm: float) -> float:
    return (L.PAGE_H - top_mm) * mm


def render_letter(spec: LetterSpec) -> bytes:
    """The letter as PDF bytes. Raises ValueError when there is no recipient address."""
    recipient = [line.strip() for line in spec.recipient if line and line.strip()]
    if not recipient:
        raise ValueError("a letter needs the recipient's postal address")
    regular, bold = text_fonts()
    body = ParagraphStyle("body", fontName=regular, fontSize=11, leading=15, spaceAfter=8)
    subject_style = ParagraphStyle("subject", parent=body, fontName=bold, spaceAfter=14)

    def p(text: str, style: ParagraphStyle = body) -> Paragraph:
        return Paragraph(escape(printable(text, style.fontName)).replace("\n", "<br/>"), style)

    def first_page(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont(bold, 12)
        canvas.drawString(L.MARGIN_LEFT * mm, _y(18), printable(spec.sender.name, bold)[:90])
        contact = " · ".join(x for x in (spec.sender.phone and f"Telefon {spec.sender.phone}",
                                         spec.sender.email) if x)
        canvas.setFont(regular, 8.5)
        canvas.setFillColor(_GREY)
        if contact:
            canvas.drawString(L.MARGIN_LEFT * mm, _y(23), printable(contact, regular)[:130])
        # Return address in the note zone; the recipient in the address zone (at most 9 lines).
        back = ", ".join(spec.sender.address_lines())
        canvas.setFont(regular, 7)
        canvas.drawString((L.ADDRESS_X + 5) * mm, _y(L.ADDRESS_Y + L.ADDRESS_NOTE_H - 2.5),
                          printable(back, regular)[:95])
        canvas.setFillColor(colors.black)
        canvas.setFont(regular, 10.5)
        top = L.ADDRESS_Y + L.ADDRESS_NOTE_H + 4.2
        for line in recipient[:6]:
            canvas.drawString((L.ADDRESS_X + 5) * mm, _y(top), printable(line, regular)[:60])
            top += 4.6
        info = []
        if spec.case_token:
            info.append(("Ihr Zeichen", spec.case_token))
        if spec.letter_id:
            info.append(("Unser Zeichen", spec.letter_id))
        info.append(("Datum", spec.issued.strftime("%d.%m.%Y")))
        top = L.ADDRESS_Y + 5
        for label, value in info:
            canvas.setFont(regular, 8)
            canvas.setFillColor(_GREY)
            canvas.drawString(L.INFO_X * mm, _y(top), label)
            canvas.setFont(regular, 9.5)
            canvas.setFillColor(colors.black)
            canvas.drawString((L.INFO_X + 26) * mm, _y(top), printable(value, regular)[:40])
            top += 4.6
        _marks(canvas)
        canvas.restoreState()

    def later_page(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont(regular, 8.5)
        canvas.setFillColor(_GREY)
        canvas.drawString(L.MARGIN_LEFT * mm, _y(15), printable(f"{spec.sender.name} · {spec.letter_id or ''}",
                                                                   regular)[:110])
        canvas.drawRightString((L.PAGE_W - L.MARGIN_RIGHT) * mm, _y(15), f"Seite {doc.page}")
        _marks(canvas)
        canvas.restoreState()

    buf = io.BytesIO()
    doc = BaseDocTemplate(buf, pagesize=A4, title=printable(spec.subject, "Helvetica"), author=spec.sender.name,
                          creator="citizen-hub", leftMargin=L.MARGIN_LEFT * mm, rightMargin=L.MARGIN_RIGHT * mm)
    width = (L.PAGE_W - L.MARGIN_LEFT - L.MARGIN_RIGHT) * mm
    first = Frame(L.MARGIN_LEFT * mm, 25 * mm, width, (L.PAGE_H - L.BODY_Y - 25) * mm, id="first",
                  leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0)
    later = Frame(L.MARGIN_LEFT * mm, 25 * mm, width, (L.PAGE_H - 27 - 25) * mm, id="later",
                  leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0)
    doc.addPageTemplates([PageTemplate("first", [first], onPage=first_page),
                          PageTemplate("later", [later], onPage=later_page)])
    story = [NextPageTemplate("later"), p(spec.subject, subject_style), p(spec.salutation)]
    for para in spec.text.replace("\r\n", "\n").split("\n\n"):
        if para.strip():
            story.append(p(para.strip()))
    story += [Spacer(1, 4 * mm), p(spec.closing)]
    if spec.signature:
        story.append(p(spec.signature))
    doc.build(story)
    return buf.getvalue()


def _marks(canvas) -> None:
    canvas.setStrokeColor(_GREY)
    canvas.setLineWidth(0.4)
    for fold in L.FOLD_MARKS:
        canvas.line(4 * mm, _y(fold), 9 * mm, _y(fold))
    canvas.line(4 * mm, _y(L.PUNCH_MARK), 7 * mm, _y(L.PUNCH_MARK))
