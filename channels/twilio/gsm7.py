"""SMS encoding and segment counting (GSM 03.38 / 3GPP TS 23.038), as carriers and Twilio count.

A text made only of GSM-7 characters is sent 7 bits a character: 160 in one SMS, 153 a segment once it
needs several (the user data header takes the rest). Characters of the extension table (``€ [ ] { } ^
~ | \\`` and form feed) cost two septets, and a segment never splits one. One character outside GSM-7
turns the whole text into UCS-2: 70 UTF-16 units in one SMS, 67 a segment, and a surrogate pair (an
emoji) is never split either.

:func:`to_gsm7` replaces typographic characters that have a plain GSM-7 twin (quotes, dashes, ellipsis,
non-breaking spaces, accents GSM-7 lacks) so that a German text stays in GSM-7: umlauts and ß are in it.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

#: The GSM 03.38 default alphabet (one septet each); 0x1B is the escape to the extension table, not a character.
BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
) - {"\x1b"}
#: The extension table: two septets each (escape + code).
EXTENDED = frozenset("\f^{}\\[~]|€")

SINGLE_GSM, MULTI_GSM = 160, 153
SINGLE_UCS2, MULTI_UCS2 = 70, 67

_REPLACEMENTS = {
    "„": '"', "“": '"', "”": '"', "‟": '"', "«": '"', "»": '"', "″": '"',
    "‚": "'", "‘": "'", "’": "'", "‛": "'", "‹": "'", "›": "'", "´": "'", "`": "'", "′": "'",
    "–": "-", "—": "-", "‐": "-", "‑": "-", "‒": "-", "−": "-", "―": "-",
    "…": "...", "•": "*", "·": "-", "×": "x", "÷": ":",
    "\u00a0": " ", "\u2007": " ", "\u2009": " ", "\u202f": " ", "\u2002": " ", "\u2003": " ", "\u200a": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "",
    "\t": " ", "ẞ": "SS", "ç": "c",
    "‰": "%o", "©": "(c)", "®": "(R)", "™": "TM", "½": "1/2", "¼": "1/4", "¾": "3/4",
}


_ALPHABET = BASIC | EXTENDED


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM-7 alphabet (default or extension table)."""
    return _ALPHABET.issuperset(text)


def encoding(text: str) -> str:
    """``"GSM-7"`` or ``"UCS-2"``: how an SMS of ``text`` is sent."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def _gsm_units(text: str) -> list[int]:
    if EXTENDED.isdisjoint(text):
        return [1] * len(text)
    return [2 if c in EXTENDED else 1 for c in text]


def _ucs2_units(text: str) -> list[int]:
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def _pack(units: list[int], single: int, multi: int) -> int:
    total = sum(units)
    if total <= single:
        return 1
    if total == len(units):  # every character one unit: no character to keep whole
        return -(-total // multi)
    segments, used = 1, 0
    for n in units:  # greedy, a character never split across two segments
        if used + n > multi:
            segments += 1
            used = 0
        used += n
    return segments


@dataclass(frozen=True)
class SmsSize:
    """How an SMS of some text is sent: its encoding, its length in units and its segments."""

    encoding: str
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def measure(text: str) -> SmsSize:
    """The encoding, length and number of segments of an SMS carrying ``text`` (an empty text is 1 segment)."""
    if is_gsm7(text):
        units = _gsm_units(text)
        return SmsSize("GSM-7", sum(units), _pack(units, SINGLE_GSM, MULTI_GSM))
    units = _ucs2_units(text)
    return SmsSize("UCS-2", sum(units), _pack(units, SINGLE_UCS2, MULTI_UCS2))


def segments(text: str) -> int:
    """How many SMS segments ``text`` takes."""
    return measure(text).segments


def capacity(max_segments: int, *, gsm: bool = True) -> int:
    """Most units that fit in ``max_segments`` (306 GSM-7 septets or 134 UCS-2 units for two)."""
    if max_segments < 1:
        raise ValueError("at least one segment")
    if max_segments == 1:
        return SINGLE_GSM if gsm else SINGLE_UCS2
    return max_segments * (MULTI_GSM if gsm else MULTI_UCS2)


def _plain(char: str) -> str:
    if char in BASIC or char in EXTENDED:
        return char
    if char in _REPLACEMENTS:
        return _REPLACEMENTS[char]
    if unicodedata.category(char) == "Zs":
        return " "
    # An accent GSM-7 lacks (á, ê, ł is not decomposable and stays): the base letter.
    base = "".join(c for c in unicodedata.normalize("NFD", char) if not unicodedata.combining(c))
    if base and all(c in BASIC for c in base):
        return base
    return char


def to_gsm7(text: str) -> str:
    """``text`` with typographic characters replaced by their GSM-7 twins; others (emoji, Cyrillic) stay."""
    text = unicodedata.normalize("NFC", text)
    if is_gsm7(text):
        return text
    return "".join(_plain(c) for c in text)


def fits(text: str, max_segments: int) -> bool:
    """Whether ``text`` takes at most ``max_segments`` segments."""
    return segments(text) <= max_segments


def truncate(text: str, max_segments: int, ellipsis: str = "...") -> str:
    """The longest prefix of ``text`` (cut at a word where possible) that fits, with ``ellipsis`` if cut."""
    if fits(text, max_segments):
        return text
    low, high = 0, len(text)
    while low < high:  # the longest prefix + ellipsis that fits
        mid = (low + high + 1) // 2
        if fits(text[:mid].rstrip() + ellipsis, max_segments):
            low = mid
        else:
            high = mid - 1
    cut = text[:low]
    space = cut.rfind(" ")
    if space > len(cut) * 0.6:
        cut = cut[:space]
    if cut and 0xD800 <= ord(cut[-1]) <= 0xDFFF:  # never half a surrogate (cannot occur in str, but be sure)
        cut = cut[:-1]
    return cut.rstrip(" ,;:-") + ellipsis
