"""Auth tests for every route of the real app (``hub.http.app.create_app`` with every module of ``hub.http.routes``).

The routes are read from the app's router, not from a list kept by hand: a route added to any module
later is checked here too, and fails unless it refuses an anonymous request or is put on the commented
allow-list below.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from console_support import (
    KREIS,
    SOEST,
    hub_engine,
    login,
    make_app,
    make_case,
    new_user,
    settings_for,
)

from hub.console.calls import start_call
from hub.http.routes import route_setups

#: Routes anyone may call without logging in, each with the reason. Everything else must refuse.
PUBLIC: dict[tuple[str, str], str] = {
    # Liveness/readiness probe of the orchestrator: says only "ok" and how many services are loaded.
    ("GET", "/healthz"): "health probe",
    # The public service lookup: catalogue and responsibility data, the same public information the
    # citizen form suggests and Open311 lists; no case, no contact data. Open on purpose so that
    # municipal web sites can link to it. The console's own /console/api/lookup needs a log-in.
    ("GET", "/api/lookup"): "public catalogue lookup",
    # The OpenAPI document describes the API; it contains no data.
    ("GET", "/api/openapi.json"): "API description",
    # The published catalogue of a region (public service descriptions); writes need a catalog token.
    ("GET", "/api/catalog/{ars}"): "public catalogue",
    # Prometheus scrape: aggregate counters only (intake by channel, queue depth by state), no ids,
    # no text. Restrict it at the network (scraper only); see the report to the lead.
    ("GET", "/metrics"): "metrics scrape (aggregates only)",
    # Open311 GeoReport v2 discovery and service list: public by the standard.
    ("GET", "/open311/v2"): "Open311 discovery",
    ("GET", "/open311/v2/"): "Open311 discovery",
    ("GET", "/open311/v2/discovery{ext}"): "Open311 discovery",
    ("GET", "/open311/v2/services{ext}"): "Open311 service list",
    ("GET", "/open311/v2/services/{code}{ext}"): "Open311 service definition",
    # The token answered to a batch submission is itself the secret; it maps only to a request id.
    ("GET", "/open311/v2/tokens/{token}{ext}"): "Open311 token → request id",
    # The status of one request without a key, as FixMyStreet asks for it (issue 15): the public status
    # fields only (no contact, no description, no place); listings still need the key.
    ("GET", "/open311/v2/requests/{id}{ext}"): "Open311 public status of one request",
    # The citizen channel: the request form, its suggestions and the status page (the unguessable
    # status token is the citizen's key; the form posts carry the web channel's own CSRF token).
    ("GET", "/"): "citizen form",
    ("POST", "/"): "citizen form post (CSRF of the web channel)",
    ("POST", "/web/suggest"): "citizen form suggestions (CSRF header)",
    ("GET", "/status"): "citizen status look-up by reference number (redirects to the token's page)",
    ("GET", "/status/{token}"): "citizen status page (token is the key)",
    ("POST", "/status/{token}"): "citizen reply on the status page (token + CSRF)",
    ("GET", "/static/web"): "static files of the citizen form",
    # The console's way in: the log-in form, its post, the bare /console redirect and its CSS/JS.
    ("GET", "/console"): "redirect to /console/",
    ("GET", "/console/login"): "log-in form",
    ("POST", "/console/login"): "log-in (CSRF of the log-in form)",
    ("GET", "/console/static/{name}"): "console CSS and JS",
}


def _routes(app) -> list[tuple[str, str]]:
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix") or ""
        out.append((route.method, path))
    return out


def _public_key(method: str, path: str) -> tuple[str, str]:
    return ("GET" if method == "HEAD" else method, path)


@pytest.fixture
async def env(tmp_path, demo_db_url, kb, aiohttp_client):
    engine, url = hub_engine(tmp_path, demo_db_url)
    app, _service = make_app(settings_for(tmp_path, url), engine, kb)
    client = await aiohttp_client(app)
    new_user(engine, "meier", authorities=[KREIS[0]])
    mine = make_case(engine, text="Reisepass", authority=KREIS, email="a@example.org")
    other = make_case(engine, text="Reisepass", authority=SOEST, email="b@example.org")
    call = start_call(engine, "meier")
    return SimpleNamespace(app=app, client=client, engine=engine, mine=mine, other=other, call=call)


def _fill(path: str, case_id: int, call_id: int) -> str:
    # Real ids, so that a handler which checks the id before the session (404) would fail this test.
    values = {"{case_id}": str(case_id), "{call_id}": str(call_id), "{name}": "console.css", "{ars}": "010600000000",
              "{code}": "sh-reisepass", "{ext}": ".json", "{id}": str(case_id), "{token}": "x" * 22,
              "{tail}": "nope"}
    for key, value in values.items():
        path = path.replace(key, value)
    return path


async def test_every_route_refuses_anonymous_requests_except_the_public_ones(env):
    assert "hub.console.pages:setup" in route_setups() and "hub.http.api_cases:setup" in route_setups()
    routes = _routes(env.app)
    served = {_public_key(m, p) for m, p in routes}
    stale = sorted(set(PUBLIC) - served)
    assert not stale, f"allow-list entries without a route (remove them): {stale}"

    refused, failures = 0, []
    for method, path in routes:
        url = _fill(path, env.mine, env.call)
        # A catch-all route ("*") answers the methods nobody else serves on its path: send it one of those.
        send = "DELETE" if method == "*" else method
        # Writes carry a plausible form, so that a refusal is about the missing log-in, not the body.
        body = {"service_code": "sh-reisepass", "description": "x", "text": "x"} if send in ("POST", "PUT") else None
        resp = await env.client.request(send, url, data=body, allow_redirects=False, headers={"Accept": "text/html"})
        await resp.read()
        status, location = resp.status, resp.headers.get("Location", "")
        if method == "*":
            # It must refuse (unknown path 404, wrong method 405, or no log-in), never do the work.
            if status in (401, 403, 404, 405):
                refused += 1
            else:
                failures.append(f"catch-all {path} answered DELETE with {status}")
            continue
        if _public_key(method, path) in PUBLIC:
            if status >= 500:
                failures.append(f"public {method} {path} -> {status}")
            continue
        to_login = status in (302, 303) and location.startswith("/console/login")
        if status in (401, 403) or to_login:
            refused += 1
        else:
            failures.append(f"{method} {path} answered {status} {location} without a log-in")
    assert not failures, "\n".join(failures)
    # Console pages, console API/actions/events, the token APIs of queue, catalogue and Open311 writes.
    assert refused >= 30, refused


async def test_console_pages_redirect_and_apis_say_401(env):
    """A person who opens a console page is sent to the log-in; scripts get 401 JSON, never a page."""
    page = await env.client.get("/console/queue?state=all", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/console/login?next=/console/queue?state%3Dall"
    for path in ("/console/api/queue", f"/console/api/cases/{env.mine}", "/console/events", "/console/api/lookup?q=x"):
        resp = await env.client.get(path, allow_redirects=False)
        assert resp.status == 401, path
        assert "error" in await resp.json()


async def test_every_state_changing_console_route_needs_the_csrf_token(env):
    """Logged in, but without (or with a wrong) CSRF token: every non-GET console route refuses with 403."""
    csrf = await login(env.client, "meier")
    writes = [(m, p) for m, p in _routes(env.app)
              if p.startswith("/console") and m not in ("GET", "HEAD", "OPTIONS") and p != "/console/login"]
    assert len(writes) == 10, writes  # 9 of the console, 1 of the paper channel (review)
    for method, path in writes:
        url = _fill(path, env.mine, env.call)
        for headers, data in (({"Accept": "application/json"}, None),
                              ({"Accept": "application/json", "X-CSRF-Token": csrf[::-1]}, None),
                              ({}, {"csrf_token": "forged"})):
            resp = await env.client.request(method, url, headers=headers, data=data, allow_redirects=False)
            assert resp.status == 403, (method, path, headers, resp.status)
    # Nothing happened: the call is still open and no case changed state.
    from sqlalchemy import select

    from hub.console.calls import call_t
    from hub.queue.cases import case_t
    with env.engine.connect() as conn:
        assert conn.execute(select(call_t.c.outcome).where(call_t.c.id == env.call)).scalar() is None
        assert set(conn.execute(select(case_t.c.state)).scalars()) == {"routed"}
    # And the session still works: the right token is accepted.
    ok = await env.client.post("/console/calls", json={}, headers={"Accept": "application/json",
                                                                   "X-CSRF-Token": csrf})
    assert ok.status == 201


async def test_no_case_route_opens_a_case_of_another_authority(env):
    """An agent of Kreis Segeberg: every console route with a case id answers 404 for a case of Soest."""
    csrf = await login(env.client, "meier")
    headers = {"Accept": "application/json", "X-CSRF-Token": csrf}
    case_routes = [(m, p) for m, p in _routes(env.app) if p.startswith("/console") and "{case_id}" in p]
    assert len(case_routes) >= 6, case_routes
    for method, path in case_routes:
        body = {"text": "x", "note": "x", "reason": "x", "service_id": "sh-reisepass", "authority_id": KREIS[0]}
        resp = await env.client.request(method, _fill(path, env.other, env.call), headers=headers,
                                        json=body if method == "POST" else None)
        assert resp.status == 404, (method, path, resp.status)
        if method == "GET":  # the same route opens the agent's own case
            mine = await env.client.get(_fill(path, env.mine, env.call), headers=headers)
            assert mine.status == 200, (path, mine.status)
    from sqlalchemy import select

    from hub.queue.cases import case_t, message_t
    with env.engine.connect() as conn:
        assert conn.execute(select(case_t.c.state).where(case_t.c.id == env.other)).scalar() == "routed"
        assert conn.execute(select(message_t.c.id).where(message_t.c.case_id == env.other,
                                                         message_t.c.direction == "out")).first() is None
