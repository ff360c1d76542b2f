"""Web channel: the citizen form, the status page and the suggestion look-up.

Routes (``setup(app)`` adds them):

* ``GET /`` – the form: free text, place, optional contact and answer channel, optional attachments.
* ``POST /`` – ``action=suggest`` shows matching services and place suggestions (the form without
  JavaScript); ``action=submit`` stores the request and shows the case token and the status link.
* ``POST /web/suggest`` – the same suggestions as JSON, for ``static/web.js`` while the citizen types.
* ``GET /status/{token}`` – the state and the answers of one case, nothing else;
  ``POST /status/{token}`` – a message from the citizen to the case (answer to a question).
* ``/static/web/`` – ``web.css`` and ``web.js``.

Every page is rendered by jinja2 with autoescape on, carries a strict Content-Security-Policy (no
inline script or style), and works without JavaScript. Form posts need a CSRF token bound to a cookie
(:mod:`hub.http.csrf`), pass a per-client token bucket (:mod:`hub.http.ratelimit`), and are dropped when
the honeypot field is filled. Attachments are streamed with a per-file limit (413) and their type is
judged from their first bytes, not from what the browser says (415).

A submission is idempotent: the external id is the form's random submission id plus a hash of what
was entered, so sending the same form twice (double click, reload) gives the same case, while a form
changed after going back creates a new one. The request is committed before the token is shown.

Nothing personal is logged: case ids and counts only, never texts, contacts or client addresses.

The intake writer is ``app[hub.http.api_cases.QUEUE].service.writer``; ``hub.http.api_cases`` (listed in
``hub.http.routes``) starts it with the app. While the queue is not running, submissions get 503.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import ValidationError
from sqlalchemy import select

from channels.web.confirm import Confirmations
from channels.web.i18n import (
    LANGUAGES,
    STRINGS,
    format_bytes,
    format_datetime,
    format_hours,
    format_types,
    pick_language,
    translator,
)
from channels.web.settings import WebSettings
from hub.casework import request_callback
from hub.http.app import ENGINE, KB, SETTINGS
from hub.http.csrf import FIELD as CSRF_FIELD
from hub.http.csrf import HEADER as CSRF_HEADER
from hub.http.csrf import CsrfProtect
from hub.http.ratelimit import LIMITS, IntakeLimited, IntakeLimits, RateLimiter, client_key, install_limits
from hub.queue.cases import case_t, message_t, token_clause
from hub.queue.intake import IntakeUnavailable, RequestRejected
from hub.queue.outbox import CALLBACK_CHANNEL, callback_number
from hub.queue.requests import AttachmentIn, Contact, InboundRequest, normalise_email, normalise_phone
from knowledge.regions import normalize_place

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
STATIC_PREFIX = "/static/web"
LANG_COOKIE = "chub_lang"
HONEYPOT = "hp_leave_empty"  # matches none of the name patterns browsers autofill (name, company, …)
REPLY_CHOICES = ("web", "email", "phone")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SUBMISSION_RE = re.compile(r"^[0-9a-f]{32}$")
_MAX_PARTS = 40
_MAX_SUGGEST_BODY = 16 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


# -- state ---------------------------------------------------------------------------------------------------


@dataclass
class WebState:
    """What the handlers share: settings, CSRF signer, rate limiters, templates, time zone."""

    settings: WebSettings
    csrf: CsrfProtect
    write_limit: RateLimiter
    read_limit: RateLimiter
    env: jinja2.Environment
    tz: ZoneInfo


WEB = web.AppKey("web_state", WebState)
CONFIRMATIONS = web.AppKey("web_confirmations", Confirmations)


def make_environment() -> jinja2.Environment:
    """The jinja2 environment: autoescape on for every template, undefined names are errors."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def build_state(settings: WebSettings, timezone: str = "Europe/Berlin") -> WebState:
    secret = settings.csrf_secret.encode() if settings.csrf_secret else secrets.token_bytes(32)
    if not settings.csrf_secret:
        log.warning("web: no [web] csrf_secret configured; using a random key for this process")
    missing = [key for key, _label in FOOTER_LINKS if not getattr(settings, key)]
    if missing:
        log.warning("web: no [web] %s configured; the citizen pages do not link them", ", ".join(missing))
    extra_hosts = ()
    if settings.public_base_url:
        extra_hosts = (settings.public_base_url.split("://", 1)[1].split("/", 1)[0],)
    return WebState(
        settings=settings,
        csrf=CsrfProtect(secret, settings.csrf_max_age_seconds, extra_hosts=extra_hosts),
        write_limit=RateLimiter(settings.write_rate_per_minute, settings.write_burst),
        read_limit=RateLimiter(settings.read_rate_per_minute, settings.read_burst),
        env=make_environment(),
        tz=ZoneInfo(timezone),
    )


# -- attachments ---------------------------------------------------------------------------------------------


def sniff_type(data: bytes) -> str | None:
    """The media type a file's first bytes show, for the types the hub accepts; None for anything else."""
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class TooLarge(Exception):
    """The body breaks a size or count limit (HTTP 413)."""


class BadForm(Exception):
    """The body is not a form this channel reads (HTTP 400); the message, if any, says why."""


NOT_UTF8 = "Das Formular ist kein gültiges UTF-8"


@dataclass
class FormData:
    fields: dict[str, str]  # the first value of each field
    files: list[tuple[str, bytes]]  # (file name as sent, bytes)
    #: Every value of each field, in order (``media_url=a&media_url=b``, ``attribute[x][]=…``).
    lists: dict[str, list[str]] = dataclasses.field(default_factory=dict)


async def _read_part(part: Any, limit: int) -> bytes:
    data = bytearray()
    while True:
        chunk = await part.read_chunk(65536)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise TooLarge


async def read_form(
    request: web.Request, *, file_field: str | Callable[[str], bool] | None, max_files: int, max_file_bytes: int,
    max_field_bytes: int
) -> FormData:
    """Read a urlencoded or multipart form with limits, streaming files (the app-wide body limit does not
    apply to the multipart stream, so attachments can be larger than ``server.max_body_bytes``).

    ``file_field`` names the file input, or tells file inputs by name (Open311's ``media``, ``photo1``,
    ``photo2``…); files of other inputs are skipped. Raises :class:`TooLarge` when a field, a file or the
    number of files or parts is over its limit, and :class:`BadForm` for anything that is not a form.
    """
    is_file_field = file_field if callable(file_field) else (lambda name: name == file_field)
    total_limit = max_files * max_file_bytes + _MAX_PARTS * max_field_bytes
    if request.content_length is not None and request.content_length > total_limit:
        raise TooLarge
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    lists: dict[str, list[str]] = {}
    if request.content_type == "application/x-www-form-urlencoded":
        try:
            body = await request.read()  # bounded by the app's client_max_size (server.max_body_bytes)
        except web.HTTPRequestEntityTooLarge:
            raise TooLarge from None
        try:
            # Strict: a percent-escape that is not UTF-8 is refused rather than stored as U+FFFD.
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=_MAX_PARTS * 2,
            )
        except UnicodeDecodeError:
            raise BadForm(NOT_UTF8) from None
        except ValueError:  # more fields than max_num_fields
            raise TooLarge from None
        for key, value in pairs:
            if len(value.encode("utf-8")) > max_field_bytes:
                raise TooLarge
            fields.setdefault(key, value)
            lists.setdefault(key, []).append(value)
        return FormData(fields, files, lists)
    if request.content_type != "multipart/form-data":
        raise BadForm
    try:
        reader = await request.multipart()
        parts = 0
        while True:
            part = await reader.next()
            if part is None:
                break
            parts += 1
            if parts > _MAX_PARTS + max_files:
                raise TooLarge
            if not isinstance(part, BodyPartReader):  # a nested multipart: no browser sends one
                raise BadForm
            name = part.name or ""
            if part.filename is not None:
                if not is_file_field(name):
                    await part.release()
                    continue
                data = await _read_part(part, max_file_bytes)
                if not part.filename and not data:
                    continue  # a file input left empty
                files.append((part.filename, data))
                if len(files) > max_files:
                    raise TooLarge
            else:
                raw = await _read_part(part, max_field_bytes)
                if name:
                    try:
                        value = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        raise BadForm(NOT_UTF8) from None
                    fields.setdefault(name, value)
                    lists.setdefault(name, []).append(value)
    except (TooLarge, BadForm):
        raise
    except (ValueError, AssertionError, KeyError, HttpProcessingError) as exc:  # a malformed multipart body
        # HttpProcessingError: aiohttp's header parser refusing a part's headers (InvalidHeader, found by
        # tests/channels/open311/test_open311_fuzz.py); it is no ValueError and was a 500.
        raise BadForm from exc
    return FormData(fields, files, lists)


# -- pages ---------------------------------------------------------------------------------------------------


def _state(request: web.Request) -> WebState:
    return request.app[WEB]


def _lang(request: web.Request, form: dict[str, str] | None = None) -> str:
    state = _state(request)
    return pick_language(
        request.query.get("lang"),
        (form or {}).get("lang"),
        request.cookies.get(LANG_COOKIE),
        default=state.settings.default_language,
    )


def _secure(request: web.Request) -> bool:
    return request.secure or _state(request).settings.public_base_url.startswith("https://")


def public_url(request: web.Request, path: str) -> str:
    """An absolute URL of ``path``: the configured public address, else this request's scheme and host."""
    base = _state(request).settings.public_base_url or f"{request.scheme}://{request.host}"
    return base + path


def _harden(response: web.StreamResponse, private: bool = False) -> web.StreamResponse:
    for key, value in SECURITY_HEADERS.items():
        response.headers[key] = value
    if private:
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


#: The legal pages every public German authority site links (Impressum, Datenschutz, Barrierefreiheit):
#: (settings key, text key), in the order they are shown.
FOOTER_LINKS = (("imprint_url", "footer.imprint"), ("privacy_url", "footer.privacy"),
                ("accessibility_url", "footer.accessibility"))


def footer_links(settings: WebSettings) -> list[tuple[str, str]]:
    """``(url, text key)`` of the configured legal pages; one not configured is left out."""
    return [(getattr(settings, key), label) for key, label in FOOTER_LINKS if getattr(settings, key)]


def render(
    request: web.Request,
    template: str,
    lang: str,
    *,
    status: int = 200,
    private: bool = True,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> web.Response:
    """Render a page; every page gets a CSRF token (and the cookie it is bound to) and the language switch."""
    state = _state(request)
    cookie, new_cookie = state.csrf.cookie_value(request)
    other = "en" if lang == "de" else "de"
    # The language switch is a GET link: after a post it leads to the page that shows the same thing
    # again (the confirmation's status page), not to the bare path that was posted to.
    switch_path = context.pop("switch_path", None) or request.path
    context.update(
        t=translator(lang),
        lang=lang,
        other_lang=other,
        other_lang_url=f"{switch_path}?lang={other}",
        csrf_field=CSRF_FIELD,
        csrf_token=state.csrf.token(cookie),
        static=STATIC_PREFIX,
        footer_links=footer_links(state.settings),
    )
    html = state.env.get_template(template).render(**context)
    response = web.Response(
        text=html, status=status, content_type="text/html", charset="utf-8", headers=headers
    )
    if new_cookie:
        state.csrf.set_cookie(response, cookie, _secure(request))
    if request.query.get("lang") in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=365 * 86400,
            httponly=True,
            samesite="Lax",
            secure=_secure(request),
            path="/",
        )
    return _harden(response, private)


def message_page(
    request: web.Request,
    lang: str,
    status: int,
    key: str,
    *,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> web.Response:
    """A short page that explains a refusal (``page.<key>.title`` / ``page.<key>.text``)."""
    t = translator(lang)
    return render(
        request,
        "web/message.html",
        lang,
        status=status,
        headers=headers,
        title=t(f"page.{key}.title"),
        text=t(f"page.{key}.text", **values),
    )


def _limited(request: web.Request, limiter: RateLimiter, lang: str) -> web.Response | None:
    state = _state(request)
    allowed, retry_after = limiter.take(client_key(request, state.settings.trust_forwarded_for))
    if allowed:
        return None
    count_rejected(request, 429)
    seconds = max(1, int(retry_after + 0.999))
    return message_page(request, lang, 429, "rate", headers={"Retry-After": str(seconds)}, seconds=seconds)


# -- suggestions ---------------------------------------------------------------------------------------------


def _authority_view(a: Any, lang: str) -> dict[str, Any]:
    address = ", ".join(p for p in (a.street, " ".join(x for x in (a.postcode, a.city) if x)) if p)
    website = a.website if (a.website or "").startswith(("https://", "http://")) else ""
    return {
        "name": a.name,
        "address": address,
        "phone": a.phone,
        "email": a.email,
        "website": website,
        "hours": format_hours(a.opening_hours, lang),
        "is_demo": bool(a.is_demo),
    }


class PlaceIndex:
    """Prefix search over municipality names, for place suggestions while the citizen is still typing
    ("Norderst" → Norderstedt); :meth:`value` gives the text that resolves back to exactly that place."""

    def __init__(self, regions: Any) -> None:
        self.regions = regions
        entries = sorted(
            (normalize_place(info.display_name), info.ars) for info in regions if info.level == "gemeinde"
        )
        self._keys = [key for key, _ in entries]
        self._ars = [ars for _, ars in entries]
        self._values: dict[str, str] = {}

    def search(self, text: str, limit: int = 8) -> list[Any]:
        norm = normalize_place(text)
        if len(norm) < 2:
            return []
        hits = []
        i = bisect.bisect_left(self._keys, norm)
        while i < len(self._keys) and self._keys[i].startswith(norm) and len(hits) < 500:
            hits.append(self.regions.get(self._ars[i]))
            i += 1
        home = self.regions.home_region
        hits.sort(key=lambda r: (not (home and r.ars.startswith(home)), -(r.population or 0), r.display_name))
        return hits[:limit]

    def value(self, info: Any) -> str:
        """ "postcode name" where that names exactly this place, else the qualified name, else the ARS."""
        if info.ars not in self._values:
            tries = [
                f"{info.postcode} {info.display_name}" if info.postcode else None,
                self.regions.qualified_name(info),
            ]
            found = next(
                (v for v in tries if v and (m := self.regions.resolve(v).match) and m.ars == info.ars), None
            )
            self._values[info.ars] = found or info.ars
        return self._values[info.ars]

    def view(self, info: Any) -> dict[str, str]:
        return {"label": self.regions.qualified_name(info), "value": self.value(info)}


_place_indexes: dict[int, PlaceIndex] = {}


def place_index(kb: Any) -> PlaceIndex:
    """The place index of ``kb``'s regions, built once per region index."""
    key = id(kb.regions)
    index = _place_indexes.get(key)
    if index is None or index.regions is not kb.regions:
        index = _place_indexes[key] = PlaceIndex(kb.regions)
    return index


def suggestions(kb: Any, text: str, location: str, lang: str, limit: int) -> dict[str, Any]:
    """Matching services with the office in charge at the place, and place suggestions: plain data, for the
    server-rendered form and the JSON endpoint alike."""
    out: dict[str, Any] = {
        "services": [],
        "place": None,
        "places": [],
        "place_unknown": False,
        "searched": False,
    }
    if kb is None:
        return out
    text, location = text.strip(), location.strip()
    place = kb.regions.resolve(location, limit=8) if location else None
    if place is not None:
        pindex = place_index(kb)
        if place.match is not None:
            out["place"] = pindex.view(place.match)
        elif place.candidates:
            out["places"] = [pindex.view(r) for r, _ in place.candidates[:8]]
        else:
            out["places"] = [pindex.view(r) for r in pindex.search(location)]
            out["place_unknown"] = not out["places"]
    if len(text) >= 3:
        out["searched"] = True
        result = kb.lookup(text, location or None, limit=limit)
        for answer in result.answers[:limit]:
            s = answer.service
            view = {
                "id": s.id,
                "name": s.name,
                "short_text": s.short_text,
                "documents": list(s.documents or [])[:6],
                "fees": s.fees,
                "online_url": s.online_url
                if (s.online_url or "").startswith(("https://", "http://"))
                else None,
                "authority": _authority_view(answer.authority, lang) if answer.authority else None,
                "candidates": [
                    {"authority": _authority_view(a, lang), "places": [r.display_name for r in where][:5]}
                    for a, where in answer.authority_candidates[:4]
                ],
                "need_place": place is None or (place.match is None and not place.ambiguous),
                "no_authority": place is not None and place.match is not None and answer.authority is None,
            }
            out["services"].append(view)
    return out


def _suggest_labels(lang: str) -> dict[str, str]:
    t = translator(lang)
    keys = (
        "count",
        "heading",
        "intro",
        "loading",
        "none",
        "responsible",
        "candidates",
        "need_place",
        "no_authority",
        "address",
        "phone",
        "email",
        "website",
        "hours",
        "documents",
        "fees",
        "online",
        "demo",
    )
    labels = {k: t(f"suggest.{k}") for k in keys}
    labels.update(places_heading=t("places.heading"), places_unknown=t("places.unknown"))
    return labels


# -- form handling -------------------------------------------------------------------------------------------


def _form_context(state: WebState, lang: str) -> dict[str, Any]:
    s = state.settings
    return {
        "max_text": s.max_text_chars,
        "accept": ",".join(s.allowed_attachment_types),
        "files_hint": translator(lang)(
            "form.files.hint",
            count=s.max_attachments,
            size=format_bytes(s.max_upload_bytes, lang),
            types=format_types(s.allowed_attachment_types),
        ),
        "allow_files": s.max_attachments > 0,
        "honeypot": HONEYPOT,
        "suggest_url": "/web/suggest",
        "reply_choices": REPLY_CHOICES,
    }


def _empty_values() -> dict[str, str]:
    return {
        "text": "",
        "location": "",
        "name": "",
        "email": "",
        "phone": "",
        "reply": "web",
        "submission": secrets.token_hex(16),
    }


def _render_form(
    request: web.Request,
    lang: str,
    values: dict[str, str],
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    suggest: dict[str, Any] | None = None,
    files_again: bool = False,
) -> web.Response:
    state = _state(request)
    errors = errors or {}
    return render(
        request,
        "web/form.html",
        lang,
        status=status,
        values=values,
        errors=errors,
        error_list=list(errors.items()),
        suggest=suggest,
        files_again=files_again,
        **_form_context(state, lang),
    )


async def form_page(request: web.Request) -> web.Response:
    """GET /: the empty form."""
    lang = _lang(request)
    return _render_form(request, lang, _empty_values())


def _values_from(fields: dict[str, str]) -> dict[str, str]:
    values = _empty_values()
    for key in ("text", "location", "name", "email", "phone"):
        values[key] = fields.get(key, "")
    values["text"] = values["text"].replace("\r\n", "\n").replace("\r", "\n")
    reply = fields.get("reply", "web")
    values["reply"] = reply if reply in REPLY_CHOICES else "web"
    submission = fields.get("submission", "")
    if _SUBMISSION_RE.match(submission):
        values["submission"] = submission
    return values


def validate(
    values: dict[str, str], settings: WebSettings, lang: str
) -> tuple[dict[str, str], Contact | None]:
    """Field errors (field id → message in ``lang``) and the contact, checked at the edge."""
    t = translator(lang)
    errors: dict[str, str] = {}
    text = values["text"].strip()
    if not text:
        errors["text"] = t("error.text.required")
    elif len(text) > settings.max_text_chars:
        errors["text"] = t("error.text.too_long", max=settings.max_text_chars)
    if len(values["location"]) > 500 or "\n" in values["location"]:
        errors["location"] = t("error.location.invalid")
    email = values["email"].strip()
    phone = values["phone"].strip()
    if email:
        try:
            normalise_email(email)
        except ValueError:
            errors["email"] = t("error.email.invalid")
    if phone:
        try:
            normalise_phone(phone)
        except ValueError:
            errors["phone"] = t("error.phone.invalid")
    if values["reply"] == "email" and not email and "email" not in errors:
        errors["email"] = t("error.email.needed")
    if values["reply"] == "phone" and not phone and "phone" not in errors:
        errors["phone"] = t("error.phone.needed")
    contact = None
    try:
        contact = Contact(name=values["name"] or None, email=email or None, phone=phone or None)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            field = str(err["loc"][0]) if err["loc"] else "name"
            field = field if field in ("name", "email", "phone") else "name"
            errors.setdefault(field, t(f"error.{field}.invalid"))
    return errors, contact


def check_files(
    files: list[tuple[str, bytes]], settings: WebSettings, lang: str
) -> tuple[list[AttachmentIn], str | None]:
    """Attachments whose content is an allowed type, or the message for the first that is not."""
    t = translator(lang)
    out: list[AttachmentIn] = []
    types = format_types(settings.allowed_attachment_types)
    for filename, data in files:
        kind = sniff_type(data)
        shown = (filename or "?")[-80:]
        if kind is None or kind not in settings.allowed_attachment_types:
            return [], t("error.files.type", name=shown, types=types)
        try:
            out.append(AttachmentIn(filename=filename or "anhang", content_type=kind, data=data))
        except ValidationError:
            return [], t("error.files.type", name=shown, types=types)
    return out, None


def _external_id(values: dict[str, str], attachments: list[AttachmentIn]) -> str:
    """The form's submission id plus a digest of what was entered (see the module docstring)."""
    digest = hashlib.sha256()
    for key in ("text", "location", "name", "email", "phone", "reply"):
        digest.update(values[key].strip().encode("utf-8") + b"\x00")
    for att in attachments:
        digest.update(hashlib.sha256(att.data).digest())
    return f"web:{values['submission']}:{digest.hexdigest()[:16]}"


def _subject(values: dict[str, str], lang: str) -> str:
    """A line for the agents: where it came from, the answer channel wished, the citizen's language."""
    parts = ["Webformular"]
    if lang != "de":
        parts.append("(Sprache: Englisch)")
    if values["reply"] == "email":
        parts.append("– Antwort gewünscht per E-Mail")
    elif values["reply"] == "phone":
        parts.append("– Antwort gewünscht per Telefon (Rückruf)")
    return " ".join(parts)


def _queue_service(request: web.Request) -> Any:
    from hub.http.api_cases import QUEUE  # imported late: the queue module pulls in the whole queue

    state = request.app.get(QUEUE)
    return state.service if state is not None else None


def _writer(request: web.Request) -> Any:
    service = _queue_service(request)
    return service.writer if service is not None else None


def _wake_outbox(request: web.Request) -> None:
    service = _queue_service(request)
    if service is not None:
        service.dispatcher.wake()


def count_rejected(request: web.Request, status: int) -> None:
    """Count a refused post in the queue's metrics (citizen_hub_http_rejected_total)."""
    service = _queue_service(request)
    if service is not None:
        service.metrics.count_rejected(status)


async def submit(request: web.Request, inbound: InboundRequest) -> Any:
    """Hand ``inbound`` to the intake writer; returns the IntakeResult after the commit.

    Counts against the intake limits first (the client's address, the contact's address and number:
    :class:`hub.http.ratelimit.IntakeLimits`). Raises IntakeLimited (too many from this client or
    sender), IntakeUnavailable (queue not running, store failed) or RequestRejected (a queue limit).
    """
    writer = _writer(request)
    if writer is None:
        raise IntakeUnavailable("the queue is not running")
    limits = request.app[LIMITS]
    keys = (("ip", client_key(request, _state(request).settings.trust_forwarded_for)),
            *IntakeLimits.sender_keys(inbound.contact))
    limits.check(*keys)
    try:
        result = await writer.submit(inbound)
    except BaseException:
        limits.refund(*keys)
        raise
    if not result.created:
        limits.refund(*keys)  # the same form sent again costs nothing
    return result


def _over_limit(request: web.Request, lang: str, exc: IntakeLimited) -> web.Response:
    count_rejected(request, 429)
    return message_page(request, lang, 429, "rate", headers={"Retry-After": str(exc.retry_after)},
                        seconds=exc.retry_after)


async def form_post(request: web.Request) -> web.Response:
    """POST /: show suggestions (``action=suggest``, also place picks) or store the request."""
    state = _state(request)
    lang = _lang(request)
    limited = _limited(request, state.write_limit, lang)
    if limited:
        return limited
    s = state.settings
    try:
        form = await read_form(
            request,
            file_field="attachments",
            max_files=s.max_attachments,
            max_file_bytes=s.max_upload_bytes,
            max_field_bytes=s.max_text_chars * 4 + 1024,
        )
    except TooLarge:
        count_rejected(request, 413)
        return message_page(
            request,
            lang,
            413,
            "too_large",
            size=format_bytes(s.max_upload_bytes, lang),
            count=s.max_attachments,
        )
    except BadForm:
        return message_page(request, lang, 400, "bad_request")
    lang = _lang(request, form.fields)
    if not state.csrf.check(request, form.fields.get(CSRF_FIELD)):
        count_rejected(request, 403)
        return message_page(request, lang, 403, "csrf")
    values = _values_from(form.fields)
    t = translator(lang)
    if form.fields.get(HONEYPOT, "").strip():
        count_rejected(request, 400)
        log.info("web: a form post filled the honeypot field; nothing stored")
        return _render_form(request, lang, values, status=400, errors={"form": t("error.honeypot")})
    kb = request.app.get(KB)
    picked = form.fields.get("pick_location", "").strip()
    if picked:
        values["location"] = picked[:500]
    action = "suggest" if picked else form.fields.get("action", "submit")
    if action == "suggest":
        suggest = await asyncio.to_thread(
            suggestions, kb, values["text"], values["location"], lang, s.suggest_max_services
        )
        return _render_form(request, lang, values, suggest=suggest, files_again=bool(form.files))
    errors, contact = validate(values, s, lang)
    attachments, file_error = check_files(form.files, s, lang)
    status = 400
    if file_error:
        errors["attachments"] = file_error
        status = 415 if not (errors.keys() - {"attachments"}) else 400
    if errors:
        count_rejected(request, status)
        return _render_form(request, lang, values, status=status, errors=errors, files_again=bool(form.files))
    try:
        inbound = InboundRequest(
            channel="web",
            external_id=_external_id(values, attachments),
            text=values["text"].strip(),
            location=values["location"].strip() or None,
            contact=contact,
            subject=_subject(values, lang),
            attachments=attachments,
            # "Per E-Mail": the answer goes by e-mail (hub.queue.outbox.answer_route). "Per Telefon (Rückruf)": the
            # case is a callback request (hub.queue.outbox.callback_number), stored with it; an agent's call answers it.
            reply_channel={"email": "email", "phone": CALLBACK_CHANNEL}.get(values["reply"]),
        )
    except ValidationError:
        return _render_form(request, lang, values, status=400, errors={"text": t("error.text.invalid")})
    try:
        result = await submit(request, inbound)
    except IntakeLimited as exc:
        return _over_limit(request, lang, exc)
    except RequestRejected as exc:
        if exc.status == 413:
            return message_page(
                request,
                lang,
                413,
                "too_large",
                size=format_bytes(s.max_upload_bytes, lang),
                count=s.max_attachments,
            )
        return _render_form(request, lang, values, status=400, errors={"text": t("error.text.invalid")})
    except IntakeUnavailable:
        return message_page(request, lang, 503, "unavailable", headers={"Retry-After": "60"})
    log.info(
        "web: request stored in case %s (new=%s, attachments=%d)",
        result.case_id,
        result.created,
        len(attachments),
    )
    callback = None
    if values["reply"] == "phone" and contact is not None and contact.phone:
        callback = await _callback_requested(request, result, contact.phone, lang)
    if result.created and not result.joined and values["reply"] == "email" and contact is not None and contact.email:
        try:
            await asyncio.to_thread(
                request.app[CONFIRMATIONS].write, request.app[ENGINE], case_id=result.case_id, token=result.token,
                address=contact.email, language=lang, status_url=public_url(request, f"/status/{result.token}"))
            _wake_outbox(request)
        except Exception as exc:  # the request is stored; a lost confirmation is logged, not shown
            log.warning("web: confirmation mail for case %s not written (%s)", result.case_id, type(exc).__name__)
    return render(
        request,
        "web/done.html",
        lang,
        token=result.token,
        repeat=not result.created,
        status_url=public_url(request, f"/status/{result.token}"),
        status_path=f"/status/{result.token}",
        switch_path=f"/status/{result.token}",
        reply=values["reply"],
        callback=callback,
    )


def _mark_callback(engine: Any, case_id: int, number: str, token: str) -> dict[str, Any] | None:
    with engine.begin() as conn:
        request_callback(conn, case_id, number, actor="web")
    return load_status(engine, token)


async def _callback_requested(request: web.Request, result: Any, number: str, lang: str) -> str | None:
    """The citizen chose "Per Telefon (Rückruf)": the case becomes a callback request through the hub's one rule
    (:func:`hub.casework.request_callback`, as the phone menu's callback); the line the page shows about it.

    Intake stored the case with that reply channel already, so a failure here loses nothing but the audit line."""
    try:
        status = await asyncio.to_thread(_mark_callback, request.app[ENGINE], result.case_id, number, result.token)
    except Exception as exc:
        log.warning("web: callback of case %s not recorded (%s)", result.case_id, type(exc).__name__)
        return None
    return callback_line(status, lang, _state(request).tz) if status else None


def masked_number(number: str) -> str:
    """A phone number as the citizen's pages show it: enough to recognise it, not to read it off
    (``+49 … 234``); the status page is reached by its token alone."""
    return f"{number[:3]} … {number[-3:]}" if len(number) > 6 else "…"


def callback_line(case: Mapping[str, Any], lang: str, tz: Any) -> str | None:
    """"Wir rufen Sie an unter … bis <Frist>" while the callback is to be made (the first-response deadline,
    ``[sla] first_response_hours`` working hours), "Wir haben Sie … angerufen" once an agent's call answered or
    forwarded the case; None when the citizen asked for no callback."""
    t = translator(lang)
    pending = callback_number(case)
    if pending is not None:
        due = case.get("first_response_due")
        if due is None:
            return t("callback.pending.undated", number=masked_number(pending))
        return t("callback.pending", number=masked_number(pending), at=format_datetime(due, lang, tz))
    asked = callback_number(case, pending=False)
    if asked is not None and case.get("first_responded_at") is not None:
        return t("callback.done", number=masked_number(asked))
    return None


async def suggest_json(request: web.Request) -> web.Response:
    """POST /web/suggest ``{"text", "location", "lang"}`` → services and places as JSON (CSRF header needed).

    A POST, not a GET: the citizen's words must not end up in URLs, access logs or browser history.
    """
    state = _state(request)
    page_lang = _lang(request)
    allowed, retry_after = state.read_limit.take(client_key(request, state.settings.trust_forwarded_for))
    if not allowed:
        return _json(
            {"error": "Zu viele Anfragen; bitte warten Sie einen Moment", "code": "rate_limited"}, 429, {"Retry-After": str(max(1, int(retry_after + 0.999)))}
        )
    if not state.csrf.check(request, request.headers.get(CSRF_HEADER)):
        return _json({"error": "Das Formular ist abgelaufen; bitte laden Sie die Seite neu", "code": "csrf"}, 403)
    if request.content_length is not None and request.content_length > _MAX_SUGGEST_BODY:
        return _json({"error": "Der Inhalt ist zu groß", "code": "too_large"}, 413)
    try:
        body = await request.json()
    except Exception:
        return _json({"error": "Bitte senden Sie ein JSON-Objekt", "code": "bad_json"}, 400)
    if not isinstance(body, dict):
        return _json({"error": "Bitte senden Sie ein JSON-Objekt", "code": "bad_json"}, 400)
    text = body.get("text") if isinstance(body.get("text"), str) else ""
    location = body.get("location") if isinstance(body.get("location"), str) else ""
    lang = pick_language(
        body.get("lang") if isinstance(body.get("lang"), str) else None,
        page_lang,
        default=state.settings.default_language,
    )
    result = await asyncio.to_thread(
        suggestions,
        request.app.get(KB),
        text[:2000],
        location[:200],
        lang,
        state.settings.suggest_max_services,
    )
    result["labels"] = _suggest_labels(lang)
    return _json(result)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # <, > and & only occur inside strings; escaped, the JSON stays inert even if read as HTML.
    text = (
        json.dumps(body, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    response = web.Response(
        text=text, status=status, content_type="application/json", charset="utf-8", headers=headers
    )
    response.headers["Cache-Control"] = "no-store"
    return _harden(response)


# -- status page ---------------------------------------------------------------------------------------------


def load_status(engine: Any, token: str) -> dict[str, Any] | None:
    """State, dates, service, office, the answer's due time and the answers of the case ``token`` stands for
    (readable or old form, :func:`hub.queue.cases.token_variants`); nothing personal."""
    clause = token_clause(token)
    if clause is None:
        return None
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(
                    case_t.c.id,
                    case_t.c.token,
                    case_t.c.state,
                    case_t.c.created_at,
                    case_t.c.updated_at,
                    case_t.c.service_name,
                    case_t.c.authority_name,
                    case_t.c.first_response_due,
                    case_t.c.first_responded_at,
                    case_t.c.forward_due,
                    case_t.c.forward_met_at,
                    case_t.c.reply_channel,
                    case_t.c.contact_phone,
                ).where(clause)
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        answers = (
            conn.execute(
                select(message_t.c.text, message_t.c.created_at)
                .where(
                    message_t.c.case_id == row["id"],
                    message_t.c.direction == "out",
                    message_t.c.kind == "reply",
                )
                .order_by(message_t.c.id)
            )
            .mappings()
            .all()
        )
    return {
        "token": row["token"],
        "state": row["state"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "service": row["service_name"],
        "authority": row["authority_name"],
        "due": answer_due(row),
        "answers": [dict(a) for a in answers],
        # For callback_line only (the number is never shown whole): the callback rule reads these.
        "reply_channel": row["reply_channel"],
        "contact_phone": row["contact_phone"],
        "first_response_due": row["first_response_due"],
        "first_responded_at": row["first_responded_at"],
    }


def answer_due(row: Mapping[str, Any]) -> datetime | None:
    """By when the citizen can expect the answer: the deadline the SLA clock (:mod:`hub.queue.sla`, kept by
    :class:`hub.queue.cases.SlaPolicy`) set for the step the case is in; None when no answer is pending
    (answered, closed, or paused while the hub waits for the citizen)."""
    if row["state"] in ("answered", "closed", "waiting_for_citizen"):
        return None
    if row["state"] == "forwarded" and row["forward_due"] is not None and row["forward_met_at"] is None:
        return row["forward_due"]
    if row["first_responded_at"] is None:
        return row["first_response_due"]
    return None


def _status_token(request: web.Request) -> str | None:
    token = request.match_info.get("token", "")
    return token if _TOKEN_RE.match(token) else None


async def status_lookup(request: web.Request) -> web.Response:
    """GET /status?token=…: the reference number as the citizen types it (any case, hyphens or not, an old
    one too) leads to its status page; one that is no reference at all shows the form's page again."""
    state = _state(request)
    lang = _lang(request)
    limited = _limited(request, state.read_limit, lang)
    if limited:
        return limited
    raw = request.query.get("token", "")[:64]
    case = await asyncio.to_thread(load_status, request.app[ENGINE], raw) if raw.strip() else None
    if case is None:
        return message_page(request, lang, 404, "not_found")
    raise web.HTTPSeeOther(f"/status/{case['token']}")


async def status_page(request: web.Request) -> web.Response:
    """GET /status/{token}: the state and the answers, through the unguessable token only."""
    state = _state(request)
    lang = _lang(request)
    limited = _limited(request, state.read_limit, lang)
    if limited:
        return limited
    token = _status_token(request)
    case = await asyncio.to_thread(load_status, request.app[ENGINE], token) if token else None
    if case is None:
        return message_page(request, lang, 404, "not_found")
    if case["token"] != token:  # typed in another form (lower case, without hyphens): show the one address
        raise web.HTTPSeeOther(f"/status/{case['token']}" + (f"?{request.query_string}" if request.query_string
                                                              else ""))
    return _render_status(request, lang, token, case, sent=request.query.get("sent") == "1")


def _render_status(
    request: web.Request,
    lang: str,
    token: str,
    case: dict[str, Any],
    *,
    sent: bool = False,
    status: int = 200,
    errors: dict[str, str] | None = None,
    text: str = "",
) -> web.Response:
    tz = _state(request).tz
    answers = [{"text": a["text"], "at": format_datetime(a["created_at"], lang, tz)} for a in case["answers"]]
    state_key = case["state"] if f"state.{case['state']}" in STRINGS[lang] else "needs_clarification"
    return render(
        request,
        "web/status.html",
        lang,
        status=status,
        token=token,
        state_key=state_key,
        received=format_datetime(case["created_at"], lang, tz),
        updated=format_datetime(case["updated_at"], lang, tz),
        forwarded_to=case["authority"] if case["state"] == "forwarded" else None,
        service=case["service"],
        authority=case["authority"],
        due=format_datetime(case["due"], lang, tz) if case["due"] else None,
        answers=answers,
        callback=callback_line(case, lang, tz),
        closed=case["state"] == "closed",
        sent=sent,
        errors=errors or {},
        error_list=list((errors or {}).items()),
        text=text,
        submission=secrets.token_hex(16),
        honeypot=HONEYPOT,
        max_text=_state(request).settings.max_text_chars,
    )


async def status_post(request: web.Request) -> web.Response:
    """POST /status/{token}: a message from the citizen to the case (e.g. the answer to a question)."""
    state = _state(request)
    lang = _lang(request)
    limited = _limited(request, state.write_limit, lang)
    if limited:
        return limited
    token = _status_token(request)
    case = await asyncio.to_thread(load_status, request.app[ENGINE], token) if token else None
    if case is None:
        return message_page(request, lang, 404, "not_found")
    token = case["token"]
    s = state.settings
    try:
        form = await read_form(
            request,
            file_field=None,
            max_files=0,
            max_file_bytes=1,
            max_field_bytes=s.max_text_chars * 4 + 1024,
        )
    except TooLarge:
        return message_page(
            request,
            lang,
            413,
            "too_large",
            size=format_bytes(s.max_upload_bytes, lang),
            count=s.max_attachments,
        )
    except BadForm:
        return message_page(request, lang, 400, "bad_request")
    lang = _lang(request, form.fields)
    if not state.csrf.check(request, form.fields.get(CSRF_FIELD)):
        count_rejected(request, 403)
        return message_page(request, lang, 403, "csrf")
    t = translator(lang)
    text = form.fields.get("text", "").replace("\r\n", "\n").strip()
    if form.fields.get(HONEYPOT, "").strip():
        count_rejected(request, 400)
        return _render_status(
            request, lang, token, case, status=400, errors={"form": t("error.honeypot")}, text=text
        )
    if case["state"] == "closed":
        return _render_status(request, lang, token, case, status=409)
    if not text or len(text) > s.max_text_chars:
        key = "error.text.required" if not text else "error.text.too_long"
        return _render_status(
            request,
            lang,
            token,
            case,
            status=400,
            errors={"reply-text": t(key, max=s.max_text_chars)},
            text=text,
        )
    submission = form.fields.get("submission", "")
    if not _SUBMISSION_RE.match(submission):
        submission = secrets.token_hex(16)
    external_id = f"web:{submission}:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"
    try:
        inbound = InboundRequest(
            channel="web",
            external_id=external_id,
            text=text,
            case_token=token,
            subject="Webformular – Nachricht zum Vorgang",
        )
        result = await submit(request, inbound)
    except IntakeLimited as exc:
        return _over_limit(request, lang, exc)
    except (ValidationError, RequestRejected):
        return _render_status(
            request, lang, token, case, status=400, errors={"reply-text": t("error.text.invalid")}, text=text
        )
    except IntakeUnavailable:
        return message_page(request, lang, 503, "unavailable", headers={"Retry-After": "60"})
    log.info("web: follow-up stored in case %s (joined=%s)", result.case_id, result.token == token)
    if result.token != token:  # the case could not take it (closed meanwhile): it became a new case
        return render(
            request,
            "web/done.html",
            lang,
            token=result.token,
            repeat=not result.created,
            status_url=public_url(request, f"/status/{result.token}"),
            status_path=f"/status/{result.token}",
        switch_path=f"/status/{result.token}",
            reply="web",
        )
    raise web.HTTPSeeOther(f"/status/{token}?sent=1")


# -- wiring --------------------------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """Add the citizen pages; the settings come from ``app[SETTINGS].web`` and ``.sla.timezone``."""
    settings = app[SETTINGS]
    app[WEB] = build_state(settings.web, settings.sla.timezone)
    app[CONFIRMATIONS] = Confirmations(settings)
    install_limits(app)
    app.router.add_get("/", form_page, name="web-form")
    app.router.add_post("/", form_post)
    app.router.add_post("/web/suggest", suggest_json, name="web-suggest")
    app.router.add_get("/status", status_lookup, name="web-status-lookup")
    app.router.add_get("/status/{token}", status_page, name="web-status")
    app.router.add_post("/status/{token}", status_post)
    app.router.add_static(STATIC_PREFIX, STATIC, name="web-static")
