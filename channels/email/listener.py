"""Inbound e-mail: an SMTP/LMTP listener (aiosmtpd) and an IMAP poller, both feeding intake.

Accept, store, then acknowledge — as a mail server does:

* ``RCPT TO`` a domain that is not ours → ``550 5.7.1`` (the hub is never a relay). In LMTP mode the
  listener takes one recipient per transaction (``452 4.5.3`` for more; the client sends them again),
  so that the one reply after DATA is exactly the one LMTP owes per recipient.
* a message larger than ``[email] max_message_bytes`` → ``552`` (aiosmtpd checks ``SIZE=`` and DATA).
* DATA: the raw mail is written to ``[email] raw_mail_dir`` and fsynced, parsed
  (:mod:`channels.email.parse`) and handed to :class:`hub.queue.intake.IntakeWriter`; the ``250`` goes out only
  after the commit. Storage trouble → ``451 4.3.0`` (the sending server tries again; the Message-ID is
  the idempotency key, so a repeat creates nothing new). A request the limits refuse → ``552``/``554``.
  Any other error → ``451``: the handler never raises and never answers 250 for a mail it did not store.
* intake limits (:class:`hub.http.ratelimit.IntakeLimits`, ``[limits]``): ``MAIL FROM`` counts the
  connecting address and the envelope sender, the parsed mail its From/Reply-To address if that is
  another one; over a limit the answer is ``451 4.7.1`` with the seconds to wait — the sending server
  keeps the mail and tries again, nothing is dropped. A repeat of a stored mail costs nothing.
* a mail of more MIME parts than ``[email] max_mime_parts`` or nested deeper than ``max_mime_depth`` is
  parsed only that far (:func:`channels.email.parse.parse_message`); the request says what was cut.
* a delivery status notification updates the delivery state of our outbound message
  (:func:`apply_report`) instead of opening a case.
* list and newsletter mail (``List-Id``, ``List-Unsubscribe``) and mail from the hub's own address open no
  case: **accept and drop** — ``250 2.0.0 Ok: not taken as a request (…)`` and one log line with the
  Message-ID and the reason, the kept original deleted. A 5xx would make the list's server bounce to its
  owner (backscatter) or unsubscribe us; a drop loses nothing a citizen wrote.
* an automatic answer (out-of-office, auto-responder: :attr:`ParsedMail.auto_reply`) is recorded on the
  open case it threads onto as a message of kind ``auto_reply``, which changes nothing on the case; one
  that threads onto no open case is accepted and dropped the same way.
* an acknowledgement is queued for a mail that opened a new case, unless :func:`ack_refusal` or the
  rate limits (per address and for all addresses together) say no. It goes to the From address only
  (:func:`channels.email.outbound.ack_recipient`), never to Reply-To, and echoes nothing the sender wrote. :class:`AckWriter` writes it to the outbox in the intake writer's thread
  right after the batch commit (one transaction per batch), while the 250 goes out; if the process dies
  in between, the acknowledgement is lost, never the request.

The IMAP poller (:class:`ImapPoller`) fetches unseen mail with ``BODY.PEEK[]`` (which does not set
``\\Seen``), stores it the same way, and sets ``\\Seen`` only after the commit.

Message bodies are never logged: log lines carry ids, sizes and reasons only. aiosmtpd's own logger
writes every DATA line at DEBUG, so the listener caps it at INFO.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import imaplib
import logging
import re
import socket
import ssl
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP
from pydantic import ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from channels.email.outbound import (
    ACK_KIND,
    AckRateLimiter,
    ack_language,
    ack_rate_limiter,
    ack_recipient,
    ack_refusal,
    render_ack,
)
from channels.email.parse import AttachmentLimits, MailReport, ParsedMail, parse_mail, sanitize
from channels.email.settings import EmailSettings
from hub.http.ratelimit import IntakeLimited, IntakeLimits, address_key
from hub.queue.cases import audit, message_t
from hub.queue.intake import AttachmentStore, IntakeResult, IntakeUnavailable, IntakeWriter, RequestRejected
from hub.queue.outbox import new_external_id
from hub.queue.requests import Contact, InboundRequest
from hub.queue.settings import QueueSettings

log = logging.getLogger(__name__)

_PARSE_INLINE_BYTES = 65_536
SMTP_TEMPFAIL = "451 4.3.0 Temporary local problem, please try again later"
Keys = tuple[tuple[str, str | None], ...]


def smtp_limited(exc: IntakeLimited) -> str:
    """The SMTP answer for a sender or client over its intake limit: try again later, never a drop."""
    who = "this address" if exc.limit == "client" else "this sender"
    return f"451 4.7.1 Too many messages from {who}; try again in {exc.retry_after} seconds"


def _where(exc: BaseException) -> str:
    """Type and code location of an exception, without its message (which may quote the mail)."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return type(exc).__name__ + " at " + " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames)


@dataclass(frozen=True)
class Outcome:
    """What became of one inbound mail; ``smtp`` is the reply line for the sending server."""

    status: str  # stored | duplicate | report | dropped | rejected | unavailable | limited
    smtp: str
    result: IntakeResult | None = None

    @property
    def accepted(self) -> bool:
        return self.status in ("stored", "duplicate", "report", "dropped")


# -- delivery reports --------------------------------------------------------------------------------------


def apply_report(engine: Engine, report: MailReport, now: datetime | None = None) -> int:
    """Record a DSN (or read receipt) on the outbound messages it is about; returns how many matched.

    ``failed`` marks a sent message ``failed`` (the agent sees the bounce); ``delayed`` only notes it;
    ``delivered``/``relayed`` confirm a message whose outcome was ``uncertain``.
    """
    ids = [i for i in report.original_message_ids if len(i) <= 255]
    if not ids:
        return 0
    now = now or datetime.now(UTC)
    action, status = report.action, report.status
    detail = f"{action} {status}".strip()
    if report.diagnostic:
        detail += f": {report.diagnostic}"
    with engine.begin() as conn:
        rows = conn.execute(
            select(message_t.c.id, message_t.c.case_id, message_t.c.send_state).where(
                message_t.c.channel == "email", message_t.c.direction == "out", message_t.c.external_id.in_(ids)
            )
        ).all()
        for mid, case_id, state in rows:
            if report.kind != "delivery-status":
                continue
            if action == "failed" and state in ("sent", "sending", "uncertain"):
                conn.execute(update(message_t).where(message_t.c.id == mid)
                             .values(send_state="failed", last_error=f"bounced: {detail}"[:1000]))
                audit(conn, case_id, "email:dsn", "send_bounced", from_state=None, to_state=None,
                      reason=f"the recipient's mail server reported {action} {status}".strip(), now=now)
            elif action == "delayed" and state in ("sent", "sending", "uncertain"):
                conn.execute(update(message_t).where(message_t.c.id == mid)
                             .values(last_error=f"delivery delayed: {detail}"[:1000]))
            elif action in ("delivered", "relayed", "expanded") and state == "uncertain":
                conn.execute(update(message_t).where(message_t.c.id == mid)
                             .values(send_state="sent", sent_at=now, last_error=None))
                audit(conn, case_id, "email:dsn", "send_confirmed", reason=f"delivery report: {action}", now=now)
    return len(rows)


# -- acknowledgements ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AckJob:
    case_id: int
    token: str
    recipient: str
    subject: str
    text: str


class AckWriter:
    """Writes acknowledgements into the outbox in the intake writer's thread, right after each batch.

    It is a listener of :class:`~hub.queue.intake.IntakeWriter`: acknowledgements of a whole batch go into one
    transaction, and since the same thread writes intake and acknowledgements they never wait for each
    other's database lock (on SQLite a second writer thread would sleep in the busy handler). The 250
    does not wait for it; if the process dies in between, an acknowledgement is lost, never a request.

    Before a request is submitted the channel registers a decision (:meth:`expect`): a callable that
    gets the :class:`~hub.queue.intake.IntakeResult` and returns the :class:`AckJob` to write, or None.
    """

    def __init__(self, engine: Engine, queue_settings: QueueSettings | None = None,
                 on_written: Callable[[int], None] | None = None) -> None:
        self.engine = engine
        self.queue_settings = queue_settings or QueueSettings()
        self.on_written = on_written
        self._expected: dict[tuple[str, str], Callable[[IntakeResult], AckJob | None]] = {}
        self._idle = threading.Condition()
        self.written = 0

    def attach(self, writer: IntakeWriter) -> AckWriter:
        writer.add_listener(self._after_batch)
        return self

    def expect(self, key: tuple[str, str], decide: Callable[[IntakeResult], AckJob | None]) -> None:
        with self._idle:
            self._expected[key] = decide

    def forget(self, key: tuple[str, str]) -> None:
        """The request never reached the writer (or failed): nothing to acknowledge."""
        with self._idle:
            self._expected.pop(key, None)
            self._idle.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every expected acknowledgement is decided and written (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._expected, timeout)

    def _after_batch(self, reqs: list[InboundRequest], outcomes: list[Any]) -> None:
        jobs: list[AckJob] = []
        keys = []
        for req, outcome in zip(reqs, outcomes, strict=True):
            key = req.key()
            with self._idle:
                decide = self._expected.get(key)
            if decide is None:
                continue
            keys.append(key)
            if isinstance(outcome, IntakeResult) and outcome.created:
                try:
                    job = decide(outcome)
                except Exception as exc:
                    log.warning("email: acknowledgement decision failed (%s)", type(exc).__name__)
                    job = None
                if job is not None:
                    jobs.append(job)
        try:
            if jobs:
                self._write(jobs)
        finally:
            with self._idle:
                for key in keys:
                    self._expected.pop(key, None)
                self._idle.notify_all()

    def _write(self, batch: list[AckJob]) -> None:
        try:
            self._write_all(batch)
        except Exception as exc:
            log.warning("email: writing %d acknowledgements failed (%s); writing them one by one",
                        len(batch), type(exc).__name__)
            for job in batch:
                try:
                    self._write_all([job])
                except Exception as exc2:  # e.g. the case was deleted meanwhile
                    log.warning("email: acknowledgement for case %s not written (%s)", job.case_id,
                                type(exc2).__name__)

    def _write_all(self, batch: list[AckJob]) -> None:
        # The rows hub.queue.outbox.enqueue writes, for a whole batch in one executemany: enqueue() compiles an
        # INSERT per row, which costs ~6x more and runs in the intake writer's thread. Replace with the
        # outbox's own batch call once it has one.
        now = datetime.now(UTC)
        deadline = now + timedelta(hours=self.queue_settings.outbox_deadline_hours)
        rows = [
            {"case_id": job.case_id, "direction": "out", "kind": ACK_KIND, "channel": "email",
             "external_id": new_external_id("email", job.token, self.queue_settings.message_id_domain),
             "created_at": now, "subject": job.subject,
             "text": job.text, "author": "email:ack", "recipient": job.recipient, "send_state": "pending",
             "send_attempts": 0, "next_attempt_at": now, "send_deadline": deadline}
            for job in batch
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(message_t), rows)
        self.written += len(batch)
        if self.on_written is not None:
            try:
                self.on_written(len(batch))
            except Exception:
                log.exception("email: ack callback failed")


# -- the shared intake path -------------------------------------------------------------------------------


class EmailIntake:
    """Raw mail → stored request (or recorded delivery report), for the listener and the IMAP poller."""

    def __init__(
        self,
        writer: IntakeWriter,
        settings: EmailSettings,
        *,
        acks: AckWriter | None = None,
        limiter: AckRateLimiter | None = None,
        raw_store: AttachmentStore | None = None,
        limits: IntakeLimits | None = None,
    ) -> None:
        self.writer = writer
        self.settings = settings
        self.engine = writer.engine
        q = writer.settings
        self.max_text_chars = q.max_text_chars
        self.limits = AttachmentLimits(
            max_bytes=min(settings.max_attachment_bytes, q.attachment_max_bytes),
            max_count=q.attachments_max_count,
            max_total_bytes=q.attachments_max_total_bytes,
        )
        self.acks = acks.attach(writer) if acks is not None else None
        self.limiter = limiter or ack_rate_limiter(settings)
        self.raw_store = raw_store or AttachmentStore(settings.raw_mail_dir)
        self.own_addresses = frozenset({settings.address})
        #: Intake limits of this process (default: the ``[limits]`` defaults; ``email serve`` passes its own).
        self.intake_limits = limits if limits is not None else IntakeLimits()
        # Its own pool: fsync waits must not occupy the event loop's default executor.
        self._pool = concurrent.futures.ThreadPoolExecutor(settings.io_threads, thread_name_prefix="email-io")

    def close(self) -> None:
        """Let the worker threads go (after the listener and poller have stopped)."""
        self._pool.shutdown(wait=True)

    # sync steps (run in a worker thread on the listener's path)

    def _keep(self, raw: bytes) -> str:
        """Write the original (fsynced) and return its path: the request's raw_ref."""
        return str(self.raw_store.path(self.raw_store.put(raw)))

    def _parse(self, raw: bytes, envelope_from: str | None) -> ParsedMail:
        parsed = parse_mail(raw, envelope_from=envelope_from, own_addresses=self.own_addresses,
                            limits=self.limits, max_parts=self.settings.max_mime_parts,
                            max_depth=self.settings.max_mime_depth)
        if parsed.defects:
            log.info("email: %s has %d MIME defects (kept as well as possible)", parsed.message_id, parsed.defects)
        if parsed.cut:
            log.warning("email: %s parsed only in part (%d bytes): limit of [email] max_mime_parts/max_mime_depth",
                        parsed.message_id, len(raw))
        return parsed

    # intake limits

    @staticmethod
    def _envelope_keys(peer: str | None, envelope_from: str | None) -> Keys:
        sender = (envelope_from or "").strip().strip("<>") or None
        return (("ip", address_key(peer) if peer else None), ("email", sender))

    def admit(self, peer: str | None, envelope_from: str | None) -> Keys:
        """At ``MAIL FROM``: count the connecting address and the envelope sender against the limits.

        Returns the keys counted (the rest of the transaction must not count them again); raises
        :class:`~hub.http.ratelimit.IntakeLimited` when one of them is over its limit.
        """
        keys = self._envelope_keys(peer, envelope_from)
        self.intake_limits.check(*keys)
        return keys

    def _sender_keys(self, parsed: ParsedMail, counted: Keys) -> Keys:
        """The mail's own sender addresses not counted at ``MAIL FROM`` already."""
        done = {(kind, (key or "").lower()) for kind, key in counted}
        return tuple(("email", a) for a in dict.fromkeys(
            x.lower() for x in (parsed.from_address, parsed.contact_address) if x) if ("email", a) not in done)

    def _prepare(self, raw: bytes, envelope_from: str | None) -> tuple[ParsedMail, str]:
        # The original first: once the request is committed its raw_ref must point at a whole file.
        raw_ref = self._keep(raw)
        return self._parse(raw, envelope_from), raw_ref

    def _request(self, parsed: ParsedMail, received_at: datetime, raw_ref: str) -> InboundRequest:
        try:
            return parsed.to_request(received_at=received_at, raw_ref=raw_ref, max_text_chars=self.max_text_chars)
        except ValidationError as exc:
            log.warning("email: %s does not validate (%d errors); storing a reduced request",
                        parsed.message_id, exc.error_count())
        try:
            contact = Contact(email=parsed.contact_address)
        except ValidationError:
            contact = Contact()
        try:
            return InboundRequest(channel="email", external_id=parsed.message_id, received_at=received_at,
                                  contact=contact, text=sanitize(parsed.request_text(self.max_text_chars)),
                                  in_reply_to=list(parsed.in_reply_to), raw_ref=raw_ref,
                                  auto_reply=parsed.auto_reply)
        except ValidationError:
            return InboundRequest(channel="email", external_id=parsed.message_id, received_at=received_at,
                                  contact=contact, raw_ref=raw_ref, auto_reply=parsed.auto_reply,
                                  text="(Die E-Mail konnte nicht gelesen werden; das Original ist gespeichert.)")

    def _too_big(self, raw: bytes) -> Outcome | None:
        if len(raw) > self.settings.max_message_bytes:
            return Outcome("rejected", f"552 5.3.4 Message too big (limit {self.settings.max_message_bytes} bytes)")
        return None

    def _unwanted(self, parsed: ParsedMail) -> str | None:
        """Why a mail opens no case and is not stored at all (list mail, our own mail), or None."""
        senders = {a.lower() for a in (parsed.from_address, parsed.envelope_from) if a}
        if senders & self.own_addresses:
            return "mail from the hub's own address"
        if parsed.bulk:
            return f"list or newsletter mail ({parsed.bulk})"
        return None

    def _drop(self, parsed: ParsedMail, raw_ref: str, reason: str) -> Outcome:
        """Accept and drop: the sending server gets its 250, nothing is stored, one log line says why.

        The kept original is deleted unless a stored message refers to the same bytes.
        """
        log.info("email: %s not taken as a request: %s", parsed.message_id, reason)
        try:
            with self.engine.connect() as conn:
                used = conn.execute(select(message_t.c.id).where(message_t.c.raw_ref == raw_ref).limit(1)).first()
            if used is None:
                Path(raw_ref).unlink(missing_ok=True)
        except Exception as exc:  # the drop stands; a left-over file is only disk space
            log.warning("email: the original of a dropped mail was not deleted (%s)", type(exc).__name__)
        return Outcome("dropped", f"250 2.0.0 Ok: not taken as a request ({reason})")

    def _report(self, parsed: ParsedMail) -> Outcome:
        assert parsed.report is not None
        matched = apply_report(self.engine, parsed.report)
        log.info("email: %s report (%s %s) for %d of our messages", parsed.report.kind, parsed.report.action,
                 parsed.report.status, matched)
        return Outcome("report", "250 2.0.0 Ok: report recorded")

    @staticmethod
    def _after(result: IntakeResult) -> Outcome:
        if not result.created:
            return Outcome("duplicate", f"250 2.0.0 Ok: already stored as message {result.message_id}", result)
        return Outcome("stored", f"250 2.0.0 Ok: stored as message {result.message_id}", result)

    def _expect_ack(self, parsed: ParsedMail, req: InboundRequest) -> bool:
        """Tell the ack writer what to do once ``req`` is stored; False when no ack can be due."""
        if self.acks is None:
            return False
        reason = ack_refusal(parsed, self.settings)
        if reason:
            log.debug("email: no acknowledgement for %s: %s", parsed.message_id, reason)
            return False
        address = ack_recipient(parsed) or ""
        language = ack_language(self.settings.ack_language, parsed.language)
        sender, dropped = self.settings.display_name, parsed.dropped

        def decide(result: IntakeResult) -> AckJob | None:  # in the writer thread, after the commit
            if result.joined:  # a follow-up: the citizen knows the case already
                return None
            refused = self.limiter.refuse(address)
            if refused:
                log.info("email: no acknowledgement for case %s: %s", result.case_id, refused)
                return None
            ack_subject, text = render_ack(language, token=result.token, sender=sender, dropped=dropped)
            return AckJob(result.case_id, result.token, address, ack_subject, text)

        self.acks.expect(req.key(), decide)
        return True

    @staticmethod
    def _failure(exc: BaseException) -> Outcome:
        if isinstance(exc, IntakeUnavailable):
            log.warning("email: intake unavailable; answering 451")
            return Outcome("unavailable", SMTP_TEMPFAIL)
        if isinstance(exc, RequestRejected):
            log.info("email: request refused by intake limits: %s", exc)
            if exc.status == 413:
                return Outcome("rejected", "552 5.3.4 Message exceeds a size limit of this service")
            return Outcome("rejected", "554 5.6.0 Message content not accepted")
        log.error("email: taking a mail failed: %s", _where(exc))
        return Outcome("unavailable", SMTP_TEMPFAIL)

    # entry points

    async def accept(self, raw: bytes, *, envelope_from: str | None = None, counted: Keys = ()) -> Outcome:
        """Store one mail; the returned outcome's ``smtp`` line is the answer. Never raises.

        ``counted`` are the limit keys :meth:`admit` counted for this transaction: they are given back when
        the mail turns out to be a repeat, or could not be stored.
        """
        received_at = datetime.now(UTC)
        limited: Keys = counted
        try:
            too_big = self._too_big(raw)
            if too_big:
                return too_big
            loop = asyncio.get_running_loop()
            # The original is written (and fsynced) in the pool while the mail is parsed; small mails are
            # parsed right here, as handing them to a thread costs more CPU than parsing (GIL hand-offs).
            kept = loop.run_in_executor(self._pool, self._keep, raw)
            try:
                if len(raw) <= _PARSE_INLINE_BYTES:
                    parsed = self._parse(raw, envelope_from)
                else:
                    parsed = await loop.run_in_executor(self._pool, self._parse, raw, envelope_from)
            finally:
                raw_ref = await kept  # the raw file is whole before anything is committed
            if parsed.report is not None:
                return await loop.run_in_executor(self._pool, self._report, parsed)
            unwanted = self._unwanted(parsed)
            if unwanted:
                return self._counted(await loop.run_in_executor(self._pool, self._drop, parsed, raw_ref, unwanted),
                                     limited)
            own = self._sender_keys(parsed, counted)
            try:
                self.intake_limits.check(*own)
            except IntakeLimited as exc:
                return self._over_limit(exc)
            limited = (*counted, *own)
            req = self._request(parsed, received_at, raw_ref)
            expected = self._expect_ack(parsed, req)
            try:
                result = await self.writer.submit(req)
            except BaseException:
                if expected and self.acks is not None:
                    self.acks.forget(req.key())
                raise
            if result.dropped:
                return self._counted(await loop.run_in_executor(
                    self._pool, self._drop, parsed, raw_ref, "automatic answer to no open case"), limited)
            return self._counted(self._after(result), limited)
        except Exception as exc:
            return self._counted(self._failure(exc), limited)

    @staticmethod
    def _over_limit(exc: IntakeLimited) -> Outcome:
        log.info("email: intake limit of a %s reached; answering 451 4.7.1", exc.limit)
        return Outcome("limited", smtp_limited(exc))

    def _counted(self, outcome: Outcome, keys: Keys) -> Outcome:
        """A repeat of a stored mail, or one we could not store, costs the sender nothing."""
        if outcome.status in ("duplicate", "unavailable", "dropped") and keys:
            self.intake_limits.refund(*keys)
        return outcome

    def accept_sync(self, raw: bytes, *, envelope_from: str | None = None, timeout: float = 120.0) -> Outcome:
        """Like :meth:`accept`, for a thread (the IMAP poller). Never raises."""
        received_at = datetime.now(UTC)
        try:
            too_big = self._too_big(raw)
            if too_big:
                return too_big
            parsed, raw_ref = self._prepare(raw, envelope_from)
            if parsed.report is not None:
                return self._report(parsed)
            unwanted = self._unwanted(parsed)
            if unwanted:
                return self._drop(parsed, raw_ref, unwanted)
            own = self._sender_keys(parsed, ())
            try:
                self.intake_limits.check(*own)
            except IntakeLimited as exc:
                return self._over_limit(exc)
            req = self._request(parsed, received_at, raw_ref)
            expected = self._expect_ack(parsed, req)
            try:
                result = self.writer.submit_sync(req, timeout=timeout)
            except BaseException:
                self.intake_limits.refund(*own)
                if expected and self.acks is not None:
                    self.acks.forget(req.key())
                raise
            if result.dropped:
                return self._counted(self._drop(parsed, raw_ref, "automatic answer to no open case"), own)
            return self._counted(self._after(result), own)
        except Exception as exc:
            return self._failure(exc)


# -- SMTP / LMTP listener ---------------------------------------------------------------------------------


class SmtpHandler:
    """aiosmtpd handler: recipient domains, then :meth:`EmailIntake.accept`. Answers codes, never raises."""

    def __init__(self, intake: EmailIntake, settings: EmailSettings, *, lmtp: bool = False) -> None:
        self.intake = intake
        self.domains = settings.domains()
        self.lmtp = lmtp

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]):
        """Intake limits before any data is sent: the connecting address and the envelope sender."""
        peer = session.peer[0] if isinstance(session.peer, tuple) and session.peer else None
        try:
            envelope.hub_counted = self.intake.admit(peer, address)
        except IntakeLimited as exc:
            log.info("email: intake limit of a %s reached at MAIL FROM; answering 451 4.7.1", exc.limit)
            return smtp_limited(exc)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]):
        domain = address.rpartition("@")[2].strip().rstrip(".").lower()
        if not domain or domain not in self.domains:
            return "550 5.7.1 Relaying denied: this server accepts mail only for its own domains"
        if self.lmtp and envelope.rcpt_tos:
            return "452 4.5.3 One recipient per transaction, please send again for this one"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):  # pragma: no cover - only with decode_data=True, which we never set
            raw = raw.encode("utf-8", "surrogateescape")
        outcome = await self.intake.accept(bytes(raw), envelope_from=envelope.mail_from,
                                           counted=getattr(envelope, "hub_counted", ()))
        if self.lmtp:  # LMTP: one reply per accepted recipient
            return "\r\n".join([outcome.smtp] * max(1, len(envelope.rcpt_tos)))
        return outcome.smtp

    async def handle_exception(self, error: Exception) -> str:
        log.error("email: SMTP session error: %s", _where(error))
        return SMTP_TEMPFAIL


_PLAIN_PATH = re.compile(r"^\s*<([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+)>(.*)$")


class _FastPaths:
    """aiosmtpd parses every MAIL FROM/RCPT TO path with the full RFC 5322 header parser, a tenth of the
    hub's CPU per mail. A plain ``<local@domain>`` path is taken with a regex; anything else (quoted
    local parts, ``<>``, source routes) goes to aiosmtpd's own parser. Overrides aiosmtpd's private
    ``_getaddr`` (same contract: ``(address, rest)``); tests cover both paths."""

    def _getaddr(self, arg: str):
        m = _PLAIN_PATH.match(arg) if arg else None
        if m:
            return m.group(1), m.group(2)
        return super()._getaddr(arg)  # type: ignore[misc]


class _SMTP(_FastPaths, SMTP):
    pass


class _LMTP(_FastPaths, LMTP):
    pass


class EmailServer:
    """The SMTP (or LMTP) listener on the running event loop. ``port=0`` picks a free port (tests)."""

    def __init__(self, intake: EmailIntake, settings: EmailSettings, *, host: str | None = None,
                 port: int | None = None, lmtp: bool | None = None) -> None:
        self.intake = intake
        self.settings = settings
        self.host = host if host is not None else settings.listen_host
        self.port = port if port is not None else settings.listen_port
        self.lmtp = settings.lmtp if lmtp is None else lmtp
        self.handler = SmtpHandler(intake, settings, lmtp=self.lmtp)
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> EmailServer:
        loop = asyncio.get_running_loop()
        mail_log = logging.getLogger("mail.log")
        if mail_log.getEffectiveLevel() < logging.INFO:  # aiosmtpd logs DATA lines at DEBUG
            mail_log.setLevel(logging.INFO)
        hostname = self.settings.hostname or await asyncio.to_thread(socket.getfqdn)
        protocol = _LMTP if self.lmtp else _SMTP

        def factory() -> SMTP:
            return protocol(self.handler, data_size_limit=self.settings.max_message_bytes, enable_SMTPUTF8=True,
                            hostname=hostname, ident="citizen-hub", timeout=300, loop=loop)

        self._server = await loop.create_server(factory, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("email: %s listener on %s:%d for %s", "LMTP" if self.lmtp else "SMTP", self.host, self.port,
                 ", ".join(sorted(self.handler.domains)))
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


# -- IMAP poller ----------------------------------------------------------------------------------------------


@dataclass
class PollStats:
    seen: int = 0  # unseen mails found
    stored: int = 0  # stored (or already stored, or a report) and marked \Seen
    flagged: int = 0  # refused for good: marked \Seen and \Flagged for a person, left in the mailbox
    deferred: int = 0  # storage unavailable: left unseen for the next round


def _imap_quote(name: str) -> str:
    if name.startswith('"') or not any(c in name for c in ' ()"\\{%*'):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapPoller:
    """Polls one IMAP folder for unseen mail (imaplib, in a thread; IDLE is not used).

    ``\\Seen`` is set only after the request is committed; a crash in between means the mail is fetched
    again next round and the Message-ID makes the repeat a no-op.
    """

    def __init__(self, intake: EmailIntake, settings: EmailSettings, *, batch: int = 100,
                 connect: Callable[[], imaplib.IMAP4] | None = None) -> None:
        if not settings.imap_host:
            raise ValueError("[email] imap_host is empty: there is no mailbox to poll")
        self.intake = intake
        self.settings = settings
        self.batch = batch
        self._connect_fn = connect
        self._stop = threading.Event()

    def _connect(self) -> imaplib.IMAP4:
        if self._connect_fn is not None:
            return self._connect_fn()
        s = self.settings
        context = ssl.create_default_context()
        if not s.imap_validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if s.imap_tls:
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(s.imap_host, s.imap_port, ssl_context=context, timeout=60)
        else:
            conn = imaplib.IMAP4(s.imap_host, s.imap_port, timeout=60)
            if s.imap_starttls:
                try:
                    conn.starttls(context)
                except BaseException:
                    conn.shutdown()  # never log in in clear text when STARTTLS was asked for
                    raise
        conn.login(s.imap_username, s.imap_password)
        return conn

    def poll_once(self) -> PollStats:
        stats = PollStats()
        conn = self._connect()
        try:
            typ, _ = conn.select(_imap_quote(self.settings.imap_folder))
            if typ != "OK":
                raise imaplib.IMAP4.error(f"cannot select folder {self.settings.imap_folder!r}")
            typ, data = conn.uid("SEARCH", None, "UNSEEN")
            uids = (data[0] or b"").split() if typ == "OK" and data else []
            for uid in uids[: self.batch]:
                stats.seen += 1
                typ, fetched = conn.uid("FETCH", uid, "(BODY.PEEK[])")
                raw = next((item[1] for item in fetched or [] if isinstance(item, tuple) and len(item) > 1), None)
                if typ != "OK" or not isinstance(raw, bytes):
                    log.warning("email: IMAP uid %s could not be fetched", uid.decode(errors="replace"))
                    stats.deferred += 1
                    continue
                outcome = self.intake.accept_sync(raw)
                if outcome.accepted:
                    conn.uid("STORE", uid, "+FLAGS", "(\\Seen)")
                    stats.stored += 1
                elif outcome.status == "limited":  # left unseen: fetched again when the sender's budget refills
                    log.info("email: IMAP uid %s left for later (%s)", uid.decode(errors="replace"), outcome.smtp)
                    stats.deferred += 1
                elif outcome.status == "rejected":
                    conn.uid("STORE", uid, "+FLAGS", "(\\Seen \\Flagged)")
                    log.warning("email: IMAP uid %s refused (%s); flagged in the mailbox",
                                uid.decode(errors="replace"), outcome.smtp)
                    stats.flagged += 1
                else:
                    stats.deferred += 1
                    break  # storage is unavailable: leave the rest for the next round
        finally:
            try:
                conn.logout()
            except Exception:
                pass
        return stats

    def run(self) -> None:
        """Poll until :meth:`stop`; connection failures are logged and retried next round."""
        while not self._stop.is_set():
            try:
                stats = self.poll_once()
                if stats.seen:
                    log.info("email: IMAP round: %s", stats)
            except Exception as exc:
                log.warning("email: IMAP round failed: %s", _where(exc) if not isinstance(
                    exc, (imaplib.IMAP4.error, OSError)) else f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.settings.imap_poll_seconds)

    def stop(self) -> None:
        self._stop.set()
