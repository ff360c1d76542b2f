"""The phone menu as pure functions: transcripts in, TwiML (parsed as XML) and what to store out."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from channels.twilio.voice import (
    ANSWERED,
    CALLBACK,
    CALLBACK_REQUESTED,
    CONCERN,
    DETAILS,
    DONE,
    MENU,
    NUMBER,
    PLACE,
    TRANSFER,
    TRANSFERRED,
    CallContext,
    VoiceFlow,
    VoiceStyle,
    menu_choice,
    service_hours_text,
    yes_no,
)
from hub.queue.sla import BusinessCalendar

BERLIN = ZoneInfo("Europe/Berlin")
TUESDAY_10 = datetime(2026, 12, 1, 10, 0, tzinfo=BERLIN)  # inside the hub's service hours
SATURDAY = datetime(2026, 12, 5, 11, 0, tzinfo=BERLIN)
CALLER = "+4915112345678"
BASE = "https://hub.example.de"


@pytest.fixture(scope="module")
def calendar():
    return BusinessCalendar()


@pytest.fixture()
def flow(kb, calendar):
    return VoiceFlow(base_url=BASE, style=VoiceStyle(voice="Polly.Vicki"), kb=kb, calendar=calendar,
                     transfer=("queue", "buergertelefon"))


def ctx(now=TUESDAY_10, **kw) -> CallContext:
    return CallContext(now=now, caller=kw.pop("caller", CALLER), **kw)


def xml(turn):
    root = ET.fromstring(turn.twiml)
    assert root.tag == "Response"
    return root


def spoken(turn) -> str:
    return " ".join(el.text or "" for el in xml(turn).iter("Say"))


def check_gathers(root):
    """Every <Gather>: speech and keys, German, an integer speechTimeout, an absolute action, Say in German."""
    gathers = list(root.iter("Gather"))
    for g in gathers:
        assert g.get("input") == "speech dtmf"
        assert g.get("language") == "de-DE"
        assert g.get("speechTimeout", "").isdigit(), "speechTimeout must be an integer with a speechModel"
        assert g.get("speechModel") == "phone_call"
        assert g.get("action", "").startswith(BASE + "/twilio/voice/")
        assert g.get("method") == "POST" and g.get("actionOnEmptyResult") == "true"
    for say in root.iter("Say"):
        assert say.get("language") == "de-DE" and say.get("voice") == "Polly.Vicki"
    return gathers


def test_greeting_asks_for_the_concern(flow):
    turn = flow.greeting(ctx())
    root = xml(turn)
    (gather,) = check_gathers(root)
    assert gather.get("action") == BASE + "/twilio/voice/concern"
    assert root[0].tag == "Gather" and root[1].tag == "Redirect"  # silence falls through to the action
    assert root[1].text == BASE + "/twilio/voice/concern?try=1"  # ... and counts as a try
    assert "Bürgertelefon" in spoken(turn) and turn.step == CONCERN and turn.outcome is None


def test_a_confident_concern_with_a_place_is_answered_and_sms_details_offered(flow):
    turn = flow.concern(ctx(), "Personalausweis beantragen in Norderstedt.")
    (gather,) = check_gathers(xml(turn))
    assert gather.get("action") == BASE + "/twilio/voice/details" and gather.get("numDigits") == "1"
    text = spoken(turn)
    assert "Personalausweis beantragen" in text and "Stadt Norderstedt" in text
    assert "Telefonnummer" in text and "Heute" in text and "drücken Sie die 1 oder sagen Sie ja" in text
    assert turn.step == DETAILS and turn.outcome == ANSWERED
    assert turn.answer.service_id == "sh-personalausweis" and turn.concern.startswith("Personalausweis")


def test_the_phone_is_read_digit_by_digit(flow, kb):
    turn = flow.concern(ctx(), "Personalausweis beantragen in Todesfelde")
    phone = turn.answer.phone
    digits = [c for c in phone if c.isdigit()]
    assert " ".join(digits) in spoken(turn).replace(",", "")


def test_a_concern_without_place_asks_for_the_place_by_speech_or_postcode(flow):
    turn = flow.concern(ctx(), "Ich brauche einen neuen Personalausweis")
    (gather,) = check_gathers(xml(turn))
    assert turn.step == PLACE and gather.get("action") == BASE + "/twilio/voice/place"
    assert gather.get("numDigits") == "5" and gather.get("finishOnKey") == "#"
    assert "Postleitzahl" in spoken(turn) and "Personalausweis beantragen" in spoken(turn)
    assert turn.concern == "Ich brauche einen neuen Personalausweis" and turn.outcome is None


def test_a_postcode_by_keypad_answers(flow):
    state = ctx(concern="Ich brauche einen neuen Personalausweis")
    turn = flow.place(state, "", "23826")  # Todesfelde, Bark, Fredesdorf: all Amt Leezen
    assert turn.outcome == ANSWERED and "Amt Leezen" in spoken(turn) and turn.place == "23826"
    turn = flow.place(state, "Norderstedt", "")
    assert turn.outcome == ANSWERED and "Norderstedt" in spoken(turn)


def test_an_ambiguous_postcode_asks_for_the_name_then_answers(flow):
    state = ctx(concern="Ich brauche einen neuen Personalausweis")
    turn = flow.place(state, "", "23845")  # nine places, three offices
    assert turn.step == PLACE and "mehreren Orten" in spoken(turn) and "Namen Ihres Wohnorts" in spoken(turn)
    assert xml(turn).find("Gather").get("action") == BASE + "/twilio/voice/place?try=1"
    turn = flow.place(CallContext(now=TUESDAY_10, caller=CALLER, concern=state.concern, tries=1), "Sülfeld")
    assert turn.outcome == ANSWERED


def test_an_unknown_place_is_asked_again_then_the_menu(flow):
    state = ctx(concern="Ich brauche einen neuen Personalausweis")
    turn = flow.place(state, "Xyzabc")
    assert turn.step == PLACE and "nicht gefunden" in spoken(turn)
    turn = flow.place(CallContext(now=TUESDAY_10, caller=CALLER, concern=state.concern, tries=2), "Xyzabc")
    assert turn.step == MENU
    assert flow.place(state, "", "123").step == PLACE  # not a postcode: asked again


def test_not_confident_in_hours_offers_an_agent_and_a_callback(flow):
    turn = flow.concern(ctx(), "Mein Nachbar hat einen lauten Hund")
    check_gathers(xml(turn))
    assert turn.step == MENU and turn.outcome is None
    text = spoken(turn)
    assert "Drücken Sie die 1" in text and "Drücken Sie die 2 oder sagen Sie Rückruf" in text
    assert turn.concern == "Mein Nachbar hat einen lauten Hund"  # stored for the callback case


def test_not_confident_outside_hours_says_the_hours_and_offers_a_callback(flow):
    turn = flow.concern(ctx(now=SATURDAY), "Mein Nachbar hat einen lauten Hund")
    text = spoken(turn)
    assert "montags bis freitags von 8 bis 18 Uhr" in text
    assert "Drücken Sie die 1" not in text and "Rückruf" in text
    # The agent is not offered, so asking for one outside hours does not transfer.
    assert flow.menu(ctx(now=SATURDAY), "Mitarbeiter").outcome is None


def test_the_automated_answer_is_given_at_any_hour(flow):
    turn = flow.concern(ctx(now=datetime(2026, 12, 6, 3, 0, tzinfo=BERLIN)), "Personalausweis in Norderstedt")
    assert turn.outcome == ANSWERED


def test_transfer_to_the_queue_or_a_number(flow, kb, calendar):
    turn = flow.menu(ctx(), "", "1")
    root = xml(turn)
    enqueue = root.find("Enqueue")
    assert enqueue is not None and enqueue.text == "buergertelefon"
    assert enqueue.get("action") == BASE + "/twilio/voice/transfer"
    assert turn.outcome == TRANSFERRED and turn.step == TRANSFER
    dial_flow = VoiceFlow(base_url=BASE, style=VoiceStyle(), kb=kb, calendar=calendar,
                          transfer=("number", "+494551951000"), caller_id="+4932221803115")
    root = xml(dial_flow.menu(ctx(), "Ich möchte mit einem Mitarbeiter sprechen"))
    dial = root.find("Dial")
    assert dial.find("Number").text == "+494551951000" and dial.get("callerId") == "+4932221803115"
    assert dial.get("action") == BASE + "/twilio/voice/transfer"


def test_no_transfer_configured_means_callback_only(kb, calendar):
    flow = VoiceFlow(base_url=BASE, style=VoiceStyle(), kb=kb, calendar=calendar, transfer=None)
    turn = flow.menu_prompt(ctx(), heard=None)
    assert "Drücken Sie die 1" not in spoken(turn) and "Rückruf" in spoken(turn)


def test_a_failed_transfer_offers_a_callback(flow):
    turn = flow.transferred(ctx(), "no-answer")
    assert turn.step == CALLBACK and "niemand frei" in spoken(turn) and turn.pending_number == CALLER
    assert turn.extra == {"transfer_failed": "no-answer"}
    assert flow.transferred(ctx(), "bridged").step == DONE
    assert flow.transferred(ctx(), "queue-full").step == CALLBACK


def test_callback_with_the_callers_number_confirmed(flow):
    turn = flow.menu(ctx(), "Rückruf bitte")
    assert turn.step == CALLBACK and turn.pending_number == CALLER
    assert "0 1 5 1 1 2 3 4 5 6 7 8" in spoken(turn)  # the national form, digit by digit
    done = flow.callback(ctx(pending_number=CALLER), "Ja, richtig.")
    assert done.outcome == CALLBACK_REQUESTED and done.callback_number == CALLER and done.step == DONE
    assert "24 Arbeitsstunden" in spoken(done) and xml(done).find("Hangup") is not None


def test_callback_to_another_number_typed_in(flow):
    turn = flow.callback(ctx(pending_number=CALLER), "", "2")
    assert turn.step == NUMBER and xml(turn).find("Gather").get("finishOnKey") == "#"
    typed = flow.number(ctx(), "", "04551123456")
    assert typed.step == CALLBACK and typed.pending_number == "+494551123456"
    done = flow.callback(ctx(pending_number="+494551123456"), "", "1")
    assert done.callback_number == "+494551123456" and done.outcome == CALLBACK_REQUESTED
    bad = flow.number(ctx(), "", "12")
    assert bad.step == NUMBER and "nicht vollständig" in spoken(bad)
    gave_up = flow.number(ctx(tries=2), "", "12")
    assert gave_up.step == DONE and gave_up.outcome is None


def test_a_withheld_number_is_asked_for(flow):
    turn = flow.menu(ctx(caller=None), "", "2")
    assert turn.step == NUMBER and "Rückrufnummer" in spoken(turn)


def test_silence_is_asked_again_twice_then_the_menu(flow):
    first = flow.concern(ctx(), "")
    assert first.step == CONCERN and xml(first).find("Gather").get("action").endswith("/concern?try=1")
    second = flow.concern(ctx(tries=1), "")
    assert second.step == CONCERN and second.twiml.count("try=2") >= 1
    third = flow.concern(ctx(tries=2), "")
    assert third.step == MENU and "nicht verstehen" in spoken(third)
    assert flow.menu(ctx(tries=2), "", "").step == DONE  # the menu, too, gives up in the end


def test_details_by_sms(flow):
    yes = flow.details(ctx(), "", "1")
    assert yes.send_details and yes.step == DONE and "SMS" in spoken(yes)
    assert flow.details(ctx(), "ja gerne").send_details
    no = flow.details(ctx(), "nein danke")
    assert not no.send_details and xml(no).find("Hangup") is not None
    assert not flow.details(ctx(sms_allowed=False), "", "1").send_details


def test_no_sms_offer_to_a_number_that_opted_out_or_is_withheld(flow):
    for state in (ctx(sms_allowed=False), ctx(caller=None)):
        turn = flow.concern(state, "Personalausweis beantragen in Norderstedt")
        assert turn.outcome == ANSWERED and turn.step == DONE and "SMS" not in spoken(turn)
        assert xml(turn).find("Hangup") is not None


def test_citizen_words_in_twiml_are_escaped(flow):
    turn = flow.concern(ctx(), "<Hangup/> & \"Personalausweis\" in Norderstedt")
    root = xml(turn)  # parses: nothing the caller said became markup
    assert root.find("Hangup") is None


def test_every_step_dispatches(flow):
    for step in ("concern", "place", "details", "menu", "callback", "number"):
        turn = flow.handle(step, ctx(concern="Personalausweis"), "", "")
        check_gathers(xml(turn))
    with pytest.raises(KeyError):
        flow.handle("transfer", ctx())


def test_words_for_yes_no_and_menu():
    assert yes_no("Ja, bitte.", "") is True and yes_no("Nein, bitte nicht", "") is False
    assert yes_no("", "1") is True and yes_no("ja", "2") is False and yes_no("Hm", "") is None
    assert menu_choice("Ich hätte gern einen Rückruf", "") == "callback"
    assert menu_choice("Mitarbeiterin bitte", "") == "agent" and menu_choice("", "2#") == "callback"
    assert menu_choice("Keine Ahnung", "") is None


def test_service_hours_text():
    assert service_hours_text(BusinessCalendar()) == "montags bis freitags von 8 bis 18 Uhr"
    from datetime import time

    cal = BusinessCalendar(open_days=(0, 1, 3, 5), start=time(7, 30), end=time(16))
    assert service_hours_text(cal) == "montags bis dienstags, donnerstags und samstags von 7 Uhr 30 bis 16 Uhr"


@pytest.mark.parametrize(("speech", "digits", "expected"), [
    ("1", "", True), ("Die 1.", "", True), ("2", "", False), ("ja", "", True), ("Nein, 1 Moment", "", False),
    ("Ja, 2 Stück", "", True), ("0151 2345", "", None), ("12", "", None), ("", "2", False), ("ja", "2", False)])
def test_yes_no_takes_a_spoken_key_after_the_words(speech, digits, expected):
    assert yes_no(speech, digits) is expected


@pytest.mark.parametrize(("speech", "expected"), [("1", "agent"), ("2", "callback"), ("Rückruf, 1", "callback"),
                                                  ("Mitarbeiter", "agent"), ("23", None), ("", None)])
def test_the_menu_takes_a_spoken_key_after_the_words(speech, expected):
    assert menu_choice(speech, "") == expected


def test_the_callback_promises_the_configured_first_response_time(kb, calendar):
    from channels.twilio.answer import within_working_hours

    assert within_working_hours(24) == "innerhalb von 24 Arbeitsstunden"
    assert within_working_hours(1) == "innerhalb einer Arbeitsstunde"
    assert within_working_hours(7.5) == "innerhalb von 7,5 Arbeitsstunden"
    four = VoiceFlow(base_url=BASE, style=VoiceStyle(), kb=kb, calendar=calendar, response_hours=4)
    done = four.handle(CALLBACK, ctx(pending_number=CALLER), "ja")
    assert done.outcome == CALLBACK_REQUESTED and "innerhalb von 4 Arbeitsstunden" in spoken(done)
