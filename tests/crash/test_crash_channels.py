"""Crash safety of every channel: the harness of ``bench/crash.py`` (``make crash`` runs many more kills).

The hub runs as real processes (``citizen-hub serve``, ``citizen-hub email serve``, ``citizen-hub email
poll-imap`` against a real Dovecot mailbox, outbound mail to a real aiosmtpd server); every channel's
clients load it at once (API, web form, Open311, SMTP, IMAP, signed Twilio SMS webhooks, agents answering
e-mail cases), and every
process gets SIGKILL at a random moment, twice, then the hub starts again and the harness checks that
every acknowledged request is stored exactly once, nothing is half-stored and no answer was sent twice or
lost (see ``bench/crash.py`` for every check). Bounded: two kills per database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import require_component
from dovecot_support import dovecot_missing, running_dovecot

from bench.crash import DEFAULT_CHANNELS, run_crash
from bench.traffic.drivers import DRIVERS


@pytest.fixture(scope="module")
def dovecot():
    require_component(dovecot_missing() is None, dovecot_missing() or "")
    with running_dovecot() as server:
        yield server


def _run(url: str, tmp_path: Path, dovecot, template: Path | None):
    report = asyncio.run(run_crash(url, tmp_path / "run", kills=2, dovecot=dovecot, template=template,
                                   min_acks=25, max_pause=1.5))
    print(report.summary())
    assert report.ok, report.summary()
    assert len(report.cycles) == 2
    for name in DEFAULT_CHANNELS:  # every channel took part and was acknowledged before the kills
        assert report.acked[name] > 0, f"{name} got no acknowledgement: {report.outcomes[name]}"
    assert report.outbox["sent"] > 0 and report.sink_mails >= report.outbox["sent"]
    return report


def test_every_registered_channel_has_a_driver_in_the_harness():
    """A channel added to channels.REGISTRY (SMS and voice, paper) fails here until its driver joins
    bench/traffic/drivers.py (see bench/traffic/__init__.py for the few lines it takes)."""
    from channels import REGISTRY

    assert set(DEFAULT_CHANNELS) == set(DRIVERS)
    covered = {d.channel for d in DRIVERS.values()}
    assert {c.name for c in REGISTRY} <= covered, f"channels without a crash driver: {({c.name for c in REGISTRY} - covered)}"
    assert {"api", "web", "open311", "smtp", "imap", "sms", "voice"} <= set(DRIVERS)  # the API, mail both ways in, SMS, calls


def test_sigkill_of_every_hub_process_on_sqlite_loses_nothing_acknowledged(tmp_path, dovecot, demo_db_url):
    _run(f"sqlite:///{tmp_path / 'crash.sqlite3'}", tmp_path, dovecot, Path(demo_db_url.removeprefix("sqlite:///")))


@pytest.mark.postgres
def test_sigkill_of_every_hub_process_on_postgres_loses_nothing_acknowledged(tmp_path, dovecot, postgres_url):
    _run(postgres_url, tmp_path, dovecot, None)
