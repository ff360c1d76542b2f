"""The ``citizen-hub`` command line.

Sub-commands come from the modules listed in :mod:`hub.cli.commands`; this module only builds the parser,
loads the configuration and turns expected failures into a one-line message and exit code 2 instead
of a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from hub import __version__
from hub.cli.commands import command_registrars
from hub.config import ConfigError, Settings, load_settings
from hub.db import DatabaseUnavailable
from hub.plugins import resolve


class UsageError(Exception):
    """A problem the user can fix (bad argument, unknown place, missing database): printed, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citizen-hub",
        description="Multichannel citizen-request hub: one queue, one knowledge base, every channel.",
    )
    parser.add_argument("--version", action="version", version=f"citizen-hub {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (never message bodies)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for target in command_registrars():
        resolve(target)(sub)
    return parser


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--db``, which every command that touches the database accepts."""
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: ./config.toml if present)")
    parser.add_argument("--db", metavar="URL", help="database URL; overrides [database] url")


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = load_settings(getattr(args, "config", None))
    if getattr(args, "db", None):
        settings.database.url = args.db
    return settings


def open_engine(settings: Settings, *, writable: bool = True):
    """The configured database, migrated and checked to take a write (:func:`hub.migrate.open_database`);
    a failure ends the command with one line naming the URL (password masked) and the cause."""
    from hub.migrate import open_database

    return open_database(settings.database.url, settings.database.echo, writable=writable)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # Every command brings the schema up to date first; which revisions ran is for -v only.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ConfigError, DatabaseUnavailable) as exc:
        print(f"citizen-hub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
