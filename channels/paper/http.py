"""HTTP routes of the paper channel.

* ``GET /api/paper/form?service=&location=&case=`` (agent token) – the pre-filled form as PDF;
  400/404/409 with ``{"error"}`` when no form can be made (unknown service or case, no or an
  ambiguous place, no responsible office).
* ``POST /api/paper/scans`` (service token, ``multipart/form-data``, one or more file parts) – scan files
  into the queue; ``{"pages": [...]}`` with one object a page (as ``citizen-hub paper ingest --json``),
  answered after every page's request or rejection is committed: 201 when a page became a new request,
  else 200. A file over ``[paper] max_file_bytes`` (or an upload over twice that) is 413, a body that is
  not multipart 415.

The console's pages (the form for the answer card, the review queue) are in :mod:`channels.paper.review`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from channels.paper import review
from channels.paper.forms.spec import FormProblem
from channels.paper.ingest import PaperIngest
from channels.paper.review import make_form_pdf, pdf_response
from channels.paper.settings import paper_settings
from hub.http.api_cases import QUEUE, ApiError, api, authorise, case_filter
from hub.http.app import ENGINE, SETTINGS
from hub.queue.intake import AttachmentStore, IntakeUnavailable
from hub.queue.settings import queue_settings
from knowledge.settings import ConfigError

#: Most files one upload may carry.
MAX_FILES = 20
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


@api
async def get_form(request: web.Request) -> web.StreamResponse:
    """The pre-filled paper form (PDF) for ?service=&location=&case= (agent token)."""
    principal = await authorise(request, "agent")
    query = request.query
    if not (query.get("service") or "").strip():
        raise ApiError(400, "Bitte geben Sie die Leistung an: ?service=ID")
    try:
        pdf, form_id = await make_form_pdf(request.app, query["service"], query.get("location"), query.get("case"),
                                            covers=case_filter(request, principal))
    except FormProblem as exc:
        raise ApiError(exc.status, str(exc)) from None
    except ConfigError as exc:
        raise ApiError(503, f"Der Papierkanal ist nicht eingerichtet: {exc}") from None
    return pdf_response(pdf, form_id)


def ingest_service(app: web.Application) -> PaperIngest:
    state = app.get(QUEUE)
    service = state.service if state is not None else None
    if service is None:
        raise ApiError(503, "Die Warteschlange startet gerade; bitte versuchen Sie es gleich noch einmal")
    settings = app[SETTINGS]
    return PaperIngest(app[ENGINE], service.writer.submit, paper_settings(settings),
                       AttachmentStore(queue_settings(settings).attachment_dir))


async def _files(request: web.Request, limit: int) -> list[tuple[str, bytes]]:
    if not request.content_type.startswith("multipart/"):
        raise ApiError(415, "Bitte senden Sie die Scans als multipart/form-data (je Datei ein Teil)")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as exc:
        raise ApiError(400, f"Der multipart-Inhalt lässt sich nicht lesen: {exc}") from None
    files: list[tuple[str, bytes]] = []
    total = 0  # the whole upload is bounded too, not only each file: memory is the limit here
    while True:
        try:
            part = await reader.next()
        except (ValueError, HttpProcessingError) as exc:  # HttpProcessingError: a part's malformed headers
            # (found by schemathesis, tests/http/test_openapi.py); it is no ValueError and was a 500.
            raise ApiError(400, f"Der multipart-Inhalt lässt sich nicht lesen: {getattr(exc, 'message', exc)}") from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader) or part.filename is None:
            continue  # a nested multipart or a plain field: not a scan
        if len(files) >= MAX_FILES:
            raise ApiError(413, f"Höchstens {MAX_FILES} Dateien je Anfrage")
        data = bytearray()
        while chunk := await part.read_chunk(65536):
            data += chunk
            total += len(chunk)
            if len(data) > limit:
                raise ApiError(413, f"{part.filename!r} ist größer als {limit:,} Bytes")
            if total > 2 * limit:
                raise ApiError(413, f"Der Upload ist größer als {2 * limit:,} Bytes; bitte senden Sie weniger Dateien auf einmal")
        name = _SAFE_NAME.sub("_", part.filename.replace("\\", "/").rsplit("/", 1)[-1])[:120] or "scan"
        files.append((name, bytes(data)))
    if not files:
        raise ApiError(400, "Der Inhalt enthält keine Datei")
    return files


@api
async def post_scans(request: web.Request) -> web.StreamResponse:
    """Scanned forms in (multipart, service token): one result a page, after the commit."""
    await authorise(request, "service")
    settings = paper_settings(request.app[SETTINGS])
    if not settings.hmac_key:
        raise ApiError(503, "Der Papierkanal ist nicht eingerichtet ([paper] hmac_key)")
    ingest = ingest_service(request.app)
    files = await _files(request, settings.max_file_bytes)
    pages: list[dict[str, Any]] = []
    try:
        for name, data in files:
            pages += await ingest.ingest(data, name, keep_original=True)
    except IntakeUnavailable:
        raise ApiError(503, "Die Scans konnten nicht gespeichert werden; bitte senden Sie sie noch einmal") from None
    except RuntimeError as exc:  # poppler or tesseract missing: the hub's problem, nothing was rejected
        raise ApiError(503, f"Der Hub kann keine Scans lesen: {exc}") from None
    created = any(p["status"] == "accepted" and not p["duplicate"] for p in pages)
    return _json({"pages": pages}, 201 if created else 200)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/paper/form", get_form)
    app.router.add_post("/api/paper/scans", post_scans)
    review.setup(app)
