"""The queue's HTTP API in-process: intake contract, bad input, tokens, the case API, OpenAPI, metrics."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from itertools import product

import pytest
from aiohttp import web
from queue_support import count_messages, sqlite_engine
from sqlalchemy import func, insert, select, update

from hub.config import Settings
from hub.http import api_cases, openapi
from hub.http.app import ENGINE, SETTINGS, error_middleware
from hub.http.tokens import add_token, revoke_token
from hub.intake_server import DEMO_SERVICES
from hub.queue.adapters import SendResult
from hub.queue.cases import TRANSITIONS, CaseState, audit_t, case_t, example_t, message_t, state_label
from hub.queue.outbox import PickupAdapter
from hub.queue.routing import KeywordRouter
from hub.queue.workers import QueueService
from knowledge.models import Authority, Service


class RecordingEmail:
    """An e-mail adapter that keeps what it was asked to send (the real one talks SMTP)."""

    name = "email"

    def __init__(self) -> None:
        self.sent = []

    async def send(self, message):
        self.sent.append(message)
        return SendResult.sent("250 queued")


@pytest.fixture
def engine(tmp_path):
    return sqlite_engine(tmp_path)


@pytest.fixture
def email():
    return RecordingEmail()


@pytest.fixture
async def client(engine, email, aiohttp_client):
    settings = Settings()
    settings.limits.sender_burst = 100  # concurrency tests send many requests of one sender at once
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[ENGINE] = engine
    service = QueueService(engine, settings, router=KeywordRouter(DEMO_SERVICES),
                           adapters={"api": PickupAdapter(), "email": email})
    api_cases.setup(app, service)
    openapi.setup(app)
    with engine.begin() as conn:
        conn.execute(insert(Service.__table__).values(
            id="kfz", name="Fahrzeug zulassen", synonyms=[], short_text="", full_text="", documents=[], fees="",
            processing_time="", topic="", life_situation="", level="kreis", owner_ars="",
            updated_at=datetime.now(UTC)))
        conn.execute(insert(Authority.__table__).values(
            id="demo-kfz", name="Kfz-Zulassungsstelle", kind="", region_ars="01060", street="", postcode="",
            city="", phone="", email="kfz@kreis.example", website="", opening_hours={}, is_demo=True, owner_ars=""))
    return await aiohttp_client(app)


@pytest.fixture
def service_token(engine):
    return {"Authorization": "Bearer " + add_token(engine, "web-frontend", "service")}


@pytest.fixture
def agent(engine):
    return {"Authorization": "Bearer " + add_token(engine, "agent.meier", "agent", all_authorities=True)}


def _request(ext="sub-1", text="Ich brauche einen neuen Reisepass", **extra):
    return {"channel": "api", "external_id": ext, "text": text, "location": "Bad Segeberg",
            "contact": {"name": "Erika Musterfrau", "email": "erika@example.de", "phone": None}, **extra}


async def _wait_state(client, agent, case_id, states, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        resp = await client.get(f"/api/cases/{case_id}", headers=agent)
        body = await resp.json()
        if body["state"] in states:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"case {case_id} stayed {body['state']}")


# -- intake contract ----------------------------------------------------------------------------------


async def test_post_request_is_committed_before_201_and_a_repeat_gets_200(client, engine, service_token):
    resp = await client.post("/api/requests", json=_request(), headers=service_token)
    assert resp.status == 201
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = await resp.json()
    assert set(body) == {"case_id", "token", "state"} and body["state"] == "new"
    assert count_messages(engine, "api", "sub-1") == 1  # already committed when the answer came
    again = await client.post("/api/requests", json=_request(text="anders"), headers=service_token)
    assert again.status == 200
    assert (await again.json())["case_id"] == body["case_id"]
    assert count_messages(engine) == 1


async def test_concurrent_duplicates_over_http_store_one_request(client, engine, service_token):
    resps = await asyncio.gather(*[client.post("/api/requests", json=_request("same"), headers=service_token)
                                   for _ in range(20)])
    statuses = sorted(r.status for r in resps)
    assert statuses == [200] * 19 + [201]
    assert len({(await r.json())["case_id"] for r in resps}) == 1
    assert count_messages(engine) == 1


async def test_a_new_request_is_routed(client, service_token, agent):
    case_id = (await (await client.post("/api/requests", json=_request(), headers=service_token)).json())["case_id"]
    case = await _wait_state(client, agent, case_id, {"routed"})
    assert case["service"] == {"id": "reisepass", "name": "Reisepass beantragen"}
    assert case["authority"]["id"] == "demo-buergerbuero"
    assert [a["to"] for a in case["audit"]] == ["new", "routed"]


async def test_an_unclear_request_needs_clarification(client, service_token, agent):
    body = _request("vague", text="Ich habe eine Frage zu meinem Pass und meinem Auto")
    case_id = (await (await client.post("/api/requests", json=body, headers=service_token)).json())["case_id"]
    case = await _wait_state(client, agent, case_id, {"needs_clarification"})
    assert case["route"]["result"]["candidates"]


@pytest.mark.parametrize(
    "data, headers, status, message",
    [
        (b'{"external_id": "x", "text": ', {}, 400, "kein gültiges JSON"),
        (b"[1, 2]", {}, 400, "JSON-Objekt"),
        (b"\xff\xfe", {}, 400, "kein UTF-8"),
        (json.dumps({"external_id": "x"}).encode(), {}, 422, "nicht gültig"),
        (json.dumps(_request(unexpected=1)).encode(), {}, 422, "nicht gültig"),
        (json.dumps(_request(text="Hallo\u0000Welt")).encode(), {}, 422, "nicht gültig"),
        (json.dumps(_request(text="   ")).encode(), {}, 422, "nicht gültig"),
        (json.dumps(_request(channel="email")).encode(), {}, 422, "nicht gültig"),
        (json.dumps(_request(contact={"email": "nope"})).encode(), {}, 422, "nicht gültig"),
        (json.dumps(_request()).encode(), {"Content-Type": "text/plain"}, 415, "application/json"),
    ],
)
async def test_bad_input_gets_4xx_json_and_stores_nothing(client, engine, service_token, data, headers, status,
                                                          message):
    resp = await client.post("/api/requests", data=data,
                             headers={**service_token, "Content-Type": "application/json", **headers})
    assert resp.status == status
    body = await resp.json()
    assert message in body["error"]
    if status == 422:
        assert body["details"] and all("input" not in d for d in body["details"])
    assert count_messages(engine) == 0


async def test_a_10_mb_body_gets_413_and_stores_nothing(client, engine, service_token):
    big = json.dumps(_request(text="x" * (10 * 1024 * 1024))).encode()
    resp = await client.post("/api/requests", data=big,
                             headers={**service_token, "Content-Type": "application/json"})
    assert resp.status == 413
    assert "größer als" in (await resp.json())["error"]
    assert count_messages(engine) == 0


async def test_tokens_are_checked(client, engine, service_token, agent):
    no = await client.post("/api/requests", json=_request())
    wrong = await client.post("/api/requests", json=_request(), headers={"Authorization": "Bearer chub_wrong"})
    basic = await client.post("/api/requests", json=_request(), headers={"Authorization": "Basic dXNlcjpwdw=="})
    as_agent = await client.post("/api/requests", json=_request(), headers=agent)
    service_reads = await client.get("/api/cases", headers=service_token)
    assert [no.status, wrong.status, basic.status, as_agent.status, service_reads.status] == [401, 401, 401, 403, 403]
    assert "error" in await wrong.json()
    revoke_token(engine, "web-frontend")
    await asyncio.sleep(1.1)  # the verifier reloads at most once a second on a miss
    client.app[api_cases.QUEUE].tokens._loaded_at = float("-inf")  # and after its TTL
    revoked = await client.post("/api/requests", json=_request(), headers=service_token)
    assert revoked.status == 401
    assert count_messages(engine) == 0


# -- case API ---------------------------------------------------------------------------------------------


async def _new_case(client, service_token, agent, ext="c1", text="Ich brauche einen neuen Reisepass"):
    resp = await client.post("/api/requests", json=_request(ext, text=text), headers=service_token)
    case_id = (await resp.json())["case_id"]
    await _wait_state(client, agent, case_id, {"routed", "needs_clarification"})
    return case_id


async def test_list_cases_filters_and_pages(client, service_token, agent):
    ids = [await _new_case(client, service_token, agent, f"l{i}") for i in range(3)]
    vague = await _new_case(client, service_token, agent, "l-vague", "Frage zu Pass und Auto")
    page = await (await client.get("/api/cases?state=routed&per_page=2", headers=agent)).json()
    assert page["total"] == 3 and [c["id"] for c in page["cases"]] == ids[:2]
    page2 = await (await client.get("/api/cases?state=routed&per_page=2&page=2", headers=agent)).json()
    assert [c["id"] for c in page2["cases"]] == ids[2:]
    unclear = await (await client.get("/api/cases?state=needs_clarification", headers=agent)).json()
    assert [c["id"] for c in unclear["cases"]] == [vague]
    by_authority = await (await client.get("/api/cases?authority=demo-buergerbuero&channel=api",
                                           headers=agent)).json()
    assert by_authority["total"] == 3
    overdue = await (await client.get("/api/cases?overdue=true", headers=agent)).json()
    assert overdue["total"] == 0
    # The spelling of the URL: every filter present and empty means no filter.
    everything = await client.get("/api/cases?state=&channel=&authority=&overdue=&page=", headers=agent)
    assert everything.status == 200 and (await everything.json())["total"] == 4
    for query in ("state=archived", "page=0", "per_page=1000", "overdue=maybe", "channel=fax", "sort=id"):
        resp = await client.get(f"/api/cases?{query}", headers=agent)
        assert resp.status == 400, query
        assert "error" in await resp.json()


async def test_overdue_filter_finds_late_cases(client, engine, service_token, agent):
    case_id = await _new_case(client, service_token, agent)
    with engine.begin() as conn:
        conn.execute(update(case_t).where(case_t.c.id == case_id).values(
            first_response_due=datetime(2020, 1, 1, tzinfo=UTC)))
    overdue = await (await client.get("/api/cases?overdue=true", headers=agent)).json()
    assert [c["id"] for c in overdue["cases"]] == [case_id] and overdue["cases"][0]["sla"]["overdue"]


async def test_transition_accepts_allowed_and_rejects_invalid_moves(client, service_token, agent):
    case_id = await _new_case(client, service_token, agent)
    bad = await client.post(f"/api/cases/{case_id}/transition", json={"to": "new"}, headers=agent)
    assert bad.status == 409 and "von „zugeordnet“ nach „neu“" in (await bad.json())["error"]
    unknown = await client.post(f"/api/cases/{case_id}/transition", json={"to": "archived"}, headers=agent)
    assert unknown.status == 422
    ok = await client.post(f"/api/cases/{case_id}/transition", json={"to": "closed", "reason": "Dublette"},
                           headers=agent)
    body = await ok.json()
    assert ok.status == 200 and body["state"] == "closed" and body["assigned_agent"] == "agent.meier"
    assert body["audit"][-1] == {**body["audit"][-1], "actor": "agent:agent.meier", "from": "routed", "to": "closed",
                                 "reason": "Dublette"}
    missing = await client.post("/api/cases/99999/transition", json={"to": "closed"}, headers=agent)
    assert missing.status == 404


async def test_reroute_records_a_labelled_example(client, engine, service_token, agent):
    case_id = await _new_case(client, service_token, agent)
    resp = await client.post(f"/api/cases/{case_id}/reroute",
                             json={"service_id": "kfz", "authority_id": "demo-kfz", "reason": "es geht ums Auto"},
                             headers=agent)
    body = await resp.json()
    assert resp.status == 200 and body["state"] == "routed"
    assert body["service"]["id"] == "kfz" and body["authority"]["id"] == "demo-kfz"
    assert body["audit"][-1]["action"] == "reroute"
    with engine.connect() as conn:
        ex = conn.execute(select(example_t)).mappings().one()
    assert (ex["predicted_service_id"], ex["service_id"], ex["authority_id"]) == ("reisepass", "kfz", "demo-kfz")
    assert "Reisepass" in ex["text"] and ex["agent"] == "agent:agent.meier"
    unknown = await client.post(f"/api/cases/{case_id}/reroute", json={"service_id": "nope", "authority_id": "demo-kfz"},
                                headers=agent)
    assert unknown.status == 422


async def test_reply_goes_through_the_outbox_and_answers_the_case(client, engine, service_token, agent):
    case_id = await _new_case(client, service_token, agent)
    resp = await client.post(f"/api/cases/{case_id}/reply", json={"text": "Bitte bringen Sie ein Foto mit."},
                             headers=agent)
    assert resp.status == 201 and (await resp.json())["state"] == "answered"
    for _ in range(100):
        case = await (await client.get(f"/api/cases/{case_id}", headers=agent)).json()
        out = [m for m in case["messages"] if m["direction"] == "out"]
        if out and out[0]["send_state"] == "sent":
            break
        await asyncio.sleep(0.02)
    assert out[0]["send_state"] == "sent" and out[0]["text"] == "Bitte bringen Sie ein Foto mit."
    assert case["sla"]["first_responded_at"] is not None
    again = await client.post(f"/api/cases/{case_id}/reply", json={"text": ""}, headers=agent)
    assert again.status == 422


async def test_reply_that_asks_the_citizen_pauses_the_case(client, service_token, agent):
    case_id = await _new_case(client, service_token, agent)
    resp = await client.post(f"/api/cases/{case_id}/reply", json={"text": "Welche Stadt?", "await_citizen": True},
                             headers=agent)
    assert (await resp.json())["state"] == "waiting_for_citizen"
    case = await (await client.get(f"/api/cases/{case_id}", headers=agent)).json()
    assert case["sla"]["paused"] is True and case["sla"]["first_responded_at"] is None


async def test_forward_sends_to_the_authority_and_starts_the_24h_clock(client, engine, email, service_token, agent):
    case_id = await _new_case(client, service_token, agent, text="Reisepass, und ich will mein Auto zulassen")
    with engine.begin() as conn:
        conn.execute(insert(Authority.__table__).values(
            id="no-mail", name="Amt ohne Mail", kind="", region_ars="01060", street="", postcode="", city="",
            phone="", email="", website="", opening_hours={}, is_demo=True, owner_ars=""))
    unknown = await client.post(f"/api/cases/{case_id}/forward", json={"authority_id": "nope"}, headers=agent)
    assert unknown.status == 422
    no_mail = await client.post(f"/api/cases/{case_id}/forward", json={"authority_id": "no-mail"}, headers=agent)
    assert no_mail.status == 409 and "keine E-Mail-Adresse" in (await no_mail.json())["error"] and (await no_mail.json())["code"] == "no_email"
    resp = await client.post(f"/api/cases/{case_id}/forward", json={"authority_id": "demo-kfz", "note": "Bitte prüfen"},
                             headers=agent)
    assert resp.status == 201
    for _ in range(100):
        if email.sent:
            break
        await asyncio.sleep(0.02)
    assert email.sent[0].recipient == "kfz@kreis.example" and email.sent[0].kind == "forward"
    assert "Bitte prüfen" in email.sent[0].text and "Auto zulassen" in email.sent[0].text
    case = await (await client.get(f"/api/cases/{case_id}", headers=agent)).json()
    assert case["state"] == "forwarded" and case["sla"]["forward_due"] is not None


async def test_openapi_describes_every_route(client):
    spec = await (await client.get("/api/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    for route in client.app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        path = route.resource.get_info().get("path") or route.resource.get_info().get("formatter")
        assert route.method.lower() in spec["paths"][path], f"{route.method} {path} is not described"
    assert spec["paths"]["/api/requests"]["post"]["requestBody"]
    assert "RequestIn" in spec["components"]["schemas"]


async def test_metrics_in_prometheus_format(client, service_token, agent):
    await _new_case(client, service_token, agent)
    await client.post("/api/requests", data=b"{", headers={**service_token, "Content-Type": "application/json"})
    text = await (await client.get("/metrics")).text()
    assert 'citizen_hub_intake_requests_total{channel="api",outcome="new"} 1' in text
    assert 'citizen_hub_queue_depth{state="routed"} 1' in text
    assert 'citizen_hub_http_rejected_total{status="400"} 1' in text
    assert "citizen_hub_routing_latency_seconds_count 1" in text
    assert "citizen_hub_sla_breaches 0" in text
    assert 'citizen_hub_requests_stored{channel="api"} 1' in text
    # Request latency per route: the route's pattern, never a concrete id.
    assert 'citizen_hub_http_request_duration_seconds_count{method="POST",route="/api/requests"} 2' in text
    assert 'citizen_hub_http_request_duration_seconds_count{method="GET",route="/api/cases/{case_id}"}' in text
    assert "_created" not in text


async def test_nothing_logs_message_bodies(client, service_token, agent, caplog):
    secret = "Mein Geheimnis 4711"
    await _new_case(client, service_token, agent, text=f"Reisepass {secret}")
    await client.post("/api/requests", json=_request("bad", text=f"{secret}\u0000"), headers=service_token)
    assert secret not in caplog.text



async def test_the_transition_endpoint_walks_the_whole_state_table(client, engine, service_token, agent):
    """Every (from, to) pair over HTTP: 200 and one audit entry for allowed moves, 409 and no change otherwise."""
    pairs = list(product(CaseState, CaseState))
    ids = []
    for n in range(len(pairs)):
        resp = await client.post("/api/requests", json=_request(f"walk-{n}", text="Guten Tag"), headers=service_token)
        ids.append((await resp.json())["case_id"])
    client.app[api_cases.QUEUE].service.routing.stop()  # keep the router from moving the forced states
    for case_id, (frm, _to) in zip(ids, pairs, strict=True):
        with engine.begin() as conn:
            conn.execute(update(case_t).where(case_t.c.id == case_id).values(state=frm.value))
    for case_id, (frm, to) in zip(ids, pairs, strict=True):
        audit_before = await _audit_count(engine, case_id)
        resp = await client.post(f"/api/cases/{case_id}/transition", json={"to": to.value, "reason": "walk"},
                                 headers=agent)
        body = await resp.json()
        if to in TRANSITIONS[frm]:
            assert resp.status == 200, (frm, to, body)
            assert body["state"] == to.value
            assert body["audit"][-1] | {"at": None} == {"at": None, "actor": "agent:agent.meier",
                                                          "action": "transition", "from": frm.value,
                                                          "to": to.value, "reason": "walk"}
            assert await _audit_count(engine, case_id) == audit_before + 1
        else:
            assert resp.status == 409, (frm, to, body)
            assert f"von „{state_label(frm)}“ nach „{state_label(to)}“" in body["error"]
            assert body["code"] == "invalid_transition" and body["case_id"] == case_id
            assert body["from"] == frm.value and body["to"] == to.value
            with engine.connect() as conn:
                assert conn.execute(select(case_t.c.state).where(case_t.c.id == case_id)).scalar() == frm.value
            assert await _audit_count(engine, case_id) == audit_before


async def _audit_count(engine, case_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_t).where(audit_t.c.case_id == case_id)).scalar()


def _snapshot(engine) -> tuple:
    """Everything the case endpoints could change: cases, messages, audit entries, labelled examples."""
    with engine.connect() as conn:
        return tuple(
            [tuple(r) for r in conn.execute(select(t).order_by(t.c.id)).all()]
            for t in (case_t, message_t, audit_t, example_t)
        )


@pytest.mark.parametrize(
    "endpoint, data, content_type, status, message",
    [
        ("transition", b'{"to": ', "application/json", 400, "kein gültiges JSON"),
        ("transition", b'["closed"]', "application/json", 400, "JSON-Objekt"),
        ("transition", b'{"to": "closed"}', "text/plain", 415, "application/json"),
        ("transition", b'{"to": "archived"}', "application/json", 422, "nicht gültig"),
        ("transition", b'{"to": "closed", "by": "me"}', "application/json", 422, "nicht gültig"),
        ("transition", b'{"to": "new"}', "application/json", 409, "von „zugeordnet“ nach „neu“"),
        ("transition", json.dumps({"to": "closed", "reason": "x" * 1001}).encode(), "application/json", 422,
         "nicht gültig"),
        ("reroute", b'{"service_id": "kfz"}', "application/json", 422, "nicht gültig"),
        ("reroute", b'{"service_id": "nope", "authority_id": "demo-kfz"}', "application/json", 422,
         "Unbekannte Leistung"),
        ("reroute", b'{"service_id": "kfz", "authority_id": "nope"}', "application/json", 422, "Unbekannte Stelle"),
        ("reply", b'{"text": ""}', "application/json", 422, "nicht gültig"),
        ("reply", b'{"text": "ok", "await_citizen": "perhaps"}', "application/json", 422, "nicht gültig"),
        ("reply", json.dumps({"text": "x" * 20_001}).encode(), "application/json", 422, "nicht gültig"),
        ("forward", b'{"authority_id": "nope"}', "application/json", 422, "Unbekannte Stelle"),
        ("forward", b'{"authority_id": 7}', "application/json", 422, "nicht gültig"),
    ],
)
async def test_bad_input_to_the_case_endpoints_gets_4xx_json_and_changes_nothing(
        client, engine, service_token, agent, endpoint, data, content_type, status, message):
    case_id = await _new_case(client, service_token, agent)
    before = _snapshot(engine)
    resp = await client.post(f"/api/cases/{case_id}/{endpoint}", data=data,
                             headers={**agent, "Content-Type": content_type})
    assert resp.status == status
    assert resp.content_type == "application/json"
    assert message in (await resp.json())["error"]
    assert _snapshot(engine) == before


@pytest.mark.parametrize("endpoint", ["transition", "reroute", "reply", "forward"])
async def test_the_case_endpoints_need_an_agent_token_and_an_existing_case(client, engine, service_token, agent,
                                                                            endpoint):
    case_id = await _new_case(client, service_token, agent)
    body = {"transition": {"to": "closed"}, "reroute": {"service_id": "kfz", "authority_id": "demo-kfz"},
            "reply": {"text": "Hallo"}, "forward": {"authority_id": "demo-kfz"}}[endpoint]
    before = _snapshot(engine)
    statuses = [
        (await client.post(f"/api/cases/{case_id}/{endpoint}", json=body)).status,
        (await client.post(f"/api/cases/{case_id}/{endpoint}", json=body, headers=service_token)).status,
        (await client.post(f"/api/cases/999999/{endpoint}", json=body, headers=agent)).status,
        (await client.post(f"/api/cases/abc/{endpoint}", json=body, headers=agent)).status,
    ]
    assert statuses == [401, 403, 404, 400]
    assert _snapshot(engine) == before
    for path in (f"/api/cases/{case_id}", "/api/cases/999999", "/api/cases"):
        assert (await client.get(path, headers=service_token)).status == 403
    assert (await client.get("/api/cases/999999", headers=agent)).status == 404


async def test_the_api_answers_people_in_german_and_programs_with_a_stable_code(client, service_token, agent):
    """Issue 15: every message an agent sees is German; the machine-readable parts stay stable (``code``, ids)."""
    case_id = await _new_case(client, service_token, agent)
    bad = await client.post(f"/api/cases/{case_id}/transition", json={"to": "new"}, headers=agent)
    body = await bad.json()
    assert bad.status == 409 and body["code"] == "invalid_transition" and body["case_id"] == case_id
    assert body["error"].startswith("Ein Fall kann nicht von „zugeordnet“ nach „neu“ wechseln; erlaubt von")
    assert (body["from"], body["to"]) == ("routed", "new") and "closed" in body["allowed"]
    missing = await client.get("/api/cases/987654", headers=agent)
    assert missing.status == 404 and await missing.json() == {
        "error": "Fall 987654 nicht gefunden", "code": "not_found", "case_id": 987654}
    unknown = await client.get("/api/cases?colour=blue", headers=agent)
    assert unknown.status == 400 and (await unknown.json())["code"] == "unknown_parameter"
    assert "Unbekannte Abfrageparameter: colour" == (await unknown.json())["error"]
    page = await client.get("/api/cases?page=0", headers=agent)
    assert page.status == 400 and await page.json() == {
        "error": "'page' muss eine ganze Zahl von 1 bis 100000 sein", "code": "bad_parameter"}
    invalid = await client.post(f"/api/cases/{case_id}/reply", json={"text": "", "extra": 1}, headers=agent)
    body = await invalid.json()
    assert invalid.status == 422 and body["code"] == "invalid" and body["error"] == "Die Anfrage ist nicht gültig"
    assert {(d["field"], d["message"], d["type"]) for d in body["details"]} == {
        ("text", "zu kurz: mindestens 1 Zeichen", "string_too_short"), ("extra", "unbekanntes Feld", "extra_forbidden")}
    no_token = await client.get("/api/cases")
    assert no_token.status == 401 and (await no_token.json())["code"] == "token_required"
    assert "Bearer-Token ist nötig" in (await no_token.json())["error"]
    nowhere = await client.get("/api/nowhere")
    assert nowhere.status == 404 and await nowhere.json() == {"error": "Nicht gefunden", "code": "not_found"}


def test_state_changes_are_refused_in_german_with_the_case_and_states_named(engine):
    """TransitionError texts (hub.queue.cases): the German state names of the console, the ids a client needs."""
    from hub.queue.cases import InvalidTransition, SlaPolicy, StaleState, check_transition, transition

    with pytest.raises(InvalidTransition) as refused:
        check_transition("closed", "routed")
    assert str(refused.value) == ("Ein Fall kann nicht von „geschlossen“ nach „zugeordnet“ wechseln; erlaubt von "
                                  "„geschlossen“: keiner (Endzustand)")
    assert refused.value.code == "invalid_transition" and refused.value.details["allowed"] == []
    with engine.begin() as conn:
        with pytest.raises(StaleState) as stale:  # no case 424242 is in "routed": someone was faster
            transition(conn, {"id": 424242, "state": "routed"}, "closed", actor="t", policy=SlaPolicy())
    assert str(stale.value).startswith("Fall 424242 ist nicht mehr „zugeordnet“")
    assert stale.value.code == "stale_state" and stale.value.details == {"case_id": 424242, "expected": "routed"}
