"""Issue 14, items 7 and 8 on the real app: write health in /healthz, Allow on every 405, /metrics behind a
token or on its own listener, catalogue text sanitised for outside clients, one strict JSON decoder."""

from __future__ import annotations

import re
import shutil
import time

import aiohttp
import pytest
from console_support import hub_engine, make_app, settings_for
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hub.health import watch
from hub.http import api_cases, api_catalog, inputs
from hub.http.api_cases import QUEUE
from hub.http.tokens import add_token
from knowledge.models import Service

HOSTILE_HTML = ('<p onclick="steal()">Bitte <strong>Ausweis</strong> <em>mitbringen</em>.<script>alert(1)</script>'
                '<style>*{display:none}</style><img src=x onerror=alert(2)><iframe src="//evil"></iframe>'
                '<a href="javascript:alert(3)">hier</a> <a href="https://www.segeberg.de/antrag">Antrag</a>'
                '<ul><li>Foto</li></ul><br><div>Text bleibt</div></p>')


def assert_clean(text: str) -> None:
    for bad in ("<script", "alert(1)", "<style", "display:none", "<img", "onerror", "onclick", "<iframe",
                "javascript:", "<div"):
        assert bad not in text, (bad, text)
    for kept in ("<strong>Ausweis</strong>", "<em>mitbringen</em>", "<li>Foto</li>", "<br>",
                 '<a href="https://www.segeberg.de/antrag" rel="noopener noreferrer">Antrag</a>', "Text bleibt"):
        assert kept in text, (kept, text)


@pytest.fixture
async def make(tmp_path, demo_db_url, kb, aiohttp_client):
    engine, url = hub_engine(tmp_path, demo_db_url)

    async def build(**server):
        settings = settings_for(tmp_path, url)
        for key, value in server.items():
            setattr(settings.server, key, value)
        app, service = make_app(settings, engine, kb)
        client = await aiohttp_client(app)
        client.engine, client.settings = engine, settings
        return client

    yield build
    engine.dispose()


# -- /healthz and write health ----------------------------------------------------------------------------


def _fill_the_disk(engine) -> None:
    """A real SQLITE_FULL on the app's own engine: the file may not grow by a single page."""
    with pytest.raises(OperationalError, match="full"), engine.begin() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
        conn.exec_driver_sql("CREATE TABLE filler AS SELECT zeroblob(2000000) AS x")
    engine.dispose()  # that connection keeps its page limit; the pool opens fresh ones


async def test_healthz_answers_503_after_a_failed_write_and_recovers(make):
    client = await make(health_min_free_bytes=0)
    ok = await client.get("/healthz")
    assert ok.status == 200 and (await ok.json())["writable"] is True
    _fill_the_disk(client.engine)
    resp = await client.get("/healthz")
    body = await resp.json()
    assert resp.status == 503 and body["status"] == "unavailable" and body["writable"] is False
    assert body["database"] is True, "reads still work: that is why a ping alone was not enough"
    assert any("Schreibzugriff auf die Datenbank" in r and "full" in r for r in body["reasons"]), body
    health = watch(client.engine)
    health.failed_at = time.monotonic() - 61  # the window of [server] health_write_failure_seconds passed
    assert (await client.get("/healthz")).status == 200


async def test_refused_input_is_no_write_failure(make):
    client = await make(health_min_free_bytes=0)
    token = add_token(client.engine, "agent.all", "agent", all_authorities=True)
    try:
        add_token(client.engine, "agent.all", "agent", all_authorities=True)  # IntegrityError: a duplicate name
    except Exception:
        pass
    assert (await client.get("/api/cases/1", headers={"Authorization": f"Bearer {token}"})).status == 404
    assert (await client.get("/healthz")).status == 200


async def test_healthz_answers_503_below_the_free_space_threshold(make, tmp_path):
    free = shutil.disk_usage(tmp_path).free
    client = await make(health_min_free_bytes=free + 10**12)
    resp = await client.get("/healthz")
    body = await resp.json()
    assert resp.status == 503 and any("MB frei unter" in r for r in body["reasons"]), body


# -- 405 carries Allow, everywhere ------------------------------------------------------------------------


async def test_every_405_carries_allow(make):
    client = await make()
    by_path: dict[str, set[str]] = {}
    for resource in client.app.router.resources():
        info = resource.get_info()
        path = (info.get("formatter") or info.get("path") or "").replace("{ext}", ".json")
        if path and "prefix" not in info:
            by_path.setdefault(re.sub(r"\{\w+\}", "1", path), set()).update(r.method for r in resource)
    seen = 0
    for path, methods in by_path.items():
        if "*" in methods:
            continue
        for method in ("DELETE", "PATCH", "PUT", "POST", "GET"):
            if method in methods:
                continue
            resp = await client.request(method, path)
            if resp.status == 405:
                allow = {m.strip() for m in resp.headers.get("Allow", "").split(",") if m.strip()}
                assert allow and method not in allow and allow <= methods, (method, path, allow)
                seen += 1
    assert seen >= 40, seen


# -- /metrics ---------------------------------------------------------------------------------------------


async def test_metrics_can_require_a_token(make):
    client = await make(metrics_token="m" * 40)
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
    resp = await client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 40})
    assert resp.status == 200 and "citizen_hub_queue_depth" in await resp.text()


async def test_metrics_can_live_on_a_listener_of_its_own(make):
    client = await make(metrics_separate=True, metrics_host="127.0.0.1", metrics_port=0)
    assert (await client.get("/metrics")).status == 404, "not on the public port"
    listener = client.app[QUEUE].extra["metrics_listener"]
    assert listener.port and listener.port != client.port
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{listener.port}/metrics") as resp:
            assert resp.status == 200 and "citizen_hub_queue_depth" in await resp.text()


async def test_metrics_stay_open_by_default(make):
    client = await make()
    assert (await client.get("/metrics")).status == 200


# -- catalogue text for outside clients -------------------------------------------------------------------


async def test_catalogue_html_reaches_outside_clients_cut_to_the_allowed_tags(make, kb):
    client = await make()
    service = Service(id="test-html", name="Ausweis beantragen", synonyms=["Ausweistest"], short_text=HOSTILE_HTML,
                      documents=[HOSTILE_HTML], fees=HOSTILE_HTML, level="kreis", topic="Test")
    kb.apply_service(service)
    try:
        resp = await client.get("/open311/v2/services.json")
        [record] = [s for s in await resp.json() if s["service_code"] == "test-html"]
        assert_clean(record["description"])
        resp = await client.get("/open311/v2/services/test-html.json")
        for attribute in (await resp.json())["attributes"]:
            assert "<script" not in attribute["description"] and "onerror" not in attribute["description"]
        resp = await client.get("/api/lookup", params={"q": "Ausweistest", "location": "Bad Segeberg"})
        [answer] = [r for r in (await resp.json())["results"] if r["service"]["id"] == "test-html"]
        assert_clean(answer["service"]["short_text"])
        assert_clean(answer["service"]["fees"])
        assert_clean(answer["service"]["documents"][0])
    finally:
        kb.remove_service("test-html")


async def test_the_catalogue_api_reads_are_sanitised_and_the_stored_text_is_kept(make):
    client = await make()
    headers = {"Authorization": "Bearer " + add_token(client.engine, "segeberg", "catalog", ["01060"])}
    body = {"write": {"leistung": [{"id": "se-html", "name": "Ausweis", "ebene": "kreis",
                                    "textmodule": {"kurztext": HOSTILE_HTML, "volltext": HOSTILE_HTML,
                                                   "unterlagen": [HOSTILE_HTML]}}]}}
    resp = await client.post("/api/catalog/01060/changes", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    for path in ("/api/catalog/01060", "/api/catalog/01060?since=0"):
        resp = await client.get(path, headers=headers)
        assert resp.status == 200
        text = await resp.text()
        assert "se-html" in text and "\\u003cscript" not in text and "<script" not in text, path
    full = await (await client.get("/api/catalog/01060", headers=headers)).json()
    [service] = [s for s in full["catalog"]["leistung"] if s["id"] == "se-html"]
    for field in ("kurztext", "volltext"):
        assert_clean(service["textmodule"][field])
    assert_clean(service["textmodule"]["unterlagen"][0])
    with client.engine.connect() as conn:
        stored = conn.execute(select(Service.__table__.c.short_text)
                              .where(Service.__table__.c.id == "se-html")).scalar()
    assert stored == HOSTILE_HTML, "the municipality's text is stored as written; only what leaves is cut"


# -- one strict JSON decoder --------------------------------------------------------------------------------


def test_the_catalogue_api_and_the_request_api_share_one_strict_decoder():
    assert api_catalog.strict_loads is inputs.strict_loads is api_cases.strict_loads
    for body in (b'{"a": 1, "a": 2}', b'{"x": NaN}', b'{"n": ' + b"9" * 30 + b"}"):
        with pytest.raises(inputs.StrictJsonError):
            inputs.strict_loads(body)
    assert inputs.may_have_duplicate_keys(b'{"text": 1, "text": 2}')
    assert inputs.may_have_duplicate_keys(b'{"text": 1, "\\u0074ext": 2}')
    assert not inputs.may_have_duplicate_keys(b'{"text": "a \\"text\\": b", "external_id": "x"}')


async def test_api_requests_refuses_duplicate_keys(make):
    client = await make()
    headers = {"Authorization": "Bearer " + add_token(client.engine, "frontend", "service"),
               "Content-Type": "application/json"}
    for body in (b'{"external_id": "d1", "text": "harmlos", "text": "anders"}',
                 b'{"external_id": "d2", "text": "x", "\\u0074ext": "y"}',
                 b'{"external_id": "d3", "text": "x", "contact": {"email": "a@example.de", "email": "b@example.de"}}'):
        resp = await client.post("/api/requests", data=body, headers=headers)
        assert resp.status == 400, await resp.text()
        assert "kommt in einem Objekt zweimal vor" in (await resp.json())["error"]
    ok = await client.post("/api/requests", data=b'{"external_id": "d4", "text": "Reisepass"}', headers=headers)
    assert ok.status == 201
