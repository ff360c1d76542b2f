"""Log-in of agents, supervisors and admins: accounts, argon2 password hashes, sessions, lockout, scopes.

Tables (``hub_`` prefix like the queue's):

* :class:`User` – account name, role, argon2id hash (never the password), lockout counters.
* :class:`UserScope` – what an account may see: authorities (``kind='authority'``, an authority id) and
  regions (``kind='region'``, an ARS prefix: ``01060`` is Kreis Segeberg and everything in it).
* :class:`ConsoleSession` – one log-in. Its primary key is the SHA-256 of the random cookie value, so a
  copy of the table does not hand out sessions. It also holds the session's CSRF token.

**Roles.** ``agent`` answers calls and works the queue, ``supervisor`` also sees the dashboard, ``admin``
sees everything everywhere. Agents and supervisors see only cases of their scope; an account without
any scope sees nothing (deny by default). Admins are not limited by scopes.

**Lockout.** ``lockout_threshold`` failed log-ins of one account *from one source* (the client's address,
an IPv6 /64 as one) within ``lockout_window_minutes`` lock that source out of that account for
``lockout_minutes``; while locked even the right password from there is refused. Other sources are not
affected, so nobody can lock an agent out of their account by guessing from elsewhere (issue 14); the
per-address rate limit of log-ins (``login_rate_per_minute``) and argon2 bound what many sources can
guess. Counters live in :class:`LoginFailure` (the source as a SHA-256, kept only while it matters) and
are changed by single statements, so parallel guesses cannot slip past the threshold. Unknown names, disabled
and locked accounts cost one argon2 verification as well and get the same answer as a wrong password,
so neither the time nor the answer tells whether an account exists.

**Sessions.** The cookie ``chub_console`` is HttpOnly, SameSite=Strict, ``Path=/console`` and Secure
(``[console] cookie_secure``; off only for http://localhost). A session ends after
``session_idle_minutes`` without a request, ``session_max_hours`` after the log-in, or at log-out. Each
process keeps verified sessions for up to :data:`SESSION_CACHE_SECONDS` so that typing in the search box
does not cost a database query per key; a log-out in another process therefore takes effect here within
that time (in this process at once).

**CSRF.** Every state-changing request of a logged-in user must carry the session's token (form field
``csrf_token`` or header ``X-CSRF-Token``); together with SameSite=Strict, another site cannot make a
logged-in browser act. The log-in form, which has no session yet, uses :mod:`hub.http.csrf`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import html
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from hub.console.settings import ConsoleSettings
from hub.queue.cases import UtcDateTime
from hub.scope import Scope, make_scope

log = logging.getLogger(__name__)

ROLES = ("agent", "supervisor", "admin")
SCOPE_KINDS = ("authority", "region")
SESSION_COOKIE = "chub_console"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_CACHE_SECONDS = 2.0
# last_seen_at is written at most this often per session: idle expiry needs no per-keystroke write.
TOUCH_SECONDS = 60.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
_ARS_RE = re.compile(r"^\d{2}(\d{1,10})?$")


def _ts(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UtcDateTime, nullable=nullable))


class User(SQLModel, table=True):
    """A console account. ``password_hash`` is an argon2id hash in PHC string format."""

    __tablename__ = "hub_user"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(100), nullable=False, unique=True))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    password_hash: str = Field(sa_column=Column(String(255), nullable=False))
    created_at: datetime = _ts(nullable=False)
    disabled_at: datetime | None = _ts()
    failed_logins: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    failed_since: datetime | None = _ts()
    locked_until: datetime | None = _ts()
    last_login_at: datetime | None = _ts()


class UserScope(SQLModel, table=True):
    """One authority or region an account is bound to."""

    __tablename__ = "hub_user_scope"
    __table_args__ = (UniqueConstraint("user_id", "kind", "value", name="uq_hub_user_scope"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("hub_user.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    value: str = Field(sa_column=Column(String(100), nullable=False))


class ConsoleSession(SQLModel, table=True):
    """One log-in. ``id`` is the SHA-256 (hex) of the cookie value."""

    __tablename__ = "hub_session"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("hub_user.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    created_at: datetime = _ts(nullable=False)
    last_seen_at: datetime = _ts(nullable=False)
    expires_at: datetime = _ts(nullable=False)
    csrf_token: str = Field(sa_column=Column(String(64), nullable=False))


class LoginFailure(SQLModel, table=True):
    """Failed log-ins of one account from one source; ``locked_until`` while that source is locked out."""

    __tablename__ = "hub_login_failure"
    __table_args__ = (UniqueConstraint("user_id", "source", name="uq_hub_login_failure"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("hub_user.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    source: str = Field(sa_column=Column(String(64), nullable=False))
    failures: int = Field(sa_column=Column(Integer, nullable=False))
    failed_since: datetime = _ts(nullable=False)
    locked_until: datetime | None = _ts()


user_t = User.__table__
scope_t = UserScope.__table__
session_t = ConsoleSession.__table__
failure_t = LoginFailure.__table__


def source_key(source: str) -> str:
    """How a client address is stored for the lockout: its SHA-256 (never the address itself)."""
    return hashlib.sha256(("login-source:" + (source or "unknown")).encode("utf-8")).hexdigest()


class AuthError(ValueError):
    """An account cannot be created or changed; the message says why."""


# -- scopes ------------------------------------------------------------------------------------------
# The rule lives in hub.scope, shared with agent API tokens (hub.http.tokens); re-exported here.


@dataclass(frozen=True)
class Principal:
    """The logged-in account of a request."""

    user_id: int
    name: str
    role: str
    scope: Scope
    session_id: str = field(repr=False, default="")
    csrf_token: str = field(repr=False, default="")

    def has_role(self, *roles: str) -> bool:
        return self.role in roles


# -- passwords -----------------------------------------------------------------------------------------

_HASHER = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (t=3, m=64 MiB, p=4)
_DUMMY_HASH: str | None = None


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _burn_time(password: str) -> None:
    """One verification against a fixed hash, so that unknown names cost what known ones cost."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
    _verify(_DUMMY_HASH, password)


def check_password_policy(password: str, settings: ConsoleSettings) -> None:
    if len(password) < settings.password_min_length:
        raise AuthError(f"the password needs at least {settings.password_min_length} characters")
    if len(password) > 1024:
        raise AuthError("the password is longer than 1024 characters")
    if password != password.strip():
        raise AuthError("the password must not start or end with white space")


# -- accounts ------------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise AuthError("an account name is 1-100 letters, digits and _ . @ -, starting with a letter or digit")
    return name


def add_user(engine: Engine, name: str, role: str, password: str, *, authorities: Iterable[str] = (),
             regions: Iterable[str] = (), settings: ConsoleSettings | None = None) -> int:
    """Create an account; returns its id. Authority ids and regions are checked by the caller (CLI)."""
    settings = settings or ConsoleSettings()
    check_name(name)
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    check_password_policy(password, settings)
    regions = list(dict.fromkeys(regions))
    for ars in regions:
        if not _ARS_RE.match(ars):
            raise AuthError(f"{ars!r} is not a regional key (ARS): 2 to 12 digits")
    authorities = list(dict.fromkeys(authorities))
    if role != "admin" and not authorities and not regions:
        raise AuthError(f"a {role} must be bound to at least one --authority or --region")
    password_hash = hash_password(password)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            user_id = conn.execute(
                insert(user_t).values(name=name, role=role, password_hash=password_hash, created_at=now,
                                      failed_logins=0).returning(user_t.c.id)
            ).scalar_one()
            rows = [{"user_id": user_id, "kind": "authority", "value": a} for a in authorities]
            rows += [{"user_id": user_id, "kind": "region", "value": r} for r in regions]
            if rows:
                conn.execute(insert(scope_t), rows)
    except IntegrityError:
        raise AuthError(f"an account named {name!r} exists already") from None
    return user_id


def set_password(engine: Engine, name: str, password: str, settings: ConsoleSettings | None = None) -> bool:
    """Replace an account's password and end all its sessions."""
    check_password_policy(password, settings or ConsoleSettings())
    with engine.begin() as conn:
        user_id = conn.execute(select(user_t.c.id).where(user_t.c.name == name)).scalar()
        if user_id is None:
            return False
        conn.execute(update(user_t).where(user_t.c.id == user_id)
                     .values(password_hash=hash_password(password), failed_logins=0, failed_since=None,
                             locked_until=None))
        conn.execute(delete(session_t).where(session_t.c.user_id == user_id))
    return True


def disable_user(engine: Engine, name: str) -> bool:
    """Disable an account and end its sessions; it cannot log in any more."""
    with engine.begin() as conn:
        user_id = conn.execute(select(user_t.c.id).where(user_t.c.name == name)).scalar()
        if user_id is None:
            return False
        conn.execute(update(user_t).where(user_t.c.id == user_id).values(disabled_at=datetime.now(UTC)))
        conn.execute(delete(session_t).where(session_t.c.user_id == user_id))
    return True


def unlock_user(engine: Engine, name: str) -> bool:
    """Lift every lockout of an account (from every source)."""
    with engine.begin() as conn:
        result = conn.execute(update(user_t).where(user_t.c.name == name)
                              .values(failed_logins=0, failed_since=None, locked_until=None))
        user_id = conn.execute(select(user_t.c.id).where(user_t.c.name == name)).scalar()
        if user_id is not None:
            conn.execute(delete(failure_t).where(failure_t.c.user_id == user_id))
    return result.rowcount == 1


def list_users(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        users = conn.execute(select(user_t.c.id, user_t.c.name, user_t.c.role, user_t.c.disabled_at,
                                    user_t.c.locked_until, user_t.c.last_login_at)
                             .order_by(user_t.c.name)).mappings().all()
        scopes = conn.execute(select(scope_t.c.user_id, scope_t.c.kind, scope_t.c.value)).all()
        now = datetime.now(UTC)
        locks = dict(conn.execute(select(failure_t.c.user_id, func.count()).where(failure_t.c.locked_until > now)
                                  .group_by(failure_t.c.user_id)).all())
    by_user: dict[int, list[tuple[str, str]]] = {}
    for uid, kind, value in scopes:
        by_user.setdefault(uid, []).append((kind, value))
    return [dict(u) | {"scopes": sorted(by_user.get(u["id"], [])), "locked_sources": locks.get(u["id"], 0)}
            for u in users]


# -- log-in --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    user_id: int | None = None
    #: Why it failed, for the log (never shown to the person: the page says the same for all of them).
    reason: str = ""


def authenticate(engine: Engine, name: str, password: str, settings: ConsoleSettings | None = None,
                 now: datetime | None = None, source: str = "") -> LoginResult:
    """Check a name and password, counting failures towards the lockout of this ``source`` (the client's
    address, :func:`hub.http.ratelimit.client_key`). Blocking (argon2): run in a thread."""
    settings = settings or ConsoleSettings()
    now = now or datetime.now(UTC)
    if not name or len(name) > 100 or not password or len(password) > 1024:
        _burn_time(password or "x")
        return LoginResult(False, reason="malformed")
    key = source_key(source)
    with engine.connect() as conn:
        row = conn.execute(select(user_t).where(user_t.c.name == name)).mappings().first()
        locked = row is not None and conn.execute(
            select(failure_t.c.id).where(failure_t.c.user_id == row["id"], failure_t.c.source == key,
                                         failure_t.c.locked_until > now)).first() is not None
    if row is None:
        _burn_time(password)
        return LoginResult(False, reason="unknown account")
    if row["disabled_at"] is not None:
        _burn_time(password)
        return LoginResult(False, row["id"], reason="disabled")
    # An account-wide lock is only left by databases from before locks per source (it runs out).
    if locked or (row["locked_until"] is not None and row["locked_until"] > now):
        _burn_time(password)
        return LoginResult(False, row["id"], reason="locked")
    if _verify(row["password_hash"], password):
        values: dict[str, Any] = {"failed_logins": 0, "failed_since": None, "locked_until": None,
                                  "last_login_at": now}
        if _HASHER.check_needs_rehash(row["password_hash"]):
            values["password_hash"] = hash_password(password)
        with engine.begin() as conn:
            conn.execute(update(user_t).where(user_t.c.id == row["id"]).values(**values))
            # This source's count starts again; a lock of another source stays.
            conn.execute(delete(failure_t).where(failure_t.c.user_id == row["id"], failure_t.c.source == key))
        return LoginResult(True, row["id"], reason="ok")
    _count_failure(engine, row["id"], key, settings, now)
    return LoginResult(False, row["id"], reason="wrong password")


def _count_failure(engine: Engine, user_id: int, key: str, settings: ConsoleSettings, now: datetime) -> None:
    c = failure_t.c
    window_start = now - timedelta(minutes=settings.lockout_window_minutes)
    fresh = c.failed_since < window_start
    for _attempt in range(3):
        try:
            with engine.begin() as conn:
                # Rows of this account that no longer matter go on the way (the table stays small).
                conn.execute(delete(failure_t).where(
                    c.user_id == user_id, c.failed_since < window_start,
                    or_(c.locked_until.is_(None), c.locked_until < now)))
                # One statement: parallel failures each add one, none is lost.
                count = conn.execute(
                    update(failure_t).where(c.user_id == user_id, c.source == key)
                    .values(failures=case((fresh, 1), else_=c.failures + 1),
                            failed_since=case((fresh, now), else_=c.failed_since))
                    .returning(c.failures)
                ).scalar()
                if count is None:
                    conn.execute(insert(failure_t).values(user_id=user_id, source=key, failures=1,
                                                          failed_since=now))
                    count = 1
                if count >= settings.lockout_threshold:
                    conn.execute(update(failure_t).where(c.user_id == user_id, c.source == key)
                                 .values(locked_until=now + timedelta(minutes=settings.lockout_minutes),
                                         failures=0, failed_since=now))
                    log.warning("console: account %s locked for one source after %d failed log-ins", user_id,
                                count)
            return
        except IntegrityError:  # another failure of the same source inserted its row first: count on it
            continue


# -- sessions ------------------------------------------------------------------------------------------


def session_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_session(engine: Engine, user_id: int, settings: ConsoleSettings | None = None,
                   now: datetime | None = None) -> str:
    """Start a session; returns the cookie value (shown only now, stored hashed)."""
    settings = settings or ConsoleSettings()
    now = now or datetime.now(UTC)
    token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        # Expired sessions are removed on the way (nobody else cleans them; the table stays small).
        conn.execute(delete(session_t).where(session_t.c.expires_at < now))
        conn.execute(insert(session_t).values(
            id=session_hash(token), user_id=user_id, created_at=now, last_seen_at=now,
            expires_at=now + timedelta(hours=settings.session_max_hours), csrf_token=secrets.token_urlsafe(32)))
    return token


def end_session(engine: Engine, token: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(session_t).where(session_t.c.id == session_hash(token)))


def load_session(engine: Engine, token: str, settings: ConsoleSettings | None = None,
                 now: datetime | None = None) -> Principal | None:
    """The principal of a session cookie, or None when it is unknown, expired, idle or its account disabled."""
    settings = settings or ConsoleSettings()
    now = now or datetime.now(UTC)
    if not token or len(token) > 100:
        return None
    sid = session_hash(token)
    with engine.connect() as conn:
        row = conn.execute(
            select(session_t.c.id, session_t.c.user_id, session_t.c.last_seen_at, session_t.c.expires_at,
                   session_t.c.csrf_token, user_t.c.name, user_t.c.role, user_t.c.disabled_at)
            .select_from(session_t.join(user_t, session_t.c.user_id == user_t.c.id))
            .where(session_t.c.id == sid)
        ).mappings().first()
        if row is None:
            return None
        idle_limit = row["last_seen_at"] + timedelta(minutes=settings.session_idle_minutes)
        if row["disabled_at"] is not None or now >= row["expires_at"] or now >= idle_limit:
            expired = True
        else:
            expired = False
            scopes = conn.execute(select(scope_t.c.kind, scope_t.c.value)
                                  .where(scope_t.c.user_id == row["user_id"])).all()
    if expired:
        end_session(engine, token)
        return None
    if (now - row["last_seen_at"]).total_seconds() >= TOUCH_SECONDS:
        with engine.begin() as conn:
            conn.execute(update(session_t).where(session_t.c.id == sid).values(last_seen_at=now))
    return Principal(row["user_id"], row["name"], row["role"], make_scope(row["role"], scopes), sid,
                     row["csrf_token"])


# -- aiohttp glue --------------------------------------------------------------------------------------


class AuthState:
    """Per app: the engine, the settings and a short-lived cache of verified sessions."""

    def __init__(self, engine: Engine, settings: ConsoleSettings) -> None:
        self.engine = engine
        self.settings = settings
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def principal(self, request: web.Request) -> Principal | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token or len(token) > 100:
            return None
        key = session_hash(token)
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[1] < SESSION_CACHE_SECONDS:
            return hit[0]
        principal = await asyncio.to_thread(load_session, self.engine, token, self.settings)
        if principal is None:
            self._cache.pop(key, None)
        else:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (principal, time.monotonic())
        return principal

    def forget(self, token: str) -> None:
        self._cache.pop(session_hash(token), None)

    def set_cookie(self, response: web.StreamResponse, token: str) -> None:
        # No Max-Age: a browser session cookie, gone when the browser closes (shared workstations).
        response.set_cookie(SESSION_COOKIE, token, path=COOKIE_PATH, httponly=True, samesite="Strict",
                            secure=self.settings.cookie_secure)

    def clear_cookie(self, response: web.StreamResponse) -> None:
        response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict",
                            secure=self.settings.cookie_secure)


AUTH = web.AppKey("console_auth", AuthState)
# Where require_login puts the principal (a typed request key where aiohttp has them, 3.12+).
PRINCIPAL: Any = (web.RequestKey("console_principal", Principal) if hasattr(web, "RequestKey")
                  else "console_principal")


def wants_json(request: web.Request) -> bool:
    """API calls, event streams and scripts get JSON errors; a browser navigating gets pages/redirects."""
    if request.path.startswith(("/console/api/", "/console/events")):
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept or "text/event-stream" in accept


def _error(request: web.Request, status: int, message: str) -> web.Response:
    if wants_json(request):
        return web.json_response({"error": message}, status=status,
                                 headers={"Cache-Control": "no-store"})
    body = (f"<!doctype html><html lang=de><meta charset=utf-8><title>{status}</title>"
            f"<link rel=stylesheet href=/console/static/console.css><main class=narrow><h1>{status}</h1>"
            f"<p>{html.escape(message)}</p><p><a href=/console/>Zur Konsole</a></p></main></html>")
    return web.Response(status=status, text=body, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


def login_redirect(request: web.Request) -> web.Response:
    target = request.path_qs if request.method == "GET" else "/console/"
    raise web.HTTPSeeOther("/console/login?next=" + quote(target, safe="/"))


async def csrf_ok(request: web.Request, principal: Principal) -> bool:
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        value = form.get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    return bool(token) and hmac.compare_digest(token.encode(), principal.csrf_token.encode())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def require_login(roles: Iterable[str] = ROLES, *, csrf: bool = True) -> Callable[[Handler], Handler]:
    """Decorator of console handlers: a valid session with one of ``roles``, and for writes the CSRF token.

    Without a session a page request is redirected to the log-in (303), an API call gets 401. A wrong
    role gets 403, a missing or wrong CSRF token 403. The principal is ``request[PRINCIPAL]``.
    """
    allowed = tuple(roles)

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            principal = await request.app[AUTH].principal(request)
            if principal is None:
                if wants_json(request) or request.method not in SAFE_METHODS:
                    return _error(request, 401, "Bitte melden Sie sich an.")
                return login_redirect(request)
            if principal.role not in allowed:
                return _error(request, 403, "Diese Seite ist für Ihre Rolle nicht freigegeben.")
            if csrf and request.method not in SAFE_METHODS and not await csrf_ok(request, principal):
                return _error(request, 403, "Das Formular ist abgelaufen oder ungültig. Bitte laden Sie die "
                                            "Seite neu.")
            request[PRINCIPAL] = principal
            return await handler(request)

        return wrapper

    return decorate


def error_response(request: web.Request, status: int, message: str) -> web.Response:
    """An error as JSON (API) or as a small page (browser)."""
    return _error(request, status, message)
