"""Console pages as the agent gets them: CSRF in every form, the full answer card, the card by e-mail into a
real SMTP sink, the thread of a case in both directions with HTML mail as sanitised text."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from console_support import (
    KREIS,
    SmtpSink,
    hub_engine,
    login,
    make_app,
    make_case,
    new_user,
    settings_for,
)
from sqlalchemy import select

from hub.queue.cases import message_t

JSON = {"Accept": "application/json"}
_FORM = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.S | re.I)


@pytest.fixture
def smtp_sink():
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
async def env(tmp_path, demo_db_url, kb, aiohttp_client, smtp_sink):
    engine, url = hub_engine(tmp_path, demo_db_url)
    app, service = make_app(settings_for(tmp_path, url, smtp_port=smtp_sink.port), engine, kb)
    client = await aiohttp_client(app)
    new_user(engine, "chefin", "supervisor", authorities=[KREIS[0]])
    csrf = await login(client, "chefin")
    return SimpleNamespace(client=client, engine=engine, service=service, kb=kb, csrf=csrf, sink=smtp_sink,
                           headers=JSON | {"X-CSRF-Token": csrf})


async def test_every_form_that_posts_carries_the_sessions_csrf_token(env):
    case_id = make_case(env.engine, text="Frage", channel="email", authority=KREIS, email="a@example.org")
    call = await (await env.client.post("/console/calls", json={}, headers=env.headers)).json()
    pages = ["/console/", f"/console/?call={call['call_id']}&q=Reisepass&place=Todesfelde", "/console/queue",
             f"/console/cases/{case_id}", "/console/dashboard"]
    posting = 0
    for path in pages:
        resp = await env.client.get(path)
        assert resp.status == 200, path
        html = await resp.text()
        for attrs, body in _FORM.findall(html):
            method = re.search(r'method="([^"]+)"', attrs)
            if not method or method.group(1).lower() != "post":
                continue
            posting += 1
            token = re.search(r'<input type="hidden" name="csrf_token" value="([^"]*)">', body)
            assert token and token.group(1) == env.csrf, (path, attrs)
    # log-out (every page), call start/first-contact/forward/send, reply/forward/reroute/close.
    assert posting >= 5 + 4 + 4, posting


async def test_the_answer_card_has_everything_the_agent_reads_out(env):
    html = await (await env.client.get("/console/", params={"q": "Führungszeugnis", "place": "Todesfelde"})).text()
    card = html.split('id="card"', 1)[1].split("</article>", 1)[0]
    service = env.kb.services["sh-fuehrungszeugnis"]
    assert service.online_url == "https://www.fuehrungszeugnis.bund.de"
    assert f'href="{service.online_url}"' in card and 'class="online"' in card
    assert service.name in card and service.short_text in card
    assert re.search(r'<p class="hours">\s*Mo \d\d:\d\d', card), "opening hours"
    assert re.search(r'data-open="(yes|no)"', card), "open now or not"
    assert 'class="authority-name"' in card and 'href="tel:' in card and 'href="mailto:' in card


async def test_card_sent_to_the_caller_by_email_arrives_in_the_smtp_sink(env):
    call_id = (await (await env.client.post("/console/calls", json={}, headers=env.headers)).json())["call_id"]
    resp = await env.client.post(f"/console/calls/{call_id}/send", headers=env.headers, json={
        "service_id": "sh-reisepass", "place": "Todesfelde", "channel": "email", "to": "Anrufer@Example.org"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    with env.engine.connect() as conn:
        msg = conn.execute(select(message_t).where(message_t.c.id == body["message_id"])).mappings().one()
    assert msg["direction"] == "out" and msg["channel"] == "email" and msg["recipient"] == "anrufer@example.org"
    await env.service.dispatcher.run_until_empty()
    mail = env.sink.received("anrufer@example.org")
    assert len(mail) == 1 and "Reisepass" in mail[0]["Subject"]
    text = mail[0].get_content()
    assert "Amt Leezen" in text and "Öffnungszeiten" in text
    # A bad address is refused and nothing is queued.
    bad = await env.client.post(f"/console/calls/{call_id}/send", headers=env.headers, json={
        "service_id": "sh-reisepass", "place": "Todesfelde", "channel": "email", "to": "a@b@c"})
    assert bad.status == 422
    with env.engine.connect() as conn:
        assert conn.execute(select(message_t.c.id).where(message_t.c.direction == "out")).all() == [
            (body["message_id"],)]


async def test_case_view_shows_the_thread_both_ways_and_html_mail_as_text(env):
    html_mail = ("<html><body><p>Guten Tag,</p><script>alert(1)</script><p>mein <b>Pass</b> ist weg."
                 "</p><img src=x onerror=alert(2)></body></html>")
    case_id = make_case(env.engine, text=html_mail, channel="email", authority=KREIS, email="b@example.org")
    resp = await env.client.post(f"/console/cases/{case_id}/reply", headers=env.headers,
                                 json={"text": "Bitte <kommen> Sie vorbei."})
    assert resp.status == 201
    await env.service.dispatcher.run_until_empty()
    page = await (await env.client.get(f"/console/cases/{case_id}")).text()
    thread = page.split('id="thread"', 1)[1].split("</div>\n\n", 1)[0]
    incoming = thread.split('class="msg in"', 1)[1].split("</article>", 1)[0]
    outgoing = thread.split('class="msg out"', 1)[1].split("</article>", 1)[0]
    assert "Guten Tag," in incoming and "Pass" in incoming and "ist weg." in incoming
    assert "&lt;" not in incoming and "<b>" not in incoming and "alert" not in incoming, "sanitised text"
    assert "Bitte &lt;kommen&gt; Sie vorbei." in outgoing and "b@example.org" in outgoing
    data = await (await env.client.get(f"/console/api/cases/{case_id}")).json()
    assert [m["direction"] for m in data["messages"]] == ["in", "out"]
    assert "<" not in data["messages"][0]["text"]


async def test_the_card_lists_the_other_locations_of_the_same_service(tmp_path, demo_db_url, aiohttp_client):
    from knowledge.base import KnowledgeBase
    from knowledge.models import Authority, Responsibility

    engine, url = hub_engine(tmp_path, demo_db_url)
    kb = KnowledgeBase.load(engine)  # its own: the test registers a second location
    route = kb.route("Führungszeugnis", "Todesfelde")
    resp = kb.responsible_for(route.service, kb.regions.resolve("Todesfelde").match)
    kb.apply_authority(Authority(id="zweitstelle", name="Bürgerbüro <Nord> & Süd", region_ars=resp.region_ars,
                                 street="Hauptstraße 1", phone="04551 1234"))
    kb.apply_responsibility(Responsibility(service_id=None if resp.via == "level" else route.service.id,
                                           level=resp.level if resp.via == "level" else None,
                                           region_ars=resp.region_ars, authority_id="zweitstelle"))
    app, _service = make_app(settings_for(tmp_path, url), engine, kb)
    client = await aiohttp_client(app)
    new_user(engine, "chefin", "supervisor", authorities=[KREIS[0]])
    await login(client, "chefin")
    html = await (await client.get("/console/", params={"q": "Führungszeugnis", "place": "Todesfelde"})).text()
    card = html.split('id="card"', 1)[1].split("</article>", 1)[0]
    # The office with the most registrations stays the answer; the new location is listed, escaped.
    assert f'data-authority-id="{resp.authority_id}"' in card
    assert "Auch an 1 weiteren Standorten" in card
    assert "Bürgerbüro &lt;Nord&gt; &amp; Süd, Hauptstraße 1 · Tel. 04551 1234" in card and "<Nord>" not in card
    body = await (await client.get("/console/api/lookup", params={"q": "Führungszeugnis", "location": "Todesfelde"})).json()
    top = body["results"][0]
    assert top["other_locations_total"] == 1 and top["other_locations"][0]["id"] == "zweitstelle"
