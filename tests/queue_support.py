"""Shared helpers of the request-queue tests: migrated databases (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from conftest import require_component
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from hub.db import make_engine
from hub.migrate import upgrade
from hub.queue.cases import case_t, message_t
from hub.queue.requests import InboundRequest

PG_URL = os.environ.get("CITIZEN_HUB_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def sqlite_engine(tmp_path, name: str = "hub.sqlite3") -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / name}")
    upgrade(engine)
    return engine


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
