"""Shared helpers of the request-queue tests: migrated databases (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import require_component
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from hub.db import make_engine
from hub.migrate import upgrade
from hub.queue.cases import case_t, message_t
from hub.queue.requests import InboundRequest

PG_URL = os.environ.get("CITIZEN_HUB_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# Migrated templates, one per source database and test process: running the migrations costs 0.1-1 s,
# a copy of their result a few milliseconds, and the copy is the same database (tests of the migrations
# themselves, tests/queue/test_intake.py, run ``upgrade`` on a database of their own).
_TEMPLATES: dict[str, Path] = {}
_TEMPLATE_LOCK = threading.Lock()
_TEMPLATE_DIR: Path | None = None


def _template_dir() -> Path:
    global _TEMPLATE_DIR
    if _TEMPLATE_DIR is None:
        _TEMPLATE_DIR = Path(tempfile.mkdtemp(prefix="citizen-hub-templates-"))
        atexit.register(shutil.rmtree, _TEMPLATE_DIR, True)
    return _TEMPLATE_DIR


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy through SQLite's backup API (WAL content included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def _migrated_template(source: Path | None) -> Path:
    key = str(source or "")
    with _TEMPLATE_LOCK:
        template = _TEMPLATES.get(key)
        if template is None:
            template = _template_dir() / f"template-{len(_TEMPLATES)}.sqlite3"
            if source is not None:
                _copy_sqlite(source, template)
            engine = make_engine(f"sqlite:///{template}")
            try:
                upgrade(engine)
            finally:
                engine.dispose()
            _TEMPLATES[key] = template
        return template


def migrated_sqlite(target: Path, source: Path | None = None) -> Engine:
    """An engine on ``target``: a copy of ``source`` (an empty database if None) migrated to the newest
    revision, exactly as ``upgrade`` leaves it; the migrations run once per source and test process.

    ``source`` must not change during the run (the session's demo database does not)."""
    _copy_sqlite(_migrated_template(source), target)
    return make_engine(f"sqlite:///{target}")


def sqlite_engine(tmp_path, name: str = "hub.sqlite3") -> Engine:
    """A migrated, empty SQLite database of this test (see :func:`migrated_sqlite`)."""
    return migrated_sqlite(tmp_path / name)


def pg_available() -> str | None:
    """None when the local PostgreSQL answers, else the reason it does not."""
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {exc}"


def require_pg() -> None:
    """Skip (or fail in CI, where PostgreSQL must run) when the local PostgreSQL is not reachable."""
    reason = pg_available()
    require_component(reason is None, f"PostgreSQL at 127.0.0.1:5432/test is not reachable ({reason})")


@contextmanager
def pg_schema_url() -> Iterator[str]:
    """A database URL whose connections use a fresh, private schema (dropped afterwards)."""
    require_pg()
    schema = "t_" + secrets.token_hex(6)
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextmanager
def pg_engine() -> Iterator[Engine]:
    with pg_schema_url() as url:
        engine = make_engine(url)
        upgrade(engine)
        try:
            yield engine
        finally:
            engine.dispose()


def req(external_id: str, text: str = "Ich brauche einen neuen Reisepass", channel: str = "api",
        **kw: Any) -> InboundRequest:
    return InboundRequest(channel=channel, external_id=external_id, text=text, **kw)


def count_messages(engine: Engine, channel: str | None = None, external_id: str | None = None) -> int:
    q = select(message_t.c.id)
    if channel:
        q = q.where(message_t.c.channel == channel)
    if external_id:
        q = q.where(message_t.c.external_id == external_id)
    with engine.connect() as conn:
        return len(conn.execute(q).all())


def case_row(engine: Engine, case_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one())
