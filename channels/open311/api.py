"""Open311 GeoReport v2 at ``/open311/v2/``: existing 311 apps and city systems submit through the standard.

Endpoints (append ``.xml`` or ``.json``; without a suffix the answer is XML, the format the spec makes
mandatory):

* ``GET discovery`` – the service discovery document.
* ``GET services`` – the catalogue (with ``jurisdiction_id``: the services with an office there,
  :func:`services_for`): ``service_code`` is the service id, ``group`` its topic, ``keywords`` its synonyms;
  ``GET services/{code}`` – its definition. The attributes are informational
  (``variable=false``): what to bring, fees, processing time, the online service.
* ``POST requests`` (``api_key`` of a token with role ``open311``) – one request into the queue; answered
  after the commit with the ``service_request_id`` (type ``realtime``) or a ``token`` (``batch``).
* ``GET requests`` (filters ``service_request_id``, ``service_code``, ``start_date``, ``end_date``,
  ``status``, ``jurisdiction_id``; the default window is the most recent 90 days, at most 1000 requests) and
  ``GET requests/{id}``; ``GET tokens/{token}``.
* ``GET servicerequestupdates`` (mySociety's extension, as FixMyStreet's ``Open311.pm`` fetches it with
  ``api_key``, ``start_date`` and ``end_date`` — both or neither): ``<service_request_updates>`` of
  ``<request_update>`` (``update_id``, ``service_request_id``, ``status``, ``updated_datetime``,
  ``description``, ``media_url``), one for every answer of an agent and every closing.

Where this endpoint deliberately differs from common 311 servers: the requests of a D115 hub are
personal matters (a passport, a tax question), not public reports about potholes. So ``GET requests``
and ``GET requests/{id}`` need an ``api_key`` too and show only the requests submitted with that key's
name, and contact data is never returned. One exception, because FixMyStreet asks so for the status of the
reports it sent: a ``service_request_id`` query without a key is answered with the public status fields
alone (status, status_notes, service, agency, dates; no description, place, media or contact). ``GET tokens/{token}`` needs no key (the token is an
unguessable secret) and answers only for requests that came in over Open311.

Cases that come in here have the channel ``open311`` (answers are picked up: ``GET requests``,
``servicerequestupdates``). A ``service_code`` the catalogue knows is the case's service: the routing
stage keeps it (``hub_case.requested_service_id``) and finds only the office from the place and the text;
an unknown code is kept in the text for the agent and the text is routed as any request's.

Mapping: ``service_request_id`` is the case id; ``service_code``/``service_name`` the case's service (as
routed or as an agent re-routed it); ``status`` is ``closed`` for the case states answered and
closed, else ``open``; ``status_notes`` is the latest answer; ``agency_responsible`` is the authority the
case was routed or forwarded to; ``expected_datetime`` the SLA due date; times are ISO 8601 with the
offset of ``[sla] timezone``. ``jurisdiction_id`` is optional; when given it must be the ARS or AGS of a
known region (used as the place when the request has no better one) or one of
``[web] open311_jurisdiction_ids``, else 404; ``lat``/``long`` outside that region are a 400. ``lat``/``long`` without an address are turned into the
municipality with the nearest centre (approximate; the agent sees the coordinates). Every ``media_url``
(FixMyStreet repeats it, one a photo) is recorded, never fetched (an https one also as an attachment by
URL); multipart files ``media``, ``photo1``, ``photo2``… are attachments (at most ``[web] max_attachments``,
each within ``[web] max_upload_bytes``). Every ``attribute[code]`` and ``attribute[code][]`` value (which
311 apps send although this catalogue defines no variable attributes) is kept in the request text for the
agent (at most 20); ``device_id`` and ``account_id`` are ignored.

The Open311 fields the queue has no column for (service code, address, coordinates, media URL) travel
in the external id (``open311:<key name>:<service code>:<random>``) and in a marked block at the end of
the request text, where agents read them and this module reads them back.

Errors are the spec's error list (``<errors><error><code/><description/></error></errors>``) with the
HTTP status: 400 bad input (also a form that is not UTF-8), 403 missing or wrong ``api_key``, 404 unknown
code, id or jurisdiction, 405 a method the resource does not take (with ``Allow``), 413 too large, 503
while the queue is not running. Citizen text is escaped in XML by ElementTree and in
JSON ``<``, ``>`` and ``&`` are written as ``\\u003c`` etc., so a ``<script>`` is inert in both.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import secrets
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import or_, select

from channels.web.form import BadForm, TooLarge, count_rejected, read_form, sniff_type
from channels.web.settings import WebSettings
from hub.http.app import ENGINE, KB, SETTINGS
from hub.http.inputs import MAX_ID, BadParameter, path_id
from hub.http.ratelimit import LIMITS, IntakeLimited, IntakeLimits, client_key, install_limits
from hub.queue.cases import CaseState, case_t, message_t, token_variants
from hub.queue.intake import IntakeUnavailable, RequestRejected
from hub.queue.requests import AttachmentIn, Contact, InboundRequest, normalise_email, normalise_phone
from knowledge.text import safe_html

log = logging.getLogger(__name__)

PREFIX = "/open311/v2"
SPEC_URL = "http://wiki.open311.org/GeoReport_v2"
ROLE = "open311"
CHANNEL = "open311"  # the case channel of requests that came in here
EXT = "{ext:(?:\\.xml|\\.json)?}"
MAX_DESCRIPTION = 4000  # the spec's limit
DEFAULT_WINDOW = timedelta(days=90)
MAX_RESULTS = 1000
CLOSED_STATES = (CaseState.ANSWERED.value, CaseState.CLOSED.value)
ALL_STATES = tuple(state.value for state in CaseState)
MAX_ATTRIBUTES = 20
TRAILER = "--- Open311 ---\n"
_KEYS = {"Adresse": "address", "Adress-ID": "address_id", "Koordinaten": "coordinates", "Medien": "media_url"}
_ZIP = re.compile(r"\b(\d{5})\b")
NEAREST_MAX_KM = 20.0


# -- errors and rendering ------------------------------------------------------------------------------------


class Open311Error(Exception):
    """One or more errors of the spec's error list, answered with ``status``."""

    def __init__(self, status: int, description: str, *more: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.descriptions = [description, *more]
        self.headers = headers or {}


@dataclass(frozen=True)
class Many:
    """A container of repeated elements: ``<{container}><{item}>…`` in XML, a list in JSON (Spark)."""

    item: str
    items: list[Any]


def _xml_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _to_xml(parent: ET.Element, value: Any) -> None:
    if isinstance(value, Many):
        for item in value.items:
            _to_xml(ET.SubElement(parent, value.item), item)
    elif isinstance(value, dict):
        for key, child in value.items():
            _to_xml(ET.SubElement(parent, key), child)
    else:
        parent.text = _xml_text(value)


def _to_json(value: Any) -> Any:
    if isinstance(value, Many):
        return [_to_json(item) for item in value.items]
    if isinstance(value, dict):
        return {key: _to_json(child) for key, child in value.items()}
    return value


def render(fmt: str, root: str, body: Any, status: int = 200) -> web.Response:
    """The document ``body`` under ``root`` as XML (declaration with UTF-8) or JSON (Spark convention)."""
    if fmt == "json":
        text = json.dumps(_to_json(body), ensure_ascii=False)
        # Only string contents can hold these characters; escaped they stay inert even if a browser
        # were made to read the JSON as HTML.
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        content_type = "application/json"
    else:
        element = ET.Element(root)
        _to_xml(element, body)
        text = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="unicode")
        content_type = "text/xml"
    response = web.Response(text=text, status=status, content_type=content_type, charset="utf-8")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def error_response(fmt: str, error: Open311Error) -> web.Response:
    errors = Many("error", [{"code": error.status, "description": d} for d in error.descriptions])
    response = render(fmt, "errors", errors, error.status)
    response.headers.update(error.headers)
    return response


def _fmt(request: web.Request) -> str:
    ext = request.match_info.get("ext") or ""
    if not ext and "tail" in request.match_info:
        ext = "." + request.match_info["tail"].rsplit(".", 1)[-1]
    return "json" if ext == ".json" else "xml"


def handler(fn):
    """Turn :class:`Open311Error` into the error list in the requested format."""

    @functools.wraps(fn)
    async def wrapper(request: web.Request) -> web.Response:
        fmt = _fmt(request)
        try:
            return await fn(request, fmt)
        except BadParameter as exc:  # an id or number out of bounds (hub.http.inputs): 400 in the spec's list
            return error_response(fmt, Open311Error(400, str(exc)))
        except Open311Error as exc:
            if request.method == "POST":
                count_rejected(request, exc.status)
            return error_response(fmt, exc)

    return wrapper


# -- shared look-ups -----------------------------------------------------------------------------------------


def _settings(request: web.Request) -> WebSettings:
    return request.app[SETTINGS].web


def _tz(request: web.Request) -> ZoneInfo:
    return ZoneInfo(request.app[SETTINGS].sla.timezone)


def iso(value: datetime | None, tz: ZoneInfo) -> str | None:
    """W3C/ISO 8601 with the zone offset, e.g. ``2024-05-02T10:15:00+02:00``."""
    return value.astimezone(tz).isoformat(timespec="seconds") if value else None


def _kb(request: web.Request) -> Any:
    kb = request.app.get(KB)
    if kb is None:
        raise Open311Error(503, "Der Leistungskatalog wird noch geladen; bitte versuchen Sie es gleich noch einmal")
    return kb


def _queue(request: web.Request) -> Any:
    from hub.http.api_cases import QUEUE  # imported late: the queue module pulls in the whole queue

    state = request.app.get(QUEUE)
    if state is None or state.service is None or state.tokens is None:
        raise Open311Error(503, "Die Warteschlange läuft nicht; bitte versuchen Sie es gleich noch einmal")
    return state


async def _principal(request: web.Request, params: Any) -> Any:
    key = (params.get("api_key") or request.query.get("api_key") or "").strip()
    if not key:
        raise Open311Error(403, "api_key fehlt")
    principal = await _queue(request).tokens.verify(key)
    if principal is None:
        raise Open311Error(403, "api_key ist ungültig")
    if principal.role != ROLE:
        raise Open311Error(
            403, "Dieser api_key ist kein Open311-Schlüssel (citizen-hub token add NAME --role open311)"
        )
    return principal


def _jurisdiction(request: web.Request, params: Any) -> Any:
    """The region a ``jurisdiction_id`` names (None for a configured id or none given); 404 if unknown."""
    jid = (params.get("jurisdiction_id") or "").strip()
    if not jid or jid in _settings(request).open311_jurisdiction_ids:
        return None
    kb = _kb(request)
    region = None
    if jid.isascii() and jid.isdigit():
        region = kb.regions.get(jid) or (kb.regions.by_ags(jid) if len(jid) == 8 else None)
    if region is None:
        raise Open311Error(404, f"jurisdiction_id {jid[:100]!r} gibt es nicht")
    return region


# -- services ------------------------------------------------------------------------------------------------


def attributes(service: Any) -> list[dict[str, Any]]:
    """Informational attributes (``variable=false``) from the catalogue entry."""
    texts = []
    if service.documents:
        texts.append(("documents", "Mitzubringen: " + "; ".join(service.documents)))
    if service.fees:
        texts.append(("fees", "Gebühren: " + service.fees))
    if service.processing_time:
        texts.append(("processing_time", "Bearbeitungsdauer: " + service.processing_time))
    if service.online_url:
        texts.append(("online_service", "Online-Antrag: " + service.online_url))
    return [
        {
            "variable": False,
            "code": code,
            "datatype": "text",
            "required": False,
            "datatype_description": None,
            "order": i,
            "description": safe_html(text),
        }
        for i, (code, text) in enumerate(texts, 1)
    ]


def service_record(service: Any, settings: WebSettings) -> dict[str, Any]:
    keywords = ", ".join(s.replace(",", " ").strip() for s in (service.synonyms or []) if s.strip())
    return {
        "service_code": service.id,
        "service_name": service.name,
        "description": safe_html(service.short_text) or None,  # the catalogue's HTML, cut to PVOG's tags
        "metadata": bool(attributes(service)),
        "type": settings.open311_type,
        "keywords": keywords or None,
        "group": service.topic or None,
    }


def services_for(kb: Any, region: Any) -> list[Any]:
    """The services valid in ``region`` (every service for None): those with an office responsible there.

    The one place that asks the knowledge base which services a region has, through its public API
    (``services``, ``responsible_for``); an area-aware catalogue replaces this function alone.
    """
    # The knowledge base's one listing (KnowledgeBase.services_at): one row per Leistung, the texts valid
    # in the region's area; never the same service once per catalogue.
    services = kb.services_at(region.ars if region is not None else None)
    if region is None:
        return services
    return [s for s in services if kb.responsible_for(s, region).authority_id is not None]


@handler
async def get_services(request: web.Request, fmt: str) -> web.Response:
    """GET services: one service per Leistung, as the jurisdiction sees it (its area's catalogue), with an office."""
    kb = _kb(request)
    region = _jurisdiction(request, request.query)
    settings = _settings(request)
    services = sorted(services_for(kb, region), key=lambda s: (s.topic or "", s.name))
    return render(fmt, "services", Many("service", [service_record(s, settings) for s in services]))


@handler
async def get_service_definition(request: web.Request, fmt: str) -> web.Response:
    """GET services/{service_code}: the attributes of one service."""
    kb = _kb(request)
    region = _jurisdiction(request, request.query)
    code = request.match_info["code"]
    service = kb.view_at(code, region)  # as the jurisdiction's catalogue shows it
    if service is None:
        raise Open311Error(404, f"service_code {code[:100]!r} gibt es nicht")
    body = {"service_code": code, "attributes": Many("attribute", attributes(service))}
    return render(fmt, "service_definition", body)


@handler
async def get_discovery(request: web.Request, fmt: str) -> web.Response:
    """GET discovery: where the endpoint is, what it speaks, whom to ask."""
    settings = _settings(request)
    kb = request.app.get(KB)
    stamps = [s.updated_at for s in kb.services.values() if s.updated_at] if kb is not None else []
    newest = max(stamps) if stamps else datetime(2024, 1, 1, tzinfo=UTC)
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    changeset = iso(newest, _tz(request))
    base = settings.public_base_url or f"{request.scheme}://{request.host}"
    endpoint = {
        "specification": SPEC_URL,
        "url": base + PREFIX,
        "changeset": changeset,
        "type": settings.open311_endpoint_type,
        "formats": Many("format", ["text/xml", "application/json"]),
    }
    body = {
        "changeset": changeset,
        "contact": settings.open311_contact,
        "key_service": settings.open311_key_service,
        "endpoints": Many("endpoint", [endpoint]),
    }
    return render(fmt, "discovery", body)


# -- POST requests -------------------------------------------------------------------------------------------


def _coordinates(params: Any) -> tuple[float, float] | None:
    lat_s, lon_s = (params.get("lat") or "").strip(), (params.get("long") or "").strip()
    if not lat_s and not lon_s:
        return None
    if not lat_s or not lon_s:
        raise Open311Error(400, "lat und long müssen zusammen gesendet werden")
    try:
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        raise Open311Error(400, "lat und long müssen WGS84-Dezimalgrad sein") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise Open311Error(400, "lat und long müssen WGS84-Dezimalgrad sein")
    return lat, lon


def nearest_municipality(engine: Any, kb: Any, lat: float, lon: float) -> Any:
    """The municipality whose centre is nearest to ``lat``/``lon`` (within 20 km), or None."""
    from knowledge.models import Region

    t = Region.__table__
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.ars, t.c.lat, t.c.lon).where(
                t.c.level == "gemeinde",
                t.c.lat.between(lat - 0.25, lat + 0.25),
                t.c.lon.between(lon - 0.4, lon + 0.4),
            )
        ).all()
    best, best_km = None, NEAREST_MAX_KM
    for ars, rlat, rlon in rows:
        if rlat is None or rlon is None:
            continue
        p1, p2 = math.radians(lat), math.radians(rlat)
        a = (
            math.sin((p2 - p1) / 2) ** 2
            + math.cos(p1) * math.cos(p2) * math.sin(math.radians(rlon - lon) / 2) ** 2
        )
        km = 6371.0 * 2 * math.asin(math.sqrt(a))
        if km <= best_km:
            best, best_km = ars, km
    return kb.regions.get(best) if best else None


def place_for(
    kb: Any,
    engine: Any,
    address: str | None,
    address_id: str | None,
    coords: tuple[float, float] | None,
    region: Any,
) -> tuple[str | None, Any]:
    """The place the router should use, and the municipality found from coordinates (or None).

    The most specific wins: a place named in the address, the address id read as postcode/AGS/ARS, the
    municipality nearest to the coordinates, the jurisdiction's region.
    """
    if address:
        found = kb.regions.resolve(address)
        if found.match is not None or found.ambiguous:
            return address, None
        found = kb.regions.find_in_text(address)
        if found is not None and found.match is not None:
            return found.match.ars, None
    if address_id:
        found = kb.regions.resolve(address_id)
        if found.match is not None:
            return found.match.ars, None
    if coords is not None:
        info = nearest_municipality(engine, kb, *coords)
        if info is not None:
            return info.ars, info
    if region is not None:
        return region.ars, None
    return address, None


def compose_text(
    description: str,
    service: Any,
    address: str | None,
    address_id: str | None,
    coords: tuple[float, float] | None,
    coord_place: Any,
    media_urls: list[str] | str | None,
    jurisdiction: str | None,
    attrs: list[tuple[str, str]] = (),
    code: str | None = None,
) -> str:
    """The request text: the citizen's description, then the marked Open311 block for the agent.

    ``service`` is the catalogue entry of the client's ``service_code``, or None for a code the catalogue
    does not know (``code``, shown to the agent; the text is routed instead)."""
    if service is not None:
        lines = [f"Leistung: {service.name} ({service.id})"]
    else:
        lines = [f"Leistung laut Client (unbekannt, nach Text zugeordnet): {code}"]
    if address:
        lines.append(f"Adresse: {address}")
    if address_id:
        lines.append(f"Adress-ID: {address_id}")
    if coords is not None:
        lines.append(f"Koordinaten: {coords[0]:.6f}, {coords[1]:.6f}")
    if coord_place is not None:
        lines.append(
            f"Ort laut Koordinaten (nächster Gemeindemittelpunkt, ungefähr): {coord_place.display_name}"
        )
    if isinstance(media_urls, str):
        media_urls = [media_urls]
    for url in media_urls or ():
        lines.append(f"Medien: {url}")
    if jurisdiction:
        lines.append(f"jurisdiction_id: {jurisdiction}")
    for code, value in attrs:
        lines.append(f"Attribut {code}: {value}")
    block = TRAILER + "\n".join(lines)
    return f"{description}\n\n{block}" if description else block


def parse_text(text: str) -> tuple[str, dict[str, Any]]:
    """The description and the Open311 fields of a request text written by :func:`compose_text`."""
    head, sep, tail = text.rpartition(TRAILER)
    if not sep:
        return text, {}
    meta: dict[str, Any] = {}
    for line in tail.split("\n"):  # only the separator compose_text writes
        key, _, value = line.partition(": ")
        field = _KEYS.get(key)
        if field == "coordinates":
            try:
                lat_s, lon_s = value.split(",")
                meta["lat"], meta["long"] = float(lat_s), float(lon_s)
            except ValueError:
                pass
        elif field == "media_url":
            meta.setdefault("media_urls", []).append(value)
            meta.setdefault("media_url", value)  # the spec has one media_url: the first
        elif field:
            meta[field] = value
        elif key == "jurisdiction_id":
            meta["jurisdiction_id"] = value
    return head.rstrip("\n"), meta


def _one_line(value: str) -> bool:
    """No control characters and no line or paragraph separators: the value stays one line of the block."""
    return not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value)


def _line(params: Any, name: str, most: int) -> str | None:
    value = (params.get(name) or "").strip()
    if len(value) > most or not _one_line(value):
        raise Open311Error(400, f"{name} muss eine Zeile mit höchstens {most} Zeichen sein")
    return value or None


_ATTRIBUTE = re.compile(r"^attribute\[([^\[\]]{1,100})\](?:\[\])?$")


def _values(value: str, name: str, most: int) -> str | None:
    value = (value or "").strip()
    if len(value) > most or not _one_line(value):
        raise Open311Error(400, f"{name} muss eine Zeile mit höchstens {most} Zeichen sein")
    return value or None


def _attributes(lists: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Every ``attribute[code]`` value a client sent, each of a multi-value list
    (``attribute[code][]=a&attribute[code][]=b``) too, in order; kept for the agent: this catalogue
    defines no variable attributes, but 311 apps send them anyway. At most ``MAX_ATTRIBUTES`` values."""
    out = []
    for key, values in lists.items():
        match = _ATTRIBUTE.match(key)
        if match is None:
            continue
        code = match.group(1).strip()
        if not _one_line(code):
            raise Open311Error(400, "ein attribute-Code muss eine Zeile sein")
        for raw in values:
            value = _values(raw, key, 500)
            if value and code:
                out.append((code, value))
    if len(out) > MAX_ATTRIBUTES:
        raise Open311Error(400, f"höchstens {MAX_ATTRIBUTES} attribute-Werte")
    return out


_PHOTO = re.compile(r"^(?:media|photo\d{1,2})$")


def _media_urls(lists: dict[str, list[str]], most: int) -> list[str]:
    """Every ``media_url`` (FixMyStreet sends one per photo, as repeated fields; ``media_url[]`` too)."""
    urls: list[str] = []
    for name in ("media_url", "media_url[]"):
        for raw in lists.get(name, ()):
            url = _values(raw, "media_url", 1000)
            if not url:
                continue
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                raise Open311Error(400, "media_url muss eine http- oder https-Adresse sein")
            if url not in urls:
                urls.append(url)
    if len(urls) > most:
        raise Open311Error(413, f"höchstens {most} media_url-Werte")
    return urls


def _url_attachment(url: str, n: int) -> AttachmentIn | None:
    """An https ``media_url`` as an attachment recorded by its URL (never fetched); None for http."""
    if not url.startswith("https://") or any(ch.isspace() for ch in url):
        return None
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]).strip() or f"media_url_{n}"
    try:
        return AttachmentIn(filename=name[:255], content_type="application/octet-stream", url=url)
    except ValidationError:
        return AttachmentIn(filename=f"media_url_{n}", content_type="application/octet-stream", url=url)


def external_id(client: str, code: str) -> str:
    return f"open311:{client}:{quote(code, safe='')}:{secrets.token_hex(8)}"


def _code_of(ext_id: str) -> str:
    parts = ext_id.split(":")
    return unquote(parts[2]) if len(parts) >= 4 else ""


async def _read_post(
    request: web.Request, settings: WebSettings
) -> tuple[dict[str, str], list[AttachmentIn], dict[str, list[str]]]:
    """The form's fields (first values), its files (``media``, ``photo1``, ``photo2``… as FixMyStreet
    sends them, at most ``[web] max_attachments``) and every value of each field."""
    most = max(settings.max_attachments, 1)
    try:
        form = await read_form(
            request,
            file_field=_PHOTO.match,
            max_files=most,
            max_file_bytes=settings.max_upload_bytes,
            max_field_bytes=MAX_DESCRIPTION * 4 + 1024,
        )
    except TooLarge:
        raise Open311Error(
            413, f"die Anfrage ist zu groß (höchstens {most} Dateien, jede höchstens "
            f"{settings.max_upload_bytes} Bytes)"
        ) from None
    except BadForm as exc:
        raise Open311Error(
            400,
            str(exc)
            or "bitte senden Sie die Anfrage als application/x-www-form-urlencoded (oder multipart/form-data "
            "mit einer media-Datei)",
        ) from None
    media = []
    for filename, data in form.files:
        kind = sniff_type(data)
        if kind is None or kind not in settings.allowed_attachment_types:
            raise Open311Error(400, "media muss einer dieser Typen sein: " + ", ".join(settings.allowed_attachment_types))
        media.append(AttachmentIn(filename=filename or "media", content_type=kind, data=data))
    return form.fields, media, form.lists


def _inside(kb: Any, engine: Any, region: Any, coords: tuple[float, float]) -> bool:
    """Whether ``coords`` lie in ``region``: the municipality nearest to them is ``region`` or inside it."""
    found = nearest_municipality(engine, kb, *coords)
    return found is not None and any(r.ars == region.ars for r in kb.regions.chain(found.ars))


@handler
async def post_request(request: web.Request, fmt: str) -> web.Response:
    """POST requests: one service request into the queue, answered after it is committed.

    A ``service_code`` the catalogue knows is the case's service (routing finds only the office from the
    place and text); an unknown one is kept for the agent and the text is routed as for any request."""
    settings = _settings(request)
    params, media, lists = await _read_post(request, settings)
    principal = await _principal(request, params)
    kb = _kb(request)
    region = _jurisdiction(request, params)
    code = (params.get("service_code") or "").strip()
    if not code:
        raise Open311Error(400, "service_code fehlt")
    if len(code) > 100 or not _one_line(code):
        raise Open311Error(400, "service_code muss eine Zeile mit höchstens 100 Zeichen sein")
    service = kb.services.get(code)
    problems: list[str] = []
    status = 400

    def check(fn, *args):
        nonlocal status
        try:
            return fn(*args)
        except Open311Error as exc:
            problems.extend(exc.descriptions)
            status = max(status, exc.status)
            return None

    coords = check(_coordinates, params)
    address = check(_line, params, "address_string", 500)
    address_id = check(_line, params, "address_id", 100)
    if coords is None and not address and not address_id and not problems:
        problems.append("ein Ort fehlt: lat und long, address_string oder address_id")
    description = (params.get("description") or "").replace("\r\n", "\n").strip()
    if len(description) > MAX_DESCRIPTION:
        problems.append(f"description darf höchstens {MAX_DESCRIPTION} Zeichen haben")
    email = (params.get("email") or "").strip() or None
    phone = (params.get("phone") or "").strip() or None
    if email:
        try:
            normalise_email(email)
        except ValueError:
            problems.append("email ist keine E-Mail-Adresse")
    if phone:
        try:
            normalise_phone(phone)
        except ValueError:
            problems.append("phone ist keine Telefonnummer (bitte mit Vorwahl oder Ländervorwahl)")
    media_urls = check(_media_urls, lists, max(settings.max_attachments, 1)) or []
    first = check(_line, params, "first_name", 200)
    last = check(_line, params, "last_name", 200)
    attrs = check(_attributes, lists)
    if problems:
        raise Open311Error(413 if status == 413 else 400, *problems)
    engine = request.app[ENGINE]
    if region is not None and coords is not None:
        if not await asyncio.to_thread(_inside, kb, engine, region, coords):
            raise Open311Error(400, f"lat/long {coords[0]:.5f}, {coords[1]:.5f} liegen außerhalb der jurisdiction "
                                    f"{region.display_name} ({region.ars})")
    location, coord_place = await asyncio.to_thread(
        place_for, kb, engine, address, address_id, coords, region
    )
    jid = (params.get("jurisdiction_id") or "").strip() or None
    text = compose_text(
        description, service, address, address_id, coords, coord_place, media_urls, jid, attrs or [], code
    )
    linked = [a for a in (_url_attachment(u, i) for i, u in enumerate(media_urls, 1)) if a is not None]
    try:
        inbound = InboundRequest(
            channel=CHANNEL,
            external_id=external_id(principal.name, code),
            text=text,
            location=(location or "")[:500] or None,
            contact=Contact(name=" ".join(p for p in (first, last) if p) or None, email=email, phone=phone),
            subject=f"Open311: {service.name if service is not None else code}"[:500],
            attachments=[*media, *linked],
            service_id=service.id if service is not None else None,
        )
    except ValidationError:
        raise Open311Error(
            400, "die Anfrage enthält Zeichen, die nicht angenommen werden (Steuerzeichen)"
        ) from None
    result = await _store(request, settings, principal, inbound)
    log.info("open311: request of key %s stored in case %s", principal.name, result.case_id)
    record: dict[str, Any] = {}
    if settings.open311_type == "batch":
        record["token"] = result.token
    else:
        record["service_request_id"] = str(result.case_id)
    record["service_notice"] = (service.processing_time or None) if service is not None else None
    record["account_id"] = None
    return render(fmt, "service_requests", Many("request", [record]))


# -- GET requests --------------------------------------------------------------------------------------------


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _jurisdiction_marker(jid: str) -> Any:
    """Requests submitted with ``jurisdiction_id`` ``jid``: its line in the text block (compose_text)."""
    line = f"\njurisdiction_id: {jid}"
    return or_(message_t.c.text.like("%" + _like(line + "\n") + "%", escape="\\"),
               message_t.c.text.like("%" + _like(line), escape="\\"))


def query_requests(
    engine: Any,
    client: str | None,
    *,
    ids: list[int] | None = None,
    codes: list[str] | None = None,
    states: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    jurisdiction: str | None = None,
    limit: int = MAX_RESULTS,
) -> list[dict[str, Any]]:
    """The Open311 requests of ``client`` (of every client for None: the key-less status query) with
    their latest answer, newest first; ``jurisdiction`` keeps those submitted with that jurisdiction_id."""
    prefix = f"open311:{client}:" if client is not None else "open311:"
    m = message_t.c
    q = (
        select(
            case_t.c.id,
            case_t.c.state,
            case_t.c.created_at,
            case_t.c.updated_at,
            case_t.c.closed_at,
            case_t.c.authority_name,
            case_t.c.service_id,
            case_t.c.service_name,
            case_t.c.requested_service_id,
            case_t.c.first_response_due,
            case_t.c.forward_due,
            m.external_id,
            m.text,
        )
        .join(message_t, m.case_id == case_t.c.id)
        .where(m.channel == CHANNEL, m.direction == "in", m.external_id.like(_like(prefix) + "%", escape="\\"))
    )
    if jurisdiction:
        q = q.where(_jurisdiction_marker(jurisdiction))
    if ids is not None:
        q = q.where(case_t.c.id.in_(ids))
    if codes:
        q = q.where(
            or_(
                case_t.c.service_id.in_(codes),
                *[
                    m.external_id.like(_like(f"{prefix}{quote(c, safe='')}:") + "%", escape="\\")
                    for c in codes
                ]
            )
        )
    if states:
        q = q.where(case_t.c.state.in_(states))
    if start is not None:
        q = q.where(case_t.c.created_at >= start)
    if end is not None:
        q = q.where(case_t.c.created_at <= end)
    q = q.order_by(case_t.c.created_at.desc(), case_t.c.id.desc(), m.id).limit(limit * 2)
    with engine.connect() as conn:
        rows, seen = [], set()
        for r in conn.execute(q).mappings():  # the first inbound message of each case is the request
            if r["id"] not in seen and len(rows) < limit:
                seen.add(r["id"])
                rows.append(dict(r))
        answers: dict[int, str] = {}
        if rows:
            for case_id, text in conn.execute(
                select(m.case_id, m.text)
                .where(m.case_id.in_([r["id"] for r in rows]), m.direction == "out", m.kind == "reply")
                .order_by(m.id)
            ):
                answers[case_id] = text  # the last one wins
    for row in rows:
        row["answer"] = answers.get(row["id"])
    return rows


def request_record(row: dict[str, Any], kb: Any, tz: ZoneInfo, public: bool = False) -> dict[str, Any]:
    """One request as the spec's record. The service is the case's own (as routed, or as an agent
    re-routed it), else the one the client named. ``public`` (the key-less status query): the status
    fields only, no description, place or media."""
    code = row.get("service_id") or row.get("requested_service_id") or _code_of(row["external_id"])
    service = kb.view_at(code, row.get("location")) if kb is not None else None
    name = row.get("service_name") if row.get("service_id") else None
    description, meta = parse_text(row["text"] or "")
    address = meta.get("address")
    zipcode = _ZIP.search(address).group(1) if address and _ZIP.search(address) else None
    closed = row["state"] in CLOSED_STATES
    updated = row["closed_at"] if closed and row["closed_at"] else row["updated_at"]
    expected = (
        row["forward_due"]
        if row["state"] == "forwarded" and row["forward_due"]
        else row["first_response_due"]
    )
    record = {
        "service_request_id": str(row["id"]),
        "status": "closed" if closed else "open",
        "status_notes": row["answer"],
        "service_name": name or (service.name if service is not None else code),
        "service_code": code,
        "description": description or None,
        "agency_responsible": row["authority_name"],
        "service_notice": (service.processing_time or None) if service is not None else None,
        "requested_datetime": iso(row["created_at"], tz),
        "updated_datetime": iso(updated, tz),
        "expected_datetime": iso(expected, tz) if not closed else None,
        "address": address,
        "address_id": meta.get("address_id"),
        "zipcode": zipcode,
        "lat": meta.get("lat"),
        "long": meta.get("long"),
        "media_url": meta.get("media_url"),
    }
    if public:
        for key in ("description", "address", "address_id", "zipcode", "lat", "long", "media_url"):
            record.pop(key)
    return record


def _date(params: Any, name: str, tz: ZoneInfo) -> datetime | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise Open311Error(400, f"{name} muss ein W3C-Zeitpunkt sein, etwa 2024-05-01T00:00:00Z") from None
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


def window(params: Any, tz: ZoneInfo, now: datetime | None = None) -> tuple[datetime, datetime]:
    """``start_date``/``end_date`` with the spec's default: the most recent 90 days, never a longer span."""
    now = now or datetime.now(UTC)
    start, end = _date(params, "start_date", tz), _date(params, "end_date", tz)
    if start is None and end is None:
        return now - DEFAULT_WINDOW, now
    if start is None:
        return end - DEFAULT_WINDOW, end
    if end is None:
        return start, start + DEFAULT_WINDOW
    if end < start:
        raise Open311Error(400, "end_date liegt vor start_date")
    if end - start > DEFAULT_WINDOW:
        raise Open311Error(400, "zwischen start_date und end_date dürfen höchstens 90 Tage liegen")
    return start, end


def _ids(raw: str) -> list[int]:
    out = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(path_id(part, "service_request_id"))
        except BadParameter:
            raise Open311Error(400, "service_request_id muss eine durch Kommas getrennte Liste von Anfragenummern sein "
                                    f"(1 bis {MAX_ID})") from None
    if len(out) > MAX_RESULTS:
        raise Open311Error(400, f"höchstens {MAX_RESULTS} service_request_id-Werte auf einmal")
    return out


def _jid(params: Any) -> str | None:
    return (params.get("jurisdiction_id") or "").strip() or None


@handler
async def get_requests(request: web.Request, fmt: str) -> web.Response:
    """GET requests: the key's requests, filtered; ``service_request_id`` overrides every other filter.

    Without an ``api_key`` only a ``service_request_id`` query is answered (FixMyStreet asks so for the
    status of the reports it sent), with the public status fields of those requests alone."""
    params = request.query
    raw_ids = (params.get("service_request_id") or "").strip()
    public = not (params.get("api_key") or "").strip() and bool(raw_ids)
    principal = None if public else await _principal(request, params)
    kb = _kb(request)
    _jurisdiction(request, params)
    tz = _tz(request)
    if raw_ids:
        kwargs: dict[str, Any] = {"ids": _ids(raw_ids)}
    else:
        statuses = [s.strip() for s in (params.get("status") or "").split(",") if s.strip()]
        bad = [s for s in statuses if s not in ("open", "closed")]
        if bad:
            raise Open311Error(400, "status muss open oder closed sein (durch Kommas getrennt)")
        states = None
        if statuses and set(statuses) != {"open", "closed"}:
            states = (
                list(CLOSED_STATES)
                if statuses[0] == "closed"
                else [s for s in ALL_STATES if s not in CLOSED_STATES]
            )
        start, end = window(params, tz)
        codes = [c.strip() for c in (params.get("service_code") or "").split(",") if c.strip()]
        kwargs = {"codes": codes or None, "states": states, "start": start, "end": end}
    rows = await asyncio.to_thread(query_requests, request.app[ENGINE],
                                   principal.name if principal else None, jurisdiction=_jid(params), **kwargs)
    return render(fmt, "service_requests",
                  Many("request", [request_record(r, kb, tz, public=public) for r in rows]))


@handler
async def get_request(request: web.Request, fmt: str) -> web.Response:
    """GET requests/{service_request_id}: one of the key's requests (its public status fields without a key)."""
    public = not (request.query.get("api_key") or "").strip()
    principal = None if public else await _principal(request, request.query)
    kb = _kb(request)
    _jurisdiction(request, request.query)
    raw = request.match_info["id"]
    request_id = path_id(raw, "service_request_id")
    rows = await asyncio.to_thread(query_requests, request.app[ENGINE], principal.name if principal else None,
                                   ids=[request_id], jurisdiction=_jid(request.query))
    if not rows:
        raise Open311Error(404, f"service_request_id {raw[:40]!r} gibt es nicht")
    return render(fmt, "service_requests",
                  Many("request", [request_record(rows[0], kb, _tz(request), public=public)]))


# -- servicerequestupdates (mySociety's extension, as FixMyStreet's Open311.pm reads it) ----------------------


def query_updates(engine: Any, client: str, start: datetime, end: datetime, jurisdiction: str | None,
                  limit: int = MAX_RESULTS) -> list[dict[str, Any]]:
    """The updates of ``client``'s requests between ``start`` and ``end``: every answer of an agent, and
    every closing of a case, oldest first, with the status the case had right after it."""
    from hub.queue.cases import audit_t

    m, a = message_t.c, audit_t.c
    prefix = f"open311:{client}:"
    mine = select(m.case_id).where(m.channel == CHANNEL, m.direction == "in",
                                   m.external_id.like(_like(prefix) + "%", escape="\\"))
    if jurisdiction:
        mine = mine.where(_jurisdiction_marker(jurisdiction))
    with engine.connect() as conn:
        replies = conn.execute(
            select(m.id, m.case_id, m.created_at, m.text)
            .where(m.case_id.in_(mine), m.direction == "out", m.kind == "reply",
                   m.created_at >= start, m.created_at <= end)
            .order_by(m.created_at, m.id).limit(limit)
        ).all()
        closings = conn.execute(
            select(a.id, a.case_id, a.at).where(a.case_id.in_(mine), a.to_state == CaseState.CLOSED.value,
                                                a.at >= start, a.at <= end)
            .order_by(a.at, a.id).limit(limit)
        ).all()
        cases = {r.case_id for r in replies} | {r.case_id for r in closings}
        history: dict[int, list[tuple[datetime, str]]] = {}
        if cases:
            for case_id, at, to_state in conn.execute(
                select(a.case_id, a.at, a.to_state).where(a.case_id.in_(cases), a.to_state.isnot(None))
                .order_by(a.at, a.id)
            ):
                history.setdefault(case_id, []).append((at, to_state))

    def state_at(case_id: int, when: datetime) -> str | None:
        state = None
        for at, to_state in history.get(case_id, ()):
            if at > when:
                break
            state = to_state
        return state

    updates = [{"update_id": f"m{r.id}", "service_request_id": r.case_id, "at": r.created_at,
                "state": state_at(r.case_id, r.created_at), "description": r.text} for r in replies]
    updates += [{"update_id": f"a{r.id}", "service_request_id": r.case_id, "at": r.at,
                 "state": CaseState.CLOSED.value, "description": "Der Fall ist abgeschlossen."} for r in closings]
    updates.sort(key=lambda u: (u["at"], u["update_id"]))
    return updates[:limit]


@handler
async def get_updates(request: web.Request, fmt: str) -> web.Response:
    """GET servicerequestupdates: the answers and closings of the key's requests (``start_date`` and
    ``end_date`` both or neither; the default window is the most recent 90 days)."""
    params = request.query
    principal = await _principal(request, params)
    _jurisdiction(request, params)
    tz = _tz(request)
    if bool((params.get("start_date") or "").strip()) != bool((params.get("end_date") or "").strip()):
        raise Open311Error(400, "start_date und end_date müssen zusammen angegeben werden")
    start, end = window(params, tz)
    rows = await asyncio.to_thread(query_updates, request.app[ENGINE], principal.name, start, end, _jid(params))
    updates = [
        {
            "update_id": u["update_id"],
            "service_request_id": str(u["service_request_id"]),
            "status": "closed" if u["state"] in CLOSED_STATES else "open",
            "updated_datetime": iso(u["at"], tz),
            "description": u["description"],
            "media_url": None,
        }
        for u in rows
    ]
    return render(fmt, "service_request_updates", Many("request_update", updates))


_CLIENT_STATUS = re.compile(r"^[A-Za-z_ ]{1,40}$")


async def _store(request: web.Request, settings: WebSettings, principal: Any, inbound: InboundRequest) -> Any:
    """Hand ``inbound`` to the queue within the intake limits; the spec's error for every refusal."""
    limits = request.app[LIMITS]
    keys = (("token", principal.name), ("ip", client_key(request, settings.trust_forwarded_for)),
            *IntakeLimits.sender_keys(inbound.contact))
    try:
        limits.check(*keys)
    except IntakeLimited as exc:
        raise Open311Error(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    try:
        result = await _queue(request).service.writer.submit(inbound)
    except RequestRejected as exc:
        limits.refund(*keys)
        raise Open311Error(413 if exc.status == 413 else 400, str(exc)) from None
    except IntakeUnavailable:
        limits.refund(*keys)
        raise Open311Error(503, "die Anfrage konnte nicht gespeichert werden; bitte senden Sie sie noch einmal") from None
    if not result.created:
        limits.refund(*keys)  # the same request again costs nothing
    return result


@handler
async def post_update(request: web.Request, fmt: str) -> web.Response:
    """POST servicerequestupdates: a comment on a request the key submitted (FixMyStreet's
    post_service_request_update), stored as a follow-up of its case; idempotent by the client's update_id.

    The commenter need not be the citizen of the case (anyone may comment on a FixMyStreet report), so their
    name and address go into the text for the agent and never into the case's contact."""
    settings = _settings(request)
    params, media, lists = await _read_post(request, settings)
    principal = await _principal(request, params)
    _jurisdiction(request, params)
    raw_id = (params.get("service_request_id") or "").strip()
    if not raw_id:
        raise Open311Error(400, "service_request_id fehlt")
    case_id = path_id(raw_id, "service_request_id")
    problems: list[str] = []
    description = (params.get("description") or "").replace("\r\n", "\n").strip()
    if not description and not media:
        problems.append("description fehlt")
    if len(description) > MAX_DESCRIPTION:
        problems.append(f"description darf höchstens {MAX_DESCRIPTION} Zeichen haben")
    fields: dict[str, str | None] = {}
    for name, most in (("update_id", 100), ("first_name", 200), ("last_name", 200), ("email", 254),
                       ("status", 40), ("updated_datetime", 40)):
        try:
            fields[name] = _line(params, name, most)
        except Open311Error as exc:
            problems.extend(exc.descriptions)
    if fields.get("status") and not _CLIENT_STATUS.match(fields["status"] or ""):
        problems.append("status muss ein Wort wie OPEN oder CLOSED sein")
    try:
        media_urls = _media_urls(lists, max(settings.max_attachments, 1))
    except Open311Error as exc:
        problems.extend(exc.descriptions)
        media_urls = []
    if problems:
        raise Open311Error(400, *problems)
    rows = await asyncio.to_thread(query_requests, request.app[ENGINE], principal.name, ids=[case_id])
    if not rows:
        raise Open311Error(404, f"service_request_id {raw_id[:40]!r} gibt es nicht")
    who = " ".join(p for p in (fields["first_name"], fields["last_name"]) if p and p != "-")
    lines = [f"Kommentar über Open311 (Status laut Client: {fields['status'] or 'keiner'})"]
    if who or fields["email"]:
        lines.append(f"Von: {who or '-'}" + (f" <{fields['email']}>" if fields["email"] else ""))
    lines += [f"Medien: {url}" for url in media_urls]
    text = f"{description}\n\n{TRAILER}" + "\n".join(lines) if description else TRAILER + "\n".join(lines)
    update_id = fields["update_id"] or secrets.token_hex(8)
    linked = [a for a in (_url_attachment(u, i) for i, u in enumerate(media_urls, 1)) if a is not None]
    try:
        inbound = InboundRequest(
            channel=CHANNEL,
            # Not "open311:<key>:…": that prefix marks the requests themselves (GET requests lists those).
            external_id=f"open311-update:{principal.name}:{quote(update_id, safe='')}"[:255],
            text=text,
            subject="Open311: Kommentar",
            in_reply_to=[rows[0]["external_id"]],
            attachments=[*media, *linked],
        )
    except ValidationError:
        raise Open311Error(
            400, "die Ergänzung enthält Zeichen, die nicht angenommen werden (Steuerzeichen)"
        ) from None
    result = await _store(request, settings, principal, inbound)
    log.info("open311: update of key %s stored in case %s", principal.name, result.case_id)
    return render(fmt, "service_request_updates", Many("request_update", [{"update_id": str(result.message_id)}]))


def _case_of_token(engine: Any, token: str) -> int | None:
    with engine.connect() as conn:
        return conn.execute(
            select(case_t.c.id)
            .join(message_t, message_t.c.case_id == case_t.c.id)
            .where(
                case_t.c.token.in_(token_variants(token)),
                message_t.c.channel == CHANNEL,
                message_t.c.direction == "in",
                message_t.c.external_id.like("open311:%"),
            )
            .limit(1)
        ).scalar()


@handler
async def get_token(request: web.Request, fmt: str) -> web.Response:
    """GET tokens/{token}: the service_request_id of a request that was answered with a token."""
    _jurisdiction(request, request.query)
    token = request.match_info["token"]
    case_id = None
    if re.fullmatch(r"[A-Za-z0-9_-]{16,64}", token):
        case_id = await asyncio.to_thread(_case_of_token, request.app[ENGINE], token)
    if case_id is None:
        raise Open311Error(404, "token gibt es nicht")
    return render(
        fmt, "service_requests", Many("request", [{"service_request_id": str(case_id), "token": token}])
    )


@handler
async def not_found(request: web.Request, fmt: str) -> web.Response:
    """Any other path under /open311/v2: the spec's error list with 404."""
    raise Open311Error(404, "diese Open311-Ressource gibt es nicht; siehe discovery.xml")


def _method_not_allowed(allowed: tuple[str, ...]):
    @handler
    async def refuse(request: web.Request, fmt: str) -> web.Response:
        """A method this Open311 resource does not take: 405 with Allow and the spec's error list."""
        raise Open311Error(
            405, f"{request.method} ist hier nicht erlaubt; bitte {' oder '.join(allowed)} verwenden",
            headers={"Allow": ", ".join(allowed)},
        )

    return refuse


def setup(app: web.Application) -> None:
    """Add the Open311 GeoReport v2 routes under ``/open311/v2``."""
    install_limits(app)
    r = app.router
    # (path, {method: handler}, route name). Other methods on a known path get 405 with the error list.
    table = (
        (f"{PREFIX}/discovery{EXT}", {"GET": get_discovery}, "open311-discovery"),
        (PREFIX, {"GET": get_discovery}, None),
        (PREFIX + "/", {"GET": get_discovery}, None),
        (f"{PREFIX}/services{EXT}", {"GET": get_services}, "open311-services"),
        (f"{PREFIX}/services/{{code:[^/]+?}}{EXT}", {"GET": get_service_definition}, "open311-service"),
        (f"{PREFIX}/requests{EXT}", {"GET": get_requests, "POST": post_request}, "open311-requests"),
        (f"{PREFIX}/requests/{{id:[^/]+?}}{EXT}", {"GET": get_request}, "open311-request"),
        (f"{PREFIX}/tokens/{{token:[^/]+?}}{EXT}", {"GET": get_token}, "open311-token"),
        (f"{PREFIX}/servicerequestupdates{EXT}", {"GET": get_updates, "POST": post_update}, "open311-updates"),
    )
    for path, methods, name in table:
        resource = r.add_resource(path, name=name)
        for method, fn in methods.items():
            resource.add_route(method, fn)
            if method == "GET":
                resource.add_route("HEAD", fn)
        resource.add_route("*", _method_not_allowed(tuple(methods)))
    r.add_route("*", f"{PREFIX}/{{tail:.*}}", not_found)
