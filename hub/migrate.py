"""Schema migrations from code: ``upgrade(engine)`` brings any database to the newest schema.

Alembic is configured programmatically (the scripts live in ``hub/migrations``), so neither an
``alembic.ini`` nor a working directory is needed at run time. ``python -m hub.migrate --db URL``
upgrades from the shell; ``python -m hub.migrate --db URL revision -m "what changed"`` writes a new
revision by comparing the models with that database (developers only).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from hub.db import DatabaseUnavailable, make_engine

__all__ = ["DatabaseUnavailable", "current_revision", "head_revision", "masked_url", "open_database", "upgrade"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_ID = 8_115_001  # pg_advisory_xact_lock key of migrations

#: Every module that defines tables. A new table module goes here *and* gets a revision in
#: hub/migrations/versions (tests/test_intake.py fails while models and migrations differ).
MODEL_MODULES: tuple[str, ...] = (
    "knowledge.models",
    "hub.queue.cases",
    "knowledge.sync_models",
    "hub.http.tokens",
    "hub.console.auth",
    "hub.console.calls",
    "channels.twilio.store",
    "channels.paper.store",
    "knowledge.learning.store",
)


def import_models() -> None:
    """Register every table with ``SQLModel.metadata``."""
    for name in MODEL_MODULES:
        importlib.import_module(name)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty or never-migrated database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database of ``engine`` to ``revision`` (default: the newest).

    Safe to run on every start and from several processes: a database already at the revision is
    left alone. A database whose tables were made by ``SQLModel.metadata.create_all`` (no version
    table yet) is adopted: the initial revision creates only the tables that are missing.
    """
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several hub processes starting at once: one migrates, the others wait and find it done.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_ID})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands: hide whatever sits between ':' and '@'
        import re

        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def _cause(exc: BaseException) -> str:
    """The driver's own words for a failure, first line only (no SQL, no background link)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0].strip() if str(orig).strip() else ""
    return text or type(orig).__name__


def open_database(url: str, echo: bool = False, *, writable: bool = True) -> Engine:
    """An engine for ``url`` with the schema at the newest revision, checked to take a write.

    Every process entry point (``serve``, ``worker``, ``init``, ``email serve``, ``token``…) opens its
    database with this *before* it says it is serving, so that a read-only file or an unreachable
    PostgreSQL ends the start with one line — :class:`DatabaseUnavailable`: the URL with the password
    masked, and the cause — instead of a traceback after "serving on …". ``writable`` probes a write
    (an UPDATE that changes nothing): a read-only file can still be read and migrated when it is at
    the newest revision already, but no request could be stored in it.
    """
    from sqlalchemy import text

    shown = masked_url(url)
    try:
        engine = make_engine(url, echo=echo)
    except Exception as exc:
        raise DatabaseUnavailable(f"cannot open the database {shown}: {_cause(exc)}") from None
    try:
        upgrade(engine)
        if writable:
            with engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
    except Exception as exc:
        engine.dispose()
        raise DatabaseUnavailable(f"cannot open the database {shown}: {_cause(exc)}") from None
    return engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, metavar="URL", help="database URL")
    parser.add_argument("action", nargs="?", default="upgrade", choices=("upgrade", "current", "revision"))
    parser.add_argument("-m", "--message", default="schema change", help="revision message (revision only)")
    args = parser.parse_args(argv)
    engine = make_engine(args.db)
    if args.action == "upgrade":
        upgrade(engine)
        print(f"database at revision {current_revision(engine)}")
    elif args.action == "current":
        print(current_revision(engine) or "(none)")
    else:
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.revision(cfg, message=args.message, autogenerate=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
