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
* :class:`TokenScope` – the region a bearer token (``hub_api_token``, role ``catalog``) may write.

Importing this module registers the tables (and the queue tables of :mod:`hub.cases`, which the
scopes and the audit log refer to) with ``SQLModel.metadata``, so ``hub.db.create_schema`` creates
them once this module is imported there.
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
    delete,
    insert,
    select,
)
from sqlmodel import Field, SQLModel

import knowledge.models  # noqa: F401  (the service table the online services refer to)
from hub.cases import ApiToken, UtcDateTime, token_t, utcnow

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


class TokenScope(SQLModel, table=True):
    """The region (ARS prefix) a catalogue token may write; objects inside it, and nothing else."""

    __tablename__ = "catalog_token_scope"

    token_id: int = Field(
        sa_column=Column(Integer, ForeignKey("hub_api_token.id", ondelete="CASCADE"), primary_key=True)
    )
    region_ars: str = Field(sa_column=Column(String(12), primary_key=True))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


version_t = CatalogVersion.__table__
change_t = CatalogChange.__table__
online_t = CatalogOnlineService.__table__
scope_t = TokenScope.__table__
SYNC_TABLES = (version_t, change_t, online_t, scope_t)


def check_ars(value: str) -> str:
    """``value`` if it is an ARS of 2, 5, 9 or 12 digits, else ``ValueError``."""
    if not isinstance(value, str) or not ARS_RE.fullmatch(value):
        raise ValueError(f"not an ARS of 2, 5, 9 or 12 digits: {value!r}")
    return value


def grant_region(session: Any, token_id: int, region_ars: str) -> bool:
    """Let token ``token_id`` write the catalogue of ``region_ars`` (and every region inside it).

    For ``citizen-hub token add NAME --role catalog --region ARS``. Idempotent: returns False when the
    scope was there already. ``ValueError`` for a malformed ARS, an unknown region (when regions are
    loaded) or an unknown token. Does not commit: the caller's transaction decides.
    """
    from knowledge.models import Region

    check_ars(region_ars)
    if session.execute(select(token_t.c.id).where(token_t.c.id == token_id)).first() is None:
        raise ValueError(f"no API token with id {token_id}")
    region_t = Region.__table__
    if session.execute(select(region_t.c.ars).limit(1)).first() is not None:
        if session.execute(select(region_t.c.ars).where(region_t.c.ars == region_ars)).first() is None:
            raise ValueError(f"no region with ARS {region_ars}")
    have = session.execute(
        select(scope_t.c.token_id).where(scope_t.c.token_id == token_id, scope_t.c.region_ars == region_ars)
    ).first()
    if have is not None:
        return False
    session.execute(insert(scope_t).values(token_id=token_id, region_ars=region_ars, created_at=utcnow()))
    return True


def revoke_region(session: Any, token_id: int, region_ars: str) -> bool:
    """Take a region away from a token; returns whether it had it. Does not commit."""
    result = session.execute(
        delete(scope_t).where(scope_t.c.token_id == token_id, scope_t.c.region_ars == region_ars)
    )
    return bool(result.rowcount)


def token_regions(conn: Any, token_id: int) -> list[str]:
    """The regions a token may write, sorted."""
    rows = conn.execute(select(scope_t.c.region_ars).where(scope_t.c.token_id == token_id)).all()
    return sorted(r[0] for r in rows)


__all__ = [
    "ApiToken",
    "CatalogChange",
    "CatalogOnlineService",
    "CatalogVersion",
    "SYNC_TABLES",
    "TokenScope",
    "change_t",
    "check_ars",
    "grant_region",
    "online_t",
    "revoke_region",
    "scope_t",
    "token_regions",
    "version_t",
]
