"""The one webhook parser: recorded payloads signed by twilio's validator, and hostile input refused clearly."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import pytest
from multidict import MultiDict
from twilio_support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CITIZEN,
    FIXTURES,
    HUB_NUMBER,
    PUBLIC_URL,
    SERVICE_SID,
    new_sid,
    payload,
    sign,
    signed,
)

from channels.twilio.payload import (
    BadSignature,
    CallStatusWebhook,
    GatherWebhook,
    InvalidPayload,
    MessageStatusWebhook,
    NotAForm,
    NotUtf8,
    SmsWebhook,
    TooLarge,
    TransferWebhook,
    VoiceWebhook,
    WebhookError,
    WrongAccount,
    parse_form,
    parse_webhook,
)
from channels.twilio.signature import SignatureChecker


@pytest.fixture()
def checker():
    return SignatureChecker(AUTH_TOKEN, PUBLIC_URL)


def parse(model, path, body, headers, checker, **kwargs):
    return parse_webhook(model, body, headers, url=PUBLIC_URL + path, checker=checker, account_sid=ACCOUNT_SID,
                         route=path, **kwargs)


@pytest.mark.parametrize("name,model,path", [
    ("sms_inbound", SmsWebhook, "/twilio/sms"),
    ("sms_messaging_service", SmsWebhook, "/twilio/sms"),
    ("mms_inbound", SmsWebhook, "/twilio/sms"),
    ("sms_stop_advanced_opt_out", SmsWebhook, "/twilio/sms"),
    ("voice_inbound", VoiceWebhook, "/twilio/voice"),
    ("voice_gather_speech", GatherWebhook, "/twilio/voice/concern"),
    ("voice_gather_digits", GatherWebhook, "/twilio/voice/place?try=1"),
    ("voice_call_completed", CallStatusWebhook, "/twilio/voice/status"),
    ("voice_dial_no_answer", TransferWebhook, "/twilio/voice/transfer"),
    ("message_status_sent", MessageStatusWebhook, "/twilio/status?message_id=7"),
    ("message_status_delivered", MessageStatusWebhook, "/twilio/status?message_id=7"),
    ("message_status_undelivered", MessageStatusWebhook, "/twilio/status?message_id=7"),
])
def test_every_recorded_payload_parses_when_signed(name, model, path, checker):
    body, headers = signed(path, payload(name))
    result = parse(model, path, body, headers, checker)
    assert isinstance(result, model)
    assert result.account_sid == ACCOUNT_SID
    assert checker.accepted == 1 and not checker.counts()


def test_the_fields_of_an_sms():
    params = payload("sms_inbound")
    body, headers = signed("/twilio/sms", params)
    sms = parse(SmsWebhook, "/twilio/sms", body, headers, SignatureChecker(AUTH_TOKEN, PUBLIC_URL))
    assert sms.message_sid == params["MessageSid"]
    assert sms.from_ == CITIZEN and sms.to == HUB_NUMBER
    assert sms.body.startswith("Ich brauche einen neuen Personalausweis")
    assert sms.num_media == 0 and sms.media == () and sms.num_segments == 1
    assert sms.to_country == "DE" and sms.messaging_service_sid == ""


def test_a_message_through_a_messaging_service_is_checked_like_any_other(checker):
    # Chatwoot's regression: messages through Messaging Services were refused. The signature is over the
    # URL Twilio called (the service's inbound URL) and the form, whatever the service.
    body, headers = signed("/twilio/sms", payload("sms_messaging_service"))
    sms = parse(SmsWebhook, "/twilio/sms", body, headers, checker)
    assert sms.messaging_service_sid == SERVICE_SID


def test_mms_media_are_collected_in_order(checker):
    body, headers = signed("/twilio/sms", payload("mms_inbound"))
    sms = parse(SmsWebhook, "/twilio/sms", body, headers, checker)
    assert [m.content_type for m in sms.media] == ["image/jpeg", "image/png"]
    assert all(m.url.startswith("https://api.twilio.com/2010-04-01/Accounts/") for m in sms.media)
    assert sms.media[0].url.endswith("ME0a1b2c3d4e5f60718293a4b5c6d7e8f9")


def test_mms_that_announces_more_media_than_it_carries_is_invalid(checker):
    body, headers = signed("/twilio/sms", payload("mms_inbound", NumMedia="3"))
    with pytest.raises(InvalidPayload):
        parse(SmsWebhook, "/twilio/sms", body, headers, checker)


def test_media_must_be_https(checker):
    body, headers = signed("/twilio/sms", payload("mms_inbound", MediaUrl0="http://evil.example/x.jpg"))
    with pytest.raises(InvalidPayload) as err:
        parse(SmsWebhook, "/twilio/sms", body, headers, checker)
    assert "evil" not in err.value.public


def test_gather_fields(checker):
    body, headers = signed("/twilio/voice/concern", payload("voice_gather_speech"))
    gather = parse(GatherWebhook, "/twilio/voice/concern", body, headers, checker)
    assert gather.speech_result == "Ich brauche einen neuen Personalausweis."
    assert gather.confidence == pytest.approx(0.9129671)
    body, headers = signed("/twilio/voice/place", payload("voice_gather_digits"))
    gather = parse(GatherWebhook, "/twilio/voice/place", body, headers, checker)
    assert gather.digits == "23845" and gather.speech_result == "" and gather.confidence is None


def test_transfer_result(checker):
    body, headers = signed("/twilio/voice/transfer", payload("voice_dial_no_answer"))
    transfer = parse(TransferWebhook, "/twilio/voice/transfer", body, headers, checker)
    assert transfer.result == "no-answer"
    body, headers = signed("/twilio/voice/transfer", payload("voice_dial_no_answer", DialCallStatus=None,
                                                            QueueResult="bridged", QueueTime="23"))
    transfer = parse(TransferWebhook, "/twilio/voice/transfer", body, headers, checker)
    assert transfer.result == "bridged" and transfer.queue_time == 23


def test_status_fields(checker):
    body, headers = signed("/twilio/status", payload("message_status_undelivered"))
    status = parse(MessageStatusWebhook, "/twilio/status", body, headers, checker)
    assert status.message_status == "undelivered" and status.error_code == 30003
    body, headers = signed("/twilio/voice/status", payload("voice_call_completed"))
    call = parse(CallStatusWebhook, "/twilio/voice/status", body, headers, checker)
    assert call.call_status == "completed" and call.call_duration == 47


def test_a_new_parameter_twilio_adds_is_signed_and_ignored(checker):
    params = payload("sms_inbound", ChannelMetadata='{"type":"sms"}', AddOns='{"status":"successful"}')
    body, headers = signed("/twilio/sms", params)
    assert parse(SmsWebhook, "/twilio/sms", body, headers, checker).body


def test_the_url_is_public_url_plus_path_never_the_host_header(checker):
    params = payload("sms_inbound")
    # Signed for the internal address the proxy forwards to: refused, although Host says so.
    body = urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Host": "10.0.0.5:8115",
               "X-Twilio-Signature": sign("http://10.0.0.5:8115/twilio/sms", params)}
    with pytest.raises(BadSignature):
        parse(SmsWebhook, "/twilio/sms", body, headers, checker)
    # With the query string: the whole URL counts.
    body, headers = signed("/twilio/status?message_id=7", payload("message_status_sent"))
    parse(MessageStatusWebhook, "/twilio/status?message_id=7", body, headers, checker)
    with pytest.raises(BadSignature):
        parse(MessageStatusWebhook, "/twilio/status?message_id=8", body, headers, checker)


def test_the_port_twilio_may_or_may_not_include_is_accepted(checker):
    params = payload("sms_inbound")
    body = urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": sign("https://hub.example.de:443/twilio/sms", params)}
    assert parse(SmsWebhook, "/twilio/sms", body, headers, checker)


def test_sha256_signatures_named_in_the_settings_header_are_checked(checker):
    params = payload("sms_inbound")
    body = urlencode(params).encode()
    from twilio.request_validator import RequestValidator

    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + "/twilio/sms", params, "HMAC_SHA256")
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature,
               "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_x,algorithm=HMAC_SHA256"}
    assert parse(SmsWebhook, "/twilio/sms", body, headers, checker)
    headers["X-Twilio-Webhooks-Signature-Settings"] = "algorithm=HMAC_MD5"
    with pytest.raises(BadSignature):
        parse(SmsWebhook, "/twilio/sms", body, headers, checker)
    assert checker.counts()[("/twilio/sms", "unsupported_algorithm")] == 1


# -- hostile input -------------------------------------------------------------------------------------------


def test_unsigned_is_refused_counted_and_logged_with_the_url_not_the_body(checker, caplog):
    params = payload("sms_inbound", Body="Mein geheimes Anliegen 4711")
    body = urlencode(params).encode()
    with caplog.at_level(logging.WARNING, logger="channels.twilio.signature"):
        with pytest.raises(BadSignature) as err:
            parse(SmsWebhook, "/twilio/sms", body, {"Content-Type": "application/x-www-form-urlencoded"}, checker)
    assert err.value.status == 403
    assert checker.counts() == {("/twilio/sms", "missing"): 1}
    text = caplog.text
    assert "https://hub.example.de/twilio/sms" in text
    assert "geheimes" not in text and "4711" not in text and CITIZEN not in text


def test_forged_signature_is_refused(checker):
    params = payload("sms_inbound")
    body, headers = signed("/twilio/sms", params, token="f" * 32)  # another token
    with pytest.raises(BadSignature):
        parse(SmsWebhook, "/twilio/sms", body, headers, checker)
    # A signed body changed on the way.
    body, headers = signed("/twilio/sms", params)
    tampered = body.replace(b"Todesfelde", b"Norderstedt")
    with pytest.raises(BadSignature):
        parse(SmsWebhook, "/twilio/sms", tampered, headers, checker)
    # A field added on the way.
    with pytest.raises(BadSignature):
        parse(SmsWebhook, "/twilio/sms", body + b"&NumMedia=1", headers, checker)
    # A huge header value.
    with pytest.raises(BadSignature):
        parse(SmsWebhook, "/twilio/sms", body, {**headers, "X-Twilio-Signature": "A" * 10_000}, checker)
    assert sum(checker.counts().values()) == 4


def test_wrong_account_is_refused_even_when_signed(checker):
    params = payload("sms_inbound", AccountSid="AC" + "0" * 32)
    body, headers = signed("/twilio/sms", params)
    with pytest.raises(WrongAccount) as err:
        parse(SmsWebhook, "/twilio/sms", body, headers, checker)
    assert err.value.status == 403


def test_non_utf8_is_a_clear_400(checker):
    params = payload("sms_inbound")
    body = urlencode(params).encode().replace(b"Todesfelde", b"Todesfelde%FF%FE")
    with pytest.raises(NotUtf8) as err:
        parse(SmsWebhook, "/twilio/sms", body, {"Content-Type": "application/x-www-form-urlencoded"}, checker)
    assert err.value.status == 400
    with pytest.raises(NotUtf8):
        parse_form(b"Body=\xff\xfe", "application/x-www-form-urlencoded", max_bytes=1000)
    with pytest.raises(NotUtf8):
        parse_form(b"Body=x", "application/x-www-form-urlencoded; charset=ISO-8859-1", max_bytes=1000)


def test_not_a_form_and_too_large(checker):
    with pytest.raises(NotAForm):
        parse(SmsWebhook, "/twilio/sms", b'{"Body": "x"}', {"Content-Type": "application/json"}, checker)
    with pytest.raises(TooLarge) as err:
        parse(SmsWebhook, "/twilio/sms", b"Body=" + b"a" * 70_000,
              {"Content-Type": "application/x-www-form-urlencoded"}, checker)
    assert err.value.status == 413
    with pytest.raises(TooLarge):
        parse_form(b"&".join(b"k%d=v" % i for i in range(1000)), "application/x-www-form-urlencoded",
                   max_bytes=100_000)


def test_signed_but_malformed_fields_are_invalid_without_echoing_values(checker):
    for change in ({"MessageSid": "SMnot-a-sid"}, {"NumMedia": "many"}, {"MessageSid": None},
                   {"NumMedia": "99"}):
        body, headers = signed("/twilio/sms", payload("sms_inbound", **change))
        with pytest.raises(InvalidPayload) as err:
            parse(SmsWebhook, "/twilio/sms", body, headers, checker)
        assert err.value.status == 400
        assert "not-a-sid" not in err.value.public and "many" not in err.value.public


def test_empty_and_long_bodies_and_control_characters_pass_the_parser(checker):
    # Empty and over-long bodies are answered by the SMS channel (TwiML), so the parser lets them through.
    for text in ("", "x" * 5000):
        body, headers = signed("/twilio/sms", payload("sms_inbound", Body=text))
        assert parse(SmsWebhook, "/twilio/sms", body, headers, checker).body == text
    body, headers = signed("/twilio/sms", payload("sms_inbound", Body="Hallo\x00Welt\x1b!"))
    assert parse(SmsWebhook, "/twilio/sms", body, headers, checker).body == "Hallo Welt !"


def test_repeated_keys_are_signed_as_twilio_signs_them(checker):
    items = list(payload("sms_inbound").items()) + [("Body", "zweiter Wert")]
    body = urlencode(items).encode()
    signature = sign(PUBLIC_URL + "/twilio/sms", MultiDict(items))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
    sms = parse(SmsWebhook, "/twilio/sms", body, headers, checker)
    assert sms.body.startswith("Ich brauche")  # the first value


def test_every_error_is_a_webhook_error_with_a_status():
    for cls in (TooLarge, NotAForm, NotUtf8, BadSignature, WrongAccount, InvalidPayload):
        assert issubclass(cls, WebhookError) and 400 <= cls.status < 500


def test_fixture_sids_look_like_twilio_sids():
    import json

    for path in FIXTURES.glob("*.json"):
        data = json.loads(path.read_text())
        for key in ("MessageSid", "CallSid", "AccountSid"):
            if key in data:
                assert len(data[key]) == 34, path.name
    assert new_sid("SM").startswith("SM") and len(new_sid("SM")) == 34
