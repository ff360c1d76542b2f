"""The explicit registry of CLI command modules.

Each module listed here exposes ``register(subparsers) -> None``, adding its sub-commands with
``set_defaults(func=handler)``; a handler takes the parsed ``argparse.Namespace`` and returns an
exit code. Adding a feature's commands means adding its module to this tuple, nothing else.
"""

COMMAND_MODULES: tuple[str, ...] = (
    "hub.cli_knowledge",  # init, serve, lookup, route, config
)
