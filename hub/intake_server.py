"""A small HTTP server with only the queue API (``python -m hub.intake_server --db URL --port P``).

``citizen-hub serve`` is the real server (knowledge base, every route module). This one serves the
queue alone, routed by a :class:`~hub.routing_stage.KeywordRouter` over a tiny catalogue (the crash
test, which must not depend on a loaded region database) or by the real knowledge base (``--router kb``,
the intake benchmark).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys

from aiohttp import web

from hub.app import ENGINE, SETTINGS, error_middleware
from hub.config import Settings
from hub.db import make_engine
from hub.routing_stage import KeywordRouter

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


def demo_router() -> KeywordRouter:
    return KeywordRouter(DEMO_SERVICES)


def build_app(settings: Settings, workers: bool = True, router: str = "keyword") -> web.Application:
    """The queue API alone; ``router`` is ``keyword`` (:data:`DEMO_SERVICES`) or ``kb`` (the knowledge
    base in the database, which ``citizen-hub init`` must have filled)."""
    from hub import api_cases, openapi
    from hub.outbox import PickupAdapter
    from hub.workers import QueueService

    engine = make_engine(settings.database.url, echo=settings.database.echo)
    if router == "kb":
        from knowledge.base import KnowledgeBase

        chosen = KnowledgeBase.load(engine, settings)
        # The knowledge base is a few hundred thousand long-lived objects; without this every full
        # garbage collection walks them all, a pause of tens of milliseconds in the middle of requests.
        gc.collect()
        gc.freeze()
    else:
        chosen = demo_router()
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[ENGINE] = engine
    service = QueueService(engine, settings, router=chosen,
                           adapters={"api": PickupAdapter(), "web": PickupAdapter()}, run_workers=workers)
    api_cases.setup(app, service)
    openapi.setup(app)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.intake_server", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="database URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8115)
    parser.add_argument("--no-workers", action="store_true", help="intake only (no routing, no outbox)")
    parser.add_argument("--router", choices=("keyword", "kb"), default="keyword",
                        help="keyword: a tiny built-in catalogue; kb: the knowledge base of the database")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = Settings()
    settings.database.url = args.db
    web.run_app(build_app(settings, workers=not args.no_workers, router=args.router), host=args.host, port=args.port,
                print=None, access_log=None)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
