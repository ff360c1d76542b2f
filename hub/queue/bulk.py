"""Many rows in one statement, straight on the driver's cursor, in the transaction SQLAlchemy opened.

Intake writes three rows per request (case, audit entry, message) and a channel that answers a request
itself (an SMS's direct answer) two state changes, two audit entries and a message more. Through
SQLAlchemy Core each row's parameters went through the execution context one by one — the compiled
statement's parameter processing, every column type's bind processor — and that was most of the intake
writer thread's time (the thread that every client's answer waits for). :class:`BulkWriter` writes one
batch as one multi-row ``INSERT … VALUES (…), (…) [RETURNING …]`` per table, or one ``executemany``
``UPDATE`` per set of columns, with the parameters as flat tuples.

Values still go through each column type's own bind processor (``UtcDateTime``: to UTC, then SQLite's
text form; JSON: serialised), once per *distinct* value of the batch: the batch's ``now`` recurs in four
columns of every request. So what is stored is exactly what SQLAlchemy would store, and reads through the
tables see no difference (``tests/queue/test_intake_fast.py`` checks both on SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection

from knowledge.columns import UtcDateTime

_MISSING = object()
_EMPTY_LIST = object()
_CONVERTERS: dict[tuple[str, str], dict[str, Any]] = {}
_OMITTABLE: dict[str, frozenset[str]] = {}
_SQL: dict[tuple[Any, ...], str] = {}
_MINUTE_TEXT: dict[int, str] = {}


def sqlite_utc(value: datetime) -> str:
    """``UtcDateTime`` on SQLite in one step: what its bind processor stores, naive UTC text."""
    if value.tzinfo is not UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given for a UTC column")
        value = value.astimezone(UTC)
    # "YYYY-MM-DD HH:MM:SS.ffffff", SQLAlchemy's SQLite storage format. The part up to the minute is
    # formatted once per minute: isoformat was the writer thread's single most expensive call.
    key = value.toordinal() * 1440 + value.hour * 60 + value.minute
    head = _MINUTE_TEXT.get(key)
    if head is None:
        if len(_MINUTE_TEXT) > 4096:
            _MINUTE_TEXT.clear()
        head = _MINUTE_TEXT[key] = value.replace(second=0, microsecond=0, tzinfo=None).isoformat(" ")[:17]
    return "%s%02d.%06d" % (head, value.second, value.microsecond)  # noqa: UP031 - a third faster than an f-string


def omittable(table: Table) -> frozenset[str]:
    """Columns of ``table`` that may be left out of an INSERT for NULL: nullable, with no server default."""
    found = _OMITTABLE.get(table.name)
    if found is None:
        found = _OMITTABLE[table.name] = frozenset(
            c.key for c in table.columns if c.nullable and c.server_default is None and not c.primary_key)
    return found


def converters(table: Table, dialect: Any) -> dict[str, Any]:
    """Column name -> the function that turns a value into what the driver gets (only where needed).

    That is the bind processor of the column's type on ``dialect``, one object per type (so that
    :class:`BulkWriter` converts a value shared by several columns once), with ``UtcDateTime`` on SQLite
    done in one step by :func:`sqlite_utc` (``tests/queue/test_intake_fast.py`` checks they agree).
    """
    key = (table.name, dialect.name)
    found = _CONVERTERS.get(key)
    if found is None:
        found = {}
        by_type: dict[tuple[type, str], Any] = {}
        for col in table.columns:
            if isinstance(col.type, UtcDateTime) and dialect.name == "sqlite":
                found[col.key] = sqlite_utc
                continue
            proc = col.type._cached_bind_processor(dialect)
            if proc is not None:
                found[col.key] = by_type.setdefault((type(col.type), repr(col.type)), proc)
        _CONVERTERS[key] = found
    return found


def cached_sql(key: tuple[Any, ...], build: Any) -> str:
    """The SQL text under ``key``, made by ``build()`` the first time (statements are built once)."""
    sql = _SQL.get(key)
    if sql is None:
        if len(_SQL) > 4096:  # batch sizes vary; keep the cache bounded
            _SQL.clear()
        sql = _SQL[key] = build()
    return sql


def insert_sql(table: Table, dialect: Any, mark: str, cols: tuple[str, ...], rows: int,
               returning: tuple[str, ...]) -> str:
    """``INSERT INTO table (cols) VALUES (…) × rows [RETURNING …]`` for this driver, built once."""

    def build() -> str:
        quote = dialect.identifier_preparer.quote
        group = "(" + ", ".join([mark] * len(cols)) + ")"
        sql = (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} "
               f"({', '.join(quote(c) for c in cols)}) VALUES {', '.join([group] * rows)}")
        if returning:
            sql += " RETURNING " + ", ".join(quote(c) for c in returning)
        return sql

    return cached_sql(("insert", table.name, dialect.name, cols, rows, returning), build)


def update_sql(table: Table, dialect: Any, mark: str, cols: tuple[str, ...], where: tuple[str, ...]) -> str:
    """``UPDATE table SET c = ?, … WHERE w = ? AND …`` for this driver, built once."""

    def build() -> str:
        quote = dialect.identifier_preparer.quote
        return (f"UPDATE {dialect.identifier_preparer.format_table(table)} "
                f"SET {', '.join(f'{quote(c)} = {mark}' for c in cols)} "
                f"WHERE {' AND '.join(f'{quote(w)} = {mark}' for w in where)}")

    return cached_sql(("update", table.name, dialect.name, cols, where), build)


class BulkWriter:
    """Multi-row inserts and many-row updates on the driver's cursor of ``conn`` (and in its transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.dialect = conn.dialect
        self.cursor = conn.connection.driver_connection.cursor()
        self.mark = "?" if self.dialect.paramstyle == "qmark" else "%s"
        # SQLite (3.32+) allows 32,766 parameters per statement, PostgreSQL 65,535.
        self.max_params = 32_000
        self._memo: dict[tuple[Any, Any], Any] = {}

    def _values(self, table: Table, cols: tuple[str, ...], rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """Each row's values of ``cols``, converted as the column types convert them."""
        procs = converters(table, self.dialect)
        # Each row's values in one C call; only the columns whose type converts go through Python, a column
        # at a time (the values of one column mostly repeat: the batch's ``now``).
        getter = itemgetter(*cols) if len(cols) > 1 else (lambda row: (row[cols[0]],))
        out = [list(getter(row)) for row in rows]
        memo = self._memo
        for i, col in enumerate(cols):
            proc = procs.get(col)
            if proc is None:
                continue
            for values in out:
                value = values[i]
                if value is None:
                    continue
                # The type is part of the key: 1, 1.0 and True are equal, but not as JSON.
                key = (proc, _EMPTY_LIST) if value == [] else (proc, value.__class__, value)
                try:
                    done = memo.get(key, _MISSING)
                except TypeError:  # unhashable (a JSON list or object): convert every time
                    done = proc(value)
                else:
                    if done is _MISSING:
                        done = memo[key] = proc(value)
                values[i] = done
        return out

    def insert(self, table: Table, rows: Sequence[Mapping[str, Any]],
               returning: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
        """Insert ``rows`` (all with the same keys) into ``table``; the ``returning`` columns of each row.

        The returned rows come in no particular order (neither SQLite nor PostgreSQL promises one): match
        them up by a unique column, or use :meth:`insert_ids`.
        """
        if not rows:
            return []
        # A column that is NULL in every row of the batch is left out of the statement: with no
        # server-side default (none of the queue's tables has one) the database stores NULL all
        # the same, and sqlite3 binds a None slowly (it looks for an adapter for it, every time).
        skip = omittable(table)
        maybe = [c for c in rows[0] if c in skip]
        if maybe:  # the values of each such column in one tuple (zip, in C), counted for None in C
            getter = itemgetter(*maybe) if len(maybe) > 1 else (lambda row: (row[maybe[0]],))
            present = {c for c, column in zip(maybe, zip(*map(getter, rows), strict=True), strict=True)
                       if column.count(None) != len(rows)}
            cols = tuple(c for c in rows[0] if c not in skip or c in present)
        else:
            cols = tuple(rows[0])
        flat = [value for values in self._values(table, cols, rows) for value in values]
        found: list[tuple[Any, ...]] = []
        per = max(1, self.max_params // len(cols))
        width = len(cols)
        for start in range(0, len(rows), per):
            n = min(per, len(rows) - start)
            self.cursor.execute(insert_sql(table, self.dialect, self.mark, cols, n, returning),
                                flat[start * width : (start + n) * width])
            if returning:
                found.extend(self.cursor.fetchall())
        return found

    def insert_ids(self, table: Table, rows: Sequence[Mapping[str, Any]], *, key: tuple[str, ...],
                   id_column: str = "id") -> list[int]:
        """Insert ``rows``; the generated ids in the order of ``rows``.

        RETURNING gives the rows in no promised order, so they are matched up by ``key``, columns that
        tell the rows apart (and that no bind processor changes, so they come back as given). Rows equal in
        ``key`` get their ids in ascending order, the order both databases number the rows of one VALUES
        list in; such rows are alike in everything a caller tells them apart by.
        """
        procs = converters(table, self.dialect)
        if any(col in procs for col in key):
            raise ValueError("the key of insert_ids must be columns whose values are stored as given")
        found: dict[tuple[Any, ...], list[int]] = {}
        for returned in self.insert(table, rows, (id_column, *key)):
            found.setdefault(tuple(returned[1:]), []).append(returned[0])
        for ids in found.values():
            ids.sort(reverse=True)  # popped from the end: the smallest first
        getter = itemgetter(*key) if len(key) > 1 else (lambda row: (row[key[0]],))
        return [found[tuple(getter(row))].pop() for row in rows]

    def update(self, table: Table, changes: Sequence[tuple[Mapping[str, Any], Sequence[Any]]], *,
               where: tuple[str, ...]) -> int:
        """For each ``(values, keys)``: ``UPDATE table SET <values> WHERE <where columns> = <keys>``; how many
        rows changed. Changes of the same columns share one ``executemany``."""
        groups: dict[tuple[str, ...], list[tuple[Mapping[str, Any], Sequence[Any]]]] = {}
        for values, keys in changes:
            groups.setdefault(tuple(sorted(values)), []).append((values, keys))
        changed = 0
        for cols, members in groups.items():
            sets = self._values(table, cols, [values for values, _ in members])
            keys = self._values(table, where, [dict(zip(where, keys, strict=True)) for _, keys in members])
            self.cursor.executemany(update_sql(table, self.dialect, self.mark, cols, where),
                                    [s + k for s, k in zip(sets, keys, strict=True)])
            changed += self.cursor.rowcount
        return changed

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of a SELECT written for this driver (``mark`` placeholders)."""
        self.cursor.execute(sql, params)
        return self.cursor.fetchall()
