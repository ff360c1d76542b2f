"""Write health of a hub process, for ``/healthz``: failed writes to the database, free disk space.

A hub whose disk is full still answers every read, and ``SELECT 1`` succeeds: only writes fail. The
attack of issue 14 found ``/healthz`` answering 200 while every intake got 503. :func:`watch` listens
to an engine's errors (SQLAlchemy's ``handle_error`` event, which also fires when a COMMIT fails) and
remembers the last failed write; :func:`write_problems` reports it for ``[server]
health_write_failure_seconds``, and the free space under the places the hub writes to (the SQLite file,
attachments, kept mail) against ``[server] health_min_free_bytes``.

What counts as a failed write: an error of an INSERT, UPDATE, DELETE or schema statement, or of a
COMMIT/ROLLBACK, that is not the client's fault (a constraint violation or bad data is a refused
request, not a sick database), and any lost connection.
"""

from __future__ import annotations

import shutil
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

_WRITES = ("INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "REPLACE")


@dataclass
class WriteHealth:
    """The last failed write of one engine in this process (monotonic time and a one-line reason)."""

    failed_at: float | None = None
    reason: str = ""
    failures: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def record(self, reason: str) -> None:
        with self._lock:
            self.failed_at = time.monotonic()
            self.reason = reason
            self.failures += 1

    def recent_failure(self, within_seconds: float) -> str | None:
        """The reason of a failed write in the last ``within_seconds`` seconds, else None."""
        with self._lock:
            if self.failed_at is None or within_seconds <= 0:
                return None
            if time.monotonic() - self.failed_at > within_seconds:
                return None
            return self.reason


_WATCHED: weakref.WeakKeyDictionary[Engine, WriteHealth] = weakref.WeakKeyDictionary()
_WATCH_LOCK = threading.Lock()


def _is_write(statement: str | None) -> bool:
    if statement is None:  # COMMIT, ROLLBACK or BEGIN itself failed
        return True
    return statement.lstrip().split(None, 1)[0].upper().startswith(_WRITES) if statement.strip() else False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}".rstrip(": ")


def watch(engine: Engine) -> WriteHealth:
    """The :class:`WriteHealth` of ``engine``, listening to its errors from the first call on."""
    with _WATCH_LOCK:
        health = _WATCHED.get(engine)
        if health is not None:
            return health
        health = _WATCHED[engine] = WriteHealth()

    def on_error(context: Any) -> None:
        error = context.sqlalchemy_exception
        if isinstance(error, (IntegrityError, DataError, ProgrammingError)) and not context.is_disconnect:
            return
        if context.is_disconnect or _is_write(context.statement):
            health.record(_one_line(context.original_exception))

    event.listen(engine, "handle_error", on_error)
    return health


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (a store directory is made on first use)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def storage_paths(engine: Engine, settings: Any) -> list[Path]:
    """Where this hub writes files: the SQLite database's folder, the attachment store, the kept mail."""
    paths: list[Path] = []
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        paths.append(Path(engine.url.database).parent)
    queue = getattr(settings, "queue", None)
    if getattr(queue, "attachment_dir", None):
        paths.append(Path(queue.attachment_dir))
    email = getattr(settings, "email", None)  # read by name: the hub does not import its channels
    if getattr(email, "raw_mail_dir", None):
        paths.append(Path(email.raw_mail_dir))
    return paths


def free_space_problems(paths: Iterable[Path], min_free_bytes: int) -> list[str]:
    """One line for each file system under ``paths`` with less than ``min_free_bytes`` free."""
    if min_free_bytes <= 0:
        return []
    problems: list[str] = []
    seen: set[Path] = set()
    for path in paths:
        place = _existing(Path(path))
        if place in seen:
            continue
        seen.add(place)
        try:
            free = shutil.disk_usage(place).free
        except OSError as exc:
            problems.append(f"der freie Platz unter {place} lässt sich nicht prüfen: {type(exc).__name__}")
            continue
        if free < min_free_bytes:
            problems.append(f"nur {free // 1_048_576} MB frei unter {place} (weniger als "
                            f"{min_free_bytes // 1_048_576} MB)")
    return problems


def write_problems(engine: Engine, settings: Any) -> list[str]:
    """Why this process cannot be trusted to store requests now (empty when it can)."""
    server = getattr(settings, "server", None)
    within = getattr(server, "health_write_failure_seconds", 60.0)
    min_free = getattr(server, "health_min_free_bytes", 0)
    problems = []
    failed = watch(engine).recent_failure(within)
    if failed:
        problems.append(f"ein Schreibzugriff auf die Datenbank ist in den letzten {within:g} s fehlgeschlagen "
                            f"({failed})")
    problems += free_space_problems(storage_paths(engine, settings), min_free)
    return problems
