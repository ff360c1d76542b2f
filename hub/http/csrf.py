"""CSRF protection for the citizen forms: an HMAC token bound to a cookie.

A browser gets a random, HttpOnly cookie (``chub_csrf``) with the first page. Each form carries
``<issued-at>.<HMAC(secret, cookie | issued-at)>``; a post is accepted only when the token was signed by
this hub, for the cookie the browser sends, and is younger than ``max_age``. Another site can make a
browser post to the hub, but it can neither read the cookie nor forge a signature for it, so it cannot
produce a matching token. As a second line, a post whose ``Origin`` header names another host is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "chub_csrf"
FIELD = "csrf_token"
HEADER = "X-CSRF-Token"


class CsrfProtect:
    """Issues and checks form tokens; ``secret`` is the signing key (bytes, at least 32)."""

    def __init__(
        self,
        secret: bytes,
        max_age: float = 7200.0,
        *,
        extra_hosts: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the CSRF secret must have at least 32 bytes")
        self._secret = secret
        self.max_age = max_age
        # Hosts a form may be posted from besides the request's own Host (the public name behind a proxy).
        self.extra_hosts = frozenset(h.lower() for h in extra_hosts if h)
        self.clock = clock

    @staticmethod
    def _valid_cookie(value: str | None) -> bool:
        return bool(value) and 20 <= len(value) <= 100 and value.replace("-", "").replace("_", "").isalnum()

    def cookie_value(self, request: web.Request) -> tuple[str, bool]:
        """The browser's CSRF cookie, or a new one; the flag says whether it must be set on the response."""
        value = request.cookies.get(COOKIE)
        if self._valid_cookie(value):
            return value, False
        return secrets.token_urlsafe(32), True

    def _sign(self, cookie: str, issued: int) -> str:
        return hmac.new(self._secret, f"{cookie}|{issued}".encode(), hashlib.sha256).hexdigest()

    def token(self, cookie: str) -> str:
        issued = int(self.clock())
        return f"{issued}.{self._sign(cookie, issued)}"

    def check(self, request: web.Request, token: str | None) -> bool:
        """True when ``token`` belongs to the request's cookie, is fresh, and the origin is this host."""
        origin = request.headers.get("Origin")
        if origin and origin != "null":
            host = urlsplit(origin).netloc.lower()
            if host != (request.host or "").lower() and host not in self.extra_hosts:
                return False
        cookie = request.cookies.get(COOKIE)
        if not self._valid_cookie(cookie) or not token or len(token) > 200:
            return False
        issued_s, _, signature = token.partition(".")
        if not (issued_s.isascii() and issued_s.isdigit()):
            return False
        issued = int(issued_s)
        age = self.clock() - issued
        if age < -60 or age > self.max_age:  # a minute of clock skew between hub processes
            return False
        return hmac.compare_digest(signature, self._sign(cookie, issued))

    def set_cookie(self, response: web.StreamResponse, value: str, secure: bool) -> None:
        response.set_cookie(COOKIE, value, httponly=True, samesite="Lax", secure=secure, path="/")
