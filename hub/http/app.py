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


#: The stable, machine-readable kind of a JSON error by its status, when the route names none more precise.
ERROR_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 412: "precondition_failed", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid", 428: "precondition_required", 429: "rate_limited", 500: "internal_error", 503: "unavailable",
}
#: What people read for a status the route said nothing more about (aiohttp's own 404, 405, ...).
STATUS_TEXTS = {
    400: "Ungültige Anfrage", 401: "Anmeldung erforderlich", 403: "Keine Berechtigung", 404: "Nicht gefunden",
    405: "Diese Methode ist hier nicht erlaubt", 408: "Zeitüberschreitung der Anfrage", 409: "Konflikt",
    413: "Der Inhalt ist zu groß", 414: "Die Adresse ist zu lang", 415: "Dieses Format wird nicht angenommen",
    422: "Die Anfrage ist nicht gültig", 429: "Zu viele Anfragen", 431: "Die Kopfzeilen sind zu groß",
    500: "Interner Fehler", 503: "Vorübergehend nicht verfügbar",
}

TOKEN_REQUIRED = "Ein Bearer-Token ist nötig (Authorization: Bearer <Token>)"
TOKEN_UNKNOWN = "Unbekanntes oder widerrufenes Token"
SEND_JSON = "Bitte senden Sie den Inhalt als application/json"
INVALID_REQUEST = "Die Anfrage ist nicht gültig"


def body_too_large(limit: int) -> str:
    return f"Der Inhalt ist größer als {limit} Bytes"


def error_code(status: int) -> str:
    """The default ``code`` of a JSON error with this status."""
    return ERROR_CODES.get(status, "error")


def json_error(status: int, message: str, *, code: str | None = None, **extra) -> web.Response:
    """A JSON error body ``{"error": message, "code": kind}`` with the given status: ``error`` is the German
    text for people, ``code`` the stable kind for programs (by default :func:`error_code`)."""
    body = {"error": message, "code": code or error_code(status), **extra}
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


# pydantic's error types as a person reads them; ``{…}`` are filled from the error's context.
_FIELD_MESSAGES = {
    "missing": "Pflichtfeld fehlt",
    "extra_forbidden": "unbekanntes Feld",
    "string_type": "muss ein Text sein",
    "string_too_short": "zu kurz: mindestens {min_length} Zeichen",
    "string_too_long": "zu lang: höchstens {max_length} Zeichen",
    "string_pattern_mismatch": "hat nicht die erwartete Form",
    "bool_type": "muss true oder false sein",
    "bool_parsing": "muss true oder false sein",
    "int_type": "muss eine ganze Zahl sein",
    "int_parsing": "muss eine ganze Zahl sein",
    "float_type": "muss eine Zahl sein",
    "float_parsing": "muss eine Zahl sein",
    "greater_than_equal": "muss mindestens {ge} sein",
    "less_than_equal": "darf höchstens {le} sein",
    "enum": "muss einer dieser Werte sein: {expected}",
    "literal_error": "muss einer dieser Werte sein: {expected}",
    "model_type": "muss ein JSON-Objekt sein",
    "model_attributes_type": "muss ein JSON-Objekt sein",
    "dict_type": "muss ein JSON-Objekt sein",
    "list_type": "muss eine Liste sein",
    "too_long": "zu viele Einträge: höchstens {max_length}",
    "too_short": "zu wenige Einträge: mindestens {min_length}",
    "json_invalid": "kein gültiges JSON",
    "datetime_parsing": "muss ein Zeitpunkt nach ISO 8601 sein",
    "datetime_type": "muss ein Zeitpunkt nach ISO 8601 sein",
}


def field_message(error: dict) -> str:
    """The German message of one pydantic error (``exc.errors()`` item)."""
    template = _FIELD_MESSAGES.get(error.get("type", ""))
    if template is not None:
        try:
            return template.format(**(error.get("ctx") or {}))
        except (KeyError, IndexError, ValueError):
            return template.split(":")[0]
    if error.get("type") == "value_error":  # our own validators: their message is the reason
        reason = str((error.get("ctx") or {}).get("error") or "")
        return f"ungültiger Wert ({reason})" if reason else "ungültiger Wert"
    return "ungültiger Wert"


def field_errors(exc: Any) -> list[dict[str, str]]:
    """The field errors of a pydantic ``ValidationError``: field, German message, pydantic's type; never
    pydantic's "input", which would echo (possibly personal) data back."""
    return [{"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": field_message(err),
             "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)]


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
        # aiohttp's own texts ("404: Not Found", "Request Entity Too Large") are English: people read German.
        own = (exc.text and not exc.text.startswith(f"{exc.status}:") and exc.text != exc.reason
               and not exc.text.startswith("Maximum request body size"))
        reason = exc.text if own else STATUS_TEXTS.get(exc.status, exc.reason)
        return await _with_allow(request, json_error(exc.status, reason or "Fehler"), exc.headers.get("Allow"))
    except BadParameter as exc:
        return json_error(400, str(exc), code="bad_parameter")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "Interner Fehler; bitte versuchen Sie es später noch einmal")


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
