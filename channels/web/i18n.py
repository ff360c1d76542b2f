"""German and English texts of the citizen pages.

German is the language of the administration and the default; English is offered on every page. Every
key exists in both languages (``tests/test_web_form.py`` checks it). Placeholders use ``str.format``;
values put into them are plain text, escaped by the templates like everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

LANGUAGES = ("de", "en")

STRINGS: dict[str, dict[str, str]] = {
    "de": {
        "site.title": "Bürgerservice",
        "site.tagline": "Ihr Anliegen an die Verwaltung – ein Formular für alle Ämter",
        "nav.skip": "Zum Inhalt springen",
        "nav.other_language": "English",
        "nav.other_language_hint": "Diese Seite auf Englisch",
        "footer.nojs": "Alle Seiten funktionieren auch ohne JavaScript.",
        "footer.legal": "Rechtliches",
        "form.status.heading": "Stand eines Anliegens abfragen",
        "form.status.label": "Vorgangsnummer",
        "form.status.hint": "Zum Beispiel K7QM-4XTR-9BQ2-H3ZP; Groß- und Kleinschreibung und Bindestriche sind egal.",
        "form.status.submit": "Stand anzeigen",
        "footer.imprint": "Impressum",
        "footer.privacy": "Datenschutz",
        "footer.accessibility": "Barrierefreiheit",
        "form.title": "Anliegen an die Verwaltung",
        "form.intro": "Beschreiben Sie Ihr Anliegen mit eigenen Worten. Schon beim Schreiben zeigen wir "
            "passende Leistungen und die zuständige Stelle – oft finden Sie die Antwort dort sofort.",
        "form.text.label": "Ihr Anliegen",
        "form.text.hint": "Zum Beispiel: Ich möchte ein Wunschkennzeichen reservieren.",
        "form.location.label": "Ort oder Postleitzahl",
        "form.location.hint": "Der Ort, um den es geht – meist Ihr Wohnort.",
        "form.suggest.button": "Vorschläge anzeigen",
        "form.contact.legend": "Kontakt (freiwillig)",
        "form.contact.hint": "Nur nötig, wenn wir Sie per E-Mail oder Telefon erreichen sollen. Die "
            "Antwort finden Sie immer auch auf Ihrer Statusseite.",
        "form.name.label": "Name",
        "form.email.label": "E-Mail-Adresse",
        "form.phone.label": "Telefonnummer",
        "form.reply.legend": "Wie möchten Sie die Antwort erhalten?",
        "form.reply.web": "Auf meiner Statusseite (den Link erhalten Sie nach dem Absenden)",
        "form.reply.email": "Per E-Mail",
        "form.reply.phone": "Per Telefon (Rückruf)",
        "form.files.label": "Anhänge (freiwillig)",
        "form.files.hint": "Bis zu {count} Dateien, je höchstens {size}. Erlaubt: {types}.",
        "form.files.again": "Bitte wählen Sie Ihre Dateien erneut aus, bevor Sie absenden.",
        "form.honeypot.label": "Dieses Feld bitte leer lassen",
        "form.privacy": "Wir verwenden Ihre Angaben nur, um Ihr Anliegen zu bearbeiten.",
        "form.submit": "Anliegen absenden",
        "suggest.heading": "Passende Leistungen",
        "suggest.intro": "Vielleicht hilft Ihnen das schon weiter:",
        "suggest.loading": "Suche passende Leistungen …",
        "suggest.count": "{count} passende Leistungen gefunden.",
        "suggest.none": "Wir haben keine passende Leistung gefunden. Senden Sie Ihr Anliegen einfach ab – "
            "wir kümmern uns darum.",
        "suggest.responsible": "Zuständig",
        "suggest.candidates": "Zuständig, je nach Ort:",
        "suggest.need_place": "Die zuständige Stelle hängt vom Ort ab. Geben Sie Ihren Ort an, dann zeigen "
            "wir sie.",
        "suggest.no_authority": "Für diesen Ort ist noch keine Stelle eingetragen; wir leiten Ihr Anliegen "
            "weiter.",
        "suggest.address": "Anschrift",
        "suggest.phone": "Telefon",
        "suggest.email": "E-Mail",
        "suggest.website": "Internetseite",
        "suggest.hours": "Öffnungszeiten",
        "suggest.documents": "Mitzubringen",
        "suggest.fees": "Gebühren",
        "suggest.online": "Online erledigen",
        "suggest.demo": "Beispieldaten",
        "places.heading": "Meinten Sie einen dieser Orte?",
        "places.unknown": "Diesen Ort finden wir nicht. Bitte prüfen Sie die Schreibweise oder geben Sie "
            "die Postleitzahl an.",
        "error.summary": "Bitte prüfen Sie Ihre Angaben",
        "error.text.required": "Bitte beschreiben Sie Ihr Anliegen.",
        "error.text.too_long": "Der Text ist zu lang: höchstens {max} Zeichen.",
        "error.text.invalid": "Der Text enthält Zeichen, die wir nicht annehmen können.",
        "error.location.invalid": "Bitte geben Sie den Ort in einer Zeile an (höchstens 500 Zeichen).",
        "error.name.invalid": "Bitte geben Sie den Namen in einer Zeile an (höchstens 500 Zeichen).",
        "error.email.invalid": "Bitte geben Sie eine gültige E-Mail-Adresse an, zum Beispiel "
            "name@example.de.",
        "error.phone.invalid": "Bitte geben Sie eine Telefonnummer mit Vorwahl an, zum Beispiel 04551 1234.",
        "error.email.needed": "Für eine Antwort per E-Mail brauchen wir Ihre E-Mail-Adresse.",
        "error.phone.needed": "Für einen Rückruf brauchen wir Ihre Telefonnummer.",
        "error.files.type": "„{name}“ hat einen Dateityp, den wir nicht annehmen. Erlaubt: {types}.",
        "error.files.count": "Bitte senden Sie höchstens {count} Dateien.",
        "error.honeypot": "Das Formular wurde nicht angenommen. Falls Ihr Browser Felder automatisch "
            "ausfüllt, senden Sie es bitte von Hand ab.",
        "page.back": "Zurück zum Formular",
        "page.csrf.title": "Formular abgelaufen",
        "page.csrf.text": "Bitte laden Sie das Formular neu und senden Sie es noch einmal. Es wurde nichts "
            "gespeichert. Dafür müssen Cookies dieser Seite erlaubt sein.",
        "page.rate.title": "Zu viele Anfragen",
        "page.rate.text": "Bitte warten Sie {seconds} Sekunden und versuchen Sie es dann noch einmal.",
        "page.too_large.title": "Anhang zu groß",
        "page.too_large.text": "Ihre Sendung ist zu groß: je Datei höchstens {size}, höchstens {count} "
            "Dateien. Es wurde nichts gespeichert.",
        "page.bad_request.title": "Ungültige Anfrage",
        "page.bad_request.text": "Diese Anfrage können wir nicht verarbeiten. Bitte nutzen Sie das Formular.",
        "page.unavailable.title": "Vorübergehend nicht möglich",
        "page.unavailable.text": "Ihr Anliegen konnte gerade nicht gespeichert werden. Bitte versuchen Sie "
            "es in einigen Minuten noch einmal.",
        "page.not_found.title": "Vorgang nicht gefunden",
        "page.not_found.text": "Zu diesem Link gibt es keinen Vorgang. Bitte prüfen Sie, ob Sie den Link "
            "vollständig übernommen haben.",
        "done.title": "Vielen Dank – Ihr Anliegen ist eingegangen",
        "done.repeat": "Dieses Anliegen hatten wir bereits erhalten; es wurde nicht doppelt gespeichert.",
        "done.token": "Ihre Vorgangsnummer",
        "done.keep": "Bewahren Sie diesen Link gut auf. Darüber sehen Sie jederzeit den Stand und unsere "
            "Antwort. Wer den Link kennt, kann beides sehen.",
        "done.status_link": "Stand meines Anliegens ansehen",
        "done.reply_wish": "Ihren Wunsch, die Antwort {how} zu erhalten, haben wir notiert.",
        "done.reply_wish.email": "per E-Mail",
        "done.reply_wish.phone": "per Telefon",
        "callback.pending": "Wir rufen Sie an unter {number} bis {at}.",
        "callback.pending.undated": "Wir rufen Sie an unter {number}.",
        "callback.done": "Wir haben Sie unter {number} angerufen.",
        "status.callback": "Rückruf",
        "status.title": "Stand Ihres Anliegens",
        "status.reference": "Vorgangsnummer",
        "status.state": "Stand",
        "status.received": "Eingegangen",
        "status.updated": "Zuletzt geändert",
        "status.forwarded_to": "Weitergeleitet an",
        "status.service": "Leistung",
        "status.service.open": "wird noch ermittelt",
        "status.office": "Zuständige Stelle",
        "status.office.open": "wird noch ermittelt",
        "status.due": "Antwort erwartet bis",
        "status.due.text": "{at}",
        "status.answers": "Unsere Antwort",
        "status.answered_at": "Geschrieben",
        "status.no_answer": "Noch keine Antwort. Wir melden uns so bald wie möglich.",
        "status.reply.heading": "Nachricht an uns",
        "status.reply.hint": "Beantworten Sie unsere Rückfrage oder ergänzen Sie Ihr Anliegen.",
        "status.reply.label": "Ihre Nachricht",
        "status.reply.submit": "Nachricht senden",
        "status.reply.sent": "Vielen Dank, Ihre Nachricht ist eingegangen.",
        "status.closed": "Dieser Vorgang ist abgeschlossen. Für ein neues Anliegen nutzen Sie bitte das "
            "Formular.",
        "status.new_request": "Neues Anliegen",
        "state.new": "Eingegangen",
        "state.new.text": "Ihr Anliegen ist bei uns eingegangen und wird der zuständigen Stelle zugeordnet.",
        "state.routed": "In Bearbeitung",
        "state.routed.text": "Die zuständige Stelle ist ermittelt; Ihr Anliegen wird bearbeitet.",
        "state.needs_clarification": "In Prüfung",
        "state.needs_clarification.text": "Eine Mitarbeiterin oder ein Mitarbeiter prüft Ihr Anliegen.",
        "state.waiting_for_citizen": "Rückfrage an Sie",
        "state.waiting_for_citizen.text": "Wir brauchen noch eine Angabe von Ihnen. Bitte beantworten Sie "
            "unsere Rückfrage unten.",
        "state.answered": "Beantwortet",
        "state.answered.text": "Wir haben Ihnen geantwortet.",
        "state.forwarded": "Weitergeleitet",
        "state.forwarded.text": "Ihr Anliegen liegt bei der zuständigen Stelle, die Ihnen antwortet.",
        "state.closed": "Abgeschlossen",
        "state.closed.text": "Ihr Anliegen ist erledigt.",
        "state.dead_letter": "In Prüfung",
        "state.dead_letter.text": "Eine Mitarbeiterin oder ein Mitarbeiter prüft Ihr Anliegen.",
        "fmt.datetime": "%d.%m.%Y, %H:%M Uhr",
        "fmt.decimal": ",",
        "day.mon": "Mo",
        "day.tue": "Di",
        "day.wed": "Mi",
        "day.thu": "Do",
        "day.fri": "Fr",
        "day.sat": "Sa",
        "day.sun": "So",
    },
    "en": {
        "site.title": "Citizen service",
        "site.tagline": "Your request to the administration – one form for every office",
        "nav.skip": "Skip to content",
        "nav.other_language": "Deutsch",
        "nav.other_language_hint": "This page in German",
        "footer.nojs": "All pages also work without JavaScript.",
        "footer.legal": "Legal",
        "form.status.heading": "Check the status of a request",
        "form.status.label": "Reference",
        "form.status.hint": "For example K7QM-4XTR-9BQ2-H3ZP; upper or lower case and hyphens do not matter.",
        "form.status.submit": "Show status",
        "footer.imprint": "Legal notice (Impressum)",
        "footer.privacy": "Privacy (Datenschutz)",
        "footer.accessibility": "Accessibility (Barrierefreiheit)",
        "form.title": "Ask your administration",
        "form.intro": "Describe what you need in your own words. While you type we show matching services "
            "and the office in charge – often you will find the answer there right away.",
        "form.text.label": "Your request",
        "form.text.hint": "For example: I would like to reserve a personalised number plate.",
        "form.location.label": "Town or postcode",
        "form.location.hint": "The place your request is about – usually where you live.",
        "form.suggest.button": "Show suggestions",
        "form.contact.legend": "Contact (optional)",
        "form.contact.hint": "Only needed if we should reach you by email or phone. You will always find "
            "the answer on your status page as well.",
        "form.name.label": "Name",
        "form.email.label": "Email address",
        "form.phone.label": "Phone number",
        "form.reply.legend": "How would you like to receive the answer?",
        "form.reply.web": "On my status page (you get the link after sending)",
        "form.reply.email": "By email",
        "form.reply.phone": "By phone (call back)",
        "form.files.label": "Attachments (optional)",
        "form.files.hint": "Up to {count} files, at most {size} each. Allowed: {types}.",
        "form.files.again": "Please choose your files again before you send.",
        "form.honeypot.label": "Please leave this field empty",
        "form.privacy": "We use your details only to handle your request.",
        "form.submit": "Send request",
        "suggest.heading": "Matching services",
        "suggest.intro": "This may already help you:",
        "suggest.loading": "Looking for matching services …",
        "suggest.count": "{count} matching services found.",
        "suggest.none": "We found no matching service. Just send your request – we will take care of it.",
        "suggest.responsible": "Responsible office",
        "suggest.candidates": "Responsible, depending on the place:",
        "suggest.need_place": "The responsible office depends on the place. Enter your town and we will "
            "show it.",
        "suggest.no_authority": "No office is registered for this place yet; we will pass your request on.",
        "suggest.address": "Address",
        "suggest.phone": "Phone",
        "suggest.email": "Email",
        "suggest.website": "Website",
        "suggest.hours": "Opening hours",
        "suggest.documents": "What to bring",
        "suggest.fees": "Fees",
        "suggest.online": "Do it online",
        "suggest.demo": "sample data",
        "places.heading": "Did you mean one of these places?",
        "places.unknown": "We cannot find this place. Please check the spelling or enter the postcode.",
        "error.summary": "Please check your entries",
        "error.text.required": "Please describe your request.",
        "error.text.too_long": "The text is too long: at most {max} characters.",
        "error.text.invalid": "The text contains characters we cannot accept.",
        "error.location.invalid": "Please enter the place on one line (at most 500 characters).",
        "error.name.invalid": "Please enter the name on one line (at most 500 characters).",
        "error.email.invalid": "Please enter a valid email address, for example name@example.com.",
        "error.phone.invalid": "Please enter a phone number with area code, for example +49 4551 1234.",
        "error.email.needed": "We need your email address to answer by email.",
        "error.phone.needed": "We need your phone number to call you back.",
        "error.files.type": "“{name}” is a file type we do not accept. Allowed: {types}.",
        "error.files.count": "Please send at most {count} files.",
        "error.honeypot": "The form was not accepted. If your browser fills in fields automatically, "
            "please send it by hand.",
        "page.back": "Back to the form",
        "page.csrf.title": "Form expired",
        "page.csrf.text": "Please reload the form and send it again. Nothing was saved. Cookies from this "
            "site must be allowed.",
        "page.rate.title": "Too many requests",
        "page.rate.text": "Please wait {seconds} seconds and try again.",
        "page.too_large.title": "Attachment too large",
        "page.too_large.text": "What you sent is too large: at most {size} per file and at most {count} "
            "files. Nothing was saved.",
        "page.bad_request.title": "Invalid request",
        "page.bad_request.text": "We cannot process this request. Please use the form.",
        "page.unavailable.title": "Temporarily not possible",
        "page.unavailable.text": "Your request could not be saved just now. Please try again in a few "
            "minutes.",
        "page.not_found.title": "Request not found",
        "page.not_found.text": "There is no request for this link. Please check that you copied the whole "
            "link.",
        "done.title": "Thank you – we have received your request",
        "done.repeat": "We had already received this request; it was not saved twice.",
        "done.token": "Your reference",
        "done.keep": "Keep this link safe. It shows the status of your request and our answer at any time. "
            "Anyone who knows the link can see both.",
        "done.status_link": "View the status of my request",
        "done.reply_wish": "We have noted that you would like the answer {how}.",
        "done.reply_wish.email": "by email",
        "done.reply_wish.phone": "by phone",
        "callback.pending": "We will call you on {number} by {at}.",
        "callback.pending.undated": "We will call you on {number}.",
        "callback.done": "We called you on {number}.",
        "status.callback": "Callback",
        "status.title": "Status of your request",
        "status.reference": "Reference",
        "status.state": "Status",
        "status.received": "Received",
        "status.updated": "Last update",
        "status.forwarded_to": "Forwarded to",
        "status.service": "Service",
        "status.service.open": "still being determined",
        "status.office": "Office in charge",
        "status.office.open": "still being determined",
        "status.due": "Answer expected by",
        "status.due.text": "{at}",
        "status.answers": "Our answer",
        "status.answered_at": "Written",
        "status.no_answer": "No answer yet. We will get back to you as soon as we can.",
        "status.reply.heading": "Write to us",
        "status.reply.hint": "Answer our question or add to your request.",
        "status.reply.label": "Your message",
        "status.reply.submit": "Send message",
        "status.reply.sent": "Thank you, we have received your message.",
        "status.closed": "This request is closed. For a new request please use the form.",
        "status.new_request": "New request",
        "state.new": "Received",
        "state.new.text": "We have received your request and are finding the office in charge.",
        "state.routed": "In progress",
        "state.routed.text": "The office in charge has been found; your request is being handled.",
        "state.needs_clarification": "Under review",
        "state.needs_clarification.text": "A member of staff is reviewing your request.",
        "state.waiting_for_citizen": "Question for you",
        "state.waiting_for_citizen.text": "We need more information from you. Please answer our question "
            "below.",
        "state.answered": "Answered",
        "state.answered.text": "We have answered you.",
        "state.forwarded": "Forwarded",
        "state.forwarded.text": "Your request is with the office in charge, which will answer you.",
        "state.closed": "Closed",
        "state.closed.text": "Your request has been dealt with.",
        "state.dead_letter": "Under review",
        "state.dead_letter.text": "A member of staff is reviewing your request.",
        "fmt.datetime": "%Y-%m-%d, %H:%M",
        "fmt.decimal": ".",
        "day.mon": "Mon",
        "day.tue": "Tue",
        "day.wed": "Wed",
        "day.thu": "Thu",
        "day.fri": "Fri",
        "day.sat": "Sat",
        "day.sun": "Sun",
    },
}

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TYPE_NAMES = {
    "application/pdf": "PDF",
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WebP",
}


def pick_language(*candidates: str | None, default: str = "de") -> str:
    """The first candidate that is a supported language, else ``default``."""
    for value in candidates:
        if value and value.lower()[:2] in LANGUAGES:
            return value.lower()[:2]
    return default


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **values)`` for ``lang``; a missing key is a programming error and raises ``KeyError``."""
    table = STRINGS[lang]

    def t(key: str, **values: object) -> str:
        text = table[key]
        return text.format(**values) if values else text

    return t


def format_bytes(n: int, lang: str) -> str:
    if n >= 1024 * 1024:
        value, unit = n / (1024 * 1024), "MB"
    else:
        value, unit = n / 1024, "KB"
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text.replace('.', STRINGS[lang]['fmt.decimal'])} {unit}"


def format_types(types: list[str]) -> str:
    return ", ".join(_TYPE_NAMES.get(t, t) for t in types)


def format_datetime(value: datetime | None, lang: str, tz) -> str:
    if value is None:
        return ""
    # Numbers only: month names from strftime would follow the process locale.
    return value.astimezone(tz).strftime(STRINGS[lang]["fmt.datetime"])


def format_hours(hours: Mapping[str, list[list[str]]] | None, lang: str) -> str:
    """Opening hours ``{"mon": [["08:00", "12:00"]], ...}`` as one line: ``Mo 08:00–12:00; Do 14:00``."""
    if not hours:
        return ""
    parts = []
    for day in _DAYS:
        spans = hours.get(day) or []
        if spans:
            parts.append(STRINGS[lang][f"day.{day}"] + " " + ", ".join(f"{a}–{b}" for a, b in spans))
    return "; ".join(parts)
