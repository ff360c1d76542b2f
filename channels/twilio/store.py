"""The Twilio channels' own tables: calls in progress, SMS opt-outs, delivery reports.

* ``twilio_call`` — one row per call (by ``CallSid``): the menu's step, the caller's number, what they said
  and the number to call back while the call lasts; the outcome and the case afterwards. The personal
  columns are emptied when the call ends (status callback) and by ``purge`` for calls that never reported
  their end; the transcript itself lives in the call's phone case, where ``purge`` and ``forget`` treat it
  like any message.
* ``twilio_opt_out`` — numbers that sent STOP (or that Twilio reported as unsubscribed, error 21610); no
  SMS goes to them until they send START. ``forget --phone`` deletes the row (with the cases there is
  nothing left to send).
* ``twilio_delivery`` — the Twilio ``MessageSid`` and the last delivery status of each outbound SMS; no
  personal data.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Integer,
    String,
    Text,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, SQLModel

import hub.console.calls  # noqa: F401  (hub_call, which twilio_call refers to)
import hub.queue.cases  # noqa: F401  (hub_case and hub_message, which the tables refer to)
from hub.queue.bulk import BulkWriter, cached_sql
from hub.queue.requests import normalise_phone
from knowledge.columns import UtcDateTime


class TwilioCall(SQLModel, table=True):
    """One call to the hub's number and where it is in the phone menu."""

    __tablename__ = "twilio_call"

    id: int | None = Field(default=None, primary_key=True)
    call_sid: str = Field(sa_column=Column(String(34), nullable=False, unique=True))
    started_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False, index=True))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    ended_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    step: str = Field(sa_column=Column(String(16), nullable=False))
    tries: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    turns: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    #: Personal while the call lasts (emptied at its end):
    caller: str | None = Field(default=None, sa_column=Column(String(20)))
    concern: str | None = Field(default=None, sa_column=Column(Text))
    place: str | None = Field(default=None, sa_column=Column(String(500)))
    pending_number: str | None = Field(default=None, sa_column=Column(String(20)))
    #: What the call came to:
    service_id: str | None = Field(default=None, sa_column=Column(String(100)))
    authority_id: str | None = Field(default=None, sa_column=Column(String(100)))
    outcome: str | None = Field(default=None, sa_column=Column(String(16), index=True))
    transfer_result: str | None = Field(default=None, sa_column=Column(String(32)))
    queue_seconds: int | None = Field(default=None, sa_column=Column(Integer))
    duration_seconds: int | None = Field(default=None, sa_column=Column(Integer))
    case_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("hub_case.id", ondelete="SET NULL"), index=True))
    hub_call_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("hub_call.id", ondelete="SET NULL")))
    extra: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class SmsOptOut(SQLModel, table=True):
    """A number that asked for no more SMS (STOP); removed by START."""

    __tablename__ = "twilio_opt_out"

    phone: str = Field(sa_column=Column(String(20), primary_key=True))
    opted_out_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    source: str = Field(sa_column=Column(String(32), nullable=False))  # keyword | twilio | undeliverable


class SmsDelivery(SQLModel, table=True):
    """Twilio's id and the last delivery status of one outbound SMS."""

    __tablename__ = "twilio_delivery"

    message_id: int = Field(sa_column=Column(Integer, ForeignKey("hub_message.id", ondelete="CASCADE"),
                                             primary_key=True))
    message_sid: str | None = Field(default=None, sa_column=Column(String(34), unique=True))
    status: str = Field(sa_column=Column(String(24), nullable=False))
    error_code: int | None = Field(default=None, sa_column=Column(Integer))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


call_t = TwilioCall.__table__
opt_out_t = SmsOptOut.__table__
delivery_t = SmsDelivery.__table__

#: Columns of ``twilio_call`` that hold personal data (emptied at the end of the call and by purge).
PERSONAL_CALL_COLUMNS = ("caller", "concern", "place", "pending_number")


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


# -- opt-outs --------------------------------------------------------------------------------------------------


def is_opted_out(conn: Connection, phone: str) -> bool:
    return conn.execute(select(opt_out_t.c.phone).where(opt_out_t.c.phone == phone)).first() is not None


def opted_out_among(conn: Connection, phones: Iterable[str]) -> set[str]:
    """Which of ``phones`` opted out: one query for the SMS of an intake batch (on the driver's cursor, in
    the caller's transaction; the statement for each number of numbers is built once)."""
    phones = sorted(set(phones))
    found: set[str] = set()
    if not phones:
        return found
    writer = BulkWriter(conn)
    table = conn.dialect.identifier_preparer.format_table(opt_out_t)
    for start in range(0, len(phones), 500):
        part = phones[start : start + 500]
        marks = ", ".join([writer.mark] * len(part))
        sql = cached_sql(("twilio-opted-out", conn.dialect.name, len(part)),
                         lambda: f"SELECT phone FROM {table} WHERE phone IN ({marks})")  # noqa: B023 - called at once
        found.update(phone for (phone,) in writer.query(sql, part))
    return found


def _insert_once(conn: Connection, table: Any, key: str, values: dict[str, Any]) -> bool:
    """``INSERT … ON CONFLICT (key) DO NOTHING``: True when the row is new (another process may have won)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    result = conn.execute(dialect_insert(table).values(**values).on_conflict_do_nothing(index_elements=[key]))
    return bool(result.rowcount)


def opt_out(conn: Connection, phone: str, source: str, now: datetime | None = None) -> bool:
    """Record that ``phone`` wants no more SMS; False when it was recorded already."""
    return _insert_once(conn, opt_out_t, "phone", {"phone": phone, "opted_out_at": _now(now), "source": source})


def opt_in(conn: Connection, phone: str) -> bool:
    """``phone`` sent START: SMS may go there again. False when it had not opted out."""
    return bool(conn.execute(delete(opt_out_t).where(opt_out_t.c.phone == phone)).rowcount)


def opted_out_checker(engine: Engine):
    """A callable ``number -> bool`` for the SMS adapter (runs the query in a thread)."""
    import asyncio

    def check(phone: str) -> bool:
        with engine.connect() as conn:
            return is_opted_out(conn, phone)

    async def acheck(phone: str) -> bool:
        return await asyncio.to_thread(check, phone)

    return acheck


# -- calls -----------------------------------------------------------------------------------------------------


def get_call(conn: Connection, call_sid: str) -> dict[str, Any] | None:
    row = conn.execute(select(call_t).where(call_t.c.call_sid == call_sid)).mappings().first()
    return dict(row) if row else None


def start_call(conn: Connection, call_sid: str, caller: str | None, step: str,
               now: datetime | None = None, *, known: bool = True) -> dict[str, Any]:
    """The call's row, created on its first webhook (a repeat of that webhook finds the same row).

    ``known=False``: the caller's turn found no row a moment ago, so the insert is tried first (one
    statement, ``RETURNING`` the row) and the row is read only when another writer was first."""
    if known:
        row = get_call(conn, call_sid)
        if row is not None:
            return row
    now = _now(now)
    values = {"call_sid": call_sid, "started_at": now, "updated_at": now, "step": step, "tries": 0, "turns": 0,
              "caller": caller, "extra": {}}
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    created = conn.execute(dialect_insert(call_t).values(**values).on_conflict_do_nothing(index_elements=["call_sid"])
                           .returning(*call_t.columns)).mappings().first()
    if created is not None:
        return dict(created)
    row = get_call(conn, call_sid)
    assert row is not None
    return row


def update_call(conn: Connection, call_id: int, now: datetime | None = None, **values: Any) -> None:
    # One statement built once: the columns set are the parameters' (compiled once per set of columns).
    conn.execute(_UPDATE_CALL, {**values, "updated_at": _now(now), "_call_id": call_id})


_UPDATE_CALL = update(call_t).where(call_t.c.id == bindparam("_call_id"))


def end_call(conn: Connection, call_sid: str, *, duration: int | None, now: datetime | None = None
             ) -> dict[str, Any] | None:
    """The call ended: note when and how long, and drop what is personal. Returns the row as it was."""
    row = get_call(conn, call_sid)
    if row is None:
        return None
    now = _now(now)
    values: dict[str, Any] = {col: None for col in PERSONAL_CALL_COLUMNS}
    values |= {"ended_at": row["ended_at"] or now, "updated_at": now}
    if duration is not None:
        values["duration_seconds"] = duration
    conn.execute(update(call_t).where(call_t.c.id == row["id"]).values(**values))
    return row


def forget_calls(conn: Connection, phones: Iterable[str], case_ids: Iterable[int]) -> int:
    """Delete the call rows of these numbers or cases (the right to erasure); returns how many."""
    phones, case_ids = list(phones), list(case_ids)
    conditions = []
    if phones:
        conditions += [call_t.c.caller.in_(phones), call_t.c.pending_number.in_(phones)]
    if case_ids:
        conditions.append(call_t.c.case_id.in_(case_ids))
    if not conditions:
        return 0
    return conn.execute(delete(call_t).where(or_(*conditions))).rowcount or 0


def purge_calls(conn: Connection, older_than: timedelta = timedelta(hours=12), case_ids: Iterable[int] = (),
                now: datetime | None = None) -> int:
    """Empty the personal columns of calls that never reported their end, and of purged cases' calls."""
    limit = _now(now) - older_than
    ids = list(case_ids)
    where = or_(call_t.c.updated_at < limit, call_t.c.case_id.in_(ids)) if ids else call_t.c.updated_at < limit
    personal = or_(*(call_t.c[col].isnot(None) for col in PERSONAL_CALL_COLUMNS))
    return conn.execute(update(call_t).where(where, personal)
                        .values({col: None for col in PERSONAL_CALL_COLUMNS})).rowcount or 0


# -- deliveries ------------------------------------------------------------------------------------------------


def record_delivery(conn: Connection, message_id: int, status: str, *, message_sid: str | None = None,
                    error_code: int | None = None, now: datetime | None = None) -> None:
    now = _now(now)
    row = conn.execute(select(delivery_t).where(delivery_t.c.message_id == message_id)).mappings().first()
    if row is None:
        conn.execute(insert(delivery_t).values(message_id=message_id, message_sid=message_sid, status=status,
                                               error_code=error_code, updated_at=now))
        return
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if message_sid and not row["message_sid"]:
        values["message_sid"] = message_sid
    if error_code is not None:
        values["error_code"] = error_code
    conn.execute(update(delivery_t).where(delivery_t.c.message_id == message_id).values(**values))


# -- privacy (hub.queue.privacy calls this through the channel's descriptor) -------------------------------------


class TwilioPrivacy:
    """``purge`` and ``forget`` for the Twilio tables (see :class:`hub.plugins.Channel`)."""

    def purge(self, conn: Connection, case_ids: list[int], now: datetime) -> int:
        """Empty the calls' personal columns: of purged cases, and of calls that never reported their end."""
        return purge_calls(conn, case_ids=case_ids, now=now)

    def forget(self, conn: Connection, case_ids: list[int], emails: list[str], phones: list[str]) -> int:
        """Delete the calls of these cases and numbers and the numbers' opt-outs."""
        removed = forget_calls(conn, phones, case_ids)
        if phones:
            removed += conn.execute(delete(opt_out_t).where(opt_out_t.c.phone.in_(phones))).rowcount or 0
        return removed


PRIVACY = TwilioPrivacy()


def recipient_refusal(conn: Connection, channel: str, recipient: str) -> str | None:
    """``Channel.recipients``: an answer by SMS (to an ``sms`` or ``phone`` case) cannot reach a number that sent
    STOP. Read in the agent's transaction, so the answer is refused before the case counts as answered."""
    try:
        number = normalise_phone(recipient)
    except ValueError:
        return None  # not a number: the adapter refuses it with its own reason
    if is_opted_out(conn, number):
        return ("Die Nummer hat SMS abbestellt (STOP); eine SMS erreicht sie nicht. Bitte antworten Sie auf "
                "anderem Weg (Anruf, E-Mail, Brief); mit START kann der Bürger SMS wieder einschalten.")
    return None
