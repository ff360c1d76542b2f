"""Load a catalogue of services, authorities and responsibilities from JSON files into the database.

A catalogue directory holds up to three files, each a JSON list of objects whose keys are the columns of
the table of the same name (see :mod:`knowledge.models`):

* ``services.json`` — :class:`~knowledge.models.Service` (``updated_at`` is managed here, not in the file),
* ``authorities.json`` — :class:`~knowledge.models.Authority`,
* ``responsibilities.json`` — :class:`~knowledge.models.Responsibility` without ``id``.

The demo catalogue in ``knowledge/demo`` (Kreis Segeberg and Kreis Soest) is one such directory.

Loading is an idempotent upsert, so running it twice changes nothing the second time:

* services and authorities are keyed by ``id``: new ones are inserted, changed ones updated
  (``Service.updated_at`` moves only when something really changed), unchanged ones are not touched.
  Rows that are not in the files stay: another catalogue's responsibilities may point at them.
* responsibilities have no natural id, so the file is the truth *per owner*: for every ``owner_ars``
  that occurs in ``responsibilities.json``, that owner's rows in the database are made equal to the
  file's (keyed by service and region, plus the level for level registrations): missing rows are
  inserted, rows with another authority updated, rows no longer in the file deleted. Other owners'
  rows are left alone.

Everything is validated before the first write. A bad file raises :class:`CatalogueError` naming the
file, the row and the field, and leaves the session as it was. The functions do not commit: the caller
owns the transaction (``hub.db.session_scope``). No table here refers to regions, so a catalogue can be
loaded before or without the region data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from sqlmodel import Session, SQLModel, select

from knowledge.models import LEVELS, Authority, CatalogArea, Responsibility, Service, utcnow
from knowledge.regions import ARS_FORMAT, check_ars

__all__ = ["DEMO_DIR", "CatalogueError", "load_catalogue_dir", "load_demo"]

DEMO_DIR = Path(__file__).resolve().parent / "demo"
FILES = ("services.json", "authorities.json", "responsibilities.json")
AREAS_FILE = "areas.json"  # optional: areas a catalogue lends its texts to
MAX_FILE_BYTES = 64 * 1024 * 1024
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# SQLite before 3.32 allows 999 bound parameters per statement; stay well below.
_CHUNK = 500

_LEIKA = re.compile(r"^\d{14}$")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class CatalogueError(ValueError):
    """A catalogue that cannot be loaded; the message names the file, the row and the reason."""


# --------------------------------------------------------------------------- validation


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)


def _check_ars(value: str) -> str:
    return check_ars(value)  # the one format check of an ARS


class ServiceRow(_Row):
    id: str
    leika: str | None = None
    name: str
    synonyms: list[str] = []
    short_text: str = ""
    full_text: str = ""
    documents: list[str] = []
    fees: str = ""
    processing_time: str = ""
    online_url: str | None = None
    topic: str = ""
    life_situation: str = ""
    level: str
    owner_ars: str = ""

    @field_validator("id", "name")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("leika")
    @classmethod
    def _leika(cls, value: str | None) -> str | None:
        if value is not None and not _LEIKA.match(value):
            raise ValueError(f"{value!r} is not a 14-digit LeiKa key (use null when there is none)")
        return value

    @field_validator("level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value not in LEVELS:
            raise ValueError(f"{value!r} is not one of {', '.join(LEVELS)}")
        return value


class AuthorityRow(_Row):
    id: str
    name: str
    kind: str = ""
    region_ars: str
    street: str = ""
    postcode: str = ""
    city: str = ""
    phone: str = ""
    email: str = ""
    website: str = ""
    opening_hours: dict[str, list[list[str]]] = {}
    is_demo: bool = False
    owner_ars: str = ""

    @field_validator("id", "name")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("region_ars")
    @classmethod
    def _region(cls, value: str) -> str:
        return _check_ars(value)

    @field_validator("opening_hours")
    @classmethod
    def _hours(cls, value: dict[str, list[list[str]]]) -> dict[str, list[list[str]]]:
        for day, spans in value.items():
            if day not in DAYS:
                raise ValueError(f"day {day!r} is not one of {', '.join(DAYS)}")
            for span in spans:
                if len(span) != 2 or not all(_TIME.match(t) for t in span) or span[0] >= span[1]:
                    raise ValueError(f'{day}: {span!r} is not a span ["HH:MM", "HH:MM"] with start < end')
        return value


class ResponsibilityRow(_Row):
    service_id: str | None = None
    region_ars: str
    level: str | None = None
    authority_id: str
    owner_ars: str = ""

    @field_validator("region_ars")
    @classmethod
    def _region(cls, value: str) -> str:
        return _check_ars(value)

    @model_validator(mode="after")
    def _level(self) -> ResponsibilityRow:
        if self.level is not None and self.level not in LEVELS:
            raise ValueError(f"level {self.level!r} is not one of {', '.join(LEVELS)}")
        if self.service_id is None and self.level is None:
            raise ValueError(
                "a registration without service_id needs a level (it registers an authority "
                "for that level in the region)"
            )
        return self

    def key(self) -> tuple[str | None, str, str | None]:
        """What makes a registration unique: an override is per service and region, whatever its level."""
        return (self.service_id, self.region_ars, None if self.service_id else self.level)


def _read(path: Path) -> list[Any]:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if size > MAX_FILE_BYTES:
        raise CatalogueError(
            f"{path}: {size} bytes is more than the {MAX_FILE_BYTES} a catalogue file may have"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise CatalogueError(
            f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    if not isinstance(data, list):
        raise CatalogueError(f"{path}: must be a JSON list of objects, not {type(data).__name__}")
    return data


def _parse(path: Path, model: type[_Row]) -> list[Any]:
    rows = []
    for i, item in enumerate(_read(path)):
        label = item.get("id") if isinstance(item, dict) else None
        where = f"{path.name} row {i + 1}" + (f" ({label})" if isinstance(label, str) else "")
        if not isinstance(item, dict):
            raise CatalogueError(f"{where}: must be an object, not {type(item).__name__}")
        try:
            rows.append(model.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}" for err in exc.errors()
            )
            raise CatalogueError(f"{where}: {problems}") from None
    return rows


def _unique(rows: Iterable[Any], key, what: str) -> None:
    seen: set[Any] = set()
    for row in rows:
        k = key(row)
        if k in seen:
            raise CatalogueError(f"{what}: {k!r} occurs twice")
        seen.add(k)


def _existing_ids(session: Session, model: type[SQLModel], ids: set[str]) -> set[str]:
    found: set[str] = set()
    ordered = sorted(ids)
    for i in range(0, len(ordered), _CHUNK):
        chunk = ordered[i : i + _CHUNK]
        found.update(session.exec(select(model.id).where(model.id.in_(chunk))))  # type: ignore[attr-defined]
    return found


# --------------------------------------------------------------------------- writing


def _upsert(session: Session, model: type[SQLModel], rows: list[_Row]) -> tuple[int, int]:
    """Insert new rows, update changed ones; return (inserted, updated)."""
    inserted = updated = 0
    ids = [row.id for row in rows]  # type: ignore[attr-defined]
    existing: dict[str, Any] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        for obj in session.exec(select(model).where(model.id.in_(chunk))):  # type: ignore[attr-defined]
            existing[obj.id] = obj
    for row in rows:
        values = row.model_dump()
        obj = existing.get(values["id"])
        if obj is None:
            session.add(model(**values))
            inserted += 1
            continue
        changed = False
        for name, value in values.items():
            if getattr(obj, name) != value:
                setattr(obj, name, value)
                changed = True
        if changed:
            if isinstance(obj, Service):
                obj.updated_at = utcnow()
            updated += 1
    return inserted, updated


def _sync_responsibilities(session: Session, rows: list[ResponsibilityRow]) -> tuple[int, int, int]:
    """Make each owner's registrations equal to the file's; return (inserted, updated, deleted)."""
    inserted = updated = deleted = 0
    owners = sorted({row.owner_ars for row in rows})
    current: dict[tuple[str, tuple[str | None, str, str | None]], Responsibility] = {}
    for obj in session.exec(select(Responsibility).where(Responsibility.owner_ars.in_(owners))):  # type: ignore[attr-defined]
        key = (obj.service_id, obj.region_ars, None if obj.service_id else obj.level)
        if (obj.owner_ars, key) in current:  # duplicates would make lookups depend on row order: keep one
            session.delete(obj)
            deleted += 1
            continue
        current[(obj.owner_ars, key)] = obj
    wanted = {(row.owner_ars, row.key()): row for row in rows}
    for k, obj in current.items():
        if k not in wanted:
            session.delete(obj)
            deleted += 1
    for k, row in wanted.items():
        obj = current.get(k)
        if obj is None:
            session.add(Responsibility(**row.model_dump()))
            inserted += 1
        elif obj.authority_id != row.authority_id or obj.level != row.level:
            obj.authority_id = row.authority_id
            obj.level = row.level
            updated += 1
    return inserted, updated, deleted


# --------------------------------------------------------------------------- public


def load_catalogue_dir(session: Session, path: str | Path) -> dict[str, int]:
    """Upsert the catalogue in directory ``path`` (see the module docstring); the caller commits.

    Returns the number of services, authorities and responsibilities in the files, and how many
    database rows were ``inserted``, ``updated`` and ``deleted`` (all 0 when nothing changed).
    Raises :class:`CatalogueError` for a missing directory, a bad file or a dangling reference, before
    anything is written.
    """
    root = Path(path)
    if not root.is_dir():
        raise CatalogueError(f"{root}: not a directory")
    present = [name for name in FILES if (root / name).is_file()]
    if not present:
        raise CatalogueError(f"{root}: none of {', '.join(FILES)} is there")

    services: list[ServiceRow] = _parse(root / FILES[0], ServiceRow) if FILES[0] in present else []
    authorities: list[AuthorityRow] = _parse(root / FILES[1], AuthorityRow) if FILES[1] in present else []
    resps: list[ResponsibilityRow] = _parse(root / FILES[2], ResponsibilityRow) if FILES[2] in present else []
    _unique(services, lambda r: r.id, f"{root / FILES[0]}: service id")
    _unique(authorities, lambda r: r.id, f"{root / FILES[1]}: authority id")
    _unique(resps, lambda r: (r.owner_ars, r.key()), f"{root / FILES[2]}: registration (owner, key)")

    # Every reference must resolve, to this catalogue or to rows already stored.
    for what, model, known, refs in (
        ("service", Service, {s.id for s in services}, {r.service_id for r in resps if r.service_id}),
        ("authority", Authority, {a.id for a in authorities}, {r.authority_id for r in resps}),
    ):
        missing = refs - known
        if missing:
            missing -= _existing_ids(session, model, missing)
        if missing:
            shown = ", ".join(sorted(missing)[:10]) + (" ..." if len(missing) > 10 else "")
            raise CatalogueError(f"{root / FILES[2]}: unknown {what} id(s): {shown}")

    with session.no_autoflush:
        s_ins, s_upd = _upsert(session, Service, services)
        a_ins, a_upd = _upsert(session, Authority, authorities)
    # Services and authorities must exist before responsibilities point at them (foreign keys).
    session.flush()
    r_ins, r_upd, r_del = _sync_responsibilities(session, resps) if resps else (0, 0, 0)
    areas = _load_areas(session, root / AREAS_FILE)
    session.flush()
    return {
        "services": len(services),
        "authorities": len(authorities),
        "responsibilities": len(resps),
        "inserted": s_ins + a_ins + r_ins,
        "updated": s_upd + a_upd + r_upd,
        "deleted": r_del,
        "areas": areas,
    }


def _load_areas(session: Session, path: Path) -> int:
    """``areas.json``: ``[{"owner_ars": ..., "area_ars": ...}]``, areas a catalogue lends its texts to
    (:class:`~knowledge.models.CatalogArea`). Rows are added, never removed; returns how many were new."""
    if not path.is_file():
        return 0
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"{path}: not readable JSON: {exc}") from None
    if not isinstance(rows, list):
        raise CatalogueError(f"{path}: expected a JSON list")
    new = 0
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or set(row) != {"owner_ars", "area_ars"}:
            raise CatalogueError(f"{path}: row {i}: expected exactly owner_ars and area_ars")
        owner, area = row["owner_ars"], row["area_ars"]
        if not isinstance(owner, str) or not isinstance(area, str) or not ARS_FORMAT.fullmatch(area):
            raise CatalogueError(f"{path}: row {i}: owner_ars and area_ars must be regional keys (ARS)")
        if owner and not ARS_FORMAT.fullmatch(owner):
            raise CatalogueError(f"{path}: row {i}: owner_ars {owner!r} is not a regional key (ARS)")
        if session.get(CatalogArea, (owner, area)) is None:
            session.add(CatalogArea(owner_ars=owner, area_ars=area))
            new += 1
    return new


def load_demo(session: Session) -> dict[str, int]:
    """Upsert the demo catalogue shipped in ``knowledge/demo`` (Kreis Segeberg, Kreis Soest)."""
    return load_catalogue_dir(session, DEMO_DIR)
