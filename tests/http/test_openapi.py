"""The served OpenAPI document: every operation describes its parameters, body, responses (with schemas)
and security, the document has ``servers``; and schemathesis runs against it with every token role
(agent scoped, agent of all authorities, service, catalog, Open311), an admin's console session and
anonymously: no 5xx, every status, content type and JSON body as the document says (issues 14 and 15).

Bounded: a few examples an operation and a role (``EXAMPLES``), no shrinking, a deadline per call."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from twilio_support import twilio_settings
from web_support import make_app, settings_for

from hub.console.auth import add_user, create_session
from hub.http.tokens import add_token

EXAMPLES = 3  # per operation and role: 64 operations x 7 roles in well under a minute
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
PASSWORD = "Sehr-geheim-2026!"


@pytest.mark.parametrize("twilio", [False, True], ids=["default", "twilio-on"])
def test_every_operation_is_described_in_full(hub, kb, tmp_path, twilio):
    engine, url = hub
    hub_settings = settings_for(tmp_path, url)
    if twilio:  # the SMS and phone webhooks exist only when the channel is on
        hub_settings.twilio = twilio_settings()
    app, _ = make_app(hub_settings, engine, kb)
    from hub.http.openapi import build_spec

    spec = build_spec(app)
    assert spec["servers"] and all("url" in s for s in spec["servers"])
    ops = [(m, p, op) for p, item in spec["paths"].items() for m, op in item.items()]
    assert len(ops) >= (64 if twilio else 58)
    schemes = spec["components"]["securitySchemes"]
    for method, path, op in ops:
        where = f"{method.upper()} {path}"
        assert not op.get("x-undocumented"), f"{where} is not described"
        assert "security" in op, f"{where} says nothing about security"
        for requirement in op["security"]:
            assert set(requirement) <= set(schemes), where
        assert op["summary"], where
        for name in __import__("re").findall(r"\{(\w+)", path):
            assert any(p["in"] == "path" and p["name"] == name and p.get("schema") for p in op["parameters"]), where
        answers = [r for code, r in op["responses"].items() if code.startswith("2")]
        assert answers and all(r.get("content") for r in answers), f"{where}: a success without a body schema"
        assert any(code.startswith(("4", "5")) or code == "default" for code in op["responses"]) or \
            method == "get" and not op["security"], f"{where}: no failure described"
        if method in ("post", "put"):
            assert op.get("requestBody", {}).get("content"), f"{where}: no request body"
    # The served document is the same and names the address it was fetched from.
    schemathesis.openapi.from_dict(spec).validate()


class _Server:
    """The real app on a local port, in a thread of its own (schemathesis speaks HTTP through requests)."""

    def __init__(self, app) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self) -> _Server:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture()
def served(hub, kb, tmp_path) -> Iterator[tuple[str, dict]]:
    engine, url = hub
    hub_settings = settings_for(tmp_path, url, write_burst=100_000, read_burst=100_000)
    hub_settings.paper.hmac_key = "k" * 40  # every channel configured, as in a real hub
    hub_settings.paper.print_dir = str(tmp_path / "print")
    hub_settings.twilio = twilio_settings()  # the webhooks refuse unsigned posts: 403, as documented
    app, _ = make_app(hub_settings, engine, kb)
    admin = add_user(engine, "st-admin", "admin", PASSWORD)
    roles = {
        "anonymous": {},
        "agent-scoped": {"headers": {"Authorization": "Bearer " + add_token(
            engine, "st-agent", "agent", authorities=["kreis-01060"])}},
        "agent-all": {"headers": {"Authorization": "Bearer " + add_token(engine, "st-all", "agent",
                                                                          all_authorities=True)}},
        "service": {"headers": {"Authorization": "Bearer " + add_token(engine, "st-service", "service")}},
        "catalog": {"headers": {"Authorization": "Bearer " + add_token(engine, "st-catalog", "catalog",
                                                                        regions=["01060"])}},
        "open311": {"params": {"api_key": add_token(engine, "st-open311", "open311")}},
        "admin": {"cookies": {"chub_console": create_session(engine, admin)}},
    }
    with _Server(app) as server:
        yield server.url, roles


def _run(operation, base_url: str, auth: dict, session: requests.Session, failures: list[str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.generate], database=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        if "params" in auth:  # the Open311 key travels in the query (and in the form of a POST)
            case.query = {**(case.query or {}), **auth["params"]}
        response = case.call(base_url=base_url, session=session, headers=auth.get("headers"),
                             cookies=auth.get("cookies"), timeout=20, allow_redirects=False)
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, FailureGroup) as exc:
            failures.append(f"{operation.label}: {str(exc)[:600]}")

    check()


def test_schemathesis_with_every_role_finds_no_5xx_and_no_schema_mismatch(served):
    base_url, roles = served
    spec = requests.get(base_url + "/api/openapi.json", timeout=20).json()
    assert spec["servers"][0]["url"].startswith(("http://127.0.0.1", "/"))
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    # The event stream never ends by itself; it is covered by the console's own tests.
    operations = [op for op in operations if op.path != "/console/events"]
    failures: list[str] = []
    started = time.monotonic()
    with requests.Session() as session:
        for role, auth in roles.items():
            for operation in operations:
                _run(operation, base_url, auth, session, failures)
            assert not failures, f"role {role}:\n" + "\n".join(failures[:15])
    assert time.monotonic() - started < 300


async def test_what_schemathesis_found_a_scan_part_with_a_malformed_header_is_400(aiohttp_client, hub, kb,
                                                                                   tmp_path):
    """POST /api/paper/scans with a part header aiohttp's parser refuses (InvalidHeader) was a 500."""
    engine, url = hub
    hub_settings = settings_for(tmp_path, url)
    hub_settings.paper.hmac_key = "k" * 40
    app, _ = make_app(hub_settings, engine, kb)
    client = await aiohttp_client(app)
    token = add_token(engine, "scanner", "service")
    boundary = "a48271b3ba82364b9b725ddc12561aca"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"\x06x\"\r\nX: \x00\r\n\r\n{{}}\r\n"
            f"--{boundary}--\r\n").encode()
    resp = await client.post("/api/paper/scans", data=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert resp.status == 400, await resp.text()
    assert "lässt sich nicht lesen" in (await resp.json())["error"]
