"""Cases, their messages and the rules that move them.

A **case** is one citizen concern with all its messages in both directions. It moves through the
states of :data:`TRANSITIONS`; :func:`transition` is the only way to change a case's state: it rejects
moves the table does not allow, refuses to act on a state that changed under it (compare-and-set),
keeps the SLA clock (pausing it while the hub waits for the citizen) and writes one row into the
append-only audit log.

Tables (prefixed ``hub_`` so that no name is an SQL keyword such as ``case``):

* :class:`Case` – state, citizen contact, route (service, authority), agent, SLA deadlines, claim.
* :class:`Message` – inbound and outbound messages; outbound ones carry the outbox state.
  ``UNIQUE(channel, external_id)`` is the idempotency key of intake.
* :class:`Attachment` – metadata only; the bytes live in files named by their SHA-256.
* :class:`AuditEntry` – who, when, from, to, why. Holds no personal data, survives ``forget``.
* :class:`LabelledExample` – an agent's correction of a route, for improving the router.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    insert,
    or_,
    update,
)
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from hub.queue.bulk import BulkWriter
from hub.queue.sla import SlaClock, SlaSettings
from knowledge.columns import UtcDateTime, utcnow


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UtcDateTime, nullable=nullable, index=index))


class CaseState(StrEnum):
    NEW = "new"
    ROUTED = "routed"
    NEEDS_CLARIFICATION = "needs_clarification"
    WAITING_FOR_CITIZEN = "waiting_for_citizen"
    ANSWERED = "answered"
    FORWARDED = "forwarded"
    CLOSED = "closed"
    DEAD_LETTER = "dead_letter"


S = CaseState

#: The states as agents and citizens read them: the one German name of each state (console, API messages).
STATE_LABELS: dict[str, str] = {
    "new": "neu", "routed": "zugeordnet", "needs_clarification": "zu klären", "waiting_for_citizen": "wartet auf Bürger",
    "answered": "beantwortet", "forwarded": "weitergeleitet", "closed": "geschlossen", "dead_letter": "unzustellbar",
}


def state_label(state: str | None) -> str:
    """The German name of a state (the value itself when it is none of ours)."""
    return STATE_LABELS.get(str(state), str(state))

#: Allowed moves. Anything else is rejected by :func:`transition`.
TRANSITIONS: dict[CaseState, frozenset[CaseState]] = {
    S.NEW: frozenset({S.ROUTED, S.NEEDS_CLARIFICATION, S.DEAD_LETTER}),
    S.ROUTED: frozenset({S.ANSWERED, S.FORWARDED, S.NEEDS_CLARIFICATION, S.WAITING_FOR_CITIZEN, S.CLOSED}),
    S.NEEDS_CLARIFICATION: frozenset(
        {S.ROUTED, S.ANSWERED, S.FORWARDED, S.WAITING_FOR_CITIZEN, S.CLOSED, S.DEAD_LETTER}
    ),
    # The citizen answered: back to where the case was (or to routing when that is unknown).
    S.WAITING_FOR_CITIZEN: frozenset({S.NEW, S.ROUTED, S.NEEDS_CLARIFICATION, S.FORWARDED, S.CLOSED}),
    # A follow-up to an answer reopens the case.
    S.ANSWERED: frozenset({S.CLOSED, S.ROUTED, S.NEEDS_CLARIFICATION}),
    S.FORWARDED: frozenset({S.ANSWERED, S.WAITING_FOR_CITIZEN, S.ROUTED, S.NEEDS_CLARIFICATION, S.CLOSED}),
    S.CLOSED: frozenset(),
    # An operator may send a dead letter through the queue again once the cause is fixed.
    S.DEAD_LETTER: frozenset({S.NEW, S.CLOSED}),
}

#: States in which a case is finished: a follow-up starts a new case, nothing is overdue.
FINAL_STATES = frozenset({S.CLOSED, S.DEAD_LETTER})
OPEN_STATES = frozenset(CaseState) - FINAL_STATES


class TransitionError(Exception):
    """A state change that cannot be made; the message says why, in German (HTTP 409).

    ``code`` is the stable, machine-readable kind of refusal (the JSON API's ``code``); ``details`` the
    machine-readable facts a client needs (case id, states), never personal data."""

    code = "conflict"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class InvalidTransition(TransitionError):
    code = "invalid_transition"


class StaleState(TransitionError):
    """The case changed state between reading and writing it (another agent or worker was faster)."""

    code = "stale_state"


class Case(SQLModel, table=True):
    """One citizen concern."""

    __tablename__ = "hub_case"
    # Few indexes on purpose: every one costs on each intake. The queue index also serves "by state";
    # contact columns serve threading and forget, authority the agents' lists.
    __table_args__ = (Index("ix_hub_case_queue", "state", "claimed_until"),)

    id: int | None = Field(default=None, primary_key=True)
    token: str = Field(sa_column=Column(String(32), nullable=False, unique=True))
    state: str = Field(sa_column=Column(String(32), nullable=False))
    channel: str = Field(sa_column=Column(String(16), nullable=False))
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    state_changed_at: datetime = _ts(nullable=False)
    last_inbound_at: datetime = _ts(nullable=False)
    # The citizen (personal data: anonymised by purge, deleted by forget).
    contact_name: str | None = Field(default=None, sa_column=Column(String(500)))
    contact_email: str | None = Field(default=None, sa_column=Column(String(254), index=True))
    contact_phone: str | None = Field(default=None, sa_column=Column(String(20), index=True))
    contact_address: str | None = Field(default=None, sa_column=Column(Text))
    location: str | None = Field(default=None, sa_column=Column(String(500)))
    # The service the client named (an Open311 service_code): routing keeps it and finds only the office.
    requested_service_id: str | None = Field(default=None, sa_column=Column(String(100)))
    # The channel the citizen asked to be answered on when it is not ``channel`` (web form: "Per E-Mail");
    # hub.queue.outbox.answer_route reads it.
    reply_channel: str | None = Field(default=None, sa_column=Column(String(16)))
    # The route.
    service_id: str | None = Field(default=None, sa_column=Column(String(100)))
    service_name: str | None = Field(default=None, sa_column=Column(String(500)))
    authority_id: str | None = Field(default=None, sa_column=Column(String(100), index=True))
    authority_name: str | None = Field(default=None, sa_column=Column(String(500)))
    route_confidence: float | None = Field(default=None, sa_column=Column(Float))
    route_reason: str | None = Field(default=None, sa_column=Column(Text))
    route_json: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    routed_at: datetime | None = _ts()
    assigned_agent: str | None = Field(default=None, sa_column=Column(String(200)))
    resume_state: str | None = Field(default=None, sa_column=Column(String(32)))
    # SLA clock.
    first_response_due: datetime | None = _ts()
    first_responded_at: datetime | None = _ts()
    forwarded_at: datetime | None = _ts()
    forward_due: datetime | None = _ts()
    forward_met_at: datetime | None = _ts()
    answered_at: datetime | None = _ts()
    closed_at: datetime | None = _ts()
    sla_paused_since: datetime | None = _ts()
    sla_pauses: list[list[str]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    sla_breached_at: datetime | None = _ts()
    # Work claims (routing stage).
    claimed_by: str | None = Field(default=None, sa_column=Column(String(200)))
    claimed_until: datetime | None = _ts()
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    anonymised_at: datetime | None = _ts()


class Message(SQLModel, table=True):
    """One message of a case, inbound (``direction='in'``) or outbound (``'out'``).

    Outbound messages are the outbox: ``send_state`` is ``pending`` → ``sending`` → ``sent``, or
    ``failed`` (permanent failure or deadline passed), or ``uncertain`` (a worker died while sending;
    it is never sent again automatically, so nothing goes out twice).
    """

    __tablename__ = "hub_message"
    __table_args__ = (
        UniqueConstraint("channel", "external_id", name="uq_hub_message_channel_external_id"),
        Index("ix_hub_message_outbox", "send_state", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(
        sa_column=Column(Integer, ForeignKey("hub_case.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    direction: str = Field(sa_column=Column(String(3), nullable=False))
    kind: str = Field(sa_column=Column(String(16), nullable=False))  # request | reply | forward
    channel: str = Field(sa_column=Column(String(16), nullable=False))
    external_id: str | None = Field(default=None, sa_column=Column(String(255)))
    created_at: datetime = _ts(nullable=False)
    received_at: datetime | None = _ts()
    subject: str | None = Field(default=None, sa_column=Column(String(500)))
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    location: str | None = Field(default=None, sa_column=Column(String(500)))
    raw_ref: str | None = Field(default=None, sa_column=Column(String(1000)))
    author: str | None = Field(default=None, sa_column=Column(String(200)))
    recipient: str | None = Field(default=None, sa_column=Column(String(500)))
    # Outbox (outbound only).
    send_state: str | None = Field(default=None, sa_column=Column(String(16)))
    send_attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    next_attempt_at: datetime | None = _ts()
    send_deadline: datetime | None = _ts()
    claimed_by: str | None = Field(default=None, sa_column=Column(String(200)))
    claimed_until: datetime | None = _ts()
    sent_at: datetime | None = _ts()
    last_error: str | None = Field(default=None, sa_column=Column(Text))


class Attachment(SQLModel, table=True):
    """A file of a message. The bytes are in ``<attachment_dir>/<sha256[:2]>/<sha256>``.

    Media a provider keeps for us (the pictures of an MMS at Twilio) are recorded by ``url`` only: no
    bytes, ``size_bytes`` 0 and the SHA-256 of the URL, so the row stays unique and no file is involved.
    """

    __tablename__ = "hub_attachment"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(
        sa_column=Column(Integer, ForeignKey("hub_message.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    filename: str = Field(sa_column=Column(String(255), nullable=False))
    content_type: str = Field(sa_column=Column(String(127), nullable=False))
    size_bytes: int = Field(sa_column=Column(Integer, nullable=False))
    sha256: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    created_at: datetime = _ts(nullable=False)
    url: str | None = Field(default=None, sa_column=Column(String(1000)))


class AuditEntry(SQLModel, table=True):
    """One line of the append-only audit log. No foreign key: the log outlives deleted cases.

    ``reason`` is written by agents and the system; it must not repeat personal data (the API says so).
    The migration adds database triggers that refuse UPDATE and DELETE on this table.
    """

    __tablename__ = "hub_audit"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int | None = Field(default=None, sa_column=Column(Integer, index=True))
    at: datetime = _ts(nullable=False)
    actor: str = Field(sa_column=Column(String(200), nullable=False))
    action: str = Field(sa_column=Column(String(32), nullable=False))
    from_state: str | None = Field(default=None, sa_column=Column(String(32)))
    to_state: str | None = Field(default=None, sa_column=Column(String(32)))
    reason: str | None = Field(default=None, sa_column=Column(Text))


class LabelledExample(SQLModel, table=True):
    """An agent's correction of a route: what the router said and what was right."""

    __tablename__ = "hub_labelled_example"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("hub_case.id", ondelete="SET NULL"), index=True)
    )
    created_at: datetime = _ts(nullable=False)
    agent: str = Field(sa_column=Column(String(200), nullable=False))
    text: str = Field(sa_column=Column(Text, nullable=False))
    location: str | None = Field(default=None, sa_column=Column(String(500)))
    predicted_service_id: str | None = Field(default=None, sa_column=Column(String(100)))
    predicted_authority_id: str | None = Field(default=None, sa_column=Column(String(100)))
    service_id: str | None = Field(default=None, sa_column=Column(String(100)))
    authority_id: str | None = Field(default=None, sa_column=Column(String(100)))


case_t = Case.__table__
message_t = Message.__table__
attachment_t = Attachment.__table__
audit_t = AuditEntry.__table__
example_t = LabelledExample.__table__


# -- tokens ----------------------------------------------------------------------------------------

#: Crockford's base32: digits and capitals without I, L, O and U, so nothing reads like something else
#: (0/O, 1/I/L) and no accidental word forms; what a citizen reads out on the phone is what is typed.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: 4 groups of 4 characters: 80 random bits. The token is the only key to the status page, so it must stay
#: unguessable; four groups of four are still read out and typed without mistakes ("K7QM-4XTR-9BQ2-H3ZP").
TOKEN_GROUPS = 4
TOKEN_GROUP_LEN = 4
_TOKEN_LEN = TOKEN_GROUPS * TOKEN_GROUP_LEN
# What a person may type for a Crockford character: lower case, and the look-alikes Crockford folds.
_CROCKFORD_IN = str.maketrans({"O": "0", "I": "1", "L": "1"})
_TOKEN_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015.]+")
#: Tokens made before the readable ones (``secrets.token_urlsafe(12)``): case-sensitive, still accepted.
_OLD_TOKEN = re.compile(r"[A-Za-z0-9_-]{16}")
_TOKEN_RE = re.compile(r"\[#([A-Za-z0-9_-]{16,24})\]")


# Base32 (RFC 4648) spells 5 bits a character as Crockford does, in another alphabet.
_BASE32_TO_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", CROCKFORD)
#: The random bytes of the next tokens, per thread, from the operating system's CSPRNG a block at a time: a
#: system call per token was a tenth of intake's time per request. A forked child starts with none of its
#: parent's (:func:`os.register_at_fork`), so two processes never hand out the same tokens.
_RANDOM_BLOCK = 4000
_random = threading.local()


def _forget_random() -> None:
    global _random
    _random = threading.local()


os.register_at_fork(after_in_child=_forget_random)


def _token_bytes(n: int) -> bytes:
    pool = _random.__dict__
    data, pos = pool.get("data", b""), pool.get("pos", 0)
    if pos + n > len(data):
        data, pos = secrets.token_bytes(_RANDOM_BLOCK), 0
        pool["data"] = data
    pool["pos"] = pos + n
    return data[pos : pos + n]


def new_case_token() -> str:
    """An unguessable case reference (80 random bits) that can be read out: ``K7QM-4XTR-9BQ2-H3ZP``."""
    chars = base64.b32encode(_token_bytes(5 * _TOKEN_LEN // 8)).decode("ascii").translate(_BASE32_TO_CROCKFORD)
    return "-".join([chars[i : i + TOKEN_GROUP_LEN] for i in range(0, _TOKEN_LEN, TOKEN_GROUP_LEN)])


def normalise_token(raw: str | None) -> str | None:
    """The readable token a person typed, in its stored form; None if it is none.

    Hyphens, blanks and dots anywhere are optional, case does not matter, and O, I, L are read as 0, 1, 1
    (Crockford's decoding rules): ``k7qm 4xtr 9bq2 h3zp`` → ``K7QM-4XTR-9BQ2-H3ZP``.
    """
    if not isinstance(raw, str) or len(raw) > 64:
        return None
    compact = _TOKEN_SEPARATORS.sub("", raw.strip()).upper().translate(_CROCKFORD_IN)
    if len(compact) != _TOKEN_LEN or any(c not in CROCKFORD for c in compact):
        return None
    return "-".join(compact[i : i + TOKEN_GROUP_LEN] for i in range(0, _TOKEN_LEN, TOKEN_GROUP_LEN))


def token_variants(raw: str | None) -> tuple[str, ...]:
    """Every stored token ``raw`` may stand for: the readable form it normalises to, and ``raw`` itself if
    it has the shape of an old (case-sensitive) token. Empty when it can be no token at all.

    The one rule for every place a token is typed or quoted: the web status page, the console's search,
    the APIs and intake's threading (``[#token]`` in a subject, a follow-up's ``case_token``)."""
    if not isinstance(raw, str):
        return ()
    out: list[str] = []
    readable = normalise_token(raw)
    if readable:
        out.append(readable)
    old = raw.strip()
    if _OLD_TOKEN.fullmatch(old) and old not in out:
        out.append(old)
    return tuple(out)


def token_clause(raw: str | None):
    """SQL condition: the case whose token ``raw`` stands for (:func:`token_variants`); None when it is none."""
    variants = token_variants(raw)
    return case_t.c.token.in_(variants) if variants else None


def subject_tag(token: str) -> str:
    """How a case token is written into a subject line: ``[#token]``."""
    return f"[#{token}]"


def token_in_subject(subject: str | None) -> str | None:
    """The case token tagged in a subject line, if any."""
    if not subject:
        return None
    match = _TOKEN_RE.search(subject)
    return match.group(1) if match else None


# -- SLA ---------------------------------------------------------------------------------------------


class SlaPolicy:
    """The SLA rules of cases on top of :class:`hub.queue.sla.SlaClock`.

    * First response: ``first_response_hours`` working hours from arrival until the case is answered
      or forwarded. A question back to the citizen is not a response; it pauses the clock.
    * Forwarded: ``forwarded_answer_hours`` working hours from forwarding until the answer.
    * Every pause (state ``waiting_for_citizen``) stops both clocks.
    """

    def __init__(self, settings: SlaSettings | None = None) -> None:
        self.settings = settings or SlaSettings()
        self.clock = SlaClock.from_settings(self.settings)

    @staticmethod
    def pauses(row: Mapping[str, Any]) -> list[tuple[datetime, datetime | None]]:
        out: list[tuple[datetime, datetime | None]] = [
            (datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in (row.get("sla_pauses") or [])
        ]
        if row.get("sla_paused_since") is not None:
            out.append((row["sla_paused_since"], None))
        return out

    def first_response_due(self, created_at: datetime, pauses: Sequence = ()) -> datetime | None:
        return self.clock.deadline(created_at, self.settings.first_response_hours, pauses)

    def forward_due(self, forwarded_at: datetime, pauses: Sequence = ()) -> datetime | None:
        return self.clock.deadline(forwarded_at, self.settings.forwarded_answer_hours, pauses)


def overdue_clause(now: datetime):
    """SQL condition: the case is past an SLA deadline that is still running (not met, not paused)."""
    c = case_t.c
    return and_(
        c.state.notin_([s.value for s in FINAL_STATES]),
        c.sla_paused_since.is_(None),
        or_(
            and_(c.first_responded_at.is_(None), c.first_response_due < now),
            and_(c.forward_due.isnot(None), c.forward_met_at.is_(None), c.forward_due < now),
        ),
    )


# -- state changes -------------------------------------------------------------------------------------


def check_transition(current: str, target: str) -> None:
    """Raise :class:`InvalidTransition` unless ``current → target`` is in :data:`TRANSITIONS`."""
    if (current, target) in _ALLOWED:  # by value: a state read from the database is a plain str
        return
    try:
        frm, to = CaseState(current), CaseState(target)
    except ValueError:
        raise InvalidTransition(f"unbekannter Zustand {target!r}", to=str(target)) from None
    if to not in TRANSITIONS[frm]:
        allowed = sorted(TRANSITIONS[frm])
        named = ", ".join(f"„{state_label(s)}“" for s in allowed) or "keiner (Endzustand)"
        raise InvalidTransition(
            f"Ein Fall kann nicht von „{state_label(frm)}“ nach „{state_label(to)}“ wechseln; "
            f"erlaubt von „{state_label(frm)}“: {named}",
            **{"from": frm.value, "to": to.value, "allowed": [s.value for s in allowed]})


_ALLOWED = frozenset((frm.value, to.value) for frm, targets in TRANSITIONS.items() for to in targets)
_AUDIT_INSERT = insert(audit_t)
_UPDATES: dict[frozenset[str], Any] = {}


def _case_update(columns: frozenset[str]):
    """``UPDATE hub_case SET <columns> WHERE id = :_id AND state = :_from``, built once per column set.

    Building a statement costs more than running it; a cached statement also reuses its cache key.
    """
    stmt = _UPDATES.get(columns)
    if stmt is None:
        stmt = (
            update(case_t)
            .where(case_t.c.id == bindparam("_id"), case_t.c.state == bindparam("_from"))
            .values({c: bindparam(f"v_{c}", type_=case_t.c[c].type) for c in sorted(columns)})
        )
        _UPDATES[columns] = stmt
    return stmt


def audit(
    conn: Connection,
    case_id: int | None,
    actor: str,
    action: str,
    *,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> None:
    """Append one audit entry."""
    conn.execute(
        _AUDIT_INSERT,
        {"case_id": case_id, "at": now or utcnow(), "actor": actor, "action": action,
         "from_state": from_state, "to_state": to_state, "reason": reason},
    )


def catalog_audit(conn: Connection, *, actor: str, action: str, reason: str, now: datetime) -> None:
    """The audit log as the knowledge layer's :class:`knowledge.sync.AuditLog`: a catalogue change."""
    audit(conn, None, actor, action, reason=reason, now=now)


def sla_changes(row: Mapping[str, Any], target: str, now: datetime, policy: SlaPolicy) -> dict[str, Any]:
    """Column updates that keep the SLA clock right when ``row`` moves to ``target``."""
    current = row["state"]
    values: dict[str, Any] = {}
    pauses = [list(p) for p in (row.get("sla_pauses") or [])]
    if current == S.WAITING_FOR_CITIZEN and target != S.WAITING_FOR_CITIZEN and row.get("sla_paused_since"):
        pauses.append([row["sla_paused_since"].isoformat(), now.isoformat()])
        values["sla_pauses"] = pauses
        values["sla_paused_since"] = None
        values["resume_state"] = None
        closed = [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in pauses]
        if row.get("first_responded_at") is None:
            values["first_response_due"] = policy.first_response_due(row["created_at"], closed)
        if row.get("forwarded_at") is not None and row.get("forward_met_at") is None:
            values["forward_due"] = policy.forward_due(row["forwarded_at"], closed)
    if target == S.WAITING_FOR_CITIZEN:
        values["sla_paused_since"] = now
        values["resume_state"] = current if current in (S.ROUTED, S.FORWARDED, S.NEEDS_CLARIFICATION) else None
    elif target == S.ANSWERED:
        values["answered_at"] = now
        if row.get("first_responded_at") is None:
            values["first_responded_at"] = now
        if row.get("forwarded_at") is not None and row.get("forward_met_at") is None:
            values["forward_met_at"] = now
    elif target == S.FORWARDED:
        if row.get("first_responded_at") is None:
            values["first_responded_at"] = now
        if current != S.WAITING_FOR_CITIZEN or row.get("forwarded_at") is None:
            values["forwarded_at"] = now
            values["forward_due"] = policy.forward_due(now)
            values["forward_met_at"] = None
    elif target == S.CLOSED:
        values["closed_at"] = now
    return values


def transition(
    conn: Connection,
    row: Mapping[str, Any],
    target: str,
    *,
    actor: str,
    reason: str | None = None,
    policy: SlaPolicy,
    now: datetime | None = None,
    values: Mapping[str, Any] | None = None,
    action: str = "transition",
) -> dict[str, Any]:
    """Move the case ``row`` (a mapping of its columns as read) to ``target``.

    Raises :class:`InvalidTransition` for a move the table forbids and :class:`StaleState` when the
    case is no longer in ``row['state']``. ``values`` are further columns to set in the same UPDATE.
    Releases any work claim. Returns the columns written.
    """
    changes = try_transition(conn, row, target, actor=actor, reason=reason, policy=policy, now=now,
                             values=values, action=action)
    if changes is None:
        raise StaleState(f"Fall {row['id']} ist nicht mehr „{state_label(row['state'])}“: jemand anderes hat ihn "
                         "inzwischen bearbeitet. Bitte laden Sie ihn neu und versuchen Sie es noch einmal.",
                         case_id=row["id"], expected=str(row["state"]))
    return changes


def try_transition(
    conn: Connection,
    row: Mapping[str, Any],
    target: str,
    *,
    actor: str,
    reason: str | None = None,
    policy: SlaPolicy,
    now: datetime | None = None,
    values: Mapping[str, Any] | None = None,
    action: str = "transition",
) -> dict[str, Any] | None:
    """Like :func:`transition`, but returns None instead of raising when the state changed meanwhile."""
    now = now or utcnow()
    current = row["state"]
    check_transition(current, target)
    changes = {
        "state": str(target),
        "state_changed_at": now,
        "updated_at": now,
        "claimed_by": None,
        "claimed_until": None,
        "attempts": 0,
        **sla_changes(row, target, now, policy),
        **(values or {}),
    }
    params = {f"v_{c}": v for c, v in changes.items()}
    params.update(_id=row["id"], _from=current)
    result = conn.execute(_case_update(frozenset(changes)), params)
    if result.rowcount != 1:
        return None
    audit(conn, row["id"], actor, action, from_state=current, to_state=str(target), reason=reason, now=now)
    return changes


def transition_many(
    conn: Connection,
    moves: Sequence[tuple[Mapping[str, Any], str | Sequence[str], Mapping[str, Any] | None, str | None]],
    *,
    actor: str,
    policy: SlaPolicy,
    now: datetime | None = None,
    action: str = "transition",
) -> None:
    """Apply many ``(row, target, values, reason)`` moves with one statement per column set.

    ``target`` may be a path of states (``(routed, answered)``): the case takes every step, one audit entry
    each, as :func:`transition` one after the other would write them, with one UPDATE for the whole path.
    All or nothing: raises :class:`StaleState` when any case is no longer in its ``row['state']``
    (the caller rolls back and falls back to :func:`try_transition` one by one). Written on the driver's
    cursor (:class:`~hub.queue.bulk.BulkWriter`): the columns :func:`try_transition` writes, converted as
    their types convert them, without SQLAlchemy's per-row parameter handling (most of the cost of a
    channel's answers to one intake batch).
    """
    now = now or utcnow()
    updates: list[tuple[dict[str, Any], tuple[Any, str]]] = []
    entries = []
    for row, target, values, reason in moves:
        steps = (target,) if isinstance(target, str) else target
        current: Mapping[str, Any] = row
        changes: dict[str, Any] = {}
        for number, step in enumerate(steps):
            if number:  # the case as the step before left it
                current = {**row, **changes}
            check_transition(current["state"], step)
            changes |= {
                "state": str(step), "state_changed_at": now, "updated_at": now,
                "claimed_by": None, "claimed_until": None, "attempts": 0,
                **sla_changes(current, step, now, policy), **(values or {}),
            }
            entries.append({"case_id": row["id"], "at": now, "actor": actor, "action": action,
                            "from_state": str(current["state"]), "to_state": str(step), "reason": reason})
        updates.append((changes, (row["id"], str(row["state"]))))
    if not updates:
        return
    writer = BulkWriter(conn)
    changed = writer.update(case_t, updates, where=("id", "state"))
    if changed != len(updates):
        raise StaleState(f"{len(updates) - changed} von {len(updates)} Fällen haben inzwischen ihren Zustand "
                         "geändert; bitte neu laden", changed=len(updates) - changed, total=len(updates))
    writer.insert(audit_t, entries)
