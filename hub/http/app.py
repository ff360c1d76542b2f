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
from hub.http.inputs import BadParameter
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


async def allowed_methods(request: web.Request) -> set[str]:
    """The methods the app's routes take on this request's path (for ``Allow``)."""
    methods: set[str] = set()
    for resource in request.app.router.resources():
        try:
            _match, allowed = await resource.resolve(request)
        except Exception:  # a resource that cannot judge this path takes no method on it
            continue
        methods.update(allowed)
    methods.discard("*")
    return methods


async def _with_allow(request: web.Request, response: web.StreamResponse, allow: str | None = None
                      ) -> web.StreamResponse:
    """A 405 always says which methods the resource takes (RFC 9110 15.5.6), whoever produced it."""
    if response.status == 405 and "Allow" not in response.headers and not response.prepared:
        response.headers["Allow"] = allow or ", ".join(sorted(await allowed_methods(request)))
    return response


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Turn every failure into a status code plus a JSON message; never leak a traceback.

    A bad query or path parameter (:class:`hub.http.inputs.BadParameter`) is 400 with its message; every
    405, raised or returned by any route, carries ``Allow``.
    """
    try:
        return await _with_allow(request, await handler(request))
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            if exc.status == 405 and "Allow" not in exc.headers:
                exc.headers["Allow"] = ", ".join(sorted(await allowed_methods(request)))
            raise
        reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return await _with_allow(request, json_error(exc.status, reason or "error"), exc.headers.get("Allow"))
    except BadParameter as exc:
        return json_error(400, str(exc))
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
    learning = getattr(settings, "learning", None)
    if learning is not None and learning.enabled:
        from hub.learning import LearningThread

        # Retrains on the [learning] schedule and swaps in models trained elsewhere; routing never waits.
        thread = LearningThread(app[ENGINE], lambda: app.get(KB), learning)

        async def start_learning(app: web.Application) -> None:
            thread.start()

        async def stop_learning(app: web.Application) -> None:
            await asyncio.get_running_loop().run_in_executor(None, thread.stop)

        app.on_startup.append(start_learning)
        app.on_cleanup.append(stop_learning)
    for target in route_setups():
        resolve(target)(app)
    return app
