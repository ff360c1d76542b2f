"""The printed side: the pre-filled form (AcroForm, code, DIN 5008 window) and the answer letter."""

from __future__ import annotations

import html as htmllib
import io
import re
import subprocess
import tempfile
from pathlib import Path

import paper_support as P
import pytest
import zxingcpp
from pypdf import PdfReader

from channels.paper.code import Prefill, decode
from channels.paper.forms import layout as L
from channels.paper.forms.letter import LetterSpec, render_letter
from channels.paper.forms.spec import FormProblem, form_spec
from channels.paper.scans.scan import locate

PT_PER_MM = 72 / 25.4


def words(pdf: bytes, page: int = 1) -> list[tuple[str, float, float, float, float]]:
    """(word, left, top, right, bottom) in mm from the page's top-left, as poppler lays the text out."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.pdf"
        path.write_bytes(pdf)
        html = subprocess.run(["pdftotext", "-bbox", "-f", str(page), "-l", str(page), str(path), "-"],
                              capture_output=True, check=True, timeout=60).stdout.decode()
    found = []
    for x0, y0, x1, y1, word in re.findall(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>', html):
        found.append((htmllib.unescape(word), float(x0) / PT_PER_MM, float(y0) / PT_PER_MM, float(x1) / PT_PER_MM,
                      float(y1) / PT_PER_MM))
    return found


def in_window(found, text: str) -> bool:
    """Whether every word of ``text`` lies in the address zone of the DIN 5008 form B address field."""
    zone = (L.ADDRESS_X, L.ADDRESS_Y + L.ADDRESS_NOTE_H, L.ADDRESS_X + L.ADDRESS_W, L.ADDRESS_Y + L.ADDRESS_H)
    for token in text.split():
        hits = [w for w in found if w[0] == token]
        if not any(zone[0] <= w[1] and w[3] <= zone[2] and zone[1] <= w[2] and w[4] <= zone[3] for w in hits):
            return False
    return True


def test_the_form_has_the_fields_prefilled_and_the_concern_field():
    form = P.make_form()
    fields = PdfReader(io.BytesIO(form.pdf)).get_fields()
    assert fields["name"]["/V"] == "Hans Müller"
    assert fields["anschrift"]["/V"] == "Hauptstraße 1\n24576 Hitzhusen"
    assert fields["telefon"]["/V"] == "+4945511234"
    assert fields["email"]["/V"] == "hans@example.org"
    concern = fields[L.ANLIEGEN]
    assert concern["/FT"] == "/Tx" and int(concern["/Ff"]) & (1 << 12), "anliegen must be a multi-line text field"
    assert fields[L.CODE_FIELD]["/V"] == form.code_text
    assert int(fields[L.CODE_FIELD]["/Ff"]) & 1, "the code field must be read-only"
    assert decode(form.code_text, [P.KEY.encode()]) == form.code


def test_the_office_address_shows_in_the_envelope_window():
    P.require_paper_tools()
    found = words(P.make_form().pdf)
    assert in_window(found, "Amt Bad Bramstedt-Land")
    assert in_window(found, "Maienbeeck 23")
    assert in_window(found, "24576 Bad Bramstedt")
    # The citizen's own address is the return address in the note zone above, not in the window.
    assert not in_window(found, "Hauptstraße")


def test_the_service_and_what_to_enclose_are_printed():
    P.require_paper_tools()
    docs = tuple(f"Unterlage{i}" for i in range(1, 12))
    text = " ".join(w[0] for w in words(P.make_form(documents=docs).pdf))
    assert "Anmeldung einer Wohnung" in text
    assert "Unterlage1" in text and "weitere" in text  # what does not fit is counted, not dropped silently
    assert "Unterlage11" not in text
    text = " ".join(w[0] for w in words(P.make_form(documents=()).pdf))
    assert "keine Unterlagen" in text


def test_the_code_decodes_at_150_dpi_with_at_least_3_pixels_a_module():
    P.require_paper_tools()
    page = P.rasterise(P.make_form().pdf, 150)
    (barcode,) = zxingcpp.read_barcodes(page, formats=zxingcpp.BarcodeFormat.QRCode)
    assert barcode.extra["Version"] == str(L.QR_VERSION)
    width = barcode.position.top_right.x - barcode.position.top_left.x
    assert width / L.QR_MODULES >= 3.0
    located = locate(page, [P.KEY.encode()], 140)
    assert located.geometry.dpi == pytest.approx(150, abs=2)
    assert abs(located.geometry.angle) < 0.3


def test_a_form_without_case_has_empty_fields():
    form = P.make_form(case_id=None, case_token=None, prefill=Prefill())
    fields = PdfReader(io.BytesIO(form.pdf)).get_fields()
    assert not fields["name"].get("/V")
    assert form.code.case_token is None


def test_form_spec_from_the_knowledge_base(kb):
    case = {"id": 7, "token": "abcdefghijklmnop", "location": "Hitzhusen", "contact_name": "Erika Muster",
            "contact_address": "Dorfstraße 2\n24576 Hitzhusen", "contact_email": None, "contact_phone": None,
            "service_id": None, "authority_id": None}
    spec = form_spec(kb, "sh-wohnsitz-anmelden", None, case)
    answer = kb.lookup("Wohnsitz anmelden", "Hitzhusen").answers[0]
    assert answer.service.id == "sh-wohnsitz-anmelden"
    assert spec.office.id == answer.authority.id  # the office a lookup shows the agent
    assert spec.location == kb.resolve_place("Hitzhusen").match.ars
    assert spec.case_token == "abcdefghijklmnop" and spec.prefill.name == "Erika Muster"
    assert spec.documents == tuple(kb.services["sh-wohnsitz-anmelden"].documents)


def test_form_spec_follows_an_agents_route(kb):
    other = next(a for a in kb.authorities.values() if a.id.startswith("kreis-"))
    case = {"id": 7, "token": "t" * 16, "location": "Hitzhusen", "service_id": "sh-wohnsitz-anmelden",
            "authority_id": other.id}
    assert form_spec(kb, "sh-wohnsitz-anmelden", None, case).office.id == other.id


@pytest.mark.parametrize(("service", "location", "status", "words_"), [
    ("no-such-service", "Hitzhusen", 404, "Keine Leistung"),
    ("sh-wohnsitz-anmelden", "", 400, "Ort gebraucht"),
    ("sh-wohnsitz-anmelden", "Xyzzyhausen am Nirgendwo", 400, "kein Ort namens"),
])
def test_form_spec_problems(kb, service, location, status, words_):
    with pytest.raises(FormProblem) as info:
        form_spec(kb, service, location)
    assert info.value.status == status and words_ in str(info.value)


# -- the letter -------------------------------------------------------------------------------------------


def letter(**changes) -> bytes:
    values = dict(sender=P.office(), recipient=("Hans Müller", "Hauptstraße 1", "24576 Hitzhusen"),
                  text="Sie können Ihren Wohnsitz im Bürgerbüro anmelden.\n\nBitte bringen Sie mit: <b>Ausweis</b> & "
                       "Wohnungsgeberbestätigung.", subject="Ihr Anliegen [#Xk3f9Qm2LpA7vB1c]",
                  case_token="Xk3f9Qm2LpA7vB1c", letter_id="F-ABCDEF123456", signature="Ihr Bürgerservice")
    values.update(changes)
    return render_letter(LetterSpec(**values))


def test_the_letter_is_din_5008_with_the_text_as_written():
    P.require_paper_tools()
    pdf = letter()
    found = words(pdf)
    assert in_window(found, "Hans Müller") and in_window(found, "Hauptstraße 1") and in_window(found, "24576 Hitzhusen")
    text = " ".join(w[0] for w in found)
    assert "<b>Ausweis</b>" in text and "&" in text  # plain text, never markup
    assert "Xk3f9Qm2LpA7vB1c" in text and "F-ABCDEF123456" in text
    body_top = min(w[2] for w in found if w[0] == "Sie")
    assert body_top >= L.BODY_Y - 1


def test_a_long_letter_flows_onto_numbered_pages():
    P.require_paper_tools()
    pdf = letter(text="\n\n".join(f"Absatz {i}: " + "Text " * 60 for i in range(30)))
    pages = len(PdfReader(io.BytesIO(pdf)).pages)
    assert pages >= 3
    assert "Seite" in " ".join(w[0] for w in words(pdf, 2))


def test_a_letter_needs_an_address():
    with pytest.raises(ValueError):
        letter(recipient=("", "  "))
