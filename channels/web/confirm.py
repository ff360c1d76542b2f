"""The confirmation mail of a web-form request whose citizen chose "Per E-Mail" (issue 15.2).

The request is committed first (accept, store, then acknowledge); then the confirmation goes into the
outbox in its own transaction, so a crash in between loses the confirmation, never the request. It is
the e-mail channel's acknowledgement (:func:`channels.email.outbound.render_ack`): it repeats nothing the
citizen typed, carries the case token and the status link, and leaves as ``Auto-Submitted:
auto-generated`` with the null envelope sender (kind ``confirmation``, see :mod:`channels.email.outbound`).

Anyone can type any address into the form, so a confirmation is exactly what backscatter abuses: it is
counted against the same limits as mail acknowledgements (``[email] ack_rate_limit`` per address,
``ack_global_limit`` for all), and a refused one is only logged — the request stands, and the agent's
answer still goes by e-mail.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Engine

from channels.email.outbound import CONFIRMATION_KIND, AckRateLimiter, ack_rate_limiter, render_ack
from channels.email.settings import email_settings
from hub.casework import acknowledge
from hub.queue.settings import queue_settings

log = logging.getLogger(__name__)


class Confirmations:
    """Writes confirmation mails for one app: its limiter, its sender name, its queue settings."""

    def __init__(self, settings: Any, limiter: AckRateLimiter | None = None) -> None:
        self.email = email_settings(settings)
        self.queue = queue_settings(settings)
        self.limiter = limiter or ack_rate_limiter(self.email)

    def refusal(self, address: str) -> str | None:
        """Why no confirmation may go to ``address`` now (and counted when one may), or None."""
        if not self.email.ack_enabled:
            return "acknowledgements are off"
        if address == self.email.address:
            return "our own address"
        return self.limiter.refuse(address)

    def write(self, engine: Engine, *, case_id: int, token: str, address: str, language: str,
              status_url: str) -> int | None:
        """Put the confirmation of case ``case_id`` into the outbox; its message id, or None when refused."""
        refused = self.refusal(address)
        if refused:
            log.info("web: no confirmation mail for case %s: %s", case_id, refused)
            return None
        subject, text = render_ack("en" if language == "en" else "de", token=token,
                                   sender=self.email.display_name, status_url=status_url)
        with engine.begin() as conn:
            return acknowledge(conn, {"id": case_id, "token": token, "channel": "web"}, text=text,
                               author="web:confirmation", kind=CONFIRMATION_KIND, channel="email",
                               recipient=address, subject=subject, queue=self.queue)
