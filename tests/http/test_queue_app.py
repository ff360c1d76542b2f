"""The queue inside the real hub app (every module of ``hub.http.routes``) with the real knowledge base.

* ``GET /api/openapi.json`` describes exactly the endpoints the app serves (compared with
  ``app.router``), every one with a summary, its path parameters and its answers.
* ``GET /metrics`` is valid Prometheus text (checked line by line against the exposition format) with
  requests by channel, queue depth by state, SLA breaches and the routing latency histogram.
* The routing stage on the demo catalogue: clear requests are routed, ambiguous or low-confidence
  ones wait for an agent, and an agent's re-route becomes a labelled example.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import pytest
from aiohttp import web
from sqlalchemy import select, update
from web_support import hub_engine, make_app, settings_for

from hub.http.openapi import KNOWN
from hub.http.tokens import add_token
from hub.queue.adapters import load_adapters
from hub.queue.cases import case_t, example_t


@pytest.fixture()
def hub(tmp_path, demo_db_url):
    engine, url = hub_engine(tmp_path, demo_db_url)
    yield engine, url
    engine.dispose()


async def _client(aiohttp_client, hub, kb, tmp_path, **lookup):
    engine, url = hub
    settings = settings_for(tmp_path, url)
    for key, value in lookup.items():
        setattr(settings.lookup, key, value)
    app, service = make_app(settings, engine, kb)
    service.dispatcher.adapters = load_adapters(settings)  # as the app builds its own service
    client = await aiohttp_client(app)
    client.engine, client.service = engine, service
    client.service_auth = {"Authorization": "Bearer " + add_token(engine, "svc", "service")}
    client.agent_auth = {"Authorization": "Bearer " + add_token(engine, "agent.meier", "agent", all_authorities=True)}
    return client


@pytest.fixture()
async def client(aiohttp_client, hub, kb, tmp_path):
    return await _client(aiohttp_client, hub, kb, tmp_path)


async def _post(client, ext: str, text: str, location: str | None = None, channel: str = "api") -> int:
    resp = await client.post("/api/requests", headers=client.service_auth, json={
        "channel": channel, "external_id": ext, "text": text, "location": location,
        "contact": {"name": "Erika Musterfrau", "email": "erika@example.de"}})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["case_id"]


async def _case(client, case_id: int) -> dict:
    resp = await client.get(f"/api/cases/{case_id}", headers=client.agent_auth)
    assert resp.status == 200
    return await resp.json()


# -- OpenAPI -------------------------------------------------------------------------------------------


def _served(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the app serves, static file directories excluded.

    HEAD is left out (aiohttp adds it to every GET); a route for every method has METHOD ``*``.
    """
    out = set()
    for route in app.router.routes():
        if isinstance(route.resource, web.StaticResource) or route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info()
        out.add((route.method, info.get("path") or info["formatter"]))
    return out


async def test_openapi_describes_exactly_the_endpoints_the_app_serves(client):
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    spec = await resp.json()
    assert spec["openapi"].startswith("3.1")
    described = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    described |= {("*", r["path"]) for r in spec["x-catch-all"]}
    served = _served(client.app)
    assert len(served) > 30  # every route module is mounted, not just the queue's
    assert served - described == set(), "served but not described"
    assert described - served == set(), "described but not served"
    # The full descriptions of the queue API name endpoints that exist (no stale entries).
    assert set(KNOWN) <= served, f"hub.http.openapi.KNOWN describes routes the app does not serve: {set(KNOWN) - served}"
    for path, ops in spec["paths"].items():
        declared_params = set(re.findall(r"{(\w+)", path))
        for method, op in ops.items():
            assert op.get("summary", "").strip(), f"{method} {path} has no summary"
            assert op.get("responses"), f"{method} {path} has no responses"
            in_path = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert in_path == declared_params, f"{method} {path}: path parameters {in_path} != {declared_params}"
    queue_ops = {(m.upper(), p) for p, ops in spec["paths"].items() for m, op in ops.items()
                 if p.startswith("/api/cases") or p == "/api/requests"}
    for key in queue_ops:
        op = spec["paths"][key[1]][key[0].lower()]
        assert op["security"], f"{key} does not say which token it needs"
        assert {"401", "403"} <= set(op["responses"]), f"{key} does not list its auth errors"
        if key[0] == "POST":
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[-1] in spec["components"]["schemas"]
    request_in = spec["components"]["schemas"]["RequestIn"]
    assert {"channel", "external_id", "text", "location", "contact"} <= set(request_in["properties"])
    assert set(spec["components"]["schemas"]["CaseRef"]["properties"]) == {"case_id", "token", "state"}


# -- Prometheus ----------------------------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_prometheus(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float]]:
    """Parse the Prometheus text exposition format strictly; returns (types by family, samples).

    Fails on anything a Prometheus server would refuse: bad names, labels or values, a TYPE after
    the family's samples or twice, a family split up by another one, duplicate series, histogram
    buckets that are not cumulative or end anywhere but at +Inf == _count.
    """
    assert text.endswith("\n"), "the exposition must end with a line feed"
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset], float] = {}
    finished: set[str] = set()
    current: str | None = None

    def family_of(name: str) -> str:
        for suffix in ("_bucket", "_sum", "_count"):
            base = name.removesuffix(suffix)
            if base != name and types.get(base) in ("histogram", "summary"):
                return base
        return name

    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}: {line!r}"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if parts[1] in ("HELP", "TYPE"):
                assert len(parts) >= 3 and re.fullmatch(_NAME, parts[2]), where
                if parts[1] == "TYPE":
                    assert parts[2] not in types, f"{where}: second TYPE"
                    assert parts[2] not in finished and parts[2] != current, f"{where}: TYPE after samples"
                    assert parts[3] in _TYPES, where
                    types[parts[2]] = parts[3]
            continue
        assert line.strip(), f"{where}: empty line"
        match = _SAMPLE.match(line)
        assert match, f"{where}: not a sample"
        name, labels_text, value = match.groups()
        family = family_of(name)
        assert family in types, f"{where}: no TYPE for {family}"
        if family != current:
            assert family not in finished, f"{where}: the samples of {family} are not together"
            if current:
                finished.add(current)
            current = family
        labels: dict[str, str] = {}
        if labels_text:
            pos = 0
            while pos < len(labels_text):
                lm = _LABEL.match(labels_text, pos)
                assert lm, f"{where}: bad labels"
                assert lm.group(1) not in labels, f"{where}: label twice"
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        number_value = float(value)  # accepts +Inf, -Inf, NaN; raises on anything else
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"{where}: duplicate series"
        samples[key] = number_value
    for family, kind in types.items():
        if kind != "histogram":
            continue
        series: dict[frozenset, list[tuple[float, float]]] = {}
        for (name, labels), value in samples.items():
            if name == f"{family}_bucket":
                rest = frozenset((k, v) for k, v in labels if k != "le")
                bound = dict(labels)["le"]
                series.setdefault(rest, []).append((math.inf if bound == "+Inf" else float(bound), value))
        assert series, f"histogram {family} has no buckets"
        for rest, buckets in series.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), f"{family}: buckets are not cumulative"
            assert buckets[-1][0] == math.inf, f"{family}: no +Inf bucket"
            assert samples[(f"{family}_count", rest)] == buckets[-1][1], f"{family}: +Inf != _count"
            assert (f"{family}_sum", rest) in samples
    return types, samples


def test_the_prometheus_checker_refuses_broken_text():
    good = '# TYPE a counter\na{x="1"} 1\n'
    parse_prometheus(good)
    for broken in ('a 1\n', '# TYPE a counter\na{x="1"} one\n', '# TYPE a counter\na{x=1} 1\n',
                   '# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na{y="2"} 2\n', '# TYPE a counter\na 1\na 2\n',
                   '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
                   '# TYPE a counter\na 1'):
        with pytest.raises((AssertionError, ValueError)):
            parse_prometheus(broken)


def _value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_metrics_are_valid_prometheus_text_with_the_figures_the_issue_asks_for(client):
    routed = await _post(client, "m-1", "Ich möchte ein Wunschkennzeichen reservieren", "Todesfelde")
    await _post(client, "m-2", "Ich habe eine Frage", "Bad Segeberg", channel="web")
    await _post(client, "m-3", "Ich möchte ein Wunschkennzeichen reservieren", "Todesfelde")
    resp = await client.post("/api/requests", headers=client.service_auth, json={"external_id": "x"})
    assert resp.status == 422
    client.service.routing.run_until_empty()
    with client.engine.begin() as conn:  # one case is long past its first-response deadline
        conn.execute(update(case_t).where(case_t.c.id == routed)
                     .values(first_response_due=datetime(2026, 1, 5, 8, 0, tzinfo=UTC)))
    client.service.sla.run_once()

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].replace(" ", "") == "text/plain;version=0.0.4;charset=utf-8"
    types, samples = parse_prometheus(await resp.text())
    # Requests by channel (this process's intake, and what the database holds).
    assert _value(samples, "citizen_hub_intake_requests_total", channel="api", outcome="new") == 2
    assert _value(samples, "citizen_hub_intake_requests_total", channel="web", outcome="new") == 1
    assert _value(samples, "citizen_hub_requests_stored", channel="api") == 2
    assert _value(samples, "citizen_hub_requests_stored", channel="web") == 1
    assert _value(samples, "citizen_hub_http_rejected_total", status="422") == 1
    # Group commits: three requests sent one after another, so three transactions.
    assert _value(samples, "citizen_hub_intake_batches_total") == 3
    assert types["citizen_hub_intake_batches_total"] == "counter"
    # Queue depth by state: every state is reported, also when it is empty.
    depth = {dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "citizen_hub_queue_depth"}
    assert depth == {"new": 0, "routed": 2, "needs_clarification": 1, "waiting_for_citizen": 0, "answered": 0,
                     "forwarded": 0, "closed": 0, "dead_letter": 0}
    assert types["citizen_hub_queue_depth"] == "gauge"
    # SLA breaches.
    assert _value(samples, "citizen_hub_sla_breaches") == 1
    assert _value(samples, "citizen_hub_sla_overdue") == 1
    # Routing latency: one observation per routed case, in a histogram.
    assert types["citizen_hub_routing_latency_seconds"] == "histogram"
    assert _value(samples, "citizen_hub_routing_latency_seconds_count") == 3
    assert _value(samples, "citizen_hub_routing_latency_seconds_sum") > 0


# -- routing on the real knowledge base ----------------------------------------------------------------


async def test_the_knowledge_base_routes_clear_requests_and_leaves_unclear_ones_to_an_agent(client):
    clear = await _post(client, "r-clear", "Ich möchte ein Wunschkennzeichen reservieren", "Todesfelde")
    no_place = await _post(client, "r-noplace", "Ich brauche einen neuen Personalausweis")
    county_no_place = await _post(client, "r-county", "Ich möchte ein Wunschkennzeichen reservieren")
    unknown_place = await _post(client, "r-springfield", "Ich brauche einen neuen Personalausweis", "Springfield")
    vague = await _post(client, "r-vague", "Ich habe eine Frage", "Bad Segeberg")
    assert client.service.routing.run_until_empty() == 5

    case = await _case(client, clear)
    assert case["state"] == "routed"
    assert case["service"]["id"] == "sh-wunschkennzeichen" and case["authority"]["id"] == "kreis-01060"
    assert case["route"]["result"]["location"]["ars"] == "010605053088"
    # A county service: every place of the home region has the same office, so the missing place does not matter.
    case = await _case(client, county_no_place)
    assert case["state"] == "routed" and case["authority"]["id"] == "kreis-01060"
    for case_id in (no_place, unknown_place, vague):
        case = await _case(client, case_id)
        assert case["state"] == "needs_clarification", case_id
        assert case["route"]["result"]["candidates"], "the agent sees the router's candidates"
        assert case["audit"][-1]["to"] == "needs_clarification" and case["audit"][-1]["reason"]
    # A vague request is flagged either because several services are close or because one general word is
    # all that matches (knowledge.clarify): both send it to an agent with the reason.
    vague_reason = (await _case(client, vague))["route"]["reason"]
    assert "Leistungen kommen in Frage" in vague_reason or "zu allgemein" in vague_reason, vague_reason
    assert "kein Ort angegeben" in (await _case(client, no_place))["route"]["reason"]


async def test_a_clear_best_candidate_is_routed_whatever_its_absolute_score(aiohttp_client, hub, kb, tmp_path):
    # One candidate, about 81 of 100, nothing close to it: as clear as a request can be ...
    route = kb.route("Mein Reisepass ist im Urlaub gestohlen worden", "Henstedt-Ulzburg")
    assert route.confidence < 95 and not route.needs_clarification
    strict = await _client(aiohttp_client, hub, kb, tmp_path, confident_score=95.0)
    case_id = await _post(strict, "c-clear", "Mein Reisepass ist im Urlaub gestohlen worden", "Henstedt-Ulzburg")
    strict.service.routing.run_until_empty()
    case = await _case(strict, case_id)
    # ... so the queue routes it, and [lookup] confident_score (the SMS and voice channels' setting) is no
    # second, absolute rule for the queue (issue 13).
    assert case["state"] == "routed" and case["service"]["id"] == "sh-reisepass-verlust"


async def test_an_agent_reroutes_an_unclear_case_and_the_correction_is_a_labelled_example(client):
    case_id = await _post(client, "rr-1", "Ich habe eine Frage zum Hund", "Bad Segeberg")
    client.service.routing.run_until_empty()
    before = await _case(client, case_id)
    resp = await client.post(f"/api/cases/{case_id}/reroute", headers=client.agent_auth, json={
        "service_id": "sh-hundesteuer-anmelden", "authority_id": "stadt-010600005005", "reason": "Hundesteuer"})
    assert resp.status == 200, await resp.text()
    after = await resp.json()
    assert after["state"] == "routed" and after["assigned_agent"] == "agent.meier"
    assert after["service"]["id"] == "sh-hundesteuer-anmelden" and after["authority"]["id"] == "stadt-010600005005"
    assert (after["audit"][-1]["action"], after["audit"][-1]["from"], after["audit"][-1]["to"]) == (
        "reroute", before["state"], "routed")
    with client.engine.connect() as conn:
        example = conn.execute(select(example_t).where(example_t.c.case_id == case_id)).mappings().one()
    assert example["text"] == "Ich habe eine Frage zum Hund" and example["location"] == "Bad Segeberg"
    assert example["predicted_service_id"] == (before["service"] or {}).get("id")
    assert (example["service_id"], example["authority_id"], example["agent"]) == (
        "sh-hundesteuer-anmelden", "stadt-010600005005", "agent:agent.meier")


async def test_a_case_holds_messages_in_both_directions_state_route_agent_and_deadlines(client):
    case_id = await _post(client, "b-1", "Ich möchte ein Wunschkennzeichen reservieren", "Todesfelde")
    client.service.routing.run_until_empty()
    resp = await client.post(f"/api/cases/{case_id}/reply", headers=client.agent_auth,
                             json={"text": "Das geht online unter ..."})
    assert resp.status == 201
    await client.service.dispatcher.run_until_empty()
    case = await _case(client, case_id)
    assert case["state"] == "answered" and case["assigned_agent"] == "agent.meier"
    assert case["service"]["id"] == "sh-wunschkennzeichen" and case["authority"]["id"] == "kreis-01060"
    assert [(m["direction"], m["kind"]) for m in case["messages"]] == [("in", "request"), ("out", "reply")]
    assert case["messages"][1]["send_state"] == "sent" and case["messages"][1]["author"] == "agent:agent.meier"
    sla = case["sla"]
    assert sla["first_response_due"] and sla["first_responded_at"] and not sla["overdue"]
    assert case["contact"] == {"name": "Erika Musterfrau", "email": "erika@example.de", "phone": None,
                               "postal_address": None}
