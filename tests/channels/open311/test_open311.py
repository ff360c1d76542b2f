"""Open311 GeoReport v2: every endpoint in XML and JSON, against the spec's required fields, enums, date
format and error lists, and against the document shapes of the spec's (San Francisco) example payloads."""

from __future__ import annotations

import asyncio
import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import select, update

from channels.open311.api import parse_text, window
from hub.http.tokens import add_token
from hub.queue.cases import attachment_t, case_t, message_t

SPEC = Path(__file__).resolve().parents[2] / "data" / "open311"
W3C = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$")
FORMATS = ("xml", "json")
REQUEST_FIELDS = (
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
)
XSS = "<script>alert('x')</script> & <b>fett</b>"


# -- a minimal Open311 client: Spark convention, as 311 apps read the documents ------------------------------


def spark(element: ET.Element):
    """XML → Python by the Spark convention: a container of one repeated child is a list."""
    children = list(element)
    if not children:
        return element.text if element.text and element.text.strip() else None
    if (
        len({c.tag for c in children}) == 1
    ):  # one kind of child: a container (no Open311 record has one field)
        return [spark(c) for c in children]
    return {c.tag: spark(c) for c in children}


def xml_doc(text: str) -> ET.Element:
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>'), text[:80]
    return ET.fromstring(text.encode("utf-8"))


def spec_doc(name: str) -> ET.Element:
    return ET.fromstring((SPEC / name).read_bytes())


def same_data(parsed_xml, parsed_json) -> None:
    """The JSON carries the same data as the XML (scalars compared as XML text)."""
    if isinstance(parsed_json, list):
        assert isinstance(parsed_xml, list) and len(parsed_xml) == len(parsed_json)
        for a, b in zip(parsed_xml, parsed_json, strict=True):
            same_data(a, b)
    elif isinstance(parsed_json, dict):
        assert isinstance(parsed_xml, dict) and list(parsed_xml) == list(parsed_json)
        for key in parsed_json:
            same_data(parsed_xml[key], parsed_json[key])
    elif isinstance(parsed_json, bool):
        assert parsed_xml == ("true" if parsed_json else "false")
    elif parsed_json is None or parsed_json == []:
        assert parsed_xml is None
    else:
        assert parsed_xml == (repr(parsed_json) if isinstance(parsed_json, float) else str(parsed_json))


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture()
def keys(hub):
    engine, _ = hub
    return SimpleNamespace(
        city=add_token(engine, "city-app", "open311"),
        other=add_token(engine, "other-app", "open311"),
        service=add_token(engine, "svc", "service"),
        agent=add_token(engine, "agent1", "agent", all_authorities=True),
    )


@pytest.fixture()
async def client(make_client):
    return await make_client()


async def get(client, path: str, fmt: str, expect: int = 200, **params):
    resp = await client.get(f"/open311/v2/{path}.{fmt}", params=params)
    text = await resp.text()
    assert resp.status == expect, text
    assert resp.charset == "utf-8"
    if fmt == "xml":
        assert resp.content_type == "text/xml"
        return xml_doc(text), text
    assert resp.content_type == "application/json"
    return json.loads(text), text


async def post(client, fmt: str, expect: int = 200, **fields):
    resp = await client.post(f"/open311/v2/requests.{fmt}", data=fields)
    text = await resp.text()
    assert resp.status == expect, text
    return (xml_doc(text) if fmt == "xml" else json.loads(text)), text


async def submit(client, key: str, fmt: str = "json", **extra) -> str:
    fields = {
        "api_key": key,
        "service_code": "sh-strassenschaden",
        "address_string": "Rathausallee 50, 22846 Norderstedt",
        "description": "Schlagloch vor dem Rathaus",
        **extra,
    }
    doc, _ = await post(client, fmt, **fields)
    if fmt == "json":
        return doc[0]["service_request_id"]
    return doc.find("request/service_request_id").text


def errors_of(doc, fmt: str) -> list[tuple[int, str]]:
    if fmt == "xml":
        assert doc.tag == "errors"
        return [(int(e.findtext("code")), e.findtext("description")) for e in doc.findall("error")]
    assert isinstance(doc, list)
    return [(e["code"], e["description"]) for e in doc]


async def route_all(client) -> None:
    await asyncio.to_thread(client.service.routing.run_until_empty)


# -- discovery, services, definitions ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_discovery(client, fmt):
    doc, _ = await get(client, "discovery", fmt)
    data = spark(doc) if fmt == "xml" else doc
    for key in ("changeset", "contact", "key_service", "endpoints"):
        assert data[key], key
    [endpoint] = data["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"] == f"http://127.0.0.1:{client.port}/open311/v2"
    assert endpoint["type"] in ("production", "test")
    assert set(endpoint["formats"]) == {"text/xml", "application/json"}
    assert W3C.match(endpoint["changeset"])
    if fmt == "xml":
        spec = spec_doc("discovery.xml")
        assert [c.tag for c in doc] == [c.tag for c in spec]
        assert [c.tag for c in doc.find("endpoints/endpoint")] == [
            c.tag for c in spec.find("endpoints/endpoint")
        ]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_services_list_the_catalogue(client, kb, fmt):
    doc, _ = await get(client, "services", fmt)
    items = doc.findall("service") if fmt == "xml" else doc
    assert len(items) == len(kb.services)
    by_code = {}
    for item in items:
        data = spark(item) if fmt == "xml" else item
        assert list(data) == [
            "service_code",
            "service_name",
            "description",
            "metadata",
            "type",
            "keywords",
            "group",
        ]
        assert data["service_code"] and data["service_name"]
        assert data["metadata"] in (("true", "false") if fmt == "xml" else (True, False))
        assert data["type"] in ("realtime", "batch", "blackbox")
        by_code[data["service_code"]] = data
    passport = by_code["sh-reisepass"]
    assert passport["service_name"] == "Reisepass beantragen"
    assert passport["group"] == "Ausweise und Pässe"
    assert passport["description"] == kb.services["sh-reisepass"].short_text
    assert "Reisepass" in passport["keywords"] or "Pass" in passport["keywords"]
    if fmt == "xml":  # the same elements, in the same order, as the spec's first example service
        assert [c.tag for c in doc.find("service")] == [
            c.tag for c in spec_doc("services.xml").find("service")
        ]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_service_definition(client, kb, fmt):
    doc, _ = await get(client, "services/sh-reisepass", fmt)
    data = spark(doc) if fmt == "xml" else doc
    assert data["service_code"] == "sh-reisepass"
    attrs = data["attributes"]
    assert attrs, "the passport has documents, fees and a processing time"
    orders = []
    spec_fields = [c.tag for c in spec_doc("service_definition.xml").find("attributes/attribute")]
    for attr in attrs:
        assert [k for k in attr] == [f for f in spec_fields if f != "values"]
        assert attr["variable"] in ("false", False)
        assert attr["required"] in ("false", False)
        assert attr["datatype"] in (
            "string",
            "number",
            "datetime",
            "text",
            "singlevaluelist",
            "multivaluelist",
        )
        orders.append(int(attr["order"]))
        assert attr["code"] and attr["description"]
    assert orders == sorted(set(orders)) and orders[0] >= 1
    assert any("Gebühren" in a["description"] for a in attrs)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_unknown_service_code_is_404_with_error_list(client, fmt):
    doc, _ = await get(client, "services/no-such-service", fmt, expect=404)
    [(code, description)] = errors_of(doc, fmt)
    assert code == 404 and "no-such-service" in description


async def test_xml_and_json_carry_the_same_data(client, keys):
    await submit(client, keys.city, address_string="Norderstedt", description=XSS)
    for path, params in (
        ("services", {}),
        ("services/sh-kfz-abmelden", {}),
        ("discovery", {}),
        ("requests", {"api_key": keys.city}),
    ):
        xml, _ = await get(client, path, "xml", **params)
        js, _ = await get(client, path, "json", **params)
        same_data(spark(xml), js)


# -- POST requests -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_spec_example_request_is_stored(client, keys, kb, fmt):
    body = (SPEC / "post_request.txt").read_text().replace("{api_key}", keys.city)
    resp = await client.post(
        f"/open311/v2/requests.{fmt}",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    text = await resp.text()
    assert resp.status == 200, text
    if fmt == "xml":
        doc = xml_doc(text)
        assert doc.tag == "service_requests"
        [req] = doc.findall("request")
        assert [c.tag for c in req] == [c.tag for c in spec_doc("post_response.xml").find("request")]
        request_id = req.findtext("service_request_id")
    else:
        [req] = json.loads(text)
        assert list(req) == ["service_request_id", "service_notice", "account_id"]
        request_id = req["service_request_id"]
    assert request_id.isdigit()
    with client.engine.connect() as conn:
        case = conn.execute(select(case_t).where(case_t.c.id == int(request_id))).mappings().one()
        msg = conn.execute(select(message_t).where(message_t.c.case_id == case["id"])).mappings().one()
    fields = dict(parse_qsl(body))
    assert case["channel"] == "open311"
    assert case["contact_name"] == "john smith" and case["contact_email"] == "smit333@example.org"
    assert case["contact_phone"] == "+494053595111"
    assert msg["external_id"].startswith("open311:city-app:sh-strassenschaden:")
    description, meta = parse_text(msg["text"])
    assert description == fields["description"]
    assert meta["address"] == fields["address_string"]
    assert (meta["lat"], meta["long"]) == (53.70612, 9.99694)
    assert meta["media_url"] == fields["media_url"]
    assert kb.regions.resolve(msg["location"]).match.display_name == "Norderstedt"


async def test_batch_type_answers_a_token_that_resolves(make_client, keys):
    client = await make_client(open311_type="batch")
    doc, _ = await get(client, "services", "json")
    assert {s["type"] for s in doc} == {"batch"}
    for fmt in FORMATS:
        answer, _ = await post(
            client,
            fmt,
            api_key=keys.city,
            service_code="sh-sperrmuell",
            address_string="Bad Segeberg",
            description="Sofa abholen",
        )
        if fmt == "xml":
            token = answer.findtext("request/token")
            assert answer.find("request/service_request_id") is None  # either id or token, never both
        else:
            token = answer[0]["token"]
            assert "service_request_id" not in answer[0]
        for out in FORMATS:
            doc, _ = await get(client, f"tokens/{token}", out)
            data = spark(doc)[0] if out == "xml" else doc[0]
            assert data["token"] == token and data["service_request_id"].isdigit()
            if out == "xml":
                assert [c.tag for c in doc.find("request")] == [
                    c.tag for c in spec_doc("token.xml").find("request")
                ]
    for fmt in FORMATS:
        doc, _ = await get(client, "tokens/AAAAAAAAAAAAAAAAAAAA", fmt, expect=404)
        assert errors_of(doc, fmt)[0][0] == 404


async def test_a_web_case_token_does_not_resolve_through_open311(client, keys):
    from hub.queue.requests import InboundRequest

    result = await client.service.writer.submit(InboundRequest(channel="web", external_id="w1", text="Pass"))
    doc, _ = await get(client, f"tokens/{result.token}", "xml", expect=404)
    assert errors_of(doc, "xml")[0][0] == 404


@pytest.mark.parametrize("fmt", FORMATS)
async def test_post_errors(client, keys, fmt):
    good = {
        "api_key": keys.city,
        "service_code": "sh-sperrmuell",
        "address_string": "Kiel",
        "description": "x",
    }
    cases = [
        ({k: v for k, v in good.items() if k != "service_code"}, 400, "service_code"),
        ({k: v for k, v in good.items() if k != "api_key"}, 403, "api_key"),
        (dict(good, api_key="chub_wrong"), 403, "api_key"),
        (dict(good, api_key=keys.service), 403, "Open311"),
        (dict(good, api_key=keys.agent), 403, "Open311"),
        (dict(good, service_code="x" * 101), 400, "service_code"),
        (dict(good, jurisdiction_id="atlantis.example"), 404, "jurisdiction_id"),
        ({k: v for k, v in good.items() if k != "address_string"}, 400, "ein Ort fehlt"),
        (dict(good, lat="53.7"), 400, "lat und long"),
        (dict(good, lat="north", long="9.9"), 400, "WGS84"),
        (dict(good, description="x" * 4001), 400, "4000"),
        (dict(good, email="kein-mail"), 400, "email"),
        (dict(good, media_url="javascript:alert(1)"), 400, "media_url"),
    ]
    for fields, status, word in cases:
        doc, _ = await post(client, fmt, expect=status, **fields)
        errors = errors_of(doc, fmt)
        assert errors and errors[0][0] == status, (fields, errors)
        assert any(word in d for _, d in errors), (word, errors)
    # Several problems at once are all listed.
    doc, _ = await post(
        client, fmt, expect=400, **dict(good, email="kein-mail", phone="12", description="y" * 4001)
    )
    assert len(errors_of(doc, fmt)) == 3
    with client.engine.connect() as conn:
        assert conn.execute(select(case_t.c.id)).first() is None  # nothing of it was stored
    if fmt == "xml":
        spec = spec_doc("errors.xml")
        assert [c.tag for c in doc.find("error")] == [c.tag for c in spec.find("error")]


async def test_jurisdiction_is_a_region_key_or_a_configured_id(make_client, keys):
    client = await make_client(open311_jurisdiction_ids=["norderstedt.de"])
    for jid in ("010600063063", "01060063", "norderstedt.de"):
        await submit(client, keys.city, jurisdiction_id=jid)
        doc, _ = await get(client, "services", "xml", jurisdiction_id=jid)
        assert doc.find("service") is not None
    for fmt in FORMATS:
        doc, _ = await get(client, "services", fmt, expect=404, jurisdiction_id="sfgov.org")
        assert "sfgov.org" in errors_of(doc, fmt)[0][1]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_oversized_post_is_413(client, keys, fmt):
    big = {
        "api_key": keys.city,
        "service_code": "sh-sperrmuell",
        "address_string": "Kiel",
        "description": "x" * 2_000_000,
    }  # beyond server.max_body_bytes (1 MiB)
    doc, _ = await post(client, fmt, expect=413, **big)
    assert errors_of(doc, fmt)[0][0] == 413


async def test_media_file_is_stored_as_attachment_and_checked(client, keys):
    import aiohttp

    def form(content: bytes):
        data = aiohttp.FormData()
        for k, v in {
            "api_key": keys.city,
            "service_code": "sh-strassenschaden",
            "lat": "53.70612",
            "long": "9.99694",
        }.items():
            data.add_field(k, v)
        data.add_field("media", content, filename="foto.jpg", content_type="image/jpeg")
        return data

    resp = await client.post("/open311/v2/requests.json", data=form(b"\xff\xd8\xff\xe0" + b"\x00" * 500))
    assert resp.status == 200, await resp.text()
    with client.engine.connect() as conn:
        assert conn.execute(select(attachment_t.c.content_type)).scalar_one() == "image/jpeg"
    resp = await client.post("/open311/v2/requests.json", data=form(b"<svg onload=alert(1)>"))
    assert resp.status == 400
    resp = await client.post("/open311/v2/requests.json", data=form(b"\xff\xd8\xff" + b"\x00" * 70_000))
    assert resp.status == 413  # max_upload_bytes is 64 KiB here


# -- GET requests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_get_requests_fields_status_and_agency(client, keys, kb, fmt):
    first = await submit(client, keys.city, description=XSS)
    second = await submit(
        client,
        keys.city,
        service_code="sh-sperrmuell",
        address_string="23795 Bad Segeberg",
        description="Alter Schrank",
    )
    await submit(client, keys.other)  # another key's request is never shown
    await route_all(client)
    resp = await client.post(
        f"/api/cases/{second}/reply",
        json={"text": "Abholung am Montag."},
        headers={"Authorization": f"Bearer {keys.agent}"},
    )
    assert resp.status == 201, await resp.text()

    doc, raw = await get(client, "requests", fmt, api_key=keys.city)
    items = [spark(r) for r in doc.findall("request")] if fmt == "xml" else doc
    assert [i["service_request_id"] for i in items] == [second, first]  # newest first
    for item in items:
        assert tuple(item) == REQUEST_FIELDS
        assert item["status"] in ("open", "closed")
        for key in ("requested_datetime", "updated_datetime"):
            assert W3C.match(item[key]), item[key]
        if item["expected_datetime"]:
            assert W3C.match(item["expected_datetime"])
        assert item["requested_datetime"].endswith(("+01:00", "+02:00"))  # Europe/Berlin
    answered, reported = items
    assert answered["status"] == "closed" and answered["status_notes"] == "Abholung am Montag."
    assert answered["service_code"] == "sh-sperrmuell" and answered["service_name"] == "Sperrmüll anmelden"
    assert answered["agency_responsible"] == "Kreis Segeberg – Kreisverwaltung"
    assert answered["zipcode"] == "23795"
    assert reported["status"] == "open" and reported["description"] == XSS
    assert reported["agency_responsible"], "routed to the authority responsible in Norderstedt"
    assert reported["address"] == "Rathausallee 50, 22846 Norderstedt"
    if fmt == "xml":
        spec_fields = [c.tag for c in spec_doc("requests.xml").find("request")]
        assert [c.tag for c in doc.find("request")] == spec_fields
        assert "<script>" not in raw and "&lt;script&gt;" in raw
    else:
        assert "<script>" not in raw and "\\u003cscript\\u003e" in raw

    doc, _ = await get(client, f"requests/{first}", fmt, api_key=keys.city)
    [one] = [spark(r) for r in doc.findall("request")] if fmt == "xml" else doc
    assert one["service_request_id"] == first and one["description"] == XSS


@pytest.mark.parametrize("fmt", FORMATS)
async def test_get_requests_filters(client, keys, fmt):
    a = await submit(client, keys.city)
    b = await submit(client, keys.city, service_code="sh-sperrmuell", address_string="Bad Segeberg")
    c = await submit(client, keys.city, service_code="sh-baumfaellung", address_string="Norderstedt")
    old = await submit(client, keys.city)
    with client.engine.begin() as conn:
        conn.execute(
            update(case_t)
            .where(case_t.c.id == int(old))
            .values(created_at=datetime.now(UTC) - timedelta(days=120))
        )
        conn.execute(update(case_t).where(case_t.c.id == int(b)).values(state="closed"))

    async def ids(**params):
        doc, _ = await get(client, "requests", fmt, api_key=keys.city, **params)
        items = [spark(r) for r in doc.findall("request")] if fmt == "xml" else doc
        return {i["service_request_id"] for i in items}

    assert await ids() == {a, b, c}  # the default window is the most recent 90 days
    assert await ids(service_code="sh-sperrmuell,sh-baumfaellung") == {b, c}
    assert await ids(status="closed") == {b}
    assert await ids(status="open") == {a, c}
    assert await ids(status="open,closed") == {a, b, c}
    # service_request_id overrides every other argument, the window included.
    assert await ids(service_request_id=f"{old},{b}", status="open") == {old, b}
    start = (datetime.now(UTC) - timedelta(days=125)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (datetime.now(UTC) - timedelta(days=100)).isoformat(timespec="seconds")
    assert await ids(start_date=start, end_date=end) == {old}
    for bad in (
        {"status": "pending"},
        {"start_date": "gestern"},
        {"service_request_id": "1;DROP"},
        {"start_date": start},
        {"start_date": "2024-06-01T00:00:00Z", "end_date": "2024-01-01T00:00:00Z"},
    ):
        if set(bad) == {"start_date"} and bad["start_date"] == start:
            continue  # only a start: start + 90 days, valid
        doc, _ = await get(client, "requests", fmt, expect=400, api_key=keys.city, **bad)
        assert errors_of(doc, fmt)[0][0] == 400
    too_long = {"start_date": "2024-01-01T00:00:00Z", "end_date": "2024-06-01T00:00:00+02:00"}
    doc, _ = await get(client, "requests", fmt, expect=400, api_key=keys.city, **too_long)
    assert "90 Tage" in errors_of(doc, fmt)[0][1]


def test_default_window_is_the_most_recent_90_days():
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Berlin")
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    assert window({}, tz, now) == (now - timedelta(days=90), now)
    start, end = window({"end_date": "2024-05-01"}, tz, now)
    assert end == datetime(2024, 5, 1, tzinfo=tz) and end - start == timedelta(days=90)
    start, end = window({"start_date": "2024-01-01T00:00:00Z"}, tz, now)
    assert end - start == timedelta(days=90)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_requests_need_the_key_that_submitted_them(client, keys, fmt):
    mine = await submit(client, keys.city)
    doc, _ = await get(client, "requests", fmt, expect=403)
    assert errors_of(doc, fmt) == [(403, "api_key fehlt")]
    doc, _ = await get(client, f"requests/{mine}", fmt, expect=403, api_key="chub_nope")
    assert errors_of(doc, fmt)[0][0] == 403
    doc, _ = await get(client, f"requests/{mine}", fmt, expect=404, api_key=keys.other)
    assert errors_of(doc, fmt)[0][0] == 404
    doc, _ = await get(client, "requests/999999", fmt, expect=404, api_key=keys.city)
    assert errors_of(doc, fmt)[0][0] == 404
    doc, _ = await get(client, "requests", fmt, api_key=keys.other)
    assert (doc.findall("request") if fmt == "xml" else doc) == []


async def test_coordinates_alone_find_the_municipality(client, keys):
    request_id = await submit(
        client,
        keys.city,
        address_string="",
        lat="53.70612",
        long="9.99694",
        service_code="sh-baumfaellung",
        description="Baum droht umzustürzen",
    )
    with client.engine.connect() as conn:
        location = conn.execute(
            select(message_t.c.location).where(message_t.c.case_id == int(request_id))
        ).scalar()
    assert location == "010600063063"  # Norderstedt
    await route_all(client)
    doc, _ = await get(client, f"requests/{request_id}", "json", api_key=keys.city)
    assert (doc[0]["lat"], doc[0]["long"]) == (53.70612, 9.99694)
    assert "Norderstedt" in doc[0]["agency_responsible"]


async def test_unknown_paths_under_open311_answer_an_error_list(client):
    for path, fmt in (("/open311/v2/nothing.json", "json"), ("/open311/v2/services.html", "xml")):
        resp = await client.get(path)
        assert resp.status == 404
        doc = json.loads(await resp.text()) if fmt == "json" else xml_doc(await resp.text())
        assert errors_of(doc, fmt)[0][0] == 404


# -- the api_key comes from the CLI --------------------------------------------------------------------------

async def test_token_add_role_open311_issues_an_api_key(client, hub, capsys):
    from hub.cli import main

    _, url = hub
    assert main(["token", "add", "city-cli", "--role", "open311", "--db", url]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    doc, _ = await post(client, "json", api_key=key, service_code="sh-sperrmuell", address_string="Kiel")
    assert doc[0]["service_request_id"].isdigit()


def test_a_description_that_imitates_the_open311_block_stays_the_description(kb):
    from channels.open311.api import TRAILER, compose_text

    fake = f"Loch in der Straße\n\n{TRAILER}Koordinaten: 1.0, 2.0\nMedien: https://evil.example/x"
    text = compose_text(fake, kb.services["sh-strassenschaden"], "Kiel", None, None, None, None, None)
    description, meta = parse_text(text)
    assert description == fake
    assert meta == {"address": "Kiel"}
