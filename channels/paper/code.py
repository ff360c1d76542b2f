"""The 2D code printed on every form: what it carries, how it is packed, how it is checked.

A code identifies one page of one form (SDAPS' lesson: pages get mixed between people, so the code
names the page, not only the form) and carries what is needed to turn the scan into a request
without trusting anything else on the paper: the form id, the service, the responsible office, the
place, the case (id and token) and the citizen's data the form was pre-filled with.

**Packing.** The fields are joined by the ASCII unit separator and, when it helps, deflated. The
bytes are written in Base45 (RFC 9285), whose 45 characters are exactly the QR code's alphanumeric
set, so a byte costs 8.25 bits of the symbol instead of 10.7 with base64 in byte mode::

    version(1) flags(1) form_id(6) id_tag(8) body(...) tag(16)

**Protection.** ``tag`` is HMAC-SHA256 over everything before it, truncated to 128 bits (collision
resistance is not needed, only unforgeability; 128 bits leave no room for guessing). ``id_tag`` is a
separate 64-bit HMAC of the form id alone: when ``tag`` fails but ``id_tag`` holds, the code was
made by this hub and changed afterwards (:class:`AlteredCode`); when both fail, it was never made
with our key (:class:`ForgedCode`). The body is only decompressed after the tag is checked, or,
to tell the two apart, with a hard size limit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date

VERSION = 1
_FLAG_DEFLATE = 0x01
_SEP = "\x1f"
_FORM_ID_BYTES = 6
_ID_TAG_BYTES = 8
_TAG_BYTES = 16
_HEADER = 2 + _FORM_ID_BYTES + _ID_TAG_BYTES
_MAX_BODY = 4096  # far above what a QR code holds; bounds an unauthenticated inflate
_DOMAIN_TAG = b"citizen-hub paper code\x00"
_DOMAIN_ID = b"citizen-hub paper form id\x00"

#: Longest pre-filled values carried in the code (the form's fields hold them in full).
FIELD_LIMITS = {"name": 80, "address": 160, "email": 80, "phone": 20}
#: Order in which pre-filled values are left out of a code that would not fit its symbol.
_SHED_ORDER = ("phone", "email", "address", "name")


class CodeError(ValueError):
    """A code that cannot be trusted; ``kind`` is ``malformed``, ``forged`` or ``altered``."""

    kind = "malformed"

    def __init__(self, reason: str, form_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.form_id = form_id


class MalformedCode(CodeError):
    """Not a citizen-hub form code at all (another QR code, a damaged symbol, an unknown version)."""

    kind = "malformed"


class ForgedCode(CodeError):
    """Shaped like our code but not signed with any of our keys."""

    kind = "forged"


class AlteredCode(CodeError):
    """Made by this hub, then changed: the form id is ours, the rest no longer matches its signature."""

    kind = "altered"


class CodeTooLong(ValueError):
    """The code does not fit the symbol even without the pre-filled data."""


@dataclass(frozen=True)
class Prefill:
    """The citizen's data a form was pre-filled with (all optional)."""

    name: str = ""
    address: str = ""  # lines separated by "\n"
    email: str = ""
    phone: str = ""

    def clipped(self) -> Prefill:
        return Prefill(**{k: getattr(self, k).replace(_SEP, " ").strip()[:n].strip() for k, n in FIELD_LIMITS.items()})

    def is_empty(self) -> bool:
        return not (self.name or self.address or self.email or self.phone)


@dataclass(frozen=True)
class FormCode:
    """What one page's code says. ``form_id`` looks like ``F-3A9C0E71B2D4``."""

    form_id: str
    service_id: str
    authority_id: str
    location: str = ""  # ARS of the citizen's place, or the place as given
    case_id: int | None = None
    case_token: str | None = None
    issued: date = field(default_factory=date.today)
    page: int = 1
    layout: int = 1
    prefill: Prefill = field(default_factory=Prefill)

    def without(self, name: str) -> FormCode:
        return replace(self, prefill=replace(self.prefill, **{name: ""}))


def new_form_id() -> str:
    """A fresh random form id (48 bits, the same shape as the outbox's paper ids)."""
    return "F-" + secrets.token_hex(_FORM_ID_BYTES).upper()


def _form_id_bytes(form_id: str) -> bytes:
    if not form_id.startswith("F-") or len(form_id) != 2 + 2 * _FORM_ID_BYTES:
        raise ValueError(f"not a form id: {form_id!r}")
    return bytes.fromhex(form_id[2:])


# -- Base45 (RFC 9285) ------------------------------------------------------------------------------

B45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_INDEX = {c: i for i, c in enumerate(B45_ALPHABET)}


def b45encode(data: bytes) -> str:
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        n, c = divmod(n, 45)
        e, d = divmod(n, 45)
        out += (B45_ALPHABET[c], B45_ALPHABET[d], B45_ALPHABET[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += (B45_ALPHABET[c], B45_ALPHABET[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Base45 text to bytes; ``ValueError`` on a character or a length Base45 does not have."""
    try:
        values = [_B45_INDEX[c] for c in text]
    except KeyError as exc:
        raise ValueError(f"not Base45: {exc.args[0]!r}") from None
    if len(values) % 3 == 1:
        raise ValueError("not Base45: bad length")
    out = bytearray()
    for i in range(0, len(values), 3):
        chunk = values[i : i + 3]
        if len(chunk) == 3:
            n = chunk[0] + chunk[1] * 45 + chunk[2] * 2025
            if n > 0xFFFF:
                raise ValueError("not Base45: value out of range")
            out += n.to_bytes(2, "big")
        else:
            n = chunk[0] + chunk[1] * 45
            if n > 0xFF:
                raise ValueError("not Base45: value out of range")
            out.append(n)
    return bytes(out)


# -- packing ----------------------------------------------------------------------------------------


def _mac(key: bytes, domain: bytes, data: bytes, size: int) -> bytes:
    return hmac.new(key, domain + data, hashlib.sha256).digest()[:size]


def _fields(code: FormCode) -> list[str]:
    p = code.prefill
    return [
        str(code.page), str(code.layout), code.service_id, code.authority_id, code.location,
        "" if code.case_id is None else str(code.case_id), code.case_token or "", code.issued.strftime("%Y%m%d"),
        p.name, p.address, p.email, p.phone,
    ]


def encode(code: FormCode, key: bytes) -> str:
    """The code's text (Base45), signed with ``key``."""
    values = _fields(replace(code, prefill=code.prefill.clipped()))
    for value in values:
        if _SEP in value:
            raise ValueError("a code field contains the unit separator")
    plain = _SEP.join(values).encode("utf-8")
    packed = zlib.compress(plain, 9, wbits=-15)
    flags, body = (_FLAG_DEFLATE, packed) if len(packed) < len(plain) else (0, plain)
    form_id = _form_id_bytes(code.form_id)
    head = bytes([VERSION, flags]) + form_id + _mac(key, _DOMAIN_ID, form_id, _ID_TAG_BYTES)
    signed = head + body
    return b45encode(signed + _mac(key, _DOMAIN_TAG, signed, _TAG_BYTES))


def encode_fitting(code: FormCode, key: bytes, max_chars: int) -> tuple[str, FormCode]:
    """Encode ``code`` into at most ``max_chars`` characters, leaving pre-filled values out if needed.

    The values left out are still printed in the form's fields; the code keeps what identifies the
    form and the case. Raises :class:`CodeTooLong` when even that does not fit.
    """
    code = replace(code, prefill=code.prefill.clipped())
    text = encode(code, key)
    for name in _SHED_ORDER:
        if len(text) <= max_chars:
            break
        code = code.without(name)
        text = encode(code, key)
    if len(text) > max_chars:
        raise CodeTooLong(f"the form code needs {len(text)} characters, the symbol holds {max_chars}")
    return text, code


def _inflate(body: bytes, flags: int) -> bytes:
    if not flags & _FLAG_DEFLATE:
        return body
    inflater = zlib.decompressobj(wbits=-15)
    plain = inflater.decompress(body, _MAX_BODY)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("the code's body does not inflate within its limit")
    return plain


def _parse(form_id: bytes, plain: bytes) -> FormCode:
    values = plain.decode("utf-8").split(_SEP)
    if len(values) != 12:
        raise ValueError(f"{len(values)} fields instead of 12")
    page, layout, service, authority, location, case_id, token, issued, name, address, email, phone = values
    return FormCode(
        form_id="F-" + form_id.hex().upper(),
        page=int(page), layout=int(layout), service_id=service, authority_id=authority, location=location,
        case_id=int(case_id) if case_id else None, case_token=token or None,
        issued=date(int(issued[:4]), int(issued[4:6]), int(issued[6:8])),
        prefill=Prefill(name=name, address=address, email=email, phone=phone),
    )


def decode(text: str, keys: Sequence[bytes]) -> FormCode:
    """Check and unpack a code's text. Raises :class:`MalformedCode`, :class:`ForgedCode`, :class:`AlteredCode`."""
    if not keys:
        raise ValueError("no verification key")
    try:
        raw = b45decode(text.strip())
    except ValueError:
        raise MalformedCode("the code on the page is not a citizen-hub form code") from None
    if len(raw) < _HEADER + _TAG_BYTES + 1 or raw[0] != VERSION:
        raise MalformedCode("the code on the page is not a citizen-hub form code (unknown format)")
    flags, form_id, id_tag = raw[1], raw[2 : 2 + _FORM_ID_BYTES], raw[2 + _FORM_ID_BYTES : _HEADER]
    signed, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    display_id = "F-" + form_id.hex().upper()
    for key in keys:
        if hmac.compare_digest(_mac(key, _DOMAIN_TAG, signed, _TAG_BYTES), tag):
            try:
                return _parse(form_id, _inflate(raw[_HEADER:-_TAG_BYTES], flags))
            except (ValueError, UnicodeDecodeError, zlib.error) as exc:
                # Signed by us, yet unreadable: a code of a newer release with the same version byte.
                raise MalformedCode(f"the form code is signed but cannot be read ({exc})", display_id) from None
    if any(hmac.compare_digest(_mac(key, _DOMAIN_ID, form_id, _ID_TAG_BYTES), id_tag) for key in keys):
        raise AlteredCode(f"the code of form {display_id} was altered after it was printed (its signature does "
                          "not match its content)", display_id)
    raise ForgedCode("the form code is forged: it was not made with this hub's key", display_id)
