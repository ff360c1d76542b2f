"""The outside mail server the hub's outbox delivers to: a real aiosmtpd server in the harness's process.

It records every mail it took (by Message-ID) the moment DATA is complete, before its 250 goes out, and
waits a little before answering: a sender killed in that window has handed the mail over without knowing
it, the case the outbox marks ``uncertain``. It survives the hub's kills, so after a run it knows exactly
what went out, and how often.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
from collections import Counter

from aiosmtpd.controller import Controller

from .hub import free_port

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.I | re.M)


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        raw = envelope.original_content or b""
        head = raw.split(b"\r\n\r\n", 1)[0]
        match = _MESSAGE_ID.search(head)
        with self.sink.lock:
            self.sink.received[match.group(1).decode() if match else "(none)"] += 1
            self.sink.recipients.update(envelope.rcpt_tos)
        low, high = self.sink.delay
        if high > 0:
            await asyncio.sleep(self.sink.rng.uniform(low, high))
        return "250 2.0.0 Ok: queued"


class SmtpSink:
    """``with SmtpSink() as sink:`` → ``sink.port``; ``sink.received`` counts mails by Message-ID."""

    def __init__(self, delay: tuple[float, float] = (0.0, 0.03), seed: int = 0) -> None:
        self.delay = delay
        self.rng = random.Random(seed)
        self.port = free_port()
        self.lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.recipients: Counter[str] = Counter()
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpSink:
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.received)
