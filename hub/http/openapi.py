"""``GET /api/openapi.json``: an OpenAPI 3.1 description of every endpoint of the running app.

Every operation is described in full: parameters, request body, responses with their schemas, and
security (``[]`` for a public one). The hub's own routes are described here (``KNOWN``; bodies from the
pydantic models of :mod:`hub.http.api_cases`), a channel's in its own table (``Channel.openapi``, built
with the helpers of this module). A route nobody described still appears, marked ``x-undocumented``
(``tests/http/test_openapi.py`` fails on one), so the document never misses an endpoint that exists.
``servers`` names ``[web] public_base_url`` and the address the document was fetched from. Routes that answer
every method (catch-alls such as Open311's 404 for unknown resources) cannot be OpenAPI operations;
they are listed under ``x-catch-all``. Static file directories are not part of the API.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from aiohttp import web

from hub import __version__

# -- builders (also used by the channels' operation tables, :attr:`hub.plugins.Channel.openapi`) -----------

JSON = "application/json"
HTML = "text/html"
ERROR = {"$ref": "#/components/schemas/Error"}
PUBLIC: list[dict[str, list]] = []  # an operation anyone may call (security: [])
_ERROR = ERROR


def resp(description: str, schema: dict | None = None, media: str = JSON) -> dict:
    """One response; ``schema`` is its body's schema in ``media``."""
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {media: {"schema": schema}}
    return out


_resp = resp


def html(description: str) -> dict:
    """An HTML page."""
    return resp(description, {"type": "string"}, HTML)


def redirect(description: str) -> dict:
    """A 303 to another page (``Location``)."""
    return {"description": description, "headers": {"Location": {"schema": {"type": "string"}}}}


def errors(*codes: int) -> dict[str, dict]:
    """The JSON error responses ``{"error": …}`` of ``codes``, and ``default`` for every other failure."""
    text = {400: "Malformed JSON, form or query", 401: "Missing, unknown or revoked token or session",
            403: "Wrong role, scope or CSRF token", 404: "No such object",
            409: "Not allowed in the object's state", 412: "Version precondition failed",
            413: "Body too large", 415: "Body is not JSON", 422: "Invalid fields (see details)",
            429: "Limit reached; see Retry-After", 503: "Not stored or not ready; send again"}
    out = {str(c): resp(text[c], ERROR) for c in codes}
    out["default"] = resp("Any other failure, with its message", ERROR)
    return out


_errors = errors


def page_errors() -> dict[str, dict]:
    """A console or form page's failures: a small HTML page, or ``{"error": …}`` to a JSON client."""
    return {"default": {"description": "A failure, as a small page or (Accept: application/json) as JSON",
                        "content": {HTML: {"schema": {"type": "string"}}, JSON: {"schema": ERROR}}}}


def query(name: str, schema: dict, description: str, *, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def path(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def form_body(properties: dict[str, dict], required: tuple[str, ...] = (), *, multipart: bool = False,
              files: tuple[str, ...] = ()) -> dict:
    """A form body (urlencoded; with ``multipart`` also multipart/form-data, ``files`` as binary parts)."""
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    content = {"application/x-www-form-urlencoded": {"schema": schema}}
    if multipart:
        multi = {"type": "object", "properties": {**properties, **{f: {"type": "string", "format": "binary"}
                                                                    for f in files}}}
        if required:
            multi["required"] = list(required)
        content["multipart/form-data"] = {"schema": multi}
    return {"required": bool(required), "content": content}


def json_body(schema: dict, required: bool = True) -> dict:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def operation(summary: str, *, security: list, responses: dict, parameters: list | tuple = (),
              body: dict | None = None, description: str | None = None) -> dict:
    """One OpenAPI operation; every one states its security (``PUBLIC`` for none) and its responses."""
    op: dict[str, Any] = {"summary": summary, "security": security, "responses": responses}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = body
    return op


def _body(name: str) -> dict:
    return json_body({"$ref": f"#/components/schemas/{name}"})


OBJ = {"type": "object"}
STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
_ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_CASE_ID = path("case_id", _ID, "The case id")
_ARS = path("ars", {"type": "string", "pattern": "^[0-9]{2,12}$"}, "The region's ARS")
_AGENT = [{"agentToken": []}]
_SESSION = [{"consoleSession": []}]
_WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 415, 422)
_CASE = {"type": "object", "required": ["id", "state"],
         "properties": {"id": {"type": "integer"}, "state": STR, "channel": STR}}
_CASE_LIST = {"type": "object", "required": ["cases", "page", "per_page", "total"],
              "properties": {"cases": {"type": "array", "items": _CASE}, "page": {"type": "integer"},
                             "per_page": {"type": "integer"}, "total": {"type": "integer"}}}
_LOOKUP = {"type": "object", "required": ["query", "results"],
           "properties": {"query": STR, "location": {"type": ["object", "null"]},
                          "location_candidates": {"type": "array"}, "location_reason": NSTR,
                          "results": {"type": "array", "items": {"type": "object", "required": ["service"]}}}}
_HEALTH = {"type": "object", "required": ["status", "database", "writable", "services"],
           "properties": {"status": {"enum": ["ok", "unavailable"]}, "database": {"type": "boolean"},
                          "writable": {"type": "boolean"}, "services": {"type": "integer"},
                          "reasons": {"type": "array", "items": STR}}}
_CATALOG = {"type": "object", "required": ["region", "version"],
            "properties": {"region": STR, "version": {"type": "integer"}, "catalog": OBJ, "since": {"type": "integer"},
                           "changes": OBJ}}
_CATALOG_WRITE = {"type": "object", "properties": {"region": STR, "version": {"type": "integer"}}}
_CATALOG_PARAMS = (query("dry_run", {"enum": ["0", "1", "true", "false"]}, "Validate and plan only"),)
_CATALOG_SEC = [{"catalogToken": []}]
_CONSOLE_FORM = form_body({"csrf_token": STR}, ())
_PAGE = {"200": html("The page"), "303": redirect("To the log-in page (no session)"), **page_errors()}
_CONSOLE_JSON = {"200": resp("The data", OBJ), **errors(401, 403, 404)}
_CONSOLE_POST = {"303": redirect("Done: back to the page with a notice"), "200": html("The page with a message"),
                 **page_errors()}


def _console(summary: str, kind: str, parameters: tuple = (), body: dict | None = None) -> dict:
    responses = {"page": _PAGE, "json": _CONSOLE_JSON, "post": _CONSOLE_POST}[kind]
    return operation(summary, security=_SESSION, responses=responses, parameters=parameters, body=body)


_CALL_ID = path("call_id", _ID, "The call's id")

KNOWN: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/requests"): operation(
        "Hand over one citizen request (idempotent by external_id)", security=[{"serviceToken": []}],
        body=_body("RequestIn"),
        responses={"201": resp("Stored as new (committed)", {"$ref": "#/components/schemas/CaseRef"}),
                   "200": resp("This external_id was seen before", {"$ref": "#/components/schemas/CaseRef"}),
                   **errors(400, 401, 403, 413, 415, 422, 429, 503)}),
    ("GET", "/api/cases"): operation(
        "List cases, oldest first", security=_AGENT,
        parameters=[
            query("state", STR, "Only cases in this state"),
            query("channel", STR, "Only cases of this channel"),
            query("authority", STR, "Only cases of this authority id"),
            query("overdue", {"type": "boolean"}, "Only overdue cases"),
            query("page", {"type": "integer", "minimum": 1, "maximum": 100_000}, "Page, from 1"),
            query("per_page", {"type": "integer", "minimum": 1, "maximum": 200}, "Cases per page"),
        ],
        responses={"200": resp("A page of cases", _CASE_LIST), **errors(400, 401, 403)}),
    ("GET", "/api/cases/{case_id}"): operation(
        "One case with messages, attachments and audit trail", security=_AGENT, parameters=[_CASE_ID],
        responses={"200": resp("The case", _CASE), **errors(400, 401, 403, 404)}),
    ("POST", "/api/cases/{case_id}/transition"): operation(
        "Change the state of a case", security=_AGENT, parameters=[_CASE_ID], body=_body("TransitionIn"),
        responses={"200": resp("The case after the change", _CASE), **errors(*_WRITE_ERRORS)}),
    ("POST", "/api/cases/{case_id}/reroute"): operation(
        "Set service and authority (recorded as a labelled example)", security=_AGENT,
        parameters=[_CASE_ID], body=_body("RerouteIn"),
        responses={"200": resp("The case after the change", _CASE), **errors(*_WRITE_ERRORS)}),
    ("POST", "/api/cases/{case_id}/reply"): operation(
        "Answer the citizen through the outbox", security=_AGENT, parameters=[_CASE_ID], body=_body("ReplyIn"),
        responses={"201": resp("Reply queued", OBJ), **errors(*_WRITE_ERRORS)}),
    ("POST", "/api/cases/{case_id}/forward"): operation(
        "Forward to the responsible authority (answer due in 24 working hours)", security=_AGENT,
        parameters=[_CASE_ID], body=_body("ForwardIn"),
        responses={"201": resp("Forward queued", OBJ), **errors(*_WRITE_ERRORS)}),
    ("GET", "/metrics"): operation(
        "Prometheus metrics", security=[{}, {"metricsToken": []}],
        responses={"200": resp("Prometheus text format", STR, "text/plain"),
                   "401": resp("[server] metrics_token is set and was not given", STR, "text/plain"),
                   **errors(403, 404)}),
    ("GET", "/api/openapi.json"): operation(
        "This document", security=PUBLIC, responses={"200": resp("OpenAPI 3.1", OBJ)}),
    ("GET", "/healthz"): operation(
        "Liveness and readiness (database, writes, knowledge base)", security=PUBLIC,
        responses={"200": resp("Healthy", _HEALTH), "503": resp("Not healthy; reasons", _HEALTH)}),
    ("GET", "/api/lookup"): operation(
        "Ranked services with the responsible authority", security=PUBLIC,
        parameters=[query("q", {"type": "string", "minLength": 1, "maxLength": 500}, "What the citizen asks",
                          required=True),
                    query("location", STR, "Place: municipality, postcode or AGS"),
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "Most results")],
        responses={"200": resp("The ranked services", _LOOKUP), **errors(400, 503)}),
    ("GET", "/api/catalog/{ars}"): operation(
        "The region's catalogue, or with since=V the objects changed after version V", security=_CATALOG_SEC,
        parameters=[_ARS, query("since", {"type": "integer", "minimum": 0}, "Changes after this version")],
        responses={"200": resp("The catalogue or the changes", _CATALOG), "304": {"description": "Not modified"},
                   **errors(400, 401, 403, 404, 503)}),
    ("PUT", "/api/catalog/{ars}/snapshot"): operation(
        "Replace everything the region owns with the body", security=_CATALOG_SEC,
        parameters=[_ARS, *_CATALOG_PARAMS], body=json_body(OBJ),
        responses={"200": resp("Applied (or planned with dry_run)", _CATALOG_WRITE),
                   **errors(400, 401, 403, 404, 409, 412, 413, 415, 422, 503)}),
    ("POST", "/api/catalog/{ars}/changes"): operation(
        "Write and delete objects of the region", security=_CATALOG_SEC,
        parameters=[_ARS, *_CATALOG_PARAMS], body=json_body(OBJ),
        responses={"200": resp("Applied (or planned with dry_run)", _CATALOG_WRITE),
                   **errors(400, 401, 403, 404, 409, 412, 413, 415, 422, 503)}),
    # The agents' console (session cookie; writes need the CSRF token of the session).
    ("GET", "/console"): operation("To the console", security=PUBLIC,
                                   responses={"303": redirect("To /console/"), "200": html("The console"),
                                              **page_errors()}),
    ("GET", "/console/"): _console("The agent's start page", "page"),
    ("GET", "/console/login"): operation(
        "The log-in page", security=PUBLIC, parameters=[query("next", STR, "Where to go after the log-in")],
        responses={"200": html("The form"), "303": redirect("Signed in already"), **page_errors()}),
    ("POST", "/console/login"): operation(
        "Sign in", security=PUBLIC,
        body=form_body({"name": STR, "password": STR, "csrf_token": STR, "next": STR}, ("name", "password")),
        responses={"303": redirect("Signed in"), "200": html("The form with a message"),
                   "400": html("Not a log-in form"), "403": html("Expired form"),
                   "429": html("Too many attempts; see Retry-After"), **page_errors()}),
    ("POST", "/console/logout"): _console("Sign out", "post", body=_CONSOLE_FORM),
    ("GET", "/console/queue"): _console("The queue of open cases", "page"),
    ("GET", "/console/api/queue"): _console("The queue as JSON", "json"),
    ("GET", "/console/api/lookup"): _console(
        "Look up services (the console's search)", "json",
        (query("q", STR, "Search words"), query("location", STR, "Place"))),
    ("GET", "/console/find"): _console(
        "Find a case or a caller (token, #number, phone, e-mail) with earlier cases", "page",
        (query("q", STR, "Case token, #number, phone number or e-mail address"),)),
    ("GET", "/console/api/find"): _console(
        "Find a case or a caller as JSON (only cases the account may see)", "json",
        (query("q", STR, "Case token, #number, phone number or e-mail address"),)),
    ("GET", "/console/api/cases/{case_id}/offices"): _console(
        "Offices valid at the case's place (forward/re-route picker)", "json",
        (_CASE_ID, query("q", STR, "Name, place or a service's words"))),
    ("GET", "/console/api/cases/{case_id}/services"): _console(
        "Services valid at the case's place with the office there (re-route picker)", "json",
        (_CASE_ID, query("q", STR, "Search words"))),
    ("GET", "/console/cases/{case_id}"): _console(
        "One case", "page",
        (_CASE_ID, query("einfuegen", STR, "Without JavaScript: 'vorlage' or 'karte' into the answer box"),
         query("vorlage", {"type": "integer", "minimum": 0}, "Which text block"),
         query("fwd_q", STR, "Without JavaScript: office search of the forward form"),
         query("rr_q", STR, "Without JavaScript: service search of the re-route form"),
         query("rr_office_q", STR, "Without JavaScript: office search of the re-route form"))),
    ("GET", "/console/api/cases/{case_id}"): _console("One case as JSON", "json", (_CASE_ID,)),
    ("POST", "/console/cases/{case_id}/reply"): _console(
        "Answer the citizen", "post", (_CASE_ID,), form_body({"text": STR, "csrf_token": STR})),
    ("POST", "/console/cases/{case_id}/forward"): _console(
        "Forward to the responsible authority", "post", (_CASE_ID,),
        form_body({"authority_id": STR, "note": STR, "csrf_token": STR})),
    ("POST", "/console/cases/{case_id}/reroute"): _console(
        "Set service and authority", "post", (_CASE_ID,),
        form_body({"service_id": STR, "authority_id": STR, "csrf_token": STR})),
    ("POST", "/console/cases/{case_id}/close"): _console(
        "Close the case", "post", (_CASE_ID,), form_body({"reason": STR, "csrf_token": STR})),
    ("GET", "/console/events"): operation(
        "Server-sent events of the queue", security=_SESSION,
        responses={"200": resp("An event stream", STR, "text/event-stream"), **errors(401, 403)}),
    ("GET", "/console/dashboard"): _console("The supervisor's dashboard", "page"),
    ("GET", "/console/api/dashboard"): _console("The dashboard's figures", "json"),
    ("GET", "/console/static/{name}"): operation(
        "The console's style sheet and scripts", security=PUBLIC,
        parameters=[path("name", {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"}, "File name")],
        responses={"200": {"description": "The file", "content": {"text/css": {"schema": STR},
                                                                 "application/javascript": {"schema": STR},
                                                                 "text/javascript": {"schema": STR}}},
                   **page_errors()}),
    ("POST", "/console/calls"): _console(
        "Start a call record (phone agent); with case_id the call back of a citizen who asked for one", "post",
        body=form_body({"csrf_token": STR, "answered_within_s": STR, "case_id": STR, "place": STR})),
    ("POST", "/console/calls/{call_id}/first-contact"): _console(
        "Answered on the first contact", "post", (_CALL_ID,), _CONSOLE_FORM),
    ("POST", "/console/calls/{call_id}/forward"): _console(
        "Forward the call's concern", "post", (_CALL_ID,), _CONSOLE_FORM),
    ("POST", "/console/calls/{call_id}/send"): _console(
        "Send the answer card to the caller", "post", (_CALL_ID,), _CONSOLE_FORM),
}


def _schemas() -> dict[str, Any]:
    from hub.http.api_cases import BODY_MODELS

    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string", "description": "What went wrong, in German, for people."},
                                 "code": {"type": "string", "description": "The stable kind of error, for programs "
                                          "(e.g. not_found, stale_state, invalid_transition, token_required)."},
                                 "details": {"type": "array", "items": {"type": "object", "properties": {
                                     "field": {"type": "string"}, "message": {"type": "string"},
                                     "type": {"type": "string"}}}}}},
    }
    for name, model in BODY_MODELS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for sub_name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(sub_name, sub)
        schemas[name] = schema
    return schemas


def _first_line(handler: Any) -> str:
    doc = inspect.getdoc(handler) or ""
    return doc.strip().splitlines()[0] if doc.strip() else handler.__name__


SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "serviceToken": {"type": "http", "scheme": "bearer",
                     "description": "Token of a service account: citizen-hub token add NAME --role service"},
    "agentToken": {"type": "http", "scheme": "bearer",
                   "description": "Token of an agent, scoped to authorities or regions like a console account: "
                                  "citizen-hub token add NAME --role agent --authority ID | --region ARS | "
                                  "--all-authorities"},
    "catalogToken": {"type": "http", "scheme": "bearer",
                     "description": "Token of a municipality's catalogue: citizen-hub token add NAME --role catalog "
                                    "--region ARS"},
    "metricsToken": {"type": "http", "scheme": "bearer",
                     "description": "[server] metrics_token, when it is set"},
    "open311Key": {"type": "apiKey", "in": "query", "name": "api_key",
                   "description": "api_key of an Open311 client (also as a form field of POST): citizen-hub token "
                                  "add NAME --role open311"},
    "consoleSession": {"type": "apiKey", "in": "cookie", "name": "chub_console",
                       "description": "The session of a console account (POST /console/login); writes also need "
                                      "the session's CSRF token (form field csrf_token or X-CSRF-Token)"},
    "twilioSignature": {"type": "apiKey", "in": "header", "name": "X-Twilio-Signature",
                        "description": "Twilio's HMAC-SHA1 signature of the webhook, checked with [twilio] auth_token"},
}


def _channel_operations() -> dict[tuple[str, str], dict[str, Any]]:
    """The operations the channels describe (``Channel.openapi``), keyed by (method, path)."""
    from hub.plugins import openapi_operations

    return openapi_operations()


def _fallback(route: Any, path_template: str) -> dict[str, Any]:
    """An operation nobody described: the docstring's first line and a generic answer, marked as such
    (``x-undocumented``; tests/http/test_openapi.py fails on it)."""
    op = operation(_first_line(route.handler), security=PUBLIC,
                   responses={"default": {"description": "Not described",
                                          "content": {"*/*": {"schema": {}}}}})
    op["x-undocumented"] = True
    return op


def _with_path_parameters(op: dict[str, Any], path_template: str) -> dict[str, Any]:
    """Every ``{name}`` of the template (also inside a segment, ``discovery{ext}``) as a path parameter,
    those the operation describes as it describes them."""
    names = re.findall(r"\{(\w+)", path_template)
    given = {p["name"]: p for p in op.get("parameters", ()) if p.get("in") == "path"}
    if not names and not given:
        return op
    others = [p for p in op.get("parameters", ()) if p.get("in") != "path"]
    params = [given.get(n) or path(n, {"type": "string", "minLength": 1}, n) for n in names]
    return {**op, "parameters": params + others}


def _servers(app: web.Application, request: web.Request | None) -> list[dict[str, str]]:
    from hub.http.app import SETTINGS

    settings = app.get(SETTINGS)
    base = getattr(getattr(settings, "web", None), "public_base_url", None) if settings is not None else None
    servers = []
    if base:
        servers.append({"url": base.rstrip("/"), "description": "This hub ([web] public_base_url)"})
    if request is not None:
        here = f"{request.scheme}://{request.host}"
        if not base or here != base.rstrip("/"):
            servers.append({"url": here, "description": "The address this document was fetched from"})
    return servers or [{"url": "/", "description": "The server this document is served by"}]


def build_spec(app: web.Application, request: web.Request | None = None) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes: every operation with its parameters, request body,
    responses and security, described where the route is defined (``KNOWN`` for the hub's own routes,
    ``Channel.openapi`` for a channel's)."""
    described = {**KNOWN, **_channel_operations()}
    paths: dict[str, dict[str, Any]] = {}
    catch_all: list[dict[str, str]] = []
    for route in app.router.routes():
        method = route.method.upper()
        if method in ("HEAD", "OPTIONS") or isinstance(route.resource, web.StaticResource):
            continue  # HEAD comes with every GET; static files are not an API
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("path") or info.get("formatter")
        if not template:
            continue
        if method == "*":
            # A route for every method (e.g. Open311's 404 for unknown resources) has no OpenAPI
            # operation; it is listed here so that the document still names everything the app serves.
            catch_all.append({"path": template, "summary": _first_line(route.handler)})
            continue
        op = described.get((method, template)) or _fallback(route, template)
        paths.setdefault(template, {})[method.lower()] = _with_path_parameters(op, template)
    return {
        "openapi": "3.1.0",
        "info": {"title": "citizen-hub", "version": __version__,
                 "description": "One queue for every channel of a D115-style citizen service hub."},
        "servers": _servers(app, request),
        "paths": dict(sorted(paths.items())),
        "x-catch-all": sorted(catch_all, key=lambda r: r["path"]),
        "components": {"schemas": _schemas(), "securitySchemes": SECURITY_SCHEMES},
    }


routes = web.RouteTableDef()


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """This OpenAPI document."""
    return web.json_response(build_spec(request.app, request))


def setup(app: web.Application) -> None:
    app.add_routes(routes)
