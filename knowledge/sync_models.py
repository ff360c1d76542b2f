"""Tables of the catalogue sync: versions, the change log, online services and token scopes.

* :class:`CatalogVersion` – one row per applied change set of a region: the region's version counter
  (1, 2, 3, … per region; the ETag of ``/api/catalog/{ars}``), who applied it and a summary.
  ``UNIQUE(region_ars, version)`` is the compare-and-set of concurrent writers: the version row is the
  first row a write inserts, so of two writers that read the same version only one can commit.
* :class:`CatalogChange` – which objects each version added, changed or removed (kind, id, op). It
  holds no object data: ``GET /api/catalog/{ars}?since=V`` serves the objects' current state from the
  live tables, which is all a pull-style consumer needs and keeps a 60,000-object snapshot cheap.
* :class:`CatalogOnlineService` – XZuFi's *Onlinedienst*: a link that does a service online. The
  service's ``online_url`` is derived from it (the first by id).

Importing this module registers the tables with ``SQLModel.metadata``. The regions a catalogue token
may write (its scopes) belong to the hub's tokens (:mod:`hub.http.tokens`): the knowledge layer is told
which regions a writer may touch (``plan(scopes=...)``) and knows nothing of tokens.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

import knowledge.models  # noqa: F401  (the service table the online services refer to)
from knowledge.columns import UtcDateTime
from knowledge.regions import check_ars as _check_ars

ARS_RE = re.compile(r"\d{2}|\d{5}|\d{9}|\d{12}")


class CatalogVersion(SQLModel, table=True):
    """One applied change set of one region."""

    __tablename__ = "catalog_version"
    __table_args__ = (UniqueConstraint("region_ars", "version", name="uq_catalog_version_region_version"),)

    id: int | None = Field(default=None, primary_key=True)
    region_ars: str = Field(sa_column=Column(String(12), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    actor: str = Field(sa_column=Column(String(200), nullable=False))
    # {"mode": "snapshot"|"changes", "partial": bool, "rejected": n, "leistung": {"added": n, ...}, ...}
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class CatalogChange(SQLModel, table=True):
    """One object touched by one version: ``op`` is ``upsert`` or ``delete``."""

    __tablename__ = "catalog_change"
    __table_args__ = (Index("ix_catalog_change_region_version", "region_ars", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    region_ars: str = Field(sa_column=Column(String(12), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    object_id: str = Field(sa_column=Column(String(400), nullable=False))
    op: str = Field(sa_column=Column(String(8), nullable=False))
    # For an onlinedienst the service it belongs (belonged) to: its online_url changed with it.
    ref: str | None = Field(default=None, sa_column=Column(String(100)))


class CatalogOnlineService(SQLModel, table=True):
    """An online service (XZuFi Onlinedienst) of a service, owned by the region that wrote it."""

    __tablename__ = "catalog_online_service"

    id: str = Field(sa_column=Column(String(100), primary_key=True))
    service_id: str = Field(sa_column=Column(String, ForeignKey("service.id"), nullable=False, index=True))
    name: str = Field(default="", sa_column=Column(String(300), nullable=False, default=""))
    url: str = Field(sa_column=Column(String(2000), nullable=False))
    owner_ars: str = Field(sa_column=Column(String(12), nullable=False, index=True))


version_t = CatalogVersion.__table__
change_t = CatalogChange.__table__
online_t = CatalogOnlineService.__table__
SYNC_TABLES = (version_t, change_t, online_t)


# The one format check of an ARS (re-exported here for the sync's callers).
check_ars = _check_ars


__all__ = [
    "CatalogChange",
    "CatalogOnlineService",
    "CatalogVersion",
    "SYNC_TABLES",
    "change_t",
    "check_ars",
    "online_t",
    "version_t",
]
