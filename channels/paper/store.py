"""What the paper channel keeps: one row per scanned page (the review queue) and the scan files.

Every page that was read gets a row in ``paper_page``, accepted or rejected, so nothing is lost:

* an accepted page points to the message it became (``message_id``, ``case_id``) and says how sure the
  OCR was and whether an agent should look (``needs_review``); its images are the message's attachments;
* a rejected page keeps its reason and its page image (``page_sha256``), so an agent can see what came in.

Files (the original upload, the page images of rejected pages) are stored by SHA-256 in the queue's
attachment store: written and fsynced before the row that names them is committed. Rows hold no text
the citizen wrote (that is in the message), only the file name, which :func:`purge_pages` clears.

``purge`` and ``forget`` (``hub.queue.privacy``) call :data:`PRIVACY`: pages of purged cases lose their
file name and image references, pages of forgotten cases go with their messages (foreign keys with
``ON DELETE CASCADE``), and rejected pages are deleted with their files once their ``purge_after``
(written at intake from ``[paper] rejected_retention_days``) has passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from hub.queue.cases import attachment_t
from knowledge.columns import UtcDateTime


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UtcDateTime, nullable=nullable, index=index))


class PaperPage(SQLModel, table=True):
    """One page of a scan file as the paper channel read it."""

    __tablename__ = "paper_page"

    id: int | None = Field(default=None, primary_key=True)
    #: Idempotency: the request's external id (accepted) or ``rejected/<file sha>/<page>``.
    key: str = Field(sa_column=Column(String(255), nullable=False, unique=True))
    created_at: datetime = _ts(nullable=False, index=True)
    source_name: str | None = Field(default=None, sa_column=Column(String(255)))
    source_sha256: str | None = Field(default=None, sa_column=Column(String(64), index=True))
    page: int | None = Field(default=None, sa_column=Column(Integer))
    status: str = Field(sa_column=Column(String(16), nullable=False, index=True))
    problem: str | None = Field(default=None, sa_column=Column(String(32)))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    form_id: str | None = Field(default=None, sa_column=Column(String(20), index=True))
    source: str = Field(default="scan", sa_column=Column(String(16), nullable=False))
    case_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("hub_case.id", ondelete="CASCADE"), index=True))
    message_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("hub_message.id", ondelete="CASCADE"), index=True))
    confidence: float | None = Field(default=None, sa_column=Column(Float))
    needs_review: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, index=True))
    review_notes: str | None = Field(default=None, sa_column=Column(Text))
    page_sha256: str | None = Field(default=None, sa_column=Column(String(64), index=True))
    box_sha256: str | None = Field(default=None, sa_column=Column(String(64), index=True))
    reviewed_by: str | None = Field(default=None, sa_column=Column(String(200)))
    reviewed_at: datetime | None = _ts()
    review_action: str | None = Field(default=None, sa_column=Column(String(16)))
    #: A page without a case (rejected) is deleted by ``purge`` after this ([paper] rejected_retention_days).
    purge_after: datetime | None = _ts(index=True)


page_t = PaperPage.__table__

#: What an agent can do with a page of the review queue.
ACTIONS = ("corrected", "confirmed", "dismissed")


def find(conn: Connection, key: str) -> dict[str, Any] | None:
    row = conn.execute(select(page_t).where(page_t.c.key == key)).mappings().first()
    return dict(row) if row else None


def record(conn: Connection, values: dict[str, Any]) -> tuple[int, bool]:
    """Insert one page row unless its key is there; returns ``(id, created)``."""
    found = find(conn, values["key"])
    if found is not None:
        return found["id"], False
    values = {"created_at": datetime.now(UTC), **values}
    return conn.execute(insert(page_t).values(**values).returning(page_t.c.id)).scalar_one(), True


def get(conn: Connection, page_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(page_t).where(page_t.c.id == page_id)).mappings().first()
    return dict(row) if row else None


def review_queue(conn: Connection, *, open_only: bool = True, limit: int = 100) -> list[dict[str, Any]]:
    """Pages waiting for an agent: rejected ones and accepted ones marked for review, oldest first."""
    query = select(page_t).where(or_(page_t.c.status == "rejected", page_t.c.needs_review.is_(True)))
    if open_only:
        query = query.where(page_t.c.reviewed_at.is_(None))
    return [dict(r) for r in conn.execute(query.order_by(page_t.c.id).limit(limit)).mappings()]


def mark_reviewed(conn: Connection, page_id: int, *, agent: str, action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown review action {action!r}")
    conn.execute(update(page_t).where(page_t.c.id == page_id)
                 .values(reviewed_by=agent, reviewed_at=datetime.now(UTC), review_action=action))


def _referenced(conn: Connection, digests: Iterable[str]) -> set[str]:
    digests = [d for d in set(digests) if d]
    if not digests:
        return set()
    used = set(conn.execute(select(attachment_t.c.sha256).where(attachment_t.c.sha256.in_(digests))).scalars())
    for column in (page_t.c.page_sha256, page_t.c.box_sha256, page_t.c.source_sha256):
        used |= set(conn.execute(select(column).where(column.in_(digests))).scalars())
    return used


def unreferenced(conn: Connection, digests: Iterable[str]) -> list[str]:
    """Those of ``digests`` that neither an attachment nor a page row refers to any more."""
    digests = {d for d in digests if d}
    return sorted(digests - _referenced(conn, digests))


def _digests(rows: Sequence[Any]) -> list[str]:
    return [d for r in rows for d in (r.page_sha256, r.box_sha256, r.source_sha256) if d]


def purge_pages(conn: Connection, case_ids: Sequence[int], now: datetime) -> tuple[int, list[str]]:
    """Purge: pages of the anonymised cases lose name and files; rejected pages past ``purge_after`` go.

    Returns the rows changed and the files nothing refers to any more.
    """
    cols = (page_t.c.id, page_t.c.page_sha256, page_t.c.box_sha256, page_t.c.source_sha256)
    freed: list[str] = []
    changed = 0
    if case_ids:
        rows = conn.execute(select(*cols).where(page_t.c.case_id.in_(list(case_ids)))).all()
        conn.execute(update(page_t).where(page_t.c.case_id.in_(list(case_ids)))
                     .values(source_name=None, page_sha256=None, box_sha256=None, source_sha256=None))
        freed += _digests(rows)
        changed += len(rows)
    old = conn.execute(select(*cols).where(page_t.c.case_id.is_(None), page_t.c.purge_after.isnot(None),
                                           page_t.c.purge_after < now)).all()
    if old:
        conn.execute(delete(page_t).where(page_t.c.id.in_([r.id for r in old])))
        freed += _digests(old)
        changed += len(old)
    return changed, unreferenced(conn, freed)


def forget_pages(conn: Connection, case_ids: Sequence[int]) -> tuple[int, list[str]]:
    """Forget: the pages of these cases (and their files); the database cascade would take the rows too."""
    if not case_ids:
        return 0, []
    cols = (page_t.c.id, page_t.c.page_sha256, page_t.c.box_sha256, page_t.c.source_sha256)
    rows = conn.execute(select(*cols).where(page_t.c.case_id.in_(list(case_ids)))).all()
    conn.execute(delete(page_t).where(page_t.c.case_id.in_(list(case_ids))))
    return len(rows), unreferenced(conn, _digests(rows))


class _Privacy:
    """The paper channel's privacy handler (``hub.plugins.Channel.privacy``), run in the transactions of
    ``hub.queue.privacy``; the files it lets go of go into ``conn.info["unreferenced_files"]``."""

    def purge(self, conn: Connection, case_ids: Sequence[int], now: datetime) -> int:
        rows, freed = purge_pages(conn, case_ids, now)
        conn.info.setdefault("unreferenced_files", []).extend(freed)
        return rows

    def forget(self, conn: Connection, case_ids: Sequence[int], emails: Sequence[str], phones: Sequence[str]) -> int:
        # A page without a case names no citizen we could match (its code was not trusted); it goes
        # after its retention. Pages of the citizen's cases go now.
        rows, freed = forget_pages(conn, case_ids)
        conn.info.setdefault("unreferenced_files", []).extend(freed)
        return rows


PRIVACY = _Privacy()
