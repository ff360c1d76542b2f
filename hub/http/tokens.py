"""Bearer tokens of service accounts (channels, web front ends) and agents.

A token is 256 random bits (``chub_`` + URL-safe base64). Only its SHA-256 is stored. That is enough
for a high-entropy random secret: nobody can guess a preimage of a 256-bit hash of 256 random bits,
so the slow, salted hashes made for human passwords (argon2, used elsewhere for agent passwords)
would only add tens of milliseconds to every API request without adding security.

Verification looks the hash up in an in-memory table refreshed from the database every few seconds
(so a revoked or new token takes effect quickly without a query per request) and then compares the
stored and computed hash with ``hmac.compare_digest``. Timing can at most reveal something about the
SHA-256 of a guess, which does not help to find a valid token.

**Scopes.** A catalog token writes the regions of :class:`TokenScope`. An agent token reads and works the
cases of its :class:`TokenCaseScope` — authorities, regions, or every authority (``all``) — under the same
rule as a console account (:mod:`hub.scope`). An agent token needs one of them to be created; one without
any (made before scopes existed) is refused by the case API until an admin scopes it
(``citizen-hub token scope NAME ...``). Scope changes reach a running hub with the next reload of the
verifier's table (:attr:`TokenVerifier.ttl`, 5 s).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer, String, delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from hub.scope import Scope, make_scope
from knowledge.columns import UtcDateTime, utcnow
from knowledge.regions import check_region

# -- tables ------------------------------------------------------------------------------------------


def _ts(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UtcDateTime, nullable=nullable))


class ApiToken(SQLModel, table=True):
    """A bearer token. Only its SHA-256 is stored (see :mod:`hub.http.tokens`)."""

    __tablename__ = "hub_api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(100), nullable=False, unique=True))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    created_at: datetime = _ts(nullable=False)
    revoked_at: datetime | None = _ts()


class TokenScope(SQLModel, table=True):
    """The region (ARS prefix) a catalogue token may write; objects inside it, and nothing else."""

    __tablename__ = "catalog_token_scope"

    token_id: int = Field(
        sa_column=Column(Integer, ForeignKey("hub_api_token.id", ondelete="CASCADE"), primary_key=True)
    )
    region_ars: str = Field(sa_column=Column(String(12), primary_key=True))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class TokenCaseScope(SQLModel, table=True):
    """What an agent token may see: an authority id, a region (ARS prefix), or every authority (``all``)."""

    __tablename__ = "hub_token_case_scope"

    token_id: int = Field(
        sa_column=Column(Integer, ForeignKey("hub_api_token.id", ondelete="CASCADE"), primary_key=True)
    )
    kind: str = Field(sa_column=Column(String(16), primary_key=True))
    value: str = Field(sa_column=Column(String(100), primary_key=True))


token_t = ApiToken.__table__
scope_t = TokenScope.__table__
case_scope_t = TokenCaseScope.__table__
ALL_AUTHORITIES = ("all", "*")  # the row of an --all-authorities token


#: service: hands over requests; agent: reads and works cases; catalog: writes the catalogue of the
#: regions it is scoped to (see knowledge.sync_models.TokenScope); open311: the api_key of an Open311
#: client (channels.open311.api), which may post service requests and nothing else.
ROLES = ("service", "agent", "catalog", "open311")
PREFIX = "chub_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")


class TokenError(ValueError):
    """A token cannot be created or revoked; the message says why."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role."""

    name: str
    role: str
    token_hash: str = ""
    #: Agent tokens: the cases it may see and work (:mod:`hub.scope`); None for every other role.
    scope: Scope | None = None


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _case_scope_rows(conn: Any, authorities: list[str], regions: list[str],
                     all_authorities: bool) -> list[tuple[str, str]]:
    """The checked scope rows of an agent token; :class:`TokenError` says what is wrong."""
    from knowledge.models import Authority

    if all_authorities and (authorities or regions):
        raise TokenError("--all-authorities already covers every authority; leave out --authority and --region")
    if not all_authorities and not authorities and not regions:
        raise TokenError("an agent token needs --authority ID or --region ARS (repeatable), or explicitly "
                         "--all-authorities: it sees only the cases of its scope, like a console account")
    if all_authorities:
        return [ALL_AUTHORITIES]
    for ars in regions:
        try:
            check_region(conn, ars)  # the one check: format, then a known region (with suggestions)
        except ValueError as exc:
            raise TokenError(str(exc)) from None
    for authority in authorities:
        if not authority or len(authority) > 100:
            raise TokenError("an authority id is 1-100 characters")
    # Checked against the catalogue when one is loaded (a fresh database may be scoped before its import).
    authority_t = Authority.__table__
    if authorities and conn.execute(select(authority_t.c.id).limit(1)).first() is not None:
        known = set(conn.execute(select(authority_t.c.id).where(authority_t.c.id.in_(authorities))).scalars())
        missing = [a for a in authorities if a not in known]
        if missing:
            raise TokenError(f"unknown authority: {', '.join(missing)} (see the catalogue's authority ids)")
    return [("authority", a) for a in authorities] + [("region", r) for r in regions]


def add_token(engine: Engine, name: str, role: str, regions: tuple[str, ...] | list[str] = (), *,
              authorities: tuple[str, ...] | list[str] = (), all_authorities: bool = False) -> str:
    """Create a token; returns it in clear (the only time it is ever visible).

    ``regions`` of a catalog token (at least one) are the ARS whose catalogue it may write; those of an
    agent token, with ``authorities`` or ``all_authorities``, are the cases it may see (at least one).
    """
    if role not in ROLES:
        raise TokenError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if not _NAME.match(name or ""):
        raise TokenError("a token name is 1-100 letters, digits and _ . @ -, starting with a letter or digit")
    regions = list(dict.fromkeys(regions))
    authorities = list(dict.fromkeys(authorities))
    if role == "catalog" and not regions:
        raise TokenError("a catalog token needs --region ARS (the region whose catalogue it may write)")
    if regions and role not in ("catalog", "agent"):
        raise TokenError("--region is for catalog and agent tokens only")
    if (authorities or all_authorities) and role != "agent":
        raise TokenError("--authority and --all-authorities are for agent tokens only")
    token = new_token()
    try:
        with engine.begin() as conn:
            case_rows = (_case_scope_rows(conn, authorities, regions, all_authorities) if role == "agent"
                         else [])
            token_id = conn.execute(
                insert(token_t).values(name=name, role=role, token_hash=hash_token(token), created_at=datetime.now(UTC))
                .returning(token_t.c.id)
            ).scalar_one()
            if role == "catalog":
                for ars in regions:
                    try:
                        grant_region(conn, token_id, ars)
                    except ValueError as exc:
                        raise TokenError(str(exc)) from None
            if case_rows:
                conn.execute(insert(case_scope_t), [{"token_id": token_id, "kind": k, "value": v}
                                                    for k, v in case_rows])
    except IntegrityError:
        raise TokenError(f"a token named {name!r} exists already") from None
    return token


def set_case_scope(engine: Engine, name: str, *, authorities: tuple[str, ...] | list[str] = (),
                   regions: tuple[str, ...] | list[str] = (), all_authorities: bool = False) -> Scope:
    """Replace the scope of agent token ``name`` (``citizen-hub token scope``); returns the new scope.

    This is how an agent token made before scopes existed is given one.
    """
    with engine.begin() as conn:
        row = conn.execute(select(token_t.c.id, token_t.c.role).where(token_t.c.name == name)).first()
        if row is None:
            raise TokenError(f"no API token named {name!r}")
        if row.role != "agent":
            raise TokenError(f"token {name!r} has the role {row.role!r}; only agent tokens have a case scope")
        rows = _case_scope_rows(conn, list(dict.fromkeys(authorities)), list(dict.fromkeys(regions)),
                                all_authorities)
        conn.execute(delete(case_scope_t).where(case_scope_t.c.token_id == row.id))
        conn.execute(insert(case_scope_t), [{"token_id": row.id, "kind": k, "value": v} for k, v in rows])
    return make_scope("agent", rows)


def describe_scope(role: str, rows: list[tuple[str, str]]) -> str:
    """How ``token list`` shows a token's scope."""
    if role == "agent":
        if any(kind == "all" for kind, _ in rows):
            return "all authorities"
        return ", ".join(f"{kind}:{value}" for kind, value in sorted(rows)) or "NO SCOPE (refused)"
    if role == "catalog":
        return ", ".join(f"region:{value}" for _kind, value in sorted(rows)) or "no region"
    return "-"


def revoke_token(engine: Engine, name: str) -> bool:
    with engine.begin() as conn:
        result = conn.execute(update(token_t).where(token_t.c.name == name, token_t.c.revoked_at.is_(None))
                              .values(revoked_at=datetime.now(UTC)))
    return result.rowcount == 1


def _scope_rows(conn: Any) -> dict[int, list[tuple[str, str]]]:
    """token id → its scope rows: case scopes of agent tokens, catalogue regions of catalog tokens."""
    out: dict[int, list[tuple[str, str]]] = {}
    for token_id, kind, value in conn.execute(select(case_scope_t.c.token_id, case_scope_t.c.kind,
                                                     case_scope_t.c.value)):
        out.setdefault(token_id, []).append((kind, value))
    for token_id, ars in conn.execute(select(scope_t.c.token_id, scope_t.c.region_ars)):
        out.setdefault(token_id, []).append(("catalog-region", ars))
    return out


def list_tokens(engine: Engine) -> list[dict]:
    """Every token with name, role, dates and ``scope`` (as :func:`describe_scope` words it)."""
    with engine.connect() as conn:
        rows = conn.execute(select(token_t.c.id, token_t.c.name, token_t.c.role, token_t.c.created_at,
                                   token_t.c.revoked_at).order_by(token_t.c.name)).mappings().all()
        scopes = _scope_rows(conn)
    out = []
    for r in rows:
        mine = scopes.get(r["id"], [])
        if r["role"] == "agent":
            mine = [(k, v) for k, v in mine if k != "catalog-region"]
        elif r["role"] == "catalog":
            mine = [("region", v) for k, v in mine if k == "catalog-region"]
        out.append({k: r[k] for k in ("name", "role", "created_at", "revoked_at")}
                   | {"scope": describe_scope(r["role"], mine)})
    return out


class TokenVerifier:
    """Checks bearer tokens against the database, through a short-lived in-memory table."""

    def __init__(self, engine: Engine, ttl_seconds: float = 5.0, miss_reload_seconds: float = 1.0) -> None:
        self.engine = engine
        self.ttl = ttl_seconds
        self.miss_reload = miss_reload_seconds
        self._table: dict[str, Principal] = {}
        # token -> principal of the tokens verified since the last reload: a service account sends
        # the same token with every request, and hashing it each time was a tenth of the cost of
        # handing over one request. Only valid tokens go in (so it is no larger than the table),
        # and it is emptied with every reload, so revocation takes effect as before. The tokens are
        # in this process's memory while requests carry them anyway; the database keeps only hashes.
        self._verified: dict[str, Principal] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    def _load(self) -> dict[str, Principal]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(token_t.c.id, token_t.c.token_hash, token_t.c.name, token_t.c.role)
                                .where(token_t.c.revoked_at.is_(None))).all()
            scopes = _scope_rows(conn) if any(role == "agent" for *_, role in rows) else {}
        return {h: Principal(name, role, h,
                             make_scope(role, [r for r in scopes.get(tid, []) if r[0] != "catalog-region"])
                             if role == "agent" else None)
                for tid, h, name, role in rows}

    async def _reload(self, min_age: float) -> None:
        async with self._lock:
            if time.monotonic() - self._loaded_at < min_age:
                return  # another request reloaded meanwhile
            self._table = await asyncio.to_thread(self._load)
            self._verified = {}
            self._loaded_at = time.monotonic()

    def _match(self, digest: str) -> Principal | None:
        found = self._table.get(digest)
        if found is None:
            return None
        return found if hmac.compare_digest(found.token_hash, digest) else None

    async def verify(self, token: str | None) -> Principal | None:
        """The principal of ``token``, or None when it is unknown or revoked."""
        if not token or not token.startswith(PREFIX) or len(token) > 200:
            return None
        if time.monotonic() - self._loaded_at > self.ttl:
            await self._reload(self.ttl)
        verified = self._verified
        principal = verified.get(token)
        if principal is not None:
            return principal
        digest = hash_token(token)
        principal = self._match(digest)
        if principal is not None:
            verified[token] = principal
            return principal
        if principal is None and time.monotonic() - self._loaded_at > self.miss_reload:
            # Perhaps created a moment ago: reload, but at most once per miss_reload seconds so that
            # a stream of wrong tokens cannot turn into a stream of queries.
            await self._reload(self.miss_reload)
            principal = self._match(digest)
        return principal


# -- regions of catalogue tokens --------------------------------------------------------------------------


def grant_region(session: Any, token_id: int, region_ars: str) -> bool:
    """Let token ``token_id`` write the catalogue of ``region_ars`` (and every region inside it).

    For ``citizen-hub token add NAME --role catalog --region ARS``. Idempotent: returns False when the
    scope was there already. ``ValueError`` for a malformed ARS, an unknown region (when regions are
    loaded) or an unknown token. Does not commit: the caller's transaction decides.
    """
    check_region(session, region_ars)
    if session.execute(select(token_t.c.id).where(token_t.c.id == token_id)).first() is None:
        raise ValueError(f"no API token with id {token_id}")
    have = session.execute(
        select(scope_t.c.token_id).where(scope_t.c.token_id == token_id, scope_t.c.region_ars == region_ars)
    ).first()
    if have is not None:
        return False
    session.execute(insert(scope_t).values(token_id=token_id, region_ars=region_ars, created_at=utcnow()))
    return True


def revoke_region(session: Any, token_id: int, region_ars: str) -> bool:
    """Take a region away from a token; returns whether it had it. Does not commit."""
    result = session.execute(
        delete(scope_t).where(scope_t.c.token_id == token_id, scope_t.c.region_ars == region_ars)
    )
    return bool(result.rowcount)


def token_regions(conn: Any, token_id: int) -> list[str]:
    """The regions a token may write, sorted."""
    rows = conn.execute(select(scope_t.c.region_ars).where(scope_t.c.token_id == token_id)).all()
    return sorted(r[0] for r in rows)
