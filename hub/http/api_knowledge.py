"""HTTP: ``GET /healthz`` and ``GET /api/lookup?q=…&location=…`` (same JSON as ``lookup --json``)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from hub.db import ping
from hub.health import watch, write_problems
from hub.http.app import ENGINE, KB, SETTINGS, json_error
from hub.http.inputs import int_param

routes = web.RouteTableDef()


def _health(engine, settings) -> tuple[bool, list[str]]:
    return ping(engine), write_problems(engine, settings)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness and readiness: the database answers, writes to it succeed (no failed write in the last
    ``[server] health_write_failure_seconds``, enough free disk), and the knowledge base is loaded.
    503 with ``reasons`` otherwise."""
    db_ok, problems = await asyncio.get_running_loop().run_in_executor(
        None, _health, request.app[ENGINE], request.app.get(SETTINGS))
    kb = request.app.get(KB)
    reasons = ([] if db_ok else ["die Datenbank antwortet nicht"]) + problems
    if kb is None:
        reasons.append("die Wissensbasis wird geladen")
    body = {
        "status": "ok" if not reasons else "unavailable",
        "database": db_ok,
        "writable": db_ok and not problems,
        "services": len(kb.services) if kb else 0,
    }
    if reasons:
        body["reasons"] = reasons
    return web.json_response(body, status=200 if not reasons else 503,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


@routes.get("/api/lookup")
async def lookup(request: web.Request) -> web.Response:
    """Ranked services with the responsible authority. 400 when ``q`` is missing or blank."""
    q = request.query.get("q", "")
    if not q.strip():
        return json_error(400, "Der Abfrageparameter 'q' fehlt oder ist leer", code="bad_parameter")
    location = request.query.get("location") or None
    limit = int_param(request.query["limit"], "limit", minimum=1, maximum=100) if "limit" in request.query else None
    kb = request.app.get(KB)
    if kb is None:
        return json_error(503, "Die Wissensbasis wird geladen; bitte versuchen Sie es gleich noch einmal")
    result = kb.lookup(q, location, limit=limit)
    return web.json_response(result.to_json(), dumps=lambda o: json.dumps(o, ensure_ascii=False))


def setup(app: web.Application) -> None:
    watch(app[ENGINE])  # from now on a failed write of this engine shows in /healthz
    app.add_routes(routes)
