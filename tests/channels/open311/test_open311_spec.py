"""Open311 GeoReport v2 documents against the spec as JSON Schema (tests/data/open311/schemas.json): every
endpoint in XML and JSON, required fields, enums, the W3C date format with offset, UTF-8, and the mapping of
every case state to the spec's open/closed."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import update

from hub.http.tokens import add_token
from hub.queue.cases import CaseState, case_t

SCHEMAS = json.loads((Path(__file__).resolve().parents[2] / "data" / "open311" / "schemas.json").read_text(encoding="utf-8"))
FORMATS = ("xml", "json")
NUMBER = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
INTEGER = r"^-?[0-9]+$"


def _xml_flavour(schema):
    """The schema as it applies to XML text: booleans are 'true'/'false', numbers are their digits."""
    if isinstance(schema, list):
        return [_xml_flavour(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _xml_flavour(v) for k, v in schema.items()}
    kinds = out.get("type")
    if kinds is None:
        return out
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    mapped = []
    for kind in kinds:
        if kind == "boolean":
            mapped.append({"enum": ["true", "false"]})
        elif kind in ("number", "integer"):
            mapped.append({"type": "string", "pattern": NUMBER if kind == "number" else INTEGER})
        else:
            mapped.append({"type": kind})
    if mapped == [{"type": k} for k in kinds]:
        return out
    rest = {k: v for k, v in out.items() if k not in ("type", "minimum", "maximum")}
    if "pattern" in rest:  # a pattern of the original string type stays with it
        pattern = rest.pop("pattern")
        mapped = [dict(m, pattern=pattern) if m.get("type") == "string" and "pattern" not in m else m for m in mapped]
    return {**rest, "anyOf": mapped}


def validator(name: str, fmt: str) -> jsonschema.Draft202012Validator:
    root = copy.deepcopy(SCHEMAS) if fmt == "json" else _xml_flavour(copy.deepcopy(SCHEMAS))
    schema = {"$defs": root["$defs"], **root[name]}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def spark(element: ET.Element):
    """XML → Python by the Spark convention: a container of repeated items is a list, even of one item."""
    children = list(element)
    if not children:
        return element.text if element.text and element.text.strip() else None
    if children[0].tag in CONTAINED:
        assert {c.tag for c in children} == {children[0].tag}, element.tag
        return [spark(c) for c in children]
    return {c.tag: spark(c) for c in children}


#: Elements that are items of a container (a container with a single item is still a list).
CONTAINED = {"service", "request", "error", "endpoint", "format", "attribute", "value"}
LIST_ROOTS = {"services", "service_requests", "errors"}


def check(name: str, fmt: str, raw: bytes, root: str | None = None) -> object:
    """Parse one answer, assert its document shape, return the data."""
    if fmt == "xml":
        assert raw.startswith(b'<?xml version="1.0" encoding="UTF-8"?>'), raw[:60]
        element = ET.fromstring(raw)
        if root:
            assert element.tag == root
        data = spark(element)
        if data is None and element.tag in LIST_ROOTS:
            data = []
    else:
        data = json.loads(raw.decode("utf-8"))
    errors = sorted(validator(name, fmt).iter_errors(data), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    return data


@pytest.fixture()
def key(hub):
    return add_token(hub[0], "city-app", "open311")


async def fetch(client, method: str, path: str, expect: int, **kwargs) -> bytes:
    resp = await client.request(method, path, **kwargs)
    raw = await resp.read()
    assert resp.status == expect, raw[:500]
    assert resp.charset == "utf-8"
    return raw


# -- the schemas can fail --------------------------------------------------------------------------------------


def test_the_schemas_reject_what_the_spec_forbids():
    good = {
        "service_request_id": "1", "status": "open", "status_notes": None, "service_name": "x",
        "service_code": "x", "description": None, "agency_responsible": None, "service_notice": None,
        "requested_datetime": "2024-05-02T10:15:00+02:00", "updated_datetime": None,
        "expected_datetime": None, "address": None, "address_id": None, "zipcode": None, "lat": 53.7,
        "long": 9.9, "media_url": None,
    }
    assert not list(validator("requests", "json").iter_errors([good]))
    for bad in (
        {"status": "pending"},
        {"requested_datetime": "2024-05-02 10:15"},
        {"requested_datetime": "2024-05-02T10:15:00"},  # no offset
        {"lat": "53.7"},
        {"service_code": ""},
    ):
        assert list(validator("requests", "json").iter_errors([{**good, **bad}])), bad
    without = {k: v for k, v in good.items() if k != "agency_responsible"}
    assert list(validator("requests", "json").iter_errors([without]))
    xml_good = {**good, "lat": "53.7", "long": "9.9"}
    assert not list(validator("requests", "xml").iter_errors([xml_good]))
    assert list(validator("requests", "xml").iter_errors([{**xml_good, "lat": "north"}]))
    assert list(validator("services", "xml").iter_errors([{
        "service_code": "a", "service_name": "b", "description": None, "metadata": "yes", "type": "realtime",
        "keywords": None, "group": None,
    }]))


# -- every endpoint, both formats ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_every_endpoint_answers_documents_of_the_spec(make_client, key, kb, fmt):
    client = await make_client()
    base = "/open311/v2"
    check("discovery", fmt, await fetch(client, "GET", f"{base}/discovery.{fmt}", 200), "discovery")
    services = check("services", fmt, await fetch(client, "GET", f"{base}/services.{fmt}", 200), "services")
    assert len(services) == len(kb.services)
    with_attrs = next(s["service_code"] for s in services if s["metadata"] in (True, "true"))
    definition = check(
        "service_definition", fmt, await fetch(client, "GET", f"{base}/services/{with_attrs}.{fmt}", 200),
        "service_definition",
    )
    assert definition["attributes"]
    fields = {
        "api_key": key,
        "service_code": "sh-sperrmuell",
        "address_string": "Kirchstraße 1, 23795 Bad Segeberg",
        "lat": "53.9356",
        "long": "10.3089",
        "description": "Sofa und zwei Stühle – bitte abholen",
        "media_url": "https://fotos.example.org/sofa.jpg",
        "first_name": "Jörg",
        "last_name": "Müller",
    }
    posted = check(
        "post_response", fmt, await fetch(client, "POST", f"{base}/requests.{fmt}", 200, data=fields),
        "service_requests",
    )
    request_id = posted[0]["service_request_id"]
    listed = check(
        "requests", fmt,
        await fetch(client, "GET", f"{base}/requests.{fmt}", 200, params={"api_key": key}), "service_requests",
    )
    assert [r["service_request_id"] for r in listed] == [request_id]
    one = check(
        "requests", fmt,
        await fetch(client, "GET", f"{base}/requests/{request_id}.{fmt}", 200, params={"api_key": key}),
        "service_requests",
    )[0]
    assert one["description"] == fields["description"] and one["zipcode"] == "23795"
    assert one["media_url"] == fields["media_url"]
    for error_path, method, status, body in (
        (f"{base}/services/nope.{fmt}", "GET", 404, None),
        (f"{base}/requests.{fmt}", "GET", 403, None),
        (f"{base}/requests.{fmt}", "POST", 403, {"service_code": "sh-sperrmuell"}),
        (f"{base}/requests.{fmt}", "POST", 400, {"api_key": key}),
        (f"{base}/requests/{request_id}.{fmt}?api_key=chub_wrong", "GET", 403, None),
        (f"{base}/servicerequestupdates.{fmt}", "GET", 403, None),
        (f"{base}/tokens/AAAAAAAAAAAAAAAAAAAAAA.{fmt}", "GET", 404, None),
        (f"{base}/nothing.{fmt}", "GET", 404, None),
    ):
        check("errors", fmt, await fetch(client, method, error_path, status, data=body), "errors")


@pytest.mark.parametrize("fmt", FORMATS)
async def test_batch_answers_and_tokens_are_documents_of_the_spec(make_client, key, fmt):
    client = await make_client(open311_type="batch")
    posted = check(
        "post_response", fmt,
        await fetch(client, "POST", f"/open311/v2/requests.{fmt}", 200,
                    data={"api_key": key, "service_code": "sh-sperrmuell", "address_string": "Kiel"}),
    )
    token = posted[0]["token"]
    assert "service_request_id" not in posted[0]
    resolved = check("tokens", fmt, await fetch(client, "GET", f"/open311/v2/tokens/{token}.{fmt}", 200))
    assert resolved[0]["token"] == token


async def test_text_is_utf8_in_both_formats(make_client, key):
    client = await make_client()
    umlauts = "Größe: Straße, Übergang, ß"
    await fetch(client, "POST", "/open311/v2/requests.json", 200, data={
        "api_key": key, "service_code": "sh-strassenschaden", "address_string": "Norderstedt", "description": umlauts,
    })
    for fmt in FORMATS:
        raw = await fetch(client, "GET", f"/open311/v2/requests.{fmt}", 200, params={"api_key": key})
        assert umlauts.encode("utf-8") in raw, fmt  # literally, not as character references or \\u escapes
        raw = await fetch(client, "GET", f"/open311/v2/services.{fmt}", 200)
        assert "Sperrmüll".encode() in raw


@pytest.mark.parametrize("state", list(CaseState))
async def test_every_case_state_maps_to_open_or_closed(make_client, key, state):
    client = await make_client()
    raw = await fetch(client, "POST", "/open311/v2/requests.json", 200, data={
        "api_key": key, "service_code": "sh-sperrmuell", "address_string": "Bad Segeberg",
    })
    request_id = json.loads(raw)[0]["service_request_id"]
    with client.engine.begin() as conn:
        conn.execute(update(case_t).where(case_t.c.id == int(request_id)).values(state=state.value))
    expected = "closed" if state in (CaseState.ANSWERED, CaseState.CLOSED) else "open"
    for fmt in FORMATS:
        data = check("requests", fmt, await fetch(
            client, "GET", f"/open311/v2/requests/{request_id}.{fmt}", 200, params={"api_key": key}))
        assert data[0]["status"] == expected, (state, fmt)
        if expected == "closed":
            assert data[0]["expected_datetime"] is None
        listed = check("requests", fmt, await fetch(
            client, "GET", f"/open311/v2/requests.{fmt}", 200, params={"api_key": key, "status": expected}))
        assert [r["service_request_id"] for r in listed] == [request_id]
        other = "open" if expected == "closed" else "closed"
        assert check("requests", fmt, await fetch(
            client, "GET", f"/open311/v2/requests.{fmt}", 200, params={"api_key": key, "status": other})) == []
