"""Property tests of ``POST /api/requests`` (the JSON body) through the real app: any body — any JSON value,
an object shaped almost like RequestIn with hostile values, any bytes, any declared content type — is either
stored (201, or 200 for a repeat) with ``{"case_id", "token", "state"}`` or refused with a 4xx and
``{"error": reason}``; never a 5xx."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import FUZZ, hostile_bytes, hostile_text, json_object_like, json_values, place_strings

from hub.http.tokens import add_token

ALLOWED = {200, 201, 400, 413, 415, 422}


@pytest.fixture()
async def client(make_client):
    return await make_client()


@pytest.fixture()
def auth(hub):
    return {"Authorization": "Bearer " + add_token(hub[0], "fuzz-service", "service")}


async def _post(client, auth, body: bytes, ctype: str = "application/json"):
    resp = await client.post("/api/requests", data=body, headers={**auth, "Content-Type": ctype})
    text = await resp.text()
    assert resp.status in ALLOWED, (resp.status, text[:500])
    answer = json.loads(text)
    if resp.status in (200, 201):
        assert set(answer) == {"case_id", "token", "state"}
    else:
        assert isinstance(answer["error"], str) and answer["error"]
    return resp.status


REQUEST_FIELDS = {
    "channel": st.sampled_from(("api", "web", "email", "sms", "")),
    "external_id": hostile_text(300),
    "text": hostile_text(500),
    "location": place_strings(),
    "contact": json_object_like({"name": hostile_text(80), "email": hostile_text(80), "phone": hostile_text(40)}),
}


@FUZZ
@given(body=json_object_like(REQUEST_FIELDS))
async def test_any_request_shaped_object_is_stored_or_refused_with_a_reason(client, auth, body):
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    await _post(client, auth, raw)


@FUZZ
@given(value=json_values())
async def test_any_json_value_is_refused_or_stored(client, auth, value):
    await _post(client, auth, json.dumps(value).encode())


@FUZZ
@given(raw=hostile_bytes(3000), ctype=st.sampled_from(("application/json", "application/json; charset=latin-1",
                                                       "text/plain", "application/x-www-form-urlencoded")))
async def test_any_bytes_are_refused_with_a_reason(client, auth, raw, ctype):
    await _post(client, auth, raw, ctype)


async def test_a_repeat_with_the_same_external_id_is_200_with_the_same_case(client, auth):
    body = json.dumps({"external_id": "fuzz-repeat", "text": "Reisepass"}).encode()
    assert await _post(client, auth, body) == 201
    assert await _post(client, auth, body) == 200
