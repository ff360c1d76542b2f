"""Helpers of the web channel tests: a hub app with the queue on a migrated copy of the demo database."""

from __future__ import annotations

import importlib
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web
from pydantic import Field
from sqlalchemy.engine import Engine

import hub.tokens
from channels.web_settings import WebSettings
from hub.api_cases import QUEUE
from hub.app import create_app
from hub.config import Settings
from hub.db import make_engine
from hub.migrate import upgrade
from hub.queue_settings import QueueSettings
from hub.routes import ROUTE_MODULES
from hub.workers import QueueService
from knowledge.models import Service

MODULES = ("hub.api_cases", "channels.web", "channels.open311")


class WebTestSettings(Settings):
    """Settings with the [web] and [queue] sections, as the lead wires them into hub.config.Settings."""

    web: WebSettings = Field(default_factory=WebSettings, description="Web channel.")
    queue: QueueSettings = Field(default_factory=QueueSettings, description="Request queue.")


def settings_for(tmp_path: Path, url: str, **web: object) -> WebTestSettings:
    s = WebTestSettings()
    s.database.url = url
    s.queue = QueueSettings(attachment_dir=str(tmp_path / "attachments"))
    s.web = WebSettings(csrf_secret="t" * 40, **web)
    return s


def hub_engine(tmp_path: Path, demo_db_url: str) -> tuple[Engine, str]:
    """A copy of the demo database (regions + catalogue) with the queue tables migrated in."""
    source = demo_db_url.split("///", 1)[1]
    target = tmp_path / "hub.sqlite3"
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    url = f"sqlite:///{target}"
    engine = make_engine(url)
    upgrade(engine)
    return engine, url


def make_app(settings: Settings, engine: Engine, kb) -> tuple[web.Application, QueueService]:
    """The hub app with the queue, the web channel and Open311, whatever hub.routes lists already.

    The queue's workers do not run by themselves: tests route and dispatch explicitly (run_until_empty).
    """
    app = create_app(settings, kb=kb, engine=engine)
    for name in MODULES:
        if name not in ROUTE_MODULES:
            importlib.import_module(name).setup(app)
    service = QueueService(engine, settings, router=kb, run_workers=False)
    app[QUEUE].service = service
    return app, service


def add_token(engine: Engine, name: str, role: str, monkeypatch=None) -> str:
    """A bearer token; the open311 role is added to hub.tokens.ROLES for the test if it is not there yet."""
    if role not in hub.tokens.ROLES and monkeypatch is not None:
        monkeypatch.setattr(hub.tokens, "ROLES", (*hub.tokens.ROLES, role))
    return hub.tokens.add_token(engine, name, role)


MARKUP = "<img src=x onerror=window.__xss=1>"


@contextmanager
def service_with_markup(kb):
    """A catalogue entry whose texts carry markup (catalogues come from many hands); removed afterwards."""
    service = Service(
        id="test-markup",
        name=f"Zauberstab {MARKUP} beantragen",
        synonyms=["Zauberstab"],
        short_text=f"Kurztext {MARKUP}",
        documents=[MARKUP],
        fees=MARKUP,
        level="kreis",
        topic="Test",
    )
    kb.apply_service(service)
    try:
        yield service
    finally:
        kb.remove_service(service.id)
