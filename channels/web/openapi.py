"""The OpenAPI operations of the web channel (``Channel.openapi``): the citizen's form, the suggestions
while typing and the status page. Public (the form's CSRF token, not a login, protects the writes; the
status page is reached through the case's unguessable token only)."""

from __future__ import annotations

from typing import Any

from hub.http.openapi import (
           PUBLIC,
           errors,
           form_body,
           html,
           json_body,
           operation,
           page_errors,
           path,
           query,
           redirect,
)
from hub.http.openapi import resp as response

STR = {"type": "string"}
_FIELDS = {"csrf_token": STR, "text": STR, "location": STR, "name": STR, "email": STR, "phone": STR,
           "answer_by": STR, "action": STR, "lang": STR, "website": STR}
_TOKEN = path("token", {"type": "string", "minLength": 1, "maxLength": 64}, "The case's token")
_LANG = query("lang", STR, "Language of the page (de, en, …)")
_PAGE = {"200": html("The page"), **page_errors()}
_POSTED = {"200": html("The form again: suggestions, or what to correct"), "201": html("Stored: the confirmation"),
           "303": redirect("Stored"), **page_errors()}
_SUGGEST = {"type": "object", "properties": {"services": {"type": "array"}, "places": {"type": "array"}}}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/"): operation("The citizen's form", security=PUBLIC, parameters=[_LANG], responses=_PAGE),
    ("POST", "/"): operation(
        "Show suggestions (action=suggest) or store the request", security=PUBLIC,
        body=form_body(_FIELDS, ("csrf_token",), multipart=True, files=("attachments",)), responses=_POSTED),
    ("POST", "/web/suggest"): operation(
        "Services and places for the text typed so far (needs the form's CSRF token in X-CSRF-Token)",
        security=PUBLIC, body=json_body({"type": "object", "properties": {"text": STR, "location": STR, "lang": STR}}),
        responses={"200": response("The suggestions", _SUGGEST), **errors(400, 403, 413, 429)}),
    ("GET", "/status"): operation(
        "Look up a case by its reference number as the citizen types it (hyphens and case optional)",
        security=PUBLIC, parameters=[query("token", {"type": "string", "maxLength": 64}, "The reference number"),
                                     _LANG],
        responses={"303": redirect("To the case's status page"), **_PAGE}),
    ("GET", "/status/{token}"): operation(
        "The case's state and answers", security=PUBLIC, parameters=[_TOKEN, _LANG,
                                                                     query("sent", STR, "1 after a message")],
        responses=_PAGE),
    ("POST", "/status/{token}"): operation(
        "A message from the citizen to the case", security=PUBLIC, parameters=[_TOKEN],
        body=form_body({"csrf_token": STR, "text": STR, "website": STR}, ("csrf_token",)),
        responses={"303": redirect("Stored: back to the status page"), "200": html("The page again"),
                   **page_errors()}),
}
