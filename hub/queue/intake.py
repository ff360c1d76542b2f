"""Intake: an :class:`~hub.queue.requests.InboundRequest` becomes a committed message of a case.

Accept, store, then acknowledge. A channel calls ``await writer.submit(request)`` and answers its
client (HTTP 2xx, SMTP 250, TwiML) only when that returns, i.e. after the commit.

**Group commit.** One writer thread owns intake writes. Handlers put requests on a queue; the thread
takes everything that is waiting (up to ``[queue] batch_max``), writes it in *one* transaction with
Core inserts and then resolves every handler's future. While one batch commits the next one fills,
so under load the cost of a commit is shared by many requests and the event loop never blocks on
the database.

**Idempotency.** ``UNIQUE(channel, external_id)`` on messages. A batch first reads which keys already
exist; duplicates inside one batch resolve to the first; a duplicate committed by another process
between the read and the write makes the insert fail, the batch is rolled back and written again,
and this time the read finds it. Either way the same key never creates a second message.

**Threading.** A follow-up joins the open case of the same citizen, found by (in this order): the
ids it replies to on the same channel (e-mail In-Reply-To/References, the form id printed on a paper
reply form), a case token (``[#token]`` in the subject or found by the channel), or, for SMS and
phone, the same number within ``[queue] phone_thread_window_hours``. Different citizens are never
merged: an e-mail address or phone number that both sides know and that differs stops the join, and
so do differing names when nothing else identifies the citizen (paper).

**Automatic answers.** A request with ``auto_reply`` set (an out-of-office notice, an auto-responder) is
threaded like any follow-up but is stored as a message of kind ``auto_reply``: it changes nothing on the
case (no state, no SLA clock, no ``last_inbound_at``) and never opens a case. One that threads onto no
open case is not stored at all (:attr:`IntakeResult.dropped`); the channel says so in its log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from hub.queue.bulk import BulkWriter, cached_sql, converters
from hub.queue.cases import (
    OPEN_STATES,
    CaseState,
    SlaPolicy,
    StaleState,
    attachment_t,
    audit_t,
    case_t,
    message_t,
    new_case_token,
    token_clause,
    token_in_subject,
    transition,
)
from hub.queue.requests import PHONE_CHANNELS, Contact, InboundRequest
from hub.queue.settings import QueueSettings

log = logging.getLogger(__name__)

_OPEN = [s.value for s in OPEN_STATES]
_NEW = CaseState.NEW.value


@dataclass(frozen=True)
class IntakeResult:
    """What a channel tells its client: the case, its token and state; ``created`` is False for a repeat."""

    case_id: int
    token: str
    state: str
    created: bool
    message_id: int | None = None
    joined: bool = False  # the message joined an existing case (threading)
    dropped: bool = False  # an automatic answer that threads onto no open case: nothing was stored
    #: A case this request created: its columns as they were written (every column of ``hub_case``), for
    #: a channel that acts on the new case right after the commit without reading it back. None otherwise.
    case: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "token": self.token, "state": self.state}

    def json_bytes(self) -> bytes:
        """``json.dumps(self.to_json(), ensure_ascii=False)`` as UTF-8, in a fraction of its time.

        Every intake answer is this; json.dumps spends most of its time setting up the encoder.
        """
        return b'{"case_id": %d, "token": %s, "state": %s}' % (
            self.case_id, encode_basestring(self.token).encode(), encode_basestring(str(self.state)).encode())


class RequestRejected(ValueError):
    """The request breaks a limit of the configuration; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class IntakeUnavailable(RuntimeError):
    """The request could not be stored (database down, writer stopped); the channel answers 503/451."""


def check_limits(req: InboundRequest, settings: QueueSettings) -> None:
    """Raise :class:`RequestRejected` when ``req`` breaks a configured size limit."""
    if len(req.text) > settings.max_text_chars:
        raise RequestRejected(f"Der Text ist länger als {settings.max_text_chars} Zeichen", 413)
    if len(req.attachments) > settings.attachments_max_count:
        raise RequestRejected(f"Mehr als {settings.attachments_max_count} Anhänge", 413)
    total = 0
    for att in req.attachments:
        if len(att.data) > settings.attachment_max_bytes:
            raise RequestRejected(f"Ein Anhang ist größer als {settings.attachment_max_bytes} Bytes", 413)
        total += len(att.data)
    if total > settings.attachments_max_total_bytes:
        raise RequestRejected(f"Die Anhänge sind zusammen größer als {settings.attachments_max_total_bytes} Bytes", 413)


class AttachmentStore:
    """Attachment bytes in files named by their SHA-256 (so a repeat costs no space).

    A file is written completely and fsynced under a temporary name, then renamed: it is either
    absent or whole. Files are written before the row that refers to them is committed, so a crash
    can leave an unreferenced file (harmless, removed by :meth:`delete_unreferenced`) but never a
    row without its file.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return digest

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def delete_unreferenced(self, conn: Connection, digests: Sequence[str]) -> int:
        """Delete the files of ``digests`` that no attachment row refers to any more."""
        if not digests:
            return 0
        used = set(
            conn.execute(select(attachment_t.c.sha256).where(attachment_t.c.sha256.in_(list(digests)))).scalars()
        )
        removed = 0
        for digest in set(digests) - used:
            try:
                self.path(digest).unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed


# -- threading -------------------------------------------------------------------------------------


def _norm_name(name: str | None) -> str | None:
    return " ".join(name.casefold().split()) if name else None


def same_citizen(known: Mapping[str, Any], contact: Contact) -> bool:
    """Whether ``contact`` can be the citizen of a case whose contact columns are ``known``.

    An identifier both sides have must agree. An agreeing e-mail address settles it; a phone number
    does not (a household's landline, a shared mobile: two different names from one number are two
    citizens), so otherwise names both sides have must agree too.
    """
    emails = (known.get("contact_email"), contact.email)
    phones = (known.get("contact_phone"), contact.phone)
    if any(a and b and a != b for a, b in (emails, phones)):
        return False
    if emails[0] and emails[0] == emails[1]:
        return True
    a, b = _norm_name(known.get("contact_name")), _norm_name(contact.name)
    return not (a and b and a != b)


@dataclass
class _Pending:
    """A case created in the current batch (not yet inserted)."""

    values: dict[str, Any]
    id: int | None = None

    def row(self) -> dict[str, Any]:
        """The case as written: every column (NULL where intake wrote none), with its id."""
        return {**_CASE_COLUMNS, **self.values, "id": self.id}


_CASE_COLUMNS: dict[str, Any] = {c.key: None for c in case_t.columns}


# Built once (a statement built per batch cost a tenth of the threading's time): the cases of some numbers
# that heard from the citizen within the window; the open ones are picked in Python. With ``state IN (…)``
# in the query, SQLite (which has no statistics without ANALYZE) searched through the queue's index on
# ``state`` — every open case of the hub, for each batch: 3 ms a batch at 10,000 cases, a quarter of the
# writer's time, growing with the queue. The number's own index finds its few cases.
_BY_PHONES = (
    select(case_t)
    .where(case_t.c.contact_phone.in_(bindparam("phones", expanding=True)),
           case_t.c.last_inbound_at >= bindparam("since"))
    .order_by(case_t.c.last_inbound_at.desc())
)
_BY_PHONE = select(case_t).where(case_t.c.contact_phone == bindparam("phone")).order_by(
    case_t.c.last_inbound_at.desc())
_OPEN_SET = frozenset(_OPEN)


def _contact_cols(contact: Contact) -> dict[str, Any]:
    return {
        "contact_name": contact.name,
        "contact_email": contact.email,
        "contact_phone": contact.phone,
        "contact_address": contact.postal_address,
    }


def _phones_sql(dialect: Any, mark: str, n: int) -> str:
    """The numbers among ``n`` whose cases heard from the citizen since ``?`` (what :data:`_BY_PHONES` reads)."""
    fmt = dialect.identifier_preparer.format_table
    return cached_sql(("phones", dialect.name, n), lambda: (
        f"SELECT DISTINCT contact_phone FROM {fmt(case_t)} "
        f"WHERE contact_phone IN ({', '.join([mark] * n)}) AND last_inbound_at >= {mark}"))


def _existing_sql(dialect: Any, mark: str, n: int) -> str:
    """Messages (and their cases) with ``channel = ?`` and one of ``n`` external ids."""
    fmt = dialect.identifier_preparer.format_table
    return cached_sql(("existing", dialect.name, n), lambda: (
        f"SELECT m.external_id, m.id, c.id, c.token, c.state FROM {fmt(message_t)} AS m "
        f"JOIN {fmt(case_t)} AS c ON c.id = m.case_id "
        f"WHERE m.channel = {mark} AND m.external_id IN ({', '.join([mark] * n)})"))


class _Batch:
    """One group-commit transaction; see the module docstring for the rules."""

    def __init__(self, conn: Connection, now: datetime, settings: QueueSettings, policy: SlaPolicy,
                 store: AttachmentStore | None) -> None:
        self.conn = conn
        self.now = now
        self.settings = settings
        self.policy = policy
        self.store = store
        self.pending: list[_Pending] = []
        # Messages of this batch by key, with the case they went to (for replies within one batch).
        self.in_batch: dict[tuple[str, str], _Pending | dict[str, Any]] = {}
        self.pending_by_phone: dict[str, _Pending] = {}
        self.by_phone: dict[str, list[dict[str, Any]]] | None = None  # open cases by number (prefetch_phones)
        self.followups: dict[int, tuple[dict[str, Any], list[InboundRequest]]] = {}

    # The case a follow-up belongs to: a row of the database, a case of this batch, or None.
    def find_thread(self, req: InboundRequest) -> dict[str, Any] | _Pending | None:
        contact = req.contact
        if req.in_reply_to:
            for ref in req.in_reply_to:
                p = self.in_batch.get((req.channel, ref))
                if p is not None and same_citizen(p.values if isinstance(p, _Pending) else p, contact):
                    return p
            rows = self.conn.execute(
                select(case_t)
                .select_from(message_t.join(case_t, message_t.c.case_id == case_t.c.id))
                .where(
                    message_t.c.channel == req.channel,
                    message_t.c.external_id.in_(req.in_reply_to),
                    case_t.c.state.in_(_OPEN),
                )
                .order_by(message_t.c.id.desc())
            ).mappings().all()
            for row in rows:
                if same_citizen(row, contact):
                    return self._known(row)
        token = req.case_token or token_in_subject(req.subject)
        clause = token_clause(token) if token else None
        if clause is not None:
            row = self.conn.execute(
                select(case_t).where(clause, case_t.c.state.in_(_OPEN))
            ).mappings().first()
            if row is not None and same_citizen(row, contact):
                return self._known(row)
        window = self.settings.phone_thread_window_hours
        if req.channel in PHONE_CHANNELS and contact.phone and window > 0:
            p = self.pending_by_phone.get(contact.phone)
            if p is not None and same_citizen(p.values, contact):
                return p
            since = req.received_at - timedelta(hours=window)
            # The open case of this number that heard from the citizen last, within the window.
            row = next((r for r in self._open_by_phone(contact.phone) if r["last_inbound_at"] >= since), None)
            if row is not None and same_citizen(row, contact):
                return self._known(row)
        return None

    def prefetch_phones(self, reqs: Sequence[InboundRequest]) -> None:
        """Read the open cases of every number of this batch's SMS and calls in one query (not one a request)."""
        window = self.settings.phone_thread_window_hours
        wanted = [r for r in reqs if r.channel in PHONE_CHANNELS and r.contact.phone]
        if window <= 0 or not wanted:
            return
        since = min(r.received_at for r in wanted) - timedelta(hours=window)
        phones = sorted({r.contact.phone for r in wanted})
        found: dict[str, list[dict[str, Any]]] = {phone: [] for phone in phones}
        # Most numbers of a batch have written to no open case: which have is asked on the driver's cursor
        # first (no rows to convert), and only those numbers' cases are read through SQLAlchemy.
        ins = BulkWriter(self.conn)
        known = sorted({phone for start in range(0, len(phones), 500)
                        for (phone,) in ins.query(_phones_sql(self.conn.dialect, ins.mark, len(phones[start:start + 500])),
                                                  [*phones[start : start + 500], self._since_param(since)])})
        for start in range(0, len(known), 500):
            for row in self.conn.execute(_BY_PHONES, {"phones": known[start : start + 500], "since": since}
                                         ).mappings():
                if row["state"] in _OPEN_SET:
                    found[row["contact_phone"]].append(dict(row))
        self.by_phone = found

    def _since_param(self, since: datetime) -> Any:
        """``since`` as the driver gets it for ``last_inbound_at`` (the column type's conversion)."""
        convert = converters(case_t, self.conn.dialect).get("last_inbound_at")
        return convert(since) if convert is not None else since

    def _open_by_phone(self, phone: str) -> list[dict[str, Any]]:
        if self.by_phone is None or phone not in self.by_phone:  # not prefetched (a direct caller)
            return [dict(r) for r in self.conn.execute(_BY_PHONE, {"phone": phone}).mappings()
                    if r["state"] in _OPEN_SET]
        return self.by_phone[phone]

    def _known(self, row: Mapping[str, Any]) -> dict[str, Any]:
        # Several follow-ups of one batch share one snapshot of their case.
        entry = self.followups.get(row["id"])
        return entry[0] if entry else dict(row)

    def new_case(self, req: InboundRequest) -> _Pending:
        received = req.received_at
        p = _Pending(
            {
                "token": new_case_token(),
                "state": _NEW,
                "channel": req.channel,
                "created_at": received,
                "updated_at": self.now,
                "state_changed_at": self.now,
                "last_inbound_at": received,
                **_contact_cols(req.contact),
                "location": req.location,
                "requested_service_id": req.service_id,
                "reply_channel": req.reply_channel,
                "first_response_due": self.policy.first_response_due(received),
                "sla_pauses": [],
                "attempts": 0,
            }
        )
        self.pending.append(p)
        if req.contact.phone:
            self.pending_by_phone.setdefault(req.contact.phone, p)
        return p

    def write(self, reqs: Sequence[InboundRequest]) -> list[IntakeResult]:
        conn = self.conn
        by_channel: dict[str, set[str]] = {}
        for r in reqs:
            by_channel.setdefault(r.channel, set()).add(r.external_id)
        existing: dict[tuple[str, str], IntakeResult] = {}
        ins = BulkWriter(conn)
        for channel, ids in by_channel.items():
            # "channel = ? AND external_id IN (...)" uses the unique index on SQLite; a row-value
            # "(channel, external_id) IN (...)" would scan the whole table.
            ids_list = sorted(ids)
            for chunk in range(0, len(ids_list), 500):
                part = ids_list[chunk : chunk + 500]
                for ext, mid, cid, token, state in ins.query(_existing_sql(conn.dialect, ins.mark, len(part)),
                                                             [channel, *part]):
                    existing[(channel, ext)] = IntakeResult(cid, token, state, created=False, message_id=mid)

        self.prefetch_phones(reqs)
        # Decide, per request, where its message goes.
        # ("existing", result) | ("dup", index of the first) | ("msg", (target case, joined?))
        plan: list[tuple[str, Any]] = []
        first_of: dict[tuple[str, str], int] = {}
        for i, req in enumerate(reqs):
            key = req.key()
            if key in existing:
                plan.append(("existing", existing[key]))
                continue
            if key in first_of:
                plan.append(("dup", first_of[key]))
                continue
            first_of[key] = i
            target = self.find_thread(req)
            joined = target is not None
            if req.auto_reply:  # recorded on its case, changes nothing there, never opens one
                if target is None:
                    plan.append(("dropped", None))
                else:
                    self.in_batch[key] = target
                    plan.append(("msg", (target, True)))
                continue
            if target is None:
                target = self.new_case(req)
            elif isinstance(target, dict):
                self.followups.setdefault(target["id"], (target, []))[1].append(req)
            else:  # a follow-up of a case created earlier in this batch
                target.values["last_inbound_at"] = max(target.values["last_inbound_at"], req.received_at)
            self.in_batch[key] = target
            plan.append(("msg", (target, joined)))

        # RETURNING is matched up by a unique column rather than by position: with
        # sort_by_parameter_order SQLAlchemy would insert into SQLite one row per statement.
        if self.pending:
            ids = dict(ins.insert(case_t, [p.values for p in self.pending], ("token", "id")))
            for p in self.pending:
                p.id = ids[p.values["token"]]
            ins.insert(audit_t, [
                {"case_id": p.id, "at": self.now, "actor": f"intake:{p.values['channel']}",
                 "action": "create", "from_state": None, "to_state": _NEW, "reason": None}
                for p in self.pending
            ])

        msg_rows: list[dict[str, Any]] = []
        msg_req: list[InboundRequest] = []
        for (kind, value), req in zip(plan, reqs, strict=True):
            if kind != "msg":
                continue
            target = value[0]
            case_id = target.id if isinstance(target, _Pending) else target["id"]
            msg_rows.append(
                {
                    "case_id": case_id, "direction": "in", "kind": "auto_reply" if req.auto_reply else "request",
                    "author": f"auto-reply: {req.auto_reply}"[:200] if req.auto_reply else None,
                    "channel": req.channel,
                    "external_id": req.external_id, "created_at": self.now, "received_at": req.received_at,
                    "subject": req.subject, "text": req.text, "location": req.location, "raw_ref": req.raw_ref,
                    "send_attempts": 0,
                }
            )
            msg_req.append(req)
        msg_ids: list[int] = []
        if msg_rows:
            by_key = {(channel, ext): mid
                      for mid, channel, ext in ins.insert(message_t, msg_rows, ("id", "channel", "external_id"))}
            msg_ids = [by_key[(m["channel"], m["external_id"])] for m in msg_rows]
        att_rows = []
        for mid, req in zip(msg_ids, msg_req, strict=True):
            for att in req.attachments:
                if att.url is not None:  # kept by the provider: the URL is recorded, no file is written
                    att_rows.append({
                        "message_id": mid, "filename": att.filename, "content_type": att.content_type,
                        "size_bytes": 0, "sha256": hashlib.sha256(att.url.encode()).hexdigest(),
                        "created_at": self.now, "url": att.url,
                    })
                    continue
                if self.store is None:
                    raise RequestRejected("Dieser Hub nimmt keine Anhänge an")
                att_rows.append({
                    "message_id": mid, "filename": att.filename, "content_type": att.content_type,
                    "size_bytes": len(att.data), "sha256": self.store.put(att.data), "created_at": self.now,
                    "url": None,
                })
        if att_rows:
            conn.execute(insert(attachment_t), att_rows)

        states = {case_id: self._follow_up(row, reqs_) for case_id, (row, reqs_) in self.followups.items()}

        results: list[IntakeResult] = []
        msg_iter = iter(msg_ids)
        for kind, value in plan:
            if kind == "existing":
                results.append(value)
            elif kind == "dropped":
                results.append(IntakeResult(0, "", "", False, None, dropped=True))
            elif kind == "dup":
                first = results[value]
                results.append(IntakeResult(first.case_id, first.token, first.state, False, first.message_id,
                                            first.joined, first.dropped))
            else:
                target, joined = value
                if isinstance(target, _Pending):
                    results.append(IntakeResult(target.id, target.values["token"], _NEW, True,
                                                next(msg_iter), joined=joined,
                                                case=None if joined else target.row()))
                else:
                    results.append(IntakeResult(target["id"], target["token"],
                                                states.get(target["id"], target["state"]), True,
                                                next(msg_iter), joined=True))
        return results

    def _follow_up(self, row: dict[str, Any], reqs: list[InboundRequest]) -> str:
        """Update a case that got follow-ups; reopen it where the state says the citizen was awaited."""
        latest = max(r.received_at for r in reqs)
        values: dict[str, Any] = {"updated_at": self.now}
        if row["last_inbound_at"] is None or latest > row["last_inbound_at"]:
            values["last_inbound_at"] = latest
        for req in reqs:  # fill gaps in the contact, never overwrite
            for col, value in _contact_cols(req.contact).items():
                if value and not row.get(col) and col not in values:
                    values[col] = value
            if req.location and not row.get("location") and "location" not in values:
                values["location"] = req.location
        state = row["state"]
        target: str | None = None
        if state == CaseState.WAITING_FOR_CITIZEN:
            target = row.get("resume_state") or _NEW
        elif state == CaseState.ANSWERED:
            target = CaseState.ROUTED.value if row.get("authority_id") else CaseState.NEEDS_CLARIFICATION.value
        if target is None:
            self.conn.execute(update(case_t).where(case_t.c.id == row["id"]).values(**values))
            return state
        transition(self.conn, row, target, actor=f"intake:{reqs[-1].channel}", reason="the citizen wrote again",
                   policy=self.policy, now=self.now, values=values, action="follow_up")
        return target


_RETRIES = 5


def write_requests(
    engine: Engine,
    reqs: Sequence[InboundRequest],
    *,
    settings: QueueSettings | None = None,
    policy: SlaPolicy | None = None,
    store: AttachmentStore | None = None,
    connection: Connection | None = None,
) -> list[IntakeResult]:
    """Store ``reqs`` in one transaction and return one result per request, in order.

    Retries when a concurrent writer (another process) committed one of the same keys first or
    changed a case this batch joins. ``connection`` (not in a transaction) is used instead of one
    from the pool: the intake writer keeps its own.
    """
    return _write_batch(engine, reqs, settings=settings, policy=policy, store=store, connection=connection)[0]


#: What :func:`_write_batch` returns for the companions' writes when they failed (and were rolled back).
_FAILED = object()


def _write_batch(
    engine: Engine,
    reqs: Sequence[InboundRequest],
    *,
    settings: QueueSettings | None = None,
    policy: SlaPolicy | None = None,
    store: AttachmentStore | None = None,
    connection: Connection | None = None,
    then: Callable[[Connection, list[IntakeResult]], Any] | None = None,
) -> tuple[list[IntakeResult], Any]:
    """:func:`write_requests`, and ``then(conn, results)`` in the same transaction after intake's writes.

    ``then`` runs under a SAVEPOINT: when it raises, only its own writes are rolled back, the requests are
    committed all the same and the second value is :data:`_FAILED` (its caller writes them another way).
    """
    settings = settings or QueueSettings()
    policy = policy or SlaPolicy()
    # The inserts run on the driver's cursor (:class:`~hub.queue.bulk.BulkWriter`), so a unique key that another
    # process committed first raises the driver's own IntegrityError, not SQLAlchemy's.
    conflicts = (IntegrityError, StaleState, engine.dialect.dbapi.IntegrityError)
    for attempt in range(_RETRIES):
        try:
            if connection is not None:
                with connection.begin():
                    return _batch_then(connection, reqs, settings, policy, store, then)
            with engine.begin() as conn:
                return _batch_then(conn, reqs, settings, policy, store, then)
        except conflicts:
            if attempt == _RETRIES - 1:
                raise
            log.info("intake batch of %d raced another writer; writing it again", len(reqs))
    raise AssertionError("unreachable")


def _batch_then(conn: Connection, reqs: Sequence[InboundRequest], settings: QueueSettings, policy: SlaPolicy,
                store: AttachmentStore | None, then: Callable[[Connection, list[IntakeResult]], Any] | None
                ) -> tuple[list[IntakeResult], Any]:
    results = _Batch(conn, datetime.now(UTC), settings, policy, store).write(reqs)
    if then is None:
        return results, None
    try:
        with conn.begin_nested():
            return results, then(conn, results)
    except Exception:  # the companions' writes only: the stored requests stay and are committed
        log.warning("the writes after an intake batch of %d failed; they are written on their own", len(reqs),
                    exc_info=True)
        return results, _FAILED


# -- the group-commit writer -------------------------------------------------------------------------


class BatchCompanion(Protocol):
    """A channel's writes for some requests of a batch, in the batch's transaction (:meth:`IntakeWriter.add_companion`).

    One commit for the requests and what the channel writes for them (a direct answer, a call's turn), and
    one wake-up of each event loop for both. Accept, store, then acknowledge holds: a handler's futures are
    answered only after the commit. :meth:`write` runs under a SAVEPOINT after intake's writes: when it raises,
    its writes alone are rolled back, the requests are committed and :meth:`write_alone` writes its share
    after the commit (as it does when the batch itself failed and its requests were written one by one).
    """

    def take(self, reqs: list[InboundRequest]) -> Any | None:
        """This companion's share of the batch (None: nothing), taken once, before the transaction."""

    def write(self, conn: Connection, share: Any, outcomes: list[IntakeResult]) -> list[tuple[Any, Any, Any]]:
        """Write ``share`` in the batch's transaction; ``(future, loop, value)`` to answer after the commit
        (``loop`` None for a :class:`concurrent.futures.Future`). May run again when the batch is retried."""

    def write_alone(self, share: Any, outcomes: list[Any]) -> list[tuple[Any, Any, Any]]:
        """Write ``share`` after the commit, outside the batch's transaction (an outcome may be an exception)."""


# -- the group-commit writer -------------------------------------------------------------------------

_STOP = object()


class IntakeWriter:
    """The one writer thread of intake in this process (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        settings: QueueSettings | None = None,
        policy: SlaPolicy | None = None,
        store: AttachmentStore | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings or QueueSettings()
        self.policy = policy or SlaPolicy()
        self.store = store if store is not None else AttachmentStore(self.settings.attachment_dir)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # lists of (request, future, loop), or _STOP
        self._outgoing: dict[asyncio.AbstractEventLoop, list[tuple[InboundRequest, Any, Any]]] = {}
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[list[InboundRequest], list[Any]], None]] = []
        self._observers: list[Callable[[list[InboundRequest], list[Any]], None]] = []
        self._companions: list[BatchCompanion] = []
        self._conn: Connection | None = None  # the writer thread's own (see _connection)
        self.batches = 0
        self.written = 0
        self.last_batch = 0
        self._last_batch_at = float("-inf")
        self._batch_average = 0.0

    def add_listener(self, callback: Callable[[list[InboundRequest], list[Any]], None], *, first: bool = False
                     ) -> None:
        """Call ``callback(requests, outcomes)`` in the writer thread after each batch.

        An outcome is an :class:`IntakeResult` or the exception the request failed with. ``first`` puts it
        before the listeners already there: a channel that answers some requests itself writes that before
        the routing stage is woken (by the queue's own listener), so routing never takes up a case that is
        answered already.
        """
        if first:
            self._listeners.insert(0, callback)
        else:
            self._listeners.append(callback)

    def add_observer(self, callback: Callable[[list[InboundRequest], list[Any]], None]) -> None:
        """Call ``callback(requests, outcomes)`` in the writer thread after each batch's commit and *before*
        any handler waiting for it is answered (the listeners run after that).

        For the figures (``/metrics``): counted before the acknowledgement, they never lag behind what a
        client has been told is stored — a scrape right after a 2xx, SMTP 250 or TwiML shows it. It must be
        cheap and must not write; an exception is logged and does not stop intake.
        """
        self._observers.append(callback)

    def add_companion(self, companion: BatchCompanion) -> None:
        """Write ``companion``'s part of each batch in the batch's own transaction (see :class:`BatchCompanion`)."""
        self._companions.append(companion)

    def start(self) -> IntakeWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="intake-writer", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    @property
    def saturated(self) -> bool:
        """Whether requests are arriving faster than one at a time (background work should yield)."""
        # A moving average, so that one burst (a slow commit, a GC pause) does not count: only
        # sustained load does, when batches stay large.
        recent = time.monotonic() - self._last_batch_at < 0.1
        return recent and self._batch_average >= 8

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def submit(self, req: InboundRequest) -> IntakeResult:
        """Store ``req``; returns after the commit. Raises RequestRejected / IntakeUnavailable."""
        check_limits(req, self.settings)
        if not self.running:
            raise IntakeUnavailable("the intake writer is not running")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        # Hand-over in bulk: the requests of one turn of the event loop go to the writer thread as
        # one queue item, so the thread is woken (and takes the GIL from the loop) once per turn,
        # not once per request.
        pending = self._outgoing.get(loop)
        if pending is None:
            pending = self._outgoing[loop] = []
            loop.call_soon(self._hand_over, loop)
        pending.append((req, future, loop))
        return await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        items = self._outgoing.pop(loop, None)
        if not items:
            return
        if not self.running:  # stopped since these were submitted: nobody would write them
            _resolve([(entry, IntakeUnavailable("the intake writer stopped")) for entry in items])
            return
        self._queue.put(items)

    def submit_sync(self, req: InboundRequest, timeout: float | None = 60.0) -> IntakeResult:
        """Like :meth:`submit`, for code that runs in a thread rather than on the event loop."""
        check_limits(req, self.settings)
        if not self.running:
            raise IntakeUnavailable("the intake writer is not running")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put([(req, future, None)])
        return future.result(timeout)

    def _run(self) -> None:
        stop = False
        carry: list[tuple[InboundRequest, Any, Any]] = []
        limit = self.settings.batch_max
        while not stop or carry:
            if not carry:
                item = self._queue.get()
                if item is _STOP:
                    break
                carry = list(item)
            while len(carry) < limit and not stop:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                carry.extend(nxt)
            batch, carry = carry[:limit], carry[limit:]
            self._write(batch)
        self._drop_connection()
        # Nobody will write what is still queued: fail it so no handler waits for ever.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                _resolve([(entry, IntakeUnavailable("the intake writer stopped")) for entry in item])

    def _connection(self) -> Connection:
        """The writer thread's connection, kept from batch to batch.

        A connection from the pool per batch cost as much as writing a small batch: the checkout,
        the reset when it goes back, and on PostgreSQL the pre-ping round trip.
        """
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._drop_connection()
            self._conn = self.engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                log.debug("closing the intake connection failed", exc_info=True)

    def _write(self, batch: list[tuple[InboundRequest, Any, Any]]) -> None:
        reqs = [req for req, _, _ in batch]
        self.last_batch = len(batch)
        now = time.monotonic()
        if now - self._last_batch_at > 0.1:  # a pause: the load that made the average is over
            self._batch_average = float(len(batch))
        else:
            self._batch_average += 0.1 * (len(batch) - self._batch_average)
        self._last_batch_at = now
        outcome: list[Any]
        # What the companions have in this batch, taken before the transaction (a retry writes it again).
        shares = [(c, c.take(reqs)) for c in self._companions]
        shares = [(c, share) for c, share in shares if share is not None]
        written: Any = _FAILED
        settled: list[tuple[Any, Any, Any]] = []  # the companions' (future, loop, value), answered with the batch

        def then(conn: Connection, results: list[IntakeResult]) -> list[tuple[Any, Any, Any]]:
            return [entry for c, share in shares for entry in c.write(conn, share, results)]

        try:
            outcome, written = _write_batch(self.engine, reqs, settings=self.settings, policy=self.policy,
                                            store=self.store, connection=self._connection(),
                                            then=then if shares else None)
            outcome = list(outcome)
        except Exception:
            # The connection may be what failed (the server restarted): the next write takes a new one.
            self._drop_connection()
            if len(batch) == 1:
                log.exception("intake of one %s request failed", reqs[0].channel)
                outcome = [_as_failure(batch[0][0])]
            else:
                # One bad request must not fail the others: write them one by one.
                log.warning("intake batch of %d failed; writing its requests one by one", len(batch))
                outcome = []
                for req in reqs:
                    try:
                        outcome.extend(write_requests(self.engine, [req], settings=self.settings,
                                                      policy=self.policy, store=self.store))
                    except Exception:
                        log.exception("intake of one %s request failed", req.channel)
                        outcome.append(_as_failure(req))
        if written is not _FAILED:
            settled = written or []
        else:  # the companions' writes failed with the batch or were rolled back: each on its own now
            for c, share in shares:
                try:
                    settled.extend(c.write_alone(share, outcome))
                except Exception:  # a companion must never stop intake
                    log.exception("intake companion failed")
        self.batches += 1
        self.written += sum(1 for r in outcome if isinstance(r, IntakeResult) and r.created)
        for observer in self._observers:
            try:
                observer(reqs, outcome)
            except Exception:  # the figures must never stop intake
                log.exception("intake observer failed")
        _resolve([*zip(batch, outcome, strict=True), *(((None, f, lp), v) for f, lp, v in settled)])
        for listener in self._listeners:
            try:
                listener(reqs, outcome)
            except Exception:  # a listener must never stop intake
                log.exception("intake listener failed")


def _as_failure(req: InboundRequest) -> Exception:
    return IntakeUnavailable("the request could not be stored")


def _resolve(pairs: list[tuple[tuple[Any, Any, Any], Any]]) -> None:
    """Hand results to the waiting handlers: one callback per event loop, not one per request."""
    by_loop: dict[Any, list[tuple[Any, Any]]] = {}
    for (_req, future, loop), outcome in pairs:
        if loop is None:
            if not future.done():
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        else:
            by_loop.setdefault(loop, []).append((future, outcome))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # the loop is closed: its handlers are gone
            pass


def _settle(items: list[tuple[asyncio.Future, Any]]) -> None:
    for future, outcome in items:
        if future.done():  # the handler was cancelled
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
