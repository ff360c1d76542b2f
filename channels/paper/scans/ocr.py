"""OCR of the cut-out concern box with Tesseract (pytesseract), German by default.

Returns the text line by line as Tesseract found it and the mean confidence of its words, weighted by
word length (a misread long word should weigh more than a stray comma). Handwriting defeats OCR often:
the confidence is what tells the console to put a page in front of an agent.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytesseract
from PIL import Image

# Tesseract's OpenMP threads make one page barely faster and several pages in parallel much slower
# (they fight over the same cores); pages are parallelised by processes instead. Set before the
# first call, so the tesseract processes inherit it; an operator's own setting is kept.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

#: Page segmentation mode 6: one uniform block of text, which the box is.
_CONFIG = "--psm 6"


class OcrUnavailable(RuntimeError):
    """Tesseract or its language data is not installed: the hub's problem, not the page's."""


@dataclass(frozen=True)
class OcrResult:
    text: str
    confidence: float  # 0-100; 0 when no word was read
    words: int


def available(language: str = "deu") -> bool:
    """Whether tesseract and the data of every language in ``language`` (``deu+eng``) are installed."""
    if shutil.which("tesseract") is None:
        return False
    try:
        have = set(pytesseract.get_languages(config=""))
    except Exception:
        return False
    return all(lang in have for lang in language.split("+"))


def read_text(image: Image.Image, language: str = "deu", timeout: float = 60.0) -> OcrResult:
    """Text and confidence of ``image``. Raises :class:`OcrUnavailable` or ``TimeoutError``."""
    try:
        data = pytesseract.image_to_data(image, lang=language, config=_CONFIG, timeout=timeout,
                                         output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractNotFoundError:
        raise OcrUnavailable("tesseract is not installed (Debian packages tesseract-ocr, tesseract-ocr-deu)") from None
    except RuntimeError as exc:  # pytesseract's timeout is a RuntimeError with this text
        if "timeout" in str(exc).lower():
            raise TimeoutError(f"tesseract took longer than {timeout:g} s") from None
        raise
    except pytesseract.TesseractError as exc:
        if "Failed loading language" in str(exc) or "Error opening data file" in str(exc):
            raise OcrUnavailable(f"tesseract has no language data for {language!r} (tesseract-ocr-deu)") from None
        raise
    lines: dict[tuple[int, int, int], list[str]] = {}
    weight = score = 0.0
    words = 0
    for i, word in enumerate(data["text"]):
        word = (word or "").strip()
        conf = float(data["conf"][i])
        if not word or conf < 0:
            continue
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(key, []).append(word)
        words += 1
        weight += len(word)
        score += conf * len(word)
    text = "\n".join(" ".join(ws) for _, ws in sorted(lines.items()))
    return OcrResult(text, round(score / weight, 1) if weight else 0.0, words)
