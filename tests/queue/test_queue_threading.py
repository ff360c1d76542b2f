"""Threading beyond the basics of tests/queue/test_intake.py: replies to the hub's own answers, and the
cases in which two citizens share a thread, a token or a number but must stay apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from queue_support import case_row, pg_schema_url, req, sqlite_engine
from sqlalchemy import func, insert, select

from hub.db import make_engine
from hub.migrate import upgrade
from hub.queue.cases import case_t, message_t, subject_tag
from hub.queue.intake import write_requests
from hub.queue.outbox import enqueue
from hub.queue.requests import normalise_phone


@pytest.fixture
def engine(tmp_path):
    return sqlite_engine(tmp_path)


T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _answer(engine, case_id: int, channel: str | None = None) -> str:
    """Queue the hub's answer on the case's channel; returns its external id (Message-ID, form id)."""
    with engine.begin() as conn:
        mid = enqueue(conn, case_row(engine, case_id), text="Antwort", author="agent:test", channel=channel)
        return conn.execute(select(message_t.c.external_id).where(message_t.c.id == mid)).scalar_one()


def _cases(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(case_t)).scalar()


def test_a_reply_to_the_hubs_own_answer_joins_the_case(engine):
    first = write_requests(engine, [req("<q1@mail.example>", channel="email",
                                        contact={"email": "max@example.de"})])[0]
    answer_id = _answer(engine, first.case_id)
    assert answer_id.endswith("@hub.localhost>")  # [queue] message_id_domain, fully qualified
    # A mail client quotes only the answer it replies to (In-Reply-To), and the whole thread in References.
    reply = write_requests(engine, [req("<q2@mail.example>", channel="email", contact={"email": "max@example.de"},
                                        in_reply_to=[answer_id])])[0]
    assert reply.case_id == first.case_id and reply.joined


def test_a_returned_paper_reply_form_joins_by_the_printed_form_id(engine):
    first = write_requests(engine, [req("FORM-A", channel="paper", contact={"name": "Erika Musterfrau"})])[0]
    form_id = _answer(engine, first.case_id)
    assert form_id.startswith("F-")
    back = write_requests(engine, [req("FORM-B", channel="paper", contact={"name": "Erika Musterfrau"},
                                       in_reply_to=[form_id])])[0]
    assert back.case_id == first.case_id


def test_the_same_external_id_on_another_channel_is_not_a_thread(engine):
    first = write_requests(engine, [req("<x1@x>", channel="email", contact={"email": "max@example.de"})])[0]
    web = write_requests(engine, [req("w-2", channel="web", contact={"email": "max@example.de"},
                                      in_reply_to=["<x1@x>"])])[0]
    assert web.case_id != first.case_id


# A phone number is a weak identifier (a household's landline, a shared mobile): two different names
# from one number are two citizens.
@pytest.mark.parametrize(
    "known, newcomer",
    [
        ({"phone": "+491701234567", "name": "Max Mustermann"},
         {"phone": "+491701234567", "name": "Eva Schmidt"}),
        ({"phone": "+491701234567", "email": "max@example.de"},
         {"phone": "+491701234567", "email": "eva@example.de"}),
    ],
)
def test_a_shared_phone_number_does_not_merge_two_known_different_citizens(engine, known, newcomer):
    a = write_requests(engine, [req("SM-A", channel="sms", contact=known, received_at=T0)])[0]
    b = write_requests(engine, [req("SM-B", channel="sms", contact=newcomer, received_at=T0 + timedelta(hours=1))])[0]
    assert a.case_id != b.case_id and not b.joined
    assert case_row(engine, a.case_id)["contact_name"] == known.get("name")  # nothing of b went into a


def test_a_phone_call_note_joins_the_sms_case_of_the_same_number(engine):
    sms = write_requests(engine, [req("SM-1", channel="sms", contact={"phone": "0170 1234567"}, received_at=T0)])[0]
    call = write_requests(engine, [req("CALL-1", channel="phone", contact={"phone": "+49 170 1234567"},
                                       received_at=T0 + timedelta(hours=2))])[0]
    assert call.case_id == sms.case_id


def test_a_case_token_quoted_by_another_citizen_starts_a_new_case(engine):
    first = write_requests(engine, [req("SM-T1", channel="sms", contact={"phone": "+491701234567"})])[0]
    other = write_requests(engine, [req("SM-T2", channel="sms", contact={"phone": "+491709999999"},
                                        case_token=first.token)])[0]
    assert other.case_id != first.case_id


def test_a_wrong_or_unknown_token_in_the_subject_starts_a_new_case(engine):
    first = write_requests(engine, [req("<t1@x>", channel="email", contact={"email": "max@example.de"})])[0]
    wrong = write_requests(engine, [req("<t2@x>", channel="email", contact={"email": "max@example.de"},
                                        subject=f"Re: {subject_tag('A' * 16)}")])[0]
    assert wrong.case_id != first.case_id


def test_two_citizens_in_one_batch_stay_apart_by_email(engine):
    results = write_requests(engine, [
        req("<b1@x>", channel="email", contact={"email": "max@example.de"}),
        req("<b2@x>", channel="email", contact={"email": "eva@example.de"}, in_reply_to=["<b1@x>"]),
        req("SM-b3", channel="sms", contact={"phone": "+491701234567", "email": "max@example.de"}),
        req("SM-b4", channel="sms", contact={"phone": "+491701234567", "email": "eva@example.de"}),
    ])
    assert len({r.case_id for r in results}) == 4 and _cases(engine) == 4


def test_two_citizens_in_one_batch_stay_apart(engine):
    """The in-batch shortcuts (reply to a message of the same batch, same number) check the citizen too."""
    results = write_requests(engine, [
        req("<b1@x>", channel="email", contact={"email": "max@example.de"}),
        req("<b2@x>", channel="email", contact={"email": "eva@example.de"}, in_reply_to=["<b1@x>"]),
        req("SM-b3", channel="sms", contact={"phone": "+491701234567", "name": "Max"}),
        req("SM-b4", channel="sms", contact={"phone": "+491701234567", "name": "Eva"}),
    ])
    assert len({r.case_id for r in results}) == 4 and _cases(engine) == 4


# -- migration 0012_phone_trunk_zero: numbers stored as +490… by the old phone rule get the queue's form, so
# the citizen's next message threads onto the case again; other numbers stay as they are.

STORED = {
    "+49045511234": "+4945511234",  # "+49 (0)4551 1234" under the old rule
    "+4345511234": "+4345511234",  # already right
    "+43015123456": "+4315123456",  # Vienna, "+43 (0)1 5123456"
    "+390612345678": "+390612345678",  # Rome keeps its zero
    "+4945511234": "+4945511234",
    None: None,
}


@pytest.fixture(params=["sqlite", "postgres"])
def old_engine(request, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
        yield engine
        engine.dispose()
        return
    with pg_schema_url() as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


def test_trunk_zero_numbers_are_rewritten_and_the_rest_stay(old_engine):
    upgrade(old_engine, "0011_federation")
    now = datetime.now(UTC)
    with old_engine.begin() as conn:
        for i, phone in enumerate(STORED, 1):
            conn.execute(insert(case_t).values(id=i, token=f"tok{i:013d}", state="open", channel="web",
                                               created_at=now, updated_at=now, state_changed_at=now,
                                               last_inbound_at=now, sla_pauses=[], attempts=0, contact_phone=phone))
    upgrade(old_engine)
    with old_engine.connect() as conn:
        got = dict(conn.execute(select(case_t.c.id, case_t.c.contact_phone)).all())
    assert [got[i] for i in range(1, len(STORED) + 1)] == list(STORED.values())
    # What the migration wrote is what the queue's rule makes of the citizen's own writing.
    assert normalise_phone("+49 (0)4551 1234") == got[1] and normalise_phone("+43 (0)1 5123456") == got[3]
