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
