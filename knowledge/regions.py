"""German administrative regions: loading the Destatis Gemeindeverzeichnis and resolving place names.

Two halves:

* :func:`load_regions` reads the Destatis GV-ISys extract and the OSM postcode table into the ``region``
  and ``postcode`` tables (bulk delete-then-insert in one transaction, so it is idempotent and fast).
* :class:`RegionIndex` holds the regions in memory and turns what a citizen wrote ("23795 Bad Segeberg",
  "Henstedt-Ulzbrug", "wir wohnen jetzt in Trappenkamp") into a :class:`PlaceResolution`: one municipality,
  or the ranked candidates and a human-readable reason why it could not pick one.

The hierarchy skips the Regierungsbezirk: Gemeinde → Gemeindeverband (Amt, Verbandsgemeinde, ...; only when
the Gemeinde belongs to a real one) → Kreis → Land. A kreisfreie Stadt is a Kreis row with its one Gemeinde
below it.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process
from sqlalchemy import delete, insert, select
from tqdm import tqdm

from knowledge.models import Postcode, Region

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
REGIONS_CSV = DATA_DIR / "destatis_gv_2019q4.csv.gz"
POSTCODES_CSV = DATA_DIR / "plz_ags_osm.csv.gz"

# Mirrors RegionSettings.home_region's default in hub/config.py.
DEFAULT_HOME_REGION = "01060"

# Destatis textkennzeichen → our ``kind``.
KREIS_KINDS = {
    "41": "kreisfreie Stadt",
    "42": "Stadtkreis",
    "43": "Kreis",
    "44": "Landkreis",
    "45": "Regionalverband",
}
# 50 (verbandsfreie Gemeinde) is deliberately missing: such a "Verband" is the Gemeinde itself, so its
# Gemeinde hangs directly below the Kreis. 55 is the Kirchspielslandgemeinde of Dithmarschen.
VERBAND_KINDS = {
    "51": "Amt",
    "52": "Samtgemeinde",
    "53": "Verbandsgemeinde",
    "54": "Verwaltungsgemeinschaft",
    "55": "Kirchspielslandgemeinde",
    "56": "Verwaltungsverband",
    "57": "Verwaltungsgemeinschaft",
    "58": "erfüllende Gemeinde",
}
GEMEINDE_KINDS = {
    "60": "Markt",
    "61": "kreisfreie Stadt",
    "62": "Stadtkreis",
    "63": "Stadt",
    "64": "Gemeinde",
    "65": "gemeindefreies Gebiet",
    "66": "gemeindefreies Gebiet",
    "67": "Große Kreisstadt",
}

# Match scores (0-100): an exact name beats a shortened alias ("Segeberg") beats a fuzzy hit.
EXACT, ALIAS = 100.0, 95.0

_REGION_COLUMNS = {"satzart", "textkennzeichen", "land", "rb", "kreis", "vb", "gemeinde", "gemeindename"}
_INSERT_CHUNK = 2000


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    """Open a CSV as text, gzipped or not (decided by the magic bytes, not the name)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    raw = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115
    # utf-8-sig: the Destatis file starts with a byte-order mark that would otherwise stick to "satzart".
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _int(value: str | None) -> int | None:
    """Destatis numbers carry spaces as thousands separators (" 17 381")."""
    if value is None:
        return None
    digits = value.replace(" ", "").replace("\u00a0", "")
    return int(digits) if digits.isascii() and digits.isdigit() else None


def _float(value: str | None) -> float | None:
    """Destatis coordinates use a decimal comma ("9,43751")."""
    if not value or not value.strip():
        return None
    try:
        return float(value.strip().replace(",", "."))
    except ValueError:
        return None


def _digits(value: str | None, width: int) -> str | None:
    value = (value or "").strip()
    return value if len(value) == width and value.isascii() and value.isdigit() else None


def read_regions_csv(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Parse the Destatis GV-ISys CSV into ``region`` row dicts (Land, Kreis, real Verband, Gemeinde).

    Verbände, Kreise and Länder get the summed population of their Gemeinden. Malformed rows are skipped with
    a warning; a file without the expected columns raises ``ValueError``.
    """
    path = Path(path) if path else REGIONS_CSV
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        missing = _REGION_COLUMNS - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a Destatis GV-ISys file, missing columns {sorted(missing)}")
        raw = list(reader)

    lands: dict[str, dict[str, Any]] = {}
    kreise: dict[str, dict[str, Any]] = {}
    verbaende: dict[str, dict[str, Any]] = {}
    gemeinden: list[tuple[dict[str, str], str, str]] = []
    skipped = 0
    # First pass: everything above the Gemeinde, so a Gemeinde can find its Verband whatever the row order.
    for row in raw:
        satzart = (row.get("satzart") or "").strip()
        tk = (row.get("textkennzeichen") or "").strip()
        name = (row.get("gemeindename") or "").strip()
        land = _digits(row.get("land"), 2)
        if not land or not name:
            skipped += 1
            continue
        if satzart == "10":
            lands[land] = _row(land, land, name, "land", "Land", None)
        elif satzart in ("40", "50", "60"):
            rb, kreis = _digits(row.get("rb"), 1), _digits(row.get("kreis"), 2)
            if rb is None or kreis is None:
                skipped += 1
                continue
            kreis_ars = land + rb + kreis
            if satzart == "40":
                kreise[kreis_ars] = _row(
                    kreis_ars, kreis_ars, name, "kreis", KREIS_KINDS.get(tk, "Kreis"), land
                )
                continue
            vb = _digits(row.get("vb"), 4)
            if vb is None:
                skipped += 1
            elif satzart == "50":
                if tk in VERBAND_KINDS:
                    verbaende[kreis_ars + vb] = _row(
                        kreis_ars + vb, None, name, "amt", VERBAND_KINDS[tk], kreis_ars
                    )
            else:
                gemeinden.append((row, kreis_ars, vb))
        # satzart 20 (Regierungsbezirk) and 30 (Region in Baden-Württemberg) are not levels of ours.

    # Länder with Ämter call a Gemeinde outside any Amt "amtsfrei"; elsewhere it is "verbandsfrei" only where
    # Verbände exist at all (in NRW every Gemeinde is simply a Gemeinde).
    lands_with_amt = {ars[:2] for ars, v in verbaende.items() if v["kind"] == "Amt"}
    lands_with_verband = {ars[:2] for ars in verbaende}
    rows_gemeinde: list[dict[str, Any]] = []
    for row, kreis_ars, vb in gemeinden:
        gem = _digits(row.get("gemeinde"), 3)
        if gem is None:
            skipped += 1
            continue
        land = kreis_ars[:2]
        verband_ars = kreis_ars + vb
        in_verband = verband_ars in verbaende
        tk = (row.get("textkennzeichen") or "").strip()
        kind = GEMEINDE_KINDS.get(tk, "Gemeinde")
        if kind == "Gemeinde" and not in_verband:
            if land in lands_with_amt:
                kind = "amtsfreie Gemeinde"
            elif land in lands_with_verband:
                kind = "verbandsfreie Gemeinde"
        item = _row(
            verband_ars + gem,
            kreis_ars + gem,
            row["gemeindename"].strip(),
            "gemeinde",
            kind,
            verband_ars if in_verband else kreis_ars,
        )
        item["population"] = _int(row.get("bevoelkerung"))
        item["postcode"] = _digits(row.get("postleitzahl"), 5)
        item["lat"] = _float(row.get("breitengrad"))
        item["lon"] = _float(row.get("laengengrad"))
        rows_gemeinde.append(item)

    # Sum populations upwards; a kreisfreie Stadt's Kreis row also takes its city's postcode and position.
    upper = {**lands, **kreise, **verbaende}
    for item in rows_gemeinde:
        ars = item["ars"]
        for key in {ars[:9], ars[:5], ars[:2]}:
            target = upper.get(key)
            if target is not None and item["population"] is not None:
                target["population"] = (target["population"] or 0) + item["population"]
        kreis = kreise.get(ars[:5])
        if (
            kreis is not None
            and kreis["kind"] in ("kreisfreie Stadt", "Stadtkreis")
            and item["parent_ars"] == ars[:5]
        ):
            kreis.update(postcode=item["postcode"], lat=item["lat"], lon=item["lon"])
    if skipped:
        log.warning("%s: skipped %d malformed rows", path, skipped)
    return [*lands.values(), *kreise.values(), *verbaende.values(), *rows_gemeinde]


def _row(ars: str, ags: str | None, name: str, level: str, kind: str, parent: str | None) -> dict[str, Any]:
    return {
        "ars": ars,
        "ags": ags,
        "name": name,
        "level": level,
        "kind": kind,
        "parent_ars": parent,
        "population": None,
        "postcode": None,
        "lat": None,
        "lon": None,
    }


def read_postcodes_csv(
    path: str | Path | None = None, known_ags: set[str] | None = None
) -> list[dict[str, str]]:
    """Parse the postcode → AGS CSV into distinct ``{"plz", "ags"}`` dicts.

    Pairs whose AGS is not in ``known_ags`` (when given) are dropped: the OSM table is newer than the
    Destatis extract and names a few municipalities that were merged away since.
    """
    path = Path(path) if path else POSTCODES_CSV
    pairs: set[tuple[str, str]] = set()
    bad = unknown = 0
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        if not {"plz", "ags"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: needs the columns 'plz' and 'ags', has {reader.fieldnames}")
        for row in reader:
            plz, ags = (row.get("plz") or "").strip(), (row.get("ags") or "").strip()
            # Spreadsheet round-trips eat leading zeros ("1067" for Dresden's 01067); put them back.
            if not (plz.isascii() and plz.isdigit() and ags.isascii() and ags.isdigit() and len(plz) <= 5 and len(ags) <= 8):
                bad += 1
                continue
            plz, ags = plz.zfill(5), ags.zfill(8)
            if known_ags is not None and ags not in known_ags:
                unknown += 1
                continue
            pairs.add((plz, ags))
    if bad:
        log.warning("%s: skipped %d malformed rows", path, bad)
    if unknown:
        # Expected with the shipped files (Moorgrund, merged in 2019), hence not a warning.
        log.info("%s: skipped %d pairs whose AGS is not a known municipality", path, unknown)
    return [{"plz": plz, "ags": ags} for plz, ags in sorted(pairs)]


def load_regions(
    session: Any,
    regions_csv: str | Path | None = None,
    postcodes_csv: str | Path | None = None,
    progress: bool = False,
) -> tuple[int, int]:
    """Replace the ``region`` and ``postcode`` tables with the contents of the two CSV files.

    Defaults are the copies shipped in ``knowledge/data``; gzipped and plain files both work. All rows are
    deleted and bulk-inserted in one transaction, which is committed here, so running it again gives the same
    tables (nothing else references them by foreign key). Returns ``(regions, postcode_pairs)`` inserted.
    With ``progress`` a tqdm bar goes to stderr.
    """
    regions = read_regions_csv(regions_csv)
    known_ags = {r["ags"] for r in regions if r["level"] == "gemeinde"}
    postcodes = read_postcodes_csv(postcodes_csv, known_ags)
    region_table, postcode_table = Region.__table__, Postcode.__table__
    bar = tqdm(
        total=len(regions) + len(postcodes),
        desc="regions",
        unit="rows",
        file=sys.stderr,
        disable=not progress,
    )
    try:
        # Core inserts on the tables, not ORM objects: the ORM unit of work would take seconds for 25k rows.
        session.execute(delete(postcode_table))
        session.execute(delete(region_table))
        for table, rows in ((region_table, regions), (postcode_table, postcodes)):
            for start in range(0, len(rows), _INSERT_CHUNK):
                chunk = rows[start : start + _INSERT_CHUNK]
                session.execute(insert(table), chunk)
                bar.update(len(chunk))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        bar.close()
    return len(regions), len(postcodes)


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------

_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
_ABBREVIATIONS = (
    (re.compile(r"\ba\.\s*d\.\s*"), " an der "),
    (re.compile(r"\bi\.\s*d\.\s*"), " in der "),
    (re.compile(r"\bv\.\s*d\.\s*"), " vor der "),
    (re.compile(r"\bst\.\s*"), " sankt "),
    # Single-letter ones only before a word, so "Wakendorf I." keeps its numeral.
    (re.compile(r"\ba\.\s*(?=[^\W\d_])"), " am "),
    (re.compile(r"\bi\.\s*(?=[^\W\d_])"), " im "),
    (re.compile(r"\bb\.\s*(?=[^\W\d_])"), " bei "),
)
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_ROMAN = {"ii": "2", "iii": "3", "iv": "4"}
# Words that cut a qualifier off a name ("Frankfurt am Main" is also "Frankfurt").
_CONNECTORS = frozenset(
    {"am", "an", "im", "in", "ob", "bei", "beim", "vor", "vorm", "auf", "unter", "zu", "zum"}
)


def strip_designation(name: str) -> str:
    """Drop Destatis' designation after the comma: "Bad Segeberg, Stadt" → "Bad Segeberg".

    A tail that lists names ("Bösenbrunn, Eichigt und Triebel/Vogtl.", a Verwaltungsgemeinschaft) is part of
    the name and stays.
    """
    head, sep, tail = name.partition(",")
    if not sep:
        return name.strip()
    low = tail.lower()
    if " und " in low and "stadt" not in low and "gemeinde" not in low:
        return name.strip()
    return head.strip()


def normalize_place(s: str) -> str:
    """Fold a place name to its matching key.

    Lowercase, ä/ö/ü/ß → ae/oe/ue/ss, other accents dropped, Destatis designations (", Stadt",
    ", Hansestadt", ...) removed, abbreviations expanded ("St." → "sankt", "a.d." → "an der"), punctuation
    and hyphens → one space, roman numerals → digits ("Wakendorf II" and "Wakendorf 2" → "wakendorf 2").
    """
    if not s:
        return ""
    s = strip_designation(unicodedata.normalize("NFC", s).lower())
    if "." in s:  # every abbreviation has a dot; skipping the regexes halves the index build time
        for pattern, replacement in _ABBREVIATIONS:
            s = pattern.sub(replacement, s)
    s = s.translate(_UMLAUTS)
    if not s.isascii():
        s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
    tokens = _NON_ALNUM.sub(" ", s).split()
    out = []
    for i, tok in enumerate(tokens):
        if tok in _ROMAN:
            tok = _ROMAN[tok]
        elif tok == "i" and i == len(tokens) - 1 and i > 0:
            tok = "1"
        elif tok == "st":
            tok = "sankt"
        out.append(tok)
    return " ".join(out)


def _aliases(display: str, full: str) -> dict[str, float]:
    """Shorter keys a citizen may use for a name, with their score.

    Dropping a qualifier ("Halle (Saale)", "Frankfurt am Main", "Cottbus/Chóśebuz") is how people say the
    name, so it scores like the full name: "Halle" is then ambiguous and ranked by population instead of
    silently meaning the village called just "Halle". Dropping "Bad" or a numeral ("Wakendorf II") is sloppier
    and scores below an exact name, so "Sulza" stays Sulza and not Bad Sulza.
    """
    keys = {full: EXACT}
    if "/" in display:
        keys[normalize_place(display.split("/", 1)[0])] = EXACT
    if "(" in display:
        keys[normalize_place(re.sub(r"\([^)]*\)?", " ", display))] = EXACT
    # The rules feed each other ("Bad Soden am Taunus" → "bad soden" → "soden"); three rounds suffice.
    for _ in range(3):
        for key, score in list(keys.items()):
            toks = key.split()
            found = []
            cut = next((i for i, t in enumerate(toks) if 0 < i < len(toks) - 1 and t in _CONNECTORS), None)
            if cut is not None:
                found.append((" ".join(toks[:cut]), score))
            if len(toks) > 1 and toks[0] == "bad":
                found.append((" ".join(toks[1:]), min(score, ALIAS)))
            if len(toks) > 1 and toks[-1] in ("1", "2", "3", "4"):
                found.append((" ".join(toks[:-1]), min(score, ALIAS)))
            for alias, alias_score in found:
                keys[alias] = max(keys.get(alias, 0.0), alias_score)
    keys.pop(full)
    return {k: v for k, v in keys.items() if len(k) >= 3}


def display_name_for(name: str, level: str, kind: str) -> str:
    """How a region is shown: "Bad Segeberg", "Amt Leezen", "Kreis Segeberg", "Flensburg"."""
    base = strip_designation(name)
    low = base.lower()
    if level == "kreis" and kind in ("Kreis", "Landkreis"):
        if "kreis" in low or low.startswith(("region ", "städteregion ")):
            return base
        return f"{kind} {base}"
    if level == "amt":
        if kind == "erfüllende Gemeinde":
            return f"{base} (erfüllende Gemeinde)"
        if base.endswith(" (VGem)"):
            return f"Verwaltungsgemeinschaft {base[: -len(' (VGem)')]}"
        if low.startswith(("vvg ", "gvv ", "vg ", "amt ", "verwaltungs", "samtgemeinde", "verbandsgemeinde")):
            return base
        return f"{kind} {base}"
    return base


# --------------------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegionInfo:
    """One region as the resolver hands it out (immutable, cheap to share)."""

    ars: str
    ags: str | None
    name: str  # as Destatis spells it: "Bad Segeberg, Stadt"
    display_name: str  # as a person writes it: "Bad Segeberg"
    level: str  # land | kreis | amt | gemeinde
    kind: str
    parent_ars: str | None
    population: int | None = None
    postcode: str | None = None


@dataclass(frozen=True)
class QueryPlace:
    """A place found in a query (:meth:`RegionIndex.find_in_query`): the resolution and the characters
    ``start:end`` of the cleaned query that named it (``text``), so the rest can be searched for services."""

    resolution: PlaceResolution
    start: int
    end: int
    text: str

    def rest(self, query: str) -> str:
        """The query without the place's words."""
        clean = _clean(query)
        return " ".join(f"{clean[: self.start]} {clean[self.end :]}".split())


@dataclass(frozen=True)
class PlaceResolution:
    """The outcome of resolving a place.

    ``match`` is set when exactly one region fits; otherwise ``candidates`` holds the ranked regions (best
    first, with a 0-100 score), ``ambiguous`` says whether there are several, and ``reason`` says in words why
    nothing or not one region was chosen. ``method`` names what matched (ars, ags, postcode, name, alias,
    fuzzy, text).
    """

    match: RegionInfo | None
    candidates: list[tuple[RegionInfo, float]] = field(default_factory=list)
    ambiguous: bool = False
    reason: str | None = None
    method: str = ""


MAX_QUERY_CHARS = 200  # resolve(): longer is no place name
MAX_TEXT_CHARS = 20_000  # find_in_text(): only the start of a longer text is scanned
#: find_in_query(): a search of more words is a sentence, whose place find_in_text() finds.
MAX_QUERY_PLACE_WORDS = 10
_FUZZY_CUTOFF = 85.0
_FUZZY_CUTOFF_SHORT = 88.0  # names of at most 6 letters: one typo is already a large share
_FUZZY_TIE = 3.0  # fuzzy hits this close to the best are not told apart by score
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_GEMEINDE_PREFIXES = (
    "freie und hansestadt",
    "landeshauptstadt",
    "hansestadt",
    "universitaetsstadt",
    "grosse kreisstadt",
    "kreisstadt",
    "stadt",
    "marktgemeinde",
    "ortsgemeinde",
    "gemeinde",
    "markt",
    "flecken",
    "ort",
)
_KREIS_PREFIXES = ("kreisfreie stadt", "landkreis", "stadtkreis", "kreis", "lkr", "lk")
_VERBAND_PREFIXES = tuple(
    """
    amt samtgemeinde verbandsgemeinde vg vgem verwaltungsgemeinschaft verwaltungsverband
    gemeindeverwaltungsverband gvv vvg kirchspielslandgemeinde klg
    """.split()
)


def _strip_prefix(norm: str, prefixes: Iterable[str]) -> str | None:
    for prefix in prefixes:
        if norm.startswith(prefix + " ") and len(norm) > len(prefix) + 1:
            return norm[len(prefix) + 1 :]
    return None


def _get(obj: Any, name: str) -> Any:
    # dict first by exact type: isinstance(obj, Mapping) costs an ABC check per field and row.
    if type(obj) is dict or isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


class RegionIndex:
    """All regions in memory, for place resolution and walking the hierarchy.

    Build it with :meth:`from_session` (or :meth:`from_files` without a database). ``home_region`` is an ARS
    prefix ("01" Schleswig-Holstein, "01060" Kreis Segeberg): a name that exists in several places resolves
    to the one inside it when exactly one is.
    """

    def __init__(
        self,
        regions: Iterable[Any],
        postcodes: Iterable[Any] = (),
        home_region: str = DEFAULT_HOME_REGION,
    ) -> None:
        """``regions``: objects or mappings with Region's fields; ``postcodes``: (plz, ags) pairs."""
        self.home_region = home_region or ""
        self._by_ars: dict[str, RegionInfo] = {}
        self._by_ags: dict[str, RegionInfo] = {}
        for r in regions:
            name = _get(r, "name") or ""
            level, kind = _get(r, "level") or "", _get(r, "kind") or ""
            info = RegionInfo(
                ars=_get(r, "ars"),
                ags=_get(r, "ags"),
                name=name,
                display_name=display_name_for(name, level, kind),
                level=level,
                kind=kind,
                parent_ars=_get(r, "parent_ars"),
                population=_get(r, "population"),
                postcode=_get(r, "postcode"),
            )
            self._by_ars[info.ars] = info
            if info.ags:
                self._by_ags[info.ags] = info

        # Municipality keys: key → [(ars, score)]. Exact names and aliases share one dict so that one lookup
        # (and one fuzzy pass over its keys) covers both.
        self._names: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self._keys_of: dict[str, list[str]] = {}
        self._kreis_names: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self._verband_names: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self._land_names: dict[str, str] = {}
        for info in self._by_ars.values():
            key = normalize_place(info.display_name)
            if info.level == "land":
                self._land_names[key] = info.ars
                continue
            # An uninhabited gemeindefreies Gebiet ("Buchholz (Forstgutsbez.)") must not steal "Buchholz".
            aliases = {} if info.kind == "gemeindefreies Gebiet" else _aliases(info.display_name, key)
            if info.level == "gemeinde":
                target = self._names
                self._keys_of[info.ars] = [key, *sorted(aliases)]
            else:
                # Kreise and Verbände answer to their bare name too ("Segeberg", "Leezen"), not only to the
                # display name with its kind ("Kreis Segeberg").
                target = self._kreis_names if info.level == "kreis" else self._verband_names
                bare = strip_designation(info.name)
                bare_key = normalize_place(bare)
                aliases = {**_aliases(bare, bare_key), **aliases, bare_key: EXACT}
            target[key].append((info.ars, EXACT))
            for alias, score in aliases.items():
                if alias != key:
                    target[alias].append((info.ars, score))
        # Plain dicts from here on: a lookup of a missing key must not grow the index.
        self._names, self._kreis_names = dict(self._names), dict(self._kreis_names)
        self._verband_names = dict(self._verband_names)
        self._choices = list(self._names)
        self._first_tokens = {
            k.split()[0]
            for d in (self._names, self._kreis_names, self._verband_names, self._land_names)
            for k in d
        }
        self._first_tokens |= {p.split()[0] for p in _KREIS_PREFIXES + _VERBAND_PREFIXES}

        self._plz: dict[str, list[str]] = defaultdict(list)
        for pair in postcodes:
            plz, ags = (pair.plz, pair.ags) if hasattr(pair, "plz") else (pair[0], pair[1])
            info = self._by_ags.get(ags)
            if info is not None and info.level == "gemeinde" and info.ars not in self._plz[plz]:
                self._plz[plz].append(info.ars)
        self._plz = dict(self._plz)

    # -- construction --------------------------------------------------------------------------------

    @classmethod
    def from_session(cls, session: Any, home_region: str = DEFAULT_HOME_REGION) -> RegionIndex:
        """Read the ``region`` and ``postcode`` tables (column tuples, no ORM objects: it is faster)."""
        cols = (
            Region.ars,
            Region.ags,
            Region.name,
            Region.level,
            Region.kind,
            Region.parent_ars,
            Region.population,
            Region.postcode,
        )
        regions = session.execute(select(*cols)).all()
        postcodes = session.execute(select(Postcode.plz, Postcode.ags)).all()
        return cls(regions, [tuple(p) for p in postcodes], home_region)

    @classmethod
    def from_files(
        cls,
        regions_csv: str | Path | None = None,
        postcodes_csv: str | Path | None = None,
        home_region: str = DEFAULT_HOME_REGION,
    ) -> RegionIndex:
        """Build the index straight from the CSV files (no database), e.g. for scripts."""
        regions = read_regions_csv(regions_csv)
        pairs = read_postcodes_csv(postcodes_csv)
        return cls(regions, [(p["plz"], p["ags"]) for p in pairs], home_region)

    # -- lookups -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_ars)

    def __iter__(self) -> Iterator[RegionInfo]:
        return iter(self._by_ars.values())

    def get(self, ars: str) -> RegionInfo | None:
        """The region with this ARS (2, 5, 9 or 12 digits), or None."""
        return self._by_ars.get(ars)

    def by_ags(self, ags: str) -> RegionInfo | None:
        """The Gemeinde with this 8-digit AGS (or the Land/Kreis with this 2/5-digit one), or None."""
        return self._by_ags.get(ags)

    def chain(self, ars: str) -> list[RegionInfo]:
        """The region and its ancestors, most local first: Gemeinde → Verband (if any) → Kreis → Land."""
        out: list[RegionInfo] = []
        info = self._by_ars.get(ars)
        while info is not None and len(out) < 8:  # the bound guards against a cycle in foreign data
            out.append(info)
            info = self._by_ars.get(info.parent_ars) if info.parent_ars else None
        return out

    def postcode_regions(self, plz: str) -> list[RegionInfo]:
        """The municipalities a postcode covers, largest first."""
        return self._ranked_infos(self._plz.get(plz, ()))

    def qualified_name(self, info: RegionInfo) -> str:
        """A name that tells same-named places apart: "Seedorf (Amt Trave-Land, Kreis Segeberg)"."""
        above = [r.display_name for r in self.chain(info.ars)[1:] if r.level in ("amt", "kreis")]
        if info.level == "gemeinde" and info.kind in ("kreisfreie Stadt", "Stadtkreis"):
            above = []
        return f"{info.display_name} ({', '.join(above)})" if above else info.display_name

    def _ranked_infos(self, arss: Iterable[str]) -> list[RegionInfo]:
        infos = [self._by_ars[a] for a in arss if a in self._by_ars]
        return sorted(infos, key=lambda r: (-(r.population or 0), r.display_name))

    # -- resolution ----------------------------------------------------------------------------------

    def resolve(self, text: str, limit: int = 10, home_region: str | None = None) -> PlaceResolution:
        """Resolve what a person gave as their place.

        Accepts a municipality name (typos, ue/ü, "Stadt X", "X, Stadt", roman or arabic numerals), a
        postcode, "postcode name", an 8-digit AGS, a 12-digit ARS, "Kreis X", "Amt X" or a Land. ``limit``
        caps the candidates of a name; a bare postcode returns all its municipalities, since the answer must
        be one of exactly those. ``home_region`` overrides the index's home region for this call. Never
        raises on bad input: it returns no match and a reason.
        """
        home = self.home_region if home_region is None else home_region
        limit = max(1, limit)
        clean = _clean(text if isinstance(text, str) else "")
        if not clean:
            return _nothing("leere Eingabe: kein Ort angegeben")
        if len(clean) > MAX_QUERY_CHARS:
            return _nothing(
                f"zu lang für einen Ortsnamen ({len(clean)} Zeichen, höchstens {MAX_QUERY_CHARS})"
            )

        compact = re.sub(r"[\s.\-/]", "", clean)
        if compact.isascii() and compact.isdigit():
            return self._resolve_number(compact, home)
        m = re.fullmatch(r"(?:D\s*-?\s*)?(\d{5})\s*[,;]?\s+(.*\S)", clean) or re.fullmatch(
            r"(.*\S?)[\s,;]+(\d{5})", clean
        )
        if m:
            plz, name = (m.group(1), m.group(2)) if m.group(1).isdigit() else (m.group(2), m.group(1))
            if re.search(r"[^\W\d_]", name):
                return self._resolve_postcode_name(plz, name, limit, home)

        norm = normalize_place(clean)
        if not re.search(r"[a-z]", norm):
            return _nothing(f"kein Ortsname in {_quote(clean)}")
        result = self._resolve_name(norm, clean, limit, home)
        if result.match is not None or result.ambiguous:
            return result
        if len(norm.split()) >= 3:
            # Someone typed a sentence into the place field ("wohne in Trappenkamp"): look inside it.
            found = self.find_in_text(clean, home_region=home)
            if found is not None:
                return found
        return self._resolve_head(norm, clean, limit, home) or result

    def _resolve_number(self, digits: str, home: str) -> PlaceResolution:
        if len(digits) == 5:
            if digits in self._plz:
                return self._postcode_result(digits, home)
            kreis = self._by_ars.get(digits)
            if kreis is not None:  # not a postcode, but a Kreis key ("01060")
                return PlaceResolution(kreis, [(kreis, EXACT)], method="ars")
            return _nothing(f"unbekannte Postleitzahl {digits}")
        if len(digits) == 8:
            info = self._by_ags.get(digits)
            return _single(info, "ags") if info else _nothing(f"unbekannter Gemeindeschlüssel (AGS) {digits}")
        # 9 digits: a Gemeindeverband. A 2-digit Land key is not accepted: "12" typed as a place is no Land.
        if len(digits) in (9, 12):
            info = self._by_ars.get(digits)
            return _single(info, "ars") if info else _nothing(f"unbekannter Regionalschlüssel (ARS) {digits}")
        return _nothing(f"{digits} ist weder eine Postleitzahl (5 Ziffern) noch ein AGS (8) oder ARS (12)")

    def _postcode_result(self, plz: str, home: str) -> PlaceResolution:
        infos = self.postcode_regions(plz)
        cands = [(r, EXACT) for r in infos]
        if len(infos) == 1:
            return PlaceResolution(infos[0], cands, method="postcode")
        return PlaceResolution(
            None,
            cands,
            ambiguous=True,
            reason=f"Postleitzahl {plz} umfasst {len(infos)} Gemeinden: {self._list(infos)}",
            method="postcode",
        )

    def _resolve_postcode_name(self, plz: str, name: str, limit: int, home: str) -> PlaceResolution:
        if plz not in self._plz:
            # An unknown postcode next to a good name: trust the name, but say so.
            result = self._resolve_name(normalize_place(name), name, limit, home)
            note = f"unknown postcode {plz}"
            return _with_reason(result, f"{note}; {result.reason}" if result.reason else note)
        allowed = set(self._plz[plz])
        norm = normalize_place(name)
        hits = self._name_hits(norm, allowed)
        if not hits:
            # A typo inside a small set: compare against every key of the postcode's municipalities.
            for ars in allowed:
                best = max((fuzz.ratio(norm, k) for k in self._keys_of.get(ars, ())), default=0.0)
                if best >= 75:
                    hits[ars] = best
        if hits:
            return self._decide(hits, name, "postcode+name", limit, home, fuzzy=max(hits.values()) < ALIAS)
        by_name = self._resolve_name(norm, name, limit, home)
        infos = self.postcode_regions(plz)
        cands = by_name.candidates[:limit] + [(r, EXACT) for r in infos]
        return PlaceResolution(
            None,
            cands,
            ambiguous=True,
            reason=f"Postleitzahl {plz} umfasst {_quote(name)} nicht (sie umfasst {self._list(infos)})",
            method="postcode+name",
        )

    def _name_hits(self, norm: str, allowed: set[str] | None = None) -> dict[str, float]:
        """Exact and alias hits for a key, also with a leading "Stadt"/"Gemeinde"/... removed."""
        hits: dict[str, float] = {}
        for key in (norm, _strip_prefix(norm, _GEMEINDE_PREFIXES)):
            if not key:
                continue
            for ars, score in self._names.get(key, ()):
                if (allowed is None or ars in allowed) and score > hits.get(ars, 0.0):
                    hits[ars] = score
            if hits:
                break
        return hits

    def _admin_hits(self, norm: str, explicit_only: bool = False) -> tuple[dict[str, float], str]:
        """Kreis/Verband/Land hits: "kreis segeberg", "amt leezen", "schleswig holstein", "dithmarschen"."""
        rest = _strip_prefix(norm, _KREIS_PREFIXES)
        if rest is not None:
            hits = dict(self._kreis_names.get(norm, ())) or dict(self._kreis_names.get(rest, ()))
            if not norm.startswith(("kreisfreie", "stadtkreis")):
                # "Kreis Oldenburg" means the Landkreis, not the kreisfreie Stadt Oldenburg (Oldb).
                for ars in hits:
                    if self._by_ars[ars].kind in ("kreisfreie Stadt", "Stadtkreis"):
                        hits[ars] -= 10
            return hits, "kreis"
        rest = _strip_prefix(norm, _VERBAND_PREFIXES)
        if rest is not None:
            hits = dict(self._verband_names.get(norm, ())) or dict(self._verband_names.get(rest, ()))
            return hits, "amt"
        if explicit_only:
            return {}, ""
        if norm in self._land_names:
            return {self._land_names[norm]: EXACT}, "land"
        return dict(self._kreis_names.get(norm, ())), "kreis"

    def _fuzzy_hits(self, norm: str) -> dict[str, float]:
        letters = norm.replace(" ", "")
        if len(letters) < 4:
            return {}
        cutoff = _FUZZY_CUTOFF_SHORT if len(letters) <= 6 else _FUZZY_CUTOFF
        hits: dict[str, float] = {}
        for key, score, _ in process.extract(
            norm, self._choices, scorer=fuzz.ratio, score_cutoff=cutoff, limit=30
        ):
            for ars, base in self._names[key]:
                s = round(score * base / EXACT, 1)
                if s > hits.get(ars, 0.0):
                    hits[ars] = s
        return hits

    def _resolve_name(self, norm: str, shown: str, limit: int, home: str) -> PlaceResolution:
        if not norm:
            return _nothing(f"kein Ortsname in {_quote(shown)}")
        hits = self._name_hits(norm)
        if hits:
            method = "name" if max(hits.values()) >= EXACT else "alias"
            return self._decide(hits, shown, method, limit, home)
        admin, level = self._admin_hits(norm)
        if admin:
            return self._decide(admin, shown, level, limit, home)
        hits = self._fuzzy_hits(norm)
        stripped = _strip_prefix(norm, _GEMEINDE_PREFIXES)
        if stripped:
            for ars, s in self._fuzzy_hits(stripped).items():
                hits[ars] = max(hits.get(ars, 0.0), s)
        if hits:
            return self._decide(hits, shown, "fuzzy", limit, home, fuzzy=True)
        return _nothing(f"kein Ort namens {_quote(shown)} gefunden")

    def _resolve_head(self, norm: str, shown: str, limit: int, home: str) -> PlaceResolution | None:
        """A district after the municipality ("Hamburg-Altona", "Kiel Gaarden"): the longest known start."""
        tokens = norm.split()
        for k in range(len(tokens) - 1, 0, -1):
            head = " ".join(tokens[:k])
            if len(head) >= 4 and head in self._names:
                hits = {ars: score * 0.8 for ars, score in self._names[head]}
                return self._decide(hits, shown, "partial", limit, home)
        return None

    def _decide(
        self, hits: dict[str, float], shown: str, method: str, limit: int, home: str, fuzzy: bool = False
    ) -> PlaceResolution:
        """Pick one region from scored hits: the single best, else the single best inside the home region."""

        def in_home(r: RegionInfo) -> bool:
            return bool(home) and r.ars.startswith(home)

        ranked = sorted(
            ((self._by_ars[a], s) for a, s in hits.items()),
            key=lambda rs: (-rs[1], not in_home(rs[0]), -(rs[0].population or 0), rs[0].display_name),
        )
        best = ranked[0][1]
        # Exact and alias scores are equal or 5 apart; fuzzy scores of one typo differ by a point or two,
        # which says nothing about which place was meant.
        top = [r for r, s in ranked if s >= best - (_FUZZY_TIE if fuzzy else 0.0)]
        match = top[0] if len(top) == 1 else None
        if match is None:
            home_top = [r for r in top if in_home(r)]
            if len(home_top) == 1:
                match = home_top[0]
                ranked.sort(key=lambda rs: rs[0] is not match)  # the match first, the rest keep their order
        cands = ranked[:limit]
        if match is not None:
            return PlaceResolution(match, cands, method=method)
        return PlaceResolution(
            None,
            cands,
            ambiguous=True,
            reason=f"{_quote(shown)} passt zu {len(top)} Orten: {self._list(top)}",
            method=method,
        )

    def _list(self, infos: list[RegionInfo], most: int = 6) -> str:
        names = [self.qualified_name(r) for r in infos[:most]]
        if len(infos) > most:
            names.append(f"und {len(infos) - most} weitere")
        return "; ".join(names)

    # -- free text -----------------------------------------------------------------------------------

    def find_in_text(self, text: str, home_region: str | None = None) -> PlaceResolution | None:
        """Find the place a free request text talks about, or None.

        Looks for a postcode followed by a name ("nach 24568 Kaltenkirchen"), a capitalised name after a
        preposition or a designation ("wohnen jetzt in Trappenkamp", "Gemeinde Wald"), multiword names
        anywhere ("Henstedt-Ulzburg", "Bad Bramstedt") and "Kreis X"/"Amt X". Where several places are named,
        a move's destination ("nach X") beats "in X" beats an origin ("aus X"). Single ordinary words that are
        also municipalities ("Wald", "Berg", "Regen") need a designation; lowercase words never count.
        """
        home = self.home_region if home_region is None else home_region
        clean = _clean(text if isinstance(text, str) else "")[:MAX_TEXT_CHARS]
        if not clean:
            return None
        tokens = [(m.group(), m.start()) for m in _WORD.finditer(clean)]
        words = [t for t, _ in tokens]
        best: tuple[float, int, PlaceResolution] | None = None
        i = 0
        while i < len(words):
            hit = self._hit_at(words, i, home)
            if hit is None:
                i += 1
                continue
            priority, used, resolution = hit
            if best is None or priority > best[0]:
                best = (priority, i, resolution)
            i += used
        if best is None:
            return None
        return _with_method(best[2], "text")

    def find_in_query(
        self, query: str, is_service_word: Callable[[str], bool] | None = None, home_region: str | None = None
    ) -> QueryPlace | None:
        """The place typed into a short search or request ("kfz ummelden Norderstedt", "Reisepass 24568
        Kaltenkirchen", "sperrmüll bad segeberg"), with where it stands in the text; None if there is none.

        Unlike :meth:`find_in_text` (sentences, where a place needs a preposition or capitals), a query is a
        few keywords: any span of up to six words that is exactly a municipality's name or alias, a known
        postcode (with or without the name), or "Kreis X"/"Amt X" counts, in any case. What it does not
        take: ordinary words that are also places ("Wald", "Berg"), a word ``is_service_word`` says the
        catalogue uses, typos (a misspelt place is left to the place field), and texts of more than
        :data:`MAX_QUERY_PLACE_WORDS` words (those are sentences: :meth:`find_in_text`). The longest span
        wins, then the later one (agents type the place last).
        """
        home = self.home_region if home_region is None else home_region
        clean = _clean(query if isinstance(query, str) else "")
        if not clean or len(clean) > MAX_QUERY_CHARS:
            return None
        tokens = [(m.group().rstrip("."), m.start(), m.start() + len(m.group().rstrip("."))) for m in _WORD.finditer(clean)]
        if not tokens or len(tokens) > MAX_QUERY_PLACE_WORDS:
            return None
        best: tuple[int, int, PlaceResolution, int, int] | None = None
        for i in range(len(tokens)):
            for n in range(min(_MAX_WORDS, len(tokens) - i), 0, -1):
                span = tokens[i : i + n]
                words = [w for w, _a, _b in span]
                found = self._query_span(words, is_service_word, home)
                if found is None:
                    continue
                if best is None or (n, i) >= (best[0], best[1]):
                    best = (n, i, found, span[0][1], span[-1][2])
                break  # the longest span starting at word i
        if best is None:
            return None
        _n, _i, found, start, end = best
        return QueryPlace(_with_method(found, "query"), start, end, clean[start:end])

    def _query_span(
        self, words: list[str], is_service_word: Callable[[str], bool] | None, home: str
    ) -> PlaceResolution | None:
        """The place these words name exactly, or None (see :meth:`find_in_query`)."""
        first = words[0]
        if first.isdigit():
            if len(first) != 5 or first not in self._plz:
                return None
            if len(words) == 1:
                return self._postcode_result(first, home)
            result = self._resolve_postcode_name(first, " ".join(words[1:]), 10, home)
            return result if result.match is not None else None
        if any(w.isdigit() for w in words[1:]) and not (len(words[-1]) == 1):
            return None
        lowered = [w.lower() for w in words]
        if lowered[0] in _NAME_CONNECTORS or lowered[-1] in _NAME_CONNECTORS:
            return None
        norm = normalize_place(" ".join(words))
        if not norm or len(norm) < 3 or (len(words) == 1 and norm in _COMMON_WORDS):
            return None
        if is_service_word is not None and all(
            is_service_word(w) for w, low in zip(words, lowered, strict=True) if low not in _NAME_CONNECTORS
        ):
            return None
        hits = self._name_hits(norm)
        if hits:
            return self._decide(hits, " ".join(words), "query", 10, home)
        admin, level = self._admin_hits(norm, explicit_only=True)
        if admin:
            return self._decide(admin, " ".join(words), level, 10, home)
        return None

    def _hit_at(self, words: list[str], i: int, home: str) -> tuple[float, int, PlaceResolution] | None:
        """The place starting at word ``i``: (priority, words used, resolution), or None."""
        word = words[i]
        prev = words[i - 1].lower() if i > 0 else ""
        prev2 = words[i - 2].lower() if i > 1 else ""
        context = _CONTEXT.get(prev, 0.0)
        if context and prev2 in _RESIDENCE:
            context += 8
        designated = prev in _DESIGNATORS

        if len(word) == 5 and word.isascii() and word.isdigit():
            if word not in self._plz:
                return None
            # "24568 Kaltenkirchen": the name decides among the postcode's municipalities.
            for n in range(min(_MAX_WORDS, len(words) - i - 1), 0, -1):
                span = words[i + 1 : i + 1 + n]
                if not _name_shape(span):
                    continue
                result = self._resolve_postcode_name(word, " ".join(span), 10, home)
                if result.match is not None:
                    return 100.0, 1 + n, result
            if context or prev in ("plz", "postleitzahl") or designated:
                return 60.0, 1, self._postcode_result(word, home)
            return None

        if not word[:1].isupper():
            return None
        word_norm = normalize_place(word)
        # Cheap filter: a name can only start with a word some key starts with.
        if word_norm and word_norm.split()[0] in self._first_tokens:
            found = self._name_at(words, i, context, designated, home)
            if found is not None:
                return found
        # A typo after "in"/"nach" ("wohne in Kaltenkirchn"): fuzzy, but only for longer single words.
        if context >= 80 and len(word_norm) >= 7 and word_norm not in _COMMON_WORDS:
            hits = {a: s for a, s in self._fuzzy_hits(word_norm).items() if s >= 90}
            if hits:
                return context - 40, 1, self._decide(hits, word, "fuzzy", 10, home, fuzzy=True)
        return None

    def _name_at(
        self, words: list[str], i: int, context: float, designated: bool, home: str
    ) -> tuple[float, int, PlaceResolution] | None:
        """The longest known name starting at word ``i`` that the context allows."""
        for n in range(min(_MAX_WORDS, len(words) - i), 0, -1):
            span = words[i : i + n]
            if not _name_shape(span):
                continue
            norm = normalize_place(" ".join(span))
            if not norm:
                continue
            hits = self._name_hits(norm)
            if hits:
                multi = len(norm.split()) >= 2 and len(norm) >= 6
                if not multi and not designated:
                    if not context or len(norm) < 3 or norm in _COMMON_WORDS:
                        continue
                priority = max(context, 85.0 if designated else 0.0, 70.0 if multi else 0.0)
                return priority, n, self._decide(hits, " ".join(span), "text", 10, home)
            admin, level = self._admin_hits(norm, explicit_only=True)
            if admin:
                return (
                    (58.0 if level == "amt" else 55.0),
                    n,
                    self._decide(admin, " ".join(span), level, 10, home),
                )
        return None


_WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*\.?")
_MAX_WORDS = 6
# Word before a name → priority. A destination is what a request is about more often than an origin.
_CONTEXT = {"nach": 90.0, "in": 80.0, "bei": 60.0, "aus": 50.0, "von": 45.0, "raum": 75.0, "wohnort": 85.0}
_RESIDENCE = frozenset(
    """
    wohne wohnen wohnt wohnhaft lebe leben lebt gemeldet ziehe ziehen zieht gezogen umgezogen umzug
    zuzug jetzt nun
    """.split()
)
_DESIGNATORS = frozenset({"gemeinde", "stadt", "ort", "ortschaft", "wohnort", "dorf", "markt", "hansestadt"})
# Ordinary German words that are also names of municipalities; alone after "in"/"nach" they are rarely places.
_COMMON_WORDS = frozenset(
    """
    acht anger au berg berge boden brand breit bruch brunnen buch burg eich elbe ernst felde fisch forst
    graben grube hahn horn horst kalt karl lahn lauf lehre mark mauer moos muecke nagel nahe nebel norden
    ohne osten otter rain regen reich rohr rosa rust saal salz sande sinn stein wald wehr welle welt wiesen
    zell
    """.split()
)
_NAME_CONNECTORS = frozenset(
    {"an", "am", "der", "im", "in", "bei", "ob", "vor", "vorm", "auf", "unter", "zu"}
)


def _name_shape(span: list[str]) -> bool:
    """Could these words be one place name? Capitalised ends; only small connectors in between."""
    if not span or not span[0][:1].isupper():
        return False
    last = span[-1]
    if len(span) > 1 and not (last[:1].isupper() or last.isdigit() and len(last) == 1):
        return False
    for w in span[:-1]:
        # A full stop inside the span ends a sentence, except after "St." and one-letter abbreviations.
        if w.endswith(".") and w.lower() not in ("st.", "a.", "i.", "b."):
            return False
    return all(w[:1].isupper() or w.lower() in _NAME_CONNECTORS for w in span[1:-1])


def _clean(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


def _quote(s: str, most: int = 60) -> str:
    return repr(s if len(s) <= most else s[:most] + "…")


def _nothing(reason: str) -> PlaceResolution:
    return PlaceResolution(None, [], ambiguous=False, reason=reason)


def _single(info: RegionInfo, method: str) -> PlaceResolution:
    return PlaceResolution(info, [(info, EXACT)], method=method)


def _with_reason(result: PlaceResolution, reason: str | None) -> PlaceResolution:
    return PlaceResolution(result.match, result.candidates, result.ambiguous, reason, result.method)


def _with_method(result: PlaceResolution, method: str) -> PlaceResolution:
    return PlaceResolution(result.match, result.candidates, result.ambiguous, result.reason, method)


# --------------------------------------------------------------------------------------------------
# Finding a region, and the one check of an ARS a person typed
# --------------------------------------------------------------------------------------------------

ARS_FORMAT = re.compile(r"\d{2}|\d{5}|\d{9}|\d{12}")
MAX_SUGGESTIONS = 5


class UnknownRegionError(ValueError):
    """An ARS that names no region; ``suggestions`` are the closest regions, best first."""

    def __init__(self, message: str, suggestions: list[RegionInfo] | None = None) -> None:
        super().__init__(message)
        self.suggestions = suggestions or []


def check_ars(value: Any) -> str:
    """``value`` if it is shaped like an ARS (2, 5, 9 or 12 digits), else ``ValueError`` saying so."""
    if not isinstance(value, str) or not ARS_FORMAT.fullmatch(value):
        shown = value if isinstance(value, str) else type(value).__name__
        raise ValueError(f"not an ARS (regional key) of 2, 5, 9 or 12 digits: {str(shown)[:40]!r}")
    return value


def find_regions(index: RegionIndex, query: str, limit: int = 10) -> list[RegionInfo]:
    """Every region a name, ARS, AGS or postcode may mean, best first (all levels: Gemeinde to Land).

    "Konstanz" gives the town, its Verwaltungsgemeinschaft and the Landkreis. A number is matched as ARS,
    AGS or postcode, and an unknown one gives its closest keys (:func:`closest_by_key`).
    """
    clean = _clean(query if isinstance(query, str) else "")[:MAX_QUERY_CHARS]
    compact = re.sub(r"[\s.\-/]", "", clean)
    if compact.isdigit():
        exact = [r for r in (index.get(compact), index.by_ags(compact)) if r is not None]
        exact += [r for r in index.postcode_regions(compact) if r not in exact] if len(compact) == 5 else []
        return exact[:limit] or closest_by_key(index, compact, limit)
    norm = normalize_place(clean)
    if not norm:
        return []
    scores: dict[str, float] = {}
    for ars, score in index._name_hits(norm).items():
        scores[ars] = max(scores.get(ars, 0.0), score)
    for table in (index._kreis_names, index._verband_names):
        for key in (norm, _strip_prefix(norm, _KREIS_PREFIXES + _VERBAND_PREFIXES)):
            for ars, score in table.get(key or "", ()):
                scores[ars] = max(scores.get(ars, 0.0), score)
    if norm in index._land_names:
        scores[index._land_names[norm]] = EXACT
    # A Verband named after its seat ("VVG der Stadt Konstanz", "Amt Leezen") contains the name as words.
    padded = f" {norm} "
    for key, hits in index._verband_names.items():
        if padded in f" {key} ":
            for ars, _ in hits:
                scores[ars] = max(scores.get(ars, 0.0), ALIAS - 5)
    if not scores:
        scores = index._fuzzy_hits(norm)
    level_rank = {"gemeinde": 0, "amt": 1, "kreis": 2, "land": 3}
    ranked = sorted(
        (index._by_ars[a] for a in scores if a in index._by_ars),
        key=lambda r: (-scores[r.ars], level_rank.get(r.level, 4), -(r.population or 0), r.ars),
    )
    return ranked[:limit]


def closest_by_key(index: RegionIndex, digits: str, limit: int = MAX_SUGGESTIONS) -> list[RegionInfo]:
    """The regions whose key is closest to an unknown one: the same AGS (Kreis + Gemeinde digits of a
    12-digit ARS with a wrong Verband part: 083350043043 → Konstanz 083355004043) first, then by edit
    distance of the ARS, larger places first among equals."""
    from rapidfuzz.distance import Levenshtein

    ags = digits[:5] + digits[9:] if len(digits) == 12 else digits if len(digits) == 8 else None
    scored = []
    for info in index:
        distance = Levenshtein.distance(digits, info.ars, score_cutoff=4)
        same_ags = ags is not None and info.ags == ags
        if same_ags or distance <= 3:
            scored.append(((not same_ags, distance, -(info.population or 0), info.ars), info))
    scored.sort(key=lambda item: item[0])
    return [info for _, info in scored[:limit]]


def describe_region(index: RegionIndex, info: RegionInfo) -> str:
    """One line: name, ARS, AGS, level, kind and the chain above it."""
    above = " → ".join(r.display_name for r in index.chain(info.ars)[1:])
    return (
        f"{info.display_name}  ARS {info.ars}  AGS {info.ags or '-'}  {info.level} ({info.kind})"
        + (f"  in {above}" if above else "")
    )


def check_region(conn: Any, value: Any, index: RegionIndex | None = None) -> str:
    """The one check of an ARS a person typed (``catalog import --region``, ``token add --region``,
    ``user add --region``, ``catalog scope grant``, the catalogue API's path).

    ``ValueError`` for a malformed key; :class:`UnknownRegionError` for a key no region has, naming the
    closest regions by key, or by name when a name was typed. A database without any regions yet is not
    checked beyond the format (a fresh hub may be set up before ``init`` loads them). ``conn`` is a
    SQLAlchemy connection or session; ``index`` an already built :class:`RegionIndex` to search.
    """
    if isinstance(value, str) and value.strip() and not value.strip().isdigit():
        name = value.strip()
        index = index or _index_from(conn)
        found = find_regions(index, name, MAX_SUGGESTIONS) if index is not None and len(index) else []
        hint = "; ".join(f"{r.ars} {index.qualified_name(r)}" for r in found) if found else ""
        raise UnknownRegionError(
            f"{name[:40]!r} is not an ARS (2, 5, 9 or 12 digits)"
            + (f"; regions of that name: {hint}" if hint else ""),
            found,
        )
    check_ars(value)
    region_t = Region.__table__
    if conn.execute(select(region_t.c.ars).where(region_t.c.ars == value)).first() is not None:
        return value
    if conn.execute(select(region_t.c.ars).limit(1)).first() is None:
        return value  # no regions loaded yet: nothing to check against
    index = index or _index_from(conn)
    close = closest_by_key(index, value)
    hint = "; ".join(f"{r.ars} {index.qualified_name(r)}" for r in close)
    raise UnknownRegionError(
        f"unknown region: no region with ARS {value}"
        + (f"; closest: {hint}" if hint else "")
        + " (search by name: citizen-hub region find NAME)",
        close,
    )


def _index_from(conn: Any) -> RegionIndex:
    cols = (Region.ars, Region.ags, Region.name, Region.level, Region.kind, Region.parent_ars, Region.population,
            Region.postcode)
    return RegionIndex(conn.execute(select(*cols)).all(), (), home_region="")
