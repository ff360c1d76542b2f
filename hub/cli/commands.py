"""The explicit registry of CLI command modules.

Each module listed here exposes ``register(subparsers) -> None``, adding its sub-commands with
``set_defaults(func=handler)``; a handler takes the parsed ``argparse.Namespace`` and returns an
exit code. Adding a feature's commands means adding its module to this tuple; a channel's commands
come from its plugin descriptor (``Channel.commands``).
"""

from __future__ import annotations

HUB_COMMAND_MODULES: tuple[str, ...] = (
    "hub.cli.knowledge",  # init, serve, lookup, route, config
    "hub.cli.queue",  # token add/list/revoke, queue status, purge, forget, worker
    "hub.cli.users",  # user add/list/...
    "hub.cli.catalog",  # catalog import, scope, status
    "hub.cli.history",  # history import, train, evaluate (learned routing)
)


def command_registrars() -> tuple[str, ...]:
    """``"module:register"`` of every command module: the hub's, then the channels'."""
    from hub.plugins import command_registrars as channel_registrars

    return (*(f"{m}:register" for m in HUB_COMMAND_MODULES), *channel_registrars())
