"""Channels plug into the hub: what a channel declares, and how the hub finds the channels.

The hub is the host and never imports a channel (import-linter keeps ``channels`` above ``hub``). Each
channel package describes itself with one :class:`Channel` (its config sections, its HTTP routes, its
CLI commands, the outbound adapters of the case channels it serves), and ``channels/__init__.py``
lists them all in ``REGISTRY``, the one explicit registry of channels. The hub reaches that list through
the ``citizen_hub.channels`` entry point in ``pyproject.toml`` (the way pytest and datasette find their
plugins), so installing the package is all it takes.

Routes, commands and adapters are named as ``"module:attribute"`` strings and imported only when they
are used: building the settings model reads a channel's sections without importing its handlers,
which import the hub's HTTP layer in turn.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "citizen_hub.channels"


@dataclass(frozen=True)
class SettingsSection:
    """One ``[key]`` section of ``config.toml`` that a channel owns."""

    key: str
    model: type  # a knowledge.settings.Section subclass
    description: str


@dataclass(frozen=True)
class Channel:
    """What one channel brings to the hub.

    * ``settings`` – its config sections, merged into :class:`hub.config.Settings`;
    * ``routes`` – ``"module:setup"``; ``setup(app)`` adds its HTTP routes (``hub.http.routes``);
    * ``commands`` – ``"module:register"``; ``register(subparsers)`` adds its CLI commands;
    * ``outbound`` – case channel -> ``"module:factory"``; ``factory(settings)`` builds the adapter that
      sends answers on that channel (:mod:`hub.queue.adapters`);
    * ``openapi`` – ``"module:attribute"``, the OpenAPI operations of its routes (``hub.http.openapi``);
    * ``privacy`` – ``"module:object"`` for a channel that keeps personal data in its own tables: the
      object's ``purge(conn, case_ids, now) -> int`` and ``forget(conn, case_ids, emails, phones) -> int``
      run inside the transactions of :mod:`hub.queue.privacy` and return how many rows they changed.
      Files of the attachment store that its rows no longer refer to it lists in
      ``conn.info["unreferenced_files"]`` (digests); privacy deletes them with the attachments' files.
    * ``recipients`` – ``"module:function"``: ``refusal(conn, channel, recipient) -> str | None``, why an
      answer on one of its ``outbound`` channels cannot reach that recipient (a number that sent STOP), in
      German for the agent; None when it can. :func:`hub.casework.reply` asks it in its transaction, so an
      answer nobody would receive is refused at once instead of failing later in the outbox.
    """

    name: str
    settings: tuple[SettingsSection, ...] = ()
    routes: str | None = None
    commands: str | None = None
    outbound: Mapping[str, str] = field(default_factory=dict)
    privacy: str | None = None
    #: ``"module:attribute"``: ``{(METHOD, path template): OpenAPI operation}`` of its routes, built with the
    #: helpers of :mod:`hub.http.openapi`.
    openapi: str | None = None
    recipients: str | None = None


def resolve(target: str) -> Any:
    """The attribute named by ``"module:attribute"``."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@functools.cache
def channels() -> tuple[Channel, ...]:
    """Every registered channel, in registry order (loaded once per process)."""
    found: list[Channel] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        registry = ep.load()
        for channel in registry:
            if not isinstance(channel, Channel):
                raise TypeError(f"entry point {ep.name}: {channel!r} is not a hub.plugins.Channel")
            if any(c.name == channel.name for c in found):
                raise ValueError(f"channel {channel.name!r} is registered twice")
            found.append(channel)
    if not found:
        log.warning("no channel plugins found (entry point group %s): is citizen-hub installed?",
                    ENTRY_POINT_GROUP)
    return tuple(found)


def settings_sections() -> tuple[SettingsSection, ...]:
    return tuple(s for c in channels() for s in c.settings)


def route_setups() -> tuple[str, ...]:
    return tuple(c.routes for c in channels() if c.routes)


def command_registrars() -> tuple[str, ...]:
    return tuple(c.commands for c in channels() if c.commands)


def outbound() -> dict[str, str]:
    """Case channel -> ``"module:factory"`` of every channel's outbound adapters."""
    targets: dict[str, str] = {}
    for c in channels():
        for case_channel, target in c.outbound.items():
            if case_channel in targets:
                raise ValueError(f"two channels send on {case_channel!r}")
            targets[case_channel] = target
    return targets


def privacy_handlers() -> tuple[Any, ...]:
    """The ``privacy`` objects of every channel that declares one (see :class:`Channel`)."""
    return tuple(resolve(c.privacy) for c in channels() if c.privacy)


def recipient_refusal(conn: Any, channel: str, recipient: str | None) -> str | None:
    """Why an answer on ``channel`` cannot reach ``recipient`` (see ``Channel.recipients``), or None."""
    if recipient is None:
        return None
    for c in channels():
        if c.recipients and channel in c.outbound:
            refusal = resolve(c.recipients)(conn, channel, recipient)
            if refusal:
                return refusal
    return None


def openapi_operations() -> dict[tuple[str, str], dict[str, Any]]:
    """Every channel's OpenAPI operations (``Channel.openapi``), keyed by (method, path template)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for channel in channels():
        if channel.openapi:
            out.update(resolve(channel.openapi))
    return out
