"""Shared helpers of the catalogue-sync tests.

Every test gets its own SQLite file with all of Germany's regions: one template is built per session
(loading the regions takes a few seconds) and copied per test. The region index, which never changes,
is built once and shared by the knowledge bases of all tests. A test module uses the fixtures by importing
them: ``from catalog_support import engine_fixture, region_index_fixture, regions_template_fixture``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

import knowledge.sync_models  # noqa: F401  (registers the sync tables before create_schema)
from hub.db import create_schema, make_engine, session_scope
from hub.http.tokens import grant_region, hash_token, new_token, token_t
from hub.queue.cases import utcnow
from knowledge.base import KnowledgeBase
from knowledge.models import Authority, Region, Responsibility, Service
from knowledge.regions import RegionIndex, load_regions
from knowledge.sync_models import online_t, version_t

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CITIZEN_HUB_SHARED", ROOT.parent / "shared"))
MUENCHEN = SHARED / "data" / "catalogs" / "muenchen"
BERLIN = SHARED / "data" / "catalogs" / "berlin-2016"

# Real regions used by the tests (Destatis GV-ISys 2019).
MUENCHEN_KREIS = "09162"
SEGEBERG = "01060"  # Kreis Segeberg
LEEZEN_AMT = "010605053"
TODESFELDE = "010605053088"  # a Gemeinde in Amt Leezen
BARK = "010605053007"  # another Gemeinde in Amt Leezen
NORDERSTEDT = "010600063063"


@pytest.fixture(scope="session", name="regions_template")
def regions_template_fixture(tmp_path_factory) -> Path:
    """A SQLite file with the schema and every German region and postcode (no catalogue)."""
    path = tmp_path_factory.mktemp("catalog") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    with session_scope(engine) as session:
        load_regions(session)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session", name="region_index")
def region_index_fixture(regions_template) -> RegionIndex:
    engine = make_engine(f"sqlite:///{regions_template}")
    with Session(engine) as session:
        index = RegionIndex.from_session(session, home_region=SEGEBERG)
    engine.dispose()
    return index


@pytest.fixture(name="engine")
def engine_fixture(regions_template, tmp_path) -> Engine:
    """A fresh database of this test: a copy of the template."""
    path = tmp_path / "hub.sqlite3"
    shutil.copyfile(regions_template, path)
    eng = make_engine(f"sqlite:///{path}")
    yield eng
    eng.dispose()


def load_kb(engine: Engine, regions: RegionIndex) -> KnowledgeBase:
    """A knowledge base over the catalogue in ``engine`` and the shared region index."""
    with Session(engine) as session:
        services = list(session.execute(select(Service)).scalars())
        authorities = list(session.execute(select(Authority)).scalars())
        responsibilities = list(session.execute(select(Responsibility).order_by(Responsibility.id)).scalars())
        session.expunge_all()
    return KnowledgeBase(regions, services, authorities, responsibilities)


def make_token(engine: Engine, name: str, role: str = "catalog", regions: tuple[str, ...] = ()) -> str:
    """A bearer token (stored as SHA-256, as hub.http.tokens does) with catalogue scopes; returns it in clear."""
    token = new_token()
    with engine.begin() as conn:
        token_id = conn.execute(
            insert(token_t).values(name=name, role=role, token_hash=hash_token(token), created_at=utcnow())
        ).inserted_primary_key[0]
        for region in regions:
            grant_region(conn, token_id, region)
    return token


def counts(engine: Engine, owner: str | None = None) -> dict[str, int]:
    """Rows per catalogue table (of one owner), and the number of versions: to show nothing changed."""
    out = {}
    with engine.connect() as conn:
        for name, table in (
            ("service", Service.__table__),
            ("authority", Authority.__table__),
            ("responsibility", Responsibility.__table__),
            ("online", online_t),
        ):
            q = select(func.count()).select_from(table)
            if owner is not None:
                q = q.where(table.c.owner_ars == owner)
            out[name] = conn.execute(q).scalar()
        out["versions"] = conn.execute(select(func.count()).select_from(version_t)).scalar()
        out["regions"] = conn.execute(select(func.count()).select_from(Region.__table__)).scalar()
    return out


def leistung(ident: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"id": ident, "name": name, **extra}


def office(ident: str, name: str, area: str, **extra: Any) -> dict[str, Any]:
    return {"id": ident, "name": name, "gebiet_ars": area, **extra}


def override(service_id: str, area: str, office_id: str) -> dict[str, Any]:
    return {"leistung_id": service_id, "gebiet_ars": area, "organisationseinheit_id": office_id}


def level_registration(level: str, area: str, office_id: str) -> dict[str, Any]:
    return {"ebene": level, "gebiet_ars": area, "organisationseinheit_id": office_id}


# -- the catalogue API in-process (shared by the catalogue API, token, schema and hostile-body tests) ------

TOKENS = {  # name: (role, regions)
    "segeberg": ("catalog", (SEGEBERG,)),
    "todesfelde": ("catalog", (TODESFELDE,)),
    "bark": ("catalog", (BARK,)),
    "muenchen": ("catalog", (MUENCHEN_KREIS,)),
    "noscope": ("catalog", ()),
    "intake": ("service", ()),
}


async def make_env(aiohttp_client, engine, region_index, **catalog) -> SimpleNamespace:
    tokens = {name: make_token(engine, name, role, regions) for name, (role, regions) in TOKENS.items()}
    from hub.config import Settings
    from hub.http.app import create_app
    from hub.http.catalog_settings import CatalogSettings
    from hub.http.routes import route_setups

    settings = Settings()
    settings.catalog = CatalogSettings(**{"poll_seconds": 0.2, **catalog})
    kb = load_kb(engine, region_index)
    assert "hub.http.api_catalog:setup" in route_setups(), "create_app mounts the catalogue API"
    app = create_app(settings, kb=kb, engine=engine)
    client = await aiohttp_client(app)
    return SimpleNamespace(client=client, kb=kb, engine=engine, tokens=tokens, app=app)


def auth(env, name: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {env.tokens[name]}", **headers}


def kreis_body() -> dict:
    return {
        "leistung": [
            leistung(
                "se-wkz", "Wunschkennzeichen reservieren", ebene="kreis", synonyme=["Kennzeichen reservieren"]
            )
        ],
        "organisationseinheit": [
            office("se-kv", "Kreisverwaltung Segeberg", SEGEBERG, kontakt={"telefon": "04551 951-0"})
        ],
        "zustaendigkeit": [level_registration("kreis", SEGEBERG, "se-kv")],
    }
