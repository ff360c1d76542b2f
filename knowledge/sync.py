"""Catalogue sync: regions push their own services, offices and responsibilities into the hub.

The payload is modelled on the object model of XZuFi 2.2 (the German standard for exchanging service
descriptions), cut down to what the knowledge base holds; ``docs/catalog-sync.md`` documents it and
``docs/catalog-sync.schema.json`` is its JSON Schema:

* ``leistung`` – a service: LeiKa key, name, synonyms, text modules, level mark → :class:`Service`
* ``organisationseinheit`` – an office with address, contact and opening hours → :class:`Authority`
* ``zustaendigkeit`` – leistung × area ARS × office (an override), or level × area × office (a level
  registration) → :class:`Responsibility`. It has no id of its own: the triple is its identity.
* ``onlinedienst`` – a link that does a service online → :class:`CatalogOnlineService`; the service's
  ``online_url`` is derived from it.

One write of region ``R`` (``PUT /api/catalog/R/snapshot`` or ``POST /api/catalog/R/changes``) goes
through four steps, each a function here:

1. :func:`parse_snapshot` / :func:`parse_changes` validate every object at the edge (pydantic) and
   collect per-object errors (which object, which field, why) instead of stopping at the first.
2. :func:`plan` compares the change set with what ``R`` owns (``owner_ars == R``) and checks scope
   (every area ARS inside the token's region and inside ``R``; no object of another region is
   touched), references (an override names an existing service and office) and the region's version.
   The result is the diff (added, changed, removed) — all a dry run returns.
3. :func:`execute` writes the plan in one transaction with Core bulk statements. Its first statement
   inserts the region's next :class:`CatalogVersion`; ``UNIQUE(region_ars, version)`` makes that a
   compare-and-set, so of two writers that planned on the same version exactly one commits and the
   other gets :class:`VersionConflict` (HTTP 412), with nothing written.
4. After the commit :class:`KbUpdate` carries the changed rows into the in-memory
   :class:`~knowledge.base.KnowledgeBase` through its ``apply_*``/``remove_*`` methods: the change is
   visible to the next lookup without a rebuild.

Ownership: every object written through ``/api/catalog/R`` gets ``owner_ars = R`` and only ``R``'s
writes can change or remove it. Ids are global (``service.id`` is a primary key), so a region cannot
take over an id another region uses. A snapshot replaces exactly what ``R`` owns; objects of regions
inside ``R`` (a Gemeinde's objects under a Kreis) are not touched.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from knowledge.columns import utcnow
from knowledge.models import Authority, Region, Responsibility, Service
from knowledge.regions import check_region
from knowledge.sync_models import change_t, online_t, version_t

__all__ = [
    "KINDS",
    "ApplyResult",
    "ChangeSet",
    "ConcurrentChange",
    "KbUpdate",
    "Leistung",
    "ObjectError",
    "Onlinedienst",
    "Organisationseinheit",
    "PayloadError",
    "Plan",
    "ScopeError",
    "SyncError",
    "UnknownRegion",
    "VersionConflict",
    "Zustaendigkeit",
    "DeletionRefused",
    "ZustaendigkeitConflict",
    "MAX_DELETE_SHARE",
    "check_deletions",
    "apply_change_set",
    "changes_since",
    "current_version",
    "execute",
    "export_region",
    "kb_update",
    "kb_update_from_log",
    "parse_changes",
    "parse_snapshot",
    "plan",
    "within",
]

KINDS = ("leistung", "organisationseinheit", "zustaendigkeit", "onlinedienst")
# A snapshot may delete at most this share of what its region owns unless forced ([catalog] max_delete_share).
MAX_DELETE_SHARE = 0.2
_CHUNK = 500  # ids per IN (...) and rows per executemany batch

service_t = Service.__table__
authority_t = Authority.__table__
resp_t = Responsibility.__table__
region_t = Region.__table__


# ============================================================================ the audit interface


class AuditLog(Protocol):
    """Where a catalogue change is recorded, in the writer's transaction.

    The knowledge layer defines the interface and the hub supplies the log (its append-only audit
    table), so this layer never imports the hub.
    """

    def __call__(self, conn: Connection, *, actor: str, action: str, reason: str, now: datetime) -> None: ...


# ============================================================================ errors


@dataclass(frozen=True, slots=True)
class ObjectError:
    """One problem with one object: ``object`` names it (``leistung[3] id=muc-1``), ``field`` the field."""

    object: str
    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"object": self.object, "field": self.field, "message": self.message}


class SyncError(Exception):
    """Base of the errors a change set can end in; ``errors`` lists the objects concerned."""

    status = 400

    def __init__(self, message: str, errors: Sequence[ObjectError] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors = list(errors)

    def __str__(self) -> str:
        # The message with the objects it concerns (for logs and the command line; the API sends both apart).
        details = "; ".join(f"{e.object}: {e.field or '-'}: {e.message}" for e in self.errors[:5])
        more = f"; and {len(self.errors) - 5} more" if len(self.errors) > 5 else ""
        return f"{self.message} ({details}{more})" if details else self.message


class PayloadError(SyncError):
    """The body or some of its objects are invalid (HTTP 400); nothing was changed."""


class ScopeError(SyncError):
    """The change set reaches outside the token's region (HTTP 403); nothing was changed."""

    status = 403


class UnknownRegion(SyncError):
    """The path names no known region (HTTP 404)."""

    status = 404


class VersionConflict(SyncError):
    """The region's version is not the one the writer expected (HTTP 412); nothing was changed."""

    status = 412

    def __init__(self, message: str, current: int) -> None:
        super().__init__(message)
        self.current = current


class DeletionRefused(SyncError):
    """A snapshot would delete more than the allowed share of the region's objects (HTTP 409).

    PVOG's own warning: an incomplete export silently deletes. ``would_delete`` lists the ids per kind;
    nothing was changed. Sent again with ``force`` it is applied.
    """

    status = 409

    def __init__(self, message: str, errors: Sequence[ObjectError], would_delete: dict[str, list[str]]) -> None:
        super().__init__(message, errors)
        self.would_delete = would_delete


class ZustaendigkeitConflict(SyncError):
    """Another region already gives the same area of the same Leistung (or level) another office (409)."""

    status = 409


class ConcurrentChange(SyncError):
    """Another region changed an object this change set refers to while it was written (HTTP 409)."""

    status = 409


# ============================================================================ payload models

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and control characters have no place in a catalogue.
    if _CONTROL.search(value):
        raise ValueError("contains control characters")
    return value


def _text(max_length: int, min_length: int = 0) -> Any:
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length),
        AfterValidator(_no_control),
    ]


Ident = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]
Ars = Annotated[str, StringConstraints(pattern=r"^(\d{2}|\d{5}|\d{9}|\d{12})$")]
LeikaKey = Annotated[str, StringConstraints(pattern=r"^\d{14}$")]
Level = Literal["gemeinde", "amt", "kreis", "land"]
# The role of a Zuständigkeit (XZuFi): the office that does it (routing follows these), or a contact point.
Role = Literal["zustaendig", "ansprechpunkt"]
DEFAULT_ROLE = "zustaendig"
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
HHMM = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")]
Url = Annotated[
    str, StringConstraints(max_length=2000, pattern=r"^https?://[^\s]+$"), AfterValidator(_no_control)
]
Name = _text(300, 1)
Short = _text(300)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Textmodule(_Model):
    """The text modules of a service (XZuFi ``modulText``), all optional."""

    kurztext: _text(1_000) = ""
    volltext: _text(50_000) = ""
    unterlagen: list[_text(500, 1)] = Field(default_factory=list, max_length=100)
    kosten: _text(5_000) = ""
    bearbeitungsdauer: _text(500) = ""
    thema: Short = ""
    lebenslage: Short = ""


class Leistung(_Model):
    """A service (XZuFi ``Leistung``)."""

    id: Ident
    name: Name
    leika: LeikaKey | None = None
    ebene: Level = "gemeinde"
    synonyme: list[_text(200, 1)] = Field(default_factory=list, max_length=200)
    textmodule: Textmodule = Field(default_factory=Textmodule)


class Anschrift(_Model):
    strasse: Short = ""  # street and house number
    plz: Annotated[str, StringConstraints(pattern=r"^(\d{5})?$")] = ""
    ort: Short = ""


class Kontakt(_Model):
    telefon: _text(100) = ""
    email: Annotated[
        str,
        StringConstraints(max_length=254, pattern=r"^([^@\s]+@[^@\s]+\.[^@\s]+)?$"),
        AfterValidator(_no_control),
    ] = ""
    web: Annotated[
        str, StringConstraints(max_length=2000, pattern=r"^(https?://[^\s]+)?$"), AfterValidator(_no_control)
    ] = ""


class Organisationseinheit(_Model):
    """An office (XZuFi ``Organisationseinheit``); ``gebiet_ars`` is the region it belongs to."""

    id: Ident
    name: Name
    art: Short = ""
    gebiet_ars: Ars
    anschrift: Anschrift = Field(default_factory=Anschrift)
    kontakt: Kontakt = Field(default_factory=Kontakt)
    oeffnungszeiten: dict[Day, list[tuple[HHMM, HHMM]]] = Field(default_factory=dict)

    @field_validator("oeffnungszeiten")
    @classmethod
    def _spans_in_order(cls, value: dict[str, list[tuple[str, str]]]) -> dict[str, list[tuple[str, str]]]:
        for day, spans in value.items():
            for start, end in spans:
                if start >= end:
                    raise ValueError(f"{day}: {start}-{end} does not end after it starts")
        return value


class Zustaendigkeit(_Model):
    """Who does what where (XZuFi ``Zustaendigkeit``).

    With ``leistung_id``: an override, that service in ``gebiet_ars`` (and every region inside it) goes to
    the office. With ``ebene``: a level registration, the office does every service of that level mark in
    ``gebiet_ars``. Exactly one of the two is given.
    """

    leistung_id: Ident | None = None
    ebene: Level | None = None
    gebiet_ars: Ars | None = None
    # An area list (XZuFi: a Zuständigkeit names several Gebiete): one Bürgeramt for the whole of Berlin,
    # an Amt for its member municipalities, a branch office for part of a county. Give it or gebiet_ars.
    gebiete: list[Ars] | None = Field(default=None, min_length=1, max_length=20_000)
    organisationseinheit_id: Ident
    rolle: Role = "zustaendig"

    @model_validator(mode="after")
    def _override_or_level(self) -> Zustaendigkeit:
        if (self.leistung_id is None) == (self.ebene is None):
            raise ValueError("give exactly one of leistung_id (an override) and ebene (a level registration)")
        if (self.gebiet_ars is None) == (self.gebiete is None):
            raise ValueError("give exactly one of gebiet_ars (one area) and gebiete (a list of areas)")
        return self

    def areas(self) -> list[str]:
        """The areas, each once, in the order given."""
        return list(dict.fromkeys(self.gebiete)) if self.gebiete is not None else [self.gebiet_ars]  # type: ignore[list-item]


class Onlinedienst(_Model):
    """An online service (XZuFi ``Onlinedienst``) of a service of the same region."""

    id: Ident
    leistung_id: Ident
    url: Url
    name: Short = ""


MODELS: dict[str, type[_Model]] = {
    "leistung": Leistung,
    "organisationseinheit": Organisationseinheit,
    "zustaendigkeit": Zustaendigkeit,
    "onlinedienst": Onlinedienst,
}


# ============================================================================ rows ↔ objects

SERVICE_FIELDS = {  # column → payload field, for the diff's "fields"
    "name": "name",
    "leika": "leika",
    "level": "ebene",
    "synonyms": "synonyme",
    "short_text": "textmodule.kurztext",
    "full_text": "textmodule.volltext",
    "documents": "textmodule.unterlagen",
    "fees": "textmodule.kosten",
    "processing_time": "textmodule.bearbeitungsdauer",
    "topic": "textmodule.thema",
    "life_situation": "textmodule.lebenslage",
}
AUTHORITY_FIELDS = {
    "name": "name",
    "kind": "art",
    "region_ars": "gebiet_ars",
    "street": "anschrift.strasse",
    "postcode": "anschrift.plz",
    "city": "anschrift.ort",
    "phone": "kontakt.telefon",
    "email": "kontakt.email",
    "website": "kontakt.web",
    "opening_hours": "oeffnungszeiten",
}
ONLINE_FIELDS = {"service_id": "leistung_id", "url": "url", "name": "name"}
FIELDS = {"leistung": SERVICE_FIELDS, "organisationseinheit": AUTHORITY_FIELDS, "onlinedienst": ONLINE_FIELDS}


def zustaendigkeit_key(
    service_id: str | None, level: str | None, area: str, authority_id: str, role: str | None = None
) -> str:
    """The identity of a responsibility: ``SERVICE@AREA>OFFICE`` or ``ebene=LEVEL@AREA>OFFICE``.

    A role other than ``zustaendig`` is appended as ``#ROLE``. ``@``, ``>``, ``=`` and ``#`` cannot occur
    in ids, so the key is unambiguous. A zustaendigkeit with an area list is one key per area.
    """
    head = service_id if service_id else f"ebene={level}"
    tail = f"#{role}" if role and role != DEFAULT_ROLE else ""
    return f"{head}@{area}>{authority_id}{tail}"


def _leistung_row(o: Leistung) -> dict[str, Any]:
    t = o.textmodule
    return {
        "id": o.id,
        "name": o.name,
        "leika": o.leika,
        "level": o.ebene,
        "synonyms": list(o.synonyme),
        "short_text": t.kurztext,
        "full_text": t.volltext,
        "documents": list(t.unterlagen),
        "fees": t.kosten,
        "processing_time": t.bearbeitungsdauer,
        "topic": t.thema,
        "life_situation": t.lebenslage,
    }


def _authority_row(o: Organisationseinheit) -> dict[str, Any]:
    return {
        "id": o.id,
        "name": o.name,
        "kind": o.art,
        "region_ars": o.gebiet_ars,
        "street": o.anschrift.strasse,
        "postcode": o.anschrift.plz,
        "city": o.anschrift.ort,
        "phone": o.kontakt.telefon,
        "email": o.kontakt.email,
        "website": o.kontakt.web,
        "opening_hours": {
            d: [list(s) for s in sorted(spans)] for d, spans in o.oeffnungszeiten.items() if spans
        },
        "is_demo": False,
    }


def _resp_rows_of(o: Zustaendigkeit) -> list[dict[str, Any]]:
    """One table row per area of the zustaendigkeit."""
    return [
        {
            "service_id": o.leistung_id,
            "level": o.ebene,
            "region_ars": area,
            "authority_id": o.organisationseinheit_id,
            "role": o.rolle,
        }
        for area in o.areas()
    ]


def _online_row(o: Onlinedienst) -> dict[str, Any]:
    return {"id": o.id, "service_id": o.leistung_id, "url": o.url, "name": o.name}


def leistung_json(row: Any) -> dict[str, Any]:
    """A service row in the payload shape (what ``GET /api/catalog/{ars}`` serves)."""
    r = row._mapping if hasattr(row, "_mapping") else row
    out: dict[str, Any] = {"id": r["id"], "name": r["name"]}
    if r["leika"]:
        out["leika"] = r["leika"]
    out["ebene"] = r["level"]
    out["synonyme"] = list(r["synonyms"] or [])
    out["textmodule"] = {
        "kurztext": r["short_text"],
        "volltext": r["full_text"],
        "unterlagen": list(r["documents"] or []),
        "kosten": r["fees"],
        "bearbeitungsdauer": r["processing_time"],
        "thema": r["topic"],
        "lebenslage": r["life_situation"],
    }
    return out


def organisationseinheit_json(row: Any) -> dict[str, Any]:
    r = row._mapping if hasattr(row, "_mapping") else row
    return {
        "id": r["id"],
        "name": r["name"],
        "art": r["kind"],
        "gebiet_ars": r["region_ars"],
        "anschrift": {"strasse": r["street"], "plz": r["postcode"], "ort": r["city"]},
        "kontakt": {"telefon": r["phone"], "email": r["email"], "web": r["website"]},
        "oeffnungszeiten": dict(r["opening_hours"] or {}),
    }


def zustaendigkeit_json(row: Any) -> dict[str, Any]:
    r = row._mapping if hasattr(row, "_mapping") else row
    out: dict[str, Any] = {"leistung_id": r["service_id"]} if r["service_id"] else {"ebene": r["level"]}
    out["gebiet_ars"] = r["region_ars"]
    out["organisationseinheit_id"] = r["authority_id"]
    role = r.get("role") if hasattr(r, "get") else None
    if role and role != DEFAULT_ROLE:
        out["rolle"] = role
    return out


def onlinedienst_json(row: Any) -> dict[str, Any]:
    r = row._mapping if hasattr(row, "_mapping") else row
    return {"id": r["id"], "leistung_id": r["service_id"], "url": r["url"], "name": r["name"]}


# ============================================================================ change sets


@dataclass(slots=True)
class Obj:
    """One object of a change set: a write (``row`` set) or a delete (``row`` None)."""

    kind: str
    key: str  # the id; for a zustaendigkeit its key
    label: str  # "leistung[3] id=muc-1", used in errors
    row: dict[str, Any] | None = None  # the table row; for a delete only a zustaendigkeit has one
    delete: bool = False

    @property
    def area(self) -> str | None:
        if self.row is None or self.kind not in ("organisationseinheit", "zustaendigkeit"):
            return None
        return self.row["region_ars"]

    def refs(self) -> list[tuple[str, str, str]]:
        """(kind, id, field) of the objects a write names."""
        if self.row is None or self.delete:
            return []
        if self.kind == "zustaendigkeit":
            out = [("organisationseinheit", self.row["authority_id"], "organisationseinheit_id")]
            if self.row["service_id"]:
                out.insert(0, ("leistung", self.row["service_id"], "leistung_id"))
            return out
        if self.kind == "onlinedienst":
            return [("leistung", self.row["service_id"], "leistung_id")]
        return []


@dataclass
class ChangeSet:
    """A validated change set: ``mode`` ``snapshot`` (replace what the region owns) or ``changes``."""

    mode: str
    writes: dict[str, dict[str, Obj]] = field(default_factory=lambda: {k: {} for k in KINDS})
    deletes: dict[str, dict[str, Obj]] = field(default_factory=lambda: {k: {} for k in KINDS})
    errors: list[ObjectError] = field(default_factory=list)
    # Keys that were given but are invalid: a snapshot does not remove what it could not read.
    rejected: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})

    def count(self) -> int:
        return sum(len(v) for v in self.writes.values()) + sum(len(v) for v in self.deletes.values())


_IDENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,40}")


def _label(prefix: str, kind: str, index: int, ident: Any) -> str:
    label = f"{prefix}{kind}[{index}]"
    # Only a well-formed id is repeated: an error never echoes arbitrary text that was sent.
    if isinstance(ident, str) and _IDENT_RE.fullmatch(ident):
        label += f" id={ident}"
    return label


def _pydantic_errors(label: str, exc: ValidationError) -> list[ObjectError]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(x) for x in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        out.append(ObjectError(label, loc, message))
    return out


_ROW_OF = {
    "leistung": lambda o: [_leistung_row(o)],
    "organisationseinheit": lambda o: [_authority_row(o)],
    "zustaendigkeit": _resp_rows_of,
    "onlinedienst": lambda o: [_online_row(o)],
}


def _key_of(kind: str, row: dict[str, Any]) -> str:
    if kind == "zustaendigkeit":
        return zustaendigkeit_key(
            row["service_id"], row["level"], row["region_ars"], row["authority_id"], row.get("role")
        )
    return row["id"]


def _raw_key(kind: str, item: dict[str, Any]) -> str | None:
    """The key of an invalid object, where it can be told, so a snapshot does not remove the stored one."""
    if kind != "zustaendigkeit":
        return item["id"] if isinstance(item.get("id"), str) else None
    parts = [item.get(f) for f in ("gebiet_ars", "organisationseinheit_id")]
    head = item.get("leistung_id"), item.get("ebene")
    if not all(isinstance(x, str) for x in parts) or not any(isinstance(x, str) for x in head):
        return None
    service_id = head[0] if isinstance(head[0], str) else None
    role = item.get("rolle") if isinstance(item.get("rolle"), str) else None
    return zustaendigkeit_key(service_id, head[1] if service_id is None else None, parts[0], parts[1], role)


def _read_writes(cs: ChangeSet, data: Any, prefix: str) -> None:
    for kind in KINDS:
        items = data.get(kind, [])
        if not isinstance(items, list):
            raise PayloadError(
                f"'{prefix}{kind}' must be a list", [ObjectError(f"{prefix}{kind}", "", "must be a list")]
            )
        model = MODELS[kind]
        for i, item in enumerate(items):
            ident = item.get("id") if isinstance(item, dict) else None
            label = _label(prefix, kind, i, ident)
            if not isinstance(item, dict):
                cs.errors.append(ObjectError(label, "", f"must be an object, not {type(item).__name__}"))
                continue
            try:
                obj = model.model_validate(item)
            except ValidationError as exc:
                cs.errors.extend(_pydantic_errors(label, exc))
                key = _raw_key(kind, item)
                if key:
                    cs.rejected[kind].add(key)
                continue
            for row in _ROW_OF[kind](obj):
                key = _key_of(kind, row)
                if kind == "zustaendigkeit":
                    label = f"{prefix}{kind}[{i}] {key}"
                if key in cs.writes[kind]:
                    cs.errors.append(ObjectError(label, "id", f"{kind} {key} occurs twice in this change set"))
                    cs.rejected[kind].add(key)
                    continue
                cs.writes[kind][key] = Obj(kind, key, label, row)


def _check_top(data: Any, allowed: Iterable[str], what: str) -> None:
    if not isinstance(data, dict):
        raise PayloadError(f"{what} must be a JSON object", [ObjectError(what, "", "must be a JSON object")])
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        shown = [k if _PLAIN_KEY.fullmatch(k) else "(unprintable)" for k in unknown[:20]]
        raise PayloadError(
            f"{what} has unknown keys: {', '.join(shown)}; known are {', '.join(allowed)}",
            [ObjectError(what, k, "unknown key") for k in shown],
        )


def parse_snapshot(data: Any) -> ChangeSet:
    """Validate a snapshot body ``{"leistung": [...], "organisationseinheit": [...], ...}``.

    Invalid objects are listed in ``ChangeSet.errors`` (the caller decides whether that rejects the whole
    set); a body that is not of this shape at all raises :class:`PayloadError`.
    """
    _check_top(data, KINDS, "snapshot")
    cs = ChangeSet("snapshot")
    _read_writes(cs, data, "")
    return cs


def _read_deletes(cs: ChangeSet, data: Any) -> None:
    for kind in KINDS:
        items = data.get(kind, [])
        if not isinstance(items, list):
            raise PayloadError(
                f"'delete.{kind}' must be a list", [ObjectError(f"delete.{kind}", "", "must be a list")]
            )
        for i, item in enumerate(items):
            if kind == "zustaendigkeit":
                label = f"delete.zustaendigkeit[{i}]"
                if not isinstance(item, dict):
                    cs.errors.append(
                        ObjectError(
                            label,
                            "",
                            "must be an object with leistung_id|ebene, gebiet_ars, organisationseinheit_id",
                        )
                    )
                    continue
                try:
                    rows = _resp_rows_of(Zustaendigkeit.model_validate(item))
                except ValidationError as exc:
                    cs.errors.extend(_pydantic_errors(label, exc))
                    continue
                for row in rows:
                    key = _key_of(kind, row)
                    cs.deletes[kind][key] = Obj(kind, key, f"{label} {key}", row, delete=True)
                continue
            label = _label("delete.", kind, i, item)
            if not isinstance(item, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}", item):
                cs.errors.append(ObjectError(label, "", "must be the id (a string) of the object to delete"))
                continue
            cs.deletes[kind][item] = Obj(kind, item, label, delete=True)


def parse_changes(data: Any) -> ChangeSet:
    """Validate a changes body ``{"write": {<kind>: [objects]}, "delete": {<kind>: [ids]}}``.

    A ``zustaendigkeit`` is deleted by naming it (``leistung_id`` or ``ebene``, ``gebiet_ars``,
    ``organisationseinheit_id``). An object both written and deleted in one set is an error.
    """
    _check_top(data, ("write", "delete"), "changes")
    cs = ChangeSet("changes")
    writes, deletes = data.get("write", {}), data.get("delete", {})
    _check_top(writes, KINDS, "write")
    _check_top(deletes, KINDS, "delete")
    _read_writes(cs, writes, "write.")
    _read_deletes(cs, deletes)
    for kind in KINDS:
        for key in list(cs.deletes[kind]):
            if key in cs.writes[kind]:
                obj = cs.deletes[kind].pop(key)
                cs.errors.append(
                    ObjectError(obj.label, "", f"{kind} {key} is written and deleted in one change set")
                )
                cs.writes[kind].pop(key)
                cs.rejected[kind].add(key)
    return cs


def snapshot_from_rows(
    services: Iterable[dict[str, Any]] = (),
    authorities: Iterable[dict[str, Any]] = (),
    responsibilities: Iterable[dict[str, Any]] = (),
    online: Iterable[dict[str, Any]] = (),
) -> dict[str, list[dict[str, Any]]]:
    """A snapshot body from table-shaped rows (what the importers produce), for the same validation."""
    return {
        "leistung": [leistung_json(_defaults(r, _SERVICE_DEFAULTS)) for r in services],
        "organisationseinheit": [
            organisationseinheit_json(_defaults(r, _AUTHORITY_DEFAULTS)) for r in authorities
        ],
        "zustaendigkeit": [
            zustaendigkeit_json(_defaults(r, {"service_id": None, "level": None, "role": DEFAULT_ROLE}))
            for r in responsibilities
        ],
        "onlinedienst": [onlinedienst_json(_defaults(r, {"name": ""})) for r in online],
    }


_SERVICE_DEFAULTS = {
    "leika": None,
    "level": "gemeinde",
    "synonyms": [],
    "short_text": "",
    "full_text": "",
    "documents": [],
    "fees": "",
    "processing_time": "",
    "topic": "",
    "life_situation": "",
}
_AUTHORITY_DEFAULTS = {
    "kind": "",
    "street": "",
    "postcode": "",
    "city": "",
    "phone": "",
    "email": "",
    "website": "",
    "opening_hours": {},
}


def _defaults(row: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **{k: v for k, v in row.items() if v is not None or k not in defaults}}


# ============================================================================ reading the database


def within(ars: str, regions: Iterable[str]) -> bool:
    """Whether ``ars`` lies inside one of ``regions`` (ARS prefixes)."""
    return any(ars.startswith(r) for r in regions)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def current_version(conn: Connection, region: str) -> int:
    """The region's catalogue version (0 before its first change set): the ETag of ``/api/catalog/{ars}``."""
    value = conn.execute(
        select(func.max(version_t.c.version)).where(version_t.c.region_ars == region)
    ).scalar()
    return int(value or 0)


def _known_regions(conn: Connection, arss: Iterable[str]) -> set[str]:
    arss = sorted(set(arss))
    out: set[str] = set()
    for chunk in _chunks(arss):
        out.update(r[0] for r in conn.execute(select(region_t.c.ars).where(region_t.c.ars.in_(chunk))))
    return out


def _rows_by_id(
    conn: Connection, table, ids: Iterable[str] | None, owner: str | None
) -> dict[str, dict[str, Any]]:
    """Rows of ``table`` by id: those of ``owner`` (all of them when ``ids`` is None), else any owner."""
    cond = [table.c.owner_ars == owner] if owner is not None else []
    if ids is None:
        return {r["id"]: dict(r) for r in conn.execute(select(table).where(*cond)).mappings()}
    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(ids))):
        for r in conn.execute(select(table).where(table.c.id.in_(chunk), *cond)).mappings():
            out[r["id"]] = dict(r)
    return out


def _owners(conn: Connection, table, ids: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for chunk in _chunks(sorted(set(ids))):
        out.update(
            (r[0], r[1])
            for r in conn.execute(select(table.c.id, table.c.owner_ars).where(table.c.id.in_(chunk)))
        )
    return out


_RESP_COLS = (
    resp_t.c.id,
    resp_t.c.service_id,
    resp_t.c.level,
    resp_t.c.region_ars,
    resp_t.c.authority_id,
    resp_t.c.owner_ars,
    resp_t.c.role,
)


def _resp_rows(conn: Connection, *conds) -> dict[str, list[dict[str, Any]]]:
    """Responsibility rows grouped by key (legacy data may hold the same key twice)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in conn.execute(select(*_RESP_COLS).where(*conds).order_by(resp_t.c.id)).mappings():
        row = dict(r)
        out.setdefault(_key_of("zustaendigkeit", row), []).append(row)
    return out


# ============================================================================ planning


@dataclass
class Plan:
    """What a change set does to one region; ``diff()`` is what a dry run answers."""

    region: str
    mode: str
    base_version: int
    added: dict[str, list[Obj]] = field(default_factory=lambda: {k: [] for k in KINDS})
    changed: dict[str, list[tuple[Obj, list[str]]]] = field(default_factory=lambda: {k: [] for k in KINDS})
    removed: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: {} for k in KINDS})
    errors: list[ObjectError] = field(default_factory=list)
    # Services whose online_url execute() recomputed (their online services changed).
    online_affected: set[str] = field(default_factory=set)
    # What the region owned before, per kind (a snapshot's plan only): the deletion guard's measure.
    owned: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(self.added[k] or self.changed[k] or self.removed[k] for k in KINDS)

    def summary(self) -> dict[str, dict[str, int]]:
        return {
            k: {"added": len(self.added[k]), "changed": len(self.changed[k]), "removed": len(self.removed[k])}
            for k in KINDS
        }

    def diff(self) -> dict[str, Any]:
        return {
            "added": {k: [o.key for o in self.added[k]] for k in KINDS},
            "changed": {k: [{"id": o.key, "fields": f} for o, f in self.changed[k]] for k in KINDS},
            "removed": {k: sorted(self.removed[k]) for k in KINDS},
        }


def _differences(kind: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    names = FIELDS[kind]
    out = []
    for column, payload_name in names.items():
        a, b = old.get(column), new.get(column)
        if column == "leika":
            a, b = a or None, b or None
        if a != b:
            out.append(payload_name)
    return out


def plan(
    conn: Connection,
    region: str,
    cs: ChangeSet,
    *,
    scopes: Sequence[str] | None = None,
    partial: bool = False,
    expected_version: int | Collection[int] | None = None,
) -> Plan:
    """Compare ``cs`` with what ``region`` owns; check scope, ownership, references and version.

    ``scopes`` are the regions the writer may write (None: no limit, for the command line). Raises
    :class:`ScopeError` when anything reaches outside them, :class:`UnknownRegion` for an unknown path
    region, :class:`VersionConflict` when ``expected_version`` is not the current one, and
    :class:`PayloadError` when an object is invalid and ``partial`` is false. With ``partial`` the invalid
    objects are left out and listed in ``Plan.errors``.
    """
    if scopes is not None and not within(region, scopes):
        raise ScopeError(
            f"region {region} is outside this token's region ({', '.join(scopes) or 'none'})",
            [ObjectError(f"/api/catalog/{region}", "ars", "outside this token's region")],
        )
    # The version first: execute() inserts base_version + 1, which fails if anything was written since.
    base = current_version(conn, region)
    if expected_version is not None:
        expected = {expected_version} if isinstance(expected_version, int) else set(expected_version)
        if base not in expected:
            shown = ", ".join(str(v) for v in sorted(expected) if v >= 0) or "another version"
            raise VersionConflict(
                f"the catalogue of region {region} is at version {base}, not {shown}", current=base
            )
    if not _known_regions(conn, [region]):
        try:
            check_region(conn, region)  # names the closest regions when regions are loaded
        except ValueError as exc:
            raise UnknownRegion(str(exc)) from None
        raise UnknownRegion(f"no region with ARS {region} (are the regions loaded? run 'citizen-hub init')")

    errors = list(cs.errors)
    scope_errors: list[ObjectError] = []
    bad: dict[str, set[str]] = {k: set(v) for k, v in cs.rejected.items()}  # invalid keys per kind

    def reject(obj: Obj, fieldname: str, message: str) -> None:
        errors.append(ObjectError(obj.label, fieldname, message))
        bad[obj.kind].add(obj.key)

    # -- areas: inside the token's region (403) and inside the path region (400), and real regions
    areas = {o.area for k in KINDS for o in cs.writes[k].values() if o.area}
    known = _known_regions(conn, areas)
    for kind in ("organisationseinheit", "zustaendigkeit"):
        for obj in cs.writes[kind].values():
            area = obj.area
            if scopes is not None and not within(area, scopes):
                scope_errors.append(
                    ObjectError(obj.label, "gebiet_ars", f"{area} is outside this token's region")
                )
            elif not area.startswith(region):
                reject(obj, "gebiet_ars", f"{area} is not inside region {region} whose catalogue this is")
            elif area not in known:
                reject(obj, "gebiet_ars", f"no region with ARS {area}")
    for obj in cs.deletes["zustaendigkeit"].values():
        if scopes is not None and not within(obj.area, scopes):
            scope_errors.append(
                ObjectError(obj.label, "gebiet_ars", f"{obj.area} is outside this token's region")
            )

    # -- what the region owns now (all of it for a snapshot, the named objects for changes)
    tables = {"leistung": service_t, "organisationseinheit": authority_t, "onlinedienst": online_t}
    cur: dict[str, dict[str, Any]] = {}
    for kind, table in tables.items():
        ids = None if cs.mode == "snapshot" else set(cs.writes[kind]) | set(cs.deletes[kind])
        cur[kind] = _rows_by_id(conn, table, ids, region) if ids is None or ids else {}
    if cs.mode == "snapshot":
        cur_resp = _resp_rows(conn, resp_t.c.owner_ars == region)
    else:
        touched = {
            k.split("@", 1)[1].split(">", 1)[0]
            for k in (*cs.writes["zustaendigkeit"], *cs.deletes["zustaendigkeit"])
        }
        cur_resp = {}
        for chunk in _chunks(sorted(touched)):
            cur_resp.update(_resp_rows(conn, resp_t.c.owner_ars == region, resp_t.c.region_ars.in_(chunk)))

    # -- ids another region owns cannot be written or deleted from here
    for kind, table in tables.items():
        foreign_ids = (set(cs.writes[kind]) | set(cs.deletes[kind])) - set(cur[kind])
        for ident, owner in _owners(conn, table, foreign_ids).items():
            obj = cs.writes[kind].get(ident) or cs.deletes[kind][ident]
            if scopes is not None and not within(owner, scopes):
                scope_errors.append(
                    ObjectError(
                        obj.label,
                        "id",
                        f"{kind} {ident} belongs to region {owner}, outside this token's region",
                    )
                )
            else:
                reject(
                    obj,
                    "id",
                    f"{kind} {ident} belongs to the catalogue of region {owner}; "
                    f"change it through /api/catalog/{owner}",
                )
    if scope_errors:
        raise ScopeError(
            f"{len(scope_errors)} object(s) outside this token's region; nothing was changed", scope_errors
        )

    # -- removals: what a snapshot leaves out, what a change set deletes, and what hangs on those
    removed: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
    labels: dict[tuple[str, str], str] = {}
    for kind in ("leistung", "organisationseinheit", "onlinedienst"):
        if cs.mode == "snapshot":
            for ident, row in cur[kind].items():
                if ident not in cs.writes[kind] and ident not in bad[kind]:
                    removed[kind][ident] = row
                    labels[(kind, ident)] = f"{kind} id={ident} (not in the snapshot)"
        else:
            for ident, obj in cs.deletes[kind].items():
                if ident in cur[kind] and ident not in bad[kind]:
                    removed[kind][ident] = cur[kind][ident]
                    labels[(kind, ident)] = obj.label
    # Services and offices that other regions still name cannot go: their zustaendigkeiten would dangle.
    for kind, column in (("leistung", resp_t.c.service_id), ("organisationseinheit", resp_t.c.authority_id)):
        ids = sorted(removed[kind])
        for chunk in _chunks(ids):
            rows = conn.execute(
                select(column, resp_t.c.owner_ars, func.count())
                .where(column.in_(chunk), resp_t.c.owner_ars != region)
                .group_by(column, resp_t.c.owner_ars)
            ).all()
            for ident, owner, n in rows:
                if ident in removed[kind]:
                    del removed[kind][ident]
                    errors.append(
                        ObjectError(
                            labels[(kind, ident)],
                            "id",
                            f"{kind} {ident} is still named by {n} zustaendigkeit(en) of region {owner}; "
                            "they must be deleted first",
                        )
                    )
    if cs.mode == "snapshot":
        for key, rows in cur_resp.items():
            if key not in cs.writes["zustaendigkeit"] and key not in bad["zustaendigkeit"]:
                removed["zustaendigkeit"][key] = rows
    else:
        for key in cs.deletes["zustaendigkeit"]:
            if key in cur_resp:
                removed["zustaendigkeit"][key] = cur_resp[key]
        # A deleted service or office takes the region's own zustaendigkeiten and online services with it.
        gone_s, gone_a = set(removed["leistung"]), set(removed["organisationseinheit"])
        if gone_s or gone_a:
            conds = []
            if gone_s:
                conds.append(resp_t.c.service_id.in_(sorted(gone_s)))
            if gone_a:
                conds.append(resp_t.c.authority_id.in_(sorted(gone_a)))
            for key, rows in _resp_rows(conn, resp_t.c.owner_ars == region, or_(*conds)).items():
                removed["zustaendigkeit"].setdefault(key, rows)
                cur_resp.setdefault(key, rows)
        if gone_s:
            for chunk in _chunks(sorted(gone_s)):
                for r in conn.execute(
                    select(online_t).where(online_t.c.service_id.in_(chunk), online_t.c.owner_ars == region)
                ).mappings():
                    removed["onlinedienst"].setdefault(r["id"], dict(r))

    # -- references of what is written: they must exist once this change set is applied
    ref_ids: dict[str, set[str]] = {"leistung": set(), "organisationseinheit": set()}
    for kind in ("zustaendigkeit", "onlinedienst"):
        for obj in cs.writes[kind].values():
            for ref_kind, ident, _f in obj.refs():
                if ident not in cs.writes[ref_kind]:
                    ref_ids[ref_kind].add(ident)
    ref_owner = {k: _owners(conn, tables[k], ids) for k, ids in ref_ids.items()}
    for kind in ("zustaendigkeit", "onlinedienst"):
        for obj in cs.writes[kind].values():
            if obj.key in bad[kind]:
                continue
            for ref_kind, ident, fieldname in obj.refs():
                if ident in bad[ref_kind]:
                    reject(
                        obj, fieldname, f"{ref_kind} {ident} of this change set is invalid (see its error)"
                    )
                    break
                if ident in cs.writes[ref_kind]:
                    owner = region
                elif ident in removed[ref_kind]:
                    reject(obj, fieldname, f"{ref_kind} {ident} is removed by this change set")
                    break
                elif ident in ref_owner[ref_kind]:
                    owner = ref_owner[ref_kind][ident]
                else:
                    reject(obj, fieldname, f"there is no {ref_kind} {ident}")
                    break
                if kind == "onlinedienst" and owner != region:
                    reject(
                        obj,
                        fieldname,
                        f"leistung {ident} belongs to region {owner}; an onlinedienst can "
                        "only be added to a leistung of the same catalogue",
                    )
                    break

    # -- equal specificity, different offices: the same area of the same Leistung (or level) and role
    #    already goes to another office through another region's catalogue
    conflicts = _conflicts(conn, region, cs, bad, cur_resp)
    if conflicts and not partial:
        raise ZustaendigkeitConflict(
            f"{len(conflicts)} zustaendigkeit(en) conflict with another region's for the same area; "
            "nothing was changed",
            conflicts,
        )
    for e in conflicts:
        errors.append(e)
        bad["zustaendigkeit"].add(e.object.rsplit(" ", 1)[-1])

    if errors and not partial:
        raise PayloadError(f"{len(errors)} error(s) in the change set; nothing was changed", errors)

    # -- the diff
    result = Plan(region=region, mode=cs.mode, base_version=base, removed=removed, errors=errors)
    if cs.mode == "snapshot":
        result.owned = {k: len(cur[k]) for k in cur} | {"zustaendigkeit": len(cur_resp)}
    for kind in ("leistung", "organisationseinheit", "onlinedienst"):
        for key, obj in cs.writes[kind].items():
            if key in bad[kind]:
                continue
            old = cur[kind].get(key)
            if old is None:
                result.added[kind].append(obj)
            elif kind == "onlinedienst" and old["service_id"] != obj.row["service_id"]:
                # Keeps the change log simple: an online service's leistung is its identity's part.
                errors.append(
                    ObjectError(
                        obj.label,
                        "leistung_id",
                        "an onlinedienst cannot move to another leistung; delete it and add a new one",
                    )
                )
                if not partial:
                    raise PayloadError(
                        f"{len(errors)} error(s) in the change set; nothing was changed", errors
                    )
            else:
                fields = _differences(kind, old, obj.row)
                if fields:
                    result.changed[kind].append((obj, fields))
    for key, obj in cs.writes["zustaendigkeit"].items():
        if key not in bad["zustaendigkeit"] and key not in cur_resp:
            result.added["zustaendigkeit"].append(obj)
    return result


def check_deletions(p: Plan, max_share: float = MAX_DELETE_SHARE, *, force: bool = False) -> None:
    """Refuse a snapshot that would delete more than ``max_share`` of what its region owns.

    Raises :class:`DeletionRefused` naming what would go (counts per kind and the ids), unless ``force``.
    Only snapshots (``PUT …/snapshot``, ``catalog import --replace``) are checked: they delete by leaving
    out, which is how an incomplete export empties a catalogue; a change set names each delete.
    """
    if force or p.mode != "snapshot" or not p.owned:
        return
    owned = sum(p.owned.values())
    gone = {k: sorted(p.removed[k]) for k in KINDS if p.removed[k]}
    n = sum(len(v) for v in gone.values())
    if not owned or n / owned <= max_share:
        return
    counts = ", ".join(f"{len(v)} {k}" for k, v in gone.items())
    shown = "; ".join(f"{k}: {', '.join(v[:5])}{' …' if len(v) > 5 else ''}" for k, v in gone.items())
    errors = [
        ObjectError(f"{k} id={key}" if k != "zustaendigkeit" else f"{k} {key}", "", "would be deleted")
        for k, v in gone.items()
        for key in v[:100]
    ]
    raise DeletionRefused(
        f"this snapshot would delete {n} of the {owned} objects of region {p.region} ({n / owned:.0%}, "
        f"more than the allowed {max_share:.0%}): {counts} ({shown}); nothing was changed. If the export is "
        "complete and these are meant to go, send it again with force (API: ?force=true, "
        "CLI: catalog import --replace --force)",
        errors,
        gone,
    )


def _conflicts(
    conn: Connection, region: str, cs: ChangeSet, bad: dict[str, set[str]], cur_resp: dict[str, Any]
) -> list[ObjectError]:
    """Written zustaendigkeiten whose (Leistung or level, area, role) another region gives another office.

    The most specific area wins when a place is resolved; two offices for the *same* area cannot be told
    apart, so the second one is refused. Services of one Leistung (one LeiKa key) count as one. Several
    offices of one catalogue for one area are that catalogue's locations (a DLDB service is done at
    several Bürgerbüros) and not a conflict.
    """
    writes = [
        o for o in cs.writes["zustaendigkeit"].values()
        if o.key not in bad["zustaendigkeit"] and o.key not in cur_resp
        and (o.row.get("role") or DEFAULT_ROLE) == DEFAULT_ROLE
    ]
    if not writes:
        return []
    areas = sorted({o.row["region_ars"] for o in writes})
    others: list[dict[str, Any]] = []
    for chunk in _chunks(areas):
        others += [
            dict(r)
            for r in conn.execute(
                select(*_RESP_COLS).where(
                    resp_t.c.region_ars.in_(chunk), resp_t.c.owner_ars != region, resp_t.c.role == DEFAULT_ROLE
                )
            ).mappings()
        ]
    if not others:
        return []
    sids = {r["service_id"] for r in [*others, *(o.row for o in writes)] if r["service_id"]}
    leika: dict[str, str | None] = {}
    for chunk in _chunks(sorted(sids)):
        leika.update(conn.execute(select(service_t.c.id, service_t.c.leika).where(service_t.c.id.in_(chunk))).all())
    for o in cs.writes["leistung"].values():
        leika[o.key] = o.row.get("leika")

    def head(r: dict[str, Any]) -> str:
        sid = r["service_id"]
        if not sid:
            return f"ebene={r['level']}"
        return f"leika:{leika[sid]}" if leika.get(sid) else f"id:{sid}"

    taken: dict[tuple[str, str], dict[str, Any]] = {}
    for r in others:
        taken.setdefault((head(r), r["region_ars"]), r)
    out = []
    for o in writes:
        r = taken.get((head(o.row), o.row["region_ars"]))
        if r is None or r["authority_id"] == o.row["authority_id"]:
            continue
        what = f"level {o.row['level']}" if not o.row["service_id"] else (
            f"Leistung {leika.get(o.row['service_id'])}" if leika.get(o.row["service_id"]) else
            f"leistung {o.row['service_id']}"
        )
        out.append(
            ObjectError(
                o.label,
                "organisationseinheit_id",
                f"area {o.row['region_ars']} already goes to office {r['authority_id']} for {what} through "
                f"the catalogue of region {r['owner_ars']} (zustaendigkeit "
                f"{_key_of('zustaendigkeit', r)}); the same area with different offices cannot be routed: "
                "register a more specific area, or have one of them removed",
            )
        )
    return out


# ============================================================================ writing


def _insert_many(
    conn: Connection, table, rows: list[dict[str, Any]], progress: Callable[[int], None] | None
) -> None:
    for chunk in _chunks(rows, 2_000):
        conn.execute(insert(table), list(chunk))
        if progress:
            progress(len(chunk))


def _update_many(
    conn: Connection,
    table,
    rows: list[dict[str, Any]],
    columns: Iterable[str],
    progress: Callable[[int], None] | None,
) -> None:
    if not rows:
        return
    columns = list(columns)
    stmt = (
        update(table).where(table.c.id == bindparam("b_id")).values({c: bindparam(f"b_{c}") for c in columns})
    )
    for chunk in _chunks(rows, 2_000):
        conn.execute(stmt, [{f"b_{k}": v for k, v in r.items() if k == "id" or k in columns} for r in chunk])
        if progress:
            progress(len(chunk))


def _delete_ids(conn: Connection, column, ids: Iterable[Any]) -> None:
    for chunk in _chunks(sorted(ids)):
        conn.execute(sql_delete(column.table).where(column.in_(chunk)))


def execute(
    engine: Engine,
    p: Plan,
    *,
    actor: str,
    partial: bool = False,
    progress: Callable[[int], None] | None = None,
    audit: AuditLog | None = None,
) -> int:
    """Write ``p`` in one transaction and return the region's new version.

    ``audit``, if given, is told about the change in the same transaction (the hub passes its
    append-only audit log, :func:`hub.queue.cases.catalog_audit`).

    The first statement inserts the version row: if another writer committed a version since ``p`` was
    planned, it fails and :class:`VersionConflict` is raised with nothing written. A foreign key that
    breaks because another region removed a referenced object meanwhile gives :class:`ConcurrentChange`.
    """
    region, version, now = p.region, p.base_version + 1, utcnow()
    summary: dict[str, Any] = {"mode": p.mode, "partial": partial, "rejected": len(p.errors), **p.summary()}
    with engine.begin() as conn:
        try:
            conn.execute(
                insert(version_t).values(
                    region_ars=region, version=version, created_at=now, actor=actor[:200], summary=summary
                )
            )
        except IntegrityError:
            raise VersionConflict(
                f"the catalogue of region {region} changed while this change set was checked; read it again",
                current=version,
            ) from None
        try:
            _write(conn, p, now, progress)
        except IntegrityError as exc:
            raise ConcurrentChange(
                "an object this change set refers to was changed by another region at the same time; "
                f"nothing was changed, try again ({type(exc.orig).__name__})"
            ) from None
        log_rows = [
            {
                "region_ars": region,
                "version": version,
                "kind": k,
                "object_id": o.key,
                "op": "upsert",
                "ref": o.row["service_id"] if k == "onlinedienst" else None,
            }
            for k in KINDS
            for o in (*p.added[k], *(o for o, _f in p.changed[k]))
        ] + [
            {
                "region_ars": region,
                "version": version,
                "kind": k,
                "object_id": key,
                "op": "delete",
                "ref": row["service_id"] if k == "onlinedienst" else None,
            }
            for k in KINDS
            for key, row in p.removed[k].items()
        ]
        _insert_many(conn, change_t, log_rows, None)
        counts = ", ".join(
            f"{k} +{s['added']} ~{s['changed']} -{s['removed']}"
            for k, s in p.summary().items()
            if any(s.values())
        )
        if audit is not None:
            audit(conn, actor=actor[:200], action=f"catalog_{p.mode}",
                  reason=f"region {region} version {version}: {counts}", now=now)
    return version


def _write(conn: Connection, p: Plan, now, progress: Callable[[int], None] | None) -> None:
    region = p.region
    # Deletes first, dependants before what they name (foreign keys).
    resp_ids = [r["id"] for rows in p.removed["zustaendigkeit"].values() for r in rows]
    _delete_ids(conn, resp_t.c.id, resp_ids)
    _delete_ids(conn, online_t.c.id, p.removed["onlinedienst"])
    _delete_ids(conn, service_t.c.id, p.removed["leistung"])
    _delete_ids(conn, authority_t.c.id, p.removed["organisationseinheit"])
    if progress:
        progress(sum(len(v) for v in p.removed.values()))

    svc_new = [
        {**o.row, "owner_ars": region, "updated_at": now, "online_url": None} for o in p.added["leistung"]
    ]
    svc_changed = [{**o.row, "updated_at": now} for o, _f in p.changed["leistung"]]
    _insert_many(conn, service_t, svc_new, progress)
    _update_many(conn, service_t, svc_changed, [*SERVICE_FIELDS, "updated_at"], progress)
    _insert_many(
        conn, authority_t, [{**o.row, "owner_ars": region} for o in p.added["organisationseinheit"]], progress
    )
    _update_many(
        conn, authority_t, [o.row for o, _f in p.changed["organisationseinheit"]], AUTHORITY_FIELDS, progress
    )
    _insert_many(conn, resp_t, [{**o.row, "owner_ars": region} for o in p.added["zustaendigkeit"]], progress)
    _insert_many(conn, online_t, [{**o.row, "owner_ars": region} for o in p.added["onlinedienst"]], progress)
    _update_many(conn, online_t, [o.row for o, _f in p.changed["onlinedienst"]], ONLINE_FIELDS, progress)

    # A service's online_url is its first online service's url (by id).
    affected = {o.row["service_id"] for o in p.added["onlinedienst"]}
    affected |= {o.row["service_id"] for o, _f in p.changed["onlinedienst"]}
    affected |= {r["service_id"] for r in p.removed["onlinedienst"].values()}
    affected -= set(p.removed["leistung"])
    if affected:
        first: dict[str, str] = {}
        for chunk in _chunks(sorted(affected)):
            for sid, url in conn.execute(
                select(online_t.c.service_id, online_t.c.url)
                .where(online_t.c.service_id.in_(chunk))
                .order_by(online_t.c.id)
            ):
                first.setdefault(sid, url)
        _update_many(
            conn,
            service_t,
            [{"id": s, "online_url": first.get(s)} for s in sorted(affected)],
            ["online_url"],
            None,
        )
    p.online_affected = affected


# ============================================================================ the knowledge base


@dataclass
class KbUpdate:
    """What an applied change set changes in the in-memory knowledge base."""

    services: list[Service] = field(default_factory=list)
    removed_services: list[str] = field(default_factory=list)
    authorities: list[Authority] = field(default_factory=list)
    removed_authorities: list[str] = field(default_factory=list)
    # (a row naming the key to forget, with no office: all its offices; the rows that hold the key now)
    responsibilities: list[tuple[ResponsibilityRow, tuple[ResponsibilityRow, ...]]] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.services)
            + len(self.removed_services)
            + len(self.authorities)
            + len(self.removed_authorities)
            + len(self.responsibilities)
        )

    def steps(self, kb: Any, every: int = 256) -> Iterator[int]:
        """Apply the update to ``kb``, yielding after every ``every`` operations (an event loop breathes).

        Services and offices come first, responsibilities last, so a lookup in between never names an
        office the knowledge base does not know yet.
        """
        done = 0
        ops: list[Callable[[], None]] = []
        ops += [lambda a=a: kb.apply_authority(a) for a in self.authorities]
        ops += [lambda s=s: kb.apply_service(s) for s in self.services]
        ops += [lambda s=s: kb.remove_service(s) for s in self.removed_services]
        for forget, holders in self.responsibilities:
            ops.append(lambda f=forget, h=holders: _replace_key(kb, f, h))
        ops += [lambda a=a: kb.remove_authority(a) for a in self.removed_authorities]
        for op in ops:
            op()
            done += 1
            if done % every == 0:
                yield done
        yield done

    def apply(self, kb: Any) -> None:
        """Apply the whole update at once."""
        for _ in self.steps(kb, every=1 << 30):
            pass


def kb_update(engine: Engine, p: Plan) -> KbUpdate:
    """Read back what ``p`` wrote (committed) and say how the knowledge base follows."""
    upd = KbUpdate()
    sids = {o.key for o in p.added["leistung"]} | {o.key for o, _f in p.changed["leistung"]}
    sids |= p.online_affected
    aids = {o.key for o in p.added["organisationseinheit"]} | {
        o.key for o, _f in p.changed["organisationseinheit"]
    }
    upd.removed_services = sorted(p.removed["leistung"])
    upd.removed_authorities = sorted(p.removed["organisationseinheit"])
    keys: dict[str, tuple[str | None, str | None, str, str]] = {}  # index key → (service, level, area, role)
    for o in p.added["zustaendigkeit"]:
        r = o.row
        keys[_index_key(r)] = (r["service_id"], r["level"], r["region_ars"], r.get("role") or DEFAULT_ROLE)
    for rows in p.removed["zustaendigkeit"].values():
        for r in rows:
            keys[_index_key(r)] = (r["service_id"], r["level"], r["region_ars"], r.get("role") or DEFAULT_ROLE)
    upd.services, upd.authorities = _orm_rows(engine, sids, aids)
    with engine.connect() as conn:
        upd.responsibilities = _responsibility_updates(conn, keys)
    return upd


def _orm_rows(
    engine: Engine, sids: Iterable[str], aids: Iterable[str]
) -> tuple[list[Service], list[Authority]]:
    """Services and authorities as the ORM loads them (as KnowledgeBase.load does; faster than validating)."""
    out: tuple[list[Service], list[Authority]] = ([], [])
    with Session(engine, expire_on_commit=False) as session:
        for model, ids, target in ((Service, sids, out[0]), (Authority, aids, out[1])):
            for chunk in _chunks(sorted(set(ids))):
                target.extend(session.execute(select(model).where(model.id.in_(chunk))).scalars())
        session.expunge_all()
    return out


def parse_zustaendigkeit_key(key: str) -> dict[str, Any]:
    """The row fields a :func:`zustaendigkeit_key` stands for."""
    head, _, rest = key.partition("@")
    area, _, authority = rest.partition(">")
    authority, _, role = authority.partition("#")
    role = role or DEFAULT_ROLE
    if head.startswith("ebene="):
        return {"service_id": None, "level": head[6:], "region_ars": area, "authority_id": authority, "role": role}
    return {"service_id": head, "level": None, "region_ars": area, "authority_id": authority, "role": role}


def kb_update_from_log(engine: Engine, versions: Iterable[tuple[str, int]]) -> KbUpdate:
    """The knowledge-base update for versions another process wrote, read from the change log.

    Each touched object is read in its current state (gone: removed), so applying the result more than
    once, or after a newer version, is harmless.
    """
    versions = sorted(set(versions))
    sids: set[str] = set()
    aids: set[str] = set()
    keys: dict[str, tuple[str | None, str | None, str, str]] = {}
    with engine.connect() as conn:
        by_region: dict[str, list[int]] = {}
        for region, version in versions:
            by_region.setdefault(region, []).append(version)
        for region, numbers in by_region.items():
            for chunk in _chunks(numbers):
                for kind, object_id, ref in conn.execute(
                    select(change_t.c.kind, change_t.c.object_id, change_t.c.ref).where(
                        change_t.c.region_ars == region, change_t.c.version.in_(chunk)
                    )
                ):
                    if kind == "leistung":
                        sids.add(object_id)
                    elif kind == "organisationseinheit":
                        aids.add(object_id)
                    elif kind == "onlinedienst" and ref:
                        sids.add(ref)
                    elif kind == "zustaendigkeit":
                        r = parse_zustaendigkeit_key(object_id)
                        keys[_index_key(r)] = (r["service_id"], r["level"], r["region_ars"], r.get("role") or DEFAULT_ROLE)
        upd = KbUpdate()
        upd.responsibilities = _responsibility_updates(conn, keys)
    upd.services, upd.authorities = _orm_rows(engine, sids, aids)
    upd.removed_services = sorted(sids - {s.id for s in upd.services})
    upd.removed_authorities = sorted(aids - {a.id for a in upd.authorities})
    return upd


def _replace_key(kb: Any, forget: ResponsibilityRow, holders: tuple[ResponsibilityRow, ...]) -> None:
    # One operation, so a lookup between two steps never sees the key without its offices.
    kb.remove_responsibility(forget)
    for row in holders:
        kb.apply_responsibility(row)


def _responsibility_updates(
    conn: Connection, keys: dict[str, tuple[str | None, str | None, str, str]]
) -> list[tuple[ResponsibilityRow, tuple[ResponsibilityRow, ...]]]:
    # The index holds the offices of each (service, area, role) and (area, level, role) key: several are
    # one catalogue's locations. Forget each touched key with all its offices and put back the rows that
    # hold it now.
    areas = sorted({area for _s, _l, area, _r in keys.values()})
    holders: dict[str, list[ResponsibilityRow]] = {}
    cols = (resp_t.c.service_id, resp_t.c.region_ars, resp_t.c.level, resp_t.c.authority_id, resp_t.c.role)
    for chunk in _chunks(areas):
        # Plain tuples (building ORM rows is slow).
        for sid, area, level, aid, role in conn.execute(select(*cols).where(resp_t.c.region_ars.in_(chunk))):
            row = ResponsibilityRow(sid, area, level, aid, role or DEFAULT_ROLE)
            k = _index_key({"service_id": sid, "level": level, "region_ars": area, "role": row.role})
            if k in keys:
                holders.setdefault(k, []).append(row)
    return [
        (ResponsibilityRow(sid, area, level, "", role), tuple(holders.get(k, ())))
        for k, (sid, level, area, role) in keys.items()
    ]


@dataclass(frozen=True, slots=True)
class ResponsibilityRow:
    """What the responsibility index reads of a :class:`Responsibility` (building ORM rows is slow)."""

    service_id: str | None
    region_ars: str
    level: str | None
    authority_id: str
    role: str = DEFAULT_ROLE


def _index_key(r: Any) -> str:
    head = f"s:{r['service_id']}@{r['region_ars']}" if r["service_id"] else f"l:{r['level']}@{r['region_ars']}"
    role = r.get("role") if hasattr(r, "get") else None
    return head if not role or role == DEFAULT_ROLE else f"{head}#{role}"


# ============================================================================ one call


@dataclass
class ApplyResult:
    """The outcome of :func:`apply_change_set`: the plan, the version, the knowledge-base update."""

    region: str
    version: int  # the region's version after the call (unchanged by a dry run or an empty diff)
    previous_version: int
    applied: bool
    dry_run: bool
    plan: Plan
    kb: KbUpdate = field(default_factory=KbUpdate)

    def to_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "version": self.version,
            "previous_version": self.previous_version,
            "applied": self.applied,
            "dry_run": self.dry_run,
            "summary": self.plan.summary(),
            "diff": self.plan.diff(),
            "errors": [e.to_json() for e in self.plan.errors],
        }


def apply_change_set(
    engine: Engine,
    region: str,
    cs: ChangeSet,
    *,
    actor: str,
    scopes: Sequence[str] | None = None,
    partial: bool = False,
    dry_run: bool = False,
    expected_version: int | Collection[int] | None = None,
    progress: Callable[[int], None] | None = None,
    audit: AuditLog | None = None,
    max_delete_share: float = MAX_DELETE_SHARE,
    force: bool = False,
) -> ApplyResult:
    """Plan and (unless ``dry_run``) write ``cs`` for ``region``; see :func:`plan` and :func:`execute`.

    A snapshot that would delete more than ``max_delete_share`` of the region's objects raises
    :class:`DeletionRefused` unless ``force`` (:func:`check_deletions`); a dry run shows the diff either way.

    Without ``expected_version`` a writer that lost a race plans again on the new state (up to eight
    times); with it, the race is the caller's :class:`VersionConflict`. An empty diff writes nothing and
    makes no version. The caller applies ``result.kb`` to its knowledge base.
    """
    if region is None or not re.fullmatch(r"\d{2}|\d{5}|\d{9}|\d{12}", region):
        raise UnknownRegion(f"not an ARS of 2, 5, 9 or 12 digits: {str(region)[:20]!r}")
    attempts = 8
    for attempt in range(attempts):
        if attempt:
            time.sleep(random.uniform(0, 0.02 * attempt))  # let the winner finish before planning again
        with engine.connect() as conn:
            p = plan(conn, region, cs, scopes=scopes, partial=partial, expected_version=expected_version)
        if dry_run or p.empty:
            return ApplyResult(region, p.base_version, p.base_version, False, dry_run, p)
        check_deletions(p, max_delete_share, force=force)
        try:
            version = execute(engine, p, actor=actor, partial=partial, progress=progress, audit=audit)
        except VersionConflict:
            if expected_version is not None or attempt == attempts - 1:
                raise
            continue
        return ApplyResult(region, version, p.base_version, True, False, p, kb_update(engine, p))
    raise AssertionError("unreachable")  # pragma: no cover


# ============================================================================ reading a catalogue


def export_region(conn: Connection, region: str) -> dict[str, Any]:
    """Everything ``region`` owns, in the snapshot shape (PUT it back and nothing changes)."""
    out: dict[str, Any] = {}
    out["leistung"] = [
        leistung_json(r)
        for r in conn.execute(
            select(service_t).where(service_t.c.owner_ars == region).order_by(service_t.c.id)
        ).mappings()
    ]
    out["organisationseinheit"] = [
        organisationseinheit_json(r)
        for r in conn.execute(
            select(authority_t).where(authority_t.c.owner_ars == region).order_by(authority_t.c.id)
        ).mappings()
    ]
    resp = _resp_rows(conn, resp_t.c.owner_ars == region)
    out["zustaendigkeit"] = [zustaendigkeit_json(resp[k][0]) for k in sorted(resp)]
    out["onlinedienst"] = [
        onlinedienst_json(r)
        for r in conn.execute(
            select(online_t).where(online_t.c.owner_ars == region).order_by(online_t.c.id)
        ).mappings()
    ]
    return out


def changes_since(conn: Connection, region: str, since: int) -> list[dict[str, Any]]:
    """The objects ``region`` changed after version ``since``, each once in its latest state.

    Writes come first (leistung, organisationseinheit, zustaendigkeit, onlinedienst, so what an object
    names comes before it), then deletes in the reverse order; a consumer applies them in order.
    """
    last: dict[tuple[str, str], tuple[int, str]] = {}
    for kind, object_id, op, version in conn.execute(
        select(change_t.c.kind, change_t.c.object_id, change_t.c.op, change_t.c.version)
        .where(change_t.c.region_ars == region, change_t.c.version > since)
        .order_by(change_t.c.version, change_t.c.id)
    ):
        last[(kind, object_id)] = (version, op)
    upserts: dict[str, list[str]] = {k: [] for k in KINDS}
    out_deletes: list[dict[str, Any]] = []
    for (kind, object_id), (version, op) in last.items():
        if op == "upsert":
            upserts[kind].append(object_id)
        else:
            out_deletes.append({"version": version, "kind": kind, "op": "delete", "id": object_id})
    out: list[dict[str, Any]] = []
    tables = {
        "leistung": (service_t, leistung_json),
        "organisationseinheit": (authority_t, organisationseinheit_json),
        "onlinedienst": (online_t, onlinedienst_json),
    }
    for kind in KINDS:
        ids = upserts[kind]
        if not ids:
            continue
        if kind == "zustaendigkeit":
            resp = _resp_rows(conn, resp_t.c.owner_ars == region)
            current = {k: zustaendigkeit_json(rows[0]) for k, rows in resp.items()}
        else:
            table, to_json = tables[kind]
            current = {i: to_json(r) for i, r in _rows_by_id(conn, table, ids, region).items()}
        for object_id in sorted(ids):
            if object_id in current:
                version = last[(kind, object_id)][0]
                out.append(
                    {
                        "version": version,
                        "kind": kind,
                        "op": "upsert",
                        "id": object_id,
                        "object": current[object_id],
                    }
                )
    order = {k: i for i, k in enumerate(reversed(KINDS))}
    out_deletes.sort(key=lambda d: (order[d["kind"]], d["id"]))
    return out + out_deletes
