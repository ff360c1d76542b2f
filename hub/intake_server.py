"""A small HTTP server with only the queue API (``python -m hub.intake_server --db URL --port P``).

``citizen-hub serve`` is the real server (knowledge base, every route module). This one serves the
queue alone, routed by a :class:`~hub.queue.routing.KeywordRouter` over a tiny catalogue (the crash
test, which must not depend on a loaded region database) or by the real knowledge base (``--router kb``,
the intake benchmark).

``--processes N`` runs N such servers on one port (:func:`serve_prefork`): N listening sockets with
``SO_REUSEPORT`` are bound *before* the N processes fork, so the kernel spreads connections over all of
them from the first one on; each process has its own event loop, intake writer and routing runner (the
queue's claims keep them from doing the same work twice). The knowledge base is loaded once, before
the fork, and shared copy-on-write.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from hub.config import Settings
from hub.db import make_engine
from hub.http.app import ENGINE, SETTINGS, error_middleware
from hub.migrate import DatabaseUnavailable, open_database
from hub.queue.routing import KeywordRouter
from hub.runtime import freeze_heap, tune_gc

#: The catalogue of the keyword router used here (and by the benchmark).
DEMO_SERVICES = {
    "reisepass": {"name": "Reisepass beantragen", "leika": "99086008001000",
                  "keywords": ["reisepass", "pass", "passport"],
                  "authority": {"id": "demo-buergerbuero", "name": "Bürgerbüro", "level": "gemeinde"}},
    "ummeldung": {"name": "Wohnsitz ummelden", "leika": "99115003001000",
                  "keywords": ["ummelden", "umzug", "wohnsitz", "anmelden"],
                  "authority": {"id": "demo-buergerbuero", "name": "Bürgerbüro", "level": "gemeinde"}},
    "kfz": {"name": "Fahrzeug zulassen", "leika": "99036012001000",
            "keywords": ["auto", "zulassung", "kennzeichen", "fahrzeug"],
            "authority": {"id": "demo-kfz", "name": "Kfz-Zulassungsstelle", "level": "kreis"}},
}


#: Thread switch interval of the server (see ``main``): Python's default, until a measurement on a quiet
#: machine shows that a shorter one helps.
SWITCH_INTERVAL = 0.005


def demo_router() -> KeywordRouter:
    return KeywordRouter(DEMO_SERVICES)


def load_router(settings: Settings, router: str = "keyword") -> Any:
    """The router ``build_app`` uses: :data:`DEMO_SERVICES` (``keyword``) or the knowledge base (``kb``)."""
    if router != "kb":
        return demo_router()
    from knowledge.base import KnowledgeBase

    engine = make_engine(settings.database.url, echo=settings.database.echo)
    try:
        kb = KnowledgeBase.load(engine, settings)
    finally:
        engine.dispose()  # no connection may cross a fork (serve_prefork)
    freeze_heap()
    return kb


def build_app(settings: Settings, workers: bool = True, router: str = "keyword",
              loaded: Any = None) -> web.Application:
    """The queue API alone; ``router`` is ``keyword`` (:data:`DEMO_SERVICES`) or ``kb`` (the knowledge
    base in the database, which ``citizen-hub init`` must have filled); ``loaded`` is a router already
    loaded by :func:`load_router`."""
    from hub.http import api_cases, openapi
    from hub.queue.outbox import PickupAdapter
    from hub.queue.workers import QueueService

    chosen = loaded if loaded is not None else load_router(settings, router)
    engine = make_engine(settings.database.url, echo=settings.database.echo)
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[ENGINE] = engine
    service = QueueService(engine, settings, router=chosen,
                           adapters={"api": PickupAdapter(), "web": PickupAdapter()}, run_workers=workers)
    api_cases.setup(app, service)
    openapi.setup(app)
    return app


def reuseport_sockets(host: str, port: int, n: int) -> list[socket.socket]:
    """``n`` listening sockets on one address, all with ``SO_REUSEPORT`` (the kernel balances between them)."""
    socks = []
    for _ in range(n):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        socks.append(sock)
    return socks


def _die_with_parent() -> None:
    """Linux: a child gets SIGTERM when the parent dies (even by SIGKILL), so none is left behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the parent's normal shutdown still stops the children
        pass


#: The signals that stop a server process: held back while it starts (see :func:`_serve`).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def _serve(app: web.Application, **kwargs: Any) -> None:
    """``web.run_app(app)`` that stops once, on the first of :data:`STOP_SIGNALS`.

    The signals come in blocked (:func:`serve_prefork`) and are let through by the first ``on_startup``
    hook, after this process's handler is installed. Why blocked, not caught: a Python signal handler
    runs wherever the main thread happens to be, and an exception it raises inside an at-fork callback
    or a finaliser is printed and dropped ("Exception ignored in ..."). A SIGTERM that arrived during
    ``os.fork()`` was lost that way, and the server served on. A blocked signal stays pending in the
    kernel and is delivered when it is unblocked.

    Only the first signal stops: a terminal's Ctrl-C reaches every process of the group, and then the
    parent sends its SIGTERM, which used to cut the child's clean-up short (the intake writer's last
    batch, the routing thread) with a traceback. Later ones are ignored until the process has exited.
    """
    stopping = False

    def stop() -> None:
        nonlocal stopping
        if stopping:  # a second signal that was already on its way through the loop
            return
        stopping = True
        # From now on the kernel drops them. (Caught, they would still go through the loop's wakeup fd,
        # which closing the loop closes before it takes the handlers away: "Bad file descriptor".)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise web.GracefulExit()  # as aiohttp's own handler does: run_app then cleans up and returns

    async def accept_stop_signals(_app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:  # through the loop's wakeup fd: served by the loop, in no other frame
            loop.add_signal_handler(sig, stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    app.on_startup.insert(0, accept_stop_signals)
    try:
        web.run_app(app, print=None, access_log=None, handle_signals=False, **kwargs)
    finally:
        # Closing the loop put the default action back (for SIGTERM: death). This process is stopping,
        # its clean-up is done; a signal in the moment between the two only changes its exit code.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def serve_prefork(make_app: Callable[[], web.Application], host: str, port: int, processes: int) -> None:
    """Serve ``make_app()`` from ``processes`` processes on one port (see the module docstring).

    The parent serves too; when it stops (SIGTERM/SIGINT) it stops the children and waits for them.
    ``make_app`` is called in each process after the fork, so engines, threads and loops are per process.
    A stop signal that arrives while the processes start is held until each one serves; each process
    stops on the first one and ignores the later ones (:func:`_serve`).
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # inherited by every child
    if processes <= 1:
        _serve(make_app(), host=host, port=port)
        return
    socks = reuseport_sockets(host, port, processes)
    children: list[int] = []
    parent = os.getpid()
    try:
        for sock in socks[1:]:
            pid = os.fork()
            if pid == 0:  # the child: serve its own socket only
                code = 0
                try:
                    _die_with_parent()  # its SIGTERM, too, waits for the child's handlers
                    if os.getppid() != parent:  # the parent died before the line above took effect
                        raise SystemExit(1)
                    for other in socks:
                        if other is not sock:
                            other.close()
                    _serve(make_app(), sock=sock)
                except BaseException:
                    logging.getLogger(__name__).exception("intake server process failed")
                    code = 1
                finally:
                    os._exit(code)
            children.append(pid)
        for sock in socks[1:]:
            sock.close()
        _serve(make_app(), sock=socks[0])
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.intake_server", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="database URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8115)
    parser.add_argument("--no-workers", action="store_true", help="intake only (no routing, no outbox)")
    parser.add_argument("--router", choices=("keyword", "kb"), default="keyword",
                        help="keyword: a tiny built-in catalogue; kb: the knowledge base of the database")
    parser.add_argument("--processes", type=int, default=1,
                        help="server processes on the one port (SO_REUSEPORT); default 1")
    parser.add_argument("--switch-interval", type=float, default=SWITCH_INTERVAL, metavar="SECONDS",
                        help=f"the interpreter's thread switch interval (default {SWITCH_INTERVAL}; Python's own: 0.005)")
    args = parser.parse_args(argv)
    # The event loop, the intake writer and the routing runner share one GIL: a thread coming back
    # from the database (which releases the GIL) can wait up to this long for a thread that is
    # routing, and one request's way from arrival to routed has several such hand-overs.
    sys.setswitchinterval(args.switch_interval)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = Settings()
    settings.database.url = args.db
    # This server measures (bench/bench_intake.py) and crash-tests the intake path with one token and
    # few senders at thousands of requests a second: the intake limits would refuse most of them.
    settings.limits.enabled = False
    try:  # one line, not a traceback, when the database cannot be written to (then nothing is served)
        open_database(args.db).dispose()  # no connection may cross the fork of serve_prefork
    except DatabaseUnavailable as exc:
        print(f"hub.intake_server: {exc}", file=sys.stderr)
        return 2
    tune_gc(settings.server.gc_threshold)
    loaded = load_router(settings, args.router)
    serve_prefork(lambda: build_app(settings, workers=not args.no_workers, router=args.router, loaded=loaded),
                  args.host, args.port, max(1, args.processes))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
