"""Helpers of the web channel tests: the real hub app (``hub.http.app.create_app`` with every module of
``hub.http.routes``) and the hub's own ``Settings``, on a migrated copy of the demo database."""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
from aiohttp import web
from queue_support import migrated_sqlite
from sqlalchemy import select
from sqlalchemy.engine import Engine

from hub.config import Settings
from hub.http.api_cases import QUEUE
from hub.http.app import create_app
from hub.queue.cases import case_t
from hub.queue.workers import QueueService
from knowledge.models import Service


def settings_for(tmp_path: Path, url: str, **web: object) -> Settings:
    """The hub's Settings for a test: this database, attachments under ``tmp_path``, ``[web]`` values."""
    s = Settings()
    s.database.url = url
    s.queue.attachment_dir = str(tmp_path / "attachments")
    # Sections validate every assignment, so a bad test value fails here as it would in config.toml.
    for key, value in {"csrf_secret": "t" * 40, **web}.items():
        setattr(s.web, key, value)
    return s


def hub_engine(tmp_path: Path, demo_db_url: str) -> tuple[Engine, str]:
    """A copy of the demo database (regions + catalogue) with every table migrated in: the copy of one
    migrated demo database of this test process (``queue_support.migrated_sqlite``)."""
    target = tmp_path / "hub.sqlite3"
    engine = migrated_sqlite(target, Path(demo_db_url.split("///", 1)[1]))
    return engine, f"sqlite:///{target}"


def make_app(settings: Settings, engine: Engine, kb) -> tuple[web.Application, QueueService]:
    """The real hub app with a queue service whose workers do not run by themselves: tests route and
    dispatch explicitly (``service.routing.run_until_empty``)."""
    app = create_app(settings, kb=kb, engine=engine)
    service = QueueService(engine, settings, router=kb, run_workers=False)
    app[QUEUE].service = service
    return app, service


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


# -- headless Chromium ---------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"  # screenshots; git-ignored


def async_playwright():
    """Playwright's async entry point, or the test is skipped (failed under CI=true) without it or Chromium."""
    from conftest import require_component

    try:
        from playwright.async_api import async_playwright as entry
    except ImportError:
        require_component(False, "Python Playwright is not installed (pip install playwright)")
    require_component(
        Path(CHROMIUM).exists(), f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    return entry


@asynccontextmanager
async def launch_chromium() -> AsyncIterator:
    """Debian's Chromium, headless, driven by Playwright; closed afterwards."""
    async with async_playwright()() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


@asynccontextmanager
async def serve_on_loopback(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free TCP port of 127.0.0.1 (a real server for the browser); yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


# -- test clients --------------------------------------------------------------------------------------------


def client_factory(aiohttp_client, engine: Engine, url: str, kb, tmp_path: Path):
    """``await build(**web)``: a test client of the real app, with ``client.engine``, ``client.service``
    and ``client.url``. Uploads are limited to 64 KiB and the rate limits are generous unless set."""

    async def build(**web_values):
        web_values.setdefault("max_upload_bytes", 64 * 1024)
        web_values.setdefault("write_burst", 100)
        web_values.setdefault("read_burst", 100)
        settings = settings_for(tmp_path, url, **web_values)
        app, service = make_app(settings, engine, kb)
        client = await aiohttp_client(app)
        client.engine, client.service, client.url = engine, service, url
        return client

    return build


# -- the form as a browser sends it --------------------------------------------------------------------------


def png(size: int = 0) -> bytes:
    """A valid 1x1 PNG, padded with an ancillary chunk to about ``size`` bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    body = chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")
    pad = max(0, size - len(head) - len(body) - 12)
    return head + (chunk(b"teXt", b"c\x00" + b"x" * (pad - 2)) if pad > 2 else b"") + body


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1)


async def open_form(client, path: str = "/") -> dict[str, str]:
    """GET the form; its hidden fields (CSRF token, submission id, language)."""
    resp = await client.get(path)
    assert resp.status == 200
    html = await resp.text()
    return {
        "csrf_token": hidden(html, "csrf_token"),
        "submission": hidden(html, "submission"),
        "lang": hidden(html, "lang"),
    }


def form_data(fields: dict[str, str], files: list[tuple[str, bytes, str]] | None = None) -> aiohttp.FormData:
    """What a browser sends: multipart, with an empty file part when no file was chosen."""
    data = aiohttp.FormData(quote_fields=False)  # browsers send names as typed, not percent-encoded
    for key, value in fields.items():
        data.add_field(key, value)
    for name, content, ctype in files or [("", b"", "application/octet-stream")]:
        data.add_field("attachments", io.BytesIO(content), filename=name, content_type=ctype)
    return data


async def post_form(client, fields: dict[str, str], files=None, headers=None):
    return await client.post("/", data=form_data(fields, files), headers=headers)


def case_token_of(html: str) -> str:
    """The case token a confirmation page shows."""
    match = re.search(r'id="case-token">([0-9A-Z-]{19})<', html)
    assert match, "no case token on the page"
    return match.group(1)


def cases(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(case_t)).mappings()]
