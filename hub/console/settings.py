"""Config section of the agent console (``[console]``): log-in, sessions, lockout, live updates, dashboard.

:class:`hub.config.Settings` holds it as ``console``; code reads it through :func:`console_settings`. The one
secret (``csrf_secret``) is given as ``CITIZEN_HUB_CONSOLE__CSRF_SECRET``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from knowledge.settings import Section

#: German text blocks for the answer box (``reply_templates``).
DEFAULT_REPLY_TEMPLATES = (
    "Unterlagen mitbringen: Bitte bringen Sie zu Ihrem Termin die für {leistung} nötigen Unterlagen "
    "sowie einen gültigen Personalausweis oder Reisepass mit.",
    "Termin vereinbaren: Bitte vereinbaren Sie für {leistung} einen Termin bei {behoerde}.",
    "Weitergeleitet: Wir haben Ihr Anliegen an die zuständige Stelle ({behoerde}) weitergeleitet. Sie "
    "erhalten von dort eine Antwort.",
    "Rückfrage: Damit wir Ihr Anliegen bearbeiten können, benötigen wir noch folgende Angaben: ",
    "Gruß: Mit freundlichen Grüßen – Ihr Bürgertelefon 115",
)


class ConsoleSettings(Section):
    """The agent console: who may log in, for how long, and what the supervisors' dashboard measures."""

    cookie_secure: bool = Field(
        True,
        description="Send the session cookie only over HTTPS (the Secure flag). Set to false only for a "
        "console reached as http://localhost or http://127.0.0.1 during development or tests.",
    )
    session_idle_minutes: int = Field(
        60, ge=1, le=24 * 60,
        description="A session that sees no request for this many minutes ends; the agent logs in again.",
    )
    session_max_hours: float = Field(
        12.0, gt=0, le=24 * 7, description="A session ends this many hours after the log-in, however active."
    )
    lockout_threshold: int = Field(
        5, ge=1, le=100,
        description="Failed log-ins for one account within lockout_window_minutes that lock the account.",
    )
    lockout_window_minutes: int = Field(
        15, ge=1, description="Window in which failed log-ins are counted towards the lockout (minutes)."
    )
    lockout_minutes: int = Field(
        15, ge=1, description="How long a locked account refuses every log-in, even with the right password."
    )
    login_rate_per_minute: float = Field(
        20.0, gt=0,
        description="Log-in attempts one client address may make per minute on average (any account names); "
        "more get 429. Stops password spraying across many accounts, which the per-account lockout does not.",
    )
    login_burst: int = Field(10, ge=1, description="Log-in attempts one client may make at once before the rate applies.")
    password_min_length: int = Field(
        12, ge=8, le=128, description="Shortest password 'citizen-hub user add' accepts (characters)."
    )
    csrf_secret: str = Field(
        "",
        repr=False,
        description="Key that signs the token of the log-in form (at least 32 characters); give it as "
        "CITIZEN_HUB_CONSOLE__CSRF_SECRET. Empty = a random key per process: a log-in form opened before a "
        "restart is refused once. Forms of logged-in agents carry a per-session token instead.",
    )
    lookup_max_results: int = Field(8, ge=1, le=50, description="Most services the search-as-you-type list shows.")
    events_poll_seconds: float = Field(
        1.0, gt=0, le=60,
        description="How often the live queue view looks for new messages and state changes in the database "
        "(seconds); changes made by other hub processes show up within this time.",
    )
    events_heartbeat_seconds: float = Field(
        15.0, ge=1, le=300,
        description="Seconds between keep-alive comments on the live-update stream (keeps proxies from "
        "closing it); the session is checked again at each.",
    )
    service_level_seconds: float = Field(
        30.0, gt=0, description="D115: a call counts as answered in time when the caller waited at most this long."
    )
    target_service_level: float = Field(
        0.75, ge=0, le=1, description="D115 target share of calls answered within service_level_seconds (0-1)."
    )
    target_first_contact: float = Field(
        0.65, ge=0, le=1, description="D115 target share of calls answered at first contact (0-1)."
    )
    target_forward_in_time: float = Field(
        0.9, ge=0, le=1,
        description="Share of forwarded cases that should be answered within [sla] forwarded_answer_hours "
        "(0-1). D115 promises the 24 hours but sets no share; this is the organisation's own target.",
    )
    dashboard_default_days: int = Field(
        7, ge=1, le=366, description="Period the dashboard shows when none is chosen (days up to today)."
    )
    dashboard_max_days: int = Field(
        366, ge=1, le=3660, description="Longest period the dashboard computes at once (days)."
    )
    find_max_results: int = Field(
        20, ge=1, le=200,
        description="Most cases 'Fall oder Anrufer finden' lists, for the matches and again for the caller's "
        "earlier cases (newest first).",
    )
    reply_templates: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REPLY_TEMPLATES),
        description="Text blocks the answer box offers, each 'Titel: Text' (the title is listed, the text "
        "inserted). {leistung} and {behoerde} become the case's service and office. From the environment "
        "as a JSON list (the texts contain commas).",
    )

    @field_validator("reply_templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        for item in value:
            title, sep, text = item.partition(":")
            if not sep or not title.strip() or not text.strip() or len(title) > 80:
                raise ValueError(f"each entry must be 'Titel: Text' with a title of at most 80 characters: {item!r}")
        return value

    @field_validator("csrf_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("must be at least 32 characters (or empty for a random key per process)")
        return value


def console_settings(settings: Any) -> ConsoleSettings:
    """The ``[console]`` section of a :class:`hub.config.Settings`."""
    return settings.console
