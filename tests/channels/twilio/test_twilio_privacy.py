"""purge and forget cover what the Twilio channels keep: calls in the menu, opt-outs, MMS media by URL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from twilio_support import CITIZEN, FakeTwilio, make_twilio_app, new_sid, payload, post

from channels.twilio import store
from hub.console.calls import call_t as hub_call_t
from hub.queue.cases import attachment_t, case_t, message_t
from hub.queue.intake import AttachmentStore
from hub.queue.privacy import forget, purge
from hub.queue.settings import PrivacySettings

TUESDAY_10 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture()
async def client(aiohttp_client, hub, kb, tmp_path):
    engine, url = hub
    async with FakeTwilio() as fake:
        app, service = make_twilio_app(tmp_path, engine, url, kb, clock=lambda: TUESDAY_10, api_base_url=fake.url)
        c = await aiohttp_client(app)
        c.engine, c.service, c.store = engine, service, AttachmentStore(tmp_path / "attachments")
        yield c


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


async def a_call(client, speech: str | None, caller: str = CITIZEN, ended: bool = False) -> str:
    sid = new_sid("CA")
    await post(client, "/twilio/voice", payload("voice_inbound", CallSid=sid, From=caller, Caller=caller))
    if speech:
        await post(client, "/twilio/voice/concern", payload("voice_gather_speech", CallSid=sid, From=caller,
                                                             Caller=caller, SpeechResult=speech))
    if ended:
        await post(client, "/twilio/voice/status", payload("voice_call_completed", CallSid=sid, From=caller,
                                                            Caller=caller))
    return sid


async def test_forget_a_number_removes_its_cases_calls_and_opt_out(client):
    await post(client, "/twilio/sms", payload("mms_inbound"))
    await post(client, "/twilio/sms", payload("sms_inbound", Body="STOP", MessageSid=new_sid("SM")))
    await a_call(client, "Personalausweis beantragen in Todesfelde")  # answered: a call record too
    silent = await a_call(client, None, ended=True)  # hung up before a word: recorded, without the number
    other = await a_call(client, "Personalausweis beantragen in Norderstedt", caller="+4917698765432")
    assert count(client.engine, store.call_t) == 3 and count(client.engine, store.opt_out_t) == 1
    assert count(client.engine, hub_call_t) == 2
    report = forget(client.engine, phone="0151 12345678", store=client.store)
    # One case: the call joined the MMS's open case by the number (the queue's phone rules).
    assert report.cases == 1 and report.messages == 4 and report.channel_rows == 2  # the call, the opt-out
    assert count(client.engine, case_t, case_t.c.contact_phone == CITIZEN) == 0
    assert count(client.engine, store.opt_out_t) == 0 and count(client.engine, attachment_t) == 0
    left = {r["call_sid"]: dict(r) for r in client.engine.connect().execute(select(store.call_t)).mappings()}
    assert set(left) == {other, silent} and left[silent]["outcome"] == "abandoned"
    # The call records are statistics without a person: they stay, without their case.
    assert count(client.engine, hub_call_t) == 2
    assert count(client.engine, hub_call_t, hub_call_t.c.case_id.is_(None)) == 1


async def test_forget_a_number_that_only_opted_out(client):
    await post(client, "/twilio/sms", payload("sms_inbound", Body="Stopp", MessageSid=new_sid("SM")))
    dry = forget(client.engine, phone=CITIZEN, dry_run=True)
    assert dry.channel_rows == 0 and count(client.engine, store.opt_out_t) == 1
    assert forget(client.engine, phone=CITIZEN).channel_rows == 1
    assert count(client.engine, store.opt_out_t) == 0


async def test_purge_empties_the_calls_of_purged_cases_and_forgotten_calls(client):
    await post(client, "/twilio/sms", payload("mms_inbound"))
    sid = await a_call(client, "Mein Nachbar hat einen lauten Hund")  # still going: the concern is in the row
    stale = await a_call(client, "Hallo", caller="+4917698765432")  # its end was never reported
    with client.engine.begin() as conn:
        conn.execute(update(store.call_t).where(store.call_t.c.call_sid == stale)
                     .values(updated_at=datetime.now(UTC) - timedelta(days=1)))
        long_ago = datetime.now(UTC) - timedelta(days=400)
        conn.execute(update(case_t).values(state="closed", closed_at=long_ago, state_changed_at=long_ago))
    report = purge(client.engine, PrivacySettings(), store=client.store)
    # Two cases (the MMS with the first call joined by the number, and the second caller's); two calls emptied.
    assert report.cases == 2 and report.attachments == 2 and report.channel_rows == 2
    calls = {r["call_sid"]: dict(r) for r in client.engine.connect().execute(select(store.call_t)).mappings()}
    for row in calls.values():
        assert all(row[c] is None for c in store.PERSONAL_CALL_COLUMNS), row
    assert calls[sid]["outcome"] is None and calls[sid]["step"] == "menu"  # the statistics stay
    assert count(client.engine, message_t, message_t.c.text != "") == 0
