"""POST /twilio/sms and /twilio/status in the real hub: accept, store, then TwiML; the outbox to a local
Messages API; opt-outs; hostile webhooks refused with nothing stored."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from twilio_support import (
    AUTH_TOKEN,
    CITIZEN,
    HUB_NUMBER,
    PUBLIC_URL,
    FakeTwilio,
    make_twilio_app,
    new_sid,
    payload,
    post,
    sign,
)

from channels.twilio import gsm7, store
from channels.twilio.webhooks import TWILIO
from hub.queue.cases import attachment_t, audit_t, case_t, message_t
from knowledge.settings import ConfigError

TUESDAY_10 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # 10:00 in Berlin


@pytest.fixture()
async def fake():
    async with FakeTwilio() as server:
        yield server


@pytest.fixture()
async def client(aiohttp_client, hub, kb, tmp_path, fake):
    engine, url = hub
    app, service = make_twilio_app(tmp_path, engine, url, kb, clock=lambda: TUESDAY_10, api_base_url=fake.url)
    c = await aiohttp_client(app)
    c.engine, c.service, c.fake = engine, service, fake
    yield c
    for adapter in service.dispatcher.adapters.values():
        close = getattr(adapter, "close", None)
        if close is not None:
            await close()


def sms(**changes):
    changes.setdefault("MessageSid", new_sid("SM"))
    sid = changes["MessageSid"]
    changes.setdefault("SmsSid", sid)
    changes.setdefault("SmsMessageSid", sid)
    return payload("sms_inbound", **changes)


def message_of(text: str) -> ET.Element | None:
    root = ET.fromstring(text)
    assert root.tag == "Response"
    return root.find("Message")


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def rows(engine, table, *where) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).where(*where).order_by(table.c[list(table.c.keys())[0]]))
                .mappings()]


# -- the direct answer and the acknowledgement -----------------------------------------------------------------


async def test_a_clear_question_gets_the_direct_answer_after_the_commit(client):
    params = sms()
    resp = await post(client, "/twilio/sms", params)
    assert resp.status == 200 and resp.content_type == "application/xml"
    message = message_of(await resp.text())
    text = message.text
    assert "Personalausweis beantragen" in text and "Amt Leezen" in text and "Tel." in text and "heute" in text
    assert gsm7.segments(text) <= 2
    (case,) = rows(client.engine, case_t)
    assert case["channel"] == "sms" and case["contact_phone"] == CITIZEN
    assert case["state"] == "answered" and case["service_id"] == "sh-personalausweis"
    assert case["authority_id"] and case["first_responded_at"] is not None
    inbound, outbound = rows(client.engine, message_t)
    assert inbound["external_id"] == params["MessageSid"] and inbound["direction"] == "in"
    assert outbound["direction"] == "out" and outbound["send_state"] == "sent" and outbound["text"] == text
    assert outbound["author"] == "agent:sms-auto" and outbound["recipient"] == CITIZEN
    assert message.get("action") == f"{PUBLIC_URL}/twilio/status?message_id={outbound['id']}"
    # The outbox never sends what TwiML delivered.
    assert await client.service.dispatcher.run_until_empty() == 0 and client.fake.requests == []


async def test_twilio_retrying_the_same_message_sid_stores_it_once(client):
    params = sms()
    first = await post(client, "/twilio/sms", params)
    again = await post(client, "/twilio/sms", params)
    assert first.status == again.status == 200
    # Twilio repeats a webhook whose answer it did not get: the repeat gets the same answer (the same message,
    # whose delivery report comes back to it), recorded once.
    answer, repeated = message_of(await first.text()), message_of(await again.text())
    assert repeated.text == answer.text and "Amt Leezen" in answer.text
    assert repeated.get("action") == answer.get("action")
    assert count(client.engine, case_t) == 1
    assert count(client.engine, message_t, message_t.c.direction == "in") == 1
    assert count(client.engine, message_t, message_t.c.direction == "out") == 1


async def test_a_repeat_while_the_first_is_written_gets_the_same_answer(client):
    """Twilio's repeat can arrive while the first webhook is still being written (a retry after a timeout,
    a fallback URL): both are answered, alike, and the SMS is stored once."""
    params = sms()
    responses = await asyncio.wait_for(asyncio.gather(*(post(client, "/twilio/sms", params) for _ in range(3))), 20)
    assert [r.status for r in responses] == [200, 200, 200]
    texts = {message_of(await r.text()).text for r in responses}
    assert len(texts) == 1 and "Amt Leezen" in texts.pop()
    assert count(client.engine, case_t) == 1
    assert count(client.engine, message_t, message_t.c.direction == "in") == 1
    assert count(client.engine, message_t, message_t.c.direction == "out") == 1


async def test_a_repeat_of_an_sms_that_got_no_answer_gets_none(client):
    await post(client, "/twilio/sms", sms(Body="Mein Nachbar hat einen lauten Hund, was kann ich tun?"))
    params = sms(Body="Er bellt jede Nacht.")  # a follow-up right after the acknowledgement: no second one
    first = await post(client, "/twilio/sms", params)
    again = await post(client, "/twilio/sms", params)
    assert message_of(await first.text()) is None and message_of(await again.text()) is None
    assert count(client.engine, message_t, message_t.c.direction == "out") == 1


async def test_a_new_question_after_a_direct_answer_is_answered(client):
    first = message_of(await (await post(client, "/twilio/sms", sms())).text()).text
    assert "Personalausweis" in first
    # The direct answer invites questions: a new clear one is answered directly ...
    second = message_of(await (await post(client, "/twilio/sms", sms(Body="Reisepass beantragen in Todesfelde"))
                               ).text()).text
    assert "Reisepass" in second and "Amt Leezen" in second
    # ... and one about the answer is acknowledged with the token: an agent answers it.
    third = message_of(await (await post(client, "/twilio/sms", sms(Body="Welche Unterlagen muss ich mitbringen?"))
                              ).text()).text
    (case,) = rows(client.engine, case_t)
    assert case["token"] in third and "erhalten" in third
    assert case["state"] == "routed"  # the citizen wrote again: the case is an agent's again
    assert count(client.engine, message_t, message_t.c.direction == "out") == 3


async def test_a_question_without_place_is_acknowledged_and_the_place_completes_it(client):
    resp = await post(client, "/twilio/sms", sms(Body="Ich brauche einen neuen Personalausweis"))
    ack = message_of(await resp.text()).text
    (case,) = rows(client.engine, case_t)
    assert case["token"] in ack and "In welchem Ort wohnen Sie?" in ack and case["state"] == "new"
    resp = await post(client, "/twilio/sms", sms(Body="Todesfelde"))
    answer = message_of(await resp.text()).text
    assert "Amt Leezen" in answer
    assert count(client.engine, case_t) == 1  # threaded by the number onto the open case
    (case,) = rows(client.engine, case_t)
    assert case["state"] == "answered"


async def test_an_unclear_question_gets_the_token_and_what_happens_next(client):
    resp = await post(client, "/twilio/sms", sms(Body="Mein Nachbar hat einen lauten Hund, was kann ich tun?"))
    text = message_of(await resp.text()).text
    (case,) = rows(client.engine, case_t)
    assert case["token"] in text and "24 Arbeitsstunden" in text and case["state"] == "new"
    # A second message right after: stored in the same case, no second acknowledgement.
    resp = await post(client, "/twilio/sms", sms(Body="Er bellt jede Nacht."))
    assert message_of(await resp.text()) is None
    assert count(client.engine, message_t, message_t.c.direction == "in") == 2


async def test_through_a_messaging_service(client):
    params = payload("sms_messaging_service")
    resp = await post(client, "/twilio/sms", params)
    assert resp.status == 200 and "Kreis Segeberg" in message_of(await resp.text()).text


async def test_mms_media_are_attachments_by_url(client):
    params = payload("mms_inbound")
    resp = await post(client, "/twilio/sms", params)
    assert resp.status == 200
    atts = rows(client.engine, attachment_t)
    assert [a["url"] for a in atts] == [params["MediaUrl0"], params["MediaUrl1"]]
    assert [a["content_type"] for a in atts] == ["image/jpeg", "image/png"]
    assert [a["filename"] for a in atts] == ["mms-1.jpg", "mms-2.png"] and {a["size_bytes"] for a in atts} == {0}
    # The agents' API shows where the media are (to an agent token of the whole hub: since issue 14 an agent
    # token has a scope, and an unscoped one is refused at creation).
    from hub.http.tokens import add_token

    token = add_token(client.engine, "agent.sms", "agent", all_authorities=True)
    headers = {"Authorization": "Bearer " + token}
    (case,) = rows(client.engine, case_t)
    data = await (await client.get(f"/api/cases/{case['id']}", headers=headers)).json()
    urls = [a["url"] for m in data["messages"] for a in m["attachments"]]
    assert urls == [params["MediaUrl0"], params["MediaUrl1"]]


async def test_an_mms_without_words_is_a_request(client):
    params = payload("mms_inbound", Body="", MessageSid=new_sid("MM"))
    resp = await post(client, "/twilio/sms", params)
    assert resp.status == 200 and count(client.engine, attachment_t) == 2
    (msg,) = rows(client.engine, message_t, message_t.c.direction == "in")
    assert msg["text"] == "(MMS ohne Text)"


# -- bad input: a clear answer, nothing stored -----------------------------------------------------------------


@pytest.mark.parametrize("body,words", [("", "leer"), ("   ", "leer"), ("x" * 1601, "zu lang"),
                                        ("Personalausweis " * 320, "zu lang")])
async def test_empty_or_too_long_is_answered_and_not_stored(client, body, words):
    resp = await post(client, "/twilio/sms", sms(Body=body))
    assert resp.status == 200 and words in message_of(await resp.text()).text
    assert count(client.engine, case_t) == 0 and count(client.engine, message_t) == 0


async def test_unsigned_forged_and_foreign_webhooks_are_refused_and_counted(client):
    params = sms()
    body = urlencode(params).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await client.post("/twilio/sms", data=body, headers=form)).status == 403
    forged = {**form, "X-Twilio-Signature": sign(PUBLIC_URL + "/twilio/sms", params, "0" * 32)}
    assert (await client.post("/twilio/sms", data=body, headers=forged)).status == 403
    # Signed for the address the proxy forwards to, not the public URL.
    internal = {**form, "X-Twilio-Signature": sign(f"http://{client.host}:{client.port}/twilio/sms", params)}
    resp = await client.post("/twilio/sms", data=body, headers=internal)
    assert resp.status == 403 and "X-Twilio-Signature" in await resp.text()
    other = await post(client, "/twilio/sms", sms(AccountSid="AC" + "1" * 32))
    assert other.status == 403
    assert count(client.engine, case_t) == 0 and count(client.engine, message_t) == 0
    counts = client.app[TWILIO].checker.counts()
    assert counts == {("/twilio/sms", "missing"): 1, ("/twilio/sms", "forged"): 2}


async def test_non_utf8_and_non_forms_are_a_clear_400(client):
    params = sms()
    body = urlencode(params).encode() + b"&Body=%FF%FE"
    resp = await client.post("/twilio/sms", data=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"})
    assert resp.status == 400 and "UTF-8" in await resp.text()
    resp = await client.post("/twilio/sms", data=b'{"Body": "x"}', headers={"Content-Type": "application/json"})
    assert resp.status == 415
    resp = await client.post("/twilio/sms", data=b"Body=" + b"x" * 70_000,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 413
    assert count(client.engine, case_t) == 0


async def test_control_characters_in_the_body_are_stored_as_spaces(client):
    resp = await post(client, "/twilio/sms", sms(Body="Personalausweis\x00 in\x1b Todesfelde"))
    assert resp.status == 200
    (msg,) = rows(client.engine, message_t, message_t.c.direction == "in")
    assert msg["text"] == "Personalausweis  in  Todesfelde"


# -- opt-outs ---------------------------------------------------------------------------------------------------


async def test_stop_is_stored_and_honoured_until_start(client):
    first = await post(client, "/twilio/sms", sms(Body="Ich brauche einen neuen Personalausweis"))
    assert message_of(await first.text()) is not None
    stop = await post(client, "/twilio/sms", sms(Body="STOPP"))
    assert "keine SMS mehr" in message_of(await stop.text()).text
    assert rows(client.engine, store.opt_out_t)[0]["phone"] == CITIZEN
    # A request after STOP is stored, but gets no SMS.
    quiet = await post(client, "/twilio/sms", sms(Body="Ich wohne in Todesfelde"))
    assert quiet.status == 200 and message_of(await quiet.text()) is None
    assert count(client.engine, message_t, message_t.c.direction == "in") == 2
    # An agent's answer goes nowhere: the adapter refuses an opted-out number without a request.
    (case,) = rows(client.engine, case_t)
    await agent_reply(client, case, "Bitte bringen Sie ein Passbild mit.")
    assert client.fake.requests == []
    (reply,) = rows(client.engine, message_t, message_t.c.author == "agent:meier")
    assert reply["send_state"] == "failed" and "opted out" in reply["last_error"]
    start = await post(client, "/twilio/sms", sms(Body="start"))
    assert "wieder eingeschaltet" in message_of(await start.text()).text
    assert count(client.engine, store.opt_out_t) == 0
    await agent_reply(client, case, "Termine gibt es online.")
    assert len(client.fake.requests) == 1


async def test_after_stop_not_even_a_notice_goes_out(client):
    """Twilio itself blocks SMS after its own English keywords, not after STOPP or ABMELDEN: the hub's
    notices (empty, too long, over the limit) must not reach a number that opted out."""
    await post(client, "/twilio/sms", sms(Body="ABMELDEN"))
    for body in ("", "x" * 1700):
        resp = await post(client, "/twilio/sms", sms(Body=body))
        assert resp.status == 200 and message_of(await resp.text()) is None
    assert count(client.engine, case_t) == 0
    # Another number still gets the notice.
    resp = await post(client, "/twilio/sms", sms(Body="", From="+4915187654321"))
    assert "leer" in message_of(await resp.text()).text


@pytest.mark.parametrize("word", ["STOP", "stop", "Abmelden", "STOPALL"])
async def test_every_stop_word(client, word):
    await post(client, "/twilio/sms", sms(Body=word))
    assert count(client.engine, store.opt_out_t) == 1 and count(client.engine, case_t) == 0


async def test_advanced_opt_out_is_recorded_without_a_second_confirmation(client):
    resp = await post(client, "/twilio/sms", payload("sms_stop_advanced_opt_out"))
    assert message_of(await resp.text()) is None
    assert rows(client.engine, store.opt_out_t)[0]["source"] == "keyword"


# -- outbound: the outbox, the Messages API, delivery reports --------------------------------------------------


async def agent_reply(client, case: dict, text: str) -> None:
    from hub.queue.outbox import enqueue

    with client.engine.begin() as conn:
        row = dict(conn.execute(select(case_t).where(case_t.c.id == case["id"])).mappings().one())
        enqueue(conn, row, text=text, author="agent:meier")
    await client.service.dispatcher.run_until_empty()


async def test_an_agents_answer_leaves_through_the_outbox_once_with_the_fields_twilio_expects(client):
    await post(client, "/twilio/sms", sms(Body="Mein Nachbar hat einen lauten Hund"))
    (case,) = rows(client.engine, case_t)
    await agent_reply(client, case, "Wenden Sie sich bitte an das Ordnungsamt – Tel. 04551 951-0.")
    (req,) = client.fake.requests
    (reply,) = rows(client.engine, message_t, message_t.c.author == "agent:meier")
    assert req.fields == {"To": CITIZEN, "From": HUB_NUMBER,
                          "Body": "Wenden Sie sich bitte an das Ordnungsamt - Tel. 04551 951-0.",
                          "StatusCallback": f"{PUBLIC_URL}/twilio/status?message_id={reply['id']}"}
    assert reply["send_state"] == "sent"
    assert await client.service.dispatcher.run_until_empty() == 0 and len(client.fake.requests) == 1  # never twice
    # Twilio reports the delivery.
    report = payload("message_status_delivered", MessageSid=new_sid("SM"))
    resp = await post(client, f"/twilio/status?message_id={reply['id']}", report)
    assert resp.status == 204
    (delivery,) = rows(client.engine, store.delivery_t)
    assert delivery["status"] == "delivered" and delivery["message_sid"] == report["MessageSid"]
    # An older report after it changes nothing.
    sent = payload("message_status_sent", MessageSid=report["MessageSid"])
    await post(client, f"/twilio/status?message_id={reply['id']}", sent)
    assert rows(client.engine, store.delivery_t)[0]["status"] == "delivered"


async def test_temporary_failures_are_retried_by_the_outbox(client):
    await post(client, "/twilio/sms", sms(Body="Mein Nachbar hat einen lauten Hund"))
    (case,) = rows(client.engine, case_t)
    client.fake.script.append((503, {"code": 20503, "message": "Service Unavailable", "status": 503}))
    await agent_reply(client, case, "Antwort")
    (reply,) = rows(client.engine, message_t, message_t.c.author == "agent:meier")
    assert reply["send_state"] == "pending" and reply["next_attempt_at"] > reply["created_at"]
    assert len(client.fake.requests) == 1


async def test_undelivered_marks_the_message_failed_and_21610_records_the_opt_out(client):
    await post(client, "/twilio/sms", sms(Body="Mein Nachbar hat einen lauten Hund"))
    (case,) = rows(client.engine, case_t)
    await agent_reply(client, case, "Antwort")
    (reply,) = rows(client.engine, message_t, message_t.c.author == "agent:meier")
    report = payload("message_status_undelivered", MessageSid=new_sid("SM"))
    assert (await post(client, f"/twilio/status?message_id={reply['id']}", report)).status == 204
    (reply,) = rows(client.engine, message_t, message_t.c.author == "agent:meier")
    assert reply["send_state"] == "failed" and "30003" in reply["last_error"]
    assert count(client.engine, audit_t, audit_t.c.action == "send_bounced") == 1
    failed = payload("message_status_undelivered", MessageSid=new_sid("SM"), ErrorCode="21610",
                     MessageStatus="failed", SmsStatus="failed")
    (ack,) = rows(client.engine, message_t, message_t.c.author == "agent:sms-ack")
    await post(client, f"/twilio/status?message_id={ack['id']}", failed)
    assert rows(client.engine, store.opt_out_t)[0]["source"] == "twilio"


async def test_a_report_confirms_a_send_whose_outcome_was_unknown(client):
    await post(client, "/twilio/sms", sms(Body="Mein Nachbar hat einen lauten Hund"))
    (case,) = rows(client.engine, case_t)
    client.fake.script.append("drop")
    await agent_reply(client, case, "Antwort")
    (reply,) = rows(client.engine, message_t, message_t.c.author == "agent:meier")
    assert reply["send_state"] == "failed" and "may have gone out" in reply["last_error"]
    await post(client, f"/twilio/status?message_id={reply['id']}", payload("message_status_sent"))
    (reply,) = rows(client.engine, message_t, message_t.c.author == "agent:meier")
    assert reply["send_state"] == "sent"


async def test_status_reports_are_checked_too(client):
    report = payload("message_status_delivered")
    body = urlencode(report).encode()
    resp = await client.post("/twilio/status?message_id=1", data=body,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 403
    assert (await post(client, "/twilio/status?message_id=abc", report)).status == 400
    assert (await post(client, "/twilio/status?message_id=999999", report)).status == 204  # purged: ignored
    assert count(client.engine, store.delivery_t) == 0


# -- configuration ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["auth_token", "public_url"])
def test_the_start_fails_naming_the_missing_key(hub, kb, tmp_path, missing):
    engine, url = hub
    with pytest.raises(ConfigError, match=missing):
        make_twilio_app(tmp_path, engine, url, kb, **{missing: ""})


async def test_the_channel_is_off_without_an_account(aiohttp_client, hub, kb, tmp_path):
    engine, url = hub
    app, _ = make_twilio_app(tmp_path, engine, url, kb, account_sid="", auth_token="", public_url="")
    client = await aiohttp_client(app)
    assert (await client.post("/twilio/sms", data=b"")).status == 404
    assert TWILIO not in app


def test_the_token_comes_from_the_environment(tmp_path):
    from hub.config import load_settings

    settings = load_settings(None, environ={"CITIZEN_HUB_TWILIO__ACCOUNT_SID": "AC" + "a" * 32,
                                            "CITIZEN_HUB_TWILIO__AUTH_TOKEN": AUTH_TOKEN,
                                            "CITIZEN_HUB_TWILIO__PUBLIC_URL": PUBLIC_URL,
                                            "CITIZEN_HUB_TWILIO__PHONE_NUMBERS": "+4932221803115,+4930901820"})
    assert settings.twilio.require().auth_token == AUTH_TOKEN
    assert settings.twilio.phone_numbers == ["+4932221803115", "+4930901820"]


async def test_refused_signatures_are_in_metrics(client):
    body = urlencode(sms()).encode()
    await client.post("/twilio/sms", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    await client.post("/twilio/voice", data=body, headers={"Content-Type": "application/x-www-form-urlencoded",
                                                           "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"})
    await post(client, "/twilio/sms", sms())  # accepted: not counted
    resp = await client.get("/metrics")
    text = await resp.text()
    assert 'citizen_hub_twilio_webhooks_rejected_total{reason="missing",route="/twilio/sms"} 1.0' in text
    assert 'citizen_hub_twilio_webhooks_rejected_total{reason="forged",route="/twilio/voice"} 1.0' in text
    assert 'citizen_hub_intake_requests_total{channel="sms",outcome="new"} 1.0' in text


async def test_a_direct_answer_to_a_new_question_leaves_the_open_one_open(client):
    """The first question was acknowledged (an agent owes the answer); a new, clear question of the same citizen
    is answered directly, and the case stays the agent's, with its first question and its clock."""
    await post(client, "/twilio/sms", sms(Body="Mein Nachbar hat einen lauten Hund, was kann ich tun?"))
    client.service.routing.run_until_empty()
    (before,) = rows(client.engine, case_t)
    resp = await post(client, "/twilio/sms", sms(Body="Und wo beantrage ich einen Personalausweis in Todesfelde?"))
    assert "Amt Leezen" in message_of(await resp.text()).text
    (case,) = rows(client.engine, case_t)
    assert case["state"] not in ("answered", "closed") and case["first_responded_at"] is None
    assert case["service_id"] == before["service_id"]
    assert count(client.engine, message_t, message_t.c.direction == "out") == 2  # both SMS are in the case


async def test_the_acknowledgement_promises_the_configured_first_response_time(client):
    client.service.policy.settings.first_response_hours = 4
    resp = await post(client, "/twilio/sms", sms(Body="Mein Nachbar hat einen lauten Hund, was kann ich tun?"))
    text = message_of(await resp.text()).text
    assert "innerhalb von 4 Arbeitsstunden" in text and "24" not in text


async def test_an_agents_answer_to_a_number_that_sent_stop_is_refused_at_once(client):
    """The console and the API answer through hub.casework.reply: an SMS that nobody would receive is refused
    there (409, with the reason for the agent), and the case stays open, instead of counting as answered
    and failing later in the outbox."""
    from hub import casework
    from hub.queue.settings import QueueSettings

    await post(client, "/twilio/sms", sms(Body="Mein Nachbar hat einen lauten Hund"))
    await post(client, "/twilio/sms", sms(Body="STOPP"))
    (case,) = rows(client.engine, case_t)
    with pytest.raises(casework.CaseworkError) as refused:
        casework.run(client.engine, case["id"], casework.reply, text="Bitte rufen Sie das Ordnungsamt an.",
                     agent="meier", policy=client.service.policy, queue=QueueSettings())
    assert refused.value.code == "recipient_refused" and refused.value.status == 409
    assert "abbestellt" in str(refused.value)
    (after,) = rows(client.engine, case_t)
    assert after["state"] == case["state"] and after["first_responded_at"] is None
    assert count(client.engine, message_t, message_t.c.author == "agent:meier") == 0
    # After START the answer goes.
    await post(client, "/twilio/sms", sms(Body="START"))
    casework.run(client.engine, case["id"], casework.reply, text="Bitte rufen Sie das Ordnungsamt an.",
                 agent="meier", policy=client.service.policy, queue=QueueSettings())
    await client.service.dispatcher.run_until_empty()
    assert len(client.fake.requests) == 1


@pytest.mark.parametrize(("when", "body", "holiday"), [
    (datetime(2026, 6, 4, 8, 0, tzinfo=UTC), "Personalausweis beantragen in Soest", True),  # Fronleichnam in NRW
    (datetime(2025, 10, 31, 9, 0, tzinfo=UTC), "Personalausweis beantragen in Soest", False),  # Reformationstag: SH only
    (datetime(2025, 10, 31, 9, 0, tzinfo=UTC), "Personalausweis beantragen in Todesfelde", True),
])
async def test_todays_hours_follow_the_holidays_of_the_offices_land(aiohttp_client, hub, kb, tmp_path, fake, when,
                                                                     body, holiday):
    engine, url = hub
    app, service = make_twilio_app(tmp_path, engine, url, kb, clock=lambda: when, api_base_url=fake.url)
    c = await aiohttp_client(app)
    try:
        text = message_of(await (await post(c, "/twilio/sms", sms(Body=body))).text()).text
    finally:
        for adapter in service.dispatcher.adapters.values():
            if hasattr(adapter, "close"):
                await adapter.close()
    assert ("heute Feiertag" in text) is holiday, text


async def test_the_case_page_warns_before_an_answer_to_a_number_that_sent_stop(aiohttp_client, hub, kb, tmp_path,
                                                                               fake, monkeypatch):
    """The console's case page, logged in: the warning the reply rule would refuse with, before the
    agent writes; and a written answer to a phone case is labelled as the SMS it becomes."""
    from console_support import login, new_user
    from twilio_support import hub_settings

    from hub.console.settings import ConsoleSettings

    def settings_with_console(*args, **kwargs):
        settings = hub_settings(*args, **kwargs)
        settings.console = ConsoleSettings(cookie_secure=False, csrf_secret="c" * 40)
        return settings

    monkeypatch.setattr("twilio_support.hub_settings", settings_with_console)
    engine, url = hub
    app, service = make_twilio_app(tmp_path, engine, url, kb, clock=lambda: TUESDAY_10, api_base_url=fake.url)
    c = await aiohttp_client(app)
    c.engine = engine
    await post(c, "/twilio/sms", sms(Body="Mein Nachbar hat einen lauten Hund"))
    (case,) = rows(engine, case_t)
    new_user(engine, "chefin", "admin")  # sees every case, also one not routed yet
    await login(c, "chefin")
    page = await (await c.get(f"/console/cases/{case['id']}")).text()
    assert "Antwort per SMS" in page and 'id="reply-unreachable"' not in page
    await post(c, "/twilio/sms", sms(Body="STOPP"))
    page = await (await c.get(f"/console/cases/{case['id']}")).text()
    assert 'id="reply-unreachable"' in page and "SMS abbestellt" in page
    with engine.begin() as conn:
        conn.execute(case_t.update().where(case_t.c.id == case["id"]).values(channel="phone"))
    await post(c, "/twilio/sms", sms(Body="START"))
    page = await (await c.get(f"/console/cases/{case['id']}")).text()
    assert "Antwort per SMS an die Nummer des Anrufs" in page and 'id="reply-unreachable"' not in page
    for adapter in service.dispatcher.adapters.values():
        if hasattr(adapter, "close"):
            await adapter.close()
