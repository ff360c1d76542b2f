"""Hypothesis strategies for the parsers' property tests: hostile text and bytes, JSON values, MIME mails,
HTML form bodies (urlencoded and multipart), CSV files and place strings.

Every parser of the hub gets a property test built from these (``tests/**/test_*_fuzz.py``): whatever
comes in, the parser answers with a value or with its own clear error, never an unhandled exception.
The Twilio webhook form (``channels/twilio``) and the paper form's code payload (``channels/paper``)
use :func:`form_fields`, :func:`urlencoded` and :func:`hostile_text` / :func:`hostile_bytes` the same way.

:data:`FUZZ` bounds every property test (examples and a deadline per example) so the suite stays within
CI's time; ``FUZZ_EXAMPLES=2000 pytest tests -k fuzz`` looks much harder, locally.
"""

from __future__ import annotations

import os
import string
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote_from_bytes

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Examples per property test; raise it locally to search harder.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "80"))

#: The bound of every property test. The deadline is generous (the machine is shared, and one example may
#: parse a few hundred kilobytes); what it catches is a parser that takes seconds (a quadratic loop, a
#: regular expression that backtracks), not a slow moment.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=4000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None,  # nothing written into the tree; a failure prints the example to reproduce it
)

#: Strings that have broken parsers before: controls, bidi overrides, BOMs, markup, SQL, paths, lone
#: surrogates, encoded-word look-alikes, SMTP's end of data, huge runs.
NASTY = (
    "", " ", "\x00", "\r\n", "\r\n.\r\n", "\n.\n", "\t", "\x7f", "\x85", "\u2028", "\u202e", "\ufeff", "\u200b",
    "\ud800", "\udfff", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "'; DROP TABLE hub_case; --",
    "%00", "%", "%zz", "%C3%28", "../../../../etc/passwd", "=?utf-8?b?AAAA?=", "=?x-unknown?q?=FF?=",
    "=?utf-8?q?", "${jndi:ldap://x}", "{{7*7}}", "\\", '"', "'", "&amp;", "Ä" * 3, "ß", "𝔘𝔫𝔦", "😀",
    "e\u0301" * 5, "9" * 40, "-1", "1e999", "NaN", "null", "[]", "{}", "a" * 5000,
)

_ALPHABET = st.characters(exclude_categories=("Cs",))
_ANY_CHAR = st.characters()  # includes lone surrogates (which UTF-8 cannot encode)
_WORDS = st.sampled_from(("Reisepass", "Bad Segeberg", "23795", "Wunschkennzeichen", "Hund", "Ä", " "))


def hostile_text(max_size: int = 300) -> st.SearchStrategy[str]:
    """Text a hostile or broken client sends: ordinary words, NASTY pieces, any code point."""
    piece = st.one_of(st.sampled_from(NASTY), _WORDS, st.text(_ALPHABET, max_size=12), st.text(_ANY_CHAR, max_size=3))
    return st.lists(piece, max_size=5).map("".join).map(lambda s: s[:max_size])


def encoded(text: str, codec: str) -> bytes:
    return text.encode(codec, errors="surrogatepass" if codec == "utf-8" else "replace")


def hostile_bytes(max_size: int = 2000) -> st.SearchStrategy[bytes]:
    """Bytes: random, or hostile text in UTF-8, Latin-1, UTF-16 (with and without BOM)."""
    as_text = st.tuples(hostile_text(), st.sampled_from(("utf-8", "latin-1", "utf-16", "utf-16-le", "cp1252"))).map(
        lambda p: encoded(p[0].encode("utf-8", "surrogatepass").decode("utf-8", "replace"), p[1]))
    return st.one_of(st.binary(max_size=max_size), as_text)


# -- JSON ---------------------------------------------------------------------------------------------------

_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False), hostile_text(60),
)


def json_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Any JSON value, nested."""
    return st.recursive(_JSON_SCALARS, lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(hostile_text(20), inner, max_size=5)), max_leaves=max_leaves)


def json_object_like(fields: dict[str, st.SearchStrategy[Any]], extra: bool = True) -> st.SearchStrategy[dict]:
    """Objects with (some of) the expected fields, each either its plausible value or any JSON value,
    and sometimes keys nobody expects: the shape a real client gets almost right."""
    def field(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(strategy, json_values(6))

    base = st.fixed_dictionaries({}, optional={k: field(v) for k, v in fields.items()})
    if not extra:
        return base
    return st.tuples(base, st.dictionaries(hostile_text(20), json_values(4), max_size=2)).map(
        lambda p: {**p[1], **p[0]})


# -- HTML forms -----------------------------------------------------------------------------------------------


def form_fields(names: tuple[str, ...]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Form pairs: the expected names (each maybe missing, repeated, empty or hostile) and strangers."""
    name = st.one_of(st.sampled_from(names), hostile_text(30))
    return st.lists(st.tuples(name, hostile_text(200)), max_size=len(names) + 4)


def urlencoded(pairs: list[tuple[str, str]], raw_tail: bytes = b"") -> bytes:
    """``application/x-www-form-urlencoded`` of ``pairs`` (lone surrogates as broken percent escapes)."""
    def q(s: str) -> str:
        return quote_from_bytes(s.encode("utf-8", "surrogatepass"), safe="")

    return "&".join(f"{q(k)}={q(v)}" for k, v in pairs).encode() + raw_tail


_DISPOSITIONS = (
    'form-data; name="{name}"', 'form-data; name="{name}"; filename="{file}"', "form-data; name={name}",
    "form-data; name*=UTF-8''{name}", 'form-data; filename="{file}"', "form-data", 'attachment; name="{name}"',
    'form-data; name="{name}"; filename*=UTF-8\'\'%E2%80%AE{file}', "",
)


@st.composite
def multipart(draw, names: tuple[str, ...], file_field: str) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its Content-Type: well formed or broken in one of many ways."""
    boundary = draw(st.one_of(st.just("hubfuzzBOUNDARY"), st.text(string.ascii_letters + string.digits + "'()+_,-./:=? ",
                                                                   min_size=1, max_size=70)))
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.one_of(st.sampled_from((*names, file_field)), hostile_text(20)))
        disposition = draw(st.sampled_from(_DISPOSITIONS)).format(name=name, file=draw(hostile_text(30)))
        headers = [f"Content-Disposition: {disposition}"] if disposition else []
        if draw(st.booleans()):
            headers.append("Content-Type: " + draw(st.sampled_from(
                ("image/png", "text/plain; charset=latin-1", "application/octet-stream", "multipart/mixed; boundary=x",
                 "", "text/plain; charset=x-unknown"))))
        if draw(st.booleans()):
            headers.append("Content-Transfer-Encoding: " + draw(st.sampled_from(("base64", "quoted-printable", "8bit", "x"))))
        body = draw(st.one_of(hostile_bytes(600), st.just(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20),
                              st.just(f"--{boundary}".encode())))
        head = "\r\n".join(headers).encode("utf-8", "surrogatepass")
        parts.append(b"--" + boundary.encode() + b"\r\n" + head + b"\r\n\r\n" + body + b"\r\n")
    end = draw(st.sampled_from((f"--{boundary}--\r\n", f"--{boundary}--", "", f"--{boundary}\r\n", "--\r\n")))
    body = draw(st.sampled_from((b"", b"preamble\r\n"))) + b"".join(parts) + end.encode()
    ctype = draw(st.sampled_from((f"multipart/form-data; boundary={boundary}", f'multipart/form-data; boundary="{boundary}"',
                                  "multipart/form-data", "multipart/form-data; boundary=", "multipart/mixed; boundary=x")))
    return body, ctype


# -- MIME mail ----------------------------------------------------------------------------------------------------

_HEADER_NAMES = ("From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "In-Reply-To", "References", "Date",
                 "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Auto-Submitted", "Precedence",
                 "List-Id", "Return-Path", "Sender", "MIME-Version", "X-Mailer", "Content-Language")
_CHARSETS = ("utf-8", "iso-8859-1", "windows-1252", "us-ascii", "x-unknown", "utf-7", "utf-16", "", '"utf-8"',
             "iso-2022-jp")
_CTYPES = ("text/plain", "text/html", "application/pdf", "image/png", "application/octet-stream",
           "message/delivery-status", "message/disposition-notification", "text/rfc822-headers", "message/rfc822",
           "text/calendar", "x/y", "")
_MULTI = ("multipart/mixed", "multipart/alternative", "multipart/related", "multipart/report", "multipart/signed",
          "multipart/digest")
_CTE = ("7bit", "8bit", "base64", "quoted-printable", "binary", "x-uuencode", "BASE64", "")


def _header_value(draw) -> str:
    return draw(st.one_of(
        hostile_text(120),
        st.sampled_from(("Max Mustermann <max@example.org>", "<a@b>", "=?utf-8?b?w6TDtsO8?= <x@y.de>",
                         '"a@b" <c@d>', "undisclosed-recipients:;", "<" + "x" * 300 + "@y>", "auto-replied", "bulk",
                         format_datetime(datetime(2026, 5, 1, tzinfo=UTC)), "Tue, 99 Foo 20266 25:61:61 +9999")),
    ))


@st.composite
def _mime_part(draw, depth: int) -> bytes:
    headers = []
    multi = depth > 0 and draw(st.booleans())
    boundary = "b" + str(depth) + draw(st.text(string.ascii_letters, max_size=8))
    if multi:
        ctype = f"{draw(st.sampled_from(_MULTI))}; boundary=\"{boundary}\""
    else:
        ctype = draw(st.sampled_from(_CTYPES))
        if draw(st.booleans()):
            ctype += f"; charset={draw(st.sampled_from(_CHARSETS))}"
        if draw(st.booleans()):
            ctype += f'; name="{draw(hostile_text(40))}"'
    if draw(st.integers(0, 9)):  # sometimes no Content-Type at all
        headers.append(f"Content-Type: {ctype}")
    cte = draw(st.sampled_from(_CTE))
    if cte and not multi:
        headers.append(f"Content-Transfer-Encoding: {cte}")
    if draw(st.booleans()):
        headers.append("Content-Disposition: " + draw(st.sampled_from(
            ("attachment", "inline", 'attachment; filename="a.pdf"', "attachment; filename*=utf-8''%FF%FE.pdf",
             f'attachment; filename="{draw(hostile_text(80))}"'))))
    head = "\r\n".join(headers).encode("utf-8", "surrogatepass")
    if multi:
        children = draw(st.lists(_mime_part(depth - 1), max_size=3))
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + c + b"\r\n" for c in children)
        body += draw(st.sampled_from((b"--" + boundary.encode() + b"--\r\n", b"", b"--" + boundary.encode())))
    else:
        body = draw(st.one_of(hostile_bytes(800), st.just(b"SGFsbG8gV2VsdA=="), st.just(b"=C3=A4=\r\n=ZZ"),
                              st.just(b"begin 644 x\n`\nend\n")))
    return head + b"\r\n\r\n" + body


@st.composite
def mime_mails(draw, max_depth: int = 2) -> bytes:
    """A mail: top-level headers (the usual ones, hostile values, folded, repeated, broken) and a MIME tree."""
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.one_of(st.sampled_from(_HEADER_NAMES), hostile_text(20)))
        value = _header_value(draw)
        sep = draw(st.sampled_from((": ", ":", " : ", "")))
        fold = draw(st.sampled_from(("", "\r\n\t", "\r\n ", "\n")))
        lines.append(f"{name}{sep}{fold}{value}")
    top = "\r\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        top += b"\r\nMIME-Version: 1.0"
    return top + b"\r\n" + draw(_mime_part(max_depth))


# -- CSV -----------------------------------------------------------------------------------------------------------

@st.composite
def csv_files(draw, columns: tuple[str, ...]) -> bytes:
    """A CSV catalogue as a spreadsheet exports it, or nearly: known and unknown columns, any separator,
    quotes, line breaks in cells, a BOM, cells of hostile text, rows too short or too long."""
    sep = draw(st.sampled_from((";", ",", "\t", "|")))
    header = draw(st.lists(st.one_of(st.sampled_from(columns), hostile_text(15)), min_size=0, max_size=len(columns)))

    def cell(_col: str) -> str:
        value = draw(st.one_of(hostile_text(120), st.sampled_from(
            ("kreis", "gemeinde", "land", "amt", "99086008001000", "https://example.org/x", "Mo-Fr 08:00-12:00",
             "Mo 25:00-26:00", "Rathausplatz 1, 23795 Bad Segeberg", "a, b; c"))))
        if draw(st.booleans()):
            value = '"' + value.replace('"', '""') + '"'
        return value

    rows = [sep.join(header)]
    for _ in range(draw(st.integers(0, 6))):
        width = max(0, len(header) + draw(st.integers(-2, 2)))
        rows.append(sep.join(cell(str(i)) for i in range(width)))
    newline = draw(st.sampled_from(("\r\n", "\n", "\r")))
    text = newline.join(rows)
    codec = draw(st.sampled_from(("utf-8", "utf-8-sig", "cp1252", "utf-16")))
    return encoded(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), codec)


# -- places ---------------------------------------------------------------------------------------------------------

_PLACE_WORDS = ("Bad Segeberg", "Norderstedt", "Todesfelde", "Soest", "Lippstadt", "Berlin", "München", "Frankfurt",
                "Neustadt", "Sankt Augustin", "St. Peter-Ording", "Halle (Saale)", "Kreis Segeberg", "Landkreis Soest",
                "Ortsteil", "bei", "an der", "OT")


def place_strings() -> st.SearchStrategy[str]:
    """What a citizen types as a place: names with typos and additions, postcodes, AGS/ARS, or anything."""
    digits = st.text("0123456789", min_size=1, max_size=14)
    typo = st.tuples(st.sampled_from(_PLACE_WORDS), st.integers(0, 12), hostile_text(3)).map(
        lambda p: p[0][: p[1]] + p[2] + p[0][p[1] + 1:])
    combined = st.lists(st.one_of(st.sampled_from(_PLACE_WORDS), digits, typo, st.sampled_from(NASTY)),
                        min_size=1, max_size=5).map(" ".join)
    return st.one_of(digits, typo, combined, hostile_text(250))
