"""HTTP: /healthz and /api/lookup, in-process with aiohttp's test client over the real demo database."""

from __future__ import annotations

import pytest

from hub.config import Settings
from hub.http.app import create_app


@pytest.fixture()
async def client(aiohttp_client, demo_db_url, demo_engine, kb):
    settings = Settings()
    settings.database.url = demo_db_url
    return await aiohttp_client(create_app(settings, kb=kb, engine=demo_engine))


async def test_healthz(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok" and body["database"] is True and body["services"] >= 80


async def test_lookup_names_the_responsible_office(client):
    resp = await client.get("/api/lookup", params={"q": "wunschkennzeichen", "location": "Todesfelde"})
    assert resp.status == 200
    body = await resp.json()
    top = body["results"][0]
    assert "Wunschkennzeichen" in top["service"]["name"]
    assert top["authority"]["name"].startswith("Kreis") and "Segeberg" in top["authority"]["name"]
    assert top["responsibility"]["via"] == "level"
    assert body["location"]["name"] == "Todesfelde"


async def test_lookup_ambiguous_postcode_lists_offices_per_place(client):
    resp = await client.get("/api/lookup", params={"q": "Meldebescheinigung", "location": "23795"})
    body = await resp.json()
    assert body["location"] is None and len(body["location_candidates"]) == 14
    top = body["results"][0]
    assert top["authority"] is None
    assert len(top["authority_candidates"]) == 3  # Bad Segeberg, and two Ämter


@pytest.mark.parametrize("params", [{}, {"q": ""}, {"q": "   "}, {"q": "pass", "limit": "x"}, {"q": "pass", "limit": "0"}])
async def test_lookup_bad_input_is_400_with_a_message(client, params):
    resp = await client.get("/api/lookup", params=params)
    assert resp.status == 400
    assert (await resp.json())["error"]


async def test_lookup_unknown_place_and_hostile_query(client):
    hostile = "<script>alert(1)</script>\x00\x1b" * 100
    resp = await client.get("/api/lookup", params={"q": hostile, "location": "Xyzzyhausen"})
    assert resp.status == 200
    body = await resp.json()
    assert body["location"] is None and body["location_reason"]
    assert "\x00" not in body["query"]


async def test_request_line_over_8_kb_is_rejected_not_crashed(client):
    resp = await client.get("/api/lookup", params={"q": "Reisepass " * 1200})
    assert resp.status == 400
    assert (await client.get("/healthz")).status == 200


async def test_unknown_route_is_json_404(client):
    resp = await client.get("/nope")
    assert resp.status == 404
    assert "error" in await resp.json()
