"""The agent console: search as you type, the answer card, calls, the queue, live updates, the dashboard.

Pages (HTML, jinja2 with autoescape on; every page also works without JavaScript):

* ``GET/POST /console/login``, ``POST /console/logout``
* ``GET /console/`` – one search box and a place field; ``?q=&place=&service=`` renders the results and
  the answer card on the server, ``static/console.js`` does the same as you type (the card follows the
  highlighted hit).
* ``GET /console/find?q=`` – find a case or a caller by case token, ``#number``, phone number or e-mail
  address, with the caller's earlier cases (:mod:`hub.console.search`); ``GET /console/api/find?q=`` as JSON.
* ``GET /console/queue`` – cases of the agent's authorities, filtered by state, channel and overdue.
* ``GET /console/cases/{id}`` – one case with its whole thread; reply, forward, re-route, close.
* ``GET /console/dashboard`` – supervisors: the D115 service levels for a period (:mod:`hub.console.dashboard`).

JSON and actions (``require_login``; writes need the session's CSRF token):

* ``GET /console/api/lookup?q=&location=`` – ranked services with the responsible authority, whether it
  is open now, and ``took_ms``; the Server-Timing header carries the same figure.
* ``POST /console/calls`` (start), ``POST /console/calls/{id}/first-contact|forward|send``
* ``GET /console/api/queue``, ``GET /console/api/cases/{id}``
* ``GET /console/api/cases/{id}/offices?q=``, ``…/services?q=`` – the forward/re-route pickers
  (:mod:`hub.console.pickers`); the actions check the chosen ids with the same rules.
* ``POST /console/cases/{id}/reply|forward|reroute|close``
* ``GET /console/events`` – server-sent events: ``case`` events (id, state, authority; never content)
  for the cases the account may see, from a poll of the audit log and the messages (so changes made by
  other hub processes arrive too).

Actions answer JSON when the request asks for it (``Accept: application/json``), otherwise they redirect
back to the page (303). Nothing personal is logged: ids, counts and states only.

Cases of other authorities answer 404, as if they did not exist. Every page carries a strict
Content-Security-Policy (no inline script or style), ``Cache-Control: no-store`` and frame denial.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web
from markupsafe import Markup
from pydantic import ValidationError
from sqlalchemy import func, select

from hub import casework
from hub.console import dashboard, pickers, search
from hub.console.answers import case_card_text, configured_channels, offered, reply_templates
from hub.console.auth import (
    AUTH,
    CSRF_FIELD,
    PRINCIPAL,
    AuthState,
    Principal,
    authenticate,
    create_session,
    end_session,
    error_response,
    require_login,
)
from hub.console.calls import (
    CARD_CHANNELS,
    CallError,
    call_json,
    finish_first_contact,
    forward_call,
    get_call,
    send_card,
    start_call,
)
from hub.console.events import EventHub
from hub.console.settings import ConsoleSettings, console_settings
from hub.http.api_cases import QUEUE
from hub.http.app import ENGINE, KB, SETTINGS
from hub.http.csrf import FIELD as LOGIN_CSRF_FIELD
from hub.http.csrf import CsrfProtect
from hub.http.inputs import MAX_ID, MAX_PAGE, BadParameter, int_param, path_id
from hub.http.ratelimit import RateLimiter, client_key
from hub.plugins import recipient_refusal
from hub.queue.cases import (
    FINAL_STATES,
    STATE_LABELS,
    CaseState,
    SlaPolicy,
    TransitionError,
    attachment_t,
    audit_t,
    case_t,
    message_t,
    overdue_clause,
)
from hub.queue.outbox import answer_route, callback_number
from hub.queue.requests import (
    ANSWER_LABELS,
    CHANNEL_LABELS,
    CHANNELS,
    Contact,
    normalise_email,
    normalise_phone,
)
from hub.queue.settings import queue_settings
from hub.queue.sla import SlaSettings
from knowledge.models import format_hours, open_now

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
AGENT_ROLES = ("agent", "supervisor", "admin")
#: States of cases that still wait for someone (the queue's "offen", the dashboard's queue depth).
WORK_STATES = dashboard.WORK_STATES
SUPERVISOR_ROLES = ("supervisor", "admin")
PAGE_SIZE = 50

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

KIND_LABELS = {"request": "Anfrage", "reply": "Antwort", "forward": "Weiterleitung", "follow_up": "Nachtrag",
               "auto_reply": "automatische Antwort", "confirmation": "Eingangsbestätigung", "note": "Notiz"}
SEND_STATE_LABELS = {"pending": "wartet auf Versand", "sending": "wird gesendet", "sent": "gesendet",
                     "failed": "fehlgeschlagen", "uncertain": "unklar, ob zugestellt"}
ACTION_LABELS = {"transition": "Statuswechsel", "reroute": "neu zugeordnet", "follow_up": "Nachtrag",
                 "forward": "weitergeleitet", "reply": "beantwortet", "close": "geschlossen"}
# Fixed confirmation texts chosen by a key in the redirect: nothing the user typed goes into a URL.
NOTICES = {
    "reply": "Die Antwort ist im Postausgang.",
    "forward": "Der Fall ist weitergeleitet.",
    "reroute": "Der Fall ist neu zugeordnet.",
    "close": "Der Fall ist geschlossen.",
    "call-first-contact": "Anruf beendet: beim Erstkontakt beantwortet.",
    "call-forward": "Anruf beendet: an die zuständige Stelle weitergeleitet.",
    "call-send": "Die Auskunft ist im Postausgang.",
    "call-start": "Anruf läuft.",
}
#: How the console's messages name the form fields.
FIELD_LABELS = {
    "text": "Antwort", "note": "Notiz", "reason": "Grund", "service_id": "Leistung", "authority_id": "Behörde",
    "channel": "Kanal", "to": "Nummer oder Adresse", "answered_within_s": "Wartezeit", "place": "Ort",
    "caller_name": "Name", "caller_phone": "Rückrufnummer", "caller_email": "E-Mail-Adresse",
}
_HTML_HINT = re.compile(r"<\s*(html|body|div|p|br|table|span|a)\b", re.I)


# -- state -----------------------------------------------------------------------------------------------


@dataclass
class ConsoleState:
    settings: ConsoleSettings
    sla: SlaSettings
    policy: SlaPolicy
    env: jinja2.Environment
    login_csrf: CsrfProtect
    login_limit: RateLimiter
    events: EventHub
    tz: ZoneInfo
    #: argon2 takes 64 MiB and tens of milliseconds per check: a burst of log-ins waits here instead of
    #: filling the thread pool (and the memory) with verifications.
    login_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))
    #: The channels answers can be sent on when the queue does not run in this process (computed once).
    configured: frozenset[str] | None = None


CONSOLE = web.AppKey("console_state", ConsoleState)


def _local(value: datetime | None, tz: ZoneInfo, fmt: str = "%d.%m.%Y %H:%M") -> str:
    return value.astimezone(tz).strftime(fmt) if value else ""


def safe_url(value: str | None) -> str:
    """Only http(s) links from the catalogue become links; anything else (``javascript:``) becomes ``#``."""
    return value if isinstance(value, str) and value.lower().startswith(("https://", "http://")) else "#"


def make_environment(tz: ZoneInfo) -> jinja2.Environment:
    """Templates with autoescape on for every file; an undefined name is an error, not an empty string."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["local"] = lambda v, fmt="%d.%m.%Y %H:%M": _local(v, tz, fmt)
    env.filters["hours"] = lambda h: format_hours(h or {})
    env.filters["state_label"] = lambda s: STATE_LABELS.get(s, s)
    env.filters["channel_label"] = lambda c: CHANNEL_LABELS.get(c, c)
    env.filters["answer_label"] = lambda c: ANSWER_LABELS.get(c) or CHANNEL_LABELS.get(c, c)
    env.filters["kind_label"] = lambda k: KIND_LABELS.get(k, k)
    env.filters["send_state_label"] = lambda k: SEND_STATE_LABELS.get(k, k)
    env.filters["action_label"] = lambda k: ACTION_LABELS.get(k, k)
    env.filters["safe_url"] = safe_url
    env.filters["pct"] = lambda v: "–" if v is None else f"{v * 100:.0f} %"
    return env


# -- helpers ----------------------------------------------------------------------------------------------


def _state(request: web.Request) -> ConsoleState:
    return request.app[CONSOLE]


def _kb(request: web.Request):
    kb = request.app.get(KB)
    if kb is None:
        raise web.HTTPServiceUnavailable(text="Die Wissensbasis lädt noch; bitte gleich noch einmal versuchen.")
    return kb


def _queue_service(request: web.Request):
    """The queue service of :mod:`hub.http.api_cases` (it runs the outbox); None while it is starting."""
    state = request.app.get(QUEUE)
    return state.service if state is not None else None


def _policy(request: web.Request) -> SlaPolicy:
    service = _queue_service(request)
    return service.policy if service is not None else _state(request).policy


def _wake_outbox(request: web.Request) -> None:
    service = _queue_service(request)
    if service is not None:
        service.dispatcher.wake()


def _adapters(request: web.Request) -> set[str] | None:
    """Channels the outbox of this process can send on (None when the queue does not run here)."""
    service = _queue_service(request)
    if service is None:
        return None
    return set(service.dispatcher.adapters)


def _configured(request: web.Request) -> frozenset[str]:
    """The channels answers can be sent on (:func:`hub.console.answers.configured_channels`, one rule)."""
    adapters = _adapters(request)
    if adapters is not None:
        return configured_channels(None, adapters)
    state = _state(request)
    if state.configured is None:
        state.configured = configured_channels(request.app[SETTINGS], None)
    return state.configured


def _principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "") or request.content_type == "application/json"


class BadInput(Exception):
    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: web.Request) -> dict[str, str]:
    """A JSON object or a form as ``{name: str}``; booleans and numbers of JSON come back as text."""
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise BadInput("Die Anfrage ist kein gültiges JSON.", 400) from None
        if not isinstance(data, dict):
            raise BadInput("Die Anfrage muss ein JSON-Objekt sein.", 400)
        out = {}
        for key, value in data.items():
            if isinstance(value, bool):
                out[key] = "1" if value else ""
            elif isinstance(value, (int, float)):
                out[key] = str(value)
            elif isinstance(value, str):
                out[key] = value
            elif value is not None:
                raise BadInput(f"„{key}“ muss Text sein.", 400)
        return out
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _field(body: Mapping[str, str], name: str, *, max_len: int = 500, required: bool = False) -> str | None:
    value = (body.get(name) or "").strip()
    if not value:
        if required:
            raise BadInput(f"Bitte „{FIELD_LABELS.get(name, name)}“ angeben.")
        return None
    if len(value) > max_len:
        raise BadInput(f"„{FIELD_LABELS.get(name, name)}“ ist länger als {max_len} Zeichen.")
    return value


def _done(request: web.Request, location: str, payload: dict[str, Any], status: int = 200) -> web.StreamResponse:
    if wants_json(request):
        return _json(payload, status)
    raise web.HTTPSeeOther(location)


def _fail(request: web.Request, status: int, message: str) -> web.Response:
    return error_response(request, status, message)


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    state = _state(request)
    principal = request.get(PRINCIPAL)
    base = {"principal": principal, "csrf_token": principal.csrf_token if principal else "",
            "csrf_field": CSRF_FIELD, "is_supervisor": bool(principal and principal.role in SUPERVISOR_ROLES),
            "notice": NOTICES.get(request.query.get("done", ""), ""), "active": context.pop("active", "")}
    html = state.env.get_template(f"console/{template}").render(**base, **context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def _int_id(raw: str) -> int:
    """An id from the path; 400 when it is no id at all (:func:`hub.http.inputs.path_id`)."""
    return path_id(raw)


# -- lookup and the answer card ----------------------------------------------------------------------------


def authority_card(a: Mapping[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    """An authority as the card shows it: contact, opening hours and whether it is open right now."""
    if not a:
        return None
    hours = a.get("opening_hours") or {}
    return dict(a) | {"open_now": open_now(hours, now) if hours else None, "hours_text": format_hours(hours)}


def lookup_json(kb, query: str, location: str | None, limit: int, now: datetime) -> dict[str, Any]:
    result = kb.lookup(query, location or None, limit=limit).to_json() if query.strip() else None
    if result is None:  # no words yet: resolve the place only, so the place field can show what it found
        place = kb.resolve_place(location) if location else None
        result = {"query": "", "results": [],
                  "location": ({"ars": place.match.ars, "name": place.match.display_name, "level": place.match.level}
                               if place and place.match else None),
                  "location_candidates": ([{"ars": r.ars, "name": r.display_name, "level": r.level}
                                           for r, _ in place.candidates] if place and place.ambiguous else []),
                  "location_reason": place.reason if place else None}
    for r in result["results"]:
        r["authority"] = authority_card(r["authority"], now)
        for c in r["authority_candidates"]:
            c["authority"] = authority_card(c["authority"], now)
    result["location_candidates"] = result["location_candidates"][:12]
    return result


@require_login(AGENT_ROLES)
async def api_lookup(request: web.Request) -> web.Response:
    """Search as you type: the agent's words and the caller's place → ranked services with the card data."""
    started = time.perf_counter()
    kb = _kb(request)
    q = request.query.get("q", "")[:500]
    location = request.query.get("location", "")[:200].strip() or None
    state = _state(request)
    now = datetime.now(state.tz)
    result = lookup_json(kb, q, location, state.settings.lookup_max_results, now)
    took = (time.perf_counter() - started) * 1000
    result["took_ms"] = round(took, 2)
    return _json(result, headers={"Server-Timing": f"lookup;dur={took:.2f}", "Cache-Control": "no-store"})


def resolve_answer(kb, service_id: str | None, place: str | None, authority_id: str | None
                   ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The service and the authority for a call action; the authority from the place unless one is chosen."""
    from knowledge.base import authority_json, service_json

    service = kb.view_at(service_id)
    if service is None:
        raise BadInput("Bitte eine Leistung aus den Suchergebnissen wählen.")
    if authority_id:
        authority = kb.authorities.get(authority_id)
        if authority is None:
            raise BadInput("Unbekannte Behörde – bitte eine Behörde aus der Suche wählen.")
        return service_json(service), authority_json(authority)
    resolution = kb.resolve_place(place) if place else None
    if resolution is None or resolution.match is None:
        if resolution is not None and resolution.ambiguous:
            raise BadInput("Der Ort ist mehrdeutig: bitte die Behörde oder den genauen Ort wählen.")
        return service_json(service), None
    # The description as this place sees it: gaps of the chosen text filled from wider catalogues.
    service = kb.view_at(service, resolution.match)
    responsible = kb.responsible_for(service, resolution.match)
    authority = kb.authorities.get(responsible.authority_id or "")
    return service_json(service), authority_json(authority) if authority else None


@require_login(AGENT_ROLES)
async def page_console(request: web.Request) -> web.Response:
    """The lookup console; with ``q`` the results and the card are rendered on the server too."""
    kb = request.app.get(KB)
    state = _state(request)
    q = request.query.get("q", "")[:500]
    place = request.query.get("place", "")[:200]
    selected = request.query.get("service", "")
    call_id = int_param(request.query.get("call"), "call", minimum=1, maximum=MAX_ID, default=0)
    call = None
    if call_id:
        row = await asyncio.to_thread(get_call, request.app[ENGINE], call_id)
        # Only the agent's own call, and only while it runs (a finished call's link starts nothing).
        if row is not None and row["agent"] == _principal(request).name and row["outcome"] is None:
            call = call_json(row)
    result = None
    card = None
    if kb is not None and (q.strip() or place.strip()):
        result = lookup_json(kb, q, place, state.settings.lookup_max_results, datetime.now(state.tz))
        if result["results"]:
            card = next((r for r in result["results"] if r["service"]["id"] == selected), result["results"][0])
    return render(request, "lookup.html", active="lookup", q=q, place=place, result=result, card=card, call=call,
                  kb_ready=kb is not None, card_channels=offered(CARD_CHANNELS, _configured(request)))


# -- find a case or a caller ----------------------------------------------------------------------------------


async def _find(request: web.Request) -> dict[str, Any]:
    q = request.query.get("q", "")[: search.MAX_QUERY]
    return await asyncio.to_thread(search.find_cases, request.app[ENGINE], q, _principal(request).scope,
                                   request.app.get(KB), _state(request).settings.find_max_results)


@require_login(AGENT_ROLES)
async def page_find(request: web.Request) -> web.Response:
    """Find a case or a caller: token, ``#number``, phone number or e-mail address, with earlier cases."""
    found = await _find(request)
    return render(request, "find.html", active="find", found=found)


@require_login(AGENT_ROLES)
async def api_find(request: web.Request) -> web.Response:
    """The same search as JSON (only cases the account's scope covers)."""
    return _json(await _find(request), headers={"Cache-Control": "no-store"})


# -- calls --------------------------------------------------------------------------------------------------


def _call_location(body: Mapping[str, str], call_id: int) -> str:
    return "/console/?" + urlencode({"call": call_id, "place": body.get("place", "")[:200]})


@require_login(AGENT_ROLES)
async def post_call_start(request: web.Request) -> web.StreamResponse:
    """Start a call record when the agent picks up; ``answered_within_s`` is the caller's wait (optional);
    ``case_id`` when the agent calls back a citizen who asked for it (the call belongs to that case)."""
    try:
        body = await read_body(request)
        wait_raw = _field(body, "answered_within_s", max_len=10)
        wait = float(wait_raw.replace(",", ".")) if wait_raw else None
        case_id = _callback_case(_field(body, "case_id", max_len=12))
        scope, kb = _principal(request).scope, request.app.get(KB)
        call_id = await asyncio.to_thread(start_call, request.app[ENGINE], _principal(request).name, wait,
                                          case_id=case_id, visible=lambda row: scope.covers_case(row, kb))
    except ValueError:
        return _fail(request, 422, "Die Wartezeit muss eine Zahl von Sekunden sein.")
    except (BadInput, CallError) as exc:
        return _fail(request, exc.status, str(exc))
    return _done(request, _call_location(body, call_id) + "&done=call-start", {"call_id": call_id}, 201)


def _callback_case(raw: str | None) -> int | None:
    """The case a callback call belongs to (``case_id`` of the call start), None for an incoming call."""
    if not raw:
        return None
    try:
        return path_id(raw, "case_id")
    except BadParameter as exc:
        raise BadInput(str(exc), 400) from None


def _contact(body: Mapping[str, str]) -> Contact:
    phone = _field(body, "caller_phone", max_len=40)
    email = _field(body, "caller_email", max_len=254)
    try:
        return Contact(name=_field(body, "caller_name", max_len=200), phone=phone, email=email)
    except ValidationError as exc:
        field_name = str(exc.errors()[0]["loc"][0]) if exc.errors() else "contact"
        raise BadInput(f"{FIELD_LABELS.get('caller_' + field_name, field_name)} des Anrufers ist ungültig.") from None


async def _call_action(request: web.Request, action: str) -> web.StreamResponse:
    call_id = _int_id(request.match_info["call_id"])
    principal = _principal(request)
    engine = request.app[ENGINE]
    policy = _policy(request)
    queue = queue_settings(request.app[SETTINGS])
    try:
        body = await read_body(request)
        kb = _kb(request)
        place = _field(body, "place", max_len=200)
        authority_id = _field(body, "authority_id", max_len=100)
        if action == "first-contact":
            service_id = _field(body, "service_id", max_len=100)
            service = authority = None
            if service_id:
                try:
                    service, authority = resolve_answer(kb, service_id, place, authority_id)
                except BadInput:
                    if service_id not in kb.services:
                        raise
                    # An ambiguous place does not stop the call from ending: the service is recorded,
                    # the authority stays open (such a call counts only for admins' figures).
                    service, authority = resolve_answer(kb, service_id, None, None)
            call = await asyncio.to_thread(finish_first_contact, engine, call_id, principal.name, service=service,
                                           authority=authority, policy=policy)
            payload: dict[str, Any] = {"call": call_json(call)}
        elif action == "forward":
            service, authority = resolve_answer(kb, _field(body, "service_id", max_len=100, required=True), place,
                                                authority_id)
            if authority is None:
                raise BadInput("Keine Behörde: bitte den Ort des Anrufers angeben oder die Behörde wählen.")
            if not authority.get("email"):
                raise BadInput(f"{authority['name']} hat keine E-Mail-Adresse; bitte von Hand weiterleiten.", 409)
            note = _field(body, "note", max_len=5000, required=True) or ""
            out = await asyncio.to_thread(forward_call, engine, call_id, principal.name, service=service,
                                          authority=authority, note=note, contact=_contact(body), location=place,
                                          policy=policy, queue=queue)
            _wake_outbox(request)
            payload = {"call": call_json(out["call"]), "case_id": out["case_id"],
                       "forward_due": out["forward_due"], "authority": {"id": authority["id"],
                                                                         "name": authority["name"]}}
        else:  # send
            service, authority = resolve_answer(kb, _field(body, "service_id", max_len=100, required=True), place,
                                                authority_id)
            channel = _field(body, "channel", max_len=10, required=True)
            if channel not in CARD_CHANNELS:
                raise BadInput("Die Karte geht per SMS oder E-Mail.")
            if channel not in _configured(request):
                raise BadInput(f"Auf diesem Hub ist kein Versand per {CHANNEL_LABELS[channel]} eingerichtet.", 409)
            raw = _field(body, "to", max_len=254, required=True) or ""
            try:
                recipient = normalise_phone(raw) if channel == "sms" else normalise_email(raw)
            except ValueError:
                raise BadInput("Die Nummer oder Adresse ist ungültig.") from None
            out = await asyncio.to_thread(send_card, engine, call_id, principal.name, service=service,
                                          authority=authority, channel=channel, recipient=recipient, location=place,
                                          policy=policy, queue=queue)
            _wake_outbox(request)
            payload = out
    except (BadInput, CallError) as exc:
        return _fail(request, exc.status, str(exc))
    except TransitionError as exc:
        return _fail(request, 409, str(exc))
    log.info("console: call %s %s", call_id, action)
    location = _call_location(body, call_id) if action == "send" else "/console/"
    return _done(request, location + ("&" if "?" in location else "?") + f"done=call-{action}", payload)


@require_login(AGENT_ROLES)
async def post_call_first_contact(request: web.Request) -> web.StreamResponse:
    """The question was answered during the call (counts towards the first-contact rate)."""
    return await _call_action(request, "first-contact")


@require_login(AGENT_ROLES)
async def post_call_forward(request: web.Request) -> web.StreamResponse:
    """Forward the caller's question with the agent's note; the answer is due in 24 working hours."""
    return await _call_action(request, "forward")


@require_login(AGENT_ROLES)
async def post_call_send(request: web.Request) -> web.StreamResponse:
    """Send the answer card to the caller by SMS or e-mail (through the outbox)."""
    return await _call_action(request, "send")


# -- the queue -----------------------------------------------------------------------------------------------


def _queue_filters(query: Mapping[str, str]) -> dict[str, Any]:
    state = query.get("state", "open")
    if state not in ("open", "all", *(s.value for s in CaseState)):
        state = "open"
    channel = query.get("channel", "")
    if channel not in CHANNELS:
        channel = ""
    overdue = query.get("overdue", "") in ("1", "true", "on")
    # The clarification queue: cases without an office (hub.scope decides who sees them).
    clarification = query.get("clarification", "") in ("1", "true", "on")
    page = int_param(query.get("page"), "page", minimum=1, maximum=MAX_PAGE, default=1)
    return {"state": state, "channel": channel, "overdue": overdue, "clarification": clarification, "page": page}


def list_queue(engine, scope_clause, filters: Mapping[str, Any], now: datetime,
               tz: ZoneInfo | None = None) -> dict[str, Any]:
    from hub.http.api_cases import case_summary

    tz = tz or ZoneInfo("Europe/Berlin")
    where = [] if scope_clause is None else [scope_clause]
    if filters["state"] == "open":
        where.append(case_t.c.state.in_(WORK_STATES))
    elif filters["state"] != "all":
        where.append(case_t.c.state == filters["state"])
    if filters["channel"]:
        where.append(case_t.c.channel == filters["channel"])
    if filters["overdue"]:
        where.append(overdue_clause(now))
    if filters.get("clarification"):
        where.append(case_t.c.authority_id.is_(None))
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(case_t).where(*where)).scalar_one()
        rows = conn.execute(select(case_t).where(*where).order_by(case_t.c.id)
                            .offset((filters["page"] - 1) * PAGE_SIZE).limit(PAGE_SIZE)).mappings().all()
    cases = []
    for r in rows:
        summary = case_summary(r, now)
        # The queue shows no contact data; the case page does.
        due = r["forward_due"] if r["forward_due"] is not None and r["forward_met_at"] is None \
            else r["first_response_due"] if r["first_responded_at"] is None else None
        summary |= {"location": r["location"], "created_local": _local(r["created_at"], tz),
                    "due_local": _local(due, tz)}
        cases.append(summary)
    return {"cases": cases, "total": total, "page": filters["page"], "per_page": PAGE_SIZE}


@require_login(AGENT_ROLES)
async def api_queue(request: web.Request) -> web.Response:
    """The queue as JSON (what the queue page reloads on a live event)."""
    principal = _principal(request)
    filters = _queue_filters(request.query)
    clause = principal.scope.case_clause(request.app.get(KB))
    data = await asyncio.to_thread(list_queue, request.app[ENGINE], clause, filters, datetime.now(UTC),
                                   _state(request).tz)
    return _json(data, headers={"Cache-Control": "no-store"})


@require_login(AGENT_ROLES)
async def page_queue(request: web.Request) -> web.Response:
    """The agent's queue page: cases of their authorities, filtered by state, channel and overdue."""
    principal = _principal(request)
    filters = _queue_filters(request.query)
    clause = principal.scope.case_clause(request.app.get(KB))
    data = await asyncio.to_thread(list_queue, request.app[ENGINE], clause, filters, datetime.now(UTC),
                                   _state(request).tz)
    pages = max(1, -(-data["total"] // PAGE_SIZE))
    return render(request, "queue.html", active="queue", filters=filters, data=data, pages=pages,
                  states=[s.value for s in CaseState], channels=CHANNELS,
                  clarification_team=principal.scope.works_clarification(request.app.get(KB)))


# -- one case ------------------------------------------------------------------------------------------------


def display_text(message: Mapping[str, Any]) -> str:
    """What the console shows of a message: plain text; HTML that slipped through becomes sanitised text.

    The template escapes it in any case; this only makes HTML mail readable instead of showing markup.
    """
    text = message.get("text") or ""
    if message.get("channel") == "email" and _HTML_HINT.search(text):
        from knowledge.text import html_to_text

        return html_to_text(text)
    return text


def load_case(engine, case_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().first()
        if row is None:
            return None
        messages = conn.execute(select(message_t).where(message_t.c.case_id == case_id)
                                .order_by(message_t.c.id)).mappings().all()
        attachments = conn.execute(
            select(attachment_t.c.message_id, attachment_t.c.filename, attachment_t.c.content_type,
                   attachment_t.c.size_bytes, attachment_t.c.url)
            .join(message_t, attachment_t.c.message_id == message_t.c.id)
            .where(message_t.c.case_id == case_id)).mappings().all()
        trail = conn.execute(select(audit_t).where(audit_t.c.case_id == case_id).order_by(audit_t.c.id)
                             ).mappings().all()
    by_message: dict[int, list[dict[str, Any]]] = {}
    for a in attachments:
        by_message.setdefault(a["message_id"], []).append(dict(a))
    return {"row": dict(row),
            "messages": [dict(m) | {"display": display_text(m), "attachments": by_message.get(m["id"], [])}
                         for m in messages],
            "audit": [dict(a) for a in trail]}


async def _visible_case(request: web.Request) -> dict[str, Any]:
    """The case of the URL if the account may see it; 404 otherwise (also for other authorities' cases)."""
    case_id = _int_id(request.match_info["case_id"])
    data = await asyncio.to_thread(load_case, request.app[ENGINE], case_id)
    if data is None or not _principal(request).scope.covers_case(data["row"], request.app.get(KB)):
        raise web.HTTPNotFound(text="Diesen Fall gibt es nicht.")
    return data


def case_json(data: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    from hub.http.api_cases import case_summary

    row = data["row"]
    out = case_summary(row, now)
    out |= {
        "location": row["location"],
        "contact": {"name": row["contact_name"], "email": row["contact_email"], "phone": row["contact_phone"]},
        "messages": [{"id": m["id"], "direction": m["direction"], "kind": m["kind"], "channel": m["channel"],
                      "created_at": m["created_at"], "subject": m["subject"], "text": m["display"],
                      "author": m["author"], "recipient": m["recipient"] if m["direction"] == "out" else None,
                      "send_state": m["send_state"],
                      "attachments": [a["filename"] for a in m["attachments"]]} for m in data["messages"]],
    }
    return out


@require_login(AGENT_ROLES)
async def api_case(request: web.Request) -> web.Response:
    """One case with its whole thread as JSON (only for an agent of its authority)."""
    data = await _visible_case(request)
    return _json(case_json(data, datetime.now(UTC)), headers={"Cache-Control": "no-store"})


def _picker_query(request: web.Request, name: str) -> str:
    return request.query.get(name, "")[: pickers.MAX_QUERY]


@require_login(AGENT_ROLES)
async def api_case_offices(request: web.Request) -> web.Response:
    """The forward/re-route office picker: offices valid at the case's place matching ``q``."""
    data = await _visible_case(request)
    found = pickers.find_offices(_kb(request), data["row"], _picker_query(request, "q"))
    return _json({"offices": found}, headers={"Cache-Control": "no-store"})


@require_login(AGENT_ROLES)
async def api_case_services(request: web.Request) -> web.Response:
    """The re-route service picker: services valid at the case's place for ``q``, with the office there."""
    data = await _visible_case(request)
    found = pickers.find_services(_kb(request), data["row"], _picker_query(request, "q"))
    return _json({"services": found}, headers={"Cache-Control": "no-store"})


def _answer_box(request: web.Request, row: Mapping[str, Any], kb) -> dict[str, Any]:
    """Reply templates, the card as text, and (without JavaScript) the text chosen by ``?einfuegen=``."""
    templates = reply_templates(_state(request).settings.reply_templates, row)
    card = case_card_text(kb, row)
    prefill = ""
    insert = request.query.get("einfuegen", "")
    if insert == "karte" and card:
        prefill = card
    elif insert == "vorlage":
        index = int_param(request.query.get("vorlage"), "vorlage", minimum=0, maximum=len(templates), default=0)
        prefill = templates[index]["text"] if index < len(templates) else ""
    return {"templates": templates, "card_text": card, "prefill": prefill}


def _pickers_context(request: web.Request, row: Mapping[str, Any], kb) -> dict[str, Any]:
    """What the forward and re-route pickers show without JavaScript (the page's own search result lists)."""
    if kb is None:
        return {"fwd_q": "", "fwd_offices": [], "rr_q": "", "rr_services": [], "rr_office_q": "", "rr_offices": []}
    fwd_q, rr_q, rr_office_q = (_picker_query(request, n) for n in ("fwd_q", "rr_q", "rr_office_q"))
    return {"fwd_q": fwd_q, "fwd_offices": pickers.find_offices(kb, row, fwd_q),
            "rr_q": rr_q, "rr_services": pickers.find_services(kb, row, rr_q),
            "rr_office_q": rr_office_q, "rr_offices": pickers.find_offices(kb, row, rr_office_q)}


def _unreachable(engine, channel: str, recipient: str | None) -> str | None:
    """Why an answer would not reach the citizen (:func:`hub.plugins.recipient_refusal`, the rule
    :func:`hub.casework.reply` applies), shown before the agent writes it."""
    with engine.connect() as conn:
        return recipient_refusal(conn, channel, recipient)


@require_login(AGENT_ROLES)
async def page_case(request: web.Request) -> web.Response:
    """The case page: the thread in both directions, escaped, with answer, forward, re-route and close."""
    data = await _visible_case(request)
    from hub.http.api_cases import case_summary

    row = data["row"]
    kb = request.app.get(KB)
    authority = kb.authorities.get(row["authority_id"]) if kb is not None and row["authority_id"] else None
    adapters = _adapters(request)
    answer_channel, answer_recipient = answer_route(row)  # the channel the citizen chose, else the case's
    can_answer = answer_channel in casework.PICKUP_CHANNELS or answer_recipient is not None
    configured = _configured(request) if adapters is None else frozenset(adapters)
    channel_missing = answer_channel not in configured and answer_channel not in casework.PICKUP_CHANNELS
    nearest = await asyncio.to_thread(_nearest_cases, request, data) if kb is not None else []
    unreachable = await asyncio.to_thread(_unreachable, request.app[ENGINE], answer_channel, answer_recipient)
    return render(request, "case.html", active="queue", case=row, summary=case_summary(row), thread=data["messages"],
                  audit=data["audit"], authority=authority, final=row["state"] in FINAL_STATES,
                  can_answer=can_answer, channel_missing=channel_missing, answer_channel=answer_channel,
                  unreachable=unreachable,
                  answer_recipient=answer_recipient, nearest=nearest, callback=callback_number(row),
                  callback_due=_local(row["first_response_due"], _state(request).tz),
                  **_answer_box(request, row, kb), **_pickers_context(request, row, kb))


def _nearest_cases(request: web.Request, data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The past confirmed cases behind the learned router's suggestion (hub.learning.nearest_cases).

    A neighbour's text is shown only when the agent may see its case (or it is imported history, which
    belongs to the area); otherwise only its service and similarity.
    """
    from sqlalchemy import select

    from hub.learning import nearest_cases
    from hub.queue.cases import case_t

    engine, kb = request.app[ENGINE], request.app[KB]
    row = data["row"]
    text = "\n\n".join(m["text"] for m in data["messages"] if m["direction"] == "in" and m.get("text"))
    if not text.strip():
        return []
    found = nearest_cases(engine, kb, text, row["location"])
    ids = [n["case_id"] for n in found if n["case_id"] is not None and n["case_id"] != row["id"]]
    rows = {}
    if ids:
        with engine.connect() as conn:
            rows = {r["id"]: r for r in conn.execute(select(case_t).where(case_t.c.id.in_(ids))).mappings()}
    scope = _principal(request).scope
    out = []
    for n in found:
        if n["case_id"] == row["id"]:
            continue
        other = rows.get(n["case_id"]) if n["case_id"] is not None else None
        visible = n["case_id"] is None or (other is not None and scope.covers_case(other, kb))
        out.append({**n, "text": n["text"][:300] if visible else None})
    return out


def _casework(engine, case_id: int, action, /, **kwargs: Any) -> dict[str, Any]:
    """One :mod:`hub.casework` action on a case; its refusals become the page's error messages."""
    try:
        return casework.run(engine, case_id, action, **kwargs)
    except casework.CaseworkError as exc:
        raise BadInput(str(exc), exc.status) from None


def _pick(check, *args: Any) -> Any:
    """A picker's server-side check (:mod:`hub.console.pickers`); its refusal becomes the page's message."""
    try:
        return check(*args)
    except pickers.PickError as exc:
        raise BadInput(str(exc), exc.status) from None


async def _case_action(request: web.Request, action: str) -> web.StreamResponse:
    data = await _visible_case(request)
    case_id = data["row"]["id"]
    principal = _principal(request)
    engine = request.app[ENGINE]
    kb_now = request.app.get(KB)
    # The scope is asked again inside the action's transaction (the case may be re-routed meanwhile).
    common = {"agent": principal.name, "policy": _policy(request),
              "visible": lambda row: principal.scope.covers_case(row, kb_now)}
    queue = queue_settings(request.app[SETTINGS])
    try:
        body = await read_body(request)
        if action == "reply":
            text = _field(body, "text", max_len=20_000, required=True) or ""
            result = await asyncio.to_thread(
                _casework, engine, case_id, casework.reply, text=text, await_citizen=bool(body.get("await_citizen")),
                reason="in der Konsole beantwortet", sendable=_adapters(request), queue=queue, **common)
            _wake_outbox(request)
        elif action == "forward":
            kb = _kb(request)
            authority_id = _field(body, "authority_id", max_len=100) or data["row"]["authority_id"]
            if not authority_id:
                raise BadInput("Bitte die Behörde wählen, an die weitergeleitet wird.")
            authority = _pick(pickers.check_office, kb, data["row"], authority_id)
            result = await asyncio.to_thread(
                _casework, engine, case_id, casework.forward,
                authority={"id": authority.id, "name": authority.name, "email": authority.email},
                note=_field(body, "note", max_len=5000), queue=queue, **common)
            result = {k: result[k] for k in ("message_id", "state", "forward_due")}
            _wake_outbox(request)
        elif action == "reroute":
            kb = _kb(request)
            service = _pick(pickers.check_service, kb, data["row"], _field(body, "service_id", max_len=100,
                                                                           required=True))
            authority_id = _field(body, "authority_id", max_len=100)
            if authority_id:
                authority = _pick(pickers.check_office, kb, data["row"], authority_id, service)
            else:  # no office chosen: the one responsible for the service at the case's place
                authority = pickers.responsible_office(kb, data["row"], service)
                if authority is None:
                    raise BadInput(f"Für „{service.name}“ ist am Ort des Falls keine Behörde bekannt – bitte "
                                   "eine Behörde aus der Suche wählen.")
            result = await asyncio.to_thread(
                _casework, engine, case_id, casework.reroute, service={"id": service.id, "name": service.name},
                authority={"id": authority.id, "name": authority.name}, reason=_field(body, "reason", max_len=1000),
                **common)
        else:
            result = await asyncio.to_thread(_casework, engine, case_id, casework.close,
                                             reason=_field(body, "reason", max_len=1000) or "in der Konsole geschlossen",
                                             **common)
    except BadInput as exc:
        return _fail(request, exc.status, str(exc))
    except TransitionError as exc:
        return _fail(request, 409, str(exc))
    log.info("console: case %s %s by %s", case_id, action, principal.user_id)
    return _done(request, f"/console/cases/{case_id}?done={action}", result, 201 if action != "close" else 200)


@require_login(AGENT_ROLES)
async def post_case_reply(request: web.Request) -> web.StreamResponse:
    """Answer on the case's channel (outbox); the case is answered, or waits when the reply asks something."""
    return await _case_action(request, "reply")


@require_login(AGENT_ROLES)
async def post_case_forward(request: web.Request) -> web.StreamResponse:
    """Forward the case to the responsible authority with the agent's note (24 working hours)."""
    return await _case_action(request, "forward")


@require_login(AGENT_ROLES)
async def post_case_reroute(request: web.Request) -> web.StreamResponse:
    """Correct the case's service and authority; the correction is kept as a labelled example."""
    return await _case_action(request, "reroute")


@require_login(AGENT_ROLES)
async def post_case_close(request: web.Request) -> web.StreamResponse:
    """Close the case with a reason."""
    return await _case_action(request, "close")


# -- live updates ----------------------------------------------------------------------------------------------


@require_login(AGENT_ROLES)
async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``case`` (a visible case changed or got a message) and ``resync`` (reload all)."""
    state = _state(request)
    auth = request.app[AUTH]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    sub = state.events.subscribe(_principal(request))
    try:
        await response.write(b"retry: 3000\nevent: hello\ndata: {}\n\n")
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), state.settings.events_heartbeat_seconds)
            except TimeoutError:
                if await auth.principal(request) is None:  # logged out or expired meanwhile
                    await response.write(b"event: logout\ndata: {}\n\n")
                    break
                await response.write(b": ping\n\n")
                continue
            if event is None:
                break
            name = "resync" if event.get("kind") == "resync" else "case"
            await response.write(f"event: {name}\ndata: {json.dumps(event)}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        state.events.unsubscribe(sub)
    return response


# -- dashboard --------------------------------------------------------------------------------------------------


@require_login(SUPERVISOR_ROLES)
async def page_dashboard(request: web.Request) -> web.Response:
    """The supervisor dashboard: the D115 promises against reality for a chosen period, with charts."""
    state = _state(request)
    principal = _principal(request)
    try:
        period = dashboard.Period.from_query(request.query.get("from"), request.query.get("to"), state.tz,
                                             state.settings.dashboard_default_days, state.settings.dashboard_max_days)
    except ValueError as exc:
        return _fail(request, 400, str(exc))
    figures = await asyncio.to_thread(dashboard.compute, request.app[ENGINE], period, principal.scope,
                                      request.app.get(KB), state.settings, datetime.now(UTC))
    charts = {name: Markup(svg) for name, svg in dashboard.charts(figures, state.settings).items()}
    return render(request, "dashboard.html", active="dashboard", period=period, f=figures, charts=charts,
                  settings=state.settings)


@require_login(SUPERVISOR_ROLES)
async def api_dashboard(request: web.Request) -> web.Response:
    """The dashboard's figures as JSON for a chosen period (supervisors and admins)."""
    state = _state(request)
    try:
        period = dashboard.Period.from_query(request.query.get("from"), request.query.get("to"), state.tz,
                                             state.settings.dashboard_default_days, state.settings.dashboard_max_days)
    except ValueError as exc:
        return _json({"error": str(exc)}, 400)
    figures = await asyncio.to_thread(dashboard.compute, request.app[ENGINE], period, _principal(request).scope,
                                      request.app.get(KB), state.settings, datetime.now(UTC))
    return _json(figures.to_json(), headers={"Cache-Control": "no-store"})


# -- log-in ------------------------------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only a path of the console itself: never another host (``//evil``) or scheme."""
    if value and value.startswith("/console/") and not value.startswith("//") and "\\" not in value \
            and len(value) < 2000 and not value.startswith("/console/logout"):
        return value
    return "/console/"


def _login_page(request: web.Request, status: int = 200, error: str = "") -> web.Response:
    state = _state(request)
    cookie, fresh = state.login_csrf.cookie_value(request)
    response = render(request, "login.html", status=status, error=error, login_token=state.login_csrf.token(cookie),
                      login_field=LOGIN_CSRF_FIELD, next=_safe_next(request.query.get("next")))
    if fresh:
        state.login_csrf.set_cookie(response, cookie, secure=state.settings.cookie_secure)
    return response


async def get_login(request: web.Request) -> web.StreamResponse:
    """The log-in form."""
    if await request.app[AUTH].principal(request) is not None:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
    return _login_page(request)


async def post_login(request: web.Request) -> web.StreamResponse:
    """Log in: checks the CSRF token, the rate limit and the lockout, then the argon2 hash."""
    state = _state(request)
    source = client_key(request)
    allowed, retry_after = state.login_limit.take(source)
    if not allowed:
        response = _login_page(request, 429, "Zu viele Anmeldeversuche von diesem Gerät. Bitte warten Sie kurz.")
        response.headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
        return response
    form = await request.post()
    token = form.get(LOGIN_CSRF_FIELD)
    if not state.login_csrf.check(request, token if isinstance(token, str) else None):
        return _login_page(request, 403, "Das Anmeldeformular ist abgelaufen. Bitte versuchen Sie es noch einmal.")
    name = form.get("name")
    password = form.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        return _login_page(request, 400, "Bitte Name und Passwort eingeben.")
    engine = request.app[ENGINE]
    async with state.login_slots:
        result = await asyncio.to_thread(authenticate, engine, name.strip(), password, state.settings,
                                         source=source)
    if not result.ok or result.user_id is None:
        log.info("console: failed log-in (%s)", result.reason)
        return _login_page(request, 401, "Anmeldung fehlgeschlagen: Name oder Passwort falsch – oder das Konto ist "
                                         "nach zu vielen Fehlversuchen vorübergehend gesperrt.")
    session = await asyncio.to_thread(create_session, engine, result.user_id, state.settings)
    target = form.get("next")
    response = web.HTTPSeeOther(_safe_next(target if isinstance(target, str) else None))
    request.app[AUTH].set_cookie(response, session)
    log.info("console: account %s logged in", result.user_id)
    raise response


@require_login(AGENT_ROLES)
async def post_logout(request: web.Request) -> web.StreamResponse:
    """Log out: ends the session on the server and clears the cookie."""
    token = request.cookies.get("chub_console", "")
    auth = request.app[AUTH]
    await asyncio.to_thread(end_session, request.app[ENGINE], token)
    auth.forget(token)
    response = web.HTTPSeeOther("/console/login")
    auth.clear_cookie(response)
    raise response


# -- static files and headers ---------------------------------------------------------------------------------


async def static_file(request: web.Request) -> web.StreamResponse:
    """The console's own CSS and JavaScript."""
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound(text="Diese Datei gibt es nicht.")
    return web.FileResponse(STATIC / name, headers={"Content-Type": STATIC_FILES[name],
                                                    "Cache-Control": "public, max-age=300"})


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    if not request.path.startswith("/console"):
        return
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    if not request.path.startswith("/console/static/"):
        response.headers["Cache-Control"] = "no-store"


async def _root_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/console/")


# -- set-up ---------------------------------------------------------------------------------------------------------

#: (method, path, handler). Every handler except log-in, the /console redirect and static files is wrapped by
#: ``require_login``; tests/test_console_routes.py walks the app's router and fails on a route that answers
#: without a session unless its allow-list names it.
ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("GET", "/console", _root_redirect),
    ("GET", "/console/", page_console),
    ("GET", "/console/login", get_login),
    ("POST", "/console/login", post_login),
    ("POST", "/console/logout", post_logout),
    ("GET", "/console/api/lookup", api_lookup),
    ("GET", "/console/find", page_find),
    ("GET", "/console/api/find", api_find),
    ("POST", "/console/calls", post_call_start),
    ("POST", "/console/calls/{call_id}/first-contact", post_call_first_contact),
    ("POST", "/console/calls/{call_id}/forward", post_call_forward),
    ("POST", "/console/calls/{call_id}/send", post_call_send),
    ("GET", "/console/queue", page_queue),
    ("GET", "/console/api/queue", api_queue),
    ("GET", "/console/cases/{case_id}", page_case),
    ("GET", "/console/api/cases/{case_id}", api_case),
    ("GET", "/console/api/cases/{case_id}/offices", api_case_offices),
    ("GET", "/console/api/cases/{case_id}/services", api_case_services),
    ("POST", "/console/cases/{case_id}/reply", post_case_reply),
    ("POST", "/console/cases/{case_id}/forward", post_case_forward),
    ("POST", "/console/cases/{case_id}/reroute", post_case_reroute),
    ("POST", "/console/cases/{case_id}/close", post_case_close),
    ("GET", "/console/events", events),
    ("GET", "/console/dashboard", page_dashboard),
    ("GET", "/console/api/dashboard", api_dashboard),
    ("GET", "/console/static/{name}", static_file),
)


def build_state(settings: Any, engine, kb_getter) -> ConsoleState:
    cs = console_settings(settings)
    sla = settings.sla
    tz = ZoneInfo(sla.timezone)
    secret = cs.csrf_secret.encode() if cs.csrf_secret else secrets.token_bytes(32)
    if not cs.csrf_secret:
        log.warning("console: no [console] csrf_secret configured; using a random key for this process")
    return ConsoleState(
        settings=cs, sla=sla, policy=SlaPolicy(sla), env=make_environment(tz),
        login_csrf=CsrfProtect(secret, max_age=12 * 3600),
        login_limit=RateLimiter(cs.login_rate_per_minute, cs.login_burst),
        events=EventHub(engine, cs.events_poll_seconds, kb_getter), tz=tz,
    )


def setup(app: web.Application) -> None:
    """Add the console's routes; expects ``hub.http.app.SETTINGS`` and ``hub.http.app.ENGINE`` in the app."""
    settings = app[SETTINGS]
    engine = app[ENGINE]
    state = build_state(settings, engine, lambda: app.get(KB))
    app[CONSOLE] = state
    app[AUTH] = AuthState(engine, state.settings)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.on_response_prepare.append(_headers)

    async def start(app: web.Application) -> None:
        from hub.migrate import upgrade

        # The console's tables (and the queue's it reads) must exist; upgrading is a no-op when they do.
        await asyncio.to_thread(upgrade, engine)
        await state.events.start()

    async def stop(app: web.Application) -> None:
        await state.events.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
