"""Issue 14, item 4: every integer parameter of every route is bounded; out of bounds is 400 with a message.

``GET /api/cases?page=2**62`` was a 500 (SQLite's 64-bit integers overflowed in the OFFSET). The named
cases below are the parameters we know; the sweep after them walks the app's router and throws huge,
negative and non-ASCII numbers at every path parameter and at the usual query parameters of every route,
with every kind of credential, and fails on any 5xx — so a route added later is covered too.
"""

from __future__ import annotations

import re

import pytest
from console_support import hub_engine, login, make_app, new_user, settings_for
from web_support import open_form

from channels.paper.settings import PaperSettings
from hub.http.inputs import MAX_ID, MAX_PAGE, BadParameter, int_param, path_id
from hub.http.tokens import add_token

HUGE = str(2**62)
#: Too large for 64 and 32 bits, negative, a digit int() refuses, digits of another script, no number.
HOSTILE_NUMBERS = ("9" * 30, str(2**31), "-1", "²", "١٢", "")


@pytest.fixture
async def env(tmp_path, demo_db_url, kb, aiohttp_client):
    engine, url = hub_engine(tmp_path, demo_db_url)
    settings = settings_for(tmp_path, url)
    # Every channel configured, so that the sweep reaches each route's own parsing (not "not configured").
    settings.paper = PaperSettings(hmac_key="k" * 32, print_dir=str(tmp_path / "print"))
    app, _service = make_app(settings, engine, kb)
    client = await aiohttp_client(app)
    new_user(engine, "root", "admin")
    await login(client, "root")
    client.agent = {"Authorization": "Bearer " + add_token(engine, "agent.all", "agent", all_authorities=True)}
    client.catalog = {"Authorization": "Bearer " + add_token(engine, "cat", "catalog", ["01060"])}
    client.open311 = add_token(engine, "city", "open311")
    yield client
    engine.dispose()


def test_int_param_takes_ascii_digits_within_bounds_only():
    assert int_param("42", "page", minimum=1, maximum=100) == 42
    assert int_param(None, "page", minimum=1, maximum=100, default=1) == 1
    assert path_id(str(MAX_ID)) == MAX_ID
    for raw in ("²", "١٢", "1_0", "1.0", "abc", "0", str(MAX_ID + 1), "9" * 30):
        with pytest.raises(BadParameter, match="ganze Zahl von 1 bis"):
            path_id(raw, "case_id")
    with pytest.raises(BadParameter, match="'limit' fehlt"):
        int_param("", "limit", maximum=10)


@pytest.mark.parametrize("path, message", [
    (f"/api/cases?page={HUGE}", "'page' muss eine ganze Zahl von 1 bis 100000 sein"),
    (f"/api/cases?page={MAX_PAGE + 1}", "'page'"),
    ("/api/cases?page=0", "'page'"),
    (f"/api/cases?per_page={HUGE}", "'per_page' muss eine ganze Zahl von 1 bis 200 sein"),
    ("/api/cases?per_page=²", "'per_page'"),
    (f"/api/cases/{HUGE}", "'case_id' muss eine ganze Zahl"),
    ("/api/cases/²", "'case_id'"),
    ("/api/cases/-5", "'case_id'"),
    (f"/api/lookup?q=pass&limit={HUGE}", "'limit' muss eine ganze Zahl von 1 bis 100 sein"),
    ("/api/lookup?q=pass&limit=²", "'limit'"),
    (f"/console/api/queue?page={HUGE}", "'page'"),
    (f"/console/api/cases/{HUGE}", "ganze Zahl"),
    (f"/console/?call={HUGE}", "'call'"),
    ("/console/api/dashboard?from=9999-12-25&to=9999-12-31", "Das Datum muss zwischen"),
    ("/console/api/dashboard?from=0001-01-01&to=0001-01-02", "Das Datum muss zwischen"),
])
async def test_named_integer_parameters_answer_400_with_a_message(env, path, message):
    headers = env.agent if path.startswith("/api/cases") else {"Accept": "application/json"}
    resp = await env.get(path, headers=headers)
    assert resp.status == 400, await resp.text()
    assert message in (await resp.json())["error"]


async def test_the_catalogue_api_bounds_since_and_if_match(env):
    resp = await env.get(f"/api/catalog/01060?since={HUGE}", headers=env.catalog)
    assert resp.status == 400 and "'since' muss eine Versionsnummer sein" in (await resp.json())["error"]
    resp = await env.get("/api/catalog/01060?since=²", headers=env.catalog)
    assert resp.status == 400
    resp = await env.post("/api/catalog/01060/changes", json={"write": {}}, headers={**env.catalog,
                                                                                   "If-Match": '"²"'})
    assert resp.status in (400, 412), await resp.text()


async def test_open311_ids_are_bounded_in_its_error_list(env):
    for path in (f"/open311/v2/requests/{HUGE}.json", "/open311/v2/requests/%C2%B2.json",
                 f"/open311/v2/requests.json?service_request_id={HUGE}"):
        sep = "&" if "?" in path else "?"
        resp = await env.get(f"{path}{sep}api_key={env.open311}")
        assert resp.status == 400, (path, await resp.text())
        body = await resp.json()
        assert body[0]["code"] == 400 and "service_request_id" in body[0]["description"]


def _paths(app) -> list[tuple[str, str, list[str]]]:
    """(method, path template, parameter names) of every route with a template."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("formatter") or info.get("path")
        if template and "prefix" not in info:
            out.append((route.method, template, re.findall(r"\{(\w+)", template)))
    return out


def _fill(template: str, value: str) -> str:
    # "{ext}" segments are formats (.json/.xml), not numbers; every other parameter gets the value.
    return re.sub(r"\{(\w+)\}", lambda m: ".json" if m.group(1) == "ext" else value, template)


QUERY = "&".join(f"{name}={{v}}" for name in ("page", "per_page", "limit", "since", "call", "id",
                                            "service_request_id", "lat", "long"))


async def test_no_route_answers_5xx_to_hostile_numbers(env):
    """The sweep: every route, every credential, hostile numbers in the path and in the usual parameters."""
    form = await open_form(env)
    # None, agent and catalogue tokens (the Open311 key rides in the query), the console session.
    credentials = [env.agent, env.catalog, {"Accept": "application/json", "X-CSRF-Token": form["csrf_token"]}]
    seen = 0
    for method, template, _params in _paths(env.app):
        if method == "HEAD":
            continue
        for value in HOSTILE_NUMBERS:
            path = _fill(template, value if value else "1")
            url = f"{path}?{QUERY.format(v=value)}&api_key={env.open311}"
            for headers in credentials:
                if method == "GET":
                    resp = await env.get(url, headers=headers)
                else:
                    resp = await env.request(method if method != "*" else "PATCH", url, json={}, headers=headers)
                assert resp.status < 500, (method, url, headers.keys(), resp.status, (await resp.text())[:300])
                seen += 1
    assert seen > 300, "the sweep must actually walk the routes"


@pytest.mark.parametrize("digits", ["²⁴⁵⁷⁶", "١٢٣٤٥", "𝟐𝟒𝟓𝟕𝟔", "２４５７６"])
def test_digits_of_other_scripts_are_no_number_anywhere(kb, digits):
    """str.isdigit() is true for "²" and int("²") fails: every parser checks ASCII digits first."""
    from hub.queue.requests import normalise_phone
    from knowledge.regions import _digits, _int

    assert kb.regions.resolve(digits).match is None
    assert kb.lookup(digits + "123456789").answers == []
    assert _digits(digits, 5) is None and _int(digits) is None
    with pytest.raises(ValueError):
        normalise_phone("+49" + digits + "1234")
