"""Helpers of the paper-channel tests: real forms, real rasterised scans, real hostile files.

A "scan" here is made the way a scanner makes one: the form PDF is rendered by poppler at the scan's
resolution, text is written into the concern box of that raster with a handwriting-like font, and the
page is turned, given sensor noise and JPEG-compressed. Nothing is mocked.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

from conftest import require_component
from PIL import Image, ImageDraw, ImageFont

from channels.paper.code import Prefill
from channels.paper.forms import layout as L
from channels.paper.forms.form import FormSpec, Office, RenderedForm, render_form
from channels.paper.scans import ocr
from channels.paper.settings import PaperSettings

KEY = "test-key-of-the-paper-channel-0123456789"
OTHER_KEY = "another-hubs-key-that-is-long-enough-000"
#: Handwriting-like fonts from Debian (fonts-comic-neue: casual print; fonts-dkg-handwriting: a real hand).
PRINT_HAND = Path("/usr/share/fonts/opentype/comic-neue/ComicNeue-Regular.otf")
CURSIVE_HAND = Path("/usr/share/fonts/truetype/fifthhorseman/dkg.ttf")

CONCERN = ("Ich bin am 1. Oktober nach Hitzhusen gezogen\n"
           "und möchte meinen Wohnsitz anmelden.\n"
           "Welche Unterlagen brauche ich für den Termin?")


def settings(**changes) -> PaperSettings:
    return PaperSettings(hmac_key=KEY, **changes)


def require_paper_tools(fonts: bool = False) -> None:
    require_component(shutil.which("pdftoppm") is not None and shutil.which("pdfinfo") is not None,
                      "poppler-utils (pdftoppm, pdfinfo) is not installed")
    require_component(ocr.available("deu"), "tesseract with German data (tesseract-ocr-deu) is not installed")
    if fonts:
        require_component(PRINT_HAND.is_file() and CURSIVE_HAND.is_file(),
                          "the handwriting fonts (fonts-comic-neue, fonts-dkg-handwriting) are not installed")


def office() -> Office:
    return Office("amt-010605005", "Amt Bad Bramstedt-Land", "Maienbeeck 23", "24576", "Bad Bramstedt",
                  "040 66969-100", "buergerbuero@amt-bad-bramstedt-land.example")


def spec(**changes) -> FormSpec:
    values = dict(
        service_id="sh-wohnsitz-anmelden", service_name="Anmeldung einer Wohnung (Wohnsitz an- und ummelden)",
        office=office(), documents=("Personalausweis oder Reisepass", "Wohnungsgeberbestätigung"),
        location="010605005011", location_name="Hitzhusen", case_id=42, case_token="Xk3f9Qm2LpA7vB1c",
        prefill=Prefill(name="Hans Müller", address="Hauptstraße 1\n24576 Hitzhusen", email="hans@example.org",
                        phone="+4945511234"),
    )
    values.update(changes)
    return FormSpec(**values)


def make_form(key: str = KEY, **changes) -> RenderedForm:
    return render_form(spec(**changes), key.encode())


def rasterise(pdf: bytes, dpi: int) -> Image.Image:
    """The PDF's first page as poppler renders it at ``dpi`` (greyscale)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "form.pdf"
        path.write_bytes(pdf)
        subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-singlefile", "-f", "1", "-l", "1", str(path),
                        str(Path(tmp) / "page")], check=True, timeout=60)
        with Image.open(Path(tmp) / "page.pgm") as img:
            return img.convert("L")


def write_in_box(page: Image.Image, dpi: int, text: str, font: Path = PRINT_HAND, size_mm: float = 5.5,
                 seed: int = 7) -> Image.Image:
    """``text`` written into the concern box of a rendered page, line by line on the guide lines.

    Every word gets its own small shift and ink tone, as a hand would give it.
    """
    rnd = random.Random(seed)
    page = page.copy()
    draw = ImageDraw.Draw(page)
    px = dpi / 25.4
    face = ImageFont.truetype(str(font), max(8, round(size_mm * px)))
    top = L.ANLIEGEN_BOX.y + 2.5
    for line in text.splitlines():
        x = (L.ANLIEGEN_BOX.x + 4 + rnd.uniform(-0.5, 0.5)) * px
        for word in line.split():
            y = (top + rnd.uniform(-0.4, 0.4)) * px
            draw.text((x, y), word, font=face, fill=rnd.randint(10, 50))
            x += draw.textlength(word + " ", font=face) * rnd.uniform(0.98, 1.05)
        top += L.GUIDE_LINE_SPACING
    return page


def scanned(page: Image.Image, angle: float, *, noise: float = 0.12, quality: int = 70, seed: int = 3) -> bytes:
    """The page as a scanner delivers it: turned by ``angle`` degrees, with sensor noise, as JPEG."""
    turned = page.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    # Uniform sensor noise of a fixed seed (Pillow's effect_noise cannot be seeded): with noise=0.12
    # every pixel moves by up to ±15 grey levels.
    grain = Image.frombytes("L", turned.size, random.Random(seed).randbytes(turned.width * turned.height))
    noisy = Image.blend(turned, grain, noise)
    buf = io.BytesIO()
    noisy.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def as_pdf(images: list[Image.Image], dpi: int) -> bytes:
    """A multi-page PDF of scanned page images, as a scanner's "scan to PDF" writes it."""
    buf = io.BytesIO()
    first, *rest = [img.convert("L") for img in images]
    first.save(buf, "PDF", resolution=float(dpi), save_all=True, append_images=rest)
    return buf.getvalue()


# -- raw PDFs for hostile input -------------------------------------------------------------------------


def raw_pdf(objects: list[bytes]) -> bytes:
    """A PDF of the given objects (1 = catalog) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def flate_stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d /Filter /FlateDecode %s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def one_page_pdf(content: bytes, mediabox: bytes = b"[0 0 595 842]", resources: bytes = b"<< >>",
                 more: tuple[bytes, ...] = ()) -> bytes:
    return raw_pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox %s /Contents 4 0 R /Resources %s >>" % (mediabox, resources),
        flate_stream(content), *more,
    ])


def drawing_bomb() -> bytes:
    """250 KB that inflate to 100 MB of page-filling drawing operators: hours of rendering."""
    packer = zlib.compressobj(6)
    chunk = b"0 0 595 842 re f\n" * 100_000
    data = b"".join(packer.compress(chunk) for _ in range(60)) + packer.flush()
    return one_page_pdf(data)


def image_bomb() -> bytes:
    """2 MB holding a 60,000 × 60,000 pixel image (450 MB decoded) drawn onto an A4 page."""
    packer = zlib.compressobj(1)
    rows = b"\x00" * (60_000 // 8) * 1000
    data = b"".join(packer.compress(rows) for _ in range(60)) + packer.flush()
    image = (b"<< /Type /XObject /Subtype /Image /Width 60000 /Height 60000 /ColorSpace /DeviceGray "
             b"/BitsPerComponent 1 /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream")
    return one_page_pdf(zlib.compress(b"q 595 0 0 842 0 0 cm /Im1 Do Q"),
                        resources=b"<< /XObject << /Im1 5 0 R >> >>", more=(image,))


def huge_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG of ``width`` × ``height`` white pixels (a few hundred KB; 400 MP decoded)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row * 500) for _ in range(height // 500)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))
