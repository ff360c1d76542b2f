"""Raw RFC 5322 bytes → :class:`ParsedMail`: the fields of an :class:`~hub.queue.requests.InboundRequest` and more.

Pure: no I/O, no clock, no configuration object (limits are arguments), so every rule here is tested
on recorded raw messages (``tests/fixtures/mail``). Parsing uses the standard ``email`` package with
``policy=default`` (with a header registry that parses each header value once, see :data:`POLICY`)
and never raises on bad input: a malformed header, an unknown charset or broken
base64 degrade to the best text that can be had, and the parser's defects are counted, not fatal.

What comes out:

* ``text`` — what the citizen wrote *this time*, for routing: quoted history (``>`` lines, Outlook's
  "-----Original Message-----"/"Von: … Gesendet: …" block, "Am … schrieb …:" attributions) and the
  signature (after ``-- ``, "Sent from my iPhone") are removed. A forwarded mail keeps what was
  forwarded: that is the concern. ``full_text`` is the whole body as written; the raw mail itself is kept
  by the inbound listener.
* HTML-only mail is turned into text by a tag-stripping parser that drops ``<script>``/``<style>``
  content and keeps ``<blockquote>`` as ``>`` quotes; nothing is ever rendered or executed.
* attachments within the limits given; larger ones are listed in ``dropped`` (and the text says so).
* ``cut`` — why parsing stopped early: a mail of more MIME parts than ``max_parts`` or nested deeper
  than ``max_depth`` is read only that far (:class:`_BoundedParser`), so 330,000 tiny parts cost what
  the first thousand cost instead of 22 s and 433 MB; what was read is kept and the text tells the
  agent what was cut (the whole mail is in the kept original).
* ``automatic`` — why no automatic answer may be sent (RFC 3834: Auto-Submitted, Precedence,
  null envelope sender, mailer-daemon, lists, our own address), or None for a person's mail.
* ``auto_reply`` — why the mail is an automatic answer (an out-of-office or vacation notice, an
  auto-responder): ``Auto-Submitted`` other than ``no``, ``Precedence: bulk/junk/list/auto_reply``,
  ``X-Autoreply``/``X-Autorespond``, and, as the last resort, a vacation subject ("Abwesenheitsnotiz",
  "Automatische Antwort", "Out of Office", …; :data:`VACATION_SUBJECT`). ``Auto-Submitted:
  auto-generated`` on a mail that answers nothing (no In-Reply-To/References, no case token) is a
  machine's notice, not an answer: it is not counted here (it may carry a citizen's concern, from a form
  mailer), and still gets no acknowledgement. List mail (below) is never an auto-reply.
* ``bulk`` — why the mail is list or newsletter mail (``List-Id``, ``List-Unsubscribe``), or None.
* ``report`` — for a delivery status notification (RFC 3464) or a read receipt: the Message-IDs of the
  original mail it is about and the per-recipient action and status.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email import errors as email_errors
from email import message_from_bytes
from email import policy as email_policy
from email.feedparser import FeedParser
from email.header import decode_header, make_header
from email.headerregistry import HeaderRegistry
from email.message import Message
from email.parser import HeaderParser
from email.utils import collapse_rfc2231_value, getaddresses, parseaddr, parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any

from hub.queue.cases import token_in_subject
from hub.queue.requests import AttachmentIn, Contact, InboundRequest, normalise_email

__all__ = [
    "AttachmentLimits",
    "DeliveryStatus",
    "DroppedAttachment",
    "MailReport",
    "ParsedAttachment",
    "ParsedMail",
    "VACATION_SUBJECT",
    "classify_auto_reply",
    "classify_bulk",
    "html_to_text",
    "parse_mail",
    "strip_quotes_and_signature",
]

MAX_REFS = 100  # InboundRequest.in_reply_to holds at most 100 ids
_MSGID_RE = re.compile(r"<[^<>\s]{1,250}>")
# Control characters InboundRequest refuses (C0 except tab/newline, DEL, C1) and stray BOMs.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff]")
_MEDIA_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_MAX_DEPTH = 12  # MIME nesting deeper than this is treated as an opaque attachment
#: Defaults of ``[email] max_mime_parts`` / ``max_mime_depth``: far above any mail a person writes (a
#: mail with 20 attachments has a few dozen parts), far below what costs seconds to parse.
MAX_PARTS = 1000
MAX_PARSE_DEPTH = 20


class _CachingHeaderRegistry(HeaderRegistry):
    """``policy.default``'s header registry, parsing each distinct header value once.

    ``policy.default`` builds a new header class and re-parses the value on *every* access (the parser
    itself reads Content-Type half a dozen times per part); header objects are immutable, so equal
    ``(name, value)`` pairs can share one. This halves the CPU cost of parsing a small mail.
    """

    # Most header values are unique to one mail (Message-ID, Date, From, Subject): across mails the cache
    # mostly holds garbage. 4096 entries kept ~20 MB resident in a long-running IMAP poller (make soak);
    # 512 keeps the within-mail re-use that saves the CPU, at ~2 MB.
    _MAX = 512

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}
        self._values: dict[tuple[str, str], object] = {}

    def __getitem__(self, name: str):
        cls = self._classes.get(name)
        if cls is None:
            cls = self._classes[name] = super().__getitem__(name)
        return cls

    def __call__(self, name: str, value: str):
        if len(value) > 2000:
            return super().__call__(name, value)
        key = (name.lower(), value)
        header = self._values.get(key)
        if header is None:
            if len(self._values) >= self._MAX:
                self._values.clear()
            header = self._values[key] = super().__call__(name, value)
        return header


#: ``policy.default`` with the caching header registry: same parsing rules, less repeated work.
POLICY = email_policy.default.clone(header_factory=_CachingHeaderRegistry())


@dataclass(frozen=True)
class AttachmentLimits:
    """Which attachments are taken into the request (the rest is only in the kept original)."""

    max_bytes: int = 10_485_760
    max_count: int = 20
    max_total_bytes: int = 26_214_400


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    content_type: str
    data: bytes = field(repr=False)
    inline: bool = False  # an inline image of an HTML body (Apple Mail, Outlook signatures)


@dataclass(frozen=True)
class DroppedAttachment:
    filename: str
    size: int
    reason: str


@dataclass(frozen=True)
class DeliveryStatus:
    """One per-recipient block of a delivery status notification."""

    action: str  # failed | delayed | delivered | relayed | expanded | unknown (displayed … for MDNs)
    status: str  # enhanced status code, e.g. "5.1.1"; "" if none
    recipient: str | None = None
    diagnostic: str | None = None


@dataclass(frozen=True)
class MailReport:
    """A delivery status notification (``kind='delivery-status'``) or read receipt (``'disposition'``)."""

    kind: str
    original_message_ids: tuple[str, ...]
    statuses: tuple[DeliveryStatus, ...]

    @property
    def action(self) -> str:
        """The most serious action of all recipients: failed > delayed > anything else."""
        actions = {s.action for s in self.statuses}
        for worst in ("failed", "delayed", "delivered", "relayed", "expanded"):
            if worst in actions:
                return worst
        return next(iter(actions), "unknown")

    @property
    def status(self) -> str:
        """The status code belonging to :attr:`action`."""
        for s in self.statuses:
            if s.action == self.action and s.status:
                return s.status
        return ""

    @property
    def diagnostic(self) -> str | None:
        for s in self.statuses:
            if s.action == self.action and s.diagnostic:
                return s.diagnostic
        return None


@dataclass(frozen=True)
class ParsedMail:
    """Everything the channel needs from one raw mail."""

    message_id: str  # "<...>"; synthesised from the bytes' SHA-256 when the mail has none
    message_id_synthesised: bool
    from_name: str | None
    from_address: str | None  # validated, lower-case; None when unusable
    reply_address: str | None  # Reply-To when usable, else from_address: where answers go
    subject: str | None
    date: datetime | None
    in_reply_to: tuple[str, ...]  # In-Reply-To, then References newest first
    text: str  # for routing: quotes and signature stripped
    full_text: str  # the whole body text, quotes and signature kept
    attachments: tuple[ParsedAttachment, ...] = ()
    dropped: tuple[DroppedAttachment, ...] = ()
    automatic: str | None = None  # reason no automatic answer may go to this mail
    auto_reply: str | None = None  # reason this mail is an automatic answer (out-of-office, auto-responder)
    bulk: str | None = None  # reason this mail is list/newsletter mail
    envelope_from: str | None = None  # MAIL FROM (or Return-Path from a mailbox), "" for the null sender
    report: MailReport | None = None
    language: str | None = None  # "de" | "en" guess
    location: str | None = None  # a "12345 Ort" line found in the sender's signature
    is_forward: bool = False
    defects: int = 0  # parser defects found (malformed input), for logs
    cut: str | None = None  # why parsing stopped before the end (too many parts, nested too deep)

    @property
    def contact_address(self) -> str | None:
        return self.reply_address or self.from_address

    def request_text(self, max_chars: int = 100_000) -> str:
        """The request text: routing text, else the full text, else the subject; with notes on dropped files."""
        text = self.text.strip() or self.full_text.strip() or (self.subject or "").strip()
        notes = [_dropped_note(d) for d in self.dropped]
        if self.cut:
            notes.append(f"[Die E-Mail wurde nur teilweise gelesen: {self.cut}. Die Original-E-Mail ist "
                         "gespeichert.]")
        if notes:
            text = (text + "\n\n" if text else "") + "\n".join(notes)
        if not text and not self.attachments:
            text = "(E-Mail ohne Text)"
        if len(text) > max_chars:
            note = "\n[… gekürzt; die vollständige E-Mail ist gespeichert.]"
            text = text[: max_chars - len(note)] + note
        return text

    def to_request(
        self, *, received_at: datetime, raw_ref: str | None = None, max_text_chars: int = 100_000
    ) -> InboundRequest:
        """The normalized request. ``received_at`` is when the hub got the mail (never the Date header)."""
        return InboundRequest(
            channel="email",
            external_id=self.message_id,
            received_at=received_at,
            contact=Contact(name=self.from_name, email=self.contact_address),
            text=self.request_text(max_text_chars),
            subject=self.subject,
            location=self.location,
            in_reply_to=list(self.in_reply_to),
            attachments=[
                AttachmentIn(filename=a.filename, content_type=a.content_type, data=a.data)
                for a in self.attachments
            ],
            raw_ref=raw_ref,
            auto_reply=self.auto_reply,
        )


def _dropped_note(d: DroppedAttachment) -> str:
    return (
        f"[Anhang „{d.filename}“ ({_mb(d.size)}) nicht übernommen: {d.reason}. "
        "Die Original-E-Mail ist gespeichert.]"
    )


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB".replace(".", ",")


# -- text helpers ------------------------------------------------------------------------------------


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _unsurrogate(text: str) -> str:
    """Raw 8-bit bytes in headers come out of the parser as surrogate escapes: decode them for real."""
    if not _SURROGATE_RE.search(text):
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _SURROGATE_RE.sub("\ufffd", text)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def sanitize(text: str) -> str:
    """Line breaks normalised to ``\\n``; control characters (which requests refuse) and surrogates removed."""
    text = _unsurrogate(text).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL_RE.sub("", text)


def _one_line(text: str | None, limit: int = 500) -> str | None:
    if text is None:
        return None
    text = " ".join(sanitize(text).replace("\t", " ").split())
    return text[:limit] or None


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes of a text part → str, whatever the declared charset says (or gets wrong)."""
    cs = (charset or "").strip().strip('"').lower()
    # Mail labelled Latin-1 or ASCII is in practice often windows-1252 (€, „“) or UTF-8: like browsers,
    # read Latin-1 as its superset cp1252, and try UTF-8 on "ASCII" before falling back.
    if cs in ("", "us-ascii", "ascii", "ansi_x3.4-1968", "unknown-8bit", "x-unknown", "default"):
        order = ["utf-8", "cp1252"]
    elif cs in ("iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "iso_8859-1"):
        order = ["cp1252", "utf-8"]
    else:
        order = [cs, "utf-8", "cp1252"]
    for name in order:
        try:
            return data.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue
    try:
        return data.decode(order[0], errors="replace")
    except LookupError:
        return data.decode("cp1252", errors="replace")


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def _decoded(part: Message) -> bytes | None:
    """``get_payload(decode=True)``, but base64 whose length is off by one is decoded as far as it goes.

    The email package gives such a payload back undecoded (there is no way to decode the last character),
    which would put base64 gibberish into the request; a sending client's garbage line should cost its
    last byte, not the whole text.
    """
    data = part.get_payload(decode=True)
    if not any(isinstance(d, email_errors.InvalidBase64LengthDefect) for d in getattr(part, "defects", ())):
        return data
    payload = part.get_payload()
    if not isinstance(payload, str):
        return data
    clean = _NOT_BASE64.sub(b"", payload.encode("ascii", "ignore"))
    if len(clean) % 4 == 1:  # one character too many: it cannot be decoded, the rest can
        clean = clean[:-1]
    clean += b"=" * (-len(clean) % 4)
    try:
        return base64.b64decode(clean)
    except (binascii.Error, ValueError):
        return data


def _part_text(part: Message) -> str:
    try:
        data = _decoded(part)
    except Exception:  # broken transfer encoding: take what is there
        data = None
    if data is None:
        payload = part.get_payload()
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    try:
        charset = (_param(part, "charset") or "").lower() or None
    except Exception:
        charset = None
    text = sanitize(_decode_bytes(data, charset))
    try:
        flowed = _ctype(part) == "text/plain" and (_param(part, "format") or "").lower() == "flowed"
        delsp = (_param(part, "delsp") or "").lower() == "yes"
    except Exception:
        flowed = delsp = False
    return _unflow(text, delsp) if flowed else text


def _unflow(text: str, delsp: bool) -> str:
    """RFC 3676 format=flowed: join soft-broken lines (Apple Mail, Thunderbird)."""
    out: list[str] = []
    buf = ""
    for line in text.split("\n"):
        if line.startswith(" "):  # space-stuffing
            line = line[1:]
        if line.endswith(" ") and line != "-- ":
            buf += line[:-1] if delsp else line
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return "\n".join(out)


def _ctype(part: Message) -> str:
    """``_ctype(part)``, parsed once per part (policy.default re-parses the header on every call)."""
    cached = part.__dict__.get("_hub_ctype")
    if cached is None:
        try:
            cached = part.get_content_type()
        except Exception:
            cached = "text/plain"
        part.__dict__["_hub_ctype"] = cached
    return cached


def _param(part: Message, name: str) -> str | None:
    """A Content-Type parameter (lower-case name), parsed once per part; RFC 2231 values collapsed."""
    params = part.__dict__.get("_hub_params")
    if params is None:
        params = {}
        try:
            for key, value in (part.get_params() or [])[1:]:
                params[key.lower()] = collapse_rfc2231_value(value) if isinstance(value, tuple) else value
        except Exception:
            pass
        part.__dict__["_hub_params"] = params
    value = params.get(name)
    return str(value) if value is not None else None


# -- HTML → text ----------------------------------------------------------------------------------------

_BLOCK = frozenset(
    "address article aside blockquote center dd div dl dt fieldset figcaption figure footer form h1 h2 h3 h4 "
    "h5 h6 header hr li main nav ol p pre section table tbody thead tfoot tr ul".split()
)
_PARAGRAPH = frozenset("p h1 h2 h3 h4 h5 h6 ul ol table hr".split())
_SKIP = frozenset("script style head title template noscript svg math object iframe select".split())


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[int, str]] = []
        self.cur: list[str] = []
        self.depth = 0  # <blockquote> depth
        self.skip = 0
        self.pre = 0
        self.href: list[str | None] = []

    def _newline(self, force: bool = False) -> None:
        """End the current line; an empty one only when ``force`` (``<br>``): blocks never stack blank lines."""
        text = "".join(self.cur)
        if not self.pre:
            text = " ".join(text.replace("\xa0", " ").split())
        self.cur = []
        if text.strip() or force:
            self.lines.append((self.depth, text.rstrip()))

    def _paragraph(self) -> None:
        self._newline()
        if self.lines and self.lines[-1][1]:
            self.lines.append((self.depth, ""))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
            return
        if self.skip:
            return
        if tag == "br":
            self._newline(force=True)
        elif tag in _PARAGRAPH:
            self._paragraph()
        elif tag == "blockquote":
            self._newline()
            self.depth += 1
        elif tag in _BLOCK:
            self._newline()
            if tag == "li":
                self.cur.append("- ")
            elif tag == "pre":
                self.pre += 1
        elif tag in ("td", "th"):
            self.cur.append(" ")
        elif tag == "a":
            self.href.append(dict(attrs).get("href"))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and alt.strip():
                self.cur.append(f"[{alt.strip()}]")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag == "blockquote":
            self._newline()
            self.depth = max(0, self.depth - 1)
        elif tag in _PARAGRAPH:
            self._paragraph()
        elif tag in _BLOCK:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            self._newline()
        elif tag == "a" and self.href:
            href = self.href.pop()
            shown = "".join(self.cur)
            if href and href.lower().startswith(("http://", "https://")) and href not in shown:
                self.cur.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.cur.append(data)

    def result(self) -> str:
        self._newline()
        out: list[str] = []
        for depth, text in self.lines:
            line = ("> " * depth + text).rstrip() if (text or depth) else ""
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out).strip("\n")


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body; script, style and head content never reach the text."""
    parser = _HtmlText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # HTMLParser is lenient; this is a last resort
        return sanitize(re.sub(r"<[^>]*>", " ", html))
    return sanitize(parser.result())


# -- quotes and signatures ----------------------------------------------------------------------------

_ORIGINAL_MSG = re.compile(
    r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|originalnachricht|original-nachricht|"
    r"message d'origine|mensaje original)\s*-{2,}\s*$",
    re.I,
)
_FORWARD_MARK = re.compile(
    r"^\s*(-{3,}\s*(forwarded message|weitergeleitete nachricht)\s*-{3,}|"
    r"begin forwarded message:|anfang der weitergeleiteten nachricht:)\s*$",
    re.I,
)
_HDR_FROM = re.compile(r"^\s*\*?(from|von|de)\s*:\*?\s+\S", re.I)
_HDR_NEXT = re.compile(r"^\s*\*?(sent|gesendet|date|datum|to|an|envoyé|subject|betreff)\s*:", re.I)
_ATTRIBUTION_START = re.compile(r"^\s*(on|am|le|el|il|w dniu|\d{1,4}[./-])\s", re.I)
_ATTRIBUTION_END = re.compile(r"\b(wrote|schrieb|a écrit|escribió|scrisse|napisał|yazdı)\b[^:]{0,120}:\s*$", re.I)
_OUTLOOK_RULE = re.compile(r"^\s*_{10,}\s*$")
_MOBILE_FOOTER = re.compile(
    r"^\s*(sent from my \w+|sent from (mail|outlook) for \w+|get outlook for \w+|"
    r"von meinem \w+( \w+)? gesendet|gesendet von meinem \w+.*|von outlook für \w+ gesendet|"
    r"gesendet mit der \w+.*app|sent from yahoo mail.*)\s*(<[^>]*>)?\s*$",
    re.I,
)
_POSTCODE_PLACE = re.compile(r"\b(\d{5})[ \t]+([A-ZÄÖÜ][\wÄÖÜäöüß.\-]*(?:[ \t][\wÄÖÜäöüß.\-()]+){0,3})")
_FORWARD_SUBJECT = re.compile(r"^\s*(fwd?|fw|wg|wtr|tr|weitergeleitet)\s*:", re.I)


def _history_start(lines: list[str], start: int = 0) -> int | None:
    """Index of the first line of an unquoted earlier message (Outlook style), or None."""
    for i in range(start, len(lines)):
        line = lines[i]
        if _ORIGINAL_MSG.match(line):
            return i
        if _OUTLOOK_RULE.match(line) and any(_HDR_FROM.match(x) for x in lines[i + 1 : i + 4]):
            return i
        if _HDR_FROM.match(line) and any(_HDR_NEXT.match(x) for x in lines[i + 1 : i + 5]) and i > 0:
            return i
    return None


def _attribution_at(lines: list[str], i: int) -> int:
    """Number of lines (1 or 2) of an "On … wrote:" attribution starting at ``i``, else 0."""
    line = lines[i]
    if not _ATTRIBUTION_START.match(line) or len(line) > 300:
        return 0
    if _ATTRIBUTION_END.search(line):
        return 1
    if i + 1 < len(lines) and _ATTRIBUTION_END.search(line + " " + lines[i + 1]) and len(lines[i + 1]) < 200:
        return 2
    return 0


def _strip_signature(lines: list[str]) -> tuple[list[str], list[str]]:
    """Split off the signature: after a ``-- `` line (RFC 3676) near the end, and mobile footers."""
    cut = None
    for i, line in enumerate(lines):
        if line in ("-- ", "--") and len(lines) - i <= 25:
            cut = i
            break
    sig: list[str] = []
    if cut is not None:
        lines, sig = lines[:cut], lines[cut + 1 :]
    kept = []
    for line in lines:
        if _MOBILE_FOOTER.match(line):
            sig.append(line)
        else:
            kept.append(line)
    return kept, sig


def _tidy(lines: list[str]) -> str:
    text = "\n".join(line.rstrip() for line in lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n ")


def strip_quotes_and_signature(text: str, *, forward: bool = False) -> tuple[str, str | None]:
    """The text the sender wrote this time, and a place (``"12345 Ort"``) found in their signature.

    Replies: ``>`` lines and their attribution go (answers written between quotes stay), everything from an
    unquoted earlier message on goes, and so does the signature. Forwards keep what was forwarded.
    """
    lines = sanitize(text).split("\n")
    fwd_at = next((i for i, line in enumerate(lines) if _FORWARD_MARK.match(line)), None)
    if forward and fwd_at is None:
        fwd_at = _history_start(lines)
    if fwd_at is not None:
        own, forwarded = lines[:fwd_at], lines[fwd_at:]
        own, sig = _strip_signature(own)
        return _tidy(own + ([""] if own else []) + forwarded), _place(sig)

    cut = _history_start(lines)
    if cut is not None:
        lines = lines[:cut]
    kept: list[str] = []
    i = 0
    while i < len(lines):
        n = _attribution_at(lines, i)
        if n:
            rest = [x for x in lines[i + n :] if x.strip()]
            if not rest or rest[0].lstrip().startswith(">"):
                i += n
                continue
            # An attribution followed by unquoted text: the earlier message is pasted below (Outlook on
            # the web, some phones); everything from here is history.
            break
        if lines[i].lstrip().startswith(">"):
            i += 1
            continue
        kept.append(lines[i])
        i += 1
    kept, sig = _strip_signature(kept)
    return _tidy(kept), _place(sig)


def _place(signature: Iterable[str]) -> str | None:
    for line in signature:
        m = _POSTCODE_PLACE.search(line)
        if m:
            return _one_line(f"{m.group(1)} {m.group(2).strip(' ,.')}", 200)
    return None


# -- headers ---------------------------------------------------------------------------------------------


def _header(msg: Message, name: str) -> str | None:
    """A header's decoded value; never raises (falls back to decoding the raw value leniently)."""
    try:
        if name not in msg:  # cheap: no header object is built
            return None
    except Exception:
        pass
    try:
        value = msg.get(name)
        if value is not None:
            return str(value)
    except Exception:
        pass
    try:
        for key, raw in msg.raw_items():  # type: ignore[attr-defined]
            if key.lower() == name.lower():
                try:
                    return str(make_header(decode_header(raw)))
                except Exception:
                    return raw if isinstance(raw, str) else None
    except Exception:
        pass
    return None


def _header_all(msg: Message, name: str) -> list[str]:
    try:
        return [str(v) for v in (msg.get_all(name) or [])]
    except Exception:
        value = _header(msg, name)
        return [value] if value else []


def _msgids(values: Iterable[str | None]) -> list[str]:
    out: list[str] = []
    for value in values:
        for mid in _MSGID_RE.findall(value or ""):
            mid = sanitize(mid)
            if mid not in out:
                out.append(mid)
    return out


def _address(value: str | None) -> tuple[str | None, str | None]:
    """(display name, validated address) of the first address in a header value."""
    if not value:
        return None, None
    try:
        pairs = getaddresses([value])
    except Exception:
        pairs = [parseaddr(value)]
    for name, addr in pairs:
        try:
            email = normalise_email(sanitize(addr))
        except ValueError:
            continue
        return _one_line(name), email
    return None, None


_SIMPLE_ADDR = re.compile(r"^\s*(?:\"?([^\"<>]*?)\"?\s*)?<?([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+)>?\s*$")


def _addr_header(msg: Message, name: str) -> tuple[str | None, str | None]:
    # Fast path for the common "Name <local@domain>" shape: the full RFC 5322 address parser of
    # policy.default is the single most expensive step of parsing a small mail.
    try:
        raw = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)  # type: ignore[attr-defined]
    except Exception:
        raw = None
    if isinstance(raw, str) and "," not in raw and "(" not in raw and "\\" not in raw:
        m = _SIMPLE_ADDR.match(" ".join(raw.split()))
        if m:
            try:
                address = normalise_email(m.group(2))
            except ValueError:
                address = None
            if address:
                display = m.group(1) or ""
                if "=?" in display:
                    try:
                        display = str(make_header(decode_header(display)))
                    except Exception:
                        display = ""
                return _one_line(display), address
    try:
        header = msg.get(name)
        addresses = getattr(header, "addresses", None)
        if addresses:
            for a in addresses:
                try:
                    return _one_line(a.display_name), normalise_email(sanitize(a.addr_spec))
                except ValueError:
                    continue
    except Exception:
        pass
    return _address(_header(msg, name))


# -- classification --------------------------------------------------------------------------------------

_ROBOT_LOCAL = re.compile(
    r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|bounces?|listserv|majordomo|owner-.+|.+-request|"
    r".+-bounces?|noreply-.+)$",
    re.I,
)


def _local_part(address: str | None) -> str:
    return (address or "").rsplit("@", 1)[0]


def classify_automatic(
    msg: Message,
    *,
    envelope_from: str | None,
    from_address: str | None,
    own_addresses: Iterable[str] = (),
    report: MailReport | None = None,
) -> str | None:
    """Why this mail must get no automatic answer (RFC 3834 section 2), or None."""
    if report is not None:
        return "delivery status notification" if report.kind == "delivery-status" else "read receipt"
    if envelope_from is not None and envelope_from.strip() in ("", "<>"):
        return "null envelope sender"
    auto = (_header(msg, "Auto-Submitted") or "").split(";", 1)[0].strip().lower()
    if auto and auto != "no":
        return f"auto-submitted: {auto}"
    precedence = (_header(msg, "Precedence") or "").strip().lower()
    if precedence in ("bulk", "list", "junk", "auto_reply"):
        return f"precedence: {precedence}"
    if _header(msg, "X-Autoreply") or _header(msg, "X-Autorespond") or _header(msg, "X-Autogenerated"):
        return "auto-reply header"
    suppress = (_header(msg, "X-Auto-Response-Suppress") or "").lower()
    if any(word in suppress for word in ("all", "autoreply", "oof")):
        return "x-auto-response-suppress"
    if _header(msg, "List-Id") or _header(msg, "List-Unsubscribe"):
        return "mailing list"
    own = {a.lower() for a in own_addresses}
    env = envelope_from.strip("<> ").lower() if envelope_from else None
    for addr in (from_address, env):
        if addr and addr in own:
            return "our own address"
        if addr and _ROBOT_LOCAL.match(_local_part(addr)):
            return f"robot sender: {_local_part(addr).lower()}"
    return None


_BOUNCE_SUBJECT = re.compile(
    r"(undeliver|delivery (status notification|failure|has failed)|returned mail|failure notice|"
    r"mail delivery (failed|system)|unzustellbar|nicht zustellbar|zustellung fehlgeschlagen|"
    r"non remis|delivery incomplete)",
    re.I,
)
_STATUS_RE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


#: Subjects of out-of-office and vacation notices (Outlook/Exchange, Gmail, Thunderbird and Sieve vacation,
#: German and English), matched at the start of the subject: the last resort when no header says so.
VACATION_SUBJECT = re.compile(
    r"^\s*(?:"
    r"abwesenheits(?:notiz|nachricht|meldung|assistent)|automatische\s+(?:antwort|abwesenheitsnotiz|"
    r"r(?:ü|ue)ckantwort)|autom\.\s*antwort|abwesend|nicht\s+im\s+b(?:ü|ue)ro|urlaubs?(?:notiz|abwesenheit)|"
    r"out\s+of\s+(?:the\s+)?office|automatic\s+reply|auto(?:matic)?[\s-]?(?:reply|response)|autoreply|"
    r"vacation\s+(?:reply|notice|response|message)|away\s+from\s+(?:the\s+)?office)"
    r"(?=\W|$)",
    re.I,
)


def classify_auto_reply(msg: Message, subject: str | None, *, answers_something: bool) -> str | None:
    """Why this mail is an automatic answer (out-of-office, vacation notice, auto-responder), or None.

    ``answers_something``: the mail refers to an earlier one (In-Reply-To/References, a case token in the
    subject). Without it ``Auto-Submitted: auto-generated`` is a machine's notice, not an answer.
    List mail is :func:`classify_bulk`'s, never an auto-reply.
    """
    if classify_bulk(msg):
        return None
    auto = (_header(msg, "Auto-Submitted") or "").split(";", 1)[0].split("(", 1)[0].strip().lower()
    if auto and auto != "no" and (auto != "auto-generated" or answers_something):
        return f"auto-submitted: {auto}"
    precedence = (_header(msg, "Precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"precedence: {precedence}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        value = (_header(msg, name) or "").strip().lower()
        if value and value not in ("no", "false", "0"):
            return f"{name.lower()} header"
    if subject and VACATION_SUBJECT.match(subject):
        return "vacation subject"
    return None


def classify_bulk(msg: Message) -> str | None:
    """Why this mail is list or newsletter mail (RFC 2369/2919 headers), or None."""
    if _header(msg, "List-Id"):
        return "list-id header"
    if _header(msg, "List-Unsubscribe"):
        return "list-unsubscribe header"
    return None


def _field(block: Message, name: str) -> str | None:
    value = _header(block, name)
    return _one_line(value, 1000) if value else None


def _typed(value: str | None) -> str | None:
    """``rfc822; max@example.org`` → ``max@example.org``."""
    if not value:
        return None
    return value.split(";", 1)[1].strip() if ";" in value else value.strip()


def _parse_report(msg: Message, raw: bytes, segments: list[str], *, sender: str | None, subject: str | None,
                  message_id: str) -> MailReport | None:
    def raw_text() -> str:
        return "\n".join(segments) + "\n" + raw[:200_000].decode("utf-8", "replace")

    ctype = _ctype(msg)
    report_type = (_param(msg, "report-type") or "").lower() if ctype == "multipart/report" else ""
    if ctype == "multipart/report" and report_type in ("delivery-status", "disposition-notification"):
        statuses: list[DeliveryStatus] = []
        originals: list[str] = []
        for part in msg.walk():
            pt = _ctype(part)
            if pt in ("message/delivery-status", "message/global-delivery-status"):
                blocks = part.get_payload()
                if isinstance(blocks, str):  # some parsers leave it as text
                    blocks = [HeaderParser().parsestr(b) for b in re.split(r"\n\s*\n", blocks) if b.strip()]
                for block in blocks[1:] if len(blocks) > 1 else blocks:
                    action = (_field(block, "Action") or "unknown").lower()
                    statuses.append(
                        DeliveryStatus(
                            action=action.split()[0] if action else "unknown",
                            status=(_STATUS_RE.search(_field(block, "Status") or "") or [""])[0],
                            recipient=_typed(_field(block, "Final-Recipient") or _field(block, "Original-Recipient")),
                            diagnostic=_typed(_field(block, "Diagnostic-Code")),
                        )
                    )
            elif pt == "message/disposition-notification":
                blocks = part.get_payload()
                block = blocks[0] if isinstance(blocks, list) and blocks else None
                disposition = (_field(block, "Disposition") or "") if block is not None else ""
                originals += _msgids([_field(block, "Original-Message-ID")] if block is not None else [])
                statuses.append(DeliveryStatus(action=disposition.rsplit(";", 1)[-1].strip().lower() or "unknown",
                                               status=""))
            elif pt in ("message/rfc822", "message/global"):
                inner = part.get_payload()
                if isinstance(inner, list) and inner:
                    originals += _msgids([_header(inner[0], "Message-ID")])
            elif pt in ("text/rfc822-headers", "message/global-headers"):
                headers = HeaderParser(policy=POLICY).parsestr(_part_text(part))
                originals += _msgids([_header(headers, "Message-ID")])
        kind = "delivery-status" if report_type == "delivery-status" else "disposition"
        if not originals:
            originals = _msgids([raw_text()])[:20]
        return MailReport(kind, tuple(dict.fromkeys(originals)), tuple(statuses))
    # Bounces that are not RFC 3464 (old qmail, some Exchange set-ups): from a mailer daemon, with a
    # bounce subject. The ids of our mail are looked for in the text.
    if sender and re.match(r"^(mailer-daemon|postmaster)$", _local_part(sender), re.I):
        if _BOUNCE_SUBJECT.search(subject or ""):
            text = raw_text()
            code = _STATUS_RE.search(text)
            status = code.group(1) if code else "5.0.0"
            action = "delayed" if status.startswith("4") else "failed"
            ids = [m for m in _msgids([text]) if m != message_id]
            return MailReport("delivery-status", tuple(ids[:20]), (DeliveryStatus(action, status),))
    return None


# -- body and attachments --------------------------------------------------------------------------------


@dataclass
class _Walk:
    limits: AttachmentLimits
    segments: list[str] = field(default_factory=list)
    attachments: list[ParsedAttachment] = field(default_factory=list)
    dropped: list[DroppedAttachment] = field(default_factory=list)
    total: int = 0
    defects: int = 0
    forwarded: bool = False

    def attach(self, part: Message, *, inline: bool = False) -> None:
        filename = _filename(part, len(self.attachments) + len(self.dropped) + 1)
        try:
            data = _decoded(part)
        except Exception:
            data = None
        if data is None:
            payload = part.get_payload()
            if isinstance(payload, list):  # an attached message: keep its bytes
                try:
                    data = payload[0].as_bytes() if payload else b""
                except Exception:
                    data = b""
            else:
                data = (payload or "").encode("utf-8", "surrogateescape")
        size = len(data)
        lim = self.limits
        if size > lim.max_bytes:
            reason = f"größer als {_mb(lim.max_bytes)}"
        elif len(self.attachments) >= lim.max_count:
            reason = f"mehr als {lim.max_count} Anhänge"
        elif self.total + size > lim.max_total_bytes:
            reason = f"alle Anhänge zusammen größer als {_mb(lim.max_total_bytes)}"
        else:
            self.attachments.append(ParsedAttachment(filename, _media_type(part), data, inline))
            self.total += size
            return
        self.dropped.append(DroppedAttachment(filename, size, reason))


def _media_type(part: Message) -> str:
    try:
        ctype = _ctype(part)
    except Exception:
        return "application/octet-stream"
    return ctype if _MEDIA_TYPE_RE.fullmatch(ctype) and len(ctype) <= 127 else "application/octet-stream"


def _filename(part: Message, n: int) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name is None:
        try:
            name = _param(part, "name")
        except Exception:
            name = None
    name = _one_line(str(name), 1000) if name else None
    if name:
        name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name in (".", ".."):
        ext = mimetypes.guess_extension(_media_type(part)) or ".bin"
        name = f"anhang-{n}{ext}"
    if len(name) > 255:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 250 - len(ext)] + dot + ext) if dot and len(ext) < 10 else name[:255]
    return name


def _disposition(part: Message) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def _is_attachment(part: Message) -> bool:
    disposition = _disposition(part)
    if disposition == "attachment":
        return True
    ctype = _ctype(part)
    if ctype not in ("text/plain", "text/html"):
        return True
    try:
        has_name = bool(part.get_filename())
    except Exception:
        has_name = False
    return has_name and disposition != "inline"


def _text_of(part: Message) -> str:
    text = _part_text(part)
    return html_to_text(text) if _ctype(part) == "text/html" else text


def _best_alternative(parts: list[Message]) -> Message | None:
    """From multipart/alternative: the plain part when it has text, else HTML, else the richest."""
    def leaf_type(p: Message) -> str:
        return _ctype(p)

    plain = [p for p in parts if leaf_type(p) == "text/plain" and _part_text(p).strip()]
    if plain:
        return plain[0]
    html = [p for p in parts if leaf_type(p) == "text/html"]
    if html:
        return html[-1]
    nested = [p for p in parts if p.is_multipart()]
    if nested:
        return nested[-1]
    return parts[-1] if parts else None


def _walk(part: Message, w: _Walk, depth: int = 0) -> None:
    w.defects += len(getattr(part, "defects", ()) or ())
    ctype = _ctype(part)
    if depth > _MAX_DEPTH:
        w.attach(part)
        return
    if ctype in ("message/rfc822", "message/global"):  # before is_multipart(): its payload is a list
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            _forwarded(inner[0], w, depth + 1)
        else:
            w.attach(part)
        return
    if ctype.startswith("multipart/") and not part.is_multipart():
        # A multipart without a usable boundary: the parser leaves the body as one string. It is what the
        # sender wrote (most often plain text), so read it as text rather than hide it in an attachment.
        w.segments.append(_part_text(part))
        return
    if part.is_multipart():
        children = [p for p in (part.get_payload() or []) if isinstance(p, Message)]
        if ctype == "multipart/alternative":
            best = _best_alternative(children)
            if best is not None:
                _walk(best, w, depth + 1)
            # Files that live only in another alternative (Apple Mail's inline photo sits in the HTML
            # one's multipart/related) are still the citizen's files.
            for other in children:
                if other is not best:
                    _files_only(other, w)
            return
        if ctype == "multipart/related":
            start = _param(part, "start")
            root = next((c for c in children if start and c.get("Content-ID") == start), None)
            root = root or (children[0] if children else None)
            for child in children:
                if child is root:
                    _walk(child, w, depth + 1)
                else:
                    w.attach(child, inline=True)
            return
        if ctype == "multipart/signed":
            if children:
                _walk(children[0], w, depth + 1)
            return
        for child in children:  # mixed, report, digest, parallel, unknown
            if ctype == "multipart/report" and _ctype(child).startswith(
                ("message/delivery-status", "message/disposition", "message/global-delivery",
                 "text/rfc822-headers", "message/rfc822")
            ) and child is not children[0]:
                continue
            _walk(child, w, depth + 1)
        return
    if _is_attachment(part):
        w.attach(part)
        return
    w.segments.append(_text_of(part))


def _files_only(part: Message, w: _Walk) -> None:
    """Take the attachments below ``part`` but none of its body text (an alternative not chosen)."""
    for leaf in part.walk():
        if leaf.is_multipart():
            continue
        if _ctype(leaf) in ("text/plain", "text/html") and not _is_attachment(leaf):
            continue
        if _ctype(leaf) == "text/calendar":  # the invitation's other rendering
            continue
        w.attach(leaf, inline=_disposition(leaf) != "attachment")


def _forwarded(inner: Message, w: _Walk, depth: int) -> None:
    """An attached mail ("forward as attachment"): its text is part of the concern."""
    w.forwarded = True
    head = ["---------- Weitergeleitete Nachricht ----------"]
    for name, label in (("From", "Von"), ("Date", "Datum"), ("Subject", "Betreff")):
        value = _one_line(_header(inner, name))
        if value:
            head.append(f"{label}: {value}")
    sub = _Walk(w.limits, total=w.total)
    sub.attachments, sub.dropped = w.attachments, w.dropped
    _walk(inner, sub, depth)
    w.total = sub.total
    w.defects += sub.defects
    w.segments.append("\n".join(head) + "\n\n" + "\n\n".join(s for s in sub.segments if s.strip()))


# -- entry point -----------------------------------------------------------------------------------------

_EN = frozenset("the and is my i you to for of please have with would need could can a an this we your".split())
_DE = frozenset("der die das und ist ich sie nicht mit für ein eine bitte habe wir zu ihr mein meine den dem".split())


def guess_language(msg: Message, text: str) -> str:
    """``en`` when the mail declares English or reads like it, else ``de``."""
    declared = (_header(msg, "Content-Language") or _header(msg, "Accept-Language") or "").strip().lower()
    if declared.startswith("en"):
        return "en"
    if declared.startswith("de"):
        return "de"
    words = re.findall(r"[a-zäöüß]+", text[:2000].lower())
    en = sum(1 for x in words if x in _EN)
    de = sum(1 for x in words if x in _DE)
    return "en" if en >= 3 and en > 2 * de else "de"


def synthetic_message_id(raw: bytes) -> str:
    """A stable id for a mail without a usable Message-ID: the same bytes give the same id."""
    return f"<sha256-{hashlib.sha256(raw).hexdigest()[:40]}@no-message-id.invalid>"


class _Stop(Exception):
    """Raised inside the parser when a limit is reached: the parse ends where it is."""


class _BoundedParser(FeedParser):
    """The standard library's feed parser (``policy`` as given), stopped at a part count and a depth.

    ``FeedParser`` calls ``_new_message`` once for every MIME part it starts, with the parts above it on
    ``_msgstack``; refusing there ends the parse at once, before the part is made. Everything parsed
    until then is complete: every earlier part's body was set when its closing boundary was read, and
    the open containers hold them. ``_new_message`` and ``_msgstack`` are private but have not changed
    since Python 3.2; ``tests/channels/email/test_email_limits.py`` fails if they do.
    """

    def __init__(self, *, policy: Any, max_parts: int, max_depth: int) -> None:
        super().__init__(policy=policy)
        self.max_parts = max_parts
        self.max_depth = max_depth
        self.parts = 0
        self.cut: str | None = None

    def _new_message(self) -> None:
        if self.parts >= self.max_parts:
            self.cut = f"mehr als {self.max_parts} MIME-Teile, nur die ersten {self.max_parts} wurden gelesen"
            raise _Stop
        if len(self._msgstack) > self.max_depth:
            self.cut = f"tiefer als {self.max_depth} Ebenen verschachtelt, ab dort wurde nichts gelesen"
            raise _Stop
        self.parts += 1
        super()._new_message()

    def root(self) -> Message | None:
        """The message as far as it was parsed (after :class:`_Stop`)."""
        return self._msgstack[0] if self._msgstack else self._last


def parse_message(raw: bytes, *, max_parts: int = MAX_PARTS, max_depth: int = MAX_PARSE_DEPTH
                  ) -> tuple[Message, str | None, int]:
    """``raw`` as a message tree of at most ``max_parts`` parts, ``max_depth`` levels deep.

    Returns the tree, why parsing stopped early (None when it read everything) and the part count. Reads
    as ``email.message_from_bytes(raw, policy=POLICY)`` does (ASCII with surrogate escapes, 8 KiB feeds).
    """
    parser = _BoundedParser(policy=POLICY, max_parts=max(1, max_parts), max_depth=max(0, max_depth))
    text = raw.decode("ascii", "surrogateescape")
    try:
        for start in range(0, len(text), 8192):
            parser.feed(text[start:start + 8192])
        return parser.close(), None, parser.parts
    except _Stop:
        root = parser.root()
        if root is None:  # pragma: no cover - the root is the first part and always within the limits
            raise
        return root, parser.cut, parser.parts


def parse_mail(
    raw: bytes,
    *,
    envelope_from: str | None = None,
    own_addresses: Iterable[str] = (),
    limits: AttachmentLimits | None = None,
    max_parts: int = MAX_PARTS,
    max_depth: int = MAX_PARSE_DEPTH,
) -> ParsedMail:
    """Parse one raw mail, at most ``max_parts`` MIME parts and ``max_depth`` levels deep (``cut`` says
    what was left out). Never raises for any input bytes."""
    limits = limits or AttachmentLimits()
    try:
        msg, cut, _parts = parse_message(raw, max_parts=max_parts, max_depth=max_depth)
    except Exception:  # a structure the parser cannot take at all: read it all as one body
        msg, cut = message_from_bytes(b"Content-Type: text/plain\r\n\r\n" + raw, policy=POLICY), None

    ids = _msgids([_header(msg, "Message-ID")])
    message_id = ids[0] if ids else synthetic_message_id(raw)
    from_name, from_address = _addr_header(msg, "From")
    _, reply_to = _addr_header(msg, "Reply-To")
    subject = _one_line(_header(msg, "Subject"))
    try:
        date_value = _header(msg, "Date")
        date = parsedate_to_datetime(date_value) if date_value else None
    except Exception:
        date = None
    in_reply = _msgids(_header_all(msg, "In-Reply-To"))
    refs = _msgids(_header_all(msg, "References"))
    thread = list(dict.fromkeys(in_reply + list(reversed(refs))))
    thread = [t for t in thread if t != message_id][:MAX_REFS]

    w = _Walk(limits)
    try:
        _walk(msg, w)
    except Exception:
        # A structure the walk cannot handle: take the whole body as text rather than lose the mail.
        w.defects += 1
        body = raw.split(b"\r\n\r\n", 1)[-1] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[-1]
        w.segments = [sanitize(_decode_bytes(body, None))]
    full_text = _tidy("\n\n".join(s for s in w.segments if s.strip()).split("\n"))

    is_forward = bool(w.forwarded or _FORWARD_SUBJECT.match(subject or "") or any(
        _FORWARD_MARK.match(line) for line in full_text.split("\n")
    ))
    text, place = strip_quotes_and_signature(full_text, forward=is_forward)
    try:
        report = _parse_report(msg, raw, w.segments, sender=from_address, subject=subject, message_id=message_id)
    except Exception:
        report = None
    if envelope_from is None:  # fetched from a mailbox (IMAP): the delivering server wrote Return-Path
        envelope_from = _header(msg, "Return-Path")
    automatic = classify_automatic(
        msg, envelope_from=envelope_from, from_address=from_address, own_addresses=own_addresses, report=report
    )
    if automatic is None and report is None and subject and VACATION_SUBJECT.match(subject):
        automatic = "vacation subject"
    answers = bool(thread) or token_in_subject(subject) is not None
    auto_reply = None if report is not None else classify_auto_reply(msg, subject, answers_something=answers)
    return ParsedMail(
        message_id=message_id,
        message_id_synthesised=not ids,
        from_name=from_name,
        from_address=from_address,
        reply_address=reply_to if reply_to and not _ROBOT_LOCAL.match(_local_part(reply_to)) else None,
        subject=subject,
        date=date,
        in_reply_to=tuple(thread),
        text=text,
        full_text=full_text,
        attachments=tuple(w.attachments),
        dropped=tuple(w.dropped),
        automatic=automatic,
        auto_reply=auto_reply,
        bulk=classify_bulk(msg),
        envelope_from=envelope_from.strip().strip("<>").strip() if envelope_from is not None else None,
        report=report,
        language=guess_language(msg, text),
        location=place,
        is_forward=is_forward,
        defects=w.defects,
        cut=cut,
    )
