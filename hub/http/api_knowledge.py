"""HTTP: ``GET /healthz`` and ``GET /api/lookup?q=…&location=…`` (same JSON as ``lookup --json``)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from hub.db import ping
from hub.http.app import ENGINE, KB, json_error

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness and readiness: the database answers and the knowledge base is loaded."""
    db_ok = await asyncio.get_running_loop().run_in_executor(None, ping, request.app[ENGINE])
    kb = request.app.get(KB)
    body = {
        "status": "ok" if db_ok and kb is not None else "unavailable",
        "database": db_ok,
        "services": len(kb.services) if kb else 0,
    }
    return web.json_response(body, status=200 if body["status"] == "ok" else 503)


@routes.get("/api/lookup")
async def lookup(request: web.Request) -> web.Response:
    """Ranked services with the responsible authority. 400 when ``q`` is missing or blank."""
    q = request.query.get("q", "")
    if not q.strip():
        return json_error(400, "query parameter 'q' is required and must not be blank")
    location = request.query.get("location") or None
    limit = None
    if "limit" in request.query:
        try:
            limit = int(request.query["limit"])
        except ValueError:
            return json_error(400, "'limit' must be a whole number")
    if limit is not None and not 1 <= limit <= 100:
        return json_error(400, "'limit' must be between 1 and 100")
    result = request.app[KB].lookup(q, location, limit=limit)
    return web.json_response(result.to_json(), dumps=lambda o: json.dumps(o, ensure_ascii=False))


def setup(app: web.Application) -> None:
    app.add_routes(routes)
