"""A token bucket per client, in memory; and the intake limits built on it (:class:`IntakeLimits`).

Each client has a bucket of ``burst`` tokens that refills at ``rate_per_minute``; a request takes one
token and is refused (HTTP 429) when none is left. Buckets live in one process: several hub processes
each allow the full rate, which is acceptable for a limit meant to stop scripts, not to meter usage.

Client addresses are personal data: they are kept only in memory, only as long as the bucket matters
(the least recently seen client is dropped first once ``max_clients`` is reached) and never logged.
IPv6 clients are grouped by their /64 network, which one household or host normally owns whole.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from hashlib import blake2b
from typing import Any

from aiohttp import web
from pydantic import Field, field_validator

from knowledge.settings import Section


class RateLimiter:
    """Token buckets keyed by client; :meth:`take` answers ``(allowed, seconds_until_next_token)``."""

    def __init__(
        self,
        rate_per_minute: float,
        burst: int,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_minute <= 0 or burst < 1:
            raise ValueError("rate_per_minute must be > 0 and burst >= 1")
        self.rate = rate_per_minute / 60.0  # tokens per second
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def peek(self, key: str) -> tuple[bool, float]:
        """What :meth:`take` would answer now, without taking a token."""
        tokens = self.tokens(key, self.clock())
        return tokens >= 1.0, 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def tokens(self, key: str, now: float) -> float:
        """The tokens in ``key``'s bucket at ``now`` (a full bucket for a client not seen)."""
        found = self._buckets.get(key)
        if found is None:
            return self.burst
        return min(self.burst, found[0] + (now - found[1]) * self.rate)

    def spend(self, key: str, tokens: float, now: float) -> None:
        """Take one of the ``tokens`` that :meth:`tokens` found at ``now`` (at least one)."""
        buckets = self._buckets
        buckets.pop(key, None)
        buckets[key] = (tokens - 1.0, now)  # inserted last: most recently seen
        if len(buckets) > self.max_clients:
            while len(buckets) > self.max_clients:
                buckets.popitem(last=False)

    def take(self, key: str) -> tuple[bool, float]:
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)  # re-inserted last: most recently seen
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        retry_after = 0.0 if allowed else (1.0 - tokens) / self.rate
        return allowed, retry_after

    def give_back(self, key: str) -> None:
        """Return one token taken by :meth:`take` (the request turned out to cost nothing)."""
        found = self._buckets.get(key)
        if found is not None:
            self._buckets[key] = (min(self.burst, found[0] + 1.0), found[1])

    def __len__(self) -> int:
        return len(self._buckets)


def client_key(request: web.Request, trust_forwarded_for: bool = False) -> str:
    """The address a request comes from, IPv6 cut to its /64; behind a trusted proxy its X-Forwarded-For."""
    address = request.remote or ""
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        # The proxy appends the address it saw; entries left of it were written by the client.
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            address = last
    return address_key(address)


def address_key(address: str) -> str:
    """A client address as the limits count it: IPv4 as is, IPv6 cut to its /64 (one household or host)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


# -- intake limits: how many requests one sender, client or token may hand in ---------------------------------


class IntakeLimitSettings(Section):
    """Intake limits per sender address, client address and API token, on every channel (``[limits]``)."""

    enabled: bool = Field(
        True,
        description="Apply the intake limits below. Off only for load tests: a single sender could then open "
        "any number of cases.",
    )
    sender_per_hour: float = Field(
        30.0,
        ge=0,
        description="Requests and follow-ups one sender address (an e-mail address or a phone number) may hand "
        "in per hour on average, over every channel together; more are refused for a while (SMTP 451 4.7.1, "
        "HTTP 429 with Retry-After), never dropped silently. 0 = no limit.",
    )
    sender_burst: int = Field(
        10, ge=1, description="Requests one sender address may hand in at once before sender_per_hour applies."
    )
    client_per_hour: float = Field(
        300.0,
        ge=0,
        description="Requests one client address (the connecting IP; IPv6 as its /64) may hand in per hour on "
        "average: web form, Open311, the SMTP listener's peer. 0 = no limit.",
    )
    client_burst: int = Field(
        60, ge=1, description="Requests one client address may hand in at once before client_per_hour applies."
    )
    token_per_minute: float = Field(
        600.0,
        ge=0,
        description="Requests one API token may hand in per minute on average (POST /api/requests, an Open311 "
        "api_key); more get 429 with Retry-After. 0 = no limit.",
    )
    token_burst: int = Field(
        300, ge=1, description="Requests one API token may hand in at once before token_per_minute applies."
    )
    exempt_clients: list[str] = Field(
        default_factory=list,
        description="Client networks the per-client limit does not apply to (CIDR, e.g. the organisation's "
        "own mail relay '10.0.0.25/32' in front of the SMTP listener); the sender limit still applies to "
        "their mail. In the environment: a comma-separated list.",
    )
    max_keys: int = Field(
        100_000, ge=100,
        description="Most senders, clients and tokens remembered per kind; the least recently seen is "
        "forgotten first (bounds the memory an attacker can make the limiter use).",
    )

    @field_validator("exempt_clients", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            out = []
            for item in value:
                try:
                    out.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
                except ValueError:
                    raise ValueError(f"{item!r} is not an IP network (CIDR)") from None
            return out
        return value


def limit_settings(settings: Any) -> IntakeLimitSettings:
    """The ``[limits]`` section of ``settings``, or the defaults when it has none."""
    value = getattr(settings, "limits", None)
    return value if isinstance(value, IntakeLimitSettings) else IntakeLimitSettings()


#: Kinds of keys and the limit each is counted against.
KINDS = {"email": "sender", "phone": "sender", "ip": "client", "token": "token"}


class IntakeLimited(Exception):
    """A sender, client or token handed in too much; try again in ``retry_after`` seconds."""

    def __init__(self, kind: str, retry_after: float) -> None:
        self.kind = kind
        self.limit = KINDS.get(kind, kind)
        self.retry_after = max(1, int(retry_after + 0.999))
        who = {"sender": "diesem Absender", "client": "dieser Adresse", "token": "diesem Token"}[self.limit]
        super().__init__(f"Zu viele Anfragen von {who}; bitte versuchen Sie es in {self.retry_after} Sekunden "
                         "noch einmal")


class IntakeLimits:
    """The intake limits of one process, keyed by ``(kind, key)``: ``("email", address)``, ``("phone",
    number)``, ``("ip", client address)``, ``("token", token name)``.

    Every channel calls :meth:`check` with the keys it knows before it hands a request to intake: the
    SMTP listener (peer and envelope sender at MAIL FROM, the From/Reply-To address after parsing), the
    web form and Open311 (client address, the contact's address and number), ``POST /api/requests``
    (the token, the contact), and the SMS and voice channels (the caller's number). A sender's bucket
    is shared by every channel of the process.

    The buckets live in this process (:class:`RateLimiter`): several hub processes each allow the full
    rate, so with N processes a sender can hand in up to N times as much. Keys are kept as BLAKE2
    digests, so the limiter holds no addresses; the least recently seen are forgotten first.
    """

    def __init__(self, settings: IntakeLimitSettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = s = settings or IntakeLimitSettings()
        per_minute = {"sender": s.sender_per_hour / 60, "client": s.client_per_hour / 60,
                      "token": s.token_per_minute}
        bursts = {"sender": s.sender_burst, "client": s.client_burst, "token": s.token_burst}
        self._limiters = {name: RateLimiter(rate, bursts[name], max_clients=s.max_keys, clock=clock)
                          for name, rate in per_minute.items() if rate > 0}
        self._exempt = [ipaddress.ip_network(n) for n in s.exempt_clients]
        self._lock = threading.Lock()

    def _exempt_client(self, key: str) -> bool:
        if not self._exempt:
            return False
        try:
            network = ipaddress.ip_network(key, strict=False)
        except ValueError:
            return False
        return any(network.version == e.version and network.subnet_of(e) for e in self._exempt)

    def _entries(self, keys: Iterable[tuple[str, str | None]]) -> list[tuple[str, RateLimiter, str]]:
        out: list[tuple[str, RateLimiter, str]] = []
        seen: set[tuple[str, str]] = set()
        for kind, key in keys:
            limit = KINDS.get(kind)
            if limit is None:
                raise ValueError(f"unknown intake limit kind {kind!r}; expected one of {', '.join(KINDS)}")
            if not key:
                continue
            key = key.strip().lower()
            limiter = self._limiters.get(limit)
            if not key or limiter is None or (kind == "ip" and self._exempt_client(key)):
                continue
            digest = blake2b(f"{limit}:{key}".encode(), digest_size=16).hexdigest()
            if (limit, digest) in seen:  # the envelope sender is the From address: count it once
                continue
            seen.add((limit, digest))
            out.append((kind, limiter, digest))
        return out

    def check(self, *keys: tuple[str, str | None]) -> None:
        """Count one request against every key given (empty keys are skipped); raise
        :class:`IntakeLimited` without counting anything when any of them is over its limit."""
        if not self.settings.enabled:
            return
        entries = self._entries(keys)
        if not entries:
            return
        with self._lock:
            # Each bucket read once, at one moment: what peek and take would find, without reading it again.
            found = []
            for kind, limiter, digest in entries:
                now = limiter.clock()
                tokens = limiter.tokens(digest, now)
                if tokens < 1.0:
                    raise IntakeLimited(kind, (1.0 - tokens) / limiter.rate)
                found.append((limiter, digest, tokens, now))
            for limiter, digest, tokens, now in found:
                limiter.spend(digest, tokens, now)

    def refund(self, *keys: tuple[str, str | None]) -> None:
        """Give back what :meth:`check` counted for a request that cost nothing: a repeat of one already
        stored (the same Message-ID, the same external id), so that retries never use up a budget."""
        if not self.settings.enabled:
            return
        entries = self._entries(keys)
        with self._lock:
            for _kind, limiter, digest in entries:
                limiter.give_back(digest)

    @staticmethod
    def sender_keys(contact: Any) -> tuple[tuple[str, str | None], ...]:
        """The sender keys of a request's contact (:class:`hub.queue.requests.Contact` or a mapping)."""
        get = contact.get if isinstance(contact, dict) else (lambda name: getattr(contact, name, None))
        return (("email", get("email")), ("phone", get("phone")))


LIMITS = web.AppKey("intake_limits", IntakeLimits)


def install_limits(app: web.Application) -> IntakeLimits:
    """The app's one :class:`IntakeLimits` (made from ``[limits]`` on first call; call it from ``setup``)."""
    limits = app.get(LIMITS)
    if limits is None:
        from hub.http.app import SETTINGS

        limits = app[LIMITS] = IntakeLimits(limit_settings(app.get(SETTINGS)))
    return limits
