"""Bad and hostile scans: each gets a clear rejection with a reason, and nothing is lost or thrown.

Blank page, a photo, forged and altered codes, a 50-page PDF, a corrupt PDF, PDF bombs (drawing
operators, a giant image, a giant page), a 20,000 × 20,000 pixel PNG, and random damage to real files.
"""

from __future__ import annotations

import io
import random
import time

import paper_support as P
import pytest
from PIL import Image, ImageDraw

from channels.paper.code import b45decode, b45encode
from channels.paper.forms import form as form_module
from channels.paper.scans.reader import ACCEPTED, REJECTED, read_scan


@pytest.fixture(autouse=True)
def _tools():
    P.require_paper_tools()


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def one(outcomes):
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


def test_a_blank_page_is_rejected_as_blank():
    page = one(read_scan(P.scanned(Image.new("L", (1654, 2339), 255), 0.0, noise=0.05), "blank.jpg", P.settings()))
    assert page.status == REJECTED and page.problem == "blank" and page.reason == "the page is blank"
    assert page.page_jpeg  # the page image is kept for the review queue


def test_a_photo_without_a_code_is_rejected():
    rnd = random.Random(5)
    photo = Image.new("RGB", (1600, 1200), (120, 160, 200))
    draw = ImageDraw.Draw(photo)
    for _ in range(60):
        x, y = rnd.randrange(1600), rnd.randrange(1200)
        draw.ellipse((x, y, x + rnd.randrange(20, 300), y + rnd.randrange(20, 300)),
                     fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    page = one(read_scan(jpeg(photo), "urlaub.jpg", P.settings()))
    assert page.status == REJECTED and page.problem == "no_code" and "no form code" in page.reason


def test_a_form_signed_with_another_key_is_rejected_as_forged():
    forged = P.make_form(key=P.OTHER_KEY)
    page = one(read_scan(jpeg(P.rasterise(forged.pdf, 200)), "forged.jpg", P.settings()))
    assert page.status == REJECTED and page.problem == "forged" and "forged" in page.reason


def test_a_form_whose_code_was_altered_is_rejected_as_altered(monkeypatch):
    real = form_module.encode_fitting

    def altered(code, key, max_chars):
        text, used = real(code, key, max_chars)
        raw = bytearray(b45decode(text))
        raw[30] ^= 0x04  # a bit of the body: another case, another citizen, ...
        return b45encode(bytes(raw)), used

    monkeypatch.setattr(form_module, "encode_fitting", altered)
    tampered = P.make_form()
    page = one(read_scan(jpeg(P.rasterise(tampered.pdf, 200)), "altered.jpg", P.settings()))
    assert page.status == REJECTED and page.problem == "altered"
    assert tampered.code.form_id in page.reason


def test_a_qr_code_of_something_else_is_rejected(monkeypatch):
    monkeypatch.setattr(form_module, "encode_fitting", lambda code, key, n: ("HTTPS://WWW.EXAMPLE.ORG/", code))
    page = one(read_scan(jpeg(P.rasterise(P.make_form().pdf, 200)), "url.jpg", P.settings()))
    assert page.status == REJECTED and page.problem == "malformed" and "not a citizen-hub form code" in page.reason


def test_a_50_page_pdf_is_rejected_whole_before_any_page_is_read():
    pages = [Image.new("L", (400, 560), 255) for _ in range(50)]
    started = time.monotonic()
    page = one(read_scan(P.as_pdf(pages, 50), "stapel.pdf", P.settings()))
    assert page.status == REJECTED and page.page is None and page.problem == "file"
    assert "50 pages" in page.reason and "at most 20" in page.reason
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("data", [
    b"%PDF-1.4\n" + bytes(random.Random(1).randbytes(5000)),
    b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n%%EOF",
    b"%PDF-",
])
def test_a_corrupt_pdf_is_rejected(data):
    page = one(read_scan(data, "kaputt.pdf", P.settings()))
    assert page.status == REJECTED and "PDF" in page.reason


def test_a_truncated_real_scan_pdf_loses_nothing_it_can_read():
    pdf = P.as_pdf([P.rasterise(P.make_form().pdf, 150)], 150)
    outcomes = read_scan(pdf[: len(pdf) // 2], "halb.pdf", P.settings())
    assert outcomes and all(o.status in (ACCEPTED, REJECTED) and (o.accepted or o.reason) for o in outcomes)


def test_a_pdf_drawing_bomb_is_stopped_by_the_time_limit():
    started = time.monotonic()
    page = one(read_scan(P.drawing_bomb(), "bomb.pdf", P.settings(pdf_timeout_seconds=3)))
    assert page.status == REJECTED and page.page == 1 and "could not be rendered within 3 s" in page.reason
    assert time.monotonic() - started < 15


def test_a_pdf_image_bomb_is_stopped():
    started = time.monotonic()
    page = one(read_scan(P.image_bomb(), "bomb.pdf", P.settings(pdf_timeout_seconds=3)))
    assert page.status == REJECTED and page.page == 1
    assert time.monotonic() - started < 15


def test_a_pdf_with_a_giant_page_is_rejected_before_rendering():
    bomb = P.one_page_pdf(b"0 0 10 10 re f", mediabox=b"[0 0 14400 14400]")
    page = one(read_scan(bomb, "riesig.pdf", P.settings()))
    assert page.status == REJECTED and "too large" in page.reason and "5080 × 5080 mm" in page.reason


def test_a_20000_by_20000_png_is_rejected_before_it_is_decoded():
    data = P.huge_png()
    assert len(data) < 2_000_000
    started = time.monotonic()
    page = one(read_scan(data, "riesig.png", P.settings()))
    assert page.status == REJECTED and "pixels" in page.reason
    assert time.monotonic() - started < 5


def test_an_image_above_our_own_pixel_limit_but_below_pillows_is_rejected():
    data = P.huge_png(8000, 8000)  # 64 MP: Pillow would decode it, our limit of 40 MP does not
    page = one(read_scan(data, "gross.png", P.settings()))
    assert page.status == REJECTED and "8000 × 8000 pixels" in page.reason


def test_a_tiff_with_too_many_pages_is_rejected():
    frames = [Image.new("L", (200, 280), 255) for _ in range(25)]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    page = one(read_scan(buf.getvalue(), "viele.tif", P.settings()))
    assert page.status == REJECTED and "25 pages" in page.reason


@pytest.mark.parametrize(("data", "words"), [
    (b"", "empty"),
    (b"Hallo, ich wollte nur fragen", "neither a PDF"),
    (b"GIF89a" + b"\x00" * 100, "neither a PDF"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "cannot be read"),
])
def test_files_that_are_no_scan_are_rejected(data, words):
    page = one(read_scan(data, "datei", P.settings()))
    assert page.status == REJECTED and words in page.reason


def test_a_file_over_the_size_limit_is_rejected_unread():
    page = one(read_scan(b"%PDF-1.4\n" + b"0" * 20_000, "gross.pdf", P.settings(max_file_bytes=10_000)))
    assert page.status == REJECTED and "at most 10,000" in page.reason


def test_a_scan_below_the_lowest_resolution_is_rejected():
    small = P.rasterise(P.make_form().pdf, 100)
    page = one(read_scan(jpeg(small), "klein.jpg", P.settings(min_dpi=140)))
    assert page.status == REJECTED and page.problem == "resolution" and "about 100 dpi" in page.reason


def test_damaged_files_never_raise():
    # Random damage to a real scan JPEG and a real scan PDF: every outcome is accepted or has a reason.
    rnd = random.Random(23)
    base_page = P.rasterise(P.make_form().pdf, 150)
    samples = [jpeg(base_page), P.as_pdf([base_page], 150)]
    deadline = time.monotonic() + 40
    tried = 0
    while tried < 24 and time.monotonic() < deadline:
        data = bytearray(samples[tried % 2])
        for _ in range(rnd.randint(1, 40)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        for outcome in read_scan(bytes(data), "beschaedigt", P.settings(pdf_timeout_seconds=5)):
            assert outcome.status in (ACCEPTED, REJECTED)
            assert outcome.accepted or outcome.reason
        tried += 1
    assert tried >= 8
