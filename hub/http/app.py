"""The aiohttp application: one error handler, the route modules of :mod:`hub.http.routes`, the knowledge base.

The knowledge base is loaded once at start-up, off the event loop, and kept in ``app[KB]``; handlers
never touch the database for a lookup.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine

from hub.db import make_engine
from hub.http.routes import route_setups
from hub.plugins import resolve
from knowledge.base import KnowledgeBase

log = logging.getLogger(__name__)

#: The hub's settings (:class:`hub.config.Settings`): the app only reads them, whoever assembled them.
SETTINGS = web.AppKey("settings", Any)
ENGINE = web.AppKey("engine", Engine)
KB = web.AppKey("kb", KnowledgeBase)


def json_error(status: int, message: str, **extra) -> web.Response:
    """A JSON error body ``{"error": message}`` with the given status."""
    body = {"error": message, **extra}
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Turn every failure into a status code plus a JSON message; never leak a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return json_error(exc.status, reason or "error")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error")


def create_app(settings: Any, kb: KnowledgeBase | None = None,
               engine: Engine | None = None) -> web.Application:
    """Build the application from the hub's settings (:func:`hub.config.load_settings`); pass
    ``kb``/``engine`` to reuse ones already loaded (tests do)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[ENGINE] = engine or make_engine(settings.database.url, echo=settings.database.echo)
    if kb is not None:
        app[KB] = kb
    else:
        async def load_kb(app: web.Application) -> None:
            loop = asyncio.get_running_loop()
            app[KB] = await loop.run_in_executor(None, KnowledgeBase.load, app[ENGINE], settings)
            log.info("knowledge base loaded: %d services, %d authorities",
                     len(app[KB].services), len(app[KB].authorities))

        app.on_startup.append(load_kb)
    for target in route_setups():
        resolve(target)(app)
    return app
