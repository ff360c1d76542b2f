"""Intake limits for SMS numbers and callers (issue 14 item 2): one number cannot open unlimited cases.

The real app with ``[limits] sender_burst`` small: over the limit an SMS is answered with TwiML saying when to
send it again and a call hears when to call again — never a silent drop, nothing stored, counted in
``/metrics``. Twilio's retries of a stored SID cost nothing; STOP is honoured whatever the budget; the
budget of a number is shared by SMS, calls and every other channel of the process.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from twilio_support import CITIZEN, FakeTwilio, make_twilio_app, new_sid, payload, post

from channels.twilio import store
from hub.http.ratelimit import IntakeLimitSettings
from hub.queue.cases import case_t, message_t

TUESDAY_10 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
OTHER = "+4916098765432"


@pytest.fixture()
async def client(aiohttp_client, hub, kb, tmp_path):
    engine, url = hub
    async with FakeTwilio() as fake:
        app, service = make_twilio_app(tmp_path, engine, url, kb, clock=lambda: TUESDAY_10, api_base_url=fake.url,
                                       limits=IntakeLimitSettings(sender_per_hour=1.0, sender_burst=2))
        c = await aiohttp_client(app)
        c.engine, c.service = engine, service
        yield c
        for adapter in service.dispatcher.adapters.values():
            close = getattr(adapter, "close", None)
            if close is not None:
                await close()


def sms(**changes):
    sid = changes.setdefault("MessageSid", new_sid("SM"))
    changes.setdefault("SmsSid", sid)
    changes.setdefault("SmsMessageSid", sid)
    return payload("sms_inbound", **changes)


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def incoming(engine) -> int:
    return count(engine, message_t, message_t.c.direction == "in")


async def text_of(resp, *, limited: bool = False) -> str:
    """The SMS answered (a follow-up right after an automatic SMS gets none); one over the limit must get one."""
    assert resp.status == 200 and resp.content_type == "application/xml"
    message = ET.fromstring(await resp.text()).find("Message")
    if limited:
        assert message is not None, "an answer, never a silent drop"
    return "" if message is None else message.text or ""


async def test_an_sms_number_over_its_limit_is_told_to_try_later_and_nothing_is_stored(client):
    first, second = sms(Body="Personalausweis beantragen in Norderstedt"), sms(Body="Und einen Reisepass")
    for params in (first, second):
        assert "nicht gespeichert" not in await text_of(await post(client, "/twilio/sms", params))
    assert incoming(client.engine) == 2
    text = await text_of(await post(client, "/twilio/sms", sms(Body="Noch eine Frage zum Hund")), limited=True)
    assert "nicht gespeichert" in text and "in einer Stunde noch einmal" in text  # one token an hour
    assert incoming(client.engine) == 2 and count(client.engine, case_t) == 1  # threaded; the third not stored
    # Another number has its own budget.
    assert "nicht gespeichert" not in await text_of(await post(client, "/twilio/sms", sms(From=OTHER,
                                                                                         Body="Hund anmelden")))
    assert incoming(client.engine) == 3
    metrics = await (await client.get("/metrics")).text()
    assert 'citizen_hub_twilio_webhooks_limited_total{route="/twilio/sms"} 1.0' in metrics
    assert 'citizen_hub_twilio_webhooks_limited_total{route="/twilio/voice"} 0.0' in metrics


async def test_twilio_retries_of_a_stored_sms_cost_nothing(client):
    params = sms(Body="Personalausweis beantragen in Norderstedt")
    for _ in range(4):  # Twilio retries the same MessageSid
        await post(client, "/twilio/sms", params)
    assert incoming(client.engine) == 1
    text = await text_of(await post(client, "/twilio/sms", sms(Body="Wunschkennzeichen in Bad Segeberg")))
    assert "nicht gespeichert" not in text and incoming(client.engine) == 2


async def test_stop_is_honoured_whatever_the_budget(client):
    for body in ("Frage eins zum Personalausweis", "Frage zwei zum Reisepass", "Frage drei zum Hund"):
        await post(client, "/twilio/sms", sms(Body=body))
    assert incoming(client.engine) == 2
    text = await text_of(await post(client, "/twilio/sms", sms(Body="STOP")), limited=True)
    assert "keine SMS mehr" in text
    with client.engine.connect() as conn:
        assert store.is_opted_out(conn, CITIZEN)


async def call(client, text: str, number: str = CITIZEN):
    sid = new_sid("CA")
    await post(client, "/twilio/voice", payload("voice_inbound", CallSid=sid, From=number, Caller=number))
    return sid, await post(client, "/twilio/voice/concern", payload(
        "voice_gather_speech", CallSid=sid, From=number, Caller=number, SpeechResult=text))


async def test_a_caller_over_the_limit_hears_when_to_call_again_and_nothing_is_stored(client):
    for text in ("Wunschkennzeichen in Bad Segeberg", "Personalausweis beantragen in Norderstedt"):
        _, resp = await call(client, text)
        assert resp.status == 200 and "wieder an" not in await resp.text()
    # The second call joins the caller's open case (the queue's phone rules); each call is a request.
    said, calls = incoming(client.engine), count(client.engine, store.call_t)
    assert said == 2 and calls == 2
    _, resp = await call(client, "Hund anmelden in Bad Segeberg")
    root = ET.fromstring(await resp.text())
    words = " ".join(s.text or "" for s in root.iter("Say"))
    assert resp.status == 200 and "wieder an" in words and "nicht gespeichert" in words
    assert root.find("Hangup") is not None
    assert incoming(client.engine) == said and count(client.engine, store.call_t) == calls
    metrics = await (await client.get("/metrics")).text()
    assert 'citizen_hub_twilio_webhooks_limited_total{route="/twilio/voice"} 1.0' in metrics


async def test_a_retried_turn_of_a_call_costs_nothing(client):
    sid, _ = await call(client, "Wunschkennzeichen in Bad Segeberg")
    again = payload("voice_gather_speech", CallSid=sid, SpeechResult="Wunschkennzeichen in Bad Segeberg")
    for _ in range(3):  # Twilio repeats the webhook
        await post(client, "/twilio/voice/concern", again)
    assert count(client.engine, case_t) == 1 and incoming(client.engine) == 1
    _, resp = await call(client, "Personalausweis beantragen in Norderstedt")
    assert "wieder an" not in " ".join(s.text or "" for s in ET.fromstring(await resp.text()).iter("Say"))
    assert incoming(client.engine) == 2


async def test_sms_and_calls_of_one_number_share_its_budget(client):
    await post(client, "/twilio/sms", sms(Body="Personalausweis beantragen in Norderstedt"))
    await post(client, "/twilio/sms", sms(Body="Und einen Reisepass"))
    _, resp = await call(client, "Hund anmelden in Bad Segeberg")
    assert "wieder an" in " ".join(s.text or "" for s in ET.fromstring(await resp.text()).iter("Say"))
    _, resp = await call(client, "Hund anmelden in Bad Segeberg", number=OTHER)
    assert "wieder an" not in " ".join(s.text or "" for s in ET.fromstring(await resp.text()).iter("Say"))


@pytest.mark.parametrize("seconds,words", [(1, "in einer Minute"), (59, "in einer Minute"), (61, "in 2 Minuten"),
                                           (3599, "in einer Stunde"), (3600, "in einer Stunde"),
                                           (7201, "in 3 Stunden")])
def test_the_wait_is_said_in_german(seconds, words):
    from channels.twilio.webhooks import wait_text

    assert wait_text(seconds) == words
