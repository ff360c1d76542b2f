"""The phone menu's TwiML, written as strings, is byte for byte what twilio's ``VoiceResponse`` writes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.twiml.voice_response import Enqueue, VoiceResponse

from channels.twilio.voice import VoiceStyle, dial, gather, goodbye, say_only, to_queue

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Texts as hostile as a transcript can be once the parser has cleaned it (no control characters but tabs and
# line breaks, which attributes must escape), and no surrogates (not encodable).
words = st.text(st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters="\t\r\n"), max_size=40)
lines = st.lists(words, max_size=4)
styles = st.builds(VoiceStyle, language=st.sampled_from(["de-DE", "en-US"]),
                   voice=st.sampled_from(["", "Polly.Vicki", 'a"b&<c>']),
                   speech_model=st.sampled_from(["", "phone_call"]), speech_timeout=st.integers(0, 9),
                   timeout=st.integers(1, 30))


def _say(style, parent, text):
    kwargs = {"language": style.language}
    if style.voice:
        kwargs["voice"] = style.voice
    parent.say(text, **kwargs)


def reference_gather(style, action, prompt, *, num_digits=None, finish_on_key=None, hints=None, retry=None):
    """The menu's <Gather> as it was built with twilio's element tree."""
    response = VoiceResponse()
    kwargs: dict = {"input": "speech dtmf", "language": style.language, "action": action, "method": "POST",
                    "timeout": style.timeout, "speech_timeout": int(style.speech_timeout),
                    "action_on_empty_result": True}
    if style.speech_model:
        kwargs["speech_model"] = style.speech_model
    if num_digits is not None:
        kwargs["num_digits"] = num_digits
    if finish_on_key is not None:
        kwargs["finish_on_key"] = finish_on_key
    if hints:
        kwargs["hints"] = hints
    element = response.gather(**kwargs)
    for line in [prompt] if isinstance(prompt, str) else prompt:
        _say(style, element, line)
    response.redirect(retry or action, method="POST")
    return response.to_xml()


@FAST
@given(style=styles, action=words, prompt=st.one_of(words, lines), num_digits=st.sampled_from([None, 1, 5]),
       finish_on_key=st.sampled_from([None, "#", ""]), hints=st.sampled_from([None, "", "ja, nein"]),
       retry=st.one_of(st.none(), words))
def test_gather_is_what_voice_response_writes(style, action, prompt, num_digits, finish_on_key, hints, retry):
    expected = reference_gather(style, action, prompt, num_digits=num_digits, finish_on_key=finish_on_key,
                                hints=hints, retry=retry)
    written = gather(style, action, prompt, num_digits=num_digits, finish_on_key=finish_on_key, hints=hints,
                     retry=retry)
    assert written == expected
    assert ET.fromstring(written).tag == "Response"


@FAST
@given(style=styles, said=st.one_of(words, lines))
def test_goodbye_and_say_only_are_what_voice_response_writes(style, said):
    expected = VoiceResponse()
    for line in [said] if isinstance(said, str) else said:
        _say(style, expected, line)
    assert say_only(style, said) == expected.to_xml()
    expected.hangup()
    assert goodbye(style, said) == expected.to_xml()


@FAST
@given(style=styles, line=words, target=words, action=words, caller_id=st.one_of(st.none(), st.just(""), words),
       timeout=st.integers(1, 60))
def test_queue_and_dial_are_what_voice_response_writes(style, line, target, action, caller_id, timeout):
    expected = VoiceResponse()
    _say(style, expected, line)
    expected.append(Enqueue(target, action=action, method="POST"))
    assert to_queue(style, line, target, action) == expected.to_xml()
    expected = VoiceResponse()
    _say(style, expected, line)
    kwargs = {"action": action, "method": "POST", "timeout": timeout}
    if caller_id:
        kwargs["caller_id"] = caller_id
    expected.dial(**kwargs).number(target)
    assert dial(style, line, target, action, caller_id=caller_id, timeout=timeout) == expected.to_xml()
