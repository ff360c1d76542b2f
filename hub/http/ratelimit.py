"""A token bucket per client, in memory.

Each client has a bucket of ``burst`` tokens that refills at ``rate_per_minute``; a request takes one
token and is refused (HTTP 429) when none is left. Buckets live in one process: several hub processes
each allow the full rate, which is acceptable for a limit meant to stop scripts, not to meter usage.

Client addresses are personal data: they are kept only in memory, only as long as the bucket matters
(the least recently seen client is dropped first once ``max_clients`` is reached) and never logged.
IPv6 clients are grouped by their /64 network, which one household or host normally owns whole.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web


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
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
