"""Shared fixtures: a real SQLite database with all of Germany's regions and the demo catalogue,
and the local PostgreSQL server for the scale-out tests."""

from __future__ import annotations

import os
import uuid

import pytest

POSTGRES_URL = os.environ.get("CITIZEN_HUB_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def require_component(available: bool, reason: str) -> None:
    """Skip with a stated reason when a real component is missing, but never on CI: there it must run."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}: .ci/run must install and start it")
    pytest.skip(reason)


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture()
def postgres_url():
    """A fresh PostgreSQL schema in database ``test``, dropped afterwards; the URL selects it."""
    require_component(postgres_available(), "PostgreSQL is not reachable on 127.0.0.1:5432")
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    dsn = "host=127.0.0.1 port=5432 dbname=test user=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session")
def demo_db_url(tmp_path_factory):
    """A SQLite database with every German region and the demo catalogue, built once per run."""
    from hub.db import create_schema, make_engine, session_scope
    from knowledge.catalogue import load_demo
    from knowledge.regions import load_regions

    url = f"sqlite:///{tmp_path_factory.mktemp('demo')}/demo.sqlite3"
    engine = make_engine(url)
    create_schema(engine)
    with session_scope(engine) as session:
        load_regions(session)
    with session_scope(engine) as session:
        load_demo(session)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def demo_engine(demo_db_url):
    from hub.db import make_engine

    engine = make_engine(demo_db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def kb(demo_engine):
    """The knowledge base over the demo database (home region Kreis Segeberg)."""
    from knowledge.base import KnowledgeBase

    return KnowledgeBase.load(demo_engine)


# -- the web channel and Open311 (tests/web_support.py) ------------------------------------------------------
# Shared by the web and Open311 test modules; a module that needs another hub defines its own ``hub``,
# which overrides this one.


@pytest.fixture()
def hub(tmp_path, demo_db_url):
    """A migrated copy of the demo database: (engine, url)."""
    from web_support import hub_engine

    engine, url = hub_engine(tmp_path, demo_db_url)
    yield engine, url
    engine.dispose()


@pytest.fixture()
def make_client(aiohttp_client, hub, kb, tmp_path):
    """Builds in-process clients of the real app (web channel, Open311, queue) over ``hub``."""
    from web_support import client_factory

    return client_factory(aiohttp_client, *hub, kb, tmp_path)
