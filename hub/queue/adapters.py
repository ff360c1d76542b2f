"""The contract between the outbox and the channels' outbound adapters.

An adapter sends one outbound message of a case on one channel (e-mail, SMS, letter, ...). It is built
once at start-up from the settings, so a bad configuration (missing credentials) fails then and not
at the first send. ``send`` never raises for a remote failure: it returns a :class:`SendResult`
saying whether the message went out, and if not whether trying again later can help.

Which adapter serves which case channel comes from the channel plugins (:func:`hub.plugins.outbound`):
a channel declares ``outbound={"sms": "channels.twilio.outbound:build_sms_adapter"}`` in its
descriptor. The hub's own pick-up channel (``api``: the client fetches the answer) is listed here.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from knowledge.settings import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    """Outcome of one send. ``temporary`` only matters when ``ok`` is False: True = retry later."""

    ok: bool
    temporary: bool = False
    detail: str = ""  # for operators: a provider id or an error; never the message body

    @classmethod
    def sent(cls, detail: str = "") -> SendResult:
        return cls(True, False, detail)

    @classmethod
    def retry(cls, detail: str) -> SendResult:
        return cls(False, True, detail)

    @classmethod
    def failed(cls, detail: str) -> SendResult:
        return cls(False, False, detail)


@dataclass(frozen=True)
class OutboundMessage:
    """What an adapter needs to send one message; built by the outbox dispatcher."""

    message_id: int
    case_id: int
    case_token: str
    channel: str
    kind: str  # reply | forward
    recipient: str | None  # e-mail address, E.164 number, postal address; None for pick-up channels
    subject: str | None
    text: str
    #: Stable id of this message (e-mail: its Message-ID; paper: the form id printed on the letter).
    #: Providers that de-duplicate can be given it so that a retry can never deliver twice.
    external_id: str | None
    #: External ids of the citizen's messages, newest last (e-mail: In-Reply-To/References).
    in_reply_to: tuple[str, ...] = ()
    contact: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class ChannelAdapter(Protocol):
    """Sends outbound messages on one channel. ``send`` must not raise on a remote failure."""

    name: str

    async def send(self, message: OutboundMessage) -> SendResult: ...


#: Case channels the hub itself serves: answers to requests that came in over the HTTP API are picked
#: up by the client (GET /api/cases/{id}): storing them is delivering them.
CORE_OUTBOUND: dict[str, str] = {"api": "hub.queue.outbox:build_pickup_adapter"}


def adapter_targets() -> dict[str, str]:
    """Case channel -> ``"module:factory"`` of every adapter: the hub's own and every channel plugin's."""
    from hub.plugins import outbound

    return {**CORE_OUTBOUND, **outbound()}


def load_adapters(settings: Any, names: Mapping[str, str] | None = None, *, strict: bool = False
                  ) -> dict[str, ChannelAdapter]:
    """Build the adapter of every registered channel (``names`` defaults to :func:`adapter_targets`).

    A factory that raises :class:`~knowledge.settings.ConfigError` marks its channel as not configured:
    the channel is left out with a warning (its outbound messages then fail with "no adapter"), unless
    ``strict``, where the error goes up and stops the start.
    """
    adapters: dict[str, ChannelAdapter] = {}
    for channel, target in (names if names is not None else adapter_targets()).items():
        module_name, _, factory = target.partition(":")
        try:
            adapters[channel] = getattr(importlib.import_module(module_name), factory)(settings)
        except ConfigError as exc:
            if strict:
                raise
            log.warning("channel %s is not configured, its answers cannot be sent: %s", channel, exc)
    return adapters
