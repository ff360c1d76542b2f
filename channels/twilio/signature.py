"""Checking ``X-Twilio-Signature`` with twilio's own :class:`~twilio.request_validator.RequestValidator`.

Twilio signs a webhook with an HMAC of the exact URL it called plus the sorted POST parameters. The URL
is ``[twilio] public_url`` + the path and query of the request *as sent* (``request.raw_path``): behind a
proxy the Host header and scheme the hub sees differ from what Twilio called, so they are never used.

A rejected webhook is logged with the URL it was checked against and the reason, never with its body
(it is a citizen's message), and counted by route and reason (``/metrics``): a wrong ``public_url`` or
token then shows at once in the log and the figures instead of as silently lost messages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict, MultiDict
from twilio.request_validator import (
    HMAC_SHA1,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

log = logging.getLogger(__name__)

__all__ = ["SIGNATURE_HEADER", "SIGNATURE_SETTINGS_HEADER", "SignatureChecker"]

#: Reasons a signature check fails (the label of the rejection counter).
MISSING, FORGED, UNSUPPORTED = "missing", "forged", "unsupported_algorithm"

# An HMAC-SHA256 signature is 44 characters of base64, SHA1 28: anything much longer is not a signature
# and is not worth hashing twice.
_MAX_SIGNATURE = 128


class SignatureChecker:
    """Validates webhook signatures for one account; thread-safe counts of what it refused."""

    def __init__(self, auth_token: str, public_url: str) -> None:
        if not auth_token:
            raise ValueError("a signature check needs the account's auth token")
        self._validator = RequestValidator(auth_token)
        key = auth_token.encode("utf-8")
        self._macs = {"HMAC_SHA1": hmac.new(key, digestmod=hashlib.sha1),
                      "HMAC_SHA256": hmac.new(key, digestmod=hashlib.sha256)}
        self.public_url = public_url.rstrip("/")
        self._lock = threading.Lock()
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.accepted = 0

    def url_for(self, raw_path: str) -> str:
        """The URL Twilio signed: ``public_url`` + the request's raw path and query."""
        if not raw_path.startswith("/"):
            raw_path = "/" + raw_path
        return self.public_url + raw_path

    def sign(self, url: str, params: Mapping[str, Any] | Any) -> str:
        """The signature Twilio would send for ``params`` posted to ``url`` (tests, benchmarks)."""
        return self._validator.compute_signature(url, params)

    def expected(self, url: str, params: Any, algorithm: str = HMAC_SHA1) -> str:
        """``RequestValidator.compute_signature(url, params, algorithm)``, with the key's HMAC set up once.

        ``params`` is a multidict or the form's ``(name, value)`` pairs. The same string is signed: the URL,
        then every key sorted with each of its distinct values sorted — which is the distinct pairs sorted;
        ``tests/channels/twilio/test_twilio_fuzz.py`` checks the two agree on any form."""
        mac = self._macs.get(algorithm.upper())
        if isinstance(params, MultiDict | CIMultiDict):
            params = list(params.items())
        if mac is None or not isinstance(params, list):
            return self._validator.compute_signature(url, params, algorithm)
        mac = mac.copy()
        mac.update((url + "".join([k + v for k, v in sorted(set(params))])).encode("utf-8"))
        return base64.b64encode(mac.digest()).decode("ascii")

    def failure(self, url: str, params: Any, headers: Mapping[str, str]) -> str | None:
        """None when the request is signed by our account; else the reason (``missing``, ``forged``, ...).

        ``params`` is the parsed form as a multidict (``getall``) or its ``(name, value)`` pairs, so a
        repeated key is signed the way Twilio signs it. Does not log or count: :meth:`check` does.
        """
        signature = headers.get(SIGNATURE_HEADER, "")
        if not signature.strip():
            return MISSING
        if len(signature) > _MAX_SIGNATURE:
            return FORGED
        algorithm = get_signature_algorithm(headers.get(SIGNATURE_SETTINGS_HEADER))
        if algorithm.upper() not in ("HMAC_SHA1", "HMAC_SHA256"):
            return UNSUPPORTED
        signature = signature.strip()
        # The URL as configured first (what Twilio signs when public_url carries no port): one HMAC for an
        # honest webhook. Then RequestValidator.validate, which tries the URL with and without the port.
        expected = self.expected(url, params, algorithm)
        if hmac.compare_digest(expected.encode(), signature.encode()):
            return None
        if self._validator.validate(url, MultiDict(params) if isinstance(params, list) else params, signature,
                                    algorithm):
            return None
        return FORGED

    def check(self, route: str, url: str, params: Any, headers: Mapping[str, str]) -> str | None:
        """:meth:`failure`, with the rejection logged (the URL, never the body) and counted by route."""
        reason = self.failure(url, params, headers)
        with self._lock:
            if reason is None:
                self.accepted += 1
            else:
                self.rejected[(route, reason)] += 1
        if reason is not None:
            log.warning("twilio: refused a webhook to %s: signature %s (checked against %s; check [twilio] "
                        "public_url and auth_token if Twilio's own requests are refused)", route, reason, url)
        return reason

    def counts(self) -> dict[tuple[str, str], int]:
        """A copy of the rejection counts, ``(route, reason) -> n``."""
        with self._lock:
            return dict(self.rejected)
