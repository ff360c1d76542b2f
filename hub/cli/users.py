"""CLI of console accounts: ``user add|list|passwd|unlock|disable``.

Passwords are read from standard input only (``--password-stdin``), never from the command line, where
they would end up in the shell history and in the process list::

    printf '%s\\n' "$PASSWORD" | citizen-hub user add meier --role agent --authority kreis-01060 --password-stdin
"""

from __future__ import annotations

import argparse
import sys

from hub.cli import UsageError, add_common_options, open_engine, settings_from_args
from hub.console.auth import ROLES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user", help="console accounts of agents, supervisors and admins")
    usub = p.add_subparsers(dest="user_command", metavar="ACTION")
    usub.required = True

    a = usub.add_parser("add", help="create an account (the password is read from stdin)")
    add_common_options(a)
    a.add_argument("name", help="log-in name, e.g. meier or a.meier@kreis-segeberg.de")
    a.add_argument("--role", required=True, choices=ROLES,
                   help="agent: calls and queue; supervisor: also the dashboard; admin: everything, everywhere")
    a.add_argument("--authority", action="append", default=[], metavar="ID",
                   help="authority whose cases the account sees (repeatable), e.g. kreis-01060")
    a.add_argument("--region", action="append", default=[], metavar="ARS",
                   help="region whose authorities' cases the account sees (repeatable), e.g. 01060")
    a.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input (required)")
    a.set_defaults(func=cmd_add)

    a = usub.add_parser("list", help="list accounts with role and scope (never passwords)")
    add_common_options(a)
    a.set_defaults(func=cmd_list)

    a = usub.add_parser("passwd", help="set a new password (from stdin) and end the account's sessions")
    add_common_options(a)
    a.add_argument("name")
    a.add_argument("--password-stdin", action="store_true", help="read the password from stdin (required)")
    a.set_defaults(func=cmd_passwd)

    a = usub.add_parser("unlock", help="lift a lockout after too many failed log-ins")
    add_common_options(a)
    a.add_argument("name")
    a.set_defaults(func=cmd_unlock)

    a = usub.add_parser("disable", help="disable an account and end its sessions")
    add_common_options(a)
    a.add_argument("name")
    a.set_defaults(func=cmd_disable)


def _engine(args: argparse.Namespace):
    settings = settings_from_args(args)
    return settings, open_engine(settings)


def _read_password(args: argparse.Namespace) -> str:
    if not args.password_stdin:
        raise UsageError("give the password on standard input with --password-stdin (never as an argument)")
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise UsageError("no password on standard input")
    return password


def _check_scopes(engine, authorities: list[str], regions: list[str]) -> None:
    from sqlalchemy import select

    from knowledge.models import Authority
    from knowledge.regions import check_region

    with engine.connect() as conn:
        if authorities:
            known = set(conn.execute(select(Authority.__table__.c.id)
                                     .where(Authority.__table__.c.id.in_(authorities))).scalars())
            missing = [a for a in authorities if a not in known]
            if missing:
                raise UsageError(f"unknown authority: {', '.join(missing)} (see the catalogue's authority ids)")
        for ars in regions:
            try:
                check_region(conn, ars)
            except ValueError as exc:
                raise UsageError(f"--region: {exc}") from None


def cmd_add(args: argparse.Namespace) -> int:
    from hub.console.auth import AuthError, add_user, check_name
    from hub.console.settings import console_settings

    try:
        check_name(args.name)
    except AuthError as exc:
        raise UsageError(str(exc)) from None
    password = _read_password(args)
    settings, engine = _engine(args)
    _check_scopes(engine, args.authority, args.region)
    try:
        add_user(engine, args.name, args.role, password, authorities=args.authority, regions=args.region,
                 settings=console_settings(settings))
    except AuthError as exc:
        raise UsageError(str(exc)) from None
    scope = ", ".join([*args.authority, *(f"region {r}" for r in args.region)]) or "everything"
    print(f"account {args.name} ({args.role}) created; sees: {scope}", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from hub.console.auth import list_users

    _settings, engine = _engine(args)
    for u in list_users(engine):
        scope = ", ".join(f"{k}:{v}" for k, v in u["scopes"]) or ("everything" if u["role"] == "admin" else "-")
        flags = [f for f, on in (("disabled", u["disabled_at"]), ("locked", u["locked_until"])) if on]
        if u.get("locked_sources"):
            flags.append(f"locked for {u['locked_sources']} source(s)")
        print(f"{u['name']}\t{u['role']}\t{scope}" + (f"\t[{', '.join(flags)}]" if flags else ""))
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    from hub.console.auth import AuthError, set_password
    from hub.console.settings import console_settings

    password = _read_password(args)
    settings, engine = _engine(args)
    try:
        found = set_password(engine, args.name, password, console_settings(settings))
    except AuthError as exc:
        raise UsageError(str(exc)) from None
    if not found:
        raise UsageError(f"no account named {args.name!r}")
    print(f"password of {args.name} changed; its sessions ended", file=sys.stderr)
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    from hub.console.auth import unlock_user

    _settings, engine = _engine(args)
    if not unlock_user(engine, args.name):
        raise UsageError(f"no account named {args.name!r}")
    print(f"account {args.name} unlocked", file=sys.stderr)
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    from hub.console.auth import disable_user

    _settings, engine = _engine(args)
    if not disable_user(engine, args.name):
        raise UsageError(f"no account named {args.name!r}")
    print(f"account {args.name} disabled; its sessions ended", file=sys.stderr)
    return 0
