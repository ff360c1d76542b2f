"""Parse exports of the Dienstleistungsdatenbank (DLDB) format into services and authorities.

Two shapes are known and both are read:

* München (2026): ``services_de.json`` with ``data[]`` of services (``id``, ``name``, ``description``
  HTML, ``meta.keywords`` comma list, ``leika``, ``fees`` HTML, ``duration`` in minutes, ``locations[]``)
  and ``locations_de.json`` with ``data[]`` of offices (``address``, ``contact``, ``geo``).
* Berlin (2016): ``services_de.json`` with names and ``locations[]`` only (no descriptions, no LeiKa),
  ``authority_de.json`` with ``data[]`` of authorities, each with its ``locations[]`` (id, name, office),
  and optionally ``topic_de.json`` (topic → services), which gives the services their topic.

Every DLDB *location* (office) becomes one :class:`~knowledge.models.Authority`; ``links`` pairs a service
with the offices that do it. Ids are prefixed (``muc-1063423``, ``muc-loc-10546``) so several catalogues
live side by side and a re-import addresses the same rows.

Structural errors (not JSON, not the DLDB shape, a service without id or name, duplicate ids, a file
over the size limit) raise :class:`CatalogFormatError` naming the file and the place; a catalogue is
imported whole or not at all. Optional fields of the wrong type are skipped and noted in
``DldbBatch.warnings``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowledge.models import Authority, Service
from knowledge.text import html_to_text

__all__ = ["CatalogFormatError", "DldbBatch", "MAX_FILE_BYTES", "html_to_text", "parse_dldb", "parse_dldb_data"]

MAX_FILE_BYTES = 64 * 1024 * 1024  # the München export is 1.7 MB; anything this big is not a catalogue
SHORT_TEXT_CHARS = 300
_LEIKA = re.compile(r"\b\d{14}\b")


class CatalogFormatError(ValueError):
    """A catalogue file that cannot be imported; the message says which file and why."""


@dataclass
class DldbBatch:
    """The result of one import: what to store, and what was odd but not fatal."""

    services: list[Service] = field(default_factory=list)
    authorities: list[Authority] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (service id, authority id)
    # Where a link holds when not in the whole region: (service id, authority id) → area ARS list.
    link_areas: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- HTML → text

def _short_text(text: str, limit: int = SHORT_TEXT_CHARS) -> str:
    """The first sentence(s) of ``text`` that fit in ``limit`` characters (a cut sentence ends in …)."""
    flat = " ".join(text.replace("\n- ", " ").split())
    if len(flat) <= limit:
        return flat
    out = ""
    for sentence in re.split(r"(?<=[.!?:])\s+", flat):
        candidate = f"{out} {sentence}".strip()
        if len(candidate) > limit:
            break
        out = candidate
    if not out:
        cut = flat[: limit - 1]
        out = (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"
    return out


# --------------------------------------------------------------------------- reading files


def _load(path: str | Path, what: str) -> Any:
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise CatalogFormatError(f"{what} {p}: cannot read: {exc.strerror or exc}") from exc
    if size > MAX_FILE_BYTES:
        raise CatalogFormatError(f"{what} {p}: {size} bytes, over the limit of {MAX_FILE_BYTES}")
    try:
        raw = p.read_bytes()
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CatalogFormatError(f"{what} {p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise CatalogFormatError(f"{what} {p}: not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    except RecursionError as exc:
        raise CatalogFormatError(f"{what} {p}: JSON nested too deeply") from exc
    except ValueError as exc:  # an integer of thousands of digits (int() refuses it), and the like
        raise CatalogFormatError(f"{what} {p}: not acceptable JSON: {str(exc)[:120]}") from exc
    except OSError as exc:
        raise CatalogFormatError(f"{what} {p}: cannot read: {exc.strerror or exc}") from exc


def _items(payload: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(payload, dict) or "data" not in payload:
        raise CatalogFormatError(f"{what}: expected a JSON object with a 'data' list (DLDB export)")
    data = payload["data"]
    if isinstance(data, dict):  # some DLDB endpoints key the list by id
        data = list(data.values())
    if not isinstance(data, list):
        raise CatalogFormatError(f"{what}: 'data' is {type(data).__name__}, expected a list")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise CatalogFormatError(f"{what}: data[{i}] is {type(item).__name__}, expected an object")
    return data


def _ident(item: dict[str, Any], what: str, i: int) -> str:
    raw = item.get("id")
    if isinstance(raw, bool) or not isinstance(raw, str | int) or not str(raw).strip():
        raise CatalogFormatError(f"{what}: data[{i}] has no usable 'id' ({raw!r})")
    ident = str(raw).strip()
    if len(ident) > 64 or not re.fullmatch(r"[\w.-]+", ident):
        raise CatalogFormatError(f"{what}: data[{i}] has an id that is not a catalogue key ({ident[:70]!r})")
    return ident


def _text(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


# --------------------------------------------------------------------------- parsing


def parse_dldb(
    services_path: str | Path,
    locations_path: str | Path | None = None,
    *,
    id_prefix: str,
    region_ars: str,
    topics_path: str | Path | None = None,
) -> DldbBatch:
    """Read a DLDB export from files; see :func:`parse_dldb_data` for what comes out."""
    services = _load(services_path, "services file")
    locations = _load(locations_path, "locations file") if locations_path is not None else None
    topics = _load(topics_path, "topics file") if topics_path is not None else None
    return parse_dldb_data(
        services, locations, id_prefix=id_prefix, region_ars=region_ars, topics=topics,
        source=str(services_path),
    )  # fmt: skip


def parse_dldb_data(
    services: Any,
    locations: Any = None,
    *,
    id_prefix: str,
    region_ars: str,
    topics: Any = None,
    source: str = "services",
) -> DldbBatch:
    """Turn decoded DLDB JSON into services, authorities and service→authority links.

    ``id_prefix`` makes the ids (``f"{id_prefix}-{id}"`` for services, ``f"{id_prefix}-loc-{id}"`` for
    offices); ``region_ars`` is the region that owns the catalogue and where its offices sit.
    """
    if not id_prefix or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", id_prefix):
        raise ValueError(f"id_prefix must be lower-case letters, digits and dashes, not {id_prefix!r}")
    if not re.fullmatch(r"\d{2}|\d{5}|\d{9}|\d{12}", region_ars or ""):
        raise ValueError(f"region_ars must be an ARS of 2, 5, 9 or 12 digits, not {region_ars!r}")
    batch = DldbBatch()
    topic_of = _topics(topics) if topics is not None else {}
    authorities = _authorities(locations, id_prefix, region_ars, batch) if locations is not None else {}

    seen: set[str] = set()
    for i, item in enumerate(_items(services, source)):
        ident = _ident(item, source, i)
        sid = f"{id_prefix}-{ident}"
        if sid in seen:
            raise CatalogFormatError(f"{source}: service id {ident} occurs twice")
        seen.add(sid)
        name = _text(item.get("name"))
        if not name:
            raise CatalogFormatError(f"{source}: service {ident} (data[{i}]) has no name")
        full_text = html_to_text(item.get("description"))
        meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
        relation = item.get("relation") if isinstance(item.get("relation"), dict) else {}
        batch.services.append(
            Service(
                id=sid,
                leika=_leika(item.get("leika")),
                name=name,
                synonyms=_synonyms(meta.get("keywords"), name),
                short_text=_short_text(full_text),
                full_text=full_text,
                fees=html_to_text(item.get("fees")),
                processing_time=_duration(item.get("duration")),
                online_url=_online_url(item.get("links")),
                topic=topic_of.get(ident) or topic_of.get(str(relation.get("root_topic") or ""), ""),
                owner_ars=region_ars,
            )
        )
        locs = item.get("locations")
        if not isinstance(locs, list):
            continue
        linked: set[str] = set()
        for loc in locs:
            loc_id = str(loc.get("location") or "") if isinstance(loc, dict) else ""
            if not loc_id or loc_id in linked:
                continue
            linked.add(loc_id)
            if loc_id in authorities:
                batch.links.append((sid, authorities[loc_id]))
            elif locations is not None:
                batch.warnings.append(f"service {ident}: location {loc_id} is not in the locations file")
    return batch


def _leika(value: Any) -> str | None:
    """The LeiKa key (14 digits); of a list of keys ("9903…, 9903…") the first."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    m = _LEIKA.search(value)
    return m.group(0) if m else None


def _synonyms(keywords: Any, name: str) -> list[str]:
    if isinstance(keywords, list):
        raw = [k for k in keywords if isinstance(k, str)]
    elif isinstance(keywords, str):
        raw = keywords.split(",")
    else:
        return []
    out: dict[str, str] = {}
    for k in raw:
        k = " ".join(k.split())
        key = k.casefold()
        if k and len(k) <= 200 and key != name.casefold() and key not in out:
            out[key] = k
    return list(out.values())


def _duration(value: Any) -> str:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return ""
    minutes = round(value)
    return "1 Minute" if minutes == 1 else f"{minutes} Minuten"


_ONLINE_ACTIONS = ("antrag", "zulassung", "betrieb", "melden")  # not "Online-Ausweis", "Online-Termin"


def _online_url(links: Any) -> str | None:
    """A link that starts the service online ("Antragstellung", "Online-Antrag"), if the export has one."""
    if not isinstance(links, list):
        return None
    for link in links:
        if not isinstance(link, dict):
            continue
        name, url = _text(link.get("name")).casefold(), link.get("link")
        if not isinstance(url, str) or not url.startswith("https://") or url.lower().endswith(".pdf"):
            continue
        if name == "antragstellung" or ("online" in name and any(w in name for w in _ONLINE_ACTIONS)):
            return url
    return None


def _topics(payload: Any) -> dict[str, str]:
    """Service id (and topic id) → topic name, from a Berlin ``topic_de.json``."""
    out: dict[str, str] = {}
    for item in _items(payload, "topics file"):
        name = _text(item.get("name"))
        if not name or not isinstance(item.get("id"), str | int):
            continue
        out.setdefault(str(item["id"]), name)
        relation = item.get("relation") if isinstance(item.get("relation"), dict) else {}
        for svc in relation.get("services") or ():
            if isinstance(svc, dict) and svc.get("id") is not None:
                out.setdefault(str(svc["id"]), name)
    return out


def _authorities(payload: Any, prefix: str, region_ars: str, batch: DldbBatch) -> dict[str, str]:
    """Offices → :class:`Authority`; returns DLDB location id → authority id."""
    by_location: dict[str, str] = {}
    for i, item in enumerate(_items(payload, "locations file")):
        ident = _ident(item, "locations file", i)
        nested = item.get("locations")
        if "address" not in item and isinstance(nested, list):
            # Berlin shape: an authority with its offices.
            parent = _text(item.get("name"))
            contact = item.get("contact") if isinstance(item.get("contact"), dict) else {}
            for loc in nested:
                if not isinstance(loc, dict) or loc.get("id") is None:
                    continue
                loc_id = str(loc["id"])
                if loc_id in by_location:
                    batch.warnings.append(f"location {loc_id} listed under more than one authority")
                    continue
                name = _text(loc.get("name")) or parent
                if parent and parent not in name:
                    name = f"{parent} – {name}"
                auth = _authority(f"{prefix}-loc-{loc_id}", name, _text(loc.get("office")), loc, contact, region_ars)
                batch.authorities.append(auth)
                by_location[loc_id] = auth.id
            continue
        if ident in by_location:
            raise CatalogFormatError(f"locations file: location id {ident} occurs twice")
        name = _text(item.get("name")) or _text(item.get("displayName"))
        if not name:
            raise CatalogFormatError(f"locations file: location {ident} (data[{i}]) has no name")
        contact = item.get("contact") if isinstance(item.get("contact"), dict) else {}
        kind = _text(item.get("organizationUnit")) or _text(item.get("organization"))
        auth = _authority(f"{prefix}-loc-{ident}", name, kind, item, contact, region_ars)
        batch.authorities.append(auth)
        by_location[ident] = auth.id
    return by_location


def _authority(aid: str, name: str, kind: str, loc: dict, contact: dict, region_ars: str) -> Authority:
    address = loc.get("address") if isinstance(loc.get("address"), dict) else {}
    street = " ".join(x for x in (_text(address.get("street")), _text(address.get("house_number"))) if x)
    website = _text(contact.get("webinfo"))
    if "example.com" in website or not website.startswith(("http://", "https://")):
        website = ""  # the Berlin 2016 export has placeholders
    return Authority(
        id=aid,
        name=name,
        kind=kind,
        region_ars=region_ars,
        street=street,
        postcode=_text(address.get("postal_code")),
        city=_text(address.get("city")),
        phone=_text(contact.get("phone")),
        email=_text(contact.get("email")),
        website=website,
        opening_hours=_opening_hours(loc),
        owner_ars=region_ars,
    )


# --------------------------------------------------------------------------- opening hours

_DAYS = {
    "mon": "mon", "monday": "mon", "mo": "mon", "montag": "mon",
    "tue": "tue", "tuesday": "tue", "di": "tue", "dienstag": "tue",
    "wed": "wed", "wednesday": "wed", "mi": "wed", "mittwoch": "wed",
    "thu": "thu", "thursday": "thu", "do": "thu", "donnerstag": "thu",
    "fri": "fri", "friday": "fri", "fr": "fri", "freitag": "fri",
    "sat": "sat", "saturday": "sat", "sa": "sat", "samstag": "sat", "sonnabend": "sat",
    "sun": "sun", "sunday": "sun", "so": "sun", "sonntag": "sun",
}  # fmt: skip
_RANGE = re.compile(r"(\d{1,2})[:.](\d{2})(?::\d{2})?\s*(?:-|–|bis)\s*(\d{1,2})[:.](\d{2})(?::\d{2})?")
_TIME = re.compile(r"(\d{1,2})[:.](\d{2})(?::\d{2})?$")


def _hhmm(value: Any) -> str | None:
    m = _TIME.match(value.strip()) if isinstance(value, str) else None
    if not m or int(m.group(1)) > 24 or int(m.group(2)) > 59:
        return None
    return f"{int(m.group(1)):02d}:{m.group(2)}"


def _opening_hours(loc: dict) -> dict[str, list[list[str]]]:
    """Weekly opening hours, where the export has them, as ``{"mon": [["08:00", "12:00"]], ...}``.

    Accepted per weekday: ``"08:00-12:00, 14:00-18:00"``, ``[{"start": .., "end": ..}]`` or
    ``[["08:00", "12:00"]]``. Neither of the shipped exports carries opening hours; newer DLDB exports do.
    """
    raw = next((loc[k] for k in ("opening_hours", "openingHours", "opening_times", "openingTimes") if k in loc), None)
    if not isinstance(raw, dict):
        return {}
    out: dict[str, list[list[str]]] = {}
    for key, value in raw.items():
        day = _DAYS.get(str(key).strip().lower())
        if day is None:
            continue
        spans: list[list[str]] = []
        if isinstance(value, str):
            for m in _RANGE.finditer(value):
                start, end = _hhmm(f"{m.group(1)}:{m.group(2)}"), _hhmm(f"{m.group(3)}:{m.group(4)}")
                if start and end and start < end:
                    spans.append([start, end])
        elif isinstance(value, list):
            for span in value:
                if isinstance(span, dict):
                    start, end = _hhmm(span.get("start") or span.get("from")), _hhmm(span.get("end") or span.get("to"))
                elif isinstance(span, list | tuple) and len(span) == 2:
                    start, end = _hhmm(span[0]), _hhmm(span[1])
                else:
                    continue
                if start and end and start < end:
                    spans.append([start, end])
        if spans:
            out[day] = sorted(spans)
    return out
