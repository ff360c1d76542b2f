"""TwiML for the phone menu, built with twilio's own :class:`~twilio.twiml.voice_response.VoiceResponse`.

Every ``<Gather>`` listens for speech *and* keys (``input="speech dtmf"``) in ``[twilio] voice_language``
(Twilio's default would be en-US), always with an integer ``speechTimeout`` (Twilio refuses ``auto`` once a
``speechModel`` is set: warning 13335), and posts to an absolute action URL under ``public_url``, so a
proxy's path prefix survives. ``actionOnEmptyResult`` makes Twilio post silence too, and a ``<Redirect>``
after the ``<Gather>`` catches the case where it does not: the menu always decides what happens next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twilio.twiml.voice_response import VoiceResponse


@dataclass(frozen=True)
class VoiceStyle:
    """How the menu speaks and listens (from ``[twilio]``)."""

    language: str = "de-DE"
    voice: str = ""
    speech_model: str = "phone_call"
    speech_timeout: int = 2
    timeout: int = 6

    def say(self, parent, text: str) -> None:
        kwargs = {"language": self.language}
        if self.voice:
            kwargs["voice"] = self.voice
        parent.say(text, **kwargs)


def gather(style: VoiceStyle, action: str, prompt: str | Sequence[str], *, num_digits: int | None = None,
           finish_on_key: str | None = None, hints: str | None = None, retry: str | None = None) -> str:
    """Say ``prompt`` while listening; the answer (or silence) goes to ``action``, else to ``retry``."""
    response = VoiceResponse()
    kwargs: dict = {
        "input": "speech dtmf",
        "language": style.language,
        "action": action,
        "method": "POST",
        "timeout": style.timeout,
        "speech_timeout": int(style.speech_timeout),
        "action_on_empty_result": True,
    }
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
        style.say(element, line)
    response.redirect(retry or action, method="POST")
    return response.to_xml()


def goodbye(style: VoiceStyle, lines: str | Sequence[str]) -> str:
    """Say ``lines`` and hang up."""
    response = VoiceResponse()
    for line in [lines] if isinstance(lines, str) else lines:
        style.say(response, line)
    response.hangup()
    return response.to_xml()


def enqueue(style: VoiceStyle, line: str, queue: str, action: str) -> str:
    """Say ``line`` and put the caller into the agents' queue; ``action`` hears how they left it."""
    response = VoiceResponse()
    style.say(response, line)
    response.enqueue(queue, action=action, method="POST")
    return response.to_xml()


def dial(style: VoiceStyle, line: str, number: str, action: str, caller_id: str | None = None,
         timeout: int = 30) -> str:
    """Say ``line`` and dial an agent's number; ``action`` hears whether someone answered."""
    response = VoiceResponse()
    style.say(response, line)
    kwargs = {"action": action, "method": "POST", "timeout": timeout}
    if caller_id:
        kwargs["caller_id"] = caller_id
    element = response.dial(**kwargs)
    element.number(number)
    return response.to_xml()


def say_only(style: VoiceStyle, lines: str | Sequence[str]) -> str:
    """Say ``lines`` without hanging up (Twilio ends the call after the last verb)."""
    response = VoiceResponse()
    for line in [lines] if isinstance(lines, str) else lines:
        style.say(response, line)
    return response.to_xml()
