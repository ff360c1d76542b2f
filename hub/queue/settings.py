"""Config sections of the request queue (``[queue]``) and of data protection (``[privacy]``).

The lead wires them into :class:`hub.config.Settings` as ``queue`` and ``privacy``. Code that reads
them goes through :func:`queue_settings` / :func:`privacy_settings`, which fall back to the defaults
when a ``Settings`` object does not carry the section (yet).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from knowledge.settings import Section


class QueueSettings(Section):
    """The one durable queue: intake, threading, workers and outbox."""

    batch_max: int = Field(
        256,
        ge=1,
        le=10_000,
        description="Most inbound requests the intake writer commits in one transaction (group commit).",
    )
    phone_thread_window_hours: float = Field(
        72.0,
        ge=0,
        description="A message from the same phone number (SMS, phone) joins the citizen's open case when "
        "that case heard from the citizen within this many hours; 0 = never thread by phone.",
    )
    claim_timeout_seconds: float = Field(
        120.0,
        gt=0,
        description="How long a worker holds a claimed case or outbound message; a claim of a dead worker "
        "returns to the queue after this time.",
    )
    max_attempts: int = Field(
        5,
        ge=1,
        description="Claims of one case by the routing stage before it goes to the dead-letter state.",
    )
    worker_batch: int = Field(64, ge=1, le=1000, description="Most items a worker claims at once.")
    routing_share_under_load: float = Field(
        0.05,
        gt=0,
        le=1,
        description="While intake is saturated (requests arrive faster than one commit at a time), the share "
        "of a hub process's CPU the routing stage takes, so that clients waiting for their commit come first; "
        "the backlog is routed when the load passes. 1 = no yielding.",
    )
    poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often an idle worker looks for work written by other processes (work of its "
        "own process wakes it at once).",
    )
    sla_check_seconds: float = Field(
        60.0, gt=0, description="How often overdue cases are looked for and flagged."
    )
    attachment_dir: str = Field(
        "var/attachments",
        description="Directory where attachments are stored, outside the database, named by their SHA-256.",
    )
    attachment_max_bytes: int = Field(
        10_485_760, ge=1, description="Largest single attachment accepted (bytes); larger is rejected."
    )
    attachments_max_total_bytes: int = Field(
        26_214_400, ge=1, description="Largest sum of all attachments of one request (bytes)."
    )
    attachments_max_count: int = Field(20, ge=0, description="Most attachments one request may carry.")
    max_text_chars: int = Field(
        100_000, ge=100, description="Longest request text accepted (characters); longer is rejected."
    )
    outbox_retry_first_seconds: float = Field(
        300.0,
        gt=0,
        description="Delay before the first retry of an outbound message after a temporary failure; each "
        "further retry waits outbox_retry_factor times longer.",
    )
    outbox_retry_factor: float = Field(
        2.0, ge=1, description="Growth of the retry delay from one temporary failure to the next."
    )
    outbox_retry_max_seconds: float = Field(
        7200.0, gt=0, description="Longest delay between two retries of one outbound message."
    )
    outbox_deadline_hours: float = Field(
        48.0,
        gt=0,
        description="An outbound message that still fails temporarily this long after it was written is "
        "marked failed and an agent is told.",
    )
    message_id_domain: str = Field(
        "hub.localhost",
        min_length=3,
        max_length=200,
        pattern=r"^([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
        description="Fully qualified domain of the Message-IDs of outbound e-mail (RFC 5322 3.6.4): the hub's "
        "mail domain, e.g. the domain of [email] address. Citizens' replies thread back by these ids.",
    )


class PrivacySettings(Section):
    """Retention of personal data per case state."""

    closed_retention_days: int = Field(
        90,
        ge=0,
        description="Closed cases are anonymised by 'citizen-hub purge' this many days after closing "
        "(statistics stay, personal data goes).",
    )
    dead_letter_retention_days: int = Field(
        30,
        ge=0,
        description="Cases in the dead-letter state are anonymised this many days after their last change.",
    )
    imported_history_days: int = Field(
        730,
        ge=0,
        description="Imported routing history ('citizen-hub history import', labelled examples without a case) "
        "is deleted by 'citizen-hub purge' this many days after its import; examples made from cases go with "
        "their case. 0 = kept until deleted.",
    )


def queue_settings(settings: Any) -> QueueSettings:
    """The ``[queue]`` section of ``settings``, or the defaults when it has none."""
    value = getattr(settings, "queue", None)
    return value if isinstance(value, QueueSettings) else QueueSettings()


def privacy_settings(settings: Any) -> PrivacySettings:
    """The ``[privacy]`` section of ``settings``, or the defaults when it has none."""
    value = getattr(settings, "privacy", None)
    return value if isinstance(value, PrivacySettings) else PrivacySettings()
