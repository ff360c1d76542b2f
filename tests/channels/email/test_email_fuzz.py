"""Property tests of the MIME parser (``channels/email/parse.py``) and the listener's path from raw bytes to a
request (``EmailIntake._request``): whatever bytes arrive — random, or a MIME tree broken in every way the
strategies know (tests/strategies.py) — the parser returns a ParsedMail and the listener a valid request,
or (for a report) a report; never an exception, which would turn into a 451 the sender retries for days."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import EXAMPLES, FUZZ, hostile_bytes, mime_mails

from channels.email.listener import EmailIntake
from channels.email.parse import AttachmentLimits, ParsedMail, parse_mail
from channels.email.settings import EmailSettings
from hub.db import make_engine
from hub.queue.intake import IntakeWriter
from hub.queue.requests import InboundRequest
from hub.queue.settings import QueueSettings

#: Building a MIME tree costs the generator more than the parser; half the examples keep CI's time.
MIME = settings(FUZZ, max_examples=max(10, EXAMPLES // 2))
LIMITS = AttachmentLimits(max_bytes=2000, max_count=3, max_total_bytes=4000)
OWN = frozenset({"anliegen@hub.localhost"})


@pytest.fixture(scope="module")
def intake(tmp_path_factory):
    """The listener's intake object; its writer is never started (nothing is stored: only the parsing runs)."""
    root = tmp_path_factory.mktemp("mailfuzz")
    engine = make_engine(f"sqlite:///{root / 'x.sqlite3'}")
    queue = QueueSettings(attachment_dir=str(root / "att"), max_text_chars=2000)
    writer = IntakeWriter(engine, queue)
    settings = EmailSettings(raw_mail_dir=str(root / "raw"), max_attachment_bytes=2000)
    it = EmailIntake(writer, settings)
    yield it
    it.close()
    engine.dispose()


def _check(intake: EmailIntake, raw: bytes, envelope_from: str | None) -> None:
    parsed = parse_mail(raw, envelope_from=envelope_from, own_addresses=OWN, limits=LIMITS)
    assert isinstance(parsed, ParsedMail)
    assert parsed.message_id.startswith("<") and len(parsed.message_id) <= 255
    assert len(parsed.attachments) <= LIMITS.max_count
    assert sum(len(a.data) for a in parsed.attachments) <= LIMITS.max_total_bytes
    if parsed.report is not None:
        return  # a delivery report updates an outbound message; it opens no case
    request = intake._request(parsed, datetime.now(UTC), "/raw/ref")
    assert isinstance(request, InboundRequest)
    assert request.channel == "email" and request.external_id
    assert request.text or request.attachments  # a mail of attachments alone needs no text
    assert len(request.text) <= intake.max_text_chars


@FUZZ
@given(raw=hostile_bytes(4000), sender=st.one_of(st.none(), st.sampled_from(("", "<>", "x@y.de", "a" * 300))))
def test_any_bytes_become_a_request_or_a_report(intake, raw, sender):
    _check(intake, raw, sender)


@MIME
@given(raw=mime_mails())
def test_any_mime_tree_becomes_a_request_or_a_report(intake, raw):
    _check(intake, raw, "citizen@example.org")


@MIME
@given(raw=mime_mails(max_depth=1), cut=st.integers(0, 400))
def test_a_mail_cut_off_anywhere_still_parses(intake, raw, cut):
    """A connection that dropped in the middle of DATA hands over a torn mail (the listener never sees
    it, but the IMAP poller can fetch one a broken client uploaded)."""
    _check(intake, raw[: max(0, len(raw) - cut)], None)
