"""HTTP API of the queue: intake for service accounts, the case API for agents, metrics.

* ``POST /api/requests`` (service token) – one request in; ``201`` new / ``200`` seen before, with
  ``{"case_id", "token", "state"}``, answered only after the commit.
* ``GET /api/cases`` and ``GET /api/cases/{id}`` (agent token).
* ``POST /api/cases/{id}/transition|reroute|reply|forward`` (agent token).

An agent token sees and works only the cases of its scope, by the console's rule (:mod:`hub.scope`):
cases of other authorities answer 404, as if they did not exist; a token without a scope (made before
scopes existed) gets 403 until an admin scopes it. ``POST /api/requests`` counts against the intake
limits (:class:`hub.http.ratelimit.IntakeLimits`: the token and the contact's address and number; 429
with ``Retry-After``).
* ``GET /metrics`` (Prometheus), ``GET /api/openapi.json`` (see :mod:`hub.http.openapi`).

Bad input gets a 4xx with ``{"error": message, "code": kind}`` and stores nothing: ``error`` is the German
text for people, ``code`` the stable kind for programs (``stale_state``, ``invalid_transition``, ``not_found``,
…; :data:`hub.http.app.ERROR_CODES` by status), ``details`` the field errors, and a refused state change
names the states (``from``, ``to``, ``allowed``) and the case (``case_id``). Message bodies are never logged.

``setup(app)`` expects ``hub.http.app.SETTINGS`` and ``hub.http.app.ENGINE`` in the app; the knowledge base
(``hub.http.app.KB``) is used as the router once loaded. Tests may put a ready :class:`QueueService` into
``app[QUEUE]`` before start-up.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from hub import casework
from hub.http.app import (
    ENGINE,
    INVALID_REQUEST,
    KB,
    SEND_JSON,
    SETTINGS,
    TOKEN_REQUIRED,
    TOKEN_UNKNOWN,
    body_too_large,
    error_code,
    field_errors,
)
from hub.http.inputs import (
    MAX_PAGE,
    StrictJsonError,
    int_param,
    may_have_duplicate_keys,
    path_id,
    strict_loads,
)
from hub.http.metrics import MetricsListener, metrics_guard, request_timer
from hub.http.metrics import render as render_metrics
from hub.http.ratelimit import LIMITS, IntakeLimited, IntakeLimits, install_limits
from hub.http.tokens import Principal, TokenVerifier
from hub.queue.cases import (
    CaseState,
    TransitionError,
    attachment_t,
    audit_t,
    case_t,
    message_t,
    overdue_clause,
)
from hub.queue.intake import IntakeUnavailable, RequestRejected
from hub.queue.outbox import callback_number
from hub.queue.requests import CHANNELS, InboundRequest
from hub.queue.workers import QueueService

log = logging.getLogger(__name__)


@dataclass
class QueueState:
    """What the API needs at run time (filled at start-up; the app itself is frozen by then)."""

    service: QueueService | None = None
    tokens: TokenVerifier | None = None
    owns_service: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


QUEUE = web.AppKey("queue_state", QueueState)

routes = web.RouteTableDef()

# -- request bodies (also the source of the OpenAPI schemas) ---------------------------------------

Text = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
Reason = Annotated[str, StringConstraints(max_length=1000)]


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    email: str | None = None
    phone: str | None = None


class RequestIn(BaseModel):
    """Body of ``POST /api/requests``."""

    model_config = ConfigDict(extra="forbid")
    channel: Literal["api", "web"] = Field("api", description="'api' for systems, 'web' for the hub's web forms.")
    external_id: Annotated[str, StringConstraints(min_length=1, max_length=255)] = Field(
        description="Your id of this request; sending the same id again returns the same case (200)."
    )
    text: Text = Field(description="What the citizen asks, as plain text.")
    location: Annotated[str, StringConstraints(max_length=500)] | None = Field(
        None, description="Place the request is about: municipality, postcode or AGS."
    )
    contact: ContactIn = Field(default_factory=ContactIn, description="How to reach the citizen (all optional).")


class TransitionIn(BaseModel):
    """Body of ``POST /api/cases/{id}/transition``."""

    model_config = ConfigDict(extra="forbid")
    to: CaseState = Field(description="Target state.")
    reason: Reason | None = Field(None, description="Why (goes into the audit log; no personal data).")


class RerouteIn(BaseModel):
    """Body of ``POST /api/cases/{id}/reroute``."""

    model_config = ConfigDict(extra="forbid")
    service_id: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    authority_id: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    reason: Reason | None = None


class ReplyIn(BaseModel):
    """Body of ``POST /api/cases/{id}/reply``."""

    model_config = ConfigDict(extra="forbid")
    text: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    await_citizen: bool = Field(
        False, description="True when the reply asks the citizen something: the case waits (SLA paused)."
    )
    reason: Reason | None = None


class ForwardIn(BaseModel):
    """Body of ``POST /api/cases/{id}/forward``."""

    model_config = ConfigDict(extra="forbid")
    authority_id: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        None, description="Responsible authority; default: the case's."
    )
    note: Annotated[str, StringConstraints(max_length=5000)] | None = Field(None, description="Note for the authority.")


class CaseRef(BaseModel):
    """Answer of ``POST /api/requests``."""

    case_id: int
    token: str
    state: CaseState


BODY_MODELS: dict[str, type[BaseModel]] = {
    "RequestIn": RequestIn, "TransitionIn": TransitionIn, "RerouteIn": RerouteIn, "ReplyIn": ReplyIn,
    "ForwardIn": ForwardIn, "CaseRef": CaseRef,
}


# -- plumbing ---------------------------------------------------------------------------------------


class ApiError(Exception):
    """A refusal: ``message`` in German for people, ``code`` (default: by status) for programs."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None, *,
                 code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or error_code(status)
        self.headers = dict(headers or {})
        self.extra = extra


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False, default=str))


def api(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Turn :class:`ApiError` into ``{"error": message, "code": kind, ...}`` with its status."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            state = request.app[QUEUE]
            if state.service is not None and request.path == "/api/requests":
                state.service.metrics.count_rejected(exc.status)
            response = _json({"error": str(exc), "code": exc.code, **exc.extra}, exc.status)
            response.headers.update(exc.headers)
            return response

    return wrapper


def _state(request: web.Request) -> tuple[QueueService, TokenVerifier]:
    state = request.app[QUEUE]
    if state.service is None or state.tokens is None:
        raise ApiError(503, "Die Warteschlange startet gerade; bitte versuchen Sie es gleich noch einmal")
    return state.service, state.tokens


async def authorise(request: web.Request, role: str, tokens: TokenVerifier | None = None) -> Principal:
    """The caller's token if it has ``role`` (401 without a valid bearer token, 403 with another role; an agent
    token also needs a scope): the one check of every route of a token API, the channels' ones too."""
    if tokens is None:
        _service, tokens = _state(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, TOKEN_REQUIRED, code="token_required")
    principal = await tokens.verify(token.strip())
    if principal is None:
        raise ApiError(401, TOKEN_UNKNOWN, code="token_invalid")
    if principal.role != role:
        raise ApiError(403, f"Dafür ist ein Token mit der Rolle „{role}“ nötig", code="wrong_role", role=role)
    if role == "agent" and (principal.scope is None or principal.scope.empty):
        raise ApiError(403, "Dieses Agent-Token hat keinen Zuständigkeitsbereich; ein Admin vergibt ihn mit "
                            f"'citizen-hub token scope {principal.name} --authority ID | --region ARS | "
                            "--all-authorities'", code="no_scope")
    return principal


def _max_body(request: web.Request) -> int:
    settings = request.app.get(SETTINGS)
    return settings.server.max_body_bytes if settings is not None else 1_048_576


async def _read_body(request: web.Request) -> bytes:
    """The raw body, read with the configured size limit (413), after checking it is declared JSON (415)."""
    limit = _max_body(request)
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, body_too_large(limit))
    if request.content_type != "application/json":
        raise ApiError(415, SEND_JSON)
    if length is not None:
        # The declared length is within the limit, and aiohttp's parser delivers no more than it.
        return await request.read()
    body = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, body_too_large(limit))
    return bytes(body)


def _parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, decoded strictly (:func:`hub.http.inputs.strict_loads`: duplicate keys,
    NaN and giant numbers are refused, as by the catalogue API)."""
    try:
        data = strict_loads(body)
    except StrictJsonError as exc:
        raise ApiError(400, str(exc), code="bad_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Der Inhalt muss ein JSON-Objekt sein", code="bad_json")
    return data


async def _read_json(request: web.Request) -> Any:
    """The JSON body, read with the configured size limit (413) and checked to be a JSON object."""
    return _parse_json(await _read_body(request))


def _details(exc: ValidationError) -> list[dict[str, str]]:
    """Field, German message and pydantic's error type; never pydantic's "input", which would echo
    (possibly personal) data back."""
    return field_errors(exc)


def _validate(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, INVALID_REQUEST, details=_details(exc)) from None


def _case_id(request: web.Request) -> int:
    return path_id(request.match_info["case_id"], "case_id")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# -- intake -------------------------------------------------------------------------------------------


def _request_in(body: bytes) -> RequestIn:
    """Parse and check the body of ``POST /api/requests`` in one pass of pydantic's JSON parser.

    Whatever that pass refuses (bad JSON, not an object, a field error) goes through the general
    path again (``json.loads``, then the model), so the client gets exactly the 400/422 answer the
    other endpoints give; only valid bodies take the fast path, and they come out the same.
    """
    if not may_have_duplicate_keys(body):
        try:
            return RequestIn.model_validate_json(body)
        except ValidationError:
            pass
    return _validate(RequestIn, _parse_json(body))


def _inbound_general(body: bytes) -> InboundRequest:
    """The request of a ``POST /api/requests`` body: :class:`RequestIn`, then :class:`InboundRequest`.

    Either step's refusal is the client's answer (400/422, with the fields at fault).
    """
    checked = _request_in(body)
    contact = checked.contact
    try:
        return InboundRequest(
            channel=checked.channel, external_id=checked.external_id, text=checked.text,
            location=checked.location, contact={"name": contact.name, "email": contact.email, "phone": contact.phone},
        )
    except ValidationError as exc:
        raise ApiError(422, INVALID_REQUEST, details=_details(exc)) from None


class _ApiInbound(InboundRequest):
    """An :class:`InboundRequest` with the limits :class:`RequestIn` puts on the fields they share.

    Validating the body as this in one pass gives the same request as :func:`_inbound_general`
    where the body uses no field beyond RequestIn's (:func:`_inbound` checks that); two pydantic
    passes, RequestIn and then InboundRequest, were the largest part of the intake handler.
    """

    channel: Literal["api", "web"] = "api"
    text: Text


_API_FIELDS = frozenset(RequestIn.model_fields)
_API_CONTACT_FIELDS = frozenset(ContactIn.model_fields)


def _inbound(body: bytes) -> InboundRequest:
    """The request of a ``POST /api/requests`` body, as :func:`_inbound_general` gives it, mostly in one pass.

    Whatever the one pass refuses, and any body with a field RequestIn does not have (InboundRequest
    has more), takes the general path, so every answer and every stored value stays exactly as
    there (``tests/test_api_inbound.py`` compares them, valid and hostile bodies alike).
    """
    if may_have_duplicate_keys(body):  # pydantic's parser keeps the last of two equal keys: decode strictly
        return _inbound_general(body)
    try:
        inbound = _ApiInbound.model_validate_json(body)
    except ValidationError:
        return _inbound_general(body)
    if inbound.model_fields_set <= _API_FIELDS and inbound.contact.model_fields_set <= _API_CONTACT_FIELDS:
        return inbound
    return _inbound_general(body)


@routes.post("/api/requests")
@api
async def post_request(request: web.Request) -> web.Response:
    """Accept one request; 201 when new, 200 when its external id was seen before. Committed before the answer."""
    service, tokens = _state(request)
    principal = await authorise(request, "service", tokens)
    inbound = _inbound(await _read_body(request))
    limits, keys = request.app[LIMITS], (("token", principal.name), *IntakeLimits.sender_keys(inbound.contact))
    try:
        limits.check(*keys)
    except IntakeLimited as exc:
        raise ApiError(429, str(exc), {"Retry-After": str(exc.retry_after)}, retry_after=exc.retry_after) from None
    try:
        result = await service.writer.submit(inbound)
    except RequestRejected as exc:
        limits.refund(*keys)
        raise ApiError(exc.status, str(exc)) from None
    except IntakeUnavailable:
        limits.refund(*keys)
        raise ApiError(503, "Die Anfrage konnte nicht gespeichert werden; bitte senden Sie sie noch einmal") from None
    if not result.created:
        limits.refund(*keys)  # a repeat of a stored request costs nothing
    # The header as aiohttp would build it from content_type and charset, which took it a microsecond.
    return web.Response(body=result.json_bytes(), status=201 if result.created else 200, headers=_JSON_HEADERS)


_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


# -- cases --------------------------------------------------------------------------------------------


def case_summary(row: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    paused = row["sla_paused_since"] is not None
    final = row["state"] in (CaseState.CLOSED, CaseState.DEAD_LETTER)
    overdue = not final and not paused and (
        (row["first_responded_at"] is None and row["first_response_due"] is not None
         and row["first_response_due"] < now)
        or (row["forward_due"] is not None and row["forward_met_at"] is None and row["forward_due"] < now)
    )
    return {
        "id": row["id"],
        "token": row["token"],
        "state": row["state"],
        "channel": row["channel"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "service": {"id": row["service_id"], "name": row["service_name"]} if row["service_id"] else None,
        "authority": {"id": row["authority_id"], "name": row["authority_name"]} if row["authority_id"] else None,
        "assigned_agent": row["assigned_agent"],
        # The citizen asked to be called back and nobody has yet (hub.queue.outbox.callback_number).
        "callback": callback_number(row) is not None,
        "sla": {
            "first_response_due": _iso(row["first_response_due"]),
            "first_responded_at": _iso(row["first_responded_at"]),
            "forward_due": _iso(row["forward_due"]),
            "forwarded_at": _iso(row["forwarded_at"]),
            "paused": paused,
            "overdue": bool(overdue),
            "breached_at": _iso(row["sla_breached_at"]),
        },
    }


def _load_case(conn: Connection, case_id: int) -> dict[str, Any]:
    row = conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().first()
    if row is None:
        raise _no_case(case_id)
    return dict(row)


def _no_case(case_id: int) -> ApiError:
    """The 404 of a case that does not exist or lies outside the token's scope (the same answer for both)."""
    return ApiError(404, f"Fall {case_id} nicht gefunden", code="not_found", case_id=case_id)


def _case_detail(engine, case_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = _load_case(conn, case_id)
        messages = conn.execute(select(message_t).where(message_t.c.case_id == case_id)
                                .order_by(message_t.c.id)).mappings().all()
        attachments = conn.execute(
            select(attachment_t).join(message_t, attachment_t.c.message_id == message_t.c.id)
            .where(message_t.c.case_id == case_id).order_by(attachment_t.c.id)).mappings().all()
        trail = conn.execute(select(audit_t).where(audit_t.c.case_id == case_id)
                             .order_by(audit_t.c.id)).mappings().all()
    by_message: dict[int, list[dict[str, Any]]] = {}
    for a in attachments:
        by_message.setdefault(a["message_id"], []).append(
            {"id": a["id"], "filename": a["filename"], "content_type": a["content_type"],
             "size_bytes": a["size_bytes"], "sha256": a["sha256"], "url": a["url"]})
    out = case_summary(row)
    out.update({
        "contact": {"name": row["contact_name"], "email": row["contact_email"], "phone": row["contact_phone"],
                    "postal_address": row["contact_address"]},
        "location": row["location"],
        "route": {"confidence": row["route_confidence"], "reason": row["route_reason"], "result": row["route_json"],
                  "routed_at": _iso(row["routed_at"])},
        "anonymised_at": _iso(row["anonymised_at"]),
        "messages": [
            {"id": m["id"], "direction": m["direction"], "kind": m["kind"], "channel": m["channel"],
             "external_id": m["external_id"], "created_at": _iso(m["created_at"]),
             "received_at": _iso(m["received_at"]), "subject": m["subject"], "text": m["text"],
             "location": m["location"], "author": m["author"], "recipient": m["recipient"],
             "send_state": m["send_state"], "sent_at": _iso(m["sent_at"]), "last_error": m["last_error"],
             "attachments": by_message.get(m["id"], [])}
            for m in messages
        ],
        "audit": [
            {"at": _iso(a["at"]), "actor": a["actor"], "action": a["action"], "from": a["from_state"],
             "to": a["to_state"], "reason": a["reason"]}
            for a in trail
        ],
    })
    return out


def case_filter(request: web.Request, principal: Principal) -> Callable[[Mapping[str, Any]], bool]:
    """Whether the agent token ``principal`` may see a case (a row of its columns): the console's rule for
    the token's scope (:meth:`hub.scope.Scope.covers_case`), for every route that shows or works a case."""
    scope, kb = principal.scope, request.app.get(KB)
    assert scope is not None  # authorise refuses agent tokens without one
    return lambda row: scope.covers_case(row, kb)


def _visible_case_detail(engine, case_id: int, visible: Callable[[Mapping[str, Any]], bool]) -> dict[str, Any]:
    detail = _case_detail(engine, case_id)
    with engine.connect() as conn:
        if not visible(_load_case(conn, case_id)):
            raise _no_case(case_id)
    return detail


@routes.get("/api/cases/{case_id}")
@api
async def get_case(request: web.Request) -> web.Response:
    """One case with its messages, attachments (metadata) and audit trail (404 outside the token's scope)."""
    principal = await authorise(request, "agent")
    service, _ = _state(request)
    return _json(await asyncio.to_thread(_visible_case_detail, service.engine, _case_id(request),
                                         case_filter(request, principal)))


def _list_filters(raw: Mapping[str, str]) -> tuple[list[Any], int, int]:
    unknown = set(raw) - {"state", "channel", "authority", "overdue", "page", "per_page"}
    if unknown:
        raise ApiError(400, f"Unbekannte Abfrageparameter: {', '.join(sorted(unknown))}", code="unknown_parameter")
    # An empty value is no filter: the contract spells the URL "?state=&channel=&...", and form-built
    # query strings send unset fields that way.
    query = {k: v for k, v in raw.items() if v.strip()}
    where: list[Any] = []
    if "state" in query:
        if query["state"] not in {s.value for s in CaseState}:
            raise ApiError(400, f"'state' muss einer dieser Werte sein: {', '.join(s.value for s in CaseState)}")
        where.append(case_t.c.state == query["state"])
    if "channel" in query:
        if query["channel"] not in CHANNELS:
            raise ApiError(400, f"'channel' muss einer dieser Werte sein: {', '.join(CHANNELS)}")
        where.append(case_t.c.channel == query["channel"])
    if "authority" in query:
        where.append(case_t.c.authority_id == query["authority"][:100])
    if "overdue" in query:
        flag = query["overdue"].lower()
        if flag not in ("true", "false", "1", "0"):
            raise ApiError(400, "'overdue' muss true oder false sein")
        clause = overdue_clause(datetime.now(UTC))
        where.append(clause if flag in ("true", "1") else ~clause)
    page = int_param(query.get("page"), "page", minimum=1, maximum=MAX_PAGE, default=1)
    per_page = int_param(query.get("per_page"), "per_page", minimum=1, maximum=200, default=50)
    return where, page, per_page


def _list_cases(engine, where: list[Any], page: int, per_page: int) -> dict[str, Any]:
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(case_t).where(*where)).scalar_one()
        rows = conn.execute(select(case_t).where(*where).order_by(case_t.c.id)
                            .offset((page - 1) * per_page).limit(per_page)).mappings().all()
    now = datetime.now(UTC)
    return {"cases": [case_summary(r, now) for r in rows], "page": page, "per_page": per_page, "total": total}


@routes.get("/api/cases")
@api
async def list_cases(request: web.Request) -> web.Response:
    """Cases of the token's scope, oldest first, filtered by ``state``, ``channel``, ``authority`` and
    ``overdue``; paged."""
    principal = await authorise(request, "agent")
    service, _ = _state(request)
    where, page, per_page = _list_filters(request.query)
    assert principal.scope is not None
    clause = principal.scope.case_clause(request.app.get(KB))
    if clause is not None:
        where.append(clause)
    return _json(await asyncio.to_thread(_list_cases, service.engine, where, page, per_page))


def _casework(queue: QueueService, case_id: int, action, /, **kwargs: Any) -> dict[str, Any]:
    """Run one :mod:`hub.casework` action on a case, inside the token's scope (``visible``); its
    refusals become the API's errors (a case outside the scope: 404, as if it did not exist)."""
    try:
        return casework.run(queue.engine, case_id, action, policy=queue.policy, **kwargs)
    except casework.CaseNotFound:
        raise _no_case(case_id) from None
    except casework.CaseworkError as exc:
        raise ApiError(exc.status, str(exc), code=exc.code, **exc.details) from None
    except TransitionError as exc:
        raise ApiError(409, str(exc), code=exc.code, **{"case_id": case_id, **exc.details}) from None


def _run_transition(service: QueueService, case_id: int, body: TransitionIn, principal: Principal,
                    visible) -> dict:
    _casework(service, case_id, casework.move, target=body.to, reason=body.reason, agent=principal.name,
              visible=visible)
    return _case_detail(service.engine, case_id)


@routes.post("/api/cases/{case_id}/transition")
@api
async def post_transition(request: web.Request) -> web.Response:
    """Move a case to another state; 409 when the state table does not allow it."""
    principal = await authorise(request, "agent")
    service, _ = _state(request)
    case_id = _case_id(request)
    visible = case_filter(request, principal)
    await asyncio.to_thread(_check_visible, service.engine, case_id, visible)
    body = _validate(TransitionIn, await _read_json(request))
    return _json(await asyncio.to_thread(_run_transition, service, case_id, body, principal, visible))


def _knowledge_names(request: web.Request, service_id: str | None, authority_id: str | None
                     ) -> tuple[dict | None, dict | None]:
    """Service and authority as ``{"id", "name", "email"}`` from the knowledge base (memory, else tables)."""
    kb = request.app.get(KB)
    service = authority = None
    if kb is not None:
        s = kb.view_at(service_id) if service_id else None
        a = kb.authorities.get(authority_id) if authority_id else None
        service = {"id": s.id, "name": s.name} if s else None
        authority = {"id": a.id, "name": a.name, "email": a.email} if a else None
        return service, authority
    from knowledge.models import Authority, Service

    with request.app[ENGINE].connect() as conn:
        if service_id:
            r = conn.execute(select(Service.__table__.c.id, Service.__table__.c.name)
                             .where(Service.__table__.c.id == service_id)).first()
            service = {"id": r[0], "name": r[1]} if r else None
        if authority_id:
            t = Authority.__table__
            r = conn.execute(select(t.c.id, t.c.name, t.c.email).where(t.c.id == authority_id)).first()
            authority = {"id": r[0], "name": r[1], "email": r[2]} if r else None
    return service, authority


def _run_reroute(service: QueueService, case_id: int, svc: dict, auth: dict, reason: str | None,
                principal: Principal, visible) -> dict:
    _casework(service, case_id, casework.reroute, service=svc, authority=auth, reason=reason,
              agent=principal.name, visible=visible)
    return _case_detail(service.engine, case_id)


@routes.post("/api/cases/{case_id}/reroute")
@api
async def post_reroute(request: web.Request) -> web.Response:
    """Set service and authority by hand; recorded as a labelled example for the router."""
    principal = await authorise(request, "agent")
    service, _ = _state(request)
    case_id = _case_id(request)
    visible = case_filter(request, principal)
    await asyncio.to_thread(_check_visible, service.engine, case_id, visible)
    body = _validate(RerouteIn, await _read_json(request))
    svc, auth = await asyncio.to_thread(_knowledge_names, request, body.service_id, body.authority_id)
    if svc is None:
        raise ApiError(422, f"Unbekannte Leistung {body.service_id!r}", code="unknown_service")
    if auth is None:
        raise ApiError(422, f"Unbekannte Stelle {body.authority_id!r}", code="unknown_authority")
    return _json(await asyncio.to_thread(_run_reroute, service, case_id, svc, auth, body.reason, principal,
                                         visible))


def _run_reply(service: QueueService, case_id: int, body: ReplyIn, principal: Principal, visible) -> dict:
    result = _casework(service, case_id, casework.reply, text=body.text, await_citizen=body.await_citizen,
                       reason=body.reason, agent=principal.name, queue=service.queue, visible=visible)
    service.dispatcher.wake()
    return {"message_id": result["message_id"], "state": result["state"]}


@routes.post("/api/cases/{case_id}/reply")
@api
async def post_reply(request: web.Request) -> web.Response:
    """Answer the citizen on the case's channel (through the outbox); the case becomes answered or waits."""
    principal = await authorise(request, "agent")
    service, _ = _state(request)
    case_id = _case_id(request)
    visible = case_filter(request, principal)
    await asyncio.to_thread(_check_visible, service.engine, case_id, visible)
    body = _validate(ReplyIn, await _read_json(request))
    return _json(await asyncio.to_thread(_run_reply, service, case_id, body, principal, visible), 201)


def _run_forward(service: QueueService, case_id: int, authority: dict, note: str | None,
                principal: Principal, visible) -> dict:
    result = _casework(service, case_id, casework.forward, authority=authority, note=note, agent=principal.name,
                       queue=service.queue, visible=visible)
    service.dispatcher.wake()
    return {"message_id": result["message_id"], "state": result["state"], "authority": result["authority"]}


@routes.post("/api/cases/{case_id}/forward")
@api
async def post_forward(request: web.Request) -> web.Response:
    """Forward the case to the responsible authority by e-mail; its answer is due in 24 working hours."""
    principal = await authorise(request, "agent")
    service, _ = _state(request)
    case_id = _case_id(request)
    visible = case_filter(request, principal)
    row = await asyncio.to_thread(_check_visible, service.engine, case_id, visible)
    body = _validate(ForwardIn, await _read_json(request))
    authority_id = body.authority_id
    if authority_id is None:
        authority_id = row["authority_id"]
        if not authority_id:
            raise ApiError(409, f"Fall {case_id} hat noch keine zuständige Stelle; geben Sie authority_id an "
                                "oder ordnen Sie ihn neu zu", code="no_authority", case_id=case_id)
    _, authority = await asyncio.to_thread(_knowledge_names, request, None, authority_id)
    if authority is None:
        raise ApiError(422, f"Unbekannte Stelle {authority_id!r}", code="unknown_authority")
    return _json(await asyncio.to_thread(_run_forward, service, case_id, authority, body.note, principal,
                                         visible), 201)


def _check_visible(engine, case_id: int, visible: Callable[[Mapping[str, Any]], bool]) -> dict[str, Any]:
    """The case if the token's scope covers it, else 404 (before the body is even read; the action checks
    again inside its transaction)."""
    with engine.connect() as conn:
        row = _load_case(conn, case_id)
    if not visible(row):
        raise _no_case(case_id)
    return row


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics: intake by channel, queue depth by state, SLA breaches, routing latency.

    ``[server] metrics_token`` makes it need that bearer token; ``[server] metrics_separate`` moves it to a
    listener of its own (and this route answers 404) — see :func:`hub.http.metrics.metrics_guard`.
    """
    refused = metrics_guard(request, request.app.get(SETTINGS), separate_listener=False)
    if refused is not None:
        return refused
    return await serve_metrics(request.app, request)


async def serve_metrics(app: web.Application, request: web.Request) -> web.Response:
    """The scrape body of ``app``'s queue (for the route above and for the separate listener)."""
    state = app[QUEUE]
    if state.service is None:
        return web.Response(status=503, text="startet\n")
    body, content_type = await asyncio.to_thread(render_metrics, state.service.metrics, state.service.engine,
                                                 request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"})


# -- life cycle ---------------------------------------------------------------------------------------


async def _start(app: web.Application) -> None:
    from hub.migrate import upgrade
    from hub.queue.adapters import load_adapters

    state = app[QUEUE]
    engine = app[ENGINE]
    settings = app.get(SETTINGS)
    await asyncio.to_thread(upgrade, engine)
    if state.service is None:
        state.service = QueueService(engine, settings, router=lambda: app.get(KB),
                                     adapters=load_adapters(settings))
    state.tokens = state.tokens or TokenVerifier(engine)
    await state.service.start()


async def _stop(app: web.Application) -> None:
    state = app[QUEUE]
    if state.service is not None and state.owns_service:
        await state.service.stop()


def _metrics_of(app: web.Application):
    service = app[QUEUE].service
    return service.metrics if service is not None else None


def setup(app: web.Application, service: QueueService | None = None) -> None:
    """Add the queue's routes and start/stop the queue with the app."""
    app[QUEUE] = QueueState(service=service)
    install_limits(app)
    app.middlewares.append(request_timer(_metrics_of))
    app.add_routes(routes)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    # /metrics on a listener of its own with [server] metrics_separate (started after the queue).
    listener = app[QUEUE].extra["metrics_listener"] = MetricsListener(app.get(SETTINGS), serve_metrics)
    app.on_startup.append(listener.start)
    app.on_cleanup.insert(0, listener.stop)
