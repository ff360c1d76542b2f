"""Property tests (hypothesis) for the Twilio channels: the webhook parser, SMS texts and the phone menu.

The parser is a pure function (raw body + headers → payload or WebhookError), so it is fuzzed directly:
never another exception, and what is signed round-trips. Bounded in examples so the suite stays fast.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio_support import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_URL, payload, signed

from channels.twilio import gsm7
from channels.twilio.answer import Answer, Hours
from channels.twilio.payload import (
    GatherWebhook,
    MessageStatusWebhook,
    SmsWebhook,
    VoiceWebhook,
    WebhookError,
    parse_webhook,
)
from channels.twilio.signature import SignatureChecker
from channels.twilio.sms import ack_text, answer_text, keyword, refusal

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
MODELS = (SmsWebhook, VoiceWebhook, GatherWebhook, MessageStatusWebhook)
CHECKER = SignatureChecker(AUTH_TOKEN, PUBLIC_URL)
FORM = "application/x-www-form-urlencoded"


def attempt(model, body, headers, url=PUBLIC_URL + "/twilio/sms"):
    try:
        result = parse_webhook(model, body, headers, url=url, checker=CHECKER, account_sid=ACCOUNT_SID,
                               route="/fuzz", max_bytes=65_536)
    except WebhookError as exc:
        assert 400 <= exc.status < 500 and exc.public
        return exc
    assert isinstance(result, model)
    return result


@FAST
@given(body=st.binary(max_size=2000), content_type=st.sampled_from([FORM, FORM + "; charset=utf-8", "text/plain",
                                                                    "", FORM + "; charset=latin1"]),
       signature=st.one_of(st.none(), st.text(max_size=60)), model=st.sampled_from(MODELS))
def test_arbitrary_bytes_never_crash_the_parser(body, content_type, signature, model):
    headers = {"Content-Type": content_type}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    outcome = attempt(model, body, headers)
    assert isinstance(outcome, WebhookError)  # nothing unsigned gets through


field_names = st.sampled_from(["Body", "NumMedia", "MediaUrl0", "MediaContentType0", "MessageSid", "From", "To",
                               "AccountSid", "NumSegments", "OptOutType", "CallSid", "CallStatus", "SpeechResult",
                               "Confidence", "Digits", "MessageStatus", "ErrorCode", "MessagingServiceSid",
                               "X", "Media"])


@FAST
@given(changes=st.dictionaries(field_names, st.one_of(st.text(max_size=80), st.integers(-5, 50).map(str)),
                               max_size=6),
       drop=st.lists(field_names, max_size=3),
       fixture=st.sampled_from(["sms_inbound", "mms_inbound", "voice_inbound", "voice_gather_speech",
                                "message_status_undelivered"]),
       model=st.sampled_from(MODELS))
def test_signed_forms_with_any_field_values_give_a_payload_or_a_clear_error(changes, drop, fixture, model):
    params = payload(fixture, **changes)
    for key in drop:
        params.pop(key, None)
    body, headers = signed("/twilio/sms", params)
    attempt(model, body, headers)


@FAST
@given(text=st.text(max_size=2000))
def test_any_body_text_round_trips(text):
    body, headers = signed("/twilio/sms", payload("sms_inbound", Body=text))
    sms = attempt(SmsWebhook, body, headers)
    assert isinstance(sms, SmsWebhook)
    assert len(sms.body) == len(text)  # control characters become spaces, nothing is dropped
    assert all(c == o or c == " " for c, o in zip(sms.body, text, strict=True))
    keyword(sms.body)
    refusal(sms.body, sms.num_media)


@FAST
@given(body=st.binary(max_size=400))
def test_signed_garbage_bodies_are_refused_cleanly(body):
    # A body that is not what was signed, but carries a signature of the recorded SMS.
    _, headers = signed("/twilio/sms", payload("sms_inbound"))
    attempt(SmsWebhook, urlencode(payload("sms_inbound")).encode() + b"&" + body, headers)


names = st.text(min_size=1, max_size=300).filter(lambda s: s.strip())


@FAST
@given(service=names, office=names, phone=st.one_of(st.none(), st.from_regex(r"\A[0-9 /+-]{3,25}\Z")),
       spans=st.lists(st.tuples(st.sampled_from(["08:00", "09:30", "13:00"]),
                                st.sampled_from(["12:00", "16:00", "18:30"])), max_size=3),
       segments=st.integers(1, 3))
def test_the_direct_answer_always_fits(service, office, phone, spans, segments):
    answer = Answer("s", service, "o", office, phone, Hours(True, tuple(spans)))
    text = answer_text(answer, segments)
    assert gsm7.segments(text) <= segments
    assert text


@FAST
@given(token=st.from_regex(r"\A[A-Za-z0-9_-]{16}\Z|\A[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}\Z"), service=st.one_of(st.none(), names), joined=st.booleans())
def test_acknowledgements_always_fit_and_keep_the_token(token, service, joined):
    text = ack_text(token, joined=joined, ask_place_for=service)
    assert gsm7.segments(text) <= 2 and token in text


@FAST
@given(text=st.text(max_size=500), n=st.integers(1, 4))
def test_truncate_always_fits(text, n):
    cut = gsm7.truncate(text, n)
    assert gsm7.segments(cut) <= n
    if gsm7.fits(text, n):
        assert cut == text


@pytest.fixture(scope="module")
def flow(kb):
    from channels.twilio.voice import VoiceFlow, VoiceStyle
    from hub.queue.sla import BusinessCalendar

    return VoiceFlow(base_url=PUBLIC_URL, style=VoiceStyle(), kb=kb, calendar=BusinessCalendar(),
                     transfer=("queue", "agents"))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(step=st.sampled_from(["concern", "place", "details", "menu", "callback", "number"]),
       speech=st.text(max_size=200), digits=st.from_regex(r"\A[0-9*#]{0,20}\Z"),
       tries=st.integers(0, 3), concern=st.text(max_size=100), caller=st.sampled_from([None, "+4915112345678"]),
       pending=st.sampled_from([None, "+494551123456"]), hour=st.integers(0, 23))
def test_the_menu_always_answers_valid_twiml(flow, step, speech, digits, tries, concern, caller, pending, hour):
    from channels.twilio.voice import STEPS, CallContext

    now = datetime(2026, 12, 1, hour, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    turn = flow.handle(step, CallContext(now=now, caller=caller, concern=concern, pending_number=pending,
                                         tries=tries), speech, digits)
    root = ET.fromstring(turn.twiml)
    assert root.tag == "Response"
    assert turn.step in STEPS or turn.step == "done"
    for gather in root.iter("Gather"):
        assert gather.get("speechTimeout", "").isdigit() and gather.get("language") == "de-DE"
    if turn.callback_number:
        assert turn.callback_number.startswith("+")


@FAST
@given(text=st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)),
       action=st.one_of(st.none(), st.just(""), st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
                        .map(lambda t: PUBLIC_URL + "/twilio/status?message_id=1&x=" + t)))
def test_the_sms_twiml_is_what_twilios_messaging_response_writes(text, action):
    from twilio.twiml.messaging_response import MessagingResponse

    from channels.twilio.inbound import message_twiml

    expected = MessagingResponse()
    if text:
        if action:
            expected.message(text, action=action, method="POST")
        else:
            expected.message(text)
    assert message_twiml(text, action) == expected.to_xml()


@FAST
@given(pairs=st.lists(st.tuples(st.text(max_size=12), st.text(max_size=30)), max_size=25),
       algorithm=st.sampled_from(["HMAC_SHA1", "HMAC_SHA256", "hmac_sha256"]))
def test_the_signature_is_the_one_twilios_validator_computes(pairs, algorithm):
    from multidict import MultiDict
    from twilio.request_validator import RequestValidator

    form = MultiDict(pairs)
    url = PUBLIC_URL + "/twilio/sms?x=1"
    twilios = RequestValidator(AUTH_TOKEN).compute_signature(url, form, algorithm)
    assert CHECKER.expected(url, form, algorithm) == twilios
    # The parser hands the checker the form's pairs as read (parse_webhook), not a multidict.
    assert CHECKER.expected(url, list(pairs), algorithm) == twilios


@FAST
@given(text=st.one_of(st.text(alphabet="ab=&+%2C3F8Ae9é€\x00 ", max_size=60), st.text(max_size=60),
                      st.lists(st.tuples(st.text(max_size=10), st.text(max_size=20)), max_size=10).map(urlencode)))
def test_the_form_is_read_as_parse_qsl_reads_it(text):
    from urllib.parse import parse_qsl

    from channels.twilio.payload import MAX_FIELDS, form_pairs

    def outcome(read):
        try:
            return read()
        except (UnicodeDecodeError, ValueError) as exc:
            return type(exc)

    expected = outcome(lambda: parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict",
                                         max_num_fields=MAX_FIELDS))
    assert outcome(lambda: form_pairs(text)) == expected


@FAST
@given(pairs=st.lists(st.tuples(st.sampled_from(["Body", "From", "To", "NumMedia", "x"]), st.text(max_size=10)),
                      max_size=12))
def test_a_repeated_field_counts_with_its_first_value(pairs):
    from multidict import MultiDict

    from channels.twilio.payload import first_values

    form = MultiDict(pairs)
    expected = {key: form.getone(key) for key in form}
    assert first_values(form) == expected
    assert first_values(list(pairs)) == expected


@FAST
@given(value=st.one_of(st.text(alphabet="+0123456789 -()٤", max_size=20),
                       st.from_regex(r"\+[0-9]{1,17}", fullmatch=True), st.text(max_size=20)))
def test_the_senders_number_is_what_the_queues_rule_makes_of_it(value):
    """``phone_or_none`` takes Twilio's E.164 numbers as they are; for them and anything else its answer is
    :func:`hub.queue.requests.normalise_phone`'s (None where that refuses, or for a withheld number)."""
    from channels.twilio.webhooks import WITHHELD, phone_or_none
    from hub.queue.requests import Contact, normalise_phone

    try:
        # The rule's whole way: a leading space (which it strips) passes by its shortcut for E.164 numbers.
        expected = normalise_phone(" " + value) if value else None
    except ValueError:
        expected = None
    assert phone_or_none(value) == (None if expected in WITHHELD else expected)
    if expected is not None:  # the queue's contact keeps what the channel normalised, as the rule makes it
        assert Contact(phone=expected).phone == expected == Contact(phone=" " + expected).phone
