"""The Twilio channels on PostgreSQL: the migration, the writes after the commit, opt-outs, calls, forget."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from twilio_support import CITIZEN, FakeTwilio, make_twilio_app, new_sid, payload, post

from channels.twilio import store
from hub.db import make_engine
from hub.migrate import upgrade
from hub.queue.cases import case_t, message_t
from hub.queue.privacy import forget

pytestmark = pytest.mark.postgres
TUESDAY_10 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


async def test_sms_calls_and_forget_on_postgres(aiohttp_client, postgres_url, kb, tmp_path):
    engine = make_engine(postgres_url)
    upgrade(engine)
    async with FakeTwilio() as fake:
        app, _ = make_twilio_app(tmp_path, engine, postgres_url, kb, clock=lambda: TUESDAY_10, api_base_url=fake.url)
        client = await aiohttp_client(app)
        params = payload("sms_inbound", MessageSid=new_sid("SM"))
        resp = await post(client, "/twilio/sms", params)
        assert "Amt Leezen" in ET.fromstring(await resp.text()).find("Message").text
        await post(client, "/twilio/sms", params)  # the same SID again
        assert count(engine, message_t, message_t.c.direction == "in") == 1
        await post(client, "/twilio/sms", payload("sms_inbound", Body="STOP", MessageSid=new_sid("SM")))
        await post(client, "/twilio/sms", payload("sms_inbound", Body="STOP", MessageSid=new_sid("SM")))
        assert count(engine, store.opt_out_t) == 1
        sid = new_sid("CA")
        await post(client, "/twilio/voice", payload("voice_inbound", CallSid=sid))
        resp = await post(client, "/twilio/voice/concern", payload("voice_gather_speech", CallSid=sid,
                                                                    SpeechResult="Wunschkennzeichen in Bad Segeberg"))
        assert "Kreis Segeberg" in " ".join(s.text or "" for s in ET.fromstring(await resp.text()).iter("Say"))
        assert count(engine, store.call_t) == 1
        report = forget(engine, phone=CITIZEN)
        assert report.cases >= 1 and report.channel_rows == 2
        assert count(engine, case_t) == 0 and count(engine, store.opt_out_t) == 0
    engine.dispose()


async def test_sms_threading_by_number_and_opt_outs_on_postgres(aiohttp_client, postgres_url, kb, tmp_path):
    """The reads on the driver's cursor on PostgreSQL: the numbers of a batch that have open cases (the
    follow-up joins its case) and the opted-out numbers of a batch (a new case from one gets no SMS)."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    other = "+4915199887766"
    async with FakeTwilio() as fake:
        app, _ = make_twilio_app(tmp_path, engine, postgres_url, kb, clock=lambda: TUESDAY_10, api_base_url=fake.url)
        client = await aiohttp_client(app)
        resp = await post(client, "/twilio/sms", payload("sms_inbound", MessageSid=new_sid("SM"),
                                                         Body="Ich brauche einen neuen Personalausweis"))
        assert "In welchem Ort wohnen Sie?" in ET.fromstring(await resp.text()).find("Message").text
        resp = await post(client, "/twilio/sms", payload("sms_inbound", MessageSid=new_sid("SM"), Body="Todesfelde"))
        assert "Amt Leezen" in ET.fromstring(await resp.text()).find("Message").text
        assert count(engine, case_t) == 1 and count(engine, message_t, message_t.c.direction == "in") == 2
        assert count(engine, case_t, case_t.c.state == "answered") == 1
        await post(client, "/twilio/sms", payload("sms_inbound", MessageSid=new_sid("SM"), From=other, Body="STOP"))
        quiet = await post(client, "/twilio/sms", payload("sms_inbound", MessageSid=new_sid("SM"), From=other,
                                                          Body="Hund anmelden in Bad Segeberg"))
        assert quiet.status == 200 and ET.fromstring(await quiet.text()).find("Message") is None
        assert count(engine, case_t, case_t.c.contact_phone == other) == 1
        forget(engine, phone=CITIZEN)
        forget(engine, phone=other)
    engine.dispose()
