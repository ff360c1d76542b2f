"""Issue 15.1: cases without an office are worked by the agents of the hub's own area, in the console and
through agent tokens alike (the one rule of hub.scope), and the dashboard counts every open case once.

The exchange replayed: requests that name no place (or nothing the router knows) were shown to no agent
of the Kreis, and the dashboard said "ohne Zuständigkeit 1" where there were many.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from console_support import (
    AMT_LEEZEN,
    KREIS,
    SOEST,
    hub_engine,
    login,
    make_app,
    make_case,
    new_user,
    set_case,
    settings_for,
)
from sqlalchemy import func, select

from hub.console import dashboard
from hub.console.settings import ConsoleSettings
from hub.http.tokens import add_token
from hub.queue.cases import CaseState, case_t
from hub.queue.intake import write_requests
from hub.queue.requests import Contact, InboundRequest
from hub.scope import Scope, make_scope
from knowledge.settings import RegionSettings

IN_KREIS = {"location": {"ars": "010605053088", "name": "Todesfelde"}}
IN_SOEST = {"location": {"ars": "059740036036", "name": "Soest"}}


@pytest.fixture
async def env(tmp_path, demo_db_url, kb, aiohttp_client):
    engine, url = hub_engine(tmp_path, demo_db_url)
    app, service = make_app(settings_for(tmp_path, url), engine, kb)
    client = await aiohttp_client(app)
    c: dict[str, list[int]] = {"kreis": [], "leezen": [], "soest": [], "unplaced": [], "in_kreis": [],
                               "in_soest": [], "answered": []}
    for i in range(3):
        c["kreis"].append(make_case(engine, text=f"Kfz {i}", authority=KREIS, email=f"k{i}@example.org"))
    for i in range(2):
        c["leezen"].append(make_case(engine, text=f"Hund {i}", authority=AMT_LEEZEN, email=f"l{i}@example.org"))
        c["soest"].append(make_case(engine, text=f"Soest {i}", authority=SOEST, email=f"s{i}@example.org"))
        case = make_case(engine, text=f"Wo {i}", state=CaseState.NEEDS_CLARIFICATION, email=f"w{i}@example.org")
        set_case(engine, case, route_json=IN_KREIS)
        c["in_kreis"].append(case)
    case = make_case(engine, text="Soest?", state=CaseState.NEEDS_CLARIFICATION, email="x@example.org")
    set_case(engine, case, route_json=IN_SOEST)
    c["in_soest"].append(case)
    c["answered"].append(make_case(engine, text="Danke", authority=KREIS, email="a@example.org",
                                   state=CaseState.ANSWERED))
    # What the issue saw: requests that name no place, routed by the real router -> needs_clarification,
    # and one the router has not taken yet (new, no office either).
    reqs = [InboundRequest(channel="web", external_id=f"web:unplaced-{i}", text=text,
                           contact=Contact(email=f"u{i}@example.org"))
            for i, text in enumerate(["Hallo, ich habe eine Frage.", "Können Sie mir helfen?",
                                      "Wann haben Sie geöffnet?"])]
    results = write_requests(engine, reqs)
    await asyncio.to_thread(service.routing.run_until_empty)
    c["unplaced"] += [r.case_id for r in results]
    # The clarification queue is the cases without an office. The router may flag a request and still
    # name an office (two services of one office, no place needed): that case is its office's, not the
    # queue's, so the expectations follow what the real router decided.
    with engine.connect() as conn:
        offices = dict(conn.execute(select(case_t.c.id, case_t.c.authority_id)
                                    .where(case_t.c.id.in_(c["unplaced"]))).all())
    c["flagged_with_office"] = [i for i in c["unplaced"] if offices[i] is not None]
    c["kreis"] += [i for i in c["flagged_with_office"] if offices[i] == KREIS[0]]
    c["unplaced"] = [i for i in c["unplaced"] if offices[i] is None]
    assert len(c["unplaced"]) >= 2, "the test needs requests the router cannot give an office"
    c["unplaced"].append(write_requests(engine, [InboundRequest(channel="web", external_id="web:new", text="Frage",
                                                                contact=Contact(email="n@example.org"))])[0].case_id)
    new_user(engine, "meier", "agent", authorities=[KREIS[0]])
    new_user(engine, "chefin", "supervisor", regions=["01060"])
    new_user(engine, "leezen", "agent", authorities=[AMT_LEEZEN[0]])
    new_user(engine, "admin", "admin")
    client.engine, client.cases, client.service = engine, c, service
    client.tokens = {"kreis": add_token(engine, "kreis", "agent", authorities=[KREIS[0]]),
                     "leezen": add_token(engine, "leezen", "agent", authorities=[AMT_LEEZEN[0]])}
    yield client
    engine.dispose()


async def _console_queue(client, name: str, query: str = "state=all") -> set[int]:
    await login(client, name)
    data = await (await client.get(f"/console/api/queue?{query}")).json()
    client.session.cookie_jar.clear()  # the next account logs in afresh
    assert data["total"] <= 50
    return {case["id"] for case in data["cases"]}


async def _api(client, token: str) -> set[int]:
    resp = await client.get("/api/cases?per_page=200", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200, await resp.text()
    return {case["id"] for case in (await resp.json())["cases"]}


def _routed_states(engine, ids) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(case_t.c.state).where(case_t.c.id.in_(ids))).scalars())


async def test_agents_of_the_kreis_see_the_clarification_cases_in_the_console_and_by_token(env):
    c = env.cases
    assert _routed_states(env.engine, c["unplaced"] + c["flagged_with_office"]) <= {"needs_clarification", "new"}
    clarification = set(c["unplaced"] + c["in_kreis"])
    kreis = await _console_queue(env, "meier")
    assert kreis == set(c["kreis"] + c["answered"]) | clarification
    assert await _api(env, env.tokens["kreis"]) == kreis, "an agent token sees what the account sees"
    # An office's agent does not work the Kreis' clarification queue, and nobody sees another Kreis' case.
    leezen = await _console_queue(env, "leezen")
    assert leezen == set(c["leezen"]) and await _api(env, env.tokens["leezen"]) == leezen
    assert not kreis & set(c["soest"] + c["in_soest"])
    # The queue's own view: only the cases without an office.
    assert await _console_queue(env, "meier", "state=all&clarification=1") == clarification
    await login(env, "meier")
    page = await (await env.get("/console/queue")).text()
    assert 'id="clarification-link"' in page and 'id="f-clarification"' in page


async def test_the_dashboard_counts_every_open_case_once_including_those_without_an_office(env, kb):
    c = env.cases
    now = datetime.now(UTC)
    period = dashboard.Period.from_query(None, None, dashboard.ZoneInfo("Europe/Berlin"), 7, 366)
    for name, scope in (("admin", Scope(everything=True)), ("chefin", make_scope("supervisor", [("region", "01060")]))):
        f = dashboard.compute(env.engine, period, scope, kb, ConsoleSettings(), now=now)
        clause = scope.case_clause(kb)
        with env.engine.connect() as conn:
            open_cases = conn.execute(select(func.count()).select_from(case_t).where(
                case_t.c.state.in_(dashboard.WORK_STATES), *([] if clause is None else [clause]))).scalar_one()
        assert f.queue_total == open_cases, name
        listed = await _console_queue(env, name, "state=open")
        assert f.queue_total == len(listed), f"{name}: the dashboard and the queue agree"
        without_office = {a: n for a, _, n in f.depth}[None]
        expected = len(c["unplaced"]) + len(c["in_kreis"]) + (len(c["in_soest"]) if name == "admin" else 0)
        assert without_office == expected, f"{name}: 'ohne Zuständigkeit' counts every case without an office"
    everything = dashboard.compute(env.engine, period, Scope(everything=True), kb, ConsoleSettings(), now=now)
    with env.engine.connect() as conn:
        total_open = conn.execute(select(func.count()).select_from(case_t)
                                  .where(case_t.c.state.in_(dashboard.WORK_STATES))).scalar_one()
    assert everything.queue_total == total_open == sum(len(v) for k, v in c.items() if k not in ("answered", "flagged_with_office"))


async def test_a_configured_team_works_the_queue_instead(env, kb, monkeypatch):
    monkeypatch.setattr(kb, "clarification_team", frozenset({AMT_LEEZEN[0]}))
    c = env.cases
    clarification = set(c["unplaced"] + c["in_kreis"])
    assert await _console_queue(env, "leezen") == set(c["leezen"]) | clarification
    assert await _api(env, env.tokens["leezen"]) == set(c["leezen"]) | clarification
    assert await _console_queue(env, "meier") == set(c["kreis"] + c["answered"])


def test_who_works_the_clarification_queue(kb):
    home = kb.regions.home_region
    assert make_scope("agent", [("region", home)]).works_clarification(kb)
    assert make_scope("agent", [("region", home[:2])]).works_clarification(kb)  # the Land contains the Kreis
    assert make_scope("agent", [("authority", KREIS[0])]).works_clarification(kb)
    assert not make_scope("agent", [("region", "010605053")]).works_clarification(kb)  # an Amt inside it
    assert not make_scope("agent", [("authority", AMT_LEEZEN[0])]).works_clarification(kb)
    assert not make_scope("agent", [("authority", SOEST[0])]).works_clarification(kb)
    assert not make_scope("agent", []).works_clarification(kb) and not Scope().works_clarification(None)
    row = {"authority_id": None, "route_json": None}
    assert make_scope("agent", [("authority", KREIS[0])]).covers_case(row, kb)
    assert not make_scope("agent", [("authority", KREIS[0])]).covers_case({**row, "route_json": IN_SOEST}, kb)
    assert RegionSettings(clarification_team="kreis-01060, amt-010605053").clarification_team == \
        ["kreis-01060", "amt-010605053"]


@pytest.mark.postgres
def test_the_clarification_queue_on_postgres(kb):
    from queue_support import pg_engine

    from hub.console.pages import list_queue

    with pg_engine() as engine:
        unplaced = make_case(engine, text="Frage?", email="p1@example.org", state=CaseState.NEEDS_CLARIFICATION)
        here = make_case(engine, text="Wo?", email="p2@example.org", state=CaseState.NEEDS_CLARIFICATION)
        set_case(engine, here, route_json=IN_KREIS)
        there = make_case(engine, text="Soest?", email="p3@example.org", state=CaseState.NEEDS_CLARIFICATION)
        set_case(engine, there, route_json=IN_SOEST)
        routed = make_case(engine, text="Pass", authority=KREIS, email="p4@example.org")
        filters = {"state": "open", "channel": "", "overdue": False, "page": 1}
        kreis = make_scope("agent", [("authority", KREIS[0])])
        listed = {c["id"] for c in list_queue(engine, kreis.case_clause(kb), filters, datetime.now(UTC))["cases"]}
        assert listed == {unplaced, here, routed}
        leezen = make_scope("agent", [("authority", AMT_LEEZEN[0])])
        assert list_queue(engine, leezen.case_clause(kb), filters, datetime.now(UTC))["cases"] == []
