"""Issue 15, the agent's console: find a case or a caller, forward/re-route pickers with the server's own
checks, reply templates and "Karte einfügen", only configured channels, German messages.

In-process against the real app (hub.http.app.create_app) on a migrated copy of the demo database, with the
real e-mail adapter to an aiosmtpd sink.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from console_support import (
    KREIS,
    SOEST,
    SmtpSink,
    hub_engine,
    login,
    make_app,
    make_case,
    new_user,
    set_case,
    settings_for,
)
from pydantic import ValidationError
from sqlalchemy import select

from hub.console import search
from hub.console.answers import configured_channels, reply_templates
from hub.console.settings import ConsoleSettings
from hub.queue.cases import CaseState, case_t, message_t
from hub.queue.outbox import PickupAdapter

JSON = {"Accept": "application/json"}
LEEZEN = ("amt-010605053", "Amt Leezen")


@pytest.fixture
def smtp_sink():
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def env_factory(tmp_path, demo_db_url, kb, aiohttp_client, smtp_sink):
    made = []

    async def make(adapters=None, user=("meier", [KREIS[0]])):
        here = tmp_path / f"hub{len(made)}"
        here.mkdir()
        made.append(here)
        engine, url = hub_engine(here, demo_db_url)
        settings = settings_for(here, url, smtp_port=smtp_sink.port)
        app, service = make_app(settings, engine, kb, adapters=adapters)
        client = await aiohttp_client(app)
        new_user(engine, user[0], authorities=user[1])
        csrf = await login(client, user[0])
        return SimpleNamespace(client=client, engine=engine, app=app, service=service, settings=settings, kb=kb,
                               csrf=csrf, headers=JSON | {"X-CSRF-Token": csrf}, sink=smtp_sink)

    return make


@pytest.fixture
async def env(env_factory):
    return await env_factory()


def token_of(engine, case_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(case_t.c.token).where(case_t.c.id == case_id)).scalar_one()


def _ago(days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def find(env, q: str) -> dict:
    resp = await env.client.get("/console/api/find", params={"q": q}, headers=JSON)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def ids(items) -> list[int]:
    return [c["id"] for c in items]


# -- what a typed text stands for ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, phone", [
    ("0171 2345678", "+491712345678"), ("+49 171 2345678", "+491712345678"), ("0049 171 2345678", "+491712345678"),
    ("(04551) 123-45", "+49455112345"), ("04551/12345", "+49455112345"), ("+49 (0)4551 12345", "+49455112345"),
    ("0049 (0) 171 2345678", "+491712345678"), ("0171-234 56 78", "+491712345678"),
])
def test_phone_numbers_in_usual_german_forms(raw, phone):
    q = search.parse(raw)
    assert q.phone == phone and "phone" in q.kinds
    # The queue's own rule (intake stores, threading compares this form): one rule.
    from hub.queue.requests import normalise_phone

    assert normalise_phone(raw) == phone


def test_parse_tokens_numbers_and_addresses():
    assert search.parse("k7qm 4xtr 9bq2 h3zp").tokens == ("K7QM-4XTR-9BQ2-H3ZP",)
    assert search.parse("K7QM4XTR9BQ2H3ZP").tokens[0] == "K7QM-4XTR-9BQ2-H3ZP"
    assert search.parse("#123").case_id == 123 and search.parse("#123").kinds == ["id"]
    assert search.parse("Buergerin@Example.ORG").email == "buergerin@example.org"
    assert search.parse("Reisepass").empty and search.parse("").empty
    assert search.parse("kein@").empty


# -- find in the console -------------------------------------------------------------------------------------------


async def test_find_by_token_with_and_without_hyphens_and_lower_case(env):
    case_id = make_case(env.engine, text="Wann kommt mein Ausweis?", authority=KREIS, email="t@example.org")
    token = token_of(env.engine, case_id)
    for typed in (token, token.replace("-", ""), token.lower(), " ".join(token.split("-"))):
        body = await find(env, typed)
        assert ids(body["matches"]) == [case_id], typed
        assert body["matches"][0]["reason"] == "Vorgangsnummer"
        assert "token" not in body["matches"][0], "the status page key is not handed around"


async def test_an_old_token_is_still_found(env):
    case_id = make_case(env.engine, text="Alte Vorgangsnummer", authority=KREIS)
    set_case(env.engine, case_id, token="aB3_xY9-kLm2Qr7z")
    assert ids((await find(env, "aB3_xY9-kLm2Qr7z"))["matches"]) == [case_id]
    assert (await find(env, "AB3_XY9-KLM2QR7Z"))["matches"] == [], "old tokens stay case-sensitive"


async def test_find_by_case_number(env):
    case_id = make_case(env.engine, text="Fall nach Nummer", authority=KREIS)
    assert ids((await find(env, f"#{case_id}"))["matches"]) == [case_id]
    assert ids((await find(env, str(case_id)))["matches"]) == [case_id]


@pytest.mark.parametrize("typed", ["0171 2345678", "+49 171 2345678", "0171/234 56 78", "+491712345678"])
async def test_find_by_phone_in_any_form_newest_first(env, typed):
    old = make_case(env.engine, text="Erster Anruf", channel="sms", authority=KREIS, phone="+491712345678",
                    received_at=_ago(30))
    new = make_case(env.engine, text="Zweiter Anruf", channel="sms", authority=KREIS, phone="0171 2345678",
                    received_at=_ago(1))
    make_case(env.engine, text="Jemand anderes", channel="sms", authority=KREIS, phone="+491719999999")
    body = await find(env, typed)
    assert ids(body["matches"]) == [new, old]
    assert body["kinds"] == ["phone"]


async def test_find_by_email_case_insensitively_with_the_callers_earlier_cases(env):
    first = make_case(env.engine, text="Damals per Telefon", channel="phone", authority=KREIS,
                      phone="+4945511234", email="anna@example.org", received_at=_ago(60))
    by_phone = make_case(env.engine, text="Per SMS ohne E-Mail", channel="sms", authority=KREIS,
                         phone="+4945511234", received_at=_ago(20))
    latest = make_case(env.engine, text="Neu per Mail", channel="email", authority=KREIS,
                       email="Anna@Example.org", received_at=_ago(2))
    body = await find(env, "ANNA@example.ORG")
    assert ids(body["matches"]) == [latest, first]
    assert ids(body["earlier"]) == [by_phone], "a case sharing the phone number of a match is the caller's too"
    assert body["earlier"][0]["reason"] == "gleiche Telefonnummer"
    # From the token of one case: the caller's other cases, newest first.
    body = await find(env, token_of(env.engine, first))
    assert ids(body["matches"]) == [first] and ids(body["earlier"]) == [latest, by_phone]


async def test_an_agent_of_another_authority_sees_nothing_and_learns_nothing(env_factory):
    env = await env_factory(user=("soest", [SOEST[0]]))
    seg = make_case(env.engine, text="Segeberger Fall", authority=KREIS, phone="+4917155555", email="x@example.org")
    mine = make_case(env.engine, text="Soester Fall", authority=SOEST, phone="+4917155555", received_at=_ago(5))
    for typed in (token_of(env.engine, seg), f"#{seg}", "x@example.org"):
        body = await find(env, typed)
        assert body["matches"] == [] and body["earlier"] == [], typed
    body = await find(env, "+49 171 55555")
    assert ids(body["matches"]) == [mine] and body["earlier"] == []
    # The Soest case's phone number must not pull in the Segeberg case (nor its e-mail address).
    body = await find(env, token_of(env.engine, mine))
    assert ids(body["matches"]) == [mine] and body["earlier"] == []
    page = await (await env.client.get("/console/find", params={"q": "x@example.org"})).text()
    assert "Segeberger Fall" not in page and f"#{seg}<" not in page and "Kein Fall gefunden" in page


async def test_earlier_cases_outside_the_scope_are_not_shown(env):
    mine = make_case(env.engine, text="Mein Fall", authority=KREIS, email="b@example.org")
    make_case(env.engine, text="Fall in Soest", authority=SOEST, email="b@example.org")
    body = await find(env, f"#{mine}")
    assert ids(body["matches"]) == [mine] and body["earlier"] == []


async def test_the_find_page_escapes_citizen_text_and_links_the_cases(env):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)> Frage'
    case_id = make_case(env.engine, text=evil, channel="email", authority=KREIS, email="eve@example.org",
                        external_id="<eve@example.org>")
    set_case(env.engine, case_id, contact_name="<b>Eve</b>")
    resp = await env.client.get("/console/find", params={"q": "eve@example.org"})
    page = await resp.text()
    assert resp.status == 200
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>Eve</b>" not in page
    assert html.escape(evil, quote=False)[:30] in page.replace("&#34;", '"').replace("&quot;", '"')
    assert f'href="/console/cases/{case_id}"' in page
    # The header box on every page sends here.
    assert 'action="/console/find"' in await (await env.client.get("/console/queue")).text()


async def test_a_text_that_is_no_reference_says_so_in_german(env):
    page = await (await env.client.get("/console/find", params={"q": "Reisepass"})).text()
    assert "weder eine Vorgangsnummer" in page


# -- forward and re-route pickers --------------------------------------------------------------------------------


def _todesfelde_case(env, **kw) -> int:
    case_id = make_case(env.engine, text="Ich brauche einen neuen Reisepass", authority=KREIS,
                        email="p@example.org", **kw)
    set_case(env.engine, case_id, location="Todesfelde")
    return case_id


async def test_office_picker_offers_offices_valid_at_the_cases_place(env):
    case_id = _todesfelde_case(env)
    get = env.client.get
    body = await (await get(f"/console/api/cases/{case_id}/offices", params={"q": "Leezen"}, headers=JSON)).json()
    assert [o["id"] for o in body["offices"]] == [LEEZEN[0]]
    assert body["offices"][0]["address"]
    body = await (await get(f"/console/api/cases/{case_id}/offices", params={"q": "Soest"}, headers=JSON)).json()
    assert body["offices"] == [], "Kreis Soest is not valid at Todesfelde"
    body = await (await get(f"/console/api/cases/{case_id}/offices", params={"q": ""}, headers=JSON)).json()
    assert body["offices"][0]["id"] == KREIS[0] and LEEZEN[0] in [o["id"] for o in body["offices"]]
    # The typed words as a service: the office responsible for it at the place.
    body = await (await get(f"/console/api/cases/{case_id}/offices", params={"q": "Führerschein"},
                            headers=JSON)).json()
    assert KREIS[0] in [o["id"] for o in body["offices"]]


async def test_service_picker_uses_the_lookup_at_the_cases_place(env):
    case_id = _todesfelde_case(env)
    body = await (await env.client.get(f"/console/api/cases/{case_id}/services", params={"q": "Reisepass"},
                                       headers=JSON)).json()
    first = body["services"][0]
    assert first["id"] == "sh-reisepass" and first["authority"]["id"] == LEEZEN[0]


async def test_pickers_of_a_case_outside_the_scope_answer_404(env):
    other = make_case(env.engine, text="Soest", authority=SOEST)
    for kind in ("offices", "services"):
        resp = await env.client.get(f"/console/api/cases/{other}/{kind}", params={"q": "a"}, headers=JSON)
        assert resp.status == 404


async def test_forward_to_a_picked_office_and_refusals_in_german(env):
    case_id = _todesfelde_case(env)
    url = f"/console/cases/{case_id}/forward"
    resp = await env.client.post(url, headers=env.headers, json={"authority_id": "gibt-es-nicht", "note": "x"})
    assert resp.status == 422 and "Unbekannte Behörde" in (await resp.json())["error"]
    resp = await env.client.post(url, headers=env.headers, json={"authority_id": SOEST[0], "note": "x"})
    error = (await resp.json())["error"]
    assert resp.status == 422 and "nicht zuständig" in error and "Todesfelde" in error
    with env.engine.connect() as conn:
        assert conn.execute(select(case_t.c.state).where(case_t.c.id == case_id)).scalar() == CaseState.ROUTED
    resp = await env.client.post(url, headers=env.headers, json={"authority_id": LEEZEN[0], "note": "Bitte prüfen"})
    assert resp.status == 201, await resp.text()
    with env.engine.connect() as conn:
        out = conn.execute(select(message_t).where(message_t.c.case_id == case_id, message_t.c.kind == "forward")
                           ).mappings().one()
    assert out["recipient"] == env.kb.authorities[LEEZEN[0]].email


async def test_reroute_by_picked_service_takes_the_responsible_office(env):
    case_id = _todesfelde_case(env)
    url = f"/console/cases/{case_id}/reroute"
    resp = await env.client.post(url, headers=env.headers, json={"service_id": "gibt-es-nicht"})
    assert resp.status == 422 and "Unbekannte Leistung" in (await resp.json())["error"]
    resp = await env.client.post(url, headers=env.headers, json={"service_id": "sh-reisepass",
                                                                 "authority_id": SOEST[0]})
    assert resp.status == 422 and "nicht zuständig" in (await resp.json())["error"]
    resp = await env.client.post(url, headers=env.headers, json={"service_id": "sh-reisepass", "reason": "Pass"})
    assert resp.status == 201, await resp.text()
    with env.engine.connect() as conn:
        row = conn.execute(select(case_t).where(case_t.c.id == case_id)).mappings().one()
    assert row["service_id"] == "sh-reisepass" and row["authority_id"] == LEEZEN[0]


async def test_the_pickers_work_without_javascript(env):
    case_id = _todesfelde_case(env)
    page = await (await env.client.get(f"/console/cases/{case_id}", params={"fwd_q": "Leezen"})).text()
    forward = page.split('id="forward-form"', 1)[1].split("</form>", 1)[0]
    assert re.search(rf'type="radio" name="authority_id" value="{LEEZEN[0]}" checked', forward)
    assert 'id="fwd-find"' in page and 'form="fwd-find"' in forward
    assert "(ID)" not in page, "no field asks for an internal id"
    page = await (await env.client.get(f"/console/cases/{case_id}", params={"rr_q": "Reisepass"})).text()
    reroute = page.split('id="reroute-form"', 1)[1].split("</form>", 1)[0]
    assert 'name="service_id" value="sh-reisepass" checked' in reroute and "Amt Leezen" in reroute


# -- reply templates and the card ---------------------------------------------------------------------------------


def test_reply_templates_are_configured_with_german_defaults():
    titles = [t.partition(":")[0] for t in ConsoleSettings().reply_templates]
    assert {"Unterlagen mitbringen", "Termin vereinbaren", "Weitergeleitet"} <= set(titles)
    with pytest.raises(ValidationError):
        ConsoleSettings(reply_templates=["ohne Doppelpunkt"])
    filled = reply_templates(["Termin: Bitte bei {behoerde} für {leistung}."],
                             {"service_name": "Reisepass", "authority_name": "Amt Leezen"})
    assert filled == [{"title": "Termin", "text": "Bitte bei Amt Leezen für Reisepass."}]


def test_reply_templates_from_the_environment_as_json():
    from hub.config import load_settings

    settings = load_settings(None, environ={
        "CITIZEN_HUB_CONSOLE__REPLY_TEMPLATES": '["Danke: Vielen Dank, wir melden uns.", "Gruß: Ihr Team, 115"]'})
    assert settings.console.reply_templates == ["Danke: Vielen Dank, wir melden uns.", "Gruß: Ihr Team, 115"]


async def test_templates_and_the_card_in_the_answer_box(env):
    case_id = _todesfelde_case(env, service=("sh-reisepass", "Reisepass beantragen"))
    page = await (await env.client.get(f"/console/cases/{case_id}")).text()
    assert "Unterlagen mitbringen</option>" in page and "Termin vereinbaren</option>" in page
    assert f"Bitte vereinbaren Sie für Reisepass beantragen einen Termin bei {KREIS[1]}." in page
    assert 'id="btn-card"' in page
    # Without JavaScript: the page comes back with the block in the answer box.
    page = await (await env.client.get(f"/console/cases/{case_id}", params={"einfuegen": "karte"})).text()
    box = page.split('id="reply-text"', 1)[1].split("</textarea>", 1)[0]
    office = env.kb.authorities[KREIS[0]]
    assert "Reisepass beantragen" in box and "Mitbringen:" in box and "Gebühren:" in box
    assert f"Zuständig: {KREIS[1]}" in box and office.street in box and f"Tel. {office.phone}" in box
    assert "Öffnungszeiten:" in box and "<" not in html.unescape(box.split(">", 1)[1]), "plain text"
    page = await (await env.client.get(f"/console/cases/{case_id}",
                                       params={"einfuegen": "vorlage", "vorlage": "1"})).text()
    box = page.split('id="reply-text"', 1)[1].split("</textarea>", 1)[0]
    assert "Bitte vereinbaren Sie" in box


async def test_a_case_without_service_offers_no_card(env):
    case_id = make_case(env.engine, text="Allgemeine Frage", authority=KREIS, email="q@example.org")
    page = await (await env.client.get(f"/console/cases/{case_id}")).text()
    assert 'id="btn-card"' not in page and "noch keine Leistung" in page


# -- only configured channels -----------------------------------------------------------------------------------------


async def test_no_sms_offered_when_no_sms_channel_is_configured(env_factory, smtp_sink):
    from channels.email.outbound import build_email_adapter

    env = await env_factory(adapters=None)
    page = await (await env.client.get("/console/")).text()
    assert '<option value="sms">' in page and '<option value="email">' in page
    env2 = await env_factory(adapters={"api": PickupAdapter(), "web": PickupAdapter(),
                                       "email": build_email_adapter(env.settings)})
    page = await (await env2.client.get("/console/")).text()
    assert '<option value="sms">' not in page and '<option value="email">' in page
    call = await env2.client.post("/console/calls", headers=env2.headers, json={})
    call_id = (await call.json())["call_id"]
    resp = await env2.client.post(f"/console/calls/{call_id}/send", headers=env2.headers,
                                  json={"service_id": "sh-reisepass", "place": "Todesfelde", "channel": "sms",
                                        "to": "0171 2345678"})
    assert resp.status == 409 and "kein Versand per SMS" in (await resp.json())["error"]
    sms_case = make_case(env2.engine, text="Per SMS", channel="sms", authority=KREIS, phone="+491712345678")
    page = await (await env2.client.get(f"/console/cases/{sms_case}")).text()
    assert "kein Versand über SMS eingerichtet" in page
    assert re.search(r'id="btn-reply"\s+disabled', page)


async def test_nothing_to_send_the_card_by(env_factory):
    env = await env_factory(adapters={"api": PickupAdapter(), "web": PickupAdapter()})
    call = await env.client.post("/console/calls", headers=env.headers, json={})
    page = await (await env.client.get("/console/", params={"call": (await call.json())["call_id"]})).text()
    assert 'id="send-box"' not in page and 'id="send-none"' in page


def test_configured_channels_follow_the_channel_registry(tmp_path):
    from hub.config import Settings
    from hub.queue.adapters import adapter_targets

    bare = Settings()
    configured = configured_channels(bare, None)
    assert "sms" not in configured and "phone" not in configured, "no [twilio] account: no SMS"
    assert configured <= set(adapter_targets())
    assert {"web", "api"} <= configured
    s = settings_for(tmp_path, "sqlite://", smtp_port=2525)
    assert "email" in configured_channels(s, None)
    assert configured_channels(None, ["web", "email"]) == {"web", "email"}


# -- German messages ------------------------------------------------------------------------------------------------


async def test_console_errors_are_german(env):
    case_id = make_case(env.engine, text="Frage", authority=KREIS, email="g@example.org")
    resp = await env.client.post(f"/console/cases/{case_id}/reply", headers=env.headers, json={})
    assert resp.status == 422 and (await resp.json())["error"] == "Bitte „Antwort“ angeben."
    resp = await env.client.post(f"/console/cases/{case_id}/reply", headers=env.headers | {
        "Content-Type": "application/json"}, data=b"{")
    assert resp.status == 400 and "JSON" in (await resp.json())["error"]
    resp = await env.client.get("/console/api/cases/999999", headers=JSON)
    assert resp.status == 404
    call = await env.client.post("/console/calls", headers=env.headers, json={"answered_within_s": "viel"})
    assert call.status == 422 and "Wartezeit" in (await call.json())["error"]
    call = await env.client.post("/console/calls", headers=env.headers, json={})
    call_id = (await call.json())["call_id"]
    resp = await env.client.post(f"/console/calls/{call_id}/forward", headers=env.headers,
                                 json={"service_id": "gibt-es-nicht"})
    assert resp.status == 422 and "Leistung" in (await resp.json())["error"]
    resp = await env.client.post(f"/console/calls/{call_id}/send", headers=env.headers,
                                 json={"service_id": "sh-reisepass", "channel": "email", "to": "kein-mail"})
    assert resp.status == 422 and "ungültig" in (await resp.json())["error"]


async def test_the_thread_and_the_log_speak_german(env):
    case_id = make_case(env.engine, text="Frage", authority=KREIS, email="h@example.org")
    resp = await env.client.post(f"/console/cases/{case_id}/reply", headers=env.headers, json={"text": "Antwort"})
    assert resp.status == 201
    page = await (await env.client.get(f"/console/cases/{case_id}")).text()
    thread = page.split('id="thread"', 1)[1].split('class="actions"', 1)[0]
    assert '<span class="kind">Antwort</span>' in thread
    assert re.search(r'class="send-state \w+">(wartet auf Versand|wird gesendet|gesendet)<', thread)
    assert ">pending<" not in page and ">reply<" not in page and ">transition<" not in page
    assert "Statuswechsel" in page and "beantwortet" in page
