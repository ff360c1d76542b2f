"""Scan files to page images, within limits: PDFs through poppler, PNG/TIFF/JPEG through Pillow.

A scan file is untrusted input. Everything here is bounded before work is spent on it:

* the file's size (``[paper] max_file_bytes``) before it is read at all;
* its page count (``max_pages``), from ``pdfinfo`` or the TIFF's frame count, before any page is decoded;
* every page's pixels (``max_pixels``), from the PDF page size or the image header, before it is decoded
  (a decompression bomb never reaches memory);
* poppler's time (``pdf_timeout_seconds``) and address space (``pdf_memory_bytes``) for each call, so a
  PDF whose content explodes when drawn is stopped and rejected.

A problem with the whole file raises :class:`FileRejected`; a problem with one page yields a
:class:`PageRejected` for that page and the next page is read.
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from channels.paper.settings import PaperSettings

#: Image formats read from files (Pillow's names); everything else is refused unread.
IMAGE_FORMATS = frozenset({"PNG", "TIFF", "JPEG", "MPO"})


class FileRejected(ValueError):
    """The whole file cannot be read; the message says why, for the citizen's clerk."""


@dataclass(frozen=True)
class PageRejected:
    page: int
    reason: str


@dataclass
class PageImage:
    """One page as an 8-bit greyscale image; ``dpi`` is what the source says (PDF: rendering resolution)."""

    page: int
    image: Image.Image
    dpi: float | None


def sniff(data: bytes) -> str:
    """``pdf``, ``image`` or ``unknown``, from the file's first bytes (never from its name)."""
    head = data[:1024]
    if b"%PDF-" in head:
        return "pdf"
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")):
        return "image"
    return "unknown"


def pages(data: bytes, settings: PaperSettings) -> Iterator[PageImage | PageRejected]:
    """The pages of a scan file. Raises :class:`FileRejected` for the file as a whole."""
    if len(data) > settings.max_file_bytes:
        raise FileRejected(f"the file has {len(data):,} bytes; at most {settings.max_file_bytes:,} are accepted")
    if not data:
        raise FileRejected("the file is empty")
    kind = sniff(data)
    if kind == "pdf":
        yield from pdf_pages(data, settings)
    elif kind == "image":
        yield from image_pages(data, settings)
    else:
        raise FileRejected("the file is neither a PDF nor a PNG, TIFF or JPEG image")


# -- images -------------------------------------------------------------------------------------------


def image_pages(data: bytes, settings: PaperSettings) -> Iterator[PageImage | PageRejected]:
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit and raises above twice that; our limit is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        # Pillow refuses before decoding (above twice its own limit) and names the size in its message.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,}" if found else "too many"
        raise FileRejected(f"the image has {size} pixels; at most {settings.max_pixels:,} are accepted "
                           "(scan at 150–300 dpi)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise FileRejected(f"the image cannot be read: {_short(exc)}") from None
    with img:
        if img.format not in IMAGE_FORMATS:
            raise FileRejected(f"images of type {img.format} are not accepted (PNG, TIFF or JPEG)")
        frames = getattr(img, "n_frames", 1)
        if frames > settings.max_pages:
            raise FileRejected(f"the image has {frames} pages; at most {settings.max_pages} are accepted a file")
        for index in range(frames):
            number = index + 1
            try:
                img.seek(index)
                width, height = img.size
                if width * height > settings.max_pixels:
                    yield PageRejected(number, f"the page has {width} × {height} pixels; at most "
                                               f"{settings.max_pixels:,} are accepted (scan at 150–300 dpi)")
                    continue
                frame = ImageOps.exif_transpose(img) if index == 0 else img
                gray = _to_gray(frame)
            except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
                yield PageRejected(number, f"the page cannot be decoded: {_short(exc)}")
                continue
            dpi = img.info.get("dpi")
            yield PageImage(number, gray, _dpi_value(dpi))


def _to_gray(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent parts are paper: flatten onto white, not onto black.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    gray = img.convert("L")
    gray.load()
    return gray


def _dpi_value(dpi: object) -> float | None:
    try:
        value = float(dpi[0])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return None
    return value if 10 <= value <= 10_000 else None


# -- PDFs ---------------------------------------------------------------------------------------------

_PAGES_RE = re.compile(r"^Pages:\s+(\d+)\s*$", re.M)
_SIZE_RE = re.compile(r"^Page\s+(\d+)\s+size:\s+([\d.]+)\s+x\s+([\d.]+)\s+pts", re.M)
_ROT_RE = re.compile(r"^Page\s+(\d+)\s+rot:\s+(\d+)", re.M)
_FORM_RE = re.compile(r"^Form:\s+(\S+)", re.M)


@dataclass(frozen=True)
class PdfInfo:
    pages: int
    sizes: dict[int, tuple[float, float]]  # page -> (width, height) in points
    has_form: bool


_PRLIMIT = shutil.which("prlimit")


def _run(args: list[str], settings: PaperSettings) -> subprocess.CompletedProcess[bytes]:
    # The memory limit is set by util-linux's prlimit, not by a preexec_fn: the hub runs threads, and
    # Python code between fork and exec can deadlock the child then.
    limit = settings.pdf_memory_bytes
    command = [_PRLIMIT, f"--as={limit}", "--core=0", "--", *args] if _PRLIMIT else args
    try:
        return subprocess.run(command, capture_output=True, timeout=settings.pdf_timeout_seconds, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"poppler took longer than {settings.pdf_timeout_seconds:g} s") from None


def pdf_info(path: Path, settings: PaperSettings) -> PdfInfo:
    """Page count, page sizes and whether the PDF has a form, from ``pdfinfo``; raises FileRejected.

    Raises RuntimeError when poppler is not installed: that is the hub's problem, not the file's.
    """
    if shutil.which("pdfinfo") is None or shutil.which("pdftoppm") is None:
        raise RuntimeError("poppler is not installed (Debian package poppler-utils)")
    try:
        first = _run(["pdfinfo", str(path)], settings)
    except TimeoutError:
        raise FileRejected("the PDF cannot be read in time (damaged, or built to exhaust the reader)") from None
    out = first.stdout.decode("utf-8", "replace")
    err = first.stderr.decode("utf-8", "replace")
    if first.returncode != 0 or not _PAGES_RE.search(out):
        if "Incorrect password" in err or "password" in err.lower():
            raise FileRejected("the PDF is password-protected")
        raise FileRejected("the PDF is damaged and cannot be read")
    count = int(_PAGES_RE.search(out).group(1))  # type: ignore[union-attr]
    if count == 0:
        raise FileRejected("the PDF has no pages")
    if count > settings.max_pages:
        raise FileRejected(f"the PDF has {count} pages; at most {settings.max_pages} are accepted a file")
    try:
        sized = _run(["pdfinfo", "-f", "1", "-l", str(count), str(path)], settings)
    except TimeoutError:
        raise FileRejected("the PDF cannot be read in time (damaged, or built to exhaust the reader)") from None
    text = sized.stdout.decode("utf-8", "replace")
    sizes = {int(n): (float(w), float(h)) for n, w, h in _SIZE_RE.findall(text)}
    rot = {int(n): int(r) for n, r in _ROT_RE.findall(text)}
    for n, r in rot.items():
        if r % 180 == 90 and n in sizes:
            sizes[n] = sizes[n][::-1]
    form = _FORM_RE.search(out)
    return PdfInfo(count, sizes, bool(form and form.group(1) != "none"))


def render_dpi(size_pt: tuple[float, float], settings: PaperSettings) -> float | None:
    """The resolution a page of ``size_pt`` is rendered at: ``pdf_dpi``, less for a large page; None = too large."""
    w_in, h_in = size_pt[0] / 72.0, size_pt[1] / 72.0
    if w_in <= 0 or h_in <= 0:
        return None
    dpi = min(float(settings.pdf_dpi), math.sqrt(settings.max_pixels / (w_in * h_in)))
    return dpi if dpi >= settings.min_dpi else None


def render_page(path: Path, page: int, dpi: float, settings: PaperSettings, workdir: Path) -> Image.Image:
    """One PDF page rasterised by ``pdftoppm`` as 8-bit greyscale; raises ValueError/TimeoutError."""
    root = workdir / f"p{page}"
    result = _run(["pdftoppm", "-r", f"{dpi:.2f}", "-gray", "-f", str(page), "-l", str(page), "-singlefile",
                   str(path), str(root)], settings)
    out = root.with_suffix(".pgm")
    if result.returncode != 0 or not out.is_file():
        raise ValueError("poppler could not render the page")
    try:
        with Image.open(out) as img:
            if img.size[0] * img.size[1] > settings.max_pixels * 1.01:
                raise ValueError("the rendered page is larger than allowed")
            img.load()
            return img.convert("L")
    finally:
        out.unlink(missing_ok=True)


def pdf_pages(data: bytes, settings: PaperSettings, skip: frozenset[int] = frozenset(),
              info: PdfInfo | None = None) -> Iterator[PageImage | PageRejected]:
    """The pages of a PDF (except ``skip``), rasterised one at a time."""
    with tempfile.TemporaryDirectory(prefix="citizen-hub-pdf-") as tmp:
        workdir = Path(tmp)
        path = workdir / "scan.pdf"
        path.write_bytes(data)
        os.chmod(path, 0o600)
        info = info or pdf_info(path, settings)
        for number in range(1, info.pages + 1):
            if number in skip:
                continue
            size = info.sizes.get(number)
            if size is None:
                yield PageRejected(number, "the page's size cannot be read")
                continue
            dpi = render_dpi(size, settings)
            if dpi is None:
                yield PageRejected(number, f"the page is {size[0] / 72 * 25.4:.0f} × {size[1] / 72 * 25.4:.0f} mm, "
                                           f"too large to read (at most {settings.max_pixels:,} pixels)")
                continue
            try:
                image = render_page(path, number, dpi, settings, workdir)
            except TimeoutError:
                yield PageRejected(number, f"the page could not be rendered within {settings.pdf_timeout_seconds:g} s "
                                           "(its content is too complex, or built to exhaust the reader)")
                continue
            except (ValueError, OSError) as exc:
                yield PageRejected(number, f"the page cannot be rendered: {_short(exc)} (damaged, or needs more "
                                           "memory than allowed)")
                continue
            yield PageImage(number, image, dpi)


def pdf_info_of(data: bytes, settings: PaperSettings) -> PdfInfo:
    """:func:`pdf_info` for PDF bytes (written to a private temporary file for poppler)."""
    with tempfile.TemporaryDirectory(prefix="citizen-hub-pdf-") as tmp:
        path = Path(tmp) / "scan.pdf"
        path.write_bytes(data)
        return pdf_info(path, settings)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "…"
