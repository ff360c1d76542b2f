"""The status page: state and answer through the unguessable case token, nothing else; the token cannot be
guessed or enumerated (rate limit); and a request is committed before any page acknowledges it (a store
that fails shows no token, on the form and over Open311)."""

from __future__ import annotations

import asyncio
import json
import re

from sqlalchemy import select, text
from web_support import case_token_of, cases, open_form, post_form

from hub.db import make_engine
from hub.http.tokens import add_token
from hub.queue.cases import case_t


async def submit(client, **fields) -> str:
    form = await open_form(client)
    form.update(action="submit", **fields)
    resp = await post_form(client, form)
    html = await resp.text()
    assert resp.status == 200, html
    return case_token_of(html)


async def test_the_status_page_shows_state_and_answer_and_nothing_else(make_client):
    client = await make_client()
    token = await submit(
        client,
        text="Mein Hund ist zugelaufen, Chip 276098106543210",
        location="Norderstedt",
        name="Erika Geheim",
        email="erika@geheim.example",
        phone="040 1234567",
        reply="email",
    )
    other = await submit(client, text="Anderer Vorgang: Sperrmüll Sofa", location="Bad Segeberg")
    await asyncio.to_thread(client.service.routing.run_until_empty)
    agent = {"Authorization": "Bearer " + add_token(client.engine, "agent-s", "agent", all_authorities=True)}
    [case] = [c for c in cases(client.engine) if c["token"] == token]
    resp = await client.post(
        f"/api/cases/{case['id']}/forward",
        json={"note": "Interne Notiz: bitte Halter prüfen"},
        headers=agent,
    )
    assert resp.status == 201, await resp.text()
    html = await (await client.get(f"/status/{token}")).text()
    assert "Weitergeleitet" in html
    [forwarded] = [c for c in cases(client.engine) if c["token"] == token]
    assert forwarded["authority_name"] and forwarded["authority_name"] in html  # where it went is shown
    # Neither the request, nor the contact, nor the forward mail (note, request, contact), nor other cases.
    for secret in (
        "Chip 276098106543210", "Erika Geheim", "erika@geheim.example", "1234567", "Interne Notiz",
        "Halter prüfen", "Sperrmüll Sofa", other, "/console/", "/api/",
    ):
        assert secret not in html, secret

    resp = await client.post(
        f"/api/cases/{case['id']}/reply", json={"text": "Der Hund ist im Tierheim abholbereit."}, headers=agent
    )
    assert resp.status == 201, await resp.text()
    html = await (await client.get(f"/status/{token}")).text()
    assert "Der Hund ist im Tierheim abholbereit." in html and "Beantwortet" in html
    assert "Interne Notiz" not in html and "Chip 276098106543210" not in html
    html_en = await (await client.get(f"/status/{token}?lang=en")).text()
    assert '<html lang="en">' in html_en and "Answered" in html_en
    # The other case's page shows its own state, not this answer.
    assert "Tierheim" not in await (await client.get(f"/status/{other}")).text()


async def test_tokens_are_unguessable_and_case_ids_open_nothing(make_client):
    client = await make_client()
    tokens = [await submit(client, text=f"Anliegen Nummer {i}") for i in range(8)]
    assert len(set(tokens)) == 8
    for token in tokens:
        # 16 Crockford base32 characters in groups of four: 80 random bits, no look-alikes, no case
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}", token)
    ids = [c["id"] for c in cases(client.engine)]
    # one character changed (to another that is no look-alike of it)
    changed = tokens[0][:-1] + ("2" if tokens[0][-1] != "2" else "3")
    for guess in [*map(str, ids), "0" * 16, tokens[0][:-1], tokens[0] + "X", changed]:
        if guess in tokens:
            continue
        resp = await client.get(f"/status/{guess}")
        assert resp.status == 404, guess
    # Nothing under the token but the page itself (no attachments, no API).
    for suffix in ("/attachments", "/1", ".json"):
        assert (await client.get(f"/status/{tokens[0]}{suffix}")).status == 404


async def test_status_lookups_are_rate_limited_per_client(make_client):
    client = await make_client(read_burst=5, read_rate_per_minute=0.01, trust_forwarded_for=True)
    token = await submit(client, text="Wohngeld beantragen")
    me = {"X-Forwarded-For": "203.0.113.9"}
    statuses = [(await client.get(f"/status/AAAAAAAAAAAAAAA{i}", headers=me)).status for i in range(5)]
    assert statuses == [404] * 5
    resp = await client.get(f"/status/{token}", headers=me)  # guessing burnt the bucket: even the right token
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    assert 'id="case-state"' not in await resp.text()
    assert (await client.get(f"/status/{token}", headers={"X-Forwarded-For": "198.51.100.2"})).status == 200


# -- committed before acknowledged ----------------------------------------------------------------------------

FAIL_TRIGGER = (
    "CREATE TRIGGER fail_case BEFORE INSERT ON hub_case BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"
)


def set_failing_store(engine, failing: bool) -> None:
    """Make the database refuse every new case (a real failure of the real store, not a mock)."""
    with engine.begin() as conn:
        conn.execute(text(FAIL_TRIGGER if failing else "DROP TRIGGER fail_case"))


async def test_a_failed_store_shows_no_token_and_the_retry_is_durable(make_client):
    client = await make_client()
    form = await open_form(client)
    form.update(action="submit", text="Antrag auf Elterngeld", location="Kiel")
    set_failing_store(client.engine, True)
    resp = await post_form(client, form)
    html = await resp.text()
    assert resp.status == 503 and resp.headers["Retry-After"]
    assert 'id="case-token"' not in html and "/status/" not in html
    assert not cases(client.engine)

    set_failing_store(client.engine, False)
    resp = await post_form(client, form)  # the citizen sends the same form again
    html = await resp.text()
    assert resp.status == 200, html
    token = case_token_of(html)
    # Durable: another connection (as another hub process would open) sees the case.
    fresh = make_engine(client.url)
    try:
        with fresh.connect() as conn:
            assert conn.execute(select(case_t.c.token)).scalars().all() == [token]
    finally:
        fresh.dispose()


async def test_open311_answers_no_id_when_the_store_fails(make_client):
    client = await make_client()
    key = add_token(client.engine, "city-app", "open311")
    fields = {"api_key": key, "service_code": "sh-sperrmuell", "address_string": "Bad Segeberg"}
    set_failing_store(client.engine, True)
    resp = await client.post("/open311/v2/requests.json", data=fields)
    body = json.loads(await resp.text())
    assert resp.status == 503 and body[0]["code"] == 503 and "service_request_id" not in body[0]
    set_failing_store(client.engine, False)
    resp = await client.post("/open311/v2/requests.json", data=fields)
    request_id = json.loads(await resp.text())[0]["service_request_id"]
    fresh = make_engine(client.url)
    try:
        with fresh.connect() as conn:
            assert conn.execute(select(case_t.c.id)).scalars().all() == [int(request_id)]
    finally:
        fresh.dispose()


# -- readable tokens, the legal links, and what the status page promises (issue 15) --------------------------


async def test_a_token_typed_in_lower_case_without_hyphens_opens_the_case(make_client):
    client = await make_client()
    token = await submit(client, text="Reisepass beantragen", location="Norderstedt")
    typed = token.replace("-", "").lower()
    resp = await client.get(f"/status/{typed}", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == f"/status/{token}"
    resp = await client.get(f"/status/{typed}")
    assert resp.status == 200 and token in await resp.text()
    # a follow-up posted to the typed address joins the same case, not a new one
    page = await client.get(f"/status/{token}")
    html = await page.text()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert csrf, "the status page carries a form token"
    before = len(cases(client.engine))
    resp = await client.post(f"/status/{typed}", data={"csrf_token": csrf.group(1),
                                                       "text": "Noch eine Frage zum Pass"}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    assert len(cases(client.engine)) == before


async def test_an_old_token_still_opens_its_case(make_client):
    client = await make_client()
    token = await submit(client, text="Wohngeld beantragen", location="Norderstedt")
    old = "aB3_x-Yz09QWerTy"
    with client.engine.begin() as conn:
        conn.execute(case_t.update().where(case_t.c.token == token).values(token=old))
    resp = await client.get(f"/status/{old}")
    assert resp.status == 200 and old in await resp.text()
    assert (await client.get(f"/status/{old.swapcase()}")).status == 404


async def test_the_status_page_names_service_office_and_the_answer_due(make_client):
    from zoneinfo import ZoneInfo

    client = await make_client()
    token = await submit(client, text="Ich möchte einen Reisepass beantragen", location="Norderstedt")
    await asyncio.to_thread(client.service.routing.run_until_empty)
    row = next(c for c in cases(client.engine) if c["token"] == token)
    assert row["service_name"] and row["authority_name"] and row["first_response_due"]
    html = await (await client.get(f"/status/{token}")).text()
    assert re.search(r'id="status-service">[^<]*Reisepass', html)
    assert f'id="status-office">{row["authority_name"]}<'.replace("&", "&amp;") in html
    due = row["first_response_due"].astimezone(ZoneInfo("Europe/Berlin")).strftime("%d.%m.%Y, %H:%M Uhr")
    assert f'id="status-due">{due}<' in html
    assert "Antwort erwartet bis" in html


async def test_no_due_time_while_the_hub_waits_for_the_citizen(make_client):
    client = await make_client()
    token = await submit(client, text="Reisepass beantragen", location="Norderstedt")
    await asyncio.to_thread(client.service.routing.run_until_empty)
    with client.engine.begin() as conn:
        conn.execute(case_t.update().where(case_t.c.token == token).values(state="waiting_for_citizen"))
    html = await (await client.get(f"/status/{token}")).text()
    assert 'id="status-due"' not in html


async def test_the_footer_links_the_legal_pages_from_the_config(make_client):
    client = await make_client(imprint_url="https://www.example.de/impressum", privacy_url="/datenschutz",
                               accessibility_url="https://www.example.de/barrierefreiheit")
    for path in ("/", "/status/nonexistenttoken00"):
        html = await (await client.get(path)).text()
        assert '<a href="https://www.example.de/impressum">Impressum</a>' in html, path
        assert '<a href="/datenschutz">Datenschutz</a>' in html
        assert '<a href="https://www.example.de/barrierefreiheit">Barrierefreiheit</a>' in html


def test_legal_links_must_be_web_addresses():
    import pytest

    from channels.web.settings import WebSettings

    for bad in ("javascript:alert(1)", "//evil.example/x", "ftp://x"):
        with pytest.raises(ValueError):
            WebSettings(imprint_url=bad)
