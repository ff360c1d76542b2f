"""CLI: ``email serve`` (the inbound SMTP/LMTP listener) and ``email poll-imap`` (a mailbox hosted elsewhere).

Both run their own intake writer and acknowledgement writer against the configured database, so they can
run next to ``citizen-hub serve`` (which sends the acknowledgements through its outbox dispatcher) or alone
with ``email serve --dispatch``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from hub.cli import add_common_options, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("email", help="e-mail channel: inbound SMTP/LMTP listener, IMAP poller")
    actions = p.add_subparsers(dest="email_command", metavar="ACTION")
    actions.required = True

    s = actions.add_parser("serve", help="run the inbound SMTP/LMTP listener (answers 250 only after the commit)")
    add_common_options(s)
    s.add_argument("--host", help="bind address (default from [email] listen_host)")
    s.add_argument("--port", type=int, help="TCP port (default from [email] listen_port)")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--lmtp", dest="lmtp", action="store_true", default=None, help="speak LMTP")
    mode.add_argument("--smtp", dest="lmtp", action="store_false", help="speak SMTP")
    s.add_argument("--dispatch", action="store_true",
                   help="also run the outbox dispatcher in this process (sends acknowledgements and answers)")
    s.set_defaults(func=cmd_serve)

    i = actions.add_parser("poll-imap", help="store unseen mail of the [email] imap_* mailbox, then mark it seen")
    add_common_options(i)
    i.add_argument("--once", action="store_true", help="poll once and exit (for cron) instead of looping")
    i.set_defaults(func=cmd_poll_imap)


class _Parts:
    """The pieces both commands need: engine, intake writer, ack writer, EmailIntake."""

    def __init__(self, settings: Any) -> None:
        from channels.email.listener import AckWriter, EmailIntake
        from channels.email.settings import email_settings
        from hub.cli import open_engine
        from hub.http.ratelimit import IntakeLimits, limit_settings
        from hub.queue.cases import SlaPolicy
        from hub.queue.intake import IntakeWriter
        from hub.queue.settings import queue_settings
        from hub.queue.sla import SlaSettings

        self.settings = settings
        self.email = email_settings(settings)
        self.queue = queue_settings(settings)
        # Opened (and checked to take a write) before anything listens: one line if it cannot be.
        self.engine = open_engine(settings)
        sla = getattr(settings, "sla", None)
        self.writer = IntakeWriter(self.engine, self.queue, SlaPolicy(sla if isinstance(sla, SlaSettings) else None))
        self.acks = AckWriter(self.engine, self.queue)
        self.intake = EmailIntake(self.writer, self.email, acks=self.acks,
                                  limits=IntakeLimits(limit_settings(settings)))

    def start(self) -> None:
        self.writer.start()

    def stop(self) -> None:
        self.writer.stop()
        self.intake.close()
        self.engine.dispose()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    parts = _Parts(settings)
    parts.start()
    try:
        asyncio.run(_serve(parts, args))
    finally:
        parts.stop()
    return 0


async def _serve(parts: _Parts, args: argparse.Namespace) -> None:
    from channels.email.listener import EmailServer
    from channels.email.outbound import build_email_adapter
    from hub.migrate import masked_url
    from hub.queue.adapters import load_adapters
    from hub.queue.outbox import Dispatcher

    server = EmailServer(parts.intake, parts.email, host=args.host, port=args.port, lmtp=args.lmtp)
    try:
        await server.start()
    except OSError as exc:  # the port is taken, the address is not this machine's
        from hub.cli import UsageError

        raise UsageError(f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}") from None
    print(f"citizen-hub e-mail {'LMTP' if server.lmtp else 'SMTP'} listener on {server.host}:{server.port} "
          f"for {', '.join(sorted(parts.email.domains()))} (database {masked_url(parts.settings.database.url)})",
          file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on the main thread / Windows
            pass
    dispatcher = task = None
    if args.dispatch:
        adapters = load_adapters(parts.settings)
        adapters.setdefault("email", build_email_adapter(parts.settings))
        dispatcher = Dispatcher(parts.engine, adapters, parts.queue)
        task = asyncio.create_task(dispatcher.run_forever(), name="outbox")
    try:
        await stop.wait()
    finally:
        await server.stop()
        if dispatcher is not None and task is not None:
            dispatcher.stop()
            await asyncio.wait_for(task, 30)
        await asyncio.to_thread(parts.acks.flush)


def cmd_poll_imap(args: argparse.Namespace) -> int:
    from channels.email.listener import ImapPoller
    from hub.cli import UsageError

    settings = settings_from_args(args)
    parts = _Parts(settings)
    if not parts.email.imap_host:
        raise UsageError("[email] imap_host is empty: configure the mailbox to poll")
    poller = ImapPoller(parts.intake, parts.email)
    parts.start()
    try:
        if args.once:
            stats = poller.poll_once()
            parts.acks.flush()
            print(f"imap: {stats.seen} unseen, {stats.stored} stored, {stats.flagged} flagged, "
                  f"{stats.deferred} left for later", file=sys.stderr)
            return 1 if stats.deferred else 0
        print(f"citizen-hub polling {parts.email.imap_host} folder {parts.email.imap_folder} every "
              f"{parts.email.imap_poll_seconds:g} s", file=sys.stderr)
        signal.signal(signal.SIGTERM, lambda *_: poller.stop())
        poller.run()
        return 0
    finally:
        parts.stop()
