"""Parse a small municipality's service list from a spreadsheet (CSV) into services, offices and links.

One row per service (and office). The columns are documented in ``docs/catalog-sync.md``; a header row
names them, in any order and case, and unknown columns are an error (a typo must not silently drop data):

======================  =========  =============================================================
column                  required   meaning
======================  =========  =============================================================
name                    yes        name of the service ("Hund anmelden")
id                      no         the service's key in your catalogue; default: made from the name
leika                   no         LeiKa key, 14 digits
synonyms                no         other words citizens use, separated by ``|`` (or ``;``); a comma
                                   is part of a keyword ("Strassen, Fahrrad & Verkehr" is one)
level                   no         gemeinde (default) | amt | kreis | land
short_text, full_text   no         description
documents               no         what to bring, separated by ``|``
fees, processing_time   no         text
online_url              no         https link that does the service online
topic                   no         topic / life situation
authority_name          no         the office that does the service; empty: no office (level mark only)
authority_id            no         the office's key; default: made from its name
authority_phone         no
authority_email         no
authority_address       no         "Street 1, 12345 Town"
authority_website       no
authority_hours         no         "Mo-Fr 08:00-12:00; Do 14:00-18:00"
authority_areas         no         the areas (ARS, each inside the catalogue's region) where the office
                                   does the service, separated by ``|``, ``;``, ``,`` or spaces; default:
                                   the whole region ("010605053088|010605053007": a branch office for two
                                   municipalities). One Zuständigkeit with an area list.
======================  =========  =============================================================

The delimiter (``,``, ``;`` or tab) is detected; the file is UTF-8 (with or without BOM) or, as
spreadsheets in Germany often write it, Windows-1252. The result is a :class:`DldbBatch`, the same
shape the DLDB parser returns, so both are stored by :mod:`knowledge.importers.store`.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from pathlib import Path
from typing import Any

from knowledge.importers.dldb import MAX_FILE_BYTES, CatalogFormatError, DldbBatch
from knowledge.models import LEVELS, Authority, Service

__all__ = ["COLUMNS", "COLUMN_HELP", "REQUIRED", "SYNONYM_SEPARATORS", "parse_csv", "parse_csv_text"]

COLUMNS = (
    "id",
    "name",
    "leika",
    "synonyms",
    "level",
    "short_text",
    "full_text",
    "documents",
    "fees",
    "processing_time",
    "online_url",
    "topic",
    "authority_id",
    "authority_name",
    "authority_phone",
    "authority_email",
    "authority_address",
    "authority_website",
    "authority_hours",
    "authority_areas",
)
REQUIRED = ("name",)
# The columns as ``catalog import --help`` lists them (the table above says the same).
COLUMN_HELP = {
    "name": "name of the service (required)",
    "id": "the service's key in your catalogue; default: made from the name",
    "leika": "LeiKa key, 14 digits",
    "synonyms": "other words citizens use, separated by | (or ;); a comma does not split",
    "level": "gemeinde (default) | amt | kreis | land",
    "short_text": "short description",
    "full_text": "full description",
    "documents": "what to bring, separated by |",
    "fees": "fees (text)",
    "processing_time": "processing time (text)",
    "online_url": "https link that does the service online",
    "topic": "topic / life situation",
    "authority_id": "the office's key; default: made from its name",
    "authority_name": "the office that does the service; empty: no office (level mark only)",
    "authority_phone": "phone",
    "authority_email": "e-mail",
    "authority_address": '"Street 1, 12345 Town"',
    "authority_website": "http(s) link",
    "authority_hours": '"Mo-Fr 08:00-12:00; Do 14:00-18:00"',
    "authority_areas": "ARS (each inside the catalogue's region) where this office is responsible, separated by |",
}
_SERVICE_COLUMNS = (
    "name",
    "leika",
    "synonyms",
    "level",
    "short_text",
    "full_text",
    "documents",
    "fees",
    "processing_time",
    "online_url",
    "topic",
)
_AUTHORITY_COLUMNS = (
    "authority_name",
    "authority_phone",
    "authority_email",
    "authority_address",
    "authority_website",
    "authority_hours",
)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = {
    "mo": 0,
    "montag": 0,
    "mon": 0,
    "di": 1,
    "dienstag": 1,
    "tue": 1,
    "mi": 2,
    "mittwoch": 2,
    "wed": 2,
    "do": 3,
    "donnerstag": 3,
    "thu": 3,
    "fr": 4,
    "freitag": 4,
    "fri": 4,
    "sa": 5,
    "samstag": 5,
    "sat": 5,
    "so": 6,
    "sonntag": 6,
    "sun": 6,
}
_SPAN = re.compile(r"(\d{1,2})[:.](\d{2})\s*(?:-|–|bis)\s*(\d{1,2})[:.](\d{2})")
_ADDRESS = re.compile(r"^(?:(?P<street>.+?),\s*)?(?P<plz>\d{5})\s+(?P<city>.+)$")


def slug(text: str) -> str:
    """A lower-case key from a name: "Hund anmelden (Steuer)" → "hund-anmelden-steuer"."""
    text = text.lower().translate(str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"}))
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:60] or "x"


def parse_csv(path: str | Path, *, id_prefix: str, region_ars: str) -> DldbBatch:
    """Read a CSV file; see :func:`parse_csv_text`."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CatalogFormatError(f"{p}: {size} bytes, over the limit of {MAX_FILE_BYTES}")
        raw = p.read_bytes()
    except OSError as exc:
        raise CatalogFormatError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    text, warnings = decode_csv(raw, str(p))
    batch = parse_csv_text(text, id_prefix=id_prefix, region_ars=region_ars, source=str(p))
    batch.warnings[:0] = warnings
    return batch


# A valid UTF-8 multi-byte sequence (ä is C3 A4): a file with some of these is meant as UTF-8.
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def decode_csv(raw: bytes, source: str) -> tuple[str, list[str]]:
    """The text of a CSV file and warnings: UTF-8 (BOM or not), UTF-16 with BOM, or Windows-1252.

    A file that is UTF-8 in most places but has a broken byte is an error naming the line (read as
    Windows-1252 every umlaut of it would turn into two wrong characters); a file without any UTF-8
    sequence is taken as Windows-1252, which German spreadsheets write, with a warning.
    """
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16"), []
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].decode("utf-16", errors="replace").count("\n") + 1
            raise CatalogFormatError(f"{source}:{line}: not valid UTF-16 (byte {exc.start})") from None
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        if _UTF8_SEQUENCE.search(raw):
            line = raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            raise CatalogFormatError(
                f"{source}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column}); "
                "save the file as UTF-8 (or wholly as Windows-1252)"
            ) from None
    return raw.decode("cp1252", errors="replace"), [f"{source}: not UTF-8, read as Windows-1252"]


def parse_csv_text(text: str, *, id_prefix: str, region_ars: str, source: str = "csv") -> DldbBatch:
    """Turn CSV text into services, offices and service→office links for ``region_ars``.

    Raises :class:`CatalogFormatError` naming the line and column of the first problem: the file is
    imported whole or not at all.
    """
    if not id_prefix or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", id_prefix):
        raise ValueError(f"id_prefix must be lower-case letters, digits and dashes, not {id_prefix!r}")
    if not re.fullmatch(r"\d{2}|\d{5}|\d{9}|\d{12}", region_ars or ""):
        raise ValueError(f"region_ars must be an ARS of 2, 5, 9 or 12 digits, not {region_ars!r}")
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise CatalogFormatError(f"{source}:{line}: a NUL byte: binary data, not a CSV file")
    # Only the delimiter is sniffed (from the header row); quoting is always Excel's ("" inside a
    # quoted cell is one "), which the sniffer cannot tell from a single line and often gets wrong.
    first = text[:8192].splitlines()[0] if text.strip() else ""
    try:
        delimiter = csv.Sniffer().sniff(first, delimiters=",;\t").delimiter
    except csv.Error:
        delimiter = ","
    # strict: an unterminated quote is an error, not the rest of the file swallowed into one cell.
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=csv.excel, delimiter=delimiter, strict=True)
    try:
        header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise CatalogFormatError(f"{source}:1: cannot read the header row: {exc}") from None
    if not header:
        raise CatalogFormatError(f"{source}:1: empty file; the first line must name the columns")
    if len(header) == 1 and header[0] not in COLUMNS and re.search(r"[|:,;\t ]", header[0]):
        raise CatalogFormatError(
            f"{source}:1: the header row is one column {header[0][:80]!r}: separate the columns with "
            "a comma, a semicolon or a tab"
        )
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise CatalogFormatError(
            f"{source}:1: unknown column(s) {', '.join(u[:40] for u in unknown[:10])}; "
            f"known are {', '.join(COLUMNS)}"
        )
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise CatalogFormatError(f"{source}:1: the column(s) {', '.join(twice)} occur twice")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise CatalogFormatError(f"{source}:1: the column(s) {', '.join(missing)} are required")
    reader.fieldnames = header

    batch = DldbBatch()
    services: dict[str, Service] = {}
    authorities: dict[str, Authority] = {}
    links: set[tuple[str, str]] = set()
    for line, row in _rows(reader, source):
        if None in row:
            raise CatalogFormatError(f"{source}:{line}: more cells than columns")
        cells = {k: " ".join((v or "").split()) for k, v in row.items()}
        if not any(cells.values()):
            continue

        def fail(column: str, message: str, line: int = line) -> CatalogFormatError:
            return CatalogFormatError(f"{source}:{line}: column {column}: {message}")

        name = cells.get("name", "")
        if not name:
            raise fail("name", "a service needs a name")
        sid = f"{id_prefix}-{slug(cells.get('id') or name)}"
        leika = cells.get("leika") or None
        if leika is not None and not re.fullmatch(r"\d{14}", leika):
            raise fail("leika", f"a LeiKa key has 14 digits, not {leika[:30]!r}")
        level = (cells.get("level") or "gemeinde").lower()
        if level not in LEVELS:
            raise fail("level", f"must be one of {', '.join(LEVELS)}, not {level[:30]!r}")
        online = cells.get("online_url") or None
        if online is not None and not online.startswith(("https://", "http://")):
            raise fail("online_url", "must be an http(s) link")
        service = Service(
            id=sid,
            name=name,
            leika=leika,
            level=level,
            synonyms=_split_synonyms(cells.get("synonyms", ""), name),
            short_text=cells.get("short_text", ""),
            full_text=cells.get("full_text", ""),
            documents=[d.strip() for d in cells.get("documents", "").split("|") if d.strip()],
            fees=cells.get("fees", ""),
            processing_time=cells.get("processing_time", ""),
            online_url=online,
            topic=cells.get("topic", ""),
            owner_ars=region_ars,
        )
        known = services.get(sid)
        if known is None:
            services[sid] = service
        elif _service_fields(known) != _service_fields(service) and any(
            cells.get(c) for c in _SERVICE_COLUMNS[1:]
        ):
            raise fail(
                "id" if cells.get("id") else "name",
                f"service {sid} is described twice, differently; repeat only the name to add another office",
            )

        aname = cells.get("authority_name", "")
        if not aname:
            if any(cells.get(c) for c in _AUTHORITY_COLUMNS):
                raise fail("authority_name", "office details are given but no office name")
            continue
        aid = f"{id_prefix}-oe-{slug(cells.get('authority_id') or aname)}"
        email = cells.get("authority_email", "")
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            raise fail("authority_email", "not an e-mail address")
        website = cells.get("authority_website", "")
        if website and not website.startswith(("https://", "http://")):
            raise fail("authority_website", "must be an http(s) link")
        street, plz, city = _address(cells.get("authority_address", ""))
        if cells.get("authority_address") and not (plz or street):
            raise fail("authority_address", 'expected "Street 1, 12345 Town"')
        try:
            hours = _hours(cells.get("authority_hours", ""))
        except ValueError as exc:
            raise fail("authority_hours", str(exc)) from None
        authority = Authority(
            id=aid,
            name=aname,
            region_ars=region_ars,
            street=street,
            postcode=plz,
            city=city,
            phone=cells.get("authority_phone", ""),
            email=email,
            website=website,
            opening_hours=hours,
            owner_ars=region_ars,
        )
        have = authorities.get(aid)
        if have is None:
            authorities[aid] = authority
        elif _authority_fields(have) != _authority_fields(authority) and any(
            cells.get(c) for c in _AUTHORITY_COLUMNS[1:]
        ):
            raise fail(
                "authority_name", f"office {aid} is described twice, differently; repeat only its name"
            )
        links.add((sid, aid))
        areas_cell = cells.get("authority_areas", "")
        if areas_cell:
            areas = [a for a in re.split(r"[|;,\s]+", areas_cell) if a]
            for area in areas:
                if not re.fullmatch(r"\d{2}|\d{5}|\d{9}|\d{12}", area):
                    raise fail("authority_areas", f"{area[:20]!r} is not an ARS of 2, 5, 9 or 12 digits")
                if not area.startswith(region_ars):
                    raise fail("authority_areas", f"{area} is not inside region {region_ars}")
            batch.link_areas[(sid, aid)] = list(dict.fromkeys(areas))
    if not services:
        raise CatalogFormatError(f"{source}: no services: the file has a header row and nothing else")
    batch.services = list(services.values())
    batch.authorities = list(authorities.values())
    batch.links = sorted(links)
    return batch


def _rows(reader: csv.DictReader, source: str) -> Any:
    """(line, row) of each data row; a row the csv module cannot read is an error naming its line.

    The line is where the row starts (a quoted cell may span lines; DictReader.line_num is only updated
    after a row was read whole).
    """
    start = reader.reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # an unterminated quote, text after a closing quote, a cell over the limit
            hint = "; is a quote not closed?" if "end of data" in str(exc) else ""
            raise CatalogFormatError(f"{source}:{start}: {exc}{hint}") from None
        end = reader.reader.line_num
        # Blank lines before a row are skipped by DictReader: count back from its last line.
        inside = sum(v.count("\n") for v in row.values() if isinstance(v, str))
        yield end - inside, row
        start = end + 1


def _service_fields(s: Service) -> tuple:
    return (
        s.name,
        s.leika,
        s.level,
        tuple(s.synonyms),
        s.short_text,
        s.full_text,
        tuple(s.documents),
        s.fees,
        s.processing_time,
        s.online_url,
        s.topic,
    )


def _authority_fields(a: Authority) -> tuple:
    return (a.name, a.street, a.postcode, a.city, a.phone, a.email, a.website, repr(a.opening_hours))


# What splits a keyword list: ``|`` (recommended) or ``;``. A comma never splits (until 2026 it did when the
# cell had neither ``|`` nor ``;``, which cut "Strassen, Fahrrad & Verkehr" in two): keywords and category
# names contain commas. Shown by ``catalog import --help``.
SYNONYM_SEPARATORS = ("|", ";")
_SYNONYM_SPLIT = re.compile(r"[|;]")


def _split_synonyms(cell: str, name: str) -> list[str]:
    parts = _SYNONYM_SPLIT.split(cell)
    out: dict[str, str] = {}
    for part in parts:
        part = part.strip()
        if part and part.casefold() != name.casefold():
            out.setdefault(part.casefold(), part[:200])
    return list(out.values())


def _address(cell: str) -> tuple[str, str, str]:
    if not cell:
        return "", "", ""
    m = _ADDRESS.match(cell)
    if m:
        return (m.group("street") or "").strip(), m.group("plz"), m.group("city").strip()
    return cell, "", ""


def _hours(cell: str) -> dict[str, list[list[str]]]:
    """ "Mo-Fr 08:00-12:00; Do 14:00-18:00" → ``{"mon": [["08:00", "12:00"]], ...}``."""
    out: dict[str, list[list[str]]] = {}
    for segment in filter(None, (s.strip() for s in cell.split(";"))):
        m = re.match(r"^([A-Za-zäöüÄÖÜ,\-–\s]+?)\s+(\d.*)$", segment)
        if not m:
            raise ValueError(f'cannot read {segment[:40]!r}; write e.g. "Mo-Fr 08:00-12:00; Do 14:00-18:00"')
        days = _days(m.group(1))
        spans = []
        for sm in _SPAN.finditer(m.group(2)):
            h1, m1, h2, m2 = (int(x) for x in sm.groups())
            if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
                raise ValueError(f"not a time in {segment[:40]!r}")
            start, end = f"{h1:02d}:{m1:02d}", f"{h2:02d}:{m2:02d}"
            if start >= end:
                raise ValueError(f"{start}-{end} does not end after it starts")
            spans.append([start, end])
        if not spans:
            raise ValueError(f"no times in {segment[:40]!r}")
        for d in days:
            out.setdefault(_DAYS[d], []).extend(spans)
    return {d: sorted(v) for d, v in out.items()}


def _days(text: str) -> list[int]:
    out: list[int] = []
    for part in re.split(r"\s*,\s*", text.strip().lower()):
        bounds = [b.strip().rstrip(".") for b in re.split(r"\s*[-–]\s*", part)]
        try:
            idx = [_DAY_NAMES[b] for b in bounds]
        except KeyError as exc:
            raise ValueError(f"unknown weekday {exc.args[0]!r}") from None
        if len(idx) == 1:
            out.append(idx[0])
        elif len(idx) == 2 and idx[0] <= idx[1]:
            out.extend(range(idx[0], idx[1] + 1))
        else:
            raise ValueError(f"cannot read the days {part!r}")
    return out
