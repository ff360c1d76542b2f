"""One page image → its form code, where the page lies, and the concern box cut out and cleaned.

The 2D code is the page's anchor. zxing-cpp finds it at any rotation and reports its four corners in
image pixels; :mod:`channels.paper.forms.layout` says where those corners are on the printed page. The
affine map between the two (least squares over four points, so a scanner that stretches one axis is
covered too) places every other part of the form: the ``anliegen`` box is resampled straight out of
the scan, deskewed and at the resolution OCR wants, in one step.

The cut-out is then binarised (a box blur against scanner noise, Otsu's threshold): the guide
lines, printed in a light drop-out colour, fall above the threshold and vanish; what is left of the
box's border at the edges is wiped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import zxingcpp
from PIL import Image, ImageFilter, ImageOps

from channels.paper.code import AlteredCode, CodeError, ForgedCode, FormCode, MalformedCode, decode
from channels.paper.forms import layout as L

#: Share of dark pixels below which a page counts as blank (dust and scanner noise stay below it).
BLANK_INK = 0.002
#: Share of dark pixels in the cut-out box below which nobody wrote in it.
EMPTY_BOX_INK = 0.0008


class PageProblem(ValueError):
    """The page cannot become a request; ``kind`` names the problem for reports and the review queue."""

    def __init__(self, kind: str, reason: str, form_id: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.form_id = form_id


@dataclass(frozen=True)
class Geometry:
    """Affine map from page millimetres to image pixels: ``x = a·X + b·Y + c``, ``y = d·X + e·Y + f``."""

    a: float
    b: float
    c: float
    d: float
    e: float
    f: float

    def px(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        return (self.a * x_mm + self.b * y_mm + self.c, self.d * x_mm + self.e * y_mm + self.f)

    @property
    def dpi(self) -> float:
        """The scan's resolution, from the printed code's size."""
        return math.sqrt(abs(self.a * self.e - self.b * self.d)) * 25.4

    @property
    def angle(self) -> float:
        """How far the page is turned in the image, in degrees (counter-clockwise positive)."""
        return -math.degrees(math.atan2(self.d, self.a))

    def sampler(self, left_mm: float, top_mm: float, dpi: float) -> tuple[float, ...]:
        """Pillow's AFFINE data for an output image of the page region from (left, top) at ``dpi``."""
        s = 25.4 / dpi
        return (self.a * s, self.b * s, self.a * left_mm + self.b * top_mm + self.c,
                self.d * s, self.e * s, self.d * left_mm + self.e * top_mm + self.f)


def fit_affine(src: Sequence[tuple[float, float]], dst: Sequence[tuple[float, float]]) -> Geometry:
    """Least-squares affine map taking the points ``src`` onto ``dst`` (at least three, not on a line)."""
    n = len(src)
    if n < 3 or n != len(dst):
        raise ValueError("an affine map needs three or more point pairs")
    sx = sum(p[0] for p in src) / n
    sy = sum(p[1] for p in src) / n
    # Centred normal equations: [[Sxx Sxy] [Sxy Syy]] · (a, b) = (Sxu, Syu), the same for (d, e).
    sxx = sum((p[0] - sx) ** 2 for p in src)
    syy = sum((p[1] - sy) ** 2 for p in src)
    sxy = sum((p[0] - sx) * (p[1] - sy) for p in src)
    det = sxx * syy - sxy * sxy
    if abs(det) < 1e-9:
        raise ValueError("the points lie on a line")
    out = []
    for k in (0, 1):
        mu = sum(q[k] for q in dst) / n
        sxu = sum((p[0] - sx) * (q[k] - mu) for p, q in zip(src, dst, strict=True))
        syu = sum((p[1] - sy) * (q[k] - mu) for p, q in zip(src, dst, strict=True))
        a = (sxu * syy - syu * sxy) / det
        b = (syu * sxx - sxu * sxy) / det
        out += [a, b, mu - a * sx - b * sy]
    return Geometry(*out)


@dataclass(frozen=True)
class Located:
    """A page whose code was read and checked."""

    code: FormCode
    code_text: str
    geometry: Geometry


def ink_ratio(image: Image.Image) -> float:
    """Share of dark pixels (below half grey) of an 8-bit greyscale image."""
    small = image if image.width * image.height <= 1_000_000 else image.reduce(
        max(1, int(math.sqrt(image.width * image.height / 1_000_000))))
    hist = small.histogram()
    total = sum(hist[:256]) or 1
    return sum(hist[:128]) / total


def limit_resolution(image: Image.Image, max_dpi: float) -> Image.Image:
    """Scale an image of an A4 page down by a whole factor when it is far above ``max_dpi``."""
    longest_in = L.PAGE_H / 25.4
    dpi = max(image.size) / longest_in
    factor = int(dpi // max_dpi)
    if factor >= 2 and dpi / factor >= max_dpi * 0.75:
        return image.reduce(factor)
    return image


def locate(image: Image.Image, keys: Sequence[bytes], min_dpi: float) -> Located:
    """Find and check the page's code; raises :class:`PageProblem` saying what is wrong."""
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    errors: list[CodeError] = []
    for barcode in found:
        if not barcode.valid:
            continue
        try:
            code = decode(barcode.text, keys)
        except CodeError as exc:
            errors.append(exc)
            continue
        if code.layout != L.LAYOUT:
            errors.append(MalformedCode(f"form {code.form_id} has layout {code.layout}, which this hub cannot "
                                        "read", code.form_id))
            continue
        pos = barcode.position
        corners = [(p.x, p.y) for p in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)]
        geometry = fit_affine(L.QR_CORNERS, corners)
        if geometry.dpi < min_dpi:
            raise PageProblem("resolution", f"the page was scanned at about {geometry.dpi:.0f} dpi; at least "
                                            f"{min_dpi:.0f} dpi are needed to read it", code.form_id)
        return Located(code, barcode.text, geometry)
    if errors:
        # The most telling problem first: an altered code says more than a forged one.
        for kind in (AlteredCode, ForgedCode, MalformedCode):
            for exc in errors:
                if isinstance(exc, kind):
                    raise PageProblem(exc.kind, exc.reason, exc.form_id)
    if ink_ratio(image) < BLANK_INK:
        raise PageProblem("blank", "the page is blank")
    raise PageProblem("no_code", "no form code was found on the page (not a citizen-hub form, or the code is "
                                 "damaged, covered or cut off)")


def cut(image: Image.Image, geometry: Geometry, rect: L.Rect, dpi: float) -> Image.Image:
    """The page region ``rect`` out of the scan, upright, at ``dpi`` (greyscale)."""
    size = (max(1, round(rect.w / 25.4 * dpi)), max(1, round(rect.h / 25.4 * dpi)))
    return image.transform(size, Image.Transform.AFFINE, geometry.sampler(rect.x, rect.y, dpi),
                           resample=Image.Resampling.BICUBIC, fillcolor=255)


def otsu(image: Image.Image) -> int:
    """Otsu's threshold of an 8-bit greyscale image."""
    hist = image.histogram()[:256]
    total = sum(hist)
    if total == 0:
        return 128
    sum_all = sum(i * h for i, h in enumerate(hist))
    weight_b = sum_b = 0.0
    best, best_var = 128, -1.0
    for t in range(256):
        weight_b += hist[t]
        if weight_b == 0:
            continue
        weight_f = total - weight_b
        if weight_f == 0:
            break
        sum_b += t * hist[t]
        mean_b = sum_b / weight_b
        mean_f = (sum_all - sum_b) / weight_f
        between = weight_b * weight_f * (mean_b - mean_f) ** 2
        if between > best_var:
            best_var, best = between, t
    return best


def binarise(image: Image.Image) -> Image.Image:
    """Black ink on white (``L`` mode, 0 or 255): noise filtered, drop-out colour and border removed."""
    # A 3 × 3 box blur rather than a median: against sensor noise and single specks (a black pixel
    # becomes light grey, above the threshold) it does the same here, at a twentieth of the cost.
    smooth = image.filter(ImageFilter.BoxBlur(1))
    # Otsu splits ink from paper; on a box with little ink the split can land inside the paper's
    # noise, so the threshold is kept in the band where pen and drop-out colour are apart.
    threshold = min(max(otsu(smooth), 90), 170)
    bw = smooth.point(lambda v: 255 if v > threshold else 0)
    return _wipe_edges(bw)


def _wipe_edges(bw: Image.Image, band: float = 0.06) -> Image.Image:
    """Whiten rows and columns near the edges that are mostly black: the box's border, not writing."""
    w, h = bw.size
    rows = bw.resize((1, h), Image.Resampling.BOX).tobytes()  # the mean of every row, one byte each
    cols = bw.resize((w, 1), Image.Resampling.BOX).tobytes()
    out = bw.copy()
    edge_h, edge_w = max(2, int(h * band)), max(2, int(w * band))
    for y, mean in enumerate(rows):
        if mean < 128 and (y < edge_h or y >= h - edge_h):
            out.paste(255, (0, y, w, y + 1))
    for x, mean in enumerate(cols):
        if mean < 128 and (x < edge_w or x >= w - edge_w):
            out.paste(255, (x, 0, x + 1, h))
    return out


def ink_only(bw: Image.Image, margin: int = 24) -> Image.Image:
    """The binarised box cropped to its writing plus a margin: Tesseract's time grows with the area."""
    bbox = ImageOps.invert(bw).getbbox()
    if bbox is None:
        return bw
    left, top, right, bottom = bbox
    return bw.crop((max(0, left - margin), max(0, top - margin), min(bw.width, right + margin),
                    min(bw.height, bottom + margin)))


def page_view(image: Image.Image, geometry: Geometry | None, dpi: float = 100) -> Image.Image:  # VIEW_DPI
    """The page for people to look at: upright A4 at ``dpi`` when the code was found, else scaled down."""
    if geometry is not None:
        return cut(image, geometry, L.Rect(0, 0, L.PAGE_W, L.PAGE_H), dpi)
    view = ImageOps.contain(image, (1240, 1754)) if max(image.size) > 1754 else image.copy()
    return view


#: Resolution of the images kept for people (the page, the box): enough to read handwriting on a screen.
VIEW_DPI = 100
BOX_VIEW_DPI = 150


@dataclass
class PageScan:
    """What a located page yields: the box to look at, the box for OCR (binarised, cut to its writing),
    and whether anything is written in it."""

    located: Located
    box_view: Image.Image
    box: Image.Image
    empty: bool


def read_page(image: Image.Image, keys: Sequence[bytes], *, min_dpi: float, max_dpi: float,
              ocr_dpi: float) -> tuple[Image.Image, PageScan]:
    """Locate the code and cut out the concern box. Returns the (possibly reduced) image and the scan.

    Raises :class:`PageProblem`.
    """
    image = limit_resolution(image, max_dpi)
    located = locate(image, keys, min_dpi)
    box = binarise(cut(image, located.geometry, L.ANLIEGEN_READ, ocr_dpi))
    view = cut(image, located.geometry, L.ANLIEGEN_BOX, BOX_VIEW_DPI)
    # Mode "1" for Tesseract: pytesseract hands the image over as a file, and a 1-bit PNG is written
    # in a fraction of the time of an 8-bit one.
    return image, PageScan(located, view, ink_only(box).convert("1"), ink_ratio(box) < EMPTY_BOX_INK)
