"""``GET /api/openapi.json``: an OpenAPI 3.1 description of every endpoint of the running app.

Endpoints of the queue API are described in full (bodies from the pydantic models of
:mod:`hub.http.api_cases`, statuses, security); any other route of the app is listed with the first line
of its handler's docstring, so the document never misses an endpoint that exists. Routes that answer
every method (catch-alls such as Open311's 404 for unknown resources) cannot be OpenAPI operations;
they are listed under ``x-catch-all``. Static file directories are not part of the API.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from aiohttp import web

from hub import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def _resp(description: str, schema: dict | None = None) -> dict:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


def _errors(*codes: int) -> dict[str, dict]:
    text = {400: "Malformed JSON or query", 401: "Missing, unknown or revoked token", 403: "Wrong role",
            404: "No such case", 409: "Not allowed in the case's state", 413: "Body too large",
            415: "Body is not JSON", 422: "Invalid fields (see details)",
            429: "Intake limit reached; see Retry-After", 503: "Not stored; send again"}
    return {str(c): _resp(text[c], _ERROR) for c in codes}


def _body(name: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


_CASE_ID = {"name": "case_id", "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}}
_AGENT = [{"agentToken": []}]
_WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 415, 422)

KNOWN: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/requests"): {
        "summary": "Hand over one citizen request (idempotent by external_id)",
        "security": [{"serviceToken": []}],
        "requestBody": _body("RequestIn"),
        "responses": {"201": _resp("Stored as new (committed)", {"$ref": "#/components/schemas/CaseRef"}),
                      "200": _resp("This external_id was seen before", {"$ref": "#/components/schemas/CaseRef"}),
                      **_errors(400, 401, 403, 413, 415, 422, 429, 503)},
    },
    ("GET", "/api/cases"): {
        "summary": "List cases, oldest first",
        "security": _AGENT,
        "parameters": [
            {"name": "state", "in": "query", "schema": {"type": "string"}},
            {"name": "channel", "in": "query", "schema": {"type": "string"}},
            {"name": "authority", "in": "query", "schema": {"type": "string"}},
            {"name": "overdue", "in": "query", "schema": {"type": "boolean"}},
            {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100_000}},
            {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
        ],
        "responses": {"200": _resp("A page of cases", {"type": "object"}), **_errors(400, 401, 403)},
    },
    ("GET", "/api/cases/{case_id}"): {
        "summary": "One case with messages, attachments and audit trail",
        "security": _AGENT, "parameters": [_CASE_ID],
        "responses": {"200": _resp("The case", {"type": "object"}), **_errors(400, 401, 403, 404)},
    },
    ("POST", "/api/cases/{case_id}/transition"): {
        "summary": "Change the state of a case", "security": _AGENT, "parameters": [_CASE_ID],
        "requestBody": _body("TransitionIn"),
        "responses": {"200": _resp("The case after the change", {"type": "object"}), **_errors(*_WRITE_ERRORS)},
    },
    ("POST", "/api/cases/{case_id}/reroute"): {
        "summary": "Set service and authority (recorded as a labelled example)", "security": _AGENT,
        "parameters": [_CASE_ID], "requestBody": _body("RerouteIn"),
        "responses": {"200": _resp("The case after the change", {"type": "object"}), **_errors(*_WRITE_ERRORS)},
    },
    ("POST", "/api/cases/{case_id}/reply"): {
        "summary": "Answer the citizen through the outbox", "security": _AGENT, "parameters": [_CASE_ID],
        "requestBody": _body("ReplyIn"),
        "responses": {"201": _resp("Reply queued", {"type": "object"}), **_errors(*_WRITE_ERRORS)},
    },
    ("POST", "/api/cases/{case_id}/forward"): {
        "summary": "Forward to the responsible authority (answer due in 24 working hours)", "security": _AGENT,
        "parameters": [_CASE_ID], "requestBody": _body("ForwardIn"),
        "responses": {"201": _resp("Forward queued", {"type": "object"}), **_errors(*_WRITE_ERRORS)},
    },
    ("GET", "/metrics"): {
        "summary": "Prometheus metrics",
        "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
    },
    ("GET", "/api/openapi.json"): {
        "summary": "This document",
        "responses": {"200": _resp("OpenAPI 3.1", {"type": "object"})},
    },
}


def _schemas() -> dict[str, Any]:
    from hub.http.api_cases import BODY_MODELS

    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"},
                                 "details": {"type": "array", "items": {"type": "object", "properties": {
                                     "field": {"type": "string"}, "message": {"type": "string"}}}}}},
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


def build_spec(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes."""
    paths: dict[str, dict[str, Any]] = {}
    catch_all: list[dict[str, str]] = []
    for route in app.router.routes():
        method = route.method.upper()
        if method in ("HEAD", "OPTIONS") or isinstance(route.resource, web.StaticResource):
            continue  # HEAD comes with every GET; static files are not an API
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if not path:
            continue
        if method == "*":
            # A route for every method (e.g. Open311's 404 for unknown resources) has no OpenAPI
            # operation; it is listed here so that the document still names everything the app serves.
            catch_all.append({"path": path, "summary": _first_line(route.handler)})
            continue
        op = KNOWN.get((method, path))
        if op is None:
            op = {"summary": _first_line(route.handler), "responses": {"200": {"description": "OK"}}}
            # Every "{name}" of the template, also inside a segment ("discovery{ext}").
            params = re.findall(r"\{(\w+)", path)
            if params:
                op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                    for p in params]
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "citizen-hub", "version": __version__,
                 "description": "One queue for every channel of a D115-style citizen service hub."},
        "paths": dict(sorted(paths.items())),
        "x-catch-all": sorted(catch_all, key=lambda r: r["path"]),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "serviceToken": {"type": "http", "scheme": "bearer",
                                 "description": "Token of a service account: citizen-hub token add NAME --role service"},
                "agentToken": {"type": "http", "scheme": "bearer",
                               "description": "Token of an agent: citizen-hub token add NAME --role agent"},
            },
        },
    }


routes = web.RouteTableDef()


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """This OpenAPI document."""
    return web.json_response(build_spec(request.app))


def setup(app: web.Application) -> None:
    app.add_routes(routes)
