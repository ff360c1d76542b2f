"""CLI of the queue: ``token add|scope|list|revoke``, ``purge``, ``forget``, ``worker``, ``migrate``."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from hub.cli import UsageError, add_common_options, open_engine, settings_from_args
from hub.http.tokens import ROLES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="bearer tokens of service accounts and agents")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION")
    tsub.required = True
    t = tsub.add_parser("add", help="create a token and print it (it is stored hashed, shown only now)")
    add_common_options(t)
    t.add_argument("name", help="account name, e.g. web-frontend or agent.meier")
    t.add_argument("--role", required=True, choices=ROLES,
                   help="service: may hand over requests; agent: may read and work cases; catalog: may write "
                   "the catalogue of its --region; open311: the api_key of an Open311 client")
    t.add_argument("--region", action="append", default=[], metavar="ARS",
                   help="catalog tokens: a region (ARS) whose catalogue the token may write; agent tokens: a "
                   "region whose authorities' cases the token sees; repeatable")
    _agent_scope_options(t)
    t.set_defaults(func=cmd_token_add)
    t = tsub.add_parser("scope", help="set the cases an agent token sees (replaces its scope)")
    add_common_options(t)
    t.add_argument("name", help="an agent token's name")
    t.add_argument("--region", action="append", default=[], metavar="ARS",
                   help="a region whose authorities' cases the token sees; repeatable")
    _agent_scope_options(t)
    t.set_defaults(func=cmd_token_scope)
    t = tsub.add_parser("list", help="list tokens (names, roles and scopes, never the tokens)")
    add_common_options(t)
    t.set_defaults(func=cmd_token_list)
    t = tsub.add_parser("revoke", help="revoke a token by name")
    add_common_options(t)
    t.add_argument("name")
    t.set_defaults(func=cmd_token_revoke)

    p = sub.add_parser("purge", help="anonymise finished cases past their retention ([privacy])")
    add_common_options(p)
    p.add_argument("--dry-run", action="store_true", help="only count what would be anonymised")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("forget", help="delete all cases of one citizen (right to erasure)")
    add_common_options(p)
    p.add_argument("--email", help="the citizen's e-mail address")
    p.add_argument("--phone", help="the citizen's phone number")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("worker", help="run routing, SLA flagging and the outbox (no HTTP); for scale-out")
    add_common_options(p)
    p.add_argument("--once", action="store_true", help="process what is due, then exit")
    p.add_argument("--no-routing", action="store_true", help="do not route new cases")
    p.add_argument("--no-outbox", action="store_true", help="do not send outbound messages")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("migrate", help="bring the database schema to the newest revision")
    add_common_options(p)
    p.set_defaults(func=cmd_migrate)


def _agent_scope_options(t: argparse.ArgumentParser) -> None:
    t.add_argument("--authority", action="append", default=[], metavar="ID",
                   help="agent tokens: an authority whose cases the token sees (repeatable), e.g. kreis-01060")
    t.add_argument("--all-authorities", action="store_true",
                   help="agent tokens: sees the cases of every authority (say so explicitly; an agent token "
                   "without --authority, --region or this is refused)")


def _engine(args: argparse.Namespace):
    settings = settings_from_args(args)
    return settings, open_engine(settings)


def cmd_migrate(args: argparse.Namespace) -> int:
    from hub.migrate import current_revision

    _settings, engine = _engine(args)
    print(f"database at revision {current_revision(engine)}", file=sys.stderr)
    return 0


def cmd_token_add(args: argparse.Namespace) -> int:
    from hub.http.tokens import TokenError, add_token

    _settings, engine = _engine(args)
    try:
        token = add_token(engine, args.name, args.role, args.region, authorities=args.authority,
                          all_authorities=args.all_authorities)
    except TokenError as exc:
        raise UsageError(str(exc)) from None
    print(token)
    print(f"token for {args.name} ({args.role}) created; it is shown only this once", file=sys.stderr)
    return 0


def cmd_token_scope(args: argparse.Namespace) -> int:
    from hub.http.tokens import TokenError, set_case_scope

    _settings, engine = _engine(args)
    try:
        scope = set_case_scope(engine, args.name, authorities=args.authority, regions=args.region,
                               all_authorities=args.all_authorities)
    except TokenError as exc:
        raise UsageError(str(exc)) from None
    shown = "all authorities" if scope.everything else scope.describe()
    print(f"token {args.name} now sees: {shown} (running hubs take it over within seconds)", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from hub.http.tokens import list_tokens

    _settings, engine = _engine(args)
    for t in list_tokens(engine):
        state = f"revoked {t['revoked_at']:%Y-%m-%d}" if t["revoked_at"] else "active"
        print(f"{t['name']}\t{t['role']}\t{state}\t{t['scope']}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from hub.http.tokens import revoke_token

    _settings, engine = _engine(args)
    if not revoke_token(engine, args.name):
        raise UsageError(f"no active token named {args.name!r}")
    print(f"token {args.name} revoked", file=sys.stderr)
    return 0


def _store(settings):
    from hub.queue.intake import AttachmentStore
    from hub.queue.settings import queue_settings

    return AttachmentStore(queue_settings(settings).attachment_dir)


def cmd_purge(args: argparse.Namespace) -> int:
    from hub.queue.privacy import purge
    from hub.queue.settings import privacy_settings

    settings, engine = _engine(args)
    report = purge(engine, privacy_settings(settings), store=_store(settings), dry_run=args.dry_run)
    verb = "would anonymise" if args.dry_run else "anonymised"
    print(json.dumps(vars(report)))
    print(f"purge: {verb} {report.cases} cases ({report.messages} messages, {report.attachments} attachments)",
          file=sys.stderr)
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from hub.queue.privacy import forget

    if not args.email and not args.phone:
        raise UsageError("give --email or --phone")
    settings, engine = _engine(args)
    try:
        report = forget(engine, email=args.email, phone=args.phone, store=_store(settings), dry_run=args.dry_run)
    except ValueError as exc:
        raise UsageError(f"cannot use that address or number: {exc}") from None
    verb = "would delete" if args.dry_run else "deleted"
    print(json.dumps(vars(report)))
    print(f"forget: {verb} {report.cases} cases ({report.messages} messages)", file=sys.stderr)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from hub.queue.adapters import load_adapters
    from hub.queue.workers import QueueService

    settings, engine = _engine(args)
    router = None
    if not args.no_routing:
        from knowledge.base import KnowledgeBase

        router = KnowledgeBase.load(engine, settings)
    service = QueueService(engine, settings, router=router, adapters=load_adapters(settings))
    learning = None
    if router is not None and not args.once:
        from hub.learning import LearningThread

        learning = LearningThread(engine, router, settings.learning)  # the schedule of [learning]

    async def run() -> None:
        if args.once:
            if not args.no_routing:
                await asyncio.to_thread(service.routing.run_until_empty)
            await asyncio.to_thread(service.sla.run_once)
            if not args.no_outbox:
                await service.dispatcher.run_until_empty()
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if not args.no_routing:
            service.routing.start()
        if learning is not None:
            learning.start()
        service.sla.start()
        task = None if args.no_outbox else asyncio.create_task(service.dispatcher.run_forever())
        print(f"citizen-hub worker {service.routing.worker} running (Ctrl-C stops)", file=sys.stderr)
        await stop.wait()
        service.dispatcher.stop()
        if task is not None:
            await task
        await asyncio.to_thread(service.routing.stop)
        if learning is not None:
            await asyncio.to_thread(learning.stop)
        await asyncio.to_thread(service.sla.stop)

    asyncio.run(run())
    return 0
