"""The paper channel's console pages: the form behind the answer card's button, and the review queue.

* ``GET /console/paper/form?service=&location=&case=`` – the pre-filled form as PDF ("send the form by
  post" on the answer card and the case page); a case the account may not see is 404.
* ``GET /console/paper/review`` – pages waiting for a person: rejected pages (no valid code, blank,
  unreadable) and accepted pages marked for review (low OCR confidence, empty box), oldest first;
  ``?all=1`` shows the reviewed ones too.
* ``GET /console/paper/review/{id}`` – one page: the page image and the cut-out box beside the OCR text
  and its confidence; the agent corrects the text, confirms it, or dismisses a rejected page.
* ``GET /console/paper/review/{id}/page.jpg`` and ``box.jpg`` – the images (no-store, same access rule).
* ``POST /console/paper/review/{id}`` – ``action=correct`` (with ``text``), ``confirm``, ``dismiss``.

Who sees what: an accepted page belongs to its case (the console's authority scope); a rejected page has
no trustworthy case, so it is shown to supervisors and admins, and to agents whose scope is everything.
Corrections replace the message's text and write an audit entry without any of the text.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from sqlalchemy import select, update

from channels.paper import store
from channels.paper.forms.form import render_form
from channels.paper.forms.spec import FormProblem, form_spec
from channels.paper.settings import paper_settings
from hub.console.auth import PRINCIPAL, error_response, require_login
from hub.console.pages import AGENT_ROLES, CONSOLE, SUPERVISOR_ROLES, BadInput, read_body, render
from hub.http.app import ENGINE, KB, SETTINGS
from hub.http.inputs import BadParameter, path_id
from hub.queue.cases import attachment_t, audit, case_t, message_t
from hub.queue.intake import AttachmentStore
from hub.queue.settings import queue_settings
from knowledge.settings import ConfigError

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_TEXT = 20_000
_PROBLEMS = {
    "blank": "leere Seite", "no_code": "kein Formularcode", "forged": "Code gefälscht", "altered": "Code verändert",
    "malformed": "fremder Code", "resolution": "Auflösung zu gering", "file": "Datei unlesbar", "page": "Seite unlesbar",
    "limits": "zu groß",
}


def load_case(engine, case_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().first()
    return dict(row) if row else None


async def make_form_pdf(app: web.Application, service: str, location: str | None, case_id: str | None,
                        covers=None) -> tuple[bytes, str]:
    """The form's PDF and its id, for the API and the console. Raises FormProblem / ConfigError.

    ``covers(case_row)`` says whether the caller may see the case (the console's authority scope); a
    case it may not see is "no such case", as everywhere.
    """
    key = paper_settings(app[SETTINGS]).signing_key()
    kb = app.get(KB)
    if kb is None:
        raise FormProblem("Die Wissensbasis wird geladen; bitte versuchen Sie es gleich noch einmal", 503)
    case = None
    if case_id:
        try:
            number = path_id(case_id, "case")
        except BadParameter:
            raise FormProblem("Fall nicht gefunden", 404) from None
        case = await asyncio.to_thread(load_case, app[ENGINE], number)
        if case is None or (covers is not None and not covers(case)):
            raise FormProblem(f"Fall {number} nicht gefunden", 404)
    spec = form_spec(kb, service, location, case)
    form = await asyncio.to_thread(render_form, spec, key)
    return form.pdf, spec.form_id


def pdf_response(pdf: bytes, form_id: str) -> web.Response:
    return web.Response(body=pdf, content_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="formular-{form_id}.pdf"', "Cache-Control": "no-store"})


def _int_id(raw: str, what: str = "page") -> int:
    """An id from the path or query by the hub's one rule (:func:`hub.http.inputs.path_id`); else 404."""
    try:
        return path_id(raw)
    except BadParameter:
        raise web.HTTPNotFound(text=f"no such {what}") from None


def _files(request: web.Request) -> AttachmentStore:
    return AttachmentStore(queue_settings(request.app[SETTINGS]).attachment_dir)


def _load(engine, page_id: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None,
                                        dict[str, str]]:
    """The page row, its case, its message and its images (name -> sha256)."""
    with engine.connect() as conn:
        page = store.get(conn, page_id)
        if page is None:
            return None, None, None, {}
        case = message = None
        images: dict[str, str] = {}
        if page["case_id"] is not None:
            found = conn.execute(select(case_t).where(case_t.c.id == page["case_id"])).mappings().first()
            case = dict(found) if found else None
        if page["message_id"] is not None:
            found = conn.execute(select(message_t).where(message_t.c.id == page["message_id"])).mappings().first()
            message = dict(found) if found else None
            for filename, sha in conn.execute(select(attachment_t.c.filename, attachment_t.c.sha256)
                                              .where(attachment_t.c.message_id == page["message_id"])):
                if filename.endswith("-seite.jpg"):
                    images["page"] = sha
                elif filename.endswith("-anliegen.jpg"):
                    images["box"] = sha
        if page["page_sha256"]:
            images["page"] = page["page_sha256"]
        if page["box_sha256"]:
            images["box"] = page["box_sha256"]
    return page, case, message, images


def _may_see(request: web.Request, page: dict[str, Any], case: dict[str, Any] | None) -> bool:
    principal = request[PRINCIPAL]
    if case is not None:
        return principal.scope.covers_case(case, request.app.get(KB))
    return principal.role in SUPERVISOR_ROLES or principal.scope.everything


async def _visible(request: web.Request):
    page_id = _int_id(request.match_info["id"])
    page, case, message, images = await asyncio.to_thread(_load, request.app[ENGINE], page_id)
    if page is None or not _may_see(request, page, case):
        raise web.HTTPNotFound(text="no such page")
    return page, case, message, images


def _queue(engine, show_all: bool) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = store.review_queue(conn, open_only=not show_all, limit=500)
        case_ids = [r["case_id"] for r in rows if r["case_id"] is not None]
        cases = {}
        if case_ids:
            cases = {c["id"]: dict(c) for c in conn.execute(select(case_t).where(case_t.c.id.in_(case_ids))).mappings()}
    return [r | {"case": cases.get(r["case_id"])} for r in rows]


@require_login(AGENT_ROLES)
async def page_review(request: web.Request) -> web.Response:
    show_all = request.query.get("all") == "1"
    rows = await asyncio.to_thread(_queue, request.app[ENGINE], show_all)
    visible = [r for r in rows if _may_see(request, r, r["case"])]
    return render(request, "paper_review.html", active="paper", rows=visible, show_all=show_all,
                  problems=_PROBLEMS)


@require_login(AGENT_ROLES)
async def page_review_item(request: web.Request) -> web.Response:
    page, case, message, images = await _visible(request)
    threshold = paper_settings(request.app[SETTINGS]).ocr_confidence_threshold
    return render(request, "paper_review_item.html", active="paper", page=page, case=case, message=message,
                  images=images, problems=_PROBLEMS, threshold=threshold)


async def _image(request: web.Request, which: str) -> web.StreamResponse:
    _page, _case, _message, images = await _visible(request)
    digest = images.get(which)
    if not digest:
        raise web.HTTPNotFound(text="no such image")
    try:
        data = await asyncio.to_thread(_files(request).read, digest)
    except FileNotFoundError:
        raise web.HTTPNotFound(text="the image is no longer kept") from None
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


@require_login(AGENT_ROLES)
async def page_image(request: web.Request) -> web.StreamResponse:
    return await _image(request, "page")


@require_login(AGENT_ROLES)
async def box_image(request: web.Request) -> web.StreamResponse:
    return await _image(request, "box")


def _apply(engine, page: dict[str, Any], action: str, text: str | None, agent: str) -> None:
    with engine.begin() as conn:
        if action == "corrected":
            conn.execute(update(message_t).where(message_t.c.id == page["message_id"]).values(text=text))
            audit(conn, page["case_id"], f"agent:{agent}", "paper_text_corrected",
                  reason=f"the OCR text of page {page['page']} of form {page['form_id']} was corrected",
                  now=datetime.now(UTC))
        store.mark_reviewed(conn, page["id"], agent=agent, action=action)


@require_login(AGENT_ROLES)
async def post_review(request: web.Request) -> web.StreamResponse:
    page, _case, message, _images = await _visible(request)
    try:
        body = await read_body(request)
    except BadInput as exc:
        return error_response(request, exc.status, str(exc))
    action = {"correct": "corrected", "confirm": "confirmed", "dismiss": "dismissed"}.get(body.get("action", ""))
    if action is None:
        return error_response(request, 422, "action must be correct, confirm or dismiss")
    text = None
    if action == "corrected":
        if message is None:
            return error_response(request, 409, "only the text of a page that became a request can be corrected")
        text = (body.get("text") or "").replace("\r\n", "\n").strip()
        if not text or len(text) > MAX_TEXT:
            return error_response(request, 422, f"the text must have 1 to {MAX_TEXT} characters")
        if any(ord(c) < 32 and c not in "\n\t" for c in text):
            return error_response(request, 422, "the text contains control characters")
    await asyncio.to_thread(_apply, request.app[ENGINE], page, action, text, request[PRINCIPAL].name)
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"id": page["id"], "review_action": action})
    raise web.HTTPSeeOther(f"/console/paper/review/{page['id']}")


@require_login(AGENT_ROLES)
async def get_form(request: web.Request) -> web.StreamResponse:

    query = request.query
    principal = request[PRINCIPAL]
    try:
        pdf, form_id = await make_form_pdf(request.app, query.get("service", ""), query.get("location"),
                                           query.get("case"),
                                           covers=lambda case: principal.scope.covers_case(case, request.app.get(KB)))
    except FormProblem as exc:
        return error_response(request, exc.status, f"Kein Formular möglich: {exc}")
    except ConfigError as exc:
        return error_response(request, 503, f"Der Papierkanal ist nicht eingerichtet: {exc}")
    return pdf_response(pdf, form_id)


ROUTES = (
    ("GET", "/console/paper/form", get_form),
    ("GET", "/console/paper/review", page_review),
    ("GET", "/console/paper/review/{id}", page_review_item),
    ("POST", "/console/paper/review/{id}", post_review),
    ("GET", "/console/paper/review/{id}/page.jpg", page_image),
    ("GET", "/console/paper/review/{id}/box.jpg", box_image),
)


def setup(app: web.Application) -> None:
    """Add the pages; the console (``hub.console.pages``) must be set up first (its templates and state)."""
    state = app.get(CONSOLE)
    if state is not None:
        # The console's own environment renders these pages too (its filters, autoescape, base layout).
        state.env.loader = jinja2.ChoiceLoader([state.env.loader, jinja2.FileSystemLoader(str(TEMPLATES))])
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
