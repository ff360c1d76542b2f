"""Alembic environment of citizen-hub.

Configured from code by :mod:`hub.migrate` (no ``alembic.ini`` is needed at run time): the caller
puts an open connection into ``config.attributes["connection"]``. Developers use
``python -m hub.migrate --db URL [upgrade|current|revision -m MESSAGE]``.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from hub.db import make_engine
from hub.migrate import import_models

config = context.config
import_models()
target_metadata = SQLModel.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass a connection (hub.migrate) or set sqlalchemy.url")
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run them against a database")
run_migrations_online()
