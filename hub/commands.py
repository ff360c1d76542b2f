"""The explicit registry of CLI command modules.

Each module listed here exposes ``register(subparsers) -> None``, adding its sub-commands with
``set_defaults(func=handler)``; a handler takes the parsed ``argparse.Namespace`` and returns an
exit code. Adding a feature's commands means adding its module to this tuple, nothing else.
"""

COMMAND_MODULES: tuple[str, ...] = (
    "hub.cli_knowledge",  # init, serve, lookup, route, config
    "hub.cli_queue",  # token add/list/revoke, queue status, purge, forget
    "hub.cli_users",  # user add/list/...
    "hub.cli_catalog",  # catalog import
    "hub.cli_email",  # email serve, email poll-imap
)
