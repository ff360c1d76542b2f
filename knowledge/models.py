"""Tables of the knowledge base: regions, postcodes, services, authorities, responsibilities.

Identifiers are strings chosen by whoever owns the object (``owner_ars``): the demo catalogue uses
``sh-…`` ids, an imported München catalogue ``muc-…``. That keeps ids stable across re-imports and
lets a catalogue sync address its own objects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

# The levels a service can be done at, from the most local to the widest.
LEVELS = ("gemeinde", "amt", "kreis", "land")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Region(SQLModel, table=True):
    """One administrative region of Germany (Destatis GV-ISys).

    ``ars`` is the Amtlicher Regionalschlüssel cut to the region's level: 2 digits for a Land,
    5 for a Kreis (land+rb+kreis), 9 for a Gemeindeverband (+vb), 12 for a Gemeinde.
    ``parent_ars`` skips the Regierungsbezirk: Gemeinde → Verband (if it belongs to a real one) → Kreis → Land.
    """

    ars: str = Field(primary_key=True, max_length=12)
    ags: str | None = Field(default=None, index=True, max_length=8)
    name: str = Field(index=True)
    level: str = Field(index=True)  # land | kreis | amt | gemeinde
    kind: str = ""  # Amt, Verbandsgemeinde, Landkreis, kreisfreie Stadt, Stadt, Gemeinde, ...
    parent_ars: str | None = Field(default=None, index=True, max_length=12)
    population: int | None = None
    postcode: str | None = None
    lat: float | None = None
    lon: float | None = None


class Postcode(SQLModel, table=True):
    """One postcode ↔ municipality pair (a postcode may cover several municipalities and vice versa)."""

    plz: str = Field(primary_key=True, max_length=5)
    ags: str = Field(primary_key=True, max_length=8, index=True)


class Service(SQLModel, table=True):
    """A citizen service (Leistung) as described in the knowledge base."""

    id: str = Field(primary_key=True)
    leika: str | None = Field(default=None, index=True, max_length=14)
    name: str
    synonyms: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    short_text: str = ""
    full_text: str = ""
    documents: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    fees: str = ""
    processing_time: str = ""
    online_url: str | None = None
    topic: str = ""
    life_situation: str = ""
    level: str = Field(default="gemeinde")  # responsibility mark: land | kreis | amt | gemeinde
    owner_ars: str = Field(default="", index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class Authority(SQLModel, table=True):
    """An office that does services: Kreisverwaltung, Amt, Stadtverwaltung, a Land agency."""

    id: str = Field(primary_key=True)
    name: str
    kind: str = ""
    region_ars: str = Field(index=True, max_length=12)
    street: str = ""
    postcode: str = ""
    city: str = ""
    phone: str = ""
    email: str = ""
    website: str = ""
    # {"mon": [["08:00", "12:00"], ["14:00", "18:00"]], ...}; days missing = closed
    opening_hours: dict[str, list[list[str]]] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    is_demo: bool = Field(default=False, description="Contact data made up for the demo, not real.")
    owner_ars: str = Field(default="", index=True)


class Responsibility(SQLModel, table=True):
    """Who does what where.

    With ``service_id`` NULL it registers an authority for a *level* in a region ("the Amt Leezen does
    the Amt-level services for its member municipalities"). With a ``service_id`` it is an override:
    that service in that region (and every region below it) goes to that authority, whatever the
    service's level mark says.
    """

    __table_args__ = (Index("ix_resp_lookup", "region_ars", "service_id", "level"),)

    id: int | None = Field(default=None, primary_key=True)
    service_id: str | None = Field(default=None, foreign_key="service.id", index=True)
    region_ars: str = Field(max_length=12)
    level: str | None = None
    authority_id: str = Field(foreign_key="authority.id", index=True)
    owner_ars: str = Field(default="", index=True)
    # XZuFi role: "zustaendig" (does it; routing follows these) or "ansprechpunkt" (a contact point).
    role: str = Field(default="zustaendig", sa_column_kwargs={"server_default": "zustaendig"})


class CatalogArea(SQLModel, table=True):
    """An area a catalogue lends its texts to, beyond its owner's region (issue 13).

    A description is valid in its catalogue's area: the owner's region (``Service.owner_ars``; ``""`` is
    the Bund, valid nationwide) and every ``area_ars`` of a row here with that ``owner_ars``. The demo's
    Land catalogue (owner ``01``) is lent to Kreis Soest this way (``knowledge/demo/areas.json``).
    """

    __tablename__ = "catalog_area"

    owner_ars: str = Field(primary_key=True, max_length=12)
    area_ars: str = Field(primary_key=True, max_length=12)


# -- an office's opening hours: whether it is open now, and how people read them ("Mo 08:00–12:00") --

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def open_now(hours: dict[str, list[list[str]]], now: datetime | None = None) -> bool | None:
    """Whether an office with these opening hours is open at ``now`` (Europe/Berlin); None if unknown."""
    if not hours:
        return None
    now = now or datetime.now(ZoneInfo("Europe/Berlin"))
    hhmm = now.strftime("%H:%M")
    return any(start <= hhmm < end for start, end in hours.get(WEEKDAYS[now.weekday()], []))


def format_hours(hours: dict[str, list[list[str]]]) -> str:
    names = {"mon": "Mo", "tue": "Di", "wed": "Mi", "thu": "Do", "fri": "Fr", "sat": "Sa", "sun": "So"}
    parts = []
    for day in WEEKDAYS:
        spans = hours.get(day)
        if spans:
            parts.append(f"{names[day]} " + ", ".join(f"{a}–{b}" for a, b in spans))
    return "; ".join(parts)
