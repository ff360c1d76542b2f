"""Outbound SMS through twilio's async client against a local Messages API (tests/twilio_support.FakeTwilio)."""

from __future__ import annotations

import base64

import pytest
from twilio_support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CITIZEN,
    HUB_NUMBER,
    PUBLIC_URL,
    SERVICE_SID,
    FakeTwilio,
    rest_error,
    twilio_settings,
)

from channels.twilio.outbound import (
    TwilioSmsAdapter,
    build_sms_adapter,
    classify,
    status_callback_url,
    without_numbers,
)
from hub.queue.adapters import OutboundMessage, load_adapters
from knowledge.settings import ConfigError


def message(text="Ihr Personalausweis liegt zur Abholung bereit – bitte Termin „online“ buchen.", **kw):
    values = dict(message_id=42, case_id=7, case_token="Ab3_x-Yz9QwErTy0", channel="sms", kind="reply",
                  recipient=CITIZEN, subject=None, text=text, external_id=None)
    values.update(kw)
    return OutboundMessage(**values)


@pytest.fixture()
async def fake():
    async with FakeTwilio() as server:
        yield server


def adapter_for(fake, **changes) -> TwilioSmsAdapter:
    return TwilioSmsAdapter(twilio_settings(api_base_url=fake.url, send_timeout_seconds=1, **changes))


async def test_an_answer_goes_out_with_exactly_the_fields_twilio_expects(fake):
    adapter = adapter_for(fake)
    try:
        result = await adapter.send(message())
    finally:
        await adapter.close()
    assert result.ok and result.detail.startswith("SM") and "queued" in result.detail
    (req,) = fake.requests
    assert req.method == "POST" and req.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert req.fields == {
        "To": CITIZEN,
        "From": HUB_NUMBER,
        "Body": 'Ihr Personalausweis liegt zur Abholung bereit - bitte Termin "online" buchen.',  # GSM-7
        "StatusCallback": f"{PUBLIC_URL}/twilio/status?message_id=42",
    }
    assert [k for k, _ in req.form] == ["To", "StatusCallback", "From", "Body"]  # each once
    token = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert req.headers["Authorization"] == f"Basic {token}"
    assert req.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert req.headers["User-Agent"].startswith("twilio-python/")


async def test_through_a_messaging_service(fake):
    adapter = adapter_for(fake, messaging_service_sid=SERVICE_SID, phone_numbers=[])
    try:
        assert (await adapter.send(message("Hallo"))).ok
    finally:
        await adapter.close()
    fields = fake.requests[0].fields
    assert fields["MessagingServiceSid"] == SERVICE_SID and "From" not in fields


@pytest.mark.parametrize("answer,ok,temporary,words", [
    (rest_error("rest_error_21211"), False, False, "21211"),
    (rest_error("rest_error_21610"), False, False, "opted out"),
    ((429, {"code": 20429, "message": "Too Many Requests", "status": 429}), False, True, "429"),
    ((503, {"code": 20503, "message": "Service Unavailable", "status": 503}), False, True, "503"),
    ((502, "<html>Bad Gateway</html>"), False, True, "502"),
    ((500, {"code": 20500, "message": "Internal Server Error", "status": 500}), False, False, "may have gone out"),
    ((201, "this is not json"), False, False, "may have gone out"),
])
async def test_failures_are_classified_and_never_raise(fake, answer, ok, temporary, words):
    fake.script.append(answer)
    adapter = adapter_for(fake)
    try:
        result = await adapter.send(message("Hallo"))
    finally:
        await adapter.close()
    assert (result.ok, result.temporary) == (ok, temporary)
    assert words in result.detail


async def test_a_wrong_token_is_kept_for_retry_with_a_hint(fake):
    adapter = adapter_for(fake, auth_token="0" * 32)
    try:
        result = await adapter.send(message("Hallo"))
    finally:
        await adapter.close()
    assert result.temporary and "auth_token" in result.detail and "401" in result.detail


async def test_no_answer_after_sending_is_final_so_nothing_goes_twice(fake):
    fake.script.extend(["drop", ("delay", 1.5)])
    adapter = adapter_for(fake)
    try:
        dropped = await adapter.send(message("Hallo"))
        slow = await adapter.send(message("Hallo"))
    finally:
        await adapter.close()
    for result in (dropped, slow):
        assert not result.ok and not result.temporary and "may have gone out" in result.detail
    assert len(fake.requests) == 2


async def test_no_connection_is_temporary():
    settings = twilio_settings(api_base_url="http://127.0.0.1:9", send_timeout_seconds=2)
    adapter = TwilioSmsAdapter(settings)
    try:
        result = await adapter.send(message("Hallo"))
    finally:
        await adapter.close()
    assert result.temporary and "not reachable" in result.detail


async def test_refusals_make_no_request(fake):
    adapter = adapter_for(fake)
    try:
        for msg, words in ((message(recipient=None), "no phone number"), (message(recipient="hallo"), "not a phone"),
                           (message(recipient=HUB_NUMBER), "own numbers"), (message(text="  "), "empty"),
                           (message(text="x" * 1601), "1600")):
            result = await adapter.send(msg)
            assert not result.ok and not result.temporary and words in result.detail
    finally:
        await adapter.close()
    assert fake.requests == []


async def test_the_body_is_never_longer_than_twilio_takes(fake):
    """Typographic characters become their GSM-7 twins ("…" → "..."), unless that makes an answer Twilio
    would take (1,600 characters) longer than it takes: then it goes as written."""
    adapter = adapter_for(fake)
    long_answer = ("Bitte bringen Sie Ihren Ausweis mit … " * 50)[:1600]
    try:
        assert (await adapter.send(message(long_answer))).ok
        assert (await adapter.send(message("Termine gibt es online … „ab Montag“."))).ok
    finally:
        await adapter.close()
    first, second = (r.fields["Body"] for r in fake.requests)
    assert first == long_answer and len(first) == 1600
    assert second == 'Termine gibt es online ... "ab Montag".'


async def test_opted_out_numbers_get_nothing(fake):
    seen = []

    def check(number):
        seen.append(number)
        return number == CITIZEN

    async def acheck(number):
        return True

    def broken(number):
        raise RuntimeError("database locked")

    for opted_out, temporary in ((check, False), (acheck, False), (broken, True)):
        adapter = TwilioSmsAdapter(twilio_settings(api_base_url=fake.url), opted_out=opted_out)
        result = await adapter.send(message("Hallo", recipient="0151 12345678"))
        await adapter.close()
        assert not result.ok and result.temporary is temporary
    assert seen == [CITIZEN] and fake.requests == []
    adapter = TwilioSmsAdapter(twilio_settings(api_base_url=fake.url), opted_out=check)
    assert (await adapter.send(message("Hallo", recipient="+4917698765432"))).ok
    await adapter.close()


def test_configuration_is_checked_when_the_adapter_is_built():
    with pytest.raises(ConfigError, match="auth_token"):
        TwilioSmsAdapter(twilio_settings(auth_token=""))
    with pytest.raises(ConfigError, match="public_url"):
        TwilioSmsAdapter(twilio_settings(public_url=""))
    with pytest.raises(ConfigError, match="sender"):
        TwilioSmsAdapter(twilio_settings(phone_numbers=[]))
    with pytest.raises(ConfigError, match="off"):
        build_sms_adapter(object())  # no [twilio] section: the channel is off
    # The registry leaves a channel that is not configured out, with a warning (strict: the error goes up).
    assert load_adapters(object(), {"sms": "channels.twilio.outbound:build_sms_adapter"}) == {}
    with pytest.raises(ConfigError):
        load_adapters(object(), {"sms": "channels.twilio.outbound:build_sms_adapter"}, strict=True)


def test_classify_and_callback_url():
    assert classify(400, 21211, "invalid").temporary is False
    assert classify(401, 20003, "auth").temporary is True
    assert classify(400, 21606, "not our number").temporary is True
    assert classify(504, None, "").temporary is True
    assert status_callback_url(twilio_settings(), 7) == "https://hub.example.de/twilio/status?message_id=7"


def test_twilio_error_texts_lose_the_numbers_they_quote():
    """The detail goes into the log and the audit log, which hold no numbers (and outlive ``forget``)."""
    result = classify(400, 21211, "Invalid 'To' Phone Number: +49151123")
    assert "+49151123" not in result.detail and "<Nummer>" in result.detail and "21211" in result.detail
    assert without_numbers("The 'To' number 0151 1234 5678 is not a valid phone number.") == \
        "The 'To' number <Nummer> is not a valid phone number."
    assert without_numbers("Queue overflow, retry in 60 s") == "Queue overflow, retry in 60 s"
