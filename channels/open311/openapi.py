"""The OpenAPI operations of Open311 GeoReport v2 (``Channel.openapi``): every resource in XML (the spec's
mandatory format, also without a suffix) and JSON, its parameters, its form body and its security: the
``api_key`` of an Open311 client, except for discovery, the catalogue, tokens and the key-less status query."""

from __future__ import annotations

from typing import Any

from channels.open311.api import MAX_DESCRIPTION, PREFIX
from hub.http.openapi import PUBLIC, form_body, operation, path, query

XML = "text/xml"
STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
NUM = {"type": ["number", "null"]}
KEY = [{"open311Key": []}]
EXT = path("ext", {"enum": [".xml", ".json"]}, "The format: .xml (also without a suffix) or .json")
JID = query("jurisdiction_id", STR, "ARS or AGS of a region, or one of [web] open311_jurisdiction_ids")
API_KEY = query("api_key", STR, "The client's key (citizen-hub token add NAME --role open311)")

_ERRORS = {"type": "array", "items": {"type": "object", "required": ["code", "description"],
                                      "properties": {"code": {"type": "integer"}, "description": STR}}}
_SERVICE = {"type": "object", "required": ["service_code", "service_name", "metadata", "type"],
            "properties": {"service_code": STR, "service_name": STR, "description": NSTR,
                           "metadata": {"type": "boolean"}, "type": {"enum": ["realtime", "batch", "blackbox"]},
                           "keywords": NSTR, "group": NSTR}}
_DEFINITION = {"type": "object", "required": ["service_code", "attributes"],
               "properties": {"service_code": STR, "attributes": {"type": "array", "items": {"type": "object"}}}}
_DISCOVERY = {"type": "object", "required": ["changeset", "endpoints"],
              "properties": {"changeset": STR, "contact": NSTR, "key_service": NSTR,
                             "endpoints": {"type": "array", "items": {"type": "object"}}}}
_POSTED = {"type": "array", "items": {"type": "object", "properties": {
    "service_request_id": STR, "token": STR, "service_notice": NSTR, "account_id": NSTR}}}
_REQUEST = {"type": "object", "required": ["service_request_id", "status"], "properties": {
    "service_request_id": STR, "status": {"enum": ["open", "closed"]}, "status_notes": NSTR,
    "service_name": NSTR, "service_code": NSTR, "description": NSTR, "agency_responsible": NSTR,
    "service_notice": NSTR, "requested_datetime": NSTR, "updated_datetime": NSTR, "expected_datetime": NSTR,
    "address": NSTR, "address_id": NSTR, "zipcode": NSTR, "lat": NUM, "long": NUM, "media_url": NSTR}}
_REQUESTS = {"type": "array", "items": _REQUEST}
_TOKENS = {"type": "array", "items": {"type": "object", "required": ["service_request_id", "token"],
                                      "properties": {"service_request_id": STR, "token": STR}}}
_UPDATES = {"type": "array", "items": {"type": "object", "required": ["update_id", "service_request_id", "status"],
                                       "properties": {"update_id": STR, "service_request_id": STR,
                                                      "status": {"enum": ["open", "closed"]},
                                                      "updated_datetime": NSTR, "description": NSTR,
                                                      "media_url": NSTR}}}


def _answer(description: str, schema: dict) -> dict[str, Any]:
    """The document in XML (its root and containers as the spec's examples) or JSON (Spark convention),
    and the spec's error list for every failure (400, 403, 404, 405, 413, 429, 503)."""
    return {
        "200": {"description": description, "content": {XML: {"schema": STR}, "application/json": {"schema": schema}}},
        "default": {"description": "The spec's error list (code, description) with the HTTP status",
                    "content": {XML: {"schema": STR}, "application/json": {"schema": _ERRORS}}},
    }


_POST_FIELDS = {
    "api_key": STR, "jurisdiction_id": STR, "service_code": {"type": "string", "maxLength": 100},
    "lat": STR, "long": STR, "address_string": {"type": "string", "maxLength": 500},
    "address_id": {"type": "string", "maxLength": 100}, "email": STR, "device_id": STR, "account_id": STR,
    "first_name": {"type": "string", "maxLength": 200}, "last_name": {"type": "string", "maxLength": 200},
    "phone": STR, "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
    "media_url": {"type": "string", "maxLength": 1000},
}

_UPDATE_FIELDS = {
    "api_key": STR, "jurisdiction_id": STR, "service_request_id": STR, "update_id": {"type": "string", "maxLength": 100},
    "updated_datetime": STR, "status": {"type": "string", "maxLength": 40},
    "description": {"type": "string", "maxLength": MAX_DESCRIPTION}, "first_name": STR, "last_name": STR,
    "email": STR, "media_url": {"type": "string", "maxLength": 1000},
}
_UPDATED = {"type": "array", "items": {"type": "object", "required": ["update_id"], "properties": {"update_id": STR}}}

_DISCOVERY_OP = operation("Service discovery: where the endpoint is and what it speaks", security=PUBLIC,
                          responses=_answer("The discovery document", _DISCOVERY))

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", PREFIX): _DISCOVERY_OP,
    ("GET", PREFIX + "/"): _DISCOVERY_OP,
    ("GET", f"{PREFIX}/discovery{{ext}}"): operation(
        "Service discovery", security=PUBLIC, parameters=[EXT], responses=_answer("The discovery document", _DISCOVERY)),
    ("GET", f"{PREFIX}/services{{ext}}"): operation(
        "The services valid in the jurisdiction (every one without)", security=PUBLIC, parameters=[EXT, JID],
        responses=_answer("The services", {"type": "array", "items": _SERVICE})),
    ("GET", f"{PREFIX}/services/{{code}}{{ext}}"): operation(
        "One service's definition (informational attributes)", security=PUBLIC,
        parameters=[path("code", {"type": "string", "minLength": 1, "maxLength": 100}, "The service_code"), EXT, JID],
        responses=_answer("The service definition", _DEFINITION)),
    ("POST", f"{PREFIX}/requests{{ext}}"): operation(
        "Submit one service request (answered after it is stored)", security=KEY, parameters=[EXT],
        description="A service_code the catalogue knows is the case's service; an unknown one is kept and the text "
                    "is routed. Photos as multipart media, photo1, photo2… (at most [web] max_attachments), several "
                    "media_url values, attribute[code] and attribute[code][] values are all stored.",
        body=form_body(_POST_FIELDS, ("api_key", "service_code"), multipart=True, files=("media", "photo1", "photo2")),
        responses=_answer("The new request's id (realtime) or token (batch)", _POSTED)),
    ("GET", f"{PREFIX}/requests{{ext}}"): operation(
        "The key's requests; without a key only a service_request_id query, with the public status fields",
        security=[*KEY, {}],
        parameters=[EXT, API_KEY, JID,
                    query("service_request_id", STR, "Comma-separated ids (overrides every other filter)"),
                    query("service_code", STR, "Comma-separated service codes"),
                    query("start_date", STR, "W3C datetime"), query("end_date", STR, "W3C datetime"),
                    query("status", STR, "open, closed or both (comma-separated)")],
        responses=_answer("The requests, newest first", _REQUESTS)),
    ("GET", f"{PREFIX}/requests/{{id}}{{ext}}"): operation(
        "One request (its public status fields without a key)", security=[*KEY, {}],
        parameters=[path("id", {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}, "The service_request_id"),
                    EXT, API_KEY, JID],
        responses=_answer("The request", _REQUESTS)),
    ("GET", f"{PREFIX}/tokens/{{token}}{{ext}}"): operation(
        "The service_request_id of a request answered with a token (batch)", security=PUBLIC,
        parameters=[path("token", {"type": "string", "minLength": 1, "maxLength": 64}, "The token"), EXT, JID],
        responses=_answer("The request's id", _TOKENS)),
    ("GET", f"{PREFIX}/servicerequestupdates{{ext}}"): operation(
        "Updates of the key's requests (mySociety's extension, as FixMyStreet fetches them)", security=KEY,
        parameters=[EXT, API_KEY, JID, query("start_date", STR, "W3C datetime (with end_date)"),
                    query("end_date", STR, "W3C datetime (with start_date)")],
        responses=_answer("The answers and closings, oldest first", _UPDATES)),
    ("POST", f"{PREFIX}/servicerequestupdates{{ext}}"): operation(
        "A comment on one of the key's requests (stored as a follow-up of its case; idempotent by update_id)",
        security=KEY, parameters=[EXT],
        body=form_body(_UPDATE_FIELDS, ("api_key", "service_request_id"), multipart=True, files=("media", "photo1")),
        responses=_answer("The stored update's id", _UPDATED)),
}
