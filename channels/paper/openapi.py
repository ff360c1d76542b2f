"""The OpenAPI operations of the paper channel (``Channel.openapi``): the pre-filled form, scans in, and
the console's pages for the answer card's form and the review of scans that could not be read."""

from __future__ import annotations

from typing import Any

from hub.http.openapi import HTML, errors, html, operation, page_errors, path, query, redirect, resp

STR = {"type": "string"}
PDF = {"200": resp("The form as PDF", {"type": "string", "format": "binary"}, "application/pdf")}
_ID = path("id", {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}, "The scanned page's id")
_FORM_PARAMS = [query("service", STR, "The service id", required=True), query("location", STR, "The place"),
                query("case", STR, "A case id or token the form answers")]
_SESSION = [{"consoleSession": []}]
_PAGE = {"200": html("The page"), "303": redirect("To the log-in page (no session)"), **page_errors()}
_JPEG = {"200": resp("The image", {"type": "string", "format": "binary"}, "image/jpeg"),
         "303": redirect("To the log-in page (no session)"), **page_errors()}
_PAGES = {"type": "object", "required": ["pages"], "properties": {"pages": {"type": "array", "items": {
    "type": "object", "required": ["status"], "properties": {"status": STR}}}}}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/paper/form"): operation(
        "The pre-filled paper form (PDF) for a service, a place or a case", security=[{"agentToken": []}],
        parameters=_FORM_PARAMS, responses={**PDF, **errors(400, 401, 403, 404, 409, 503)}),
    ("POST", "/api/paper/scans"): operation(
        "Scanned forms in (one file part each), answered after every page is stored",
        security=[{"serviceToken": []}],
        body={"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "properties": {"scan": {"type": "string", "format": "binary"}}}}}},
        responses={"201": resp("A page became a new request", _PAGES), "200": resp("Nothing new", _PAGES),
                   **errors(400, 401, 403, 413, 415, 503)}),
    ("GET", "/console/paper/form"): operation(
        "The paper form for the console's answer card", security=_SESSION, parameters=_FORM_PARAMS,
        responses={**PDF, "303": redirect("To the log-in page (no session)"), **page_errors()}),
    ("GET", "/console/paper/review"): operation(
        "Scans waiting for an agent", security=_SESSION, responses=_PAGE),
    ("GET", "/console/paper/review/{id}"): operation(
        "One scan to review", security=_SESSION, parameters=[_ID], responses=_PAGE),
    ("POST", "/console/paper/review/{id}"): operation(
        "Accept or reject a scan with the agent's reading", security=_SESSION, parameters=[_ID],
        body={"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
            "type": "object", "properties": {"csrf_token": STR, "action": STR}}}}},
        responses={"303": redirect("Done: back to the review queue"), "200": {"description": "The page again",
                   "content": {HTML: {"schema": STR}}}, **page_errors()}),
    ("GET", "/console/paper/review/{id}/page.jpg"): operation(
        "The scanned page", security=_SESSION, parameters=[_ID], responses=_JPEG),
    ("GET", "/console/paper/review/{id}/box.jpg"): operation(
        "The text box of the scanned page", security=_SESSION, parameters=[_ID], responses=_JPEG),
}

