"""HTTP API of the catalogue sync (see ``docs/catalog-sync.md``).

* ``PUT /api/catalog/{ars}/snapshot`` – replace everything region ``ars`` owns.
* ``POST /api/catalog/{ars}/changes`` – ``{"write": {...}, "delete": {...}}``.
* ``GET /api/catalog/{ars}`` – the region's catalogue; ``?since=V`` the objects changed after version V.

Writes need ``Authorization: Bearer <token>`` of a token with role ``catalog`` and a scope
(:class:`knowledge.sync_models.TokenScope`) that contains ``ars``; reads need any valid token.
``?dry_run=true`` answers the diff and writes nothing; ``?partial=true`` applies the valid objects and
lists the invalid ones instead of rejecting the whole change set.

Answers: 200 with ``{"region", "version", "previous_version", "applied", "dry_run", "summary", "diff",
"errors"}`` and ``ETag: "<version>"``; 400 ``{"error", "errors": [{"object", "field", "message"}]}``;
401 no or bad token; 403 out of scope (``errors`` names the objects); 404 unknown region; 409 a referenced
object of another region changed meanwhile; 412 ``If-Match`` is not the current version; 413 body over
``[catalog] max_body_bytes``; 415 not JSON; 428 no ``If-Match`` while ``[catalog] require_if_match``.

The write runs off the event loop, in one transaction; after the commit the in-memory knowledge base
is updated in place (in slices, so lookups keep being answered), before the answer is sent: a change
is visible to the next lookup. Writes of one process are serialised by a lock; writers in several
processes are kept apart by the version compare-and-set (:func:`knowledge.sync.execute`). Versions
written by other processes (``citizen-hub catalog import``, other hub processes) are picked up by a
poller every ``[catalog] poll_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from hub.http.app import (
    ENGINE,
    KB,
    SEND_JSON,
    SETTINGS,
    TOKEN_REQUIRED,
    TOKEN_UNKNOWN,
    body_too_large,
    json_error,
)
from hub.http.catalog_settings import catalog_settings
from hub.http.inputs import BadParameter, StrictJsonError, int_param, strict_loads
from hub.http.tokens import Principal, TokenVerifier, scope_t, token_t
from hub.queue.cases import catalog_audit
from hub.queue.routing import catalogue_changed
from knowledge.sync import (
    ApplyResult,
    DeletionRefused,
    PayloadError,
    SyncError,
    VersionConflict,
    apply_change_set,
    changes_since,
    current_version,
    export_region,
    kb_update_from_log,
    parse_changes,
    parse_snapshot,
    within,
)
from knowledge.sync_models import version_t
from knowledge.text import safe_html

log = logging.getLogger(__name__)

ROLE = "catalog"
MAX_VERSION = 2**31 - 1  # catalog_version.version is an INTEGER column
_VERSION_TAG = re.compile(r"[0-9]{1,10}")  # ASCII digits: "²".isdigit() is True, int("²") fails
_ARS = re.compile(r"[0-9]{2}|[0-9]{5}|[0-9]{9}|[0-9]{12}")


@dataclass
class CatalogState:
    """Run-time state of the catalogue API (the app is frozen once started, this object is not)."""

    tokens: TokenVerifier
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    applied: set[tuple[str, int]] = field(default_factory=set)  # versions this process put into its KB
    last_seen_id: int = 0  # highest catalog_version.id the poller has looked at
    poller: asyncio.Task | None = None


CATALOG = web.AppKey("catalog_state", CatalogState)
routes = web.RouteTableDef()


class CatalogHttpError(Exception):
    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, *, code: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.code = code
        self.extra = extra


def _etag(version: int) -> str:
    return f'"{version}"'


async def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # A whole catalogue or a snapshot's diff is megabytes of JSON: encode it off the event loop.
    text = await asyncio.to_thread(json.dumps, body, ensure_ascii=False, default=str)
    return web.Response(text=text, status=status, headers=headers, content_type="application/json")


def _sync_error(exc: SyncError) -> web.Response:
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if exc.errors:
        extra["errors"] = [e.to_json() for e in exc.errors]
    if isinstance(exc, VersionConflict):
        extra["version"] = exc.current
        headers["ETag"] = _etag(exc.current)
    if isinstance(exc, DeletionRefused):
        extra["would_delete"] = exc.would_delete
    response = json_error(exc.status, exc.message, **extra)
    response.headers.update(headers)
    return response


# -- authentication ---------------------------------------------------------------------------------


async def _principal(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise CatalogHttpError(
            401, TOKEN_REQUIRED, {"WWW-Authenticate": "Bearer"}, code="token_required"
        )
    principal = await request.app[CATALOG].tokens.verify(token.strip())
    if principal is None:
        raise CatalogHttpError(401, TOKEN_UNKNOWN, {"WWW-Authenticate": "Bearer"}, code="token_invalid")
    return principal


def _scopes(engine, token_hash: str) -> list[str] | None:
    """The regions of the token, read now; None when it has been revoked (or deleted) meanwhile.

    The verifier caches tokens for a few seconds; a write checks the database itself, so a revoked
    catalogue token cannot write a moment longer.
    """
    with engine.connect() as conn:
        token = conn.execute(
            select(token_t.c.id).where(token_t.c.token_hash == token_hash, token_t.c.revoked_at.is_(None))
        ).first()
        if token is None:
            return None
        rows = conn.execute(select(scope_t.c.region_ars).where(scope_t.c.token_id == token.id)).all()
    return sorted(r[0] for r in rows)


async def _writer(request: web.Request, region: str) -> tuple[Principal, list[str]]:
    """The caller, if it may write region ``region``: a catalog token whose scope contains it."""
    principal = await _principal(request)
    if principal.role != ROLE:
        raise CatalogHttpError(403, f"Einen Katalog schreiben darf nur ein Token mit der Rolle „{ROLE}“",
                               code="wrong_role", role=ROLE)
    scopes = await asyncio.to_thread(_scopes, request.app[ENGINE], principal.token_hash)
    if scopes is None:
        raise CatalogHttpError(401, TOKEN_UNKNOWN, {"WWW-Authenticate": "Bearer"}, code="token_invalid")
    if not scopes:
        raise CatalogHttpError(
            403, "Dieses Token hat keine Region; ein Admin vergibt sie mit 'citizen-hub catalog scope grant'",
            code="no_scope",
        )
    if not within(region, scopes):
        raise CatalogHttpError(
            403,
            f"Region {region} liegt außerhalb der Region dieses Tokens ({', '.join(scopes)})",
            code="out_of_scope",
            errors=[
                {"object": f"/api/catalog/{region}", "field": "ars",
                 "message": "außerhalb der Region dieses Tokens"}
            ],
        )
    return principal, scopes


# -- request parsing ----------------------------------------------------------------------------------


def _region(request: web.Request) -> str:
    region = request.match_info["ars"]
    if not _ARS.fullmatch(region):
        raise CatalogHttpError(404, "Keine Region: der Pfad braucht einen ARS mit 2, 5, 9 oder 12 Ziffern",
                               code="unknown_region")
    return region


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("true", "1", "yes", ""):
        return True
    if value in ("false", "0", "no"):
        return False
    raise CatalogHttpError(400, f"'{name}' muss true oder false sein")


def _if_match(request: web.Request, dry_run: bool) -> set[int] | None:
    """The versions ``If-Match`` accepts (None: any). An ETag that is no version of ours matches nothing."""
    raw = request.headers.get("If-Match")
    if raw is None or not raw.strip():
        if catalog_settings(request.app[SETTINGS]).require_if_match and not dry_run:
            raise CatalogHttpError(428, 'Bitte senden Sie If-Match: "<Version>" (das ETag von GET /api/catalog/{ars})')
        return None
    if raw.strip() == "*":
        return None
    out: set[int] = set()
    for tag in raw.split(","):
        tag = tag.strip()
        # If-Match compares strongly: a weak tag (W/"3") never matches.
        if len(tag) >= 2 and tag[0] == tag[-1] == '"' and _VERSION_TAG.fullmatch(tag[1:-1]):
            out.add(int(tag[1:-1]))
    return out or {-1}


async def _read_body(request: web.Request) -> bytes:
    limit = catalog_settings(request.app[SETTINGS]).max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise CatalogHttpError(413, body_too_large(limit))
    ctype = request.headers.get("Content-Type")
    if (
        ctype is not None
        and request.content_type != "application/json"
        and not request.content_type.endswith("+json")
    ):
        raise CatalogHttpError(415, SEND_JSON)
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            raise CatalogHttpError(413, body_too_large(limit))
    return bytes(body)


def decode_body(raw: bytes) -> Any:
    """Parse a body strictly (:func:`hub.http.inputs.strict_loads`: UTF-8, standard JSON, no duplicate
    keys, no NaN, no giant numbers).

    Duplicate keys matter most here: ``{"leistung": [...], "leistung": []}`` would silently turn a
    snapshot into "remove everything". Every failure is a :class:`PayloadError` (400) that says why, and
    nothing has been written yet.
    """
    try:
        return strict_loads(raw)
    except StrictJsonError as exc:
        raise PayloadError(f"{exc}; nichts wurde geändert", []) from None


# -- handlers -------------------------------------------------------------------------------------------


def _apply(engine, region: str, raw: bytes, mode: str, **kwargs: Any) -> ApplyResult:
    data = decode_body(raw)
    cs = parse_snapshot(data) if mode == "snapshot" else parse_changes(data)
    return apply_change_set(engine, region, cs, audit=catalog_audit, **kwargs)


async def _write(request: web.Request, mode: str) -> web.Response:
    try:
        region = _region(request)
        principal, scopes = await _writer(request, region)
        partial, dry_run = _flag(request, "partial"), _flag(request, "dry_run")
        force = _flag(request, "force")
        expected = _if_match(request, dry_run)
        raw = await _read_body(request)
    except CatalogHttpError as exc:
        return _with_headers(exc)
    # Shielded: once the write runs, a client that hangs up must not stop the knowledge-base update
    # halfway through (the database has committed by then).
    work = asyncio.ensure_future(
        _write_locked(request.app, region, raw, mode, principal, scopes, partial, dry_run, expected, force)
    )
    try:
        result = await asyncio.shield(work)
    except SyncError as exc:
        return _sync_error(exc)
    return await _json(result.to_json(), headers={"ETag": _etag(result.version)})


async def _write_locked(
    app: web.Application, region: str, raw: bytes, mode: str, principal: Principal, scopes: list[str],
    partial: bool, dry_run: bool, expected: set[int] | None, force: bool = False,
) -> ApplyResult:  # fmt: skip
    state = app[CATALOG]
    async with state.lock:
        result = await asyncio.to_thread(
            _apply, app[ENGINE], region, raw, mode, actor=f"token:{principal.name}", scopes=scopes,
            partial=partial, dry_run=dry_run, expected_version=expected, force=force,
            max_delete_share=catalog_settings(app[SETTINGS]).max_delete_share,
        )  # fmt: skip
        if result.applied:
            state.applied.add((region, result.version))
            kb = app.get(KB)
            if kb is not None:
                for _ in result.kb.steps(kb):
                    await asyncio.sleep(0)  # lookups are answered between a large snapshot's slices
                catalogue_changed(kb)  # the routing decisions remembered so far may be others now
            log.info("catalog %s: version %d by %s (%s)", region, result.version, principal.name, mode)
    return result


def _with_headers(exc: CatalogHttpError) -> web.Response:
    response = json_error(exc.status, str(exc), code=exc.code, **exc.extra)
    response.headers.update(exc.headers)
    return response


@routes.put("/api/catalog/{ars}/snapshot")
async def put_snapshot(request: web.Request) -> web.Response:
    """Replace everything region ``ars`` owns with the body (leistung, organisationseinheit, ...)."""
    return await _write(request, "snapshot")


@routes.post("/api/catalog/{ars}/changes")
async def post_changes(request: web.Request) -> web.Response:
    """Write and delete objects of region ``ars``: ``{"write": {...}, "delete": {...}}``."""
    return await _write(request, "changes")


def _read(engine, region: str, since: int | None) -> tuple[int, dict[str, Any]] | str:
    # Version before and after the read: equal means the data belongs to that version.
    for _ in range(5):
        with engine.connect() as conn:
            before = current_version(conn, region)
            if since is not None and since > before:
                return f"'since' ist {since}, aber der Katalog der Region {region} ist erst bei Version {before}"
            body: dict[str, Any] = {"region": region, "version": before}
            if since is None:
                body["catalog"] = export_region(conn, region)
            else:
                body["since"] = since
                body["changes"] = changes_since(conn, region, since)
            if current_version(conn, region) == before:
                return before, body
    return "Der Katalog ändert sich zu schnell, um ihn zu lesen; bitte versuchen Sie es noch einmal"


@routes.get("/api/catalog/{ars}")
async def get_catalog(request: web.Request) -> web.Response:
    """The region's catalogue (``catalog``), or with ``?since=V`` the objects changed after version V."""
    try:
        region = _region(request)
        await _principal(request)
        since = None
        if "since" in request.query:
            try:
                since = int_param(request.query["since"], "since", minimum=0, maximum=MAX_VERSION)
            except BadParameter:
                raise CatalogHttpError(400, f"'since' muss eine Versionsnummer sein (0 bis {MAX_VERSION})") from None
    except CatalogHttpError as exc:
        return _with_headers(exc)
    engine = request.app[ENGINE]
    if since is None and request.headers.get("If-None-Match"):
        version = await asyncio.to_thread(_version, engine, region)
        if request.headers["If-None-Match"].strip() in (_etag(version), f"W/{_etag(version)}", "*"):
            return web.Response(status=304, headers={"ETag": _etag(version)})
    result = await asyncio.to_thread(_read, engine, region, since)
    if isinstance(result, str):
        return json_error(400 if since is not None else 503, result)
    version, body = result
    return await _json(safe_texts(body), headers={"ETag": _etag(version)})


def safe_texts(value: Any) -> Any:
    """``value`` with every text module (``textmodule``: kurztext, volltext, ...) cut to the HTML PVOG
    allows (:func:`knowledge.text.safe_html`): what a municipality wrote reaches other clients without
    scripts, styles, event handlers or javascript: links. Stored data is left as written."""
    if isinstance(value, dict):
        return {k: (_safe_module(v) if k == "textmodule" else safe_texts(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [safe_texts(v) for v in value]
    return value


def _safe_module(module: Any) -> Any:
    if not isinstance(module, dict):
        return module
    return {k: safe_html(v) if isinstance(v, str) else [safe_html(x) if isinstance(x, str) else x for x in v]
            if isinstance(v, list) else v for k, v in module.items()}


def _version(engine, region: str) -> int:
    with engine.connect() as conn:
        return current_version(conn, region)


# -- versions written by other processes ------------------------------------------------------------------


def _max_version_id(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(version_t.c.id))).scalar() or 0)


def _new_versions(engine, after_id: int) -> list[tuple[int, str, int]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(version_t.c.id, version_t.c.region_ars, version_t.c.version)
                .where(version_t.c.id > after_id)
                .order_by(version_t.c.id)
                .limit(1000)
            )
        ]


async def catch_up(app: web.Application) -> int:
    """Apply versions other processes wrote since the last call to the knowledge base; returns how many."""
    state, engine = app[CATALOG], app[ENGINE]
    rows = await asyncio.to_thread(_new_versions, engine, state.last_seen_id)
    if not rows:
        return 0
    async with state.lock:
        foreign = [
            (region, version) for _id, region, version in rows if (region, version) not in state.applied
        ]
        kb = app.get(KB)
        if foreign and kb is not None:
            update = await asyncio.to_thread(kb_update_from_log, engine, foreign)
            for _ in update.steps(kb):
                await asyncio.sleep(0)
            catalogue_changed(kb)
        state.last_seen_id = max(state.last_seen_id, rows[-1][0])
        state.applied.difference_update((region, version) for _id, region, version in rows)
    return len(foreign)


async def _poll(app: web.Application, every: float) -> None:
    failing = False
    while True:
        await asyncio.sleep(every)
        try:
            n = await catch_up(app)
            if n:
                log.info("catalog: applied %d version(s) written by other processes", n)
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database may be away for a moment; try again next round
            if not failing:  # once per outage, not once a second
                log.warning("catalog: cannot read new catalogue versions (%s); retrying", type(exc).__name__)
            failing = True


async def _remember_start(app: web.Application) -> None:
    # Runs before the knowledge base is loaded: whatever is committed after this is applied by the poller
    # (applying a version the load saw already is harmless).
    try:
        app[CATALOG].last_seen_id = await asyncio.to_thread(_max_version_id, app[ENGINE])
    except Exception as exc:  # no catalogue tables yet (database not migrated): the poller starts from 0
        log.warning("catalog: cannot read catalogue versions at start-up (%s)", type(exc).__name__)


async def _start_poller(app: web.Application) -> None:
    every = catalog_settings(app[SETTINGS]).poll_seconds
    if every > 0:
        app[CATALOG].poller = asyncio.create_task(_poll(app, every), name="catalog-poller")


async def _stop_poller(app: web.Application) -> None:
    task = app[CATALOG].poller
    if task is not None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def setup(app: web.Application) -> None:
    """Add the catalogue routes; the poller starts with the app."""
    app[CATALOG] = CatalogState(tokens=TokenVerifier(app[ENGINE]))
    app.add_routes(routes)
    app.on_startup.insert(0, _remember_start)
    app.on_startup.append(_start_poller)
    app.on_cleanup.append(_stop_poller)
