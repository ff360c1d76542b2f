"""Issue 14, item 1: agent API tokens are scoped like console accounts, by the one rule of hub.scope.

The attack replayed: ``token add x --role agent`` gave a token that listed, answered, forwarded and
re-routed the cases of every authority. Now a token of Kreis Segeberg gets 404 for Soest's cases on every
``/api/cases*`` endpoint and changes nothing; the API and the console show the same cases for the same
scope; an unscoped agent token is refused at creation; one from before scopes existed gets 403.
"""

from __future__ import annotations

import asyncio

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
from sqlalchemy import delete, func, insert, select

from hub.http.api_cases import QUEUE
from hub.http.tokens import (
    TokenError,
    add_token,
    case_scope_t,
    hash_token,
    list_tokens,
    new_token,
    set_case_scope,
    token_t,
)
from hub.migrate import upgrade
from hub.queue.cases import CaseState, audit_t, case_t, example_t, message_t


@pytest.fixture
async def env(tmp_path, demo_db_url, kb, aiohttp_client):
    engine, url = hub_engine(tmp_path, demo_db_url)
    app, service = make_app(settings_for(tmp_path, url), engine, kb)
    client = await aiohttp_client(app)
    cases = {
        "kreis": make_case(engine, text="Wunschkennzeichen bitte", authority=KREIS, email="k@example.org"),
        "leezen": make_case(engine, text="Hund anmelden in Todesfelde", authority=AMT_LEEZEN, email="l@example.org"),
        "soest": make_case(engine, text="Wunschkennzeichen in Soest", authority=SOEST, email="s@example.org"),
        # Not routed to an office yet; the router found a place in Kreis Soest.
        "soest-unrouted": make_case(engine, text="Wo ist das?", state=CaseState.NEEDS_CLARIFICATION,
                                    email="u@example.org"),
    }
    set_case(engine, cases["soest-unrouted"], route_json={"location": {"ars": "059740036036", "name": "Soest"}})
    tokens = {
        "kreis": add_token(engine, "agent.kreis", "agent", authorities=[KREIS[0]]),
        "region": add_token(engine, "agent.segeberg", "agent", ["01060"]),
        "soest-region": add_token(engine, "agent.soest", "agent", ["05974"]),
        "all": add_token(engine, "agent.all", "agent", all_authorities=True),
    }
    client.engine, client.cases, client.tokens, client.service = engine, cases, tokens, service
    yield client
    engine.dispose()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def listed(client, token: str, query: str = "") -> set[int]:
    resp = await client.get(f"/api/cases?per_page=200{query}", headers=auth(token))
    assert resp.status == 200, await resp.text()
    return {c["id"] for c in (await resp.json())["cases"]}


def snapshot(engine) -> tuple:
    with engine.connect() as conn:
        return (conn.execute(select(case_t.c.id, case_t.c.state, case_t.c.authority_id, case_t.c.service_id,
                                    case_t.c.assigned_agent).order_by(case_t.c.id)).all(),
                conn.execute(select(func.count()).select_from(message_t)).scalar(),
                conn.execute(select(func.count()).select_from(audit_t)).scalar(),
                conn.execute(select(func.count()).select_from(example_t)).scalar())


async def test_a_token_of_one_authority_sees_only_its_cases(env):
    c = env.cases
    assert await listed(env, env.tokens["kreis"]) == {c["kreis"]}
    assert await listed(env, env.tokens["region"]) == {c["kreis"], c["leezen"]}
    assert await listed(env, env.tokens["soest-region"]) == {c["soest"], c["soest-unrouted"]}
    assert await listed(env, env.tokens["all"]) == set(c.values())
    # A filter for another authority finds nothing instead of widening the scope.
    assert await listed(env, env.tokens["kreis"], f"&authority={SOEST[0]}") == set()
    assert (await env.get(f"/api/cases/{c['kreis']}", headers=auth(env.tokens["kreis"]))).status == 200


@pytest.mark.parametrize("endpoint, body", [
    ("transition", {"to": "closed", "reason": "attack"}),
    ("reroute", {"service_id": "sh-wunschkennzeichen", "authority_id": KREIS[0]}),
    ("reply", {"text": "Ihre Daten gehören jetzt mir"}),
    ("forward", {"authority_id": KREIS[0], "note": "an mich"}),
])
async def test_every_case_endpoint_answers_404_outside_the_scope_and_changes_nothing(env, endpoint, body):
    foreign = env.cases["soest"]
    before = snapshot(env.engine)
    for token in (env.tokens["kreis"], env.tokens["region"]):
        not_there = {"error": f"Fall {foreign} nicht gefunden", "code": "not_found", "case_id": foreign}
        got = await env.get(f"/api/cases/{foreign}", headers=auth(token))
        assert got.status == 404 and await got.json() == not_there
        resp = await env.post(f"/api/cases/{foreign}/{endpoint}", json=body, headers=auth(token))
        assert resp.status == 404, await resp.text()
        assert await resp.json() == not_there, "the same answer as for a case that does not exist"
    assert snapshot(env.engine) == before


async def test_inside_the_scope_the_actions_work(env):
    own = env.cases["leezen"]
    resp = await env.post(f"/api/cases/{own}/reply", json={"text": "Gern geschehen."},
                          headers=auth(env.tokens["region"]))
    assert resp.status == 201, await resp.text()
    # Re-routing to an office outside the scope is allowed (as in the console): the case then leaves it.
    resp = await env.post(f"/api/cases/{own}/reroute", headers=auth(env.tokens["region"]),
                          json={"service_id": "sh-wunschkennzeichen", "authority_id": SOEST[0]})
    assert resp.status == 200, await resp.text()
    assert (await env.get(f"/api/cases/{own}", headers=auth(env.tokens["region"]))).status == 404
    assert own in await listed(env, env.tokens["soest-region"])


async def test_the_api_and_the_console_show_the_same_cases_for_the_same_scope(env):
    """One rule (hub.scope.Scope), two entry points: the same scope gives the same list."""
    for name, kwargs, token in (("k", {"authorities": [KREIS[0]]}, "kreis"),
                                ("r", {"regions": ["01060"]}, "region"),
                                ("s", {"regions": ["05974"]}, "soest-region")):
        new_user(env.engine, f"console.{name}", **kwargs)
        env.session.cookie_jar.clear()
        await login(env, f"console.{name}")
        resp = await env.get("/console/api/queue?state=all", headers={"Accept": "application/json"})
        assert resp.status == 200
        console = {c["id"] for c in (await resp.json())["cases"]}
        assert console == await listed(env, env.tokens[token]), name
        for case_id in env.cases.values():
            page = await env.get(f"/console/api/cases/{case_id}", headers={"Accept": "application/json"})
            api = await env.get(f"/api/cases/{case_id}", headers=auth(env.tokens[token]))
            assert (page.status == 200) == (api.status == 200) == (case_id in console), (name, case_id)


def test_an_unscoped_agent_token_is_refused_at_creation(env):
    with pytest.raises(TokenError, match="needs --authority ID or --region ARS"):
        add_token(env.engine, "agent.nobody", "agent")
    for kwargs, message in (
        ({"authorities": ["no-such-office"]}, "unknown authority"),
        ({"regions": ["0106"]}, "not an ARS"),
        ({"all_authorities": True, "authorities": [KREIS[0]]}, "already covers every authority"),
    ):
        with pytest.raises(TokenError, match=message):
            add_token(env.engine, "agent.bad", "agent", **kwargs)
    with pytest.raises(TokenError, match="for agent tokens only"):
        add_token(env.engine, "service.x", "service", authorities=[KREIS[0]])
    with env.engine.connect() as conn:
        names = set(conn.execute(select(token_t.c.name)).scalars())
    assert not names & {"agent.nobody", "agent.bad", "service.x"}, "a refused token leaves no row"
    shown = {t["name"]: t["scope"] for t in list_tokens(env.engine)}
    assert shown["agent.all"] == "all authorities"
    assert shown["agent.kreis"] == f"authority:{KREIS[0]}"
    assert shown["agent.segeberg"] == "region:01060"


async def test_a_token_from_before_scopes_is_refused_until_an_admin_scopes_it(env):
    token = add_token(env.engine, "agent.legacy", "agent", authorities=[KREIS[0]])
    with env.engine.begin() as conn:  # what 0007_security leaves for a token made before it
        legacy_id = conn.execute(select(token_t.c.id).where(token_t.c.name == "agent.legacy")).scalar()
        conn.execute(delete(case_scope_t).where(case_scope_t.c.token_id == legacy_id))
    verifier = env.app[QUEUE].tokens
    verifier._loaded_at = float("-inf")  # the next request reloads (as within 5 s in a running hub)
    for path in ("/api/cases", f"/api/cases/{env.cases['kreis']}"):
        resp = await env.get(path, headers=auth(token))
        assert resp.status == 403
        assert "citizen-hub token scope agent.legacy" in (await resp.json())["error"]
    assert {t["name"]: t["scope"] for t in list_tokens(env.engine)}["agent.legacy"] == "NO SCOPE (refused)"
    set_case_scope(env.engine, "agent.legacy", authorities=[KREIS[0]])
    verifier._loaded_at = float("-inf")
    assert await listed(env, token) == {env.cases["kreis"]}
    with pytest.raises(TokenError, match="only agent tokens"):
        add_token(env.engine, "svc", "service")
        set_case_scope(env.engine, "svc", all_authorities=True)


def test_the_migration_leaves_existing_agent_tokens_without_scope(tmp_path):
    from hub.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    upgrade(engine, "0004_queue")
    from datetime import UTC, datetime

    with engine.begin() as conn:
        conn.execute(insert(token_t).values(name="old.agent", role="agent", token_hash=hash_token(new_token()),
                                            created_at=datetime.now(UTC)))
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(case_scope_t)).scalar() == 0
    assert list_tokens(engine)[0]["scope"] == "NO SCOPE (refused)"
    engine.dispose()


async def test_scope_changes_reach_a_running_hub_on_the_next_reload(env):
    token = env.tokens["kreis"]
    assert await listed(env, token) == {env.cases["kreis"]}
    await asyncio.to_thread(set_case_scope, env.engine, "agent.kreis", regions=["05974"])
    env.app[QUEUE].tokens._loaded_at = float("-inf")
    assert await listed(env, token) == {env.cases["soest"], env.cases["soest-unrouted"]}
