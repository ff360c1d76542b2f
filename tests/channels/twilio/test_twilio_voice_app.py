"""The phone menu in the real hub: every call a phone case with its transcript and outcome, TwiML parsed as
XML, callbacks on the 24-working-hour clock, the details by SMS through the outbox, hostile webhooks refused."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from twilio_support import CITIZEN, PUBLIC_URL, FakeTwilio, make_twilio_app, new_sid, payload, post

from channels.twilio import store
from hub.console.calls import call_t as hub_call_t
from hub.queue.cases import audit_t, case_t, message_t

TUESDAY_10 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # 10:00 in Berlin: service hours
SATURDAY = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


@pytest.fixture()
async def fake():
    async with FakeTwilio() as server:
        yield server


async def make_client(aiohttp_client, hub, kb, tmp_path, fake, clock=TUESDAY_10, **twilio):
    engine, url = hub
    twilio.setdefault("agent_queue", "buergertelefon")
    app, service = make_twilio_app(tmp_path, engine, url, kb, clock=lambda: clock, api_base_url=fake.url, **twilio)
    c = await aiohttp_client(app)
    c.engine, c.service, c.fake = engine, service, fake
    return c


@pytest.fixture()
async def client(aiohttp_client, hub, kb, tmp_path, fake):
    c = await make_client(aiohttp_client, hub, kb, tmp_path, fake)
    yield c
    await close_adapters(c)


async def close_adapters(c):
    for adapter in c.service.dispatcher.adapters.values():
        if hasattr(adapter, "close"):
            await adapter.close()


class Call:
    """One caller going through the menu: each step posts the recorded webhook Twilio would send."""

    def __init__(self, client, caller: str = CITIZEN):
        self.client = client
        self.sid = new_sid("CA")
        self.caller = caller

    def fields(self, name: str, **changes) -> dict[str, str]:
        return payload(name, **({"CallSid": self.sid, "From": self.caller, "Caller": self.caller} | changes))

    async def start(self) -> ET.Element:
        return await self._post("/twilio/voice", self.fields("voice_inbound"))

    async def say(self, action: str, speech: str = "", digits: str = "") -> ET.Element:
        changes = {"SpeechResult": speech or None, "Confidence": "0.91" if speech else None}
        fields = self.fields("voice_gather_speech", **changes)
        if digits:
            fields["Digits"] = digits
        return await self._post(action.removeprefix(PUBLIC_URL), fields)

    async def end(self, duration: int = 61) -> int:
        resp = await post(self.client, "/twilio/voice/status",
                          self.fields("voice_call_completed", CallDuration=str(duration)))
        return resp.status

    async def _post(self, path: str, fields) -> ET.Element:
        resp = await post(self.client, path, fields)
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/xml"
        root = ET.fromstring(await resp.text())
        assert root.tag == "Response"
        return root


def action(root: ET.Element) -> str:
    gather = root.find("Gather")
    assert gather is not None, ET.tostring(root)
    assert gather.get("input") == "speech dtmf" and gather.get("language") == "de-DE"
    assert gather.get("speechTimeout").isdigit() and gather.get("speechModel") == "phone_call"
    return gather.get("action")


def spoken(root: ET.Element) -> str:
    return " ".join(s.text or "" for s in root.iter("Say"))


def rows(engine, table, *where) -> list[dict]:
    with engine.connect() as conn:
        first = list(table.c)[0]
        return [dict(r) for r in conn.execute(select(table).where(*where).order_by(first)).mappings()]


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


async def test_a_call_answered_by_the_menu_with_details_by_sms(client):
    call = Call(client)
    root = await call.start()
    assert action(root) == f"{PUBLIC_URL}/twilio/voice/concern" and "Bürgertelefon" in spoken(root)
    assert rows(client.engine, store.call_t) == []  # nothing to store before the caller says something
    root = await call.say(action(root), "Ich brauche einen neuen Personalausweis, ich wohne in Todesfelde.")
    assert rows(client.engine, store.call_t)[0]["caller"] == CITIZEN  # stored before the answer
    assert "Amt Leezen" in spoken(root) and "Telefonnummer" in spoken(root)
    assert action(root) == f"{PUBLIC_URL}/twilio/voice/details"
    (case,) = rows(client.engine, case_t)
    assert case["channel"] == "phone" and case["contact_phone"] == CITIZEN and case["state"] == "answered"
    assert case["service_id"] == "sh-personalausweis"
    said, answer = rows(client.engine, message_t, message_t.c.case_id == case["id"])
    assert said["direction"] == "in" and said["external_id"] == call.sid and "Personalausweis" in said["text"]
    assert answer["direction"] == "out" and answer["channel"] == "phone" and "Amt Leezen" in answer["text"]
    (record,) = rows(client.engine, hub_call_t)
    assert record["agent"] == "ivr" and record["outcome"] == "first_contact" and record["case_id"] == case["id"]
    assert record["answered_within_s"] is None and record["service_id"] == "sh-personalausweis"
    root = await call.say(action(root), digits="1")
    assert "SMS" in spoken(root) and root.find("Hangup") is not None
    await client.service.dispatcher.run_until_empty()
    (sms,) = client.fake.requests
    assert sms.fields["To"] == CITIZEN and "Personalausweis beantragen" in sms.fields["Body"]
    assert sms.fields["StatusCallback"].startswith(f"{PUBLIC_URL}/twilio/status?message_id=")
    # The same webhook again (Twilio retried): no second SMS.
    await call.say(f"{PUBLIC_URL}/twilio/voice/details", digits="1")
    await client.service.dispatcher.run_until_empty()
    assert len(client.fake.requests) == 1
    assert await call.end() == 204
    (row,) = rows(client.engine, store.call_t)
    assert row["outcome"] == "answered" and row["duration_seconds"] == 61
    assert all(row[c] is None for c in store.PERSONAL_CALL_COLUMNS)  # the caller's words left the call row


async def test_the_place_by_keypad(client):
    call = Call(client)
    root = await call.say((await call.start()).find("Gather").get("action"), "Ich brauche einen neuen Personalausweis")
    assert action(root) == f"{PUBLIC_URL}/twilio/voice/place" and "Postleitzahl" in spoken(root)
    assert root.find("Gather").get("numDigits") == "5"
    root = await call.say(action(root), digits="23826")
    assert "Amt Leezen" in spoken(root)
    (case,) = rows(client.engine, case_t)
    assert case["state"] == "answered" and case["location"] == "23826"
    texts = [m["text"] for m in rows(client.engine, message_t, message_t.c.direction == "in")]
    assert texts == ["Ich brauche einen neuen Personalausweis", "Ort: 23826"]


async def test_a_callback_is_a_case_on_the_first_response_clock(client):
    call = Call(client)
    root = await call.say(action(await call.start()), "Mein Nachbar hat einen lauten Hund")
    assert action(root) == f"{PUBLIC_URL}/twilio/voice/menu" and "Drücken Sie die 1" in spoken(root)
    root = await call.say(action(root), "Rückruf bitte")
    assert action(root) == f"{PUBLIC_URL}/twilio/voice/callback" and "0 1 5 1" in spoken(root)
    root = await call.say(action(root), "ja")
    assert "24 Arbeitsstunden" in spoken(root) and root.find("Hangup") is not None
    (case,) = rows(client.engine, case_t)
    assert case["state"] in ("new", "needs_clarification") and case["contact_phone"] == CITIZEN
    assert case["first_response_due"] is not None and case["first_response_due"] > case["created_at"]
    texts = [m["text"] for m in rows(client.engine, message_t, message_t.c.case_id == case["id"])]
    assert texts == ["Mein Nachbar hat einen lauten Hund", f"Rückruf erbeten unter {CITIZEN}"]
    assert count(client.engine, audit_t, audit_t.c.action == "callback_requested") == 1
    (record,) = rows(client.engine, hub_call_t)
    assert record["outcome"] == "forwarded" and record["agent"] == "ivr"
    assert rows(client.engine, store.call_t)[0]["outcome"] == "callback"


async def test_a_callback_to_another_number(client):
    call = Call(client)
    root = await call.say(action(await call.start()), "Mein Nachbar hat einen lauten Hund")
    root = await call.say(action(root), digits="2")
    root = await call.say(action(root), digits="2")  # not this number
    assert action(root) == f"{PUBLIC_URL}/twilio/voice/number"
    root = await call.say(action(root), digits="04551123456")
    assert "0 4 5 5 1 1 2 3 4 5 6" in spoken(root)
    await call.say(action(root), digits="1")
    (case,) = rows(client.engine, case_t)
    assert case["contact_phone"] == "+494551123456"


async def test_a_withheld_number_is_typed_in(client):
    call = Call(client, caller="+266696687")  # what Twilio sends for a withheld number
    root = await call.say(action(await call.start()), "Mein Nachbar hat einen lauten Hund")
    root = await call.say(action(root), digits="2")
    assert action(root) == f"{PUBLIC_URL}/twilio/voice/number"
    root = await call.say(action(root), digits="015112345678")
    await call.say(action(root), digits="1")
    (case,) = rows(client.engine, case_t)
    assert case["contact_phone"] == CITIZEN
    other = Call(client, caller="anonymous")
    root = await other.say(action(await other.start()), "Personalausweis beantragen in Norderstedt")
    assert "SMS" not in spoken(root) and root.find("Hangup") is not None  # no number: no SMS offered


async def test_transfer_in_service_hours_and_the_callback_when_nobody_answers(client):
    call = Call(client)
    root = await call.say(action(await call.start()), "Mein Nachbar hat einen lauten Hund")
    root = await call.say(action(root), digits="1")
    enqueue = root.find("Enqueue")
    assert enqueue.text == "buergertelefon" and enqueue.get("action") == f"{PUBLIC_URL}/twilio/voice/transfer"
    assert rows(client.engine, store.call_t)[0]["outcome"] == "transferred"
    assert count(client.engine, audit_t, audit_t.c.action == "transferred") == 1
    assert count(client.engine, hub_call_t) == 0  # the agent who takes the call records it
    resp = await post(client, "/twilio/voice/transfer",
                      call.fields("voice_dial_no_answer", DialCallStatus=None, QueueResult="queue-full", QueueTime="3"))
    root = ET.fromstring(await resp.text())
    assert action(root) == f"{PUBLIC_URL}/twilio/voice/callback" and "niemand frei" in spoken(root)
    row = rows(client.engine, store.call_t)[0]
    assert row["outcome"] is None and row["transfer_result"] == "queue-full" and row["queue_seconds"] == 3


async def test_outside_service_hours_the_hours_and_a_callback(aiohttp_client, hub, kb, tmp_path, fake):
    client = await make_client(aiohttp_client, hub, kb, tmp_path, fake, clock=SATURDAY)
    try:
        call = Call(client)
        root = await call.say(action(await call.start()), "Mein Nachbar hat einen lauten Hund")
        text = spoken(root)
        assert "montags bis freitags von 8 bis 18 Uhr" in text and "Drücken Sie die 1" not in text
        # The automated answer is given at any hour.
        other = Call(client, caller="+4917698765432")
        root = await other.say(action(await other.start()), "Personalausweis beantragen in Norderstedt")
        assert "Stadt Norderstedt" in spoken(root)
    finally:
        await close_adapters(client)


async def test_a_hang_up_before_the_end_is_abandoned_and_the_case_stays(client):
    call = Call(client)
    await call.say(action(await call.start()), "Mein Nachbar hat einen lauten Hund")
    assert await call.end(20) == 204
    (row,) = rows(client.engine, store.call_t)
    assert row["outcome"] == "abandoned" and row["caller"] is None
    (case,) = rows(client.engine, case_t)
    assert case["state"] in ("new", "needs_clarification")  # the agents see it, with the number to call back


async def test_silence_is_asked_again_and_a_repeated_webhook_stores_nothing_twice(client):
    call = Call(client)
    root = await call.start()
    root = await call.say(action(root), "")
    assert action(root) == f"{PUBLIC_URL}/twilio/voice/concern?try=1"
    assert count(client.engine, case_t) == 0  # nothing said, nothing stored
    await call.say(action(root), "Ich brauche einen neuen Personalausweis")
    again = await call.say(f"{PUBLIC_URL}/twilio/voice/concern?try=1", "Ich brauche einen neuen Personalausweis")
    assert action(again) == f"{PUBLIC_URL}/twilio/voice/place"
    assert count(client.engine, message_t) == 1 and count(client.engine, case_t) == 1


async def test_hostile_voice_webhooks_are_refused_and_store_nothing(client):
    call = Call(client)
    fields = call.fields("voice_inbound")
    body = urlencode(fields).encode()
    resp = await client.post("/twilio/voice", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 403
    assert (await post(client, "/twilio/voice", call.fields("voice_inbound", AccountSid="AC" + "2" * 32))).status == 403
    assert (await post(client, "/twilio/voice/concern", call.fields("voice_gather_speech", CallSid="CA1"))).status == 400
    assert (await post(client, "/twilio/voice/nowhere", call.fields("voice_gather_speech"))).status == 404
    assert count(client.engine, store.call_t) == 0 and count(client.engine, case_t) == 0


async def test_a_call_put_through_before_saying_anything_is_a_phone_case(client):
    """Keys at the greeting, then 1 for an agent: no words, but the call is a phone case with its outcome."""
    call = Call(client)
    root = await call.say(action(await call.start()), digits="1")
    root = await call.say(action(root), digits="1")
    assert root.find("Enqueue") is not None
    (case,) = rows(client.engine, case_t)
    assert case["channel"] == "phone" and case["contact_phone"] == CITIZEN
    (said,) = rows(client.engine, message_t, message_t.c.case_id == case["id"])
    assert said["external_id"] == call.sid and "nicht genannt" in said["text"]
    (row,) = rows(client.engine, store.call_t)
    assert row["outcome"] == "transferred" and row["case_id"] == case["id"]
    assert count(client.engine, audit_t, audit_t.c.case_id == case["id"], audit_t.c.action == "transferred") == 1
    # How the transfer ended is recorded on the same call: no second case.
    resp = await post(client, "/twilio/voice/transfer",
                      call.fields("voice_dial_no_answer", DialCallStatus=None, QueueResult="queue-full", QueueTime="3"))
    assert resp.status == 200 and count(client.engine, case_t) == 1


async def test_a_repeated_concern_while_the_first_is_written_is_answered_alike(client):
    call = Call(client)
    root = await call.start()
    roots = await asyncio.wait_for(asyncio.gather(*(call.say(action(root), "Mein Nachbar hat einen lauten Hund")
                                                    for _ in range(3))), 20)
    assert len({spoken(r) for r in roots}) == 1 and "Drücken Sie die 1" in spoken(roots[0])
    assert count(client.engine, case_t) == 1
    assert count(client.engine, message_t, message_t.c.direction == "in") == 1


@pytest.mark.parametrize(("speech", "sent"), [("1", 1), ("Die 1.", 1), ("ja", 1), ("2", 0), ("nein danke", 0)])
async def test_the_details_offer_understands_a_spoken_key(client, speech, sent):
    """The menu says "drücken Sie die 1"; a caller who says "eins" gets it as the digit 1 in the transcript."""
    call = Call(client)
    root = await call.say(action(await call.start()), "Ich brauche einen neuen Personalausweis, ich wohne in Todesfelde.")
    await call.say(action(root), speech)
    await client.service.dispatcher.run_until_empty()
    assert len(client.fake.requests) == sent


async def test_a_call_answered_by_the_menu_leaves_an_open_sms_question_open(client):
    """The citizen's SMS was acknowledged; then they call with a clear question. The menu answers it, and the
    case it threaded onto stays open for the SMS question (and its first-response clock)."""
    await post(client, "/twilio/sms", payload("sms_inbound", MessageSid=new_sid("SM"),
                                              Body="Mein Nachbar hat einen lauten Hund, was kann ich tun?"))
    call = Call(client)
    root = await call.say(action(await call.start()), "Ich brauche einen neuen Personalausweis, ich wohne in Todesfelde.")
    assert "Amt Leezen" in spoken(root)
    (case,) = rows(client.engine, case_t)
    assert case["state"] not in ("answered", "closed") and case["first_responded_at"] is None
    said = [m["channel"] for m in rows(client.engine, message_t, message_t.c.direction == "out")]
    assert said == ["sms", "phone"]  # the acknowledgement and the spoken answer, both in the one case
    (record,) = rows(client.engine, hub_call_t)
    assert record["outcome"] == "first_contact"  # the caller's question was answered at once


async def test_a_callback_stays_asked_for_when_an_sms_is_answered(client):
    from hub.queue.outbox import callback_number

    call = Call(client)
    root = await call.say(action(await call.start()), "Mein Nachbar hat einen lauten Hund")
    root = await call.say(action(root), "Rückruf bitte")
    await call.say(action(root), "ja")
    resp = await post(client, "/twilio/sms", payload("sms_inbound", MessageSid=new_sid("SM"),
                                                     Body="Personalausweis beantragen in Todesfelde"))
    assert resp.status == 200
    (case,) = rows(client.engine, case_t)
    assert case["state"] not in ("answered", "closed")
    assert callback_number(case) == CITIZEN
