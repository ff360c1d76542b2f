"""The fast paths of intake store and answer exactly what the general code would.

Intake writes on the driver's cursor (``hub.queue.bulk.BulkWriter``), converts values with its own SQLite
time formatter, computes SLA deadlines once per minute, answers with pre-encoded JSON and remembers
verified tokens. Each shortcut is checked here against the general code it replaces, on SQLite and on
the real local PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from queue_support import pg_engine, req, sqlite_engine
from sqlalchemy import insert, select, text, update

from hub.http.tokens import TokenVerifier, add_token, revoke_token
from hub.queue.bulk import BulkWriter, converters, sqlite_utc
from hub.queue.cases import CaseState, SlaPolicy, case_t, message_t
from hub.queue.intake import IntakeResult, IntakeWriter, write_requests
from hub.queue.requests import Contact, InboundRequest, clean_text
from hub.queue.sla import BusinessCalendar, SlaClock

BERLIN = ZoneInfo("Europe/Berlin")


# -- values ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    datetime(2026, 3, 27, 17, 59, 0, 123456, tzinfo=UTC),
    datetime(2026, 3, 27, 17, 59, 0, 0, tzinfo=UTC),  # isoformat drops a zero fraction unless told not to
    datetime(2026, 3, 29, 2, 30, tzinfo=BERLIN),  # the hour clocks skip in spring
    datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN),  # the hour that comes twice in autumn
    datetime(2026, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=-11, minutes=-30))),
    datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),  # three-digit year: still zero-padded
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
])
def test_the_sqlite_time_formatter_stores_what_the_column_type_stores(tmp_path, value):
    engine = sqlite_engine(tmp_path)
    general = case_t.c.created_at.type._cached_bind_processor(engine.dialect)
    assert sqlite_utc(value) == general(value)
    assert converters(case_t, engine.dialect)["created_at"] is sqlite_utc


def test_the_sqlite_time_formatter_agrees_on_random_instants_and_minutes_it_has_seen(tmp_path):
    """The text up to the minute is remembered: instants of one minute, and of minutes in other
    offsets that are the same UTC minute, all come out as the column type writes them."""
    general = case_t.c.created_at.type._cached_bind_processor(sqlite_engine(tmp_path).dialect)
    rng = random.Random(7)
    base = datetime(2026, 3, 29, 0, 59, 58, tzinfo=UTC)
    instants = [base + timedelta(microseconds=rng.randrange(0, 3 * 3600 * 10**6)) for _ in range(3000)]
    instants += [datetime(rng.randrange(2, 9999), rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(24),
                          rng.randrange(60), rng.randrange(60), rng.choice([0, rng.randrange(10**6)]), tzinfo=UTC)
                 for _ in range(2000)]
    zones = [UTC, BERLIN, timezone(timedelta(hours=5, minutes=45)), timezone(timedelta(hours=-9, minutes=-30))]
    for value in instants:
        for zone in zones:
            local = value.astimezone(zone)
            assert sqlite_utc(local) == general(local), local


def test_the_sqlite_time_formatter_refuses_naive_times():
    with pytest.raises(ValueError, match="naive"):
        sqlite_utc(datetime(2026, 1, 1, 12, 0))


def test_columns_of_one_type_share_one_converter_so_a_shared_value_is_converted_once(tmp_path):
    engine = sqlite_engine(tmp_path)
    conv = converters(case_t, engine.dialect)
    assert conv["created_at"] is conv["updated_at"] is conv["first_response_due"]
    assert "token" not in conv and "attempts" not in conv  # strings and integers go to the driver as they are
    assert "sla_pauses" in conv  # JSON is serialised by its type


def _general_insert(conn, table, rows):
    conn.execute(insert(table), rows)


def _rows_by(conn, table, key):
    return {r[key]: dict(r) for r in conn.execute(select(table)).mappings()}


def _compare_inserters(engine):
    """The same rows written by SQLAlchemy Core and by BulkWriter read back identically."""
    now = datetime(2026, 4, 3, 9, 15, 0, 250000, tzinfo=UTC)  # Good Friday: a holiday, as it happens
    other = datetime(2026, 4, 7, 6, 0, tzinfo=BERLIN)
    base = {
        "state": "new", "channel": "api", "created_at": now, "updated_at": now, "state_changed_at": now,
        "last_inbound_at": other, "contact_name": "Jörg Müller", "contact_email": None, "contact_phone": "+4945511",
        "contact_address": "Hauptstr. 1\n23795 Bad Segeberg", "location": None, "first_response_due": other,
        "attempts": 0,
    }
    pauses = [[], [["2026-04-07T08:00:00+00:00", None]], [["2026-04-07T08:00:00+00:00", "2026-04-07T09:00:00+00:00"]]]
    with engine.begin() as conn:
        core = [dict(base, token=f"core-{i}", sla_pauses=p) for i, p in enumerate(pauses)]
        fast = [dict(base, token=f"fast-{i}", sla_pauses=p) for i, p in enumerate(pauses)]
        _general_insert(conn, case_t, core)
        ids = dict(BulkWriter(conn).insert(case_t, fast, ("token", "id")))
        assert sorted(ids) == ["fast-0", "fast-1", "fast-2"]
        stored = _rows_by(conn, case_t, "token")
    for i in range(len(pauses)):
        a, b = stored[f"core-{i}"], stored[f"fast-{i}"]
        assert b["id"] == ids[f"fast-{i}"]
        for row in (a, b):
            del row["id"], row["token"]
        assert a == b
    with engine.connect() as conn:  # byte for byte, not only after reading back through the types
        raw = conn.execute(text("SELECT token, created_at, last_inbound_at, sla_pauses FROM hub_case ORDER BY token"))
        as_text = {t: rest for t, *rest in raw}
    for i in range(len(pauses)):
        assert as_text[f"core-{i}"] == as_text[f"fast-{i}"]


def test_the_driver_level_insert_stores_exactly_what_core_stores_on_sqlite(tmp_path):
    _compare_inserters(sqlite_engine(tmp_path))


@pytest.mark.postgres
def test_the_driver_level_insert_stores_exactly_what_core_stores_on_postgres():
    with pg_engine() as engine:
        _compare_inserters(engine)


def _compare_updates_and_ids(engine):
    """``BulkWriter.update`` writes what Core's UPDATE writes and counts what it changed; ``insert_ids``
    gives each row its own id, in the order of the rows, also for rows alike in their key."""
    now = datetime(2026, 4, 3, 9, 15, 0, 250000, tzinfo=UTC)
    base = {"state": "new", "channel": "sms", "created_at": now, "updated_at": now, "state_changed_at": now,
            "last_inbound_at": now, "sla_pauses": [], "attempts": 0}
    with engine.begin() as conn:
        ids = [conn.execute(insert(case_t).values(**base, token=f"u-{i}").returning(case_t.c.id)).scalar_one()
               for i in range(4)]
        later = datetime(2026, 4, 3, 11, 0, tzinfo=BERLIN)
        changes = {"state": "answered", "answered_at": later, "route_json": {"a": [1, "ü"]}, "claimed_by": None}
        core = update(case_t).where(case_t.c.id == ids[0], case_t.c.state == "new").values(**changes)
        assert conn.execute(core).rowcount == 1
        writer = BulkWriter(conn)
        # Two of them as Core wrote the first; one with another set of columns; one no longer "new".
        assert writer.update(case_t, [(changes, (ids[1], "new")), (changes, (ids[2], "new")),
                                      ({"state": "routed"}, (ids[3], "new")), (changes, (ids[0], "new"))],
                             where=("id", "state")) == 3
        stored = {r["id"]: dict(r) for r in conn.execute(select(case_t)).mappings()}
        for case_id in ids[1:3]:
            a, b = dict(stored[ids[0]]), dict(stored[case_id])
            for row in (a, b):
                del row["id"], row["token"]
            assert a == b
        assert stored[ids[3]]["state"] == "routed"
        rows = [{"case_id": ids[i % 2], "direction": "out", "kind": "reply", "channel": "sms", "text": "gleich",
                 "author": "agent:a", "recipient": None, "subject": None, "created_at": now, "send_attempts": n}
                for i, n in enumerate([5, 6, 7, 8, 9])]
        message_ids = writer.insert_ids(message_t, rows, key=("case_id", "text"))
        assert len(set(message_ids)) == 5
        attempts = dict(conn.execute(select(message_t.c.id, message_t.c.send_attempts)
                                     .where(message_t.c.id.in_(message_ids))).all())
        assert [attempts[i] for i in message_ids] == [5, 6, 7, 8, 9]


def test_the_driver_level_update_and_ids_on_sqlite(tmp_path):
    _compare_updates_and_ids(sqlite_engine(tmp_path))


@pytest.mark.postgres
def test_the_driver_level_update_and_ids_on_postgres():
    with pg_engine() as engine:
        _compare_updates_and_ids(engine)


def _record(ins: BulkWriter) -> list[tuple[str, list]]:
    """Wrap the inserter's cursor so that every statement it runs is kept, with its parameters."""
    seen: list[tuple[str, list]] = []
    real = ins.cursor

    class Recording:
        """The driver's cursor, recording what it runs."""

        def execute(self, sql, params):
            seen.append((sql, list(params)))
            return real.execute(sql, params)

        def fetchall(self):
            return real.fetchall()

    ins.cursor = Recording()
    return seen


def test_columns_null_in_every_row_are_left_out_and_stored_as_null(tmp_path):
    """A column NULL in the whole batch is not bound (sqlite3 binds None slowly); one NULL only in
    some rows is bound in all of them. Both read back as Core's insert stores them."""
    engine = sqlite_engine(tmp_path)
    t = datetime(2026, 4, 7, 9, 0, tzinfo=UTC)
    base = {"state": "new", "channel": "api", "created_at": t, "updated_at": t, "state_changed_at": t,
            "last_inbound_at": t, "contact_name": None, "contact_email": None, "contact_phone": None,
            "contact_address": None, "location": None, "first_response_due": None, "sla_pauses": [], "attempts": 0}
    mixed = [dict(base, token="m-0"), dict(base, token="m-1", contact_email="a@example.de", location="Soest")]
    with engine.begin() as conn:
        ins = BulkWriter(conn)
        seen = _record(ins)
        ins.insert(case_t, [dict(base, token="n-0"), dict(base, token="n-1")], ("token", "id"))
        ins.insert(case_t, mixed, ("token", "id"))
        _general_insert(conn, case_t, [dict(base, token="c-0"), dict(mixed[1], token="c-1")])
        stored = _rows_by(conn, case_t, "token")
    all_null, some_null = (sql for sql, _params in seen)
    for column in ("contact_name", "contact_email", "location", "first_response_due"):
        assert f'"{column}"' not in all_null and column not in all_null.split("VALUES")[0]
    assert "contact_email" in some_null and "location" in some_null and "contact_name" not in some_null
    for ours, core in (("n-0", "c-0"), ("m-0", "c-0"), ("m-1", "c-1")):
        a, b = dict(stored[ours]), dict(stored[core])
        for row in (a, b):
            del row["id"], row["token"]
        assert a == b, ours
    assert stored["n-1"]["contact_email"] is None and stored["m-0"]["location"] is None


def test_json_values_that_are_equal_in_python_stay_apart(tmp_path):
    """1, 1.0 and True are one dict key in Python; the converter's memo must keep them apart."""
    engine = sqlite_engine(tmp_path)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        ins = BulkWriter(conn)
        seen = _record(ins)
        row = {"token": "", "state": "new", "channel": "api", "created_at": t, "updated_at": t,
               "state_changed_at": t, "last_inbound_at": t, "sla_pauses": None, "attempts": 0}
        ins.insert(case_t, [dict(row, token=f"j{i}", sla_pauses=v) for i, v in enumerate([1, 1.0, True, [], []])])
    position = list(row).index("sla_pauses")
    width = len(row)
    sent = seen[0][1]
    assert [sent[i * width + position] for i in range(5)] == ["1", "1.0", "true", "[]", "[]"]


def test_a_large_batch_is_split_below_the_parameter_limit(tmp_path):
    engine = sqlite_engine(tmp_path)
    reqs = [req(f"big-{i}") for i in range(3000)]  # 3000 cases x 15 columns > 32,000 parameters
    results = write_requests(engine, reqs)
    assert len({r.case_id for r in results}) == 3000 and all(r.created for r in results)
    with engine.connect() as conn:
        ids = dict(conn.execute(select(message_t.c.external_id, message_t.c.case_id)).all())
    assert all(ids[f"big-{i}"] == results[i].case_id for i in range(3000))


# -- SLA deadlines once per minute ---------------------------------------------------------------------


def _instants(seed: int) -> list[datetime]:
    """Arrivals around openings, closings, weekends, Easter 2026 and both clock changes, plus random ones."""
    rng = random.Random(seed)
    days = [date(2026, 3, 27), date(2026, 3, 28), date(2026, 3, 29), date(2026, 4, 2), date(2026, 4, 3),
            date(2026, 4, 6), date(2026, 4, 7), date(2026, 10, 23), date(2026, 10, 25), date(2026, 12, 24)]
    out = []
    for day in days:
        for hh, mm in [(7, 59), (8, 0), (9, 30), (17, 58), (17, 59), (18, 0), (23, 59)]:
            local = datetime(day.year, day.month, day.day, hh, mm, tzinfo=BERLIN)
            for sec in (0, 0.5, 30, 59.999999):
                out.append(local + timedelta(seconds=sec))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out += [start + timedelta(seconds=rng.uniform(0, 366 * 86400)) for _ in range(2000)]
    return out


@pytest.mark.parametrize("hours", [0, 0.001, 1 / 60, 1, 8, 24, 30.5])
def test_deadlines_computed_once_per_minute_equal_the_full_computation(hours):
    clock = SlaClock(BusinessCalendar(land="SH"))
    remaining = timedelta(seconds=hours * 3600)
    for instant in _instants(int(hours * 1000)):
        position = instant.astimezone(UTC)
        assert clock._add_memo(position, remaining) == clock.calendar._add(position, remaining), instant
    # and through the public API, which intake uses
    for instant in _instants(7)[:200]:
        expected = clock.calendar.add_working_hours(instant, hours)
        assert clock.deadline(instant, hours) == expected


def test_first_response_deadlines_of_intake_use_the_same_clock(tmp_path):
    engine = sqlite_engine(tmp_path)
    policy = SlaPolicy()
    friday = datetime(2026, 4, 2, 15, 0, 10, 5, tzinfo=BERLIN)  # Maundy Thursday afternoon, before Easter
    result = write_requests(engine, [req("easter-1", received_at=friday)], policy=policy)[0]
    with engine.connect() as conn:
        due = conn.execute(select(case_t.c.first_response_due).where(case_t.c.id == result.case_id)).scalar_one()
    assert due == policy.clock.calendar.add_working_hours(friday, policy.settings.first_response_hours)


# -- answers and tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("result", [
    IntakeResult(1, "AbC-_09xyzABCDEF", "new", True),
    IntakeResult(123456789, "t", CaseState.NEEDS_CLARIFICATION, False),
    IntakeResult(7, 'we"ird\\tök\u2028en', "routed", True),  # never made by new_case_token, still encoded right
])
def test_the_pre_encoded_answer_is_the_json_of_the_result(result):
    assert result.json_bytes() == json.dumps(result.to_json(), ensure_ascii=False).encode()
    assert json.loads(result.json_bytes()) == json.loads(json.dumps(result.to_json()))


async def test_a_remembered_token_is_forgotten_when_it_is_revoked(tmp_path):
    engine = sqlite_engine(tmp_path)
    token = add_token(engine, "svc-1", "service")
    verifier = TokenVerifier(engine, ttl_seconds=0.2, miss_reload_seconds=0.05)
    assert (await verifier.verify(token)).name == "svc-1"
    assert (await verifier.verify(token)).name == "svc-1"  # the remembered one
    assert token in verifier._verified
    assert await verifier.verify(token + "x") is None  # wrong tokens are not remembered
    assert len(verifier._verified) == 1
    revoke_token(engine, "svc-1")
    await asyncio.sleep(0.25)
    assert await verifier.verify(token) is None
    assert verifier._verified == {}


# -- text normalisation --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "Reisepass beantragen", "", " padded ", "tab\there", "line\nbreak", "cr\rhere", "nul\x00", "del\x7f",
    "esc\x1b[31m", "Mu\u0308ller", "M\u00fcller", "\u00a0nbsp", "zero\u200bwidth", "lone \ud800 surrogate",
    "c1\x85control", "~!@#$%^&*()_+{}|:<>?",
])
@pytest.mark.parametrize("single_line", [False, True])
def test_the_ascii_shortcut_of_clean_text_decides_like_the_full_checks(value, single_line):
    import re
    import unicodedata

    def full(v: str) -> str:  # the checks without the shortcut
        if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", v):
            raise ValueError("control")
        if single_line and re.search(r"[\r\n\t]", v):
            raise ValueError("line")
        v.encode("utf-8")
        return unicodedata.normalize("NFC", v)

    try:
        expected = full(value)
    except (ValueError, UnicodeEncodeError):
        with pytest.raises(ValueError):
            clean_text(value, single_line=single_line)
    else:
        assert clean_text(value, single_line=single_line) == expected


def test_contact_and_request_validation_are_unchanged_by_the_shortcuts():
    c = Contact(name="  Erika Musterfrau ", email=" Erika@Example.DE ", phone="0451 123 456")
    assert (c.name, c.email, c.phone) == ("Erika Musterfrau", "erika@example.de", "+49451123456")
    r = InboundRequest(channel="api", external_id=" x-1 ", text="Mu\u0308ller", location="Bad Segeberg")
    assert r.external_id == "x-1" and r.text == "M\u00fcller"


# -- the writer's own connection ----------------------------------------------------------------------


def _submit(writer: IntakeWriter, external_id: str) -> IntakeResult:
    return writer.submit_sync(req(external_id), timeout=30)


def test_the_writer_keeps_one_connection_and_replaces_a_closed_one(tmp_path):
    engine = sqlite_engine(tmp_path)
    writer = IntakeWriter(engine).start()
    try:
        _submit(writer, "keep-1")
        first = writer._conn
        _submit(writer, "keep-2")
        assert writer._conn is first  # kept from batch to batch
        first.close()  # e.g. closed under it
        assert _submit(writer, "keep-3").created
        assert writer._conn is not first and not writer._conn.closed
    finally:
        writer.stop()
    assert writer._conn is None  # closed when the writer stops


@pytest.mark.postgres
def test_the_writer_survives_the_database_dropping_its_connection():
    """PostgreSQL ends the writer's session (as a restart or an admin would): the next write reconnects."""
    with pg_engine() as engine:
        writer = IntakeWriter(engine).start()
        try:
            _submit(writer, "pg-keep-1")
            pid = writer._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            writer._conn.rollback()
            with engine.begin() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            time.sleep(0.2)
            outcomes = []
            for i in range(3):  # the batch on the dead connection may fail (503); none after it
                try:
                    outcomes.append(_submit(writer, f"pg-keep-{i + 2}").created)
                except Exception as exc:  # noqa: BLE001 - the channel would answer 503 and the client retry
                    outcomes.append(type(exc).__name__)
            assert outcomes[-2:] == [True, True], outcomes
            with engine.connect() as conn:
                stored = conn.execute(select(message_t.c.external_id)).scalars().all()
            assert {"pg-keep-1", "pg-keep-3", "pg-keep-4"} <= set(stored)
        finally:
            writer.stop()


def test_remembered_metric_children_count_per_process_and_label_set():
    """The labelled children Metrics keeps (so that a request does not pay for labels()) still count per
    label set, and two Metrics (two apps in one process) never share one."""
    from types import SimpleNamespace

    from prometheus_client import generate_latest

    from hub.queue.intake import IntakeResult
    from hub.queue.metrics import Metrics

    first, second = Metrics(), Metrics()
    for seconds in (0.002, 0.003, 0.2):
        first.observe_http("POST", "/twilio/sms", seconds)
    first.observe_http("GET", "/twilio/sms", 0.001)
    second.observe_http("POST", "/twilio/sms", 0.004)
    new = IntakeResult(case_id=1, token="T", state="new", created=True)
    first.count_intake([SimpleNamespace(channel="sms")] * 3, [new, new, ValueError("x")])
    text = generate_latest(first.registry).decode()
    assert 'citizen_hub_http_request_duration_seconds_count{method="POST",route="/twilio/sms"} 3.0' in text
    assert 'citizen_hub_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/twilio/sms"} 2.0' in text
    assert 'citizen_hub_http_request_duration_seconds_count{method="GET",route="/twilio/sms"} 1.0' in text
    assert 'citizen_hub_intake_requests_total{channel="sms",outcome="new"} 2.0' in text
    assert 'citizen_hub_intake_requests_total{channel="sms",outcome="failed"} 1.0' in text
    other = generate_latest(second.registry).decode()
    assert 'citizen_hub_http_request_duration_seconds_count{method="POST",route="/twilio/sms"} 1.0' in other
    assert "citizen_hub_intake_requests_total{" not in other
