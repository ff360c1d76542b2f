"""What the hub answers to an SMS: keywords, the direct answer, the acknowledgement, refusals.

Pure functions of what intake and the knowledge base decided; :mod:`channels.twilio.inbound` calls them
after the request is committed and returns the text as TwiML ``<Response><Message>``.

* Keywords (the whole message, any case, trailing ``.``/``!`` ignored): ``STOP``, ``STOPP``, ``ABMELDEN``
  and Twilio's own opt-out words end SMS to the number; ``START`` (and Twilio's ``UNSTOP``, ``YES``) resume
  them; ``HILFE``/``HELP``/``INFO`` explain the service. Twilio's Advanced Opt-Out marks the keywords it
  recognised itself (``OptOutType``); then Twilio has answered already and the hub only records it.
* The direct answer — service, responsible office, its phone, today's hours — fits ``max_segments``
  segments (2 = 306 GSM-7 characters): typographic characters are replaced by GSM-7 twins, then the
  closing line goes, then the names are shortened; the phone and the hours stay.
* Otherwise an acknowledgement with the case token and what happens next.
"""

from __future__ import annotations

from twilio.twiml.messaging_response import MessagingResponse

from channels.twilio import gsm7
from channels.twilio.answer import DAY_SHORT, Answer, Hours, short_time, within_working_hours

#: Longest SMS body Twilio delivers (it joins the segments of a long SMS up to this).
MAX_BODY_CHARS = 1600

OPT_OUT_WORDS = frozenset({"STOP", "STOPP", "ABMELDEN", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HILFE", "HELP", "INFO"})

STOP, START, HELP = "stop", "start", "help"

TEXTS = {
    "empty": "Ihre SMS war leer. Bitte schreiben Sie uns Ihr Anliegen und Ihren Wohnort, z. B. "
             "\"Personalausweis beantragen in Norderstedt\".",
    "too_long": "Ihre SMS ist zu lang (mehr als 1600 Zeichen) und wurde nicht gespeichert. Bitte fassen Sie "
                "Ihr Anliegen kürzer oder schreiben Sie uns über das Formular im Internet.",
    "stopped": "Sie erhalten von uns keine SMS mehr. Mit START können Sie SMS wieder einschalten.",
    "started": "SMS sind wieder eingeschaltet. Schreiben Sie uns Ihr Anliegen und Ihren Wohnort.",
    "help": "Bürgerservice per SMS: Schreiben Sie Ihr Anliegen und Ihren Wohnort, wir antworten per SMS. "
            "STOP beendet SMS, START schaltet sie wieder ein.",
    "unavailable": "Ihre SMS konnte gerade nicht gespeichert werden. Bitte senden Sie sie in einigen Minuten "
                   "noch einmal.",
    "limited": "Sie haben uns in kurzer Zeit sehr viele Nachrichten geschickt. Diese SMS wurde nicht "
               "gespeichert. Bitte senden Sie sie {wait} noch einmal.",
    "refused": "Ihre SMS konnte nicht angenommen werden. Bitte schreiben Sie uns über das Formular im Internet.",
}


def keyword(body: str, opt_out_type: str = "") -> str | None:
    """``stop``, ``start``, ``help`` or None: whether the message is a keyword rather than a request."""
    marked = opt_out_type.strip().upper()
    if marked in ("STOP", "START", "HELP"):
        return marked.lower()
    word = body.strip().rstrip(".!").strip().upper()
    if word in OPT_OUT_WORDS:
        return STOP
    if word in OPT_IN_WORDS:
        return START
    if word in HELP_WORDS:
        return HELP
    return None


def refusal(body: str, media_count: int) -> str | None:
    """The key of the answer for a message that cannot become a request (``empty``, ``too_long``), or None."""
    if len(body) > MAX_BODY_CHARS:
        return "too_long"
    if not body.strip() and media_count == 0:
        return "empty"
    return None


# -- the direct answer -----------------------------------------------------------------------------------------


def _spans(spans) -> str:
    return ", ".join(f"{short_time(a)}-{short_time(b)}" for a, b in spans) + " Uhr"


def hours_text(hours: Hours) -> str:
    """Today's hours in a few characters: ``heute 8-12, 14-17:30 Uhr`` / ``heute geschlossen, Di 8-12 Uhr``."""
    if not hours.known:
        return ""
    if hours.today:
        return "heute " + _spans(hours.today)
    closed = "heute Feiertag" if hours.holiday else "heute geschlossen"
    if hours.next_day:
        return f"{closed}, {DAY_SHORT[hours.next_day]} {_spans(hours.next_spans)}"
    return closed


def _compose(service: str, office: str, phone: str | None, hours: str, footer: str) -> str:
    text = f"{service}: zuständig ist {office}"
    if phone:
        text += f", Tel. {phone}"
    if hours:
        text += f", {hours}"
    text += "."
    if footer:
        text += " " + footer
    return text


FOOTER = "Fragen? Antworten Sie einfach auf diese SMS."


def _shorter(name: str, by: int) -> str:
    """``name`` at least ``by`` characters shorter, cut at a word where that costs little, with "..."."""
    by = max(by, 1)
    if name.endswith("..."):
        body = name[:-3]
    else:
        body, by = name, by + 3  # room for the "..." it gets
    cut = body[: max(1, len(body) - by)]
    space = cut.rfind(" ")
    if space >= len(cut) * 0.7:
        cut = cut[:space]
    return cut.rstrip(" ,;:-(") + "..."


MIN_NAME = 12


def answer_text(answer: Answer, max_segments: int = 2) -> str:
    """The direct answer as one SMS of at most ``max_segments`` segments."""
    service, office = gsm7.to_gsm7(answer.service.strip()), gsm7.to_gsm7(answer.office.strip())
    phone = gsm7.to_gsm7(answer.phone) if answer.phone else None
    hours = gsm7.to_gsm7(hours_text(answer.hours))
    text = _compose(service, office, phone, hours, FOOTER)
    if gsm7.fits(text, max_segments):
        return text
    # Without the closing line; then the longer of the two names shorter until it fits (phone and hours stay).
    text = _compose(service, office, phone, hours, "")
    while not gsm7.fits(text, max_segments):
        size = gsm7.measure(text)
        excess = size.units - gsm7.capacity(max_segments, gsm=size.encoding == "GSM-7")
        if len(office) >= len(service) and len(office) > MIN_NAME:
            office = _shorter(office, min(excess, len(office) - MIN_NAME))
        elif len(service) > MIN_NAME:
            service = _shorter(service, min(excess, len(service) - MIN_NAME))
        else:
            return gsm7.truncate(text, max_segments)
        text = _compose(service, office, phone, hours, "")
    return text


# -- acknowledgements ------------------------------------------------------------------------------------------


def ack_text(token: str, *, joined: bool = False, ask_place_for: str | None = None, max_segments: int = 2,
             response_hours: float = 24) -> str:
    """The acknowledgement: the case token and what happens next (asks for the place when that is missing)."""
    if joined:
        text = f"Danke, wir haben Ihre Nachricht zu Ihrem Anliegen {token} erhalten und melden uns per SMS."
    elif ask_place_for:
        service = gsm7.to_gsm7(ask_place_for)
        text = (f"Danke! Ihr Anliegen hat das Zeichen {token}. Für \"{service}\" kommt es auf Ihren Wohnort "
                "an: In welchem Ort wohnen Sie? Antworten Sie mit Ort oder Postleitzahl.")
        if not gsm7.fits(text, max_segments):
            text = (f"Danke! Zeichen {token}. In welchem Ort wohnen Sie? Antworten Sie mit Ort oder "
                    "Postleitzahl.")
    else:
        text = (f"Danke! Ihr Anliegen hat das Zeichen {token}. Eine Mitarbeiterin oder ein Mitarbeiter "
                f"antwortet Ihnen per SMS, spätestens {within_working_hours(response_hours)}.")
    return gsm7.truncate(gsm7.to_gsm7(text), max_segments)


# -- TwiML -----------------------------------------------------------------------------------------------------


def messaging_twiml(text: str | None) -> str:
    """``<Response><Message>text</Message></Response>``, or an empty ``<Response/>`` (no answer)."""
    response = MessagingResponse()
    if text:
        response.message(text)
    return response.to_xml()
