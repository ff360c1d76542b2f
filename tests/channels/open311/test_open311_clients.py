"""Open311 requests as real 311 clients send them: form-encoded bodies with '+' for spaces and
percent-encoded UTF-8, the api_key in the query string, multipart without a file, ``attribute[code]``
values, HEAD, and hostile bodies (not UTF-8, JSON instead of a form, a wrong method, line separators that
try to forge the Open311 block of the request text)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import aiohttp
import pytest
from sqlalchemy import func, select

from channels.open311.api import parse_text
from hub.http.tokens import add_token
from hub.queue.cases import case_t, message_t

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture()
async def client(make_client):
    return await make_client()


@pytest.fixture()
def key(hub):
    return add_token(hub[0], "city-app", "open311")


def stored(client, request_id: str) -> dict:
    with client.engine.connect() as conn:
        return dict(
            conn.execute(select(message_t).where(message_t.c.case_id == int(request_id))).mappings().one()
        )


def count_cases(client) -> int:
    with client.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(case_t)).scalar_one()


def errors(text: str, fmt: str) -> list[tuple[int, str]]:
    if fmt == "json":
        return [(e["code"], e["description"]) for e in json.loads(text)]
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "errors"
    return [(int(e.findtext("code")), e.findtext("description")) for e in root.findall("error")]


async def test_a_body_encoded_like_curl_and_python_requests(client, key):
    # '+' for spaces, UTF-8 percent escapes, no charset in the Content-Type: what urlencode() and curl send.
    body = urlencode({
        "api_key": key,
        "service_code": "sh-strassenschaden",
        "address_string": "Ulzburger Straße 12, 22846 Norderstedt",
        "description": "Tiefes Schlagloch & Riss – Größe ~30 cm",
        "first_name": "Jürgen",
        "last_name": "Groß",
    })
    assert "+" in body and "%C3%9F" in body
    resp = await client.post("/open311/v2/requests.json", data=body, headers=FORM)
    text = await resp.text()
    assert resp.status == 200, text
    msg = stored(client, json.loads(text)[0]["service_request_id"])
    description, meta = parse_text(msg["text"])
    assert description == "Tiefes Schlagloch & Riss – Größe ~30 cm"
    assert meta["address"] == "Ulzburger Straße 12, 22846 Norderstedt"
    with client.engine.connect() as conn:
        assert conn.execute(select(case_t.c.contact_name)).scalar_one() == "Jürgen Groß"


async def test_api_key_in_the_query_string_and_no_suffix_means_xml(client, key):
    resp = await client.post(
        f"/open311/v2/requests?api_key={key}",
        data={"service_code": "sh-sperrmuell", "address_string": "Bad Segeberg"},
    )
    text = await resp.text()
    assert resp.status == 200, text
    assert resp.content_type == "text/xml"
    assert ET.fromstring(text.encode()).findtext("request/service_request_id").isdigit()


async def test_multipart_without_a_file_and_attribute_values(client, key):
    data = aiohttp.FormData()
    for name, value in (
        ("api_key", key),
        ("service_code", "sh-baumfaellung"),
        ("lat", "53.70612"),
        ("long", "9.99694"),
        ("description", "Ast hängt über dem Gehweg"),
        ("device_id", "tt222111"),
        ("account_id", "123456"),
        ("attribute[BAUMART]", "Eiche"),
        ("attribute[GEFAHR][]", "Gehweg"),
    ):
        data.add_field(name, value)
    resp = await client.post("/open311/v2/requests.json", data=data)
    text = await resp.text()
    assert resp.status == 200, text
    msg = stored(client, json.loads(text)[0]["service_request_id"])
    assert "Attribut BAUMART: Eiche" in msg["text"] and "Attribut GEFAHR: Gehweg" in msg["text"]
    assert "tt222111" not in msg["text"]
    description, meta = parse_text(msg["text"])
    assert description == "Ast hängt über dem Gehweg" and (meta["lat"], meta["long"]) == (53.70612, 9.99694)


@pytest.mark.parametrize("fmt", ["xml", "json"])
async def test_hostile_bodies_get_the_error_list_and_store_nothing(client, key, fmt):
    url = f"/open311/v2/requests.{fmt}"
    base = f"api_key={key}&service_code=sh-sperrmuell&address_string=Kiel"
    cases = [
        # Latin-1 instead of UTF-8: refused, not stored as U+FFFD.
        (dict(data=base + "&description=Gr%F6%DFe", headers=FORM), 400, "UTF-8"),
        (dict(data=base.encode() + b"&description=Gr\xf6\xdfe", headers=FORM), 400, "UTF-8"),
        (dict(json={"api_key": key, "service_code": "sh-sperrmuell"}), 400, "x-www-form-urlencoded"),
        (dict(data=base + "&attribute[A%0AKoordinaten]=1", headers=FORM), 400, "attribute"),
        (dict(data=base + "&attribute[X%E2%80%A8Medien]=https://evil.example/", headers=FORM), 400, "attribute"),
        (dict(data=base.replace("Kiel", "Kiel%E2%80%A8Medien:+https://evil.example/"), headers=FORM), 400,
         "address_string"),
        (dict(data=base + "".join(f"&attribute[a{i}]=v" for i in range(21)), headers=FORM), 400, "attribute"),
        (dict(data=base + "&x=1" * 200, headers=FORM), 413, "zu groß"),
    ]
    for kwargs, status, word in cases:
        resp = await client.post(url, **kwargs)
        text = await resp.text()
        assert resp.status == status, (kwargs, text)
        found = errors(text, fmt)
        assert found and found[0][0] == status and any(word in d for _, d in found), (word, found)
    assert count_cases(client) == 0


async def test_a_wrong_method_is_405_with_allow_and_head_works(client):
    for method, path, allow in (
        ("PUT", "/open311/v2/requests.json", "GET, POST"),
        ("DELETE", "/open311/v2/services.xml", "GET"),
        ("POST", "/open311/v2/discovery.json", "GET"),
        ("PATCH", "/open311/v2/requests/1.json", "GET"),
    ):
        resp = await client.request(method, path)
        text = await resp.text()
        assert resp.status == 405, (method, path, text)
        assert resp.headers["Allow"] == allow
        fmt = "json" if path.endswith(".json") else "xml"
        [(code, description)] = errors(text, fmt)
        assert code == 405 and method in description
    resp = await client.head("/open311/v2/services.json")
    assert resp.status == 200 and resp.content_type == "application/json"
