"""Data protection: retention (``purge``) and the right to erasure (``forget``).

``purge`` anonymises finished cases after the retention of their state (``[privacy]``): the case keeps
what statistics need (channel, state, service, authority, timestamps, SLA figures, the routing
decision, which names regions but no person) and loses everything personal: contact, free-text
place, message texts and subjects, recipients, attachments (rows and files), the labelled examples
made from its text, the router's reasons (they can quote the citizen). External ids are replaced by
a one-way hash, so they stay unique.

``forget`` deletes every case whose contact is the given e-mail address or phone number, with all
messages, attachments and labelled examples, whatever the state, and the imported routing history
(examples without a case) whose text names that address or number. ``purge`` also deletes imported
history after ``imported_history_days``. Learned routers keep no example texts (only features seen in
at least two examples); the next training notices the changed data version and retrains or drops them.

Channels that keep personal data in tables of their own (the phone menu's calls, SMS opt-outs) declare a
``privacy`` handler (:class:`hub.plugins.Channel`); both functions run it in the same transaction.

Both write one audit entry per case; audit entries never hold the e-mail address or number.
Raw payloads referenced by ``raw_ref`` are kept by the channels that stored them; their references
are dropped here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.engine import Engine

from hub.plugins import privacy_handlers
from hub.queue.cases import CaseState, attachment_t, audit, case_t, example_t, message_t
from hub.queue.intake import AttachmentStore
from hub.queue.requests import normalise_email, normalise_phone
from hub.queue.settings import PrivacySettings


@dataclass
class PrivacyReport:
    cases: int = 0
    messages: int = 0
    attachments: int = 0
    files: int = 0
    examples: int = 0
    channel_rows: int = 0  # rows of the channels' own tables removed or emptied


def _drop_attachments(conn, case_ids: list[int]) -> tuple[int, list[str]]:
    rows = conn.execute(
        select(attachment_t.c.id, attachment_t.c.sha256)
        .join(message_t, attachment_t.c.message_id == message_t.c.id)
        .where(message_t.c.case_id.in_(case_ids))
    ).all()
    if rows:
        conn.execute(delete(attachment_t).where(attachment_t.c.id.in_([r[0] for r in rows])))
    return len(rows), sorted({r[1] for r in rows})


#: Parts of the router's answer (``route_json``) that purge keeps: the decision, no words of the citizen.
#: The router's ``reason`` and its place candidates can quote what the citizen wrote ("no place called
#: 'Musterweg 12' found"), so they go.
ROUTE_STATISTICS = ("service", "authority", "location", "candidates", "needs_clarification")


def _channel_files(conn) -> list[str]:
    """Attachment-store files a channel's privacy handler let go of in this transaction (``hub.plugins``)."""
    return list(conn.info.pop("unreferenced_files", ()))


def statistics_of_route(route: dict | None) -> dict | None:
    """The router's answer reduced to what statistics need (see :data:`ROUTE_STATISTICS`)."""
    if not isinstance(route, dict):
        return None
    return {key: route[key] for key in ROUTE_STATISTICS if key in route}


def due_for_purge(settings: PrivacySettings, now: datetime):
    """SQL condition: finished cases whose retention ran out and that are not anonymised yet."""
    closed_before = now - timedelta(days=settings.closed_retention_days)
    dead_before = now - timedelta(days=settings.dead_letter_retention_days)
    return and_(
        case_t.c.anonymised_at.is_(None),
        or_(
            and_(case_t.c.state == CaseState.CLOSED.value,
                 func.coalesce(case_t.c.closed_at, case_t.c.state_changed_at) < closed_before),
            and_(case_t.c.state == CaseState.DEAD_LETTER.value, case_t.c.state_changed_at < dead_before),
        ),
    )


def purge(
    engine: Engine,
    settings: PrivacySettings | None = None,
    *,
    store: AttachmentStore | None = None,
    now: datetime | None = None,
    actor: str = "purge",
    dry_run: bool = False,
    batch: int = 500,
) -> PrivacyReport:
    """Anonymise every finished case past its retention; returns what was (or would be) changed."""
    settings = settings or PrivacySettings()
    now = now or datetime.now(UTC)
    report = PrivacyReport()
    if dry_run:
        due = select(case_t.c.id).where(due_for_purge(settings, now)).scalar_subquery()
        with engine.connect() as conn:
            report.cases = conn.execute(select(func.count()).select_from(case_t)
                                        .where(case_t.c.id.in_(due))).scalar_one()
            report.messages = conn.execute(select(func.count()).select_from(message_t)
                                           .where(message_t.c.case_id.in_(due))).scalar_one()
            report.attachments = conn.execute(
                select(func.count()).select_from(attachment_t)
                .join(message_t, attachment_t.c.message_id == message_t.c.id)
                .where(message_t.c.case_id.in_(due))).scalar_one()
        return report
    while True:
        with engine.begin() as conn:
            ids = conn.execute(select(case_t.c.id).where(due_for_purge(settings, now))
                               .order_by(case_t.c.id).limit(batch)).scalars().all()
            # The channels' own personal data: of these cases, and what outlived its use without a case.
            report.channel_rows += sum(handler.purge(conn, list(ids), now) for handler in privacy_handlers())
            freed = _channel_files(conn)
            if not ids:
                report.examples += _purge_imported_history(conn, settings, now)
                if store is not None:
                    report.files += store.delete_unreferenced(conn, freed)
                return report
            report.cases += len(ids)
            report.messages += conn.execute(
                select(func.count()).select_from(message_t).where(message_t.c.case_id.in_(ids))).scalar_one()
            n, digests = _drop_attachments(conn, ids)
            report.attachments += n
            report.examples += conn.execute(delete(example_t).where(example_t.c.case_id.in_(ids))).rowcount or 0
            for mid, ext in conn.execute(select(message_t.c.id, message_t.c.external_id)
                                         .where(message_t.c.case_id.in_(ids), message_t.c.external_id.isnot(None))):
                if not ext.startswith("anon:"):
                    conn.execute(update(message_t).where(message_t.c.id == mid).values(
                        external_id="anon:" + hashlib.sha256(ext.encode()).hexdigest()[:40]))
            conn.execute(
                update(message_t).where(message_t.c.case_id.in_(ids))
                .values(text="", subject=None, location=None, raw_ref=None, recipient=None, last_error=None)
            )
            conn.execute(
                update(case_t).where(case_t.c.id.in_(ids))
                .values(contact_name=None, contact_email=None, contact_phone=None, contact_address=None,
                        location=None, last_error=None, route_reason=None, anonymised_at=now)
            )
            routes = [{"_id": case_id, "route": statistics_of_route(route)}
                      for case_id, route in conn.execute(select(case_t.c.id, case_t.c.route_json)
                                                         .where(case_t.c.id.in_(ids), case_t.c.route_json.isnot(None)))]
            if routes:
                conn.execute(update(case_t).where(case_t.c.id == bindparam("_id"))
                             .values(route_json=bindparam("route", type_=case_t.c.route_json.type)), routes)
            for case_id in ids:
                audit(conn, case_id, actor, "purge", reason="personal data removed after the retention period",
                      now=now)
            if store is not None:
                report.files += store.delete_unreferenced(conn, digests + freed)


def _purge_imported_history(conn, settings: PrivacySettings, now: datetime) -> int:
    """Imported history (labelled examples without a case) past its retention. Learned models trained on
    it are retrained or dropped at the next training, whose data version no longer matches."""
    if not settings.imported_history_days:
        return 0
    cutoff = now - timedelta(days=settings.imported_history_days)
    return conn.execute(delete(example_t).where(example_t.c.case_id.is_(None), example_t.c.created_at < cutoff)
                        ).rowcount or 0


def _forget_imported_history(conn, emails: list[str], phones: list[str]) -> int:
    """Imported history has no contact: the examples whose text names the citizen's address or number."""
    needles = [e for e in emails if e] + [p for p in phones if p and len(p) >= 6]
    if not needles:
        return 0
    return conn.execute(delete(example_t).where(example_t.c.case_id.is_(None),
                                                or_(*(example_t.c.text.contains(n, autoescape=True)
                                                      for n in needles)))).rowcount or 0


def forget(
    engine: Engine,
    *,
    email: str | None = None,
    phone: str | None = None,
    store: AttachmentStore | None = None,
    actor: str = "forget",
    dry_run: bool = False,
) -> PrivacyReport:
    """Delete every case of the citizen with this e-mail address or phone number."""
    if not email and not phone:
        raise ValueError("give an e-mail address or a phone number")
    conditions = []
    if email:
        conditions.append(case_t.c.contact_email == normalise_email(email))
    if phone:
        conditions.append(case_t.c.contact_phone == normalise_phone(phone))
    report = PrivacyReport()
    emails = [normalise_email(email)] if email else []
    phones = [normalise_phone(phone)] if phone else []
    with engine.begin() as conn:
        ids = conn.execute(select(case_t.c.id).where(or_(*conditions)).order_by(case_t.c.id)).scalars().all()
        report.cases = len(ids)
        if dry_run:
            if ids:
                report.messages = conn.execute(
                    select(func.count()).select_from(message_t).where(message_t.c.case_id.in_(ids))).scalar_one()
            return report
        # Before the cases go: a channel's rows may refer to them (and hold the number without a case).
        report.channel_rows = sum(handler.forget(conn, list(ids), emails, phones) for handler in privacy_handlers())
        freed = _channel_files(conn)
        if not ids:
            report.examples = _forget_imported_history(conn, emails, phones)
            if store is not None:
                report.files = store.delete_unreferenced(conn, freed)
            return report
        report.messages = conn.execute(
            select(func.count()).select_from(message_t).where(message_t.c.case_id.in_(ids))).scalar_one()
        report.attachments, digests = _drop_attachments(conn, ids)
        report.examples = conn.execute(delete(example_t).where(example_t.c.case_id.in_(ids))).rowcount or 0
        report.examples += _forget_imported_history(conn, emails, phones)
        conn.execute(delete(message_t).where(message_t.c.case_id.in_(ids)))
        conn.execute(delete(case_t).where(case_t.c.id.in_(ids)))
        for case_id in ids:
            audit(conn, case_id, actor, "forget", reason="the citizen's data was deleted on request")
        if store is not None:
            report.files = store.delete_unreferenced(conn, digests + freed)
    return report
