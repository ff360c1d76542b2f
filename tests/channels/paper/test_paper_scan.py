"""Scans in: real rendered forms, written in, rasterised by poppler, turned, noisy, JPEG — then read back.

The form is rendered at 150, 200 and 300 dpi, the concern is written into the box of that raster with a
handwriting-like font, and every page is turned by ±3° with sensor noise and JPEG compression. The code
must decode on every page; at 200 dpi the OCR text must match what was written (rapidfuzz ratio ≥ 90).
"""

from __future__ import annotations

import io

import paper_support as P
import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter
from rapidfuzz import fuzz

from channels.paper.forms import layout as L
from channels.paper.request import to_request
from channels.paper.scans.reader import ACCEPTED, REJECTED, read_scan
from channels.paper.scans.scan import Geometry, fit_affine


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def form():
    return P.make_form()


@pytest.fixture(scope="module")
def written(form):
    """dpi -> the rendered page with the concern written into its box."""
    P.require_paper_tools(fonts=True)
    return {dpi: P.write_in_box(P.rasterise(form.pdf, dpi), dpi, P.CONCERN) for dpi in (150, 200, 300)}


@pytest.mark.parametrize("dpi", [150, 200, 300])
@pytest.mark.parametrize("angle", [3.0, -3.0])
def test_a_turned_noisy_jpeg_scan_is_read(form, written, dpi, angle):
    data = P.scanned(written[dpi], angle)
    (page,) = read_scan(data, f"scan-{dpi}.jpg", P.settings())
    assert page.status == ACCEPTED, page.reason
    assert page.code == form.code  # the code decodes, and it is the form's own
    assert page.dpi == pytest.approx(dpi, rel=0.03)
    assert page.angle == pytest.approx(angle, abs=0.5)
    ratio = fuzz.ratio(flat(P.CONCERN), flat(page.text))
    if dpi == 200:
        assert ratio >= 90, page.text
    assert page.confidence is not None and page.confidence > 0
    assert page.box_jpeg and page.page_jpeg
    if ratio >= 90:
        assert not page.needs_review, page.review


def test_a_multi_page_scan_pdf_reads_every_page(form, written):
    pages = [Image.open(io.BytesIO(P.scanned(written[200], a, seed=i))) for i, a in enumerate((2.0, -1.5, 0.5))]
    outcomes = read_scan(P.as_pdf(pages, 200), "stapel.pdf", P.settings(pdf_dpi=200))
    assert [o.page for o in outcomes] == [1, 2, 3]
    assert all(o.status == ACCEPTED and o.code == form.code for o in outcomes), [o.reason for o in outcomes]
    assert all(fuzz.ratio(flat(P.CONCERN), flat(o.text)) >= 90 for o in outcomes)
    # Three sheets of one form: three pages with their own content, so three requests, never merged.
    assert len({o.external_id for o in outcomes}) == 3


def test_a_scan_turned_upside_down_is_read(form, written):
    data = P.scanned(written[200], 181.0)
    (page,) = read_scan(data, "kopfueber.jpg", P.settings())
    assert page.status == ACCEPTED and fuzz.ratio(flat(P.CONCERN), flat(page.text)) >= 90
    assert abs(abs(page.angle) - 181.0) < 0.5 or abs(page.angle + 179.0) < 0.5


def test_five_degrees_of_skew_and_a_png_and_a_tiff(form, written):
    for angle, fmt in ((5.0, "PNG"), (-5.0, "TIFF")):
        img = written[200].rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
        buf = io.BytesIO()
        img.save(buf, fmt, dpi=(200, 200))
        (page,) = read_scan(buf.getvalue(), f"scan.{fmt.lower()}", P.settings())
        assert page.status == ACCEPTED and fuzz.ratio(flat(P.CONCERN), flat(page.text)) >= 90, (fmt, page.text)


def test_the_same_scan_twice_is_the_same_request(form, written):
    data = P.scanned(written[200], 1.0)
    first, second = read_scan(data, "a.jpg", P.settings()), read_scan(data, "b.jpg", P.settings())
    assert first[0].external_id == second[0].external_id
    assert first[0].external_id.startswith(form.code.form_id + "/1/")
    other = read_scan(P.scanned(written[200], 1.2), "c.jpg", P.settings())
    assert other[0].external_id != first[0].external_id


def test_an_accepted_page_becomes_the_request_of_its_case(form, written):
    (page,) = read_scan(P.scanned(written[200], -2.0), "scan.jpg", P.settings())
    req = to_request(page, service_name="Anmeldung einer Wohnung", raw_ref="var/paper/inbox/done/scan.jpg")
    assert req.channel == "paper" and req.external_id == page.external_id
    assert req.case_token == "Xk3f9Qm2LpA7vB1c" and req.in_reply_to == [form.code.form_id]
    assert req.contact.name == "Hans Müller" and req.contact.email == "hans@example.org"
    assert req.contact.phone == "+4945511234" and req.contact.postal_address.startswith("Hauptstraße 1")
    assert req.location == "010605005011"
    assert [a.content_type for a in req.attachments] == ["image/jpeg", "image/jpeg"]
    assert fuzz.ratio(flat(P.CONCERN), flat(req.text)) >= 90


def test_cursive_handwriting_that_ocr_misreads_is_marked_for_review(form):
    P.require_paper_tools(fonts=True)
    page = P.write_in_box(P.rasterise(form.pdf, 200), 200, P.CONCERN, font=P.CURSIVE_HAND, size_mm=6.0)
    (outcome,) = read_scan(P.scanned(page, 2.0), "hand.jpg", P.settings())
    assert outcome.status == ACCEPTED  # the code is fine; the text needs a person
    if fuzz.ratio(flat(P.CONCERN), flat(outcome.text)) < 90:
        assert outcome.needs_review and "confidence" in outcome.review[0]


def test_an_empty_box_is_accepted_and_marked(form):
    P.require_paper_tools()
    (page,) = read_scan(P.scanned(P.rasterise(form.pdf, 200), 1.0), "leer.jpg", P.settings())
    assert page.status == ACCEPTED and page.text == ""
    assert page.review == ["nothing is written in the concern box"]
    assert to_request(page).attachments  # still a request: the page image goes along


def test_a_form_completed_on_screen_is_read_from_its_fields(form):
    P.require_paper_tools()
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(form.pdf)))
    writer.update_page_form_field_values(writer.pages[0], {
        L.ANLIEGEN: "Ich möchte meinen Wohnsitz anmelden.\nGeht das auch schriftlich?",
        "email": "neue.adresse@example.org", "telefon": "keine Nummer",
    }, auto_regenerate=False)
    buf = io.BytesIO()
    writer.write(buf)
    (page,) = read_scan(buf.getvalue(), "ausgefuellt.pdf", P.settings())
    assert page.status == ACCEPTED and page.source == "screen" and page.confidence == 100.0
    assert page.text == "Ich möchte meinen Wohnsitz anmelden.\nGeht das auch schriftlich?"
    req = to_request(page)
    assert req.contact.email == "neue.adresse@example.org"  # typed on screen wins over the pre-filled value
    assert req.contact.phone == "+4945511234"  # "keine Nummer" is no number: the pre-filled one stays
    assert req.case_token == form.code.case_token
    again = read_scan(buf.getvalue(), "nochmal.pdf", P.settings())
    assert again[0].external_id == page.external_id


def test_a_screen_form_with_an_edited_code_field_is_rejected(form):
    P.require_paper_tools()
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(form.pdf)))
    tampered = form.code_text[:-10] + ("A" if form.code_text[-10] != "A" else "B") + form.code_text[-9:]
    writer.update_page_form_field_values(writer.pages[0], {L.ANLIEGEN: "Hallo", L.CODE_FIELD: tampered},
                                         auto_regenerate=False)
    buf = io.BytesIO()
    writer.write(buf)
    (page,) = read_scan(buf.getvalue(), "manipuliert.pdf", P.settings())
    assert page.status == REJECTED and page.problem in ("altered", "forged", "malformed")


def test_a_blank_printed_form_pdf_is_read_as_a_scan(form):
    P.require_paper_tools()
    (page,) = read_scan(form.pdf, "formular.pdf", P.settings(pdf_dpi=200))
    assert page.status == ACCEPTED and page.source == "scan" and page.text == ""


def test_the_affine_fit_recovers_a_known_map():
    truth = Geometry(a=7.8, b=-0.41, c=120.0, d=0.41, e=7.8, f=-35.0)
    dst = [truth.px(x, y) for x, y in L.QR_CORNERS]
    fit = fit_affine(L.QR_CORNERS, dst)
    for name in "abcdef":
        assert getattr(fit, name) == pytest.approx(getattr(truth, name), abs=1e-6)
    with pytest.raises(ValueError):
        fit_affine([(0, 0), (1, 1), (2, 2)], [(0, 0), (1, 1), (2, 2)])
