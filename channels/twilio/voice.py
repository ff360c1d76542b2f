"""The German speech menu of the phone channel, as pure functions from the call's state to TwiML.

One method per step; the webhook ``POST /twilio/voice/<step>`` calls it with what the hub keeps of the
call (:class:`CallContext`) and what the caller said or typed, and gets a :class:`Turn`: the TwiML to
answer and what the hub must store before answering (the concern, the place, the outcome, an SMS with
the details, a callback). Nothing here touches the database or the network, so every path is tested
by feeding it transcripts.

The flow::

    greeting ─► concern ──(service certain, place known)──────────────► answer ─► details (SMS? 1/ja)
                   │ (service certain, no place)                           ▲
                   ├──► place (speech, or postcode by keypad) ─────────────┘
                   │ (not certain / nothing heard twice)
                   └──► menu: in service hours 1/"Mitarbeiter" ─► transfer (<Enqueue> or <Dial>)
                              always 2/"Rückruf" ─► callback (confirm the number, or type another)

The automated answer is given at any hour; only the transfer depends on the ``[sla]`` service hours,
outside which the menu says them. Every step retries twice at most, then moves on: no caller is kept
in a loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any

from channels.twilio.answer import (
    DAY_NAMES,
    Answer,
    direct_answer,
    route_text,
    spoken_digits,
    spoken_time,
    within_working_hours,
)
from hub.queue.requests import normalise_phone
from hub.queue.routing import route_cache

# -- TwiML -----------------------------------------------------------------------------------------------------
# Every <Gather> listens for speech *and* keys (input="speech dtmf") in [twilio] voice_language (Twilio's
# default would be en-US), always with an integer speechTimeout (Twilio refuses "auto" once a speechModel
# is set: warning 13335), and posts to an absolute action URL under public_url, so a proxy's path prefix
# survives. actionOnEmptyResult makes Twilio post silence too, and a <Redirect> after the <Gather> (counted
# as a try) catches the case where it does not: the menu always decides what happens next.
# The documents are written as strings, byte for byte what twilio's VoiceResponse writes (ElementTree's
# escaping, attributes sorted; tests/channels/twilio/test_twilio_voice_twiml.py compares them on hostile
# texts): its element tree was a sixth of a call's webhook.
_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def xml_text(value: str) -> str:
    """Character data escaped as ElementTree does (``&``, ``<``, ``>``): every TwiML document of the hub
    (the menu's here, the SMS answers' in :mod:`channels.twilio.inbound`)."""
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    return value


def xml_attribute(value: str) -> str:
    """An attribute value escaped as ElementTree does (also quotes and line breaks, which would not survive)."""
    value = xml_text(value)
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "\r" in value:
        value = value.replace("\r", "&#13;")
    if "\n" in value:
        value = value.replace("\n", "&#10;")
    if "\t" in value:
        value = value.replace("\t", "&#09;")
    return value


def _open_tag(name: str, attrs: dict[str, object] | None = None) -> str:
    """``<name a="…" b="…"`` (not closed): attributes sorted by name, ``None`` left out, booleans as
    ``true``/``false``, as twilio writes them."""
    if not attrs:
        return "<" + name
    return "<" + name + "".join(
        f' {key}="{xml_attribute(("true" if value else "false") if isinstance(value, bool) else str(value))}"'
        for key, value in sorted(attrs.items()) if value is not None)


def _element(name: str, attrs: dict[str, object] | None = None, body: str = "") -> str:
    """One element; ``body`` is markup already escaped (:func:`xml_text` for words); empty: ``<name />``."""
    start = _open_tag(name, attrs)
    return f"{start}>{body}</{name}>" if body else start + " />"


def _response(body: str) -> str:
    """The whole document: the declaration and ``<Response>`` around ``body`` (``<Response />`` when empty)."""
    return f"{_HEAD}<Response>{body}</Response>" if body else _HEAD + "<Response />"


@dataclass(frozen=True)
class VoiceStyle:
    """How the menu speaks and listens (from ``[twilio]``)."""

    language: str = "de-DE"
    voice: str = ""
    speech_model: str = "phone_call"
    speech_timeout: int = 2
    timeout: int = 6

    @cached_property
    def _say_open(self) -> str:
        return _open_tag("Say", {"language": self.language, "voice": self.voice or None}) + ">"

    def say(self, text: str) -> str:
        """``<Say>`` of ``text`` in the menu's language and voice."""
        if not text:
            return self._say_open[:-1] + " />"
        return f"{self._say_open}{xml_text(text)}</Say>"

    def says(self, lines: str | Sequence[str]) -> str:
        return "".join(self.say(line) for line in ([lines] if isinstance(lines, str) else lines))


def gather(style: VoiceStyle, action: str, prompt: str | Sequence[str], *, num_digits: int | None = None,
           finish_on_key: str | None = None, hints: str | None = None, retry: str | None = None) -> str:
    """Say ``prompt`` while listening; the answer (or silence) goes to ``action``, else to ``retry``."""
    body = style.says(prompt)
    start, end = _gather_frame(style, action, num_digits, finish_on_key, hints, retry or action)
    return f"{start}>{body}</Gather>{end}" if body else f"{start} />{end}"


@lru_cache(maxsize=256)
def _gather_frame(style: VoiceStyle, action: str, num_digits: int | None, finish_on_key: str | None,
                  hints: str | None, retry: str) -> tuple[str, str]:
    """What surrounds a <Gather>'s prompt: the same for every call at a step (so written once per step)."""
    attrs: dict[str, object] = {
        "input": "speech dtmf",
        "language": style.language,
        "action": action,
        "method": "POST",
        "timeout": style.timeout,
        "speechTimeout": int(style.speech_timeout),
        "actionOnEmptyResult": True,
        "speechModel": style.speech_model or None,
        "numDigits": num_digits,
        "finishOnKey": finish_on_key,
        "hints": hints or None,
    }
    redirect = _element("Redirect", {"method": "POST"}, xml_text(retry))
    return _HEAD + "<Response>" + _open_tag("Gather", attrs), redirect + "</Response>"


def goodbye(style: VoiceStyle, lines: str | Sequence[str]) -> str:
    """Say ``lines`` and hang up."""
    return _response(style.says(lines) + "<Hangup />")


def to_queue(style: VoiceStyle, line: str, queue: str, action: str) -> str:
    """Say ``line`` and put the caller into the agents' queue; ``action`` hears how they left it."""
    return _response(style.say(line)
                          + _element("Enqueue", {"action": action, "method": "POST"}, xml_text(queue)))


def dial(style: VoiceStyle, line: str, number: str, action: str, caller_id: str | None = None,
         timeout: int = 30) -> str:
    """Say ``line`` and dial an agent's number; ``action`` hears whether someone answered."""
    attrs = {"action": action, "method": "POST", "timeout": timeout, "callerId": caller_id or None}
    return _response(style.say(line)
                          + _element("Dial", attrs, _element("Number", None, xml_text(number))))


def say_only(style: VoiceStyle, lines: str | Sequence[str]) -> str:
    """Say ``lines`` without hanging up (Twilio ends the call after the last verb)."""
    return _response(style.says(lines))


# -- the menu --------------------------------------------------------------------------------------------------

CONCERN, PLACE, DETAILS, MENU, CALLBACK, NUMBER, TRANSFER, DONE = (
    "concern", "place", "details", "menu", "callback", "number", "transfer", "done")
STEPS = (CONCERN, PLACE, DETAILS, MENU, CALLBACK, NUMBER, TRANSFER)

ANSWERED, CALLBACK_REQUESTED, TRANSFERRED, ABANDONED = "answered", "callback", "transferred", "abandoned"
OUTCOMES = (ANSWERED, CALLBACK_REQUESTED, TRANSFERRED, ABANDONED)

MAX_TRIES = 2  # a step is asked at most this many times more before the menu moves on

_YES = frozenset({"ja", "jawohl", "genau", "richtig", "korrekt", "stimmt", "gerne", "gern", "okay", "ok", "bitte",
                  "jo", "jep", "yes", "eins"})
_NO = frozenset({"nein", "nee", "ne", "nö", "falsch", "nicht", "andere", "anderen", "anders", "no", "zwei"})
_AGENT = frozenset({"mitarbeiter", "mitarbeiterin", "mitarbeitern", "mensch", "person", "verbinden", "beratung",
                    "berater", "beraterin", "sprechen", "agent", "persönlich", "eins"})
_CALLBACK = frozenset({"rückruf", "zurückrufen", "zurückruf", "anrufen", "rückrufen", "zurück", "zwei"})
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_DAYS = ("montags", "dienstags", "mittwochs", "donnerstags", "freitags", "samstags", "sonntags")


def words(text: str) -> set[str]:
    """The lower-case words of a transcript (punctuation and digits dropped)."""
    return {w.lower() for w in _WORD.findall(text or "")}


_NUMBERS = re.compile(r"\d+")


def spoken_key(speech: str) -> str:
    """The key a caller said rather than pressed: the recogniser writes a spoken "eins" as "1" (the menu says
    "Drücken Sie die 1"). Only a transcript whose one number is a single digit counts."""
    numbers = _NUMBERS.findall(speech or "")
    return numbers[0] if len(numbers) == 1 and len(numbers[0]) == 1 else ""


def yes_no(speech: str, digits: str) -> bool | None:
    """``1`` / "ja" → True, ``2`` / "nein" → False, anything else None. Keys win over words, words over a
    spoken key."""
    key = digits.strip("#*")[:1]
    if key == "1":
        return True
    if key == "2":
        return False
    said = words(speech)
    if said & _NO:
        return False
    if said & _YES:
        return True
    return {"1": True, "2": False}.get(spoken_key(speech))


def menu_choice(speech: str, digits: str) -> str | None:
    """``1`` / "Mitarbeiter" → ``agent``, ``2`` / "Rückruf" → ``callback``, else None. Keys win over words,
    words over a spoken key."""
    key = digits.strip("#*")[:1]
    if key == "1":
        return "agent"
    if key == "2":
        return "callback"
    said = words(speech)
    if said & _CALLBACK:
        return "callback"
    if said & _AGENT:
        return "agent"
    return {"1": "agent", "2": "callback"}.get(spoken_key(speech))


def service_hours_text(calendar: Any) -> str:
    """The hub's service hours as a voice says them: ``montags bis freitags von 8 bis 18 Uhr``."""
    days = sorted(calendar.open_days)
    runs: list[tuple[int, int]] = []
    for day in days:
        if runs and day == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    parts = [(_DAYS[a] if a == b else f"{_DAYS[a]} bis {_DAYS[b]}") for a, b in runs]
    when = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " und " + parts[-1]
    start = calendar.start.strftime("%H:%M")
    end = "24:00" if calendar.end.hour == 0 and calendar.end.minute == 0 else calendar.end.strftime("%H:%M")
    # "von 8 bis 18 Uhr", but "von 8 Uhr 30 bis 18 Uhr": the first "Uhr" only where minutes follow.
    opening = spoken_time(start).removesuffix(" Uhr")
    return f"{when} von {opening} bis {spoken_time(end)}"


@dataclass(frozen=True)
class CallContext:
    """What the hub keeps of a call between two webhooks."""

    now: datetime  # timezone-aware
    caller: str | None = None  # the caller's number in E.164, None if withheld or not a number
    concern: str = ""  # what the caller said the call is about
    place: str | None = None  # the place the caller named or typed
    pending_number: str | None = None  # the callback number awaiting confirmation
    sms_allowed: bool = True  # the caller's number may get an SMS (a number, and not opted out)
    tries: int = 0  # how often the current step was asked already


@dataclass(frozen=True)
class Turn:
    """The answer to one webhook and what the hub must store before it sends it."""

    twiml: str
    step: str  # what the next webhook of this call answers
    said: tuple[str, ...] = ()  # what the menu says in this turn (for the call's transcript)
    heard: str | None = None  # what the caller said or typed in this turn
    concern: str | None = None  # a new concern to store (None: unchanged)
    place: str | None = None  # a new place to store (None: unchanged)
    route: Any = None  # the knowledge base's decision of this turn, if any
    answer: Answer | None = None  # the answer given in this turn
    answer_text: str | None = None  # the answer as the menu spoke it (recorded in the case)
    outcome: str | None = None  # answered / callback / transferred, once decided
    send_details: bool = False  # put the answer's details into the outbox as an SMS to the caller
    callback_number: str | None = None  # confirmed: create the callback case for this number
    pending_number: str | None = None  # a number the next step asks the caller to confirm
    extra: dict = field(default_factory=dict)


class VoiceFlow:
    """The menu for one hub: its style, its base URL, the knowledge base and the service calendar."""

    def __init__(self, *, base_url: str, style: VoiceStyle, kb: Any, calendar: Any,
                 transfer: tuple[str, str] | None = None, caller_id: str | None = None,
                 confident_score: float | None = None,
                 is_holiday: Callable[[Any], bool] | None = None, response_hours: float = 24) -> None:
        self.base_url = base_url.rstrip("/")
        self.style = style
        self.kb = kb
        self.calendar = calendar
        self.transfer = transfer
        self.caller_id = caller_id
        self.confident_score = confident_score if confident_score is not None else kb.settings.confident_score
        self.is_holiday = is_holiday if is_holiday is not None else getattr(calendar, "is_holiday", None)
        self.response_hours = response_hours  # [sla] first_response_hours: what the callback promises
        self._greeting: Turn | None = None

    # -- helpers -------------------------------------------------------------------------------------

    def url(self, step: str, tries: int = 0) -> str:
        """The absolute action URL of ``step`` (with the retry count)."""
        return f"{self.base_url}/twilio/voice/{step}" + (f"?try={tries}" if tries else "")

    def _ask(self, step: str, lines: list[str], tries: int = 0, **kwargs: Any) -> tuple[str, tuple[str, ...]]:
        # The fallback after the <Gather> counts as a try, so that even a Twilio that ignored
        # actionOnEmptyResult could not keep a caller in a loop.
        doc = gather(self.style, self.url(step, tries), lines, retry=self.url(step, tries + 1), **kwargs)
        return doc, tuple(lines)

    def _bye(self, lines: list[str]) -> tuple[str, tuple[str, ...]]:
        return goodbye(self.style, lines), tuple(lines)

    def _local(self, now: datetime) -> datetime:
        tz = getattr(self.calendar, "tz", None)
        return now.astimezone(tz) if tz is not None else now

    def in_service_hours(self, now: datetime) -> bool:
        return bool(self.calendar.is_working_time(now))

    # -- steps ---------------------------------------------------------------------------------------

    def greeting(self, ctx: CallContext | None = None) -> Turn:
        """The first answer to a call: who answers, and the question what it is about (the same for every
        call, so written once)."""
        if self._greeting is None:
            self._greeting = self._greet()
        return self._greeting

    def _greet(self) -> Turn:
        doc, said = self._ask(CONCERN, [
            "Guten Tag, hier ist das Bürgertelefon.",
            "Bitte sagen Sie in einem Satz, worum es geht, und nennen Sie Ihren Wohnort. "
            "Zum Beispiel: Personalausweis beantragen in Norderstedt.",
        ])
        return Turn(doc, CONCERN, said)

    def concern(self, ctx: CallContext, speech: str, digits: str = "") -> Turn:
        """The caller said what the call is about (or nothing)."""
        text = " ".join(speech.split())
        if not text and digits.strip("#*"):  # keys instead of words: the caller wants the menu
            return self.menu_prompt(ctx, heard=digits)
        if not text:
            if ctx.tries < MAX_TRIES:
                doc, said = self._ask(CONCERN, ["Entschuldigung, das habe ich nicht verstanden. Bitte sagen Sie "
                                                "noch einmal in einem Satz, worum es geht."], ctx.tries + 1)
                return Turn(doc, CONCERN, said, heard=digits or None)
            return self.menu_prompt(ctx, heard=None, lead="Ich konnte Sie leider nicht verstehen.")
        # What follows a concern depends on its words, the day (today's hours), whether the agents are there
        # and whether an SMS may be offered, and on what the knowledge base knows: it is kept with the
        # knowledge base's decisions (hub.queue.routing.RouteCache), so a concern many callers have ("ich
        # brauche einen neuen Personalausweis") is answered once a day, until the catalogue changes.
        offer_sms = bool(ctx.sms_allowed and ctx.caller)
        key = ("ivr-concern", self, text, self._local(ctx.now).date(), self.in_service_hours(ctx.now), offer_sms)
        return route_cache(self.kb).remember(key, lambda: self._after_route(
            replace(ctx, concern=text, tries=0), route_text(self.kb, text), heard=text, concern=text))

    def place(self, ctx: CallContext, speech: str, digits: str = "") -> Turn:
        """The caller named the place, or typed its postcode."""
        typed = digits.strip("#*")
        value = typed if typed else " ".join(speech.split())
        if typed and not re.fullmatch(r"\d{5}", typed):
            value = ""  # not a postcode: ask again
        if not value:
            if ctx.tries < MAX_TRIES:
                return self._ask_place(ctx, ctx.tries + 1, heard=digits or None,
                                       lead="Entschuldigung, das habe ich nicht verstanden.")
            return self.menu_prompt(ctx, heard=digits or None)
        route = self.kb.route(ctx.concern, value)
        if route.authority is None and route.service is not None and ctx.tries < MAX_TRIES:
            if route.location_candidates:
                return self._ask_place(ctx, ctx.tries + 1, heard=value, place=value, route=route,
                                       lead="Diese Angabe passt zu mehreren Orten mit verschiedenen Ämtern.",
                                       name_only=True)
            if route.location is None:
                return self._ask_place(ctx, ctx.tries + 1, heard=value, place=value, route=route,
                                       lead="Diesen Ort habe ich leider nicht gefunden.")
        return self._after_route(replace(ctx, place=value), route, heard=value, place=value, ask_place=False)

    def _ask_place(self, ctx: CallContext, tries: int, *, heard: str | None, lead: str = "", place: str | None = None,
                   route: Any = None, name_only: bool = False) -> Turn:
        question = ("Bitte nennen Sie den Namen Ihres Wohnorts." if name_only else
                    "In welchem Ort wohnen Sie? Sagen Sie den Ortsnamen, oder tippen Sie die fünfstellige "
                    "Postleitzahl ein.")
        lines = [line for line in (lead, question) if line]
        doc, said = self._ask(PLACE, lines, tries, num_digits=5, finish_on_key="#")
        return Turn(doc, PLACE, said, heard=heard, place=place, route=route)

    def _after_route(self, ctx: CallContext, route: Any, *, heard: str, concern: str | None = None,
                     place: str | None = None, ask_place: bool = True) -> Turn:
        local = self._local(ctx.now)
        answer = direct_answer(route, local, self.is_holiday)
        if answer is not None:
            return self._answer(ctx, answer, route, heard=heard, concern=concern, place=place)
        certain = route.service is not None and route.confidence >= self.confident_score
        if ask_place and certain and route.authority is None and route.location is None:
            turn = self._ask_place(ctx, 0, heard=heard, route=route,
                                   lead=f"Es geht um: {route.service.name}. Dafür kommt es auf Ihren Wohnort an.")
            return replace(turn, concern=concern)
        if ask_place and certain and route.authority is None and route.location_candidates:
            turn = self._ask_place(ctx, 0, heard=heard, route=route, name_only=True,
                                   lead=f"Es geht um: {route.service.name}. Der genannte Ort ist nicht eindeutig.")
            return replace(turn, concern=concern)
        turn = self.menu_prompt(ctx, heard=heard, lead="Dazu kann ich Ihnen leider nicht sofort eine sichere "
                                                       "Auskunft geben.")
        return replace(turn, concern=concern, place=place, route=route)

    def answer_lines(self, answer: Answer) -> list[str]:
        """The answer as the menu speaks it: service, office, phone digit by digit, today's hours."""
        lines = [f"Es geht um: {answer.service}.", f"Zuständig ist: {answer.office}."]
        if answer.phone:
            lines.append(f"Die Telefonnummer lautet: {spoken_digits(answer.phone)}.")
        hours = answer.hours
        if hours.known:
            if hours.today:
                spans = " und ".join(f"von {spoken_time(a)} bis {spoken_time(b)}" for a, b in hours.today)
                lines.append(f"Heute ist dort geöffnet {spans}.")
            else:
                closed = "Heute ist dort Feiertag und geschlossen." if hours.holiday else "Heute ist dort geschlossen."
                if hours.next_day:
                    spans = " und ".join(f"von {spoken_time(a)} bis {spoken_time(b)}" for a, b in hours.next_spans)
                    closed += f" Geöffnet ist wieder am {DAY_NAMES[hours.next_day]} {spans}."
                lines.append(closed)
        return lines

    def _answer(self, ctx: CallContext, answer: Answer, route: Any, *, heard: str, concern: str | None,
                place: str | None) -> Turn:
        lines = self.answer_lines(answer)
        text = " ".join(lines)
        if ctx.sms_allowed and ctx.caller:
            lines.append("Möchten Sie die Einzelheiten per SMS? Dann drücken Sie die 1 oder sagen Sie ja.")
            doc, said = self._ask(DETAILS, lines, num_digits=1, hints="ja, nein")
            return Turn(doc, DETAILS, said, heard=heard, concern=concern, place=place, route=route, answer=answer,
                        answer_text=text, outcome=ANSWERED)
        lines.append("Vielen Dank für Ihren Anruf. Auf Wiederhören.")
        doc, said = self._bye(lines)
        return Turn(doc, DONE, said, heard=heard, concern=concern, place=place, route=route, answer=answer,
                    answer_text=text, outcome=ANSWERED)

    def details(self, ctx: CallContext, speech: str, digits: str = "") -> Turn:
        """The caller answered whether they want the details by SMS."""
        heard = digits or speech or None
        if yes_no(speech, digits) is True and ctx.sms_allowed and ctx.caller:
            doc, said = self._bye(["Die SMS mit den Einzelheiten ist unterwegs.",
                                   "Vielen Dank für Ihren Anruf. Auf Wiederhören."])
            return Turn(doc, DONE, said, heard=heard, send_details=True)
        doc, said = self._bye(["Vielen Dank für Ihren Anruf. Auf Wiederhören."])
        return Turn(doc, DONE, said, heard=heard)

    def menu_prompt(self, ctx: CallContext, *, heard: str | None, lead: str = "", tries: int = 0) -> Turn:
        """Offer an agent (in service hours, when a transfer is configured) and always a callback."""
        lines = [lead] if lead else []
        if self.transfer is not None and self.in_service_hours(ctx.now):
            lines.append("Ich verbinde Sie gern mit einer Mitarbeiterin oder einem Mitarbeiter: Drücken Sie die 1 "
                         "oder sagen Sie Mitarbeiter.")
        else:
            lines.append(f"Unsere Mitarbeiterinnen und Mitarbeiter erreichen Sie {service_hours_text(self.calendar)}.")
        lines.append("Wir können Sie auch zurückrufen: Drücken Sie die 2 oder sagen Sie Rückruf.")
        doc, said = self._ask(MENU, lines, tries, num_digits=1, hints="Mitarbeiter, Rückruf")
        return Turn(doc, MENU, said, heard=heard)

    def menu(self, ctx: CallContext, speech: str, digits: str = "") -> Turn:
        """The caller chose an agent or a callback (or nothing)."""
        heard = digits or speech or None
        choice = menu_choice(speech, digits)
        if choice == "agent" and self.transfer is not None and self.in_service_hours(ctx.now):
            return self._transfer(heard)
        if choice == "agent":
            turn = self.menu_prompt(ctx, heard=heard, tries=ctx.tries + 1,
                                    lead="Im Moment ist leider niemand erreichbar.")
            return turn if ctx.tries < MAX_TRIES else self._callback_offer(ctx, heard)
        if choice == "callback":
            return self._callback_offer(ctx, heard)
        if ctx.tries < MAX_TRIES:
            return self.menu_prompt(ctx, heard=heard, tries=ctx.tries + 1,
                                    lead="Entschuldigung, das habe ich nicht verstanden.")
        doc, said = self._bye([f"Sie erreichen uns {service_hours_text(self.calendar)}. Auf Wiederhören."])
        return Turn(doc, DONE, said, heard=heard)

    def _transfer(self, heard: str | None) -> Turn:
        assert self.transfer is not None
        kind, target = self.transfer
        line = "Einen Moment bitte, ich verbinde Sie."
        if kind == "queue":
            doc = to_queue(self.style, line, target, self.url(TRANSFER))
        else:
            doc = dial(self.style, line, target, self.url(TRANSFER), caller_id=self.caller_id)
        return Turn(doc, TRANSFER, (line,), heard=heard, outcome=TRANSFERRED)

    def transferred(self, ctx: CallContext, result: str) -> Turn:
        """How the transfer ended (``QueueResult`` of <Enqueue>, ``DialCallStatus`` of <Dial>).

        Connected (``bridged``, ``completed``, ``answered``) or the caller hung up: the call is over. Nobody
        answered, the queue was full or failed: the caller gets the callback offer instead.
        """
        if result in ("bridged", "completed", "answered", "hangup", "redirected", "leave"):
            return Turn(say_only(self.style, []), DONE)
        turn = self._callback_offer(ctx, None, lead="Leider ist gerade niemand frei.")
        return replace(turn, outcome=None, extra={"transfer_failed": result or "unknown"})

    def _callback_offer(self, ctx: CallContext, heard: str | None, lead: str = "") -> Turn:
        if ctx.caller:
            lines = [lead] if lead else []
            lines.append(f"Wir rufen Sie zurück unter der Nummer {spoken_digits(_national(ctx.caller))}. "
                         "Ist das richtig? Drücken Sie die 1 oder sagen Sie ja. Für eine andere Nummer drücken Sie "
                         "die 2.")
            doc, said = self._ask(CALLBACK, lines, num_digits=1, hints="ja, nein")
            return Turn(doc, CALLBACK, said, heard=heard, pending_number=ctx.caller)
        return self._ask_number(0, heard, lead=lead)

    def _ask_number(self, tries: int, heard: str | None, lead: str = "") -> Turn:
        lines = [lead] if lead else []
        lines.append("Bitte tippen Sie Ihre Rückrufnummer mit Vorwahl ein und drücken Sie danach die Raute-Taste.")
        doc, said = self._ask(NUMBER, lines, tries, finish_on_key="#")
        return Turn(doc, NUMBER, said, heard=heard)

    def callback(self, ctx: CallContext, speech: str, digits: str = "") -> Turn:
        """The caller confirmed the callback number (or wants another)."""
        heard = digits or speech or None
        answer = yes_no(speech, digits)
        if answer is True and ctx.pending_number:
            doc, said = self._bye([f"Vielen Dank. Wir rufen Sie {within_working_hours(self.response_hours)} zurück.",
                                   "Auf Wiederhören."])
            return Turn(doc, DONE, said, heard=heard, outcome=CALLBACK_REQUESTED,
                        callback_number=ctx.pending_number)
        if answer is False or not ctx.pending_number:
            return self._ask_number(0, heard)
        if ctx.tries < MAX_TRIES:
            lines = ["Entschuldigung, das habe ich nicht verstanden.",
                     f"Ist die Nummer {spoken_digits(_national(ctx.pending_number))} richtig? Drücken Sie die 1 "
                     "für ja oder die 2 für eine andere Nummer."]
            doc, said = self._ask(CALLBACK, lines, ctx.tries + 1, num_digits=1, hints="ja, nein")
            return Turn(doc, CALLBACK, said, heard=heard, pending_number=ctx.pending_number)
        return self._ask_number(0, heard)

    def number(self, ctx: CallContext, speech: str, digits: str = "") -> Turn:
        """The caller typed a callback number."""
        typed = digits.strip("#*")
        try:
            number = normalise_phone(typed) if typed else None
        except ValueError:
            number = None
        if number is not None:
            lines = [f"Sie haben eingegeben: {spoken_digits(_national(number))}. Ist das richtig? Drücken Sie die 1 "
                     "oder sagen Sie ja. Für eine andere Nummer drücken Sie die 2."]
            doc, said = self._ask(CALLBACK, lines, num_digits=1, hints="ja, nein")
            return Turn(doc, CALLBACK, said, heard=typed, pending_number=number)
        if ctx.tries < MAX_TRIES:
            return self._ask_number(ctx.tries + 1, typed or None, lead="Diese Nummer ist leider nicht vollständig.")
        doc, said = self._bye(["Die Nummer konnte ich leider nicht aufnehmen. Bitte rufen Sie uns "
                               f"{service_hours_text(self.calendar)} wieder an. Auf Wiederhören."])
        return Turn(doc, DONE, said, heard=typed or None)

    def handle(self, step: str, ctx: CallContext, speech: str = "", digits: str = "") -> Turn:
        """Dispatch a gather result of ``step`` (one of :data:`STEPS` except ``transfer``)."""
        handler = {CONCERN: self.concern, PLACE: self.place, DETAILS: self.details, MENU: self.menu,
                   CALLBACK: self.callback, NUMBER: self.number}.get(step)
        if handler is None:
            raise KeyError(step)
        return handler(ctx, speech, digits)


def _national(number: str) -> str:
    """``+4915112345678`` → ``015112345678``: how a German caller knows their own number."""
    return "0" + number[3:] if number.startswith("+49") else number
