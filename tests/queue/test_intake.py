"""Intake: validation, idempotency (also under concurrent duplicates), threading, attachments, migrations."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import ValidationError
from queue_support import case_row, count_messages, req, sqlite_engine
from sqlalchemy import func, inspect, select, update
from sqlmodel import SQLModel

from hub.db import make_engine
from hub.migrate import MODEL_MODULES, current_revision, head_revision, import_models, upgrade
from hub.queue.cases import CaseState, SlaPolicy, attachment_t, case_t, message_t, subject_tag, transition
from hub.queue.intake import AttachmentStore, IntakeWriter, RequestRejected, check_limits, write_requests
from hub.queue.requests import InboundRequest
from hub.queue.settings import QueueSettings


@pytest.fixture
def engine(tmp_path):
    return sqlite_engine(tmp_path)


def _set_state(engine, case_id, state, **values):
    with engine.begin() as conn:
        conn.execute(update(case_t).where(case_t.c.id == case_id).values(state=state, **values))


# -- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"text": "Hallo\x00Welt"}, "control characters"),
        ({"text": "bell\x07"}, "control characters"),
        ({"external_id": "a\nb"}, "single line"),
        ({"external_id": ""}, "at least 1 character"),
        ({"channel": "fax"}, "unknown channel"),
        ({"received_at": datetime(2026, 1, 1, 12, 0)}, "timezone-aware"),
        ({"text": "   "}, "needs a text or an attachment"),
        ({"contact": {"email": "not-an-address"}}, "not an e-mail address"),
        ({"contact": {"phone": "12"}}, "not a phone number"),
        ({"contact": {"name": "Max", "iban": "DE00"}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_requests_are_rejected_with_a_reason(fields, message):
    data = {"channel": "api", "external_id": "x1", "text": "Reisepass", **fields}
    with pytest.raises(ValidationError, match=message):
        InboundRequest(**data)


def test_contacts_are_normalised():
    r = InboundRequest(channel="sms", external_id="SM1", text="hi",
                       contact={"email": " Max@Example.DE ", "phone": "0170 / 123-45 67"})
    assert r.contact.email == "max@example.de"
    assert r.contact.phone == "+491701234567"
    assert InboundRequest(channel="sms", external_id="S2", text="x", contact={"phone": "0049 30 1234"}) \
        .contact.phone == "+49301234"


# -- idempotency ---------------------------------------------------------------------------------------


def test_the_same_external_id_twice_creates_nothing_new(engine):
    first = write_requests(engine, [req("web-1")])[0]
    again = write_requests(engine, [req("web-1", text="changed text")])[0]
    assert first.created and not again.created
    assert (again.case_id, again.token, again.message_id) == (first.case_id, first.token, first.message_id)
    assert count_messages(engine) == 1
    # The same id on another channel is another request.
    other = write_requests(engine, [req("web-1", channel="web")])[0]
    assert other.created and other.case_id != first.case_id


def test_duplicates_inside_one_batch_resolve_to_the_first(engine):
    results = write_requests(engine, [req("d1"), req("d2"), req("d1"), req("d1")])
    assert [r.created for r in results] == [True, True, False, False]
    assert results[2].case_id == results[3].case_id == results[0].case_id
    assert count_messages(engine) == 2


async def test_concurrent_duplicates_through_the_writer_create_one_message(engine):
    writer = IntakeWriter(engine).start()
    try:
        results = await asyncio.gather(*[writer.submit(req(f"dup-{i % 5}")) for i in range(100)])
    finally:
        writer.stop()
    assert sum(r.created for r in results) == 5
    for i in range(5):
        same = {r.case_id for j, r in enumerate(results) if j % 5 == i}
        assert len(same) == 1
    assert count_messages(engine) == 5


def test_two_writers_racing_on_the_same_keys_store_each_key_once(tmp_path):
    """Two engines (as two hub processes would have) write the same 200 keys at the same moment."""
    url = f"sqlite:///{tmp_path / 'race.sqlite3'}"
    upgrade(make_engine(url))
    engines = [make_engine(url), make_engine(url)]
    barrier = threading.Barrier(2)
    out: list[list] = [[], []]

    def run(n: int) -> None:
        barrier.wait()
        for i in range(0, 200, 10):
            out[n].extend(write_requests(engines[n], [req(f"race-{k}") for k in range(i, i + 10)]))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count_messages(engines[0]) == 200
    created = sum(r.created for r in out[0] + out[1])
    assert created == 200
    assert [r.case_id for r in out[0]] == [r.case_id for r in out[1]]


# -- threading -----------------------------------------------------------------------------------------


def _mail(ext, email="max@example.de", **kw):
    return req(ext, channel="email", contact={"email": email, "name": "Max Mustermann"}, **kw)


def test_email_reply_joins_the_case_by_in_reply_to_and_references(engine):
    first = write_requests(engine, [_mail("<a1@mail.example>")])[0]
    reply = write_requests(engine, [_mail("<a2@mail.example>", in_reply_to=["<a1@mail.example>"])])[0]
    refs = write_requests(engine, [_mail("<a3@mail.example>", in_reply_to=["<unknown@x>", "<a2@mail.example>"])])[0]
    assert reply.case_id == first.case_id and reply.joined
    assert refs.case_id == first.case_id
    assert count_messages(engine) == 3


def test_a_different_citizen_replying_in_the_thread_gets_a_new_case(engine):
    first = write_requests(engine, [_mail("<b1@mail.example>")])[0]
    other = write_requests(engine, [_mail("<b2@x>", email="eve@example.de", in_reply_to=["<b1@mail.example>"])])[0]
    assert other.case_id != first.case_id and not other.joined


def test_case_token_in_the_subject_joins_only_the_same_citizen(engine):
    first = write_requests(engine, [_mail("<c1@x>")])[0]
    same = write_requests(engine, [_mail("<c2@x>", subject=f"Re: Ihr Anliegen {subject_tag(first.token)}")])[0]
    eve = write_requests(engine, [_mail("<c3@x>", email="eve@example.de",
                                        subject=f"Re: {subject_tag(first.token)}")])[0]
    assert same.case_id == first.case_id
    assert eve.case_id != first.case_id


def test_a_closed_case_is_not_joined(engine):
    first = write_requests(engine, [_mail("<d1@x>")])[0]
    _set_state(engine, first.case_id, "closed")
    again = write_requests(engine, [_mail("<d2@x>", in_reply_to=["<d1@x>"])])[0]
    assert again.case_id != first.case_id


def _sms(ext, phone="+491701234567", at=None):
    return req(ext, channel="sms", contact={"phone": phone}, received_at=at or datetime.now(UTC))


def test_sms_from_the_same_number_joins_within_the_window_only(engine):
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    first = write_requests(engine, [_sms("SM1", at=t0)])[0]
    within = write_requests(engine, [_sms("SM2", at=t0 + timedelta(hours=71))])[0]
    other_phone = write_requests(engine, [_sms("SM3", phone="+491709999999", at=t0 + timedelta(hours=72))])[0]
    # 72 h after the last message of the case (SM2), not after the first: still inside.
    later = write_requests(engine, [_sms("SM4", at=t0 + timedelta(hours=71 + 71))])[0]
    outside = write_requests(engine, [_sms("SM5", at=t0 + timedelta(hours=71 + 71 + 73))])[0]
    assert within.case_id == first.case_id
    assert later.case_id == first.case_id
    assert other_phone.case_id != first.case_id
    assert outside.case_id != first.case_id


def test_phone_window_is_configurable(engine):
    settings = QueueSettings(phone_thread_window_hours=0)
    a = write_requests(engine, [_sms("P1")], settings=settings)[0]
    b = write_requests(engine, [_sms("P2")], settings=settings)[0]
    assert a.case_id != b.case_id


def test_an_email_with_the_same_phone_number_is_not_threaded_by_phone(engine):
    a = write_requests(engine, [_sms("Q1")])[0]
    b = write_requests(engine, [req("<q2@x>", channel="email",
                                    contact={"email": "x@example.de", "phone": "+491701234567"})])[0]
    assert a.case_id != b.case_id


def test_paper_reply_form_joins_by_form_id_unless_the_name_differs(engine):
    def paper(ext, name, reply_to=()):
        return req(ext, channel="paper", contact={"name": name, "postal_address": "Hauptstr. 1\n23795 Bad Segeberg"},
                   in_reply_to=list(reply_to))

    first = write_requests(engine, [paper("FORM-0001", "Erika Musterfrau")])[0]
    same = write_requests(engine, [paper("FORM-0002", "erika  musterfrau", ["FORM-0001"])])[0]
    other = write_requests(engine, [paper("FORM-0003", "Hans Meier", ["FORM-0001"])])[0]
    assert same.case_id == first.case_id
    assert other.case_id != first.case_id


def test_a_reply_inside_the_same_batch_joins_the_new_case(engine):
    results = write_requests(engine, [_mail("<e1@x>"), _mail("<e2@x>", in_reply_to=["<e1@x>"]),
                                      _sms("E3"), _sms("E4")])
    assert results[0].case_id == results[1].case_id and results[1].joined
    assert results[2].case_id == results[3].case_id and results[3].joined
    assert results[0].case_id != results[2].case_id
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(case_t)).scalar() == 2


def test_a_follow_up_resumes_a_case_waiting_for_the_citizen_and_fills_the_contact(engine):
    first = write_requests(engine, [_sms("W1")])[0]
    _set_state(engine, first.case_id, "forwarded", forwarded_at=datetime.now(UTC), authority_id="a1")
    with engine.begin() as conn:
        transition(conn, case_row(engine, first.case_id), "waiting_for_citizen", actor="agent",
                   policy=SlaPolicy())
    follow = write_requests(engine, [req("W2", channel="sms", text="Meine Adresse: Hauptstr. 1",
                                         contact={"phone": "+491701234567", "name": "Max"})])[0]
    row = case_row(engine, first.case_id)
    assert follow.case_id == first.case_id and follow.state == row["state"] == "forwarded"
    assert row["contact_name"] == "Max" and row["sla_paused_since"] is None


def test_a_follow_up_to_an_answered_case_reopens_it(engine):
    first = write_requests(engine, [_mail("<f1@x>")])[0]
    _set_state(engine, first.case_id, "answered", authority_id="a1")
    follow = write_requests(engine, [_mail("<f2@x>", in_reply_to=["<f1@x>"])])[0]
    assert follow.state == case_row(engine, first.case_id)["state"] == CaseState.ROUTED


# -- attachments and limits --------------------------------------------------------------------------


def test_attachments_are_stored_outside_the_row(engine, tmp_path):
    store = AttachmentStore(tmp_path / "att")
    data = b"%PDF-1.4 scanned form"
    r = req("<g1@x>", channel="email", attachments=[{"filename": "../../etc/scan.pdf", "content_type": "application/pdf",
                                                     "data": data}])
    result = write_requests(engine, [r], store=store)[0]
    with engine.connect() as conn:
        att = conn.execute(select(attachment_t)).mappings().one()
    digest = hashlib.sha256(data).hexdigest()
    assert att["message_id"] == result.message_id and att["sha256"] == digest
    assert att["filename"] == "scan.pdf"  # never a path
    assert store.read(digest) == data
    assert not list((tmp_path / "att").rglob("*.tmp"))


def test_limits_reject_before_anything_is_stored(engine):
    settings = QueueSettings(attachment_max_bytes=10, max_text_chars=100)
    big = req("h1", attachments=[{"filename": "a.bin", "data": b"x" * 11}])
    with pytest.raises(RequestRejected) as info:
        check_limits(big, settings)
    assert info.value.status == 413
    with pytest.raises(RequestRejected):
        check_limits(req("h2", text="x" * 101), settings)
    assert count_messages(engine) == 0


async def test_the_writer_refuses_oversized_requests_and_stores_nothing(engine):
    writer = IntakeWriter(engine, QueueSettings(max_text_chars=100)).start()
    try:
        with pytest.raises(RequestRejected):
            await writer.submit(req("big", text="x" * 101))
        ok = await writer.submit(req("small"))
    finally:
        writer.stop()
    assert ok.created and count_messages(engine) == 1


# -- migrations ------------------------------------------------------------------------------------------


def test_migrations_create_every_table_and_match_the_models(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")  # not sqlite_engine's copy: migrate here
    upgrade(engine)
    upgrade(engine)  # running it again changes nothing
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    import_models()
    assert {t for t in SQLModel.metadata.tables} <= tables
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], f"models and migrations differ; write a new revision: {diff}"


def test_a_database_made_by_create_all_is_adopted(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    import knowledge.models  # noqa: F401

    SQLModel.metadata.tables["region"].create(engine)  # an early database with only some tables
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert write_requests(engine, [req("adopted")])[0].created
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(message_t)).scalar() == 1


def test_every_table_module_is_known_to_the_migrations():
    root = Path(__file__).resolve().parents[2]
    with_tables = {
        ".".join(p.relative_to(root).with_suffix("").parts)
        for package in ("hub", "knowledge", "channels")
        for p in (root / package).rglob("*.py")
        if "table=True" in p.read_text(encoding="utf-8")
    }
    assert with_tables <= set(MODEL_MODULES), f"add to hub.migrate.MODEL_MODULES: {with_tables - set(MODEL_MODULES)}"


# -- the fast paths of intake ------------------------------------------------------------------------


_BODIES = [
    b'{"channel": "api", "external_id": "a-1", "text": "Reisepass", "location": "Soest",'
    b' "contact": {"name": "Erika", "email": "erika@example.de"}}',
    b'{"external_id": "a-2", "text": "x", "external_id": "a-3"}',  # duplicate key: the last wins
    '{"external_id": "ä-4", "text": "Grüße \\ud83d\\ude00"}'.encode(),  # escaped surrogate pair
    b'{"external_id": "a-5", "text": "x\\ud800y"}',  # lone surrogate: json.loads takes it, pydantic not
    b'{"external_id": "a-6", "text": "x", "location": NaN}',
    b'{"external_id": "a-7", "text": ""}',
    b'{"external_id": "a-8", "text": "x", "extra": 1}',
    b'{"external_id": 8, "text": "x"}',
    b'{"external_id": "a-9", "text": "x", "contact": {"fax": "1"}}',
    b'{"external_id": "a-10", "text": "x"} trailing',
    b'\xef\xbb\xbf{"external_id": "a-11", "text": "x"}',
    b'\xff\xfe',
    b"[1, 2]",
    b"",
    b'{"channel": "email", "external_id": "a-12", "text": "x"}',
]


@pytest.mark.parametrize("body", _BODIES)
def test_the_one_pass_body_parser_answers_exactly_as_the_general_path(body):
    from hub.http.api_cases import ApiError, RequestIn, _parse_json, _request_in, _validate

    def outcome(parse):
        try:
            return ("ok", parse(body).model_dump())
        except ApiError as exc:
            return ("error", exc.status, str(exc), exc.extra)

    general = outcome(lambda b: _validate(RequestIn, _parse_json(b)))
    assert outcome(_request_in) == general


def test_stored_times_read_back_as_written(engine):
    t = datetime(2026, 3, 27, 16, 59, 0, 123456, tzinfo=UTC)
    result = write_requests(engine, [req("times-1", received_at=t)])[0]
    row = case_row(engine, result.case_id)
    assert row["created_at"] == t == row["last_inbound_at"]
    assert row["first_response_due"] > t and row["sla_pauses"] == []
    with engine.connect() as conn:
        received, created = conn.exec_driver_sql("SELECT received_at, created_at FROM hub_message").one()
    assert received == "2026-03-27 16:59:00.123456"  # SQLAlchemy's own SQLite text form
    assert len(created) == 26 and created[10] == " "


async def test_requests_of_one_loop_turn_reach_the_writer_as_one_hand_over(engine):
    writer = IntakeWriter(engine)
    handed: list[int] = []
    real_put = writer._queue.put

    class CountingQueue:
        """The writer's queue, counting what is put into it."""

        def put(self, item):
            handed.append(len(item) if isinstance(item, list) else 0)
            real_put(item)

        def __getattr__(self, name):
            return getattr(real_queue, name)

    real_queue = writer._queue
    writer._queue = CountingQueue()
    writer.start()
    try:
        results = await asyncio.gather(*[writer.submit(req(f"turn-{i}")) for i in range(300)])
    finally:
        writer.stop()
    assert [r.created for r in results] == [True] * 300
    assert handed[0] == 300 and sum(handed) == 300  # one item for all of them (then the stop marker)
    assert writer.batches == 2  # and written in batches of at most batch_max (256)
    assert count_messages(engine) == 300


async def test_a_request_handed_over_after_the_writer_stopped_fails_instead_of_waiting(engine):
    from hub.queue.intake import IntakeUnavailable

    writer = IntakeWriter(engine).start()
    pending = asyncio.ensure_future(writer.submit(req("late-1")))
    await asyncio.sleep(0)  # submitted, the hand-over is scheduled for the next turn
    writer.stop()
    with pytest.raises(IntakeUnavailable):
        await asyncio.wait_for(pending, 5)
    assert count_messages(engine) == 0


async def test_the_figures_are_counted_before_the_acknowledgement(engine):
    """A scrape of /metrics right after a 2xx/TwiML must show the request: the service's intake counter is an
    observer (run before any waiting handler is answered), not a listener (run after, and racing the scrape).
    A slow listener makes the race certain: it runs only once the handler has its answer."""
    from hub.queue.workers import QueueService

    service = QueueService(engine, run_workers=False)
    service.writer.add_listener(lambda reqs, outcomes: threading.Event().wait(0.3), first=True)
    service.writer.start()
    try:
        result = await service.writer.submit(req("seen-1"))
        counted = service.metrics.intake_batches._value.get()
        new = service.metrics.intake.labels("api", "new")._value.get()
    finally:
        service.writer.stop()
    assert result.created and counted == 1 and new == 1


async def test_a_failing_observer_does_not_stop_intake(engine):
    writer = IntakeWriter(engine)
    writer.add_observer(lambda reqs, outcomes: 1 / 0)
    writer.start()
    try:
        result = await writer.submit(req("obs-1"))
    finally:
        writer.stop()
    assert result.created and count_messages(engine) == 1


# -- companions: a channel's writes in the batch's transaction -----------------------------------------------


class _Companion:
    """Marks the cases of its requests (``location``) in the batch's transaction; ``fail`` makes that raise."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.expected: dict[tuple[str, str], tuple[asyncio.Future, asyncio.AbstractEventLoop]] = {}
        self.alone: list[int] = []

    def expect(self, key):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.expected[key] = (future, loop)
        return future

    def take(self, reqs):
        share = [(i, self.expected.pop(r.key())) for i, r in enumerate(reqs) if r.key() in self.expected]
        return share or None

    def write(self, conn, share, outcomes):
        for index, _ in share:
            conn.execute(update(case_t).where(case_t.c.id == outcomes[index].case_id).values(location="mit"))
        if self.fail:
            raise RuntimeError("the companion's write failed")
        return [(future, loop, "together") for _, (future, loop) in share]

    def write_alone(self, share, outcomes):
        self.alone += [outcomes[index].case_id for index, _ in share]
        return [(future, loop, "alone") for _, (future, loop) in share]


@pytest.mark.parametrize("fail", [False, True])
async def test_a_companion_writes_in_the_batch_and_a_failure_of_its_writes_keeps_the_requests(engine, fail):
    writer = IntakeWriter(engine)
    companion = _Companion(fail=fail)
    writer.add_companion(companion)
    writer.start()
    try:
        reqs = [req(f"comp-{i}") for i in range(5)]
        written = [companion.expect(r.key()) for r in reqs]
        results = await asyncio.gather(*(writer.submit(r) for r in reqs))
        # Answered with the batch: the companion's futures are done when the requests' are.
        assert all(f.done() for f in written)
        values = [f.result() for f in written]
    finally:
        writer.stop()
    assert count_messages(engine) == 5
    locations = {case_row(engine, r.case_id)["location"] for r in results}
    if fail:  # its writes rolled back to the SAVEPOINT, the requests committed, then its share written alone
        assert locations == {None} and values == ["alone"] * 5
        assert sorted(companion.alone) == sorted(r.case_id for r in results)
    else:
        assert locations == {"mit"} and values == ["together"] * 5 and companion.alone == []
