"""What a call's turns write, through the batched path (many calls in one intake batch) and the one-by-one
path: each call a phone case with its transcript and outcome, the answer and the call record stored before
the TwiML, opt-outs read with the batch, a repeated webhook or a call row stored meanwhile written once."""

from __future__ import annotations

import asyncio
import secrets
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from twilio_support import FakeTwilio, make_twilio_app, new_sid, payload, post

from channels.twilio import store
from hub.console.calls import call_t as hub_call_t
from hub.queue.cases import audit_t, case_t, message_t

TUESDAY_10 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # 10:00 in Berlin: service hours
TEXTS = ("Ich brauche einen neuen Personalausweis, ich wohne in Todesfelde.",  # answered
         "Ich brauche einen neuen Personalausweis",  # the place is asked
         "Mein Nachbar hat einen lauten Hund")  # the menu


@pytest.fixture()
async def client(aiohttp_client, hub, kb, tmp_path):
    engine, url = hub
    async with FakeTwilio() as fake:
        app, service = make_twilio_app(tmp_path, engine, url, kb, clock=lambda: TUESDAY_10, api_base_url=fake.url,
                                       agent_queue="buergertelefon")
        c = await aiohttp_client(app)
        c.engine, c.service = engine, service
        yield c
        for adapter in service.dispatcher.adapters.values():
            if hasattr(adapter, "close"):
                await adapter.close()


def caller(i: int) -> str:
    return f"+49171{5550000 + i}"


async def concern(client, sid: str, number: str, text: str) -> ET.Element:
    fields = payload("voice_gather_speech", CallSid=sid, From=number, Caller=number, SpeechResult=text)
    resp = await post(client, "/twilio/voice/concern", fields)
    assert resp.status == 200
    return ET.fromstring(await resp.text())


def table(engine, t, *where) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t).where(*where).order_by(list(t.c)[0])).mappings()]


def spoken(root: ET.Element) -> str:
    return " ".join(s.text or "" for s in root.iter("Say"))


async def test_concurrent_calls_are_written_together_and_each_completely(client):
    calls = [(new_sid("CA"), caller(i), TEXTS[i % 3]) for i in range(24)]
    for sid, number, _ in calls:
        await post(client, "/twilio/voice", payload("voice_inbound", CallSid=sid, From=number, Caller=number))
    roots = await asyncio.gather(*(concern(client, sid, number, text) for sid, number, text in calls))
    assert client.service.writer.batches < len(calls)  # group-committed
    rows = {r["call_sid"]: r for r in table(client.engine, store.call_t)}
    cases = {r["id"]: r for r in table(client.engine, case_t)}
    records = {r["case_id"]: r for r in table(client.engine, hub_call_t)}
    assert len(rows) == len(calls) == len(cases)
    for (sid, number, text), root in zip(calls, roots, strict=True):
        row = rows[sid]
        case = cases[row["case_id"]]
        assert row["caller"] == number == case["contact_phone"] and row["concern"] == text and row["turns"] == 1
        messages = table(client.engine, message_t, message_t.c.case_id == case["id"])
        assert messages[0]["direction"] == "in" and messages[0]["external_id"] == sid
        if text == TEXTS[0]:
            assert row["step"] == "details" and row["outcome"] == "answered" and case["state"] == "answered"
            assert row["service_id"] == case["service_id"] == "sh-personalausweis"
            assert [m["direction"] for m in messages] == ["in", "out"] and "Amt Leezen" in messages[1]["text"]
            assert messages[1]["text"] in spoken(root) or spoken(root).startswith(messages[1]["text"])
            assert row["hub_call_id"] == records[case["id"]]["id"]
            assert records[case["id"]]["outcome"] == "first_contact"
            states = [a["to_state"] for a in table(client.engine, audit_t, audit_t.c.case_id == case["id"])]
            assert states == ["new", "routed", "answered"]
        else:
            assert row["outcome"] is None and row["hub_call_id"] is None and case["id"] not in records
            assert row["step"] == ("place" if text == TEXTS[1] else "menu") and len(messages) == 1


async def test_a_caller_who_opted_out_is_offered_no_sms(client):
    number = caller(1)
    with client.engine.begin() as conn:
        store.opt_out(conn, number, "keyword")
    sid = new_sid("CA")
    root = await concern(client, sid, number, TEXTS[0])
    assert "Amt Leezen" in spoken(root) and "SMS" not in spoken(root) and root.find("Hangup") is not None
    (row,) = table(client.engine, store.call_t)
    assert row["step"] == "done" and row["outcome"] == "answered"
    other = await concern(client, new_sid("CA"), caller(2), TEXTS[0])  # the same concern, no opt-out
    assert "SMS" in spoken(other)


async def test_a_repeated_concern_webhook_writes_nothing_twice(client):
    sid, number = new_sid("CA"), caller(3)
    first = await concern(client, sid, number, TEXTS[0])
    again = await concern(client, sid, number, TEXTS[0])
    assert spoken(again) == spoken(first)
    (row,) = table(client.engine, store.call_t)
    assert row["turns"] == 2 and row["outcome"] == "answered"
    assert len(table(client.engine, message_t)) == 2  # what the caller said, what the menu answered
    assert len(table(client.engine, hub_call_t)) == 1


async def test_a_call_row_stored_meanwhile_is_completed_not_duplicated(client):
    sid, number = new_sid("CA"), caller(4)
    with client.engine.begin() as conn:  # as another hub process, or a status callback, would have
        store.start_call(conn, sid, number, "concern")
    root = await concern(client, sid, number, TEXTS[0])
    assert "Amt Leezen" in spoken(root)
    (row,) = table(client.engine, store.call_t)
    assert row["outcome"] == "answered" and row["case_id"] is not None and row["hub_call_id"] is not None
    (case,) = table(client.engine, case_t)
    assert case["state"] == "answered"


@pytest.mark.postgres
async def test_concurrent_calls_on_postgres(aiohttp_client, postgres_url, kb, tmp_path):
    from hub.db import make_engine
    from hub.migrate import upgrade

    engine = make_engine(postgres_url)
    upgrade(engine)
    async with FakeTwilio() as fake:
        app, service = make_twilio_app(tmp_path, engine, postgres_url, kb, clock=lambda: TUESDAY_10,
                                       api_base_url=fake.url)
        c = await aiohttp_client(app)
        base = secrets.randbelow(9_000_000) + 1_000_000  # the database is shared: numbers of this run only
        calls = [(new_sid("CA"), f"+49172{base + i}", TEXTS[i % 3]) for i in range(9)]
        roots = await asyncio.gather(*(concern(c, sid, number, text) for sid, number, text in calls))
        assert all("Amt Leezen" in spoken(r) for r, (_, _, t) in zip(roots, calls, strict=True) if t == TEXTS[0])
        sids = [sid for sid, _, _ in calls]
        rows = {r["call_sid"]: r for r in table(engine, store.call_t, store.call_t.c.call_sid.in_(sids))}
        assert set(rows) == set(sids) and all(r["case_id"] for r in rows.values())
        answered = [rows[sid] for sid, _, t in calls if t == TEXTS[0]]
        records = table(engine, hub_call_t, hub_call_t.c.id.in_([r["hub_call_id"] for r in answered]))
        assert sorted(r["case_id"] for r in records) == sorted(r["case_id"] for r in answered)
        # the same concern again: stored once
        await concern(c, *calls[0])
        assert len(table(engine, message_t, message_t.c.external_id == calls[0][0])) == 1
        for adapter in service.dispatcher.adapters.values():
            if hasattr(adapter, "close"):
                await adapter.close()
    engine.dispose()
