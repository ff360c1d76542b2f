"""The citizen form and status page through the aiohttp test client: CSRF, honeypot, rate limit, upload
limits and types, escaping, suggestions, and that a submission is stored before its token is shown."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
from sqlalchemy import select
from web_support import (
    MARKUP,
    cases,
    hidden,
    open_form,
    png,
    post_form,
    service_with_markup,
)

from channels.web.form import HONEYPOT
from channels.web.i18n import STRINGS
from channels.web.settings import WebSettings
from hub.http.csrf import COOKIE, CsrfProtect
from hub.http.ratelimit import RateLimiter
from hub.http.tokens import add_token
from hub.queue.cases import attachment_t, message_t

TEMPLATES = Path(__file__).resolve().parents[3] / "channels" / "web" / "templates" / "web"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture()
async def client(make_client):
    return await make_client()


# -- the page ------------------------------------------------------------------------------------------------


async def test_form_is_german_by_default_and_english_on_request(client):
    resp = await client.get("/")
    html = await resp.text()
    assert resp.status == 200
    assert '<html lang="de">' in html and "Ihr Anliegen" in html
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert COOKIE in resp.cookies and resp.cookies[COOKIE]["httponly"]
    for field in ("text", "location", "name", "email", "phone", "attachments", "reply-web", "reply-email"):
        assert f'<label for="{field}">' in html, field
        assert f'id="{field}"' in html
    assert 'tabindex="-1"' in html.split('class="hp"')[1][:300], "the honeypot must be out of the tab order"
    assert "<script>" not in html and "style=" not in html, "no inline script or style (CSP)"

    resp = await client.get("/?lang=en")
    html = await resp.text()
    assert '<html lang="en">' in html and "Your request" in html
    assert resp.cookies["chub_lang"].value == "en"
    html = await (await client.get("/")).text()  # the cookie keeps the choice
    assert '<html lang="en">' in html


def test_every_text_exists_in_german_and_english():
    assert set(STRINGS["de"]) == set(STRINGS["en"])
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r't\("([a-z_.]+)"', template.read_text(encoding="utf-8")))
    used |= set(
        re.findall(
            r'"((?:form|error|page|done|status|suggest|places)\.[a-z_.]+)"',
            (TEMPLATES.parents[1] / "form.py").read_text(encoding="utf-8"),
        )
    )
    missing = {k for k in used if k not in STRINGS["de"] and not k.endswith(".")}
    assert not missing
    for state in (
        "new",
        "routed",
        "needs_clarification",
        "waiting_for_citizen",
        "answered",
        "forwarded",
        "closed",
        "dead_letter",
    ):
        assert f"state.{state}" in STRINGS["de"] and f"state.{state}.text" in STRINGS["en"]


def test_web_settings_are_documented_and_checked():
    for name, field in WebSettings.model_fields.items():
        assert field.description, name
    with pytest.raises(ValueError):
        WebSettings(csrf_secret="short")
    with pytest.raises(ValueError):
        WebSettings(allowed_attachment_types=["text/html"])
    with pytest.raises(ValueError):
        WebSettings(public_base_url="service.example.de")


# -- submit --------------------------------------------------------------------------------------------------


async def test_submit_stores_the_request_and_shows_token_and_status_link(client):
    fields = await open_form(client)
    fields.update(
        text="Ich möchte ein Wunschkennzeichen reservieren.",
        location="Norderstedt",
        name="Erika Mustermann",
        email="Erika@Example.org",
        phone="",
        reply="email",
        action="submit",
    )
    resp = await post_form(client, fields, files=[("foto.png", png(2000), "image/png")])
    html = await resp.text()
    assert resp.status == 200, html
    token = re.search(r'id="case-token">([0-9A-Z-]{19})<', html).group(1)
    assert f'href="/status/{token}"' in html
    # The language switch of the confirmation leads to the status page, so the token is not lost.
    assert f'class="lang-switch"><a href="/status/{token}?lang=en"' in html
    assert f"http://127.0.0.1:{client.port}/status/{token}" in html
    assert "per E-Mail" in html  # the wish for the answer channel is acknowledged
    # Committed before the answer: the case is there as soon as the page is.
    [case] = cases(client.engine)
    assert case["token"] == token and case["channel"] == "web" and case["state"] == "new"
    assert case["contact_email"] == "erika@example.org" and case["contact_name"] == "Erika Mustermann"
    assert case["location"] == "Norderstedt"
    with client.engine.connect() as conn:
        msg = conn.execute(select(message_t).where(message_t.c.case_id == case["id"],
                                               message_t.c.direction == "in")).mappings().one()
        att = conn.execute(select(attachment_t)).mappings().one()
    assert msg["text"] == "Ich möchte ein Wunschkennzeichen reservieren."
    assert msg["external_id"].startswith("web:" + fields["submission"])
    assert "Antwort gewünscht per E-Mail" in msg["subject"]
    assert (att["filename"], att["content_type"]) == ("foto.png", "image/png")
    resp = await client.get(f"/status/{token}")
    page = await resp.text()
    assert resp.status == 200 and "Eingegangen" in page
    assert resp.headers["Cache-Control"] == "no-store" and resp.headers["Referrer-Policy"] == "no-referrer"


async def test_sending_the_same_form_twice_gives_the_same_case(client):
    fields = await open_form(client)
    fields.update(text="Reisepass beantragen", location="Bad Segeberg", action="submit")
    first = await (await post_form(client, fields)).text()
    again = await (await post_form(client, fields)).text()
    token = re.search(r'id="case-token">([^<]+)<', first).group(1)
    assert re.search(r'id="case-token">([^<]+)<', again).group(1) == token
    assert "bereits erhalten" in again and "bereits erhalten" not in first
    fields["text"] = "Reisepass beantragen, dringend"  # changed after going back: a new request
    changed = await (await post_form(client, fields)).text()
    assert re.search(r'id="case-token">([^<]+)<', changed).group(1) != token
    assert len(cases(client.engine)) == 2


async def test_validation_errors_keep_the_input_and_point_at_the_fields(client):
    fields = await open_form(client)
    fields.update(
        text="   ", location="Kiel", email="not-an-address", phone="12", reply="phone", action="submit"
    )
    resp = await post_form(client, fields)
    html = await resp.text()
    assert resp.status == 400
    assert 'class="error-summary"' in html
    for field in ("text", "email", "phone"):
        assert f'<a href="#{field}">' in html
        assert f'aria-describedby="{field}-error"' in html or f"{field}-hint {field}-error" in html
    assert 'value="not-an-address"' in html and 'value="Kiel"' in html
    assert not cases(client.engine)
    fields.update(text="Frage", email="", phone="", reply="email")
    html = await (await post_form(client, fields)).text()
    assert STRINGS["de"]["error.email.needed"] in html
    fields.update(reply="web", name="Erika\x07Bell")  # a control character never comes from a keyboard
    resp = await post_form(client, fields)
    assert resp.status == 400 and STRINGS["de"]["error.name.invalid"] in await resp.text()
    assert not cases(client.engine)


async def test_queue_down_answers_503_and_stores_nothing(client):
    fields = await open_form(client)
    client.service.writer.stop()
    fields.update(text="Führerschein umtauschen", action="submit")
    resp = await post_form(client, fields)
    assert resp.status == 503 and resp.headers["Retry-After"]
    assert not cases(client.engine)


# -- CSRF, honeypot, rate limit ------------------------------------------------------------------------------


async def test_csrf_rejects_missing_foreign_and_expired_tokens(client, make_client):
    fields = await open_form(client)
    fields.update(text="Gewerbe anmelden", action="submit")
    missing = {k: v for k, v in fields.items() if k != "csrf_token"}
    resp = await post_form(client, missing)
    assert resp.status == 403 and "Formular abgelaufen" in await resp.text()

    # A token of another browser (another cookie) does not fit this browser's cookie.
    other = await make_client()
    foreign = dict(fields, csrf_token=(await open_form(other))["csrf_token"])
    assert (await post_form(client, foreign)).status == 403

    assert (await post_form(client, dict(fields, csrf_token=fields["csrf_token"] + "0"))).status == 403
    resp = await post_form(client, fields, headers={"Origin": "https://evil.example"})
    assert resp.status == 403
    assert not cases(client.engine)
    metrics = await (await client.get("/metrics")).text()
    assert 'citizen_hub_http_rejected_total{status="403"} 4' in metrics
    assert (await post_form(client, fields)).status == 200
    assert len(cases(client.engine)) == 1


def test_csrf_token_is_bound_to_the_cookie_and_expires():
    now = [1_000_000.0]
    csrf = CsrfProtect(b"k" * 32, max_age=3600, clock=lambda: now[0])

    class Req:
        def __init__(self, cookie):
            self.cookies = {COOKIE: cookie}
            self.headers = {}
            self.host = "hub.example"

    cookie = "c" * 43
    token = csrf.token(cookie)
    assert csrf.check(Req(cookie), token)
    assert not csrf.check(Req("d" * 43), token)
    assert not csrf.check(Req(cookie), token.replace(".", ".0", 1))
    now[0] += 3601
    assert not csrf.check(Req(cookie), token)
    with pytest.raises(ValueError):
        CsrfProtect(b"short")


async def test_honeypot_filled_stores_nothing(client):
    fields = await open_form(client)
    fields.update({"text": "Sperrmüll anmelden", "action": "submit", HONEYPOT: "ACME Bot GmbH"})
    resp = await post_form(client, fields)
    assert resp.status == 400
    assert STRINGS["de"]["error.honeypot"] in await resp.text()
    assert not cases(client.engine)


async def test_rate_limit_answers_429_per_client(make_client):
    client = await make_client(write_burst=2, write_rate_per_minute=0.01, trust_forwarded_for=True)
    fields = await open_form(client)
    fields.update(text="Hund anmelden", action="suggest")
    me = {"X-Forwarded-For": "203.0.113.7"}
    assert (await post_form(client, fields, headers=me)).status == 200
    assert (await post_form(client, fields, headers=me)).status == 200
    resp = await post_form(client, fields, headers=me)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert "Zu viele Anfragen" in await resp.text()
    # Another client has its own bucket.
    assert (await post_form(client, fields, headers={"X-Forwarded-For": "198.51.100.1"})).status == 200


def test_token_bucket_refills_and_forgets_old_clients():
    now = [0.0]
    limiter = RateLimiter(60, 2, max_clients=2, clock=lambda: now[0])  # one token per second
    assert limiter.take("a")[0] and limiter.take("a")[0]
    allowed, retry = limiter.take("a")
    assert not allowed and 0 < retry <= 1
    now[0] += 1.0
    assert limiter.take("a")[0]
    limiter.take("b")
    limiter.take("c")
    assert len(limiter) == 2  # the least recently seen client was dropped


# -- uploads -------------------------------------------------------------------------------------------------


async def test_oversized_upload_gets_413_and_stores_nothing(client):
    fields = await open_form(client)
    fields.update(text="Bauantrag mit Plänen", action="submit")
    resp = await post_form(client, fields, files=[("plan.png", png(100 * 1024), "image/png")])
    assert resp.status == 413
    assert "Anhang zu groß" in await resp.text()
    too_many = [(f"{i}.png", png(100), "image/png") for i in range(4)]  # max_attachments is 3
    assert (await post_form(client, fields, files=too_many)).status == 413
    assert not cases(client.engine)


async def test_attachments_may_be_larger_than_the_server_body_limit(make_client):
    # The form streams files with its own limit; server.max_body_bytes (1 MiB) applies to other bodies.
    client = await make_client(max_upload_bytes=3 * 1024 * 1024)
    fields = await open_form(client)
    fields.update(text="Scan meiner Unterlagen", action="submit")
    resp = await post_form(client, fields, files=[("scan.png", png(1536 * 1024), "image/png")])
    assert resp.status == 200
    assert len(cases(client.engine)) == 1


async def test_wrong_file_types_are_refused_by_content(client):
    fields = await open_form(client)
    fields.update(text="Bitte prüfen", action="submit")
    disguised = ("<img src=x onerror=alert(1)>.png", b"<html><script>alert(1)</script></html>", "image/png")
    resp = await post_form(client, fields, files=[disguised])
    html = await resp.text()
    assert resp.status == 415
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in html and "<img src=x" not in html
    assert 'value="Bitte prüfen"' not in html  # textarea content, not an attribute
    assert ">Bitte prüfen</textarea>" in html
    exe = ("tool.pdf", b"MZ\x90\x00" + b"\x00" * 100, "application/pdf")
    assert (await post_form(client, fields, files=[exe])).status == 415
    gif = ("anim.gif", b"GIF89a\x01\x00\x01\x00" + b"\x00" * 20, "image/gif")  # a real GIF, not allowed here
    assert (await post_form(client, fields, files=[gif])).status == 415
    assert not cases(client.engine)
    pdf = (
        "antrag.pdf",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n%%EOF\n",
        "application/octet-stream",
    )
    assert (await post_form(client, fields, files=[pdf])).status == 200
    with client.engine.connect() as conn:
        assert conn.execute(select(attachment_t.c.content_type)).scalar_one() == "application/pdf"


# -- escaping ------------------------------------------------------------------------------------------------


async def test_script_in_any_field_is_shown_inert(client):
    fields = await open_form(client)
    fields.update(text=XSS, location=XSS, name=XSS, email='a"><script>alert(2)</script>', action="submit")
    for action in ("suggest", "submit"):  # suggestion page and error page echo the input
        resp = await post_form(client, dict(fields, action=action))
        html = await resp.text()
        assert "<script>alert" not in html and "<img src=x" not in html and '"><script>' not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert not cases(client.engine)


async def test_catalogue_texts_with_markup_are_shown_inert(client, kb):
    fields = await open_form(client)
    with service_with_markup(kb):
        html = await (await post_form(client, dict(fields, text="Zauberstab", action="suggest"))).text()
        data = await (
            await client.post(
                "/web/suggest", json={"text": "Zauberstab"}, headers={"X-CSRF-Token": fields["csrf_token"]}
            )
        ).json()
    assert "Zauberstab &lt;img src=x onerror=window.__xss=1&gt; beantragen" in html
    assert MARKUP not in html
    assert data["services"][0]["name"] == f"Zauberstab {MARKUP} beantragen"  # data; web.js inserts it as text


async def test_answer_with_markup_is_escaped_on_the_status_page(client, monkeypatch):
    fields = await open_form(client)
    fields.update(
        text="Ich brauche einen neuen Reisepass",
        location="Todesfelde",
        email="e@example.org",
        action="submit",
    )
    html = await (await post_form(client, fields)).text()
    token = re.search(r'id="case-token">([^<]+)<', html).group(1)
    await asyncio.to_thread(client.service.routing.run_until_empty)
    [case] = cases(client.engine)
    agent = add_token(client.engine, "agent-a", "agent", all_authorities=True)
    resp = await client.post(
        f"/api/cases/{case['id']}/reply",
        json={"text": f"Bitte kommen Sie vorbei {XSS}"},
        headers={"Authorization": f"Bearer {agent}"},
    )
    assert resp.status == 201, await resp.text()
    page = await (await client.get(f"/status/{token}")).text()
    assert "Beantwortet" in page and "Bitte kommen Sie vorbei" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    # Only state and answer: neither the request text nor the contact are reachable through the token.
    assert "neuen Reisepass" not in page and "e@example.org" not in page


# -- suggestions ---------------------------------------------------------------------------------------------


async def test_suggestions_without_javascript_show_service_office_and_places(client):
    fields = await open_form(client)
    fields.update(text="Wunschkennzeichen", location="Norderstedt", action="suggest")
    resp = await post_form(client, fields)
    html = await resp.text()
    assert resp.status == 200
    assert "Wunschkennzeichen reservieren" in html
    assert "Kreis Segeberg – Kreisverwaltung" in html and "Hamburger Straße 30" in html
    assert "Beispieldaten" in html  # demo contact data is marked as such
    html = await (await post_form(client, dict(fields, location=""))).text()
    assert STRINGS["de"]["suggest.need_place"] in html  # the office depends on the place: ask for it

    fields.update(text="Reisepass", location="Norderst")
    html = await (await post_form(client, fields)).text()
    assert 'name="pick_location"' in html and "Norderstedt (Kreis Segeberg)" in html
    value = re.search(
        r'name="pick_location" value="([^"]+)"[^>]*>Norderstedt \(Kreis Segeberg\)', html
    ).group(1)
    html = await (await post_form(client, dict(fields, pick_location=value))).text()
    assert f'id="location" name="location" type="text" value="{value}"' in html
    assert "Stadt Norderstedt – Rathaus" in html  # the passport office of the picked town
    assert not cases(client.engine)  # suggestions store nothing


async def test_suggestion_endpoint_answers_json_with_a_form_token_only(client):
    fields = await open_form(client)
    body = {"text": "Sperrmüll abholen", "location": "Bad Segeberg", "lang": "en"}
    resp = await client.post("/web/suggest", json=body, headers={"X-CSRF-Token": fields["csrf_token"]})
    data = await resp.json()
    assert resp.status == 200
    assert data["services"][0]["name"] == "Sperrmüll anmelden"
    assert data["services"][0]["authority"]["name"]
    assert data["place"]["label"].startswith("Bad Segeberg")
    assert data["labels"]["responsible"] == "Responsible office"
    assert (await client.post("/web/suggest", json=body)).status == 403
    assert (await client.get("/web/suggest")).status == 405


# -- status page ---------------------------------------------------------------------------------------------


async def test_status_page_shows_nothing_for_unknown_or_malformed_tokens(client):
    for token in ("AAAAAAAAAAAAAAAA", "..%2F..%2Fetc%2Fpasswd", "x" * 200, "%3Cscript%3E", "short"):
        resp = await client.get(f"/status/{token}")
        assert resp.status == 404
        assert "Vorgang nicht gefunden" in await resp.text()


async def test_a_message_from_the_status_page_joins_the_case(client):
    fields = await open_form(client)
    fields.update(text="Frage zur Grundsteuer", location="Norderstedt", action="submit")
    html = await (await post_form(client, fields)).text()
    token = re.search(r'id="case-token">([^<]+)<', html).group(1)
    page = await (await client.get(f"/status/{token}")).text()
    reply = {
        "csrf_token": hidden(page, "csrf_token"),
        "submission": hidden(page, "submission"),
        "lang": "de",
        "text": "Hier noch meine Steuernummer.",
    }
    resp = await client.post(f"/status/{token}", data=reply, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == f"/status/{token}?sent=1"
    [case] = cases(client.engine)
    with client.engine.connect() as conn:
        texts = (
            conn.execute(select(message_t.c.text).where(message_t.c.case_id == case["id"])).scalars().all()
        )
    assert texts == ["Frage zur Grundsteuer", "Hier noch meine Steuernummer."]
    assert (await client.post(f"/status/{token}", data={**reply, "csrf_token": "1.x"})).status == 403
    page = await (await client.get(f"/status/{token}?sent=1")).text()
    assert "Ihre Nachricht ist eingegangen" in page


async def test_nothing_personal_is_logged(client, caplog):
    caplog.set_level(logging.DEBUG)
    fields = await open_form(client)
    secret_text = "Meine Steuer-ID ist 12345678901"
    fields.update(
        text=secret_text,
        location="Wahlstedt",
        name="Max Geheim",
        email="max@geheim.example",
        phone="04551 998877",
        reply="phone",
        action="submit",
    )
    assert (await post_form(client, fields)).status == 200
    # aiohttp's access log (client address, path) is configured by `citizen-hub serve`, not by the channel.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    for value in ("12345678901", "Max Geheim", "max@geheim.example", "998877", "Wahlstedt", "127.0.0.1"):
        assert value not in logged
    assert "stored in case" in logged
