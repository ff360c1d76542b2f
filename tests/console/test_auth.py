"""Console access: log-in, sessions, roles, authority scopes, lockout, CSRF, password storage, the user CLI."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from console_support import (
    KREIS,
    PASSWORD,
    SOEST,
    hub_engine,
    login,
    login_form_token,
    make_app,
    make_case,
    new_user,
    set_case,
    settings_for,
    try_login,
)
from sqlalchemy import select, update

from hub.console.auth import (
    SESSION_COOKIE,
    AuthError,
    Scope,
    add_user,
    authenticate,
    create_session,
    failure_t,
    load_session,
    scope_t,
    session_hash,
    session_t,
    user_t,
)
from hub.console.settings import ConsoleSettings
from hub.queue.cases import CaseState


@pytest.fixture
def env_factory(tmp_path, demo_db_url, kb, aiohttp_client):
    async def make(**console_values):
        engine, url = hub_engine(tmp_path, demo_db_url)
        settings = settings_for(tmp_path, url, **console_values)
        app, service = make_app(settings, engine, kb)
        client = await aiohttp_client(app)
        return SimpleNamespace(client=client, engine=engine, app=app, service=service, settings=settings, url=url)

    return make


@pytest.fixture
async def env(env_factory):
    return await env_factory()


# -- no page and no API call without a session: tests/test_console_routes.py walks every route --------------


async def test_api_without_session_gets_json_401(env):
    resp = await env.client.get("/console/api/lookup", params={"q": "Reisepass"})
    assert resp.status == 401
    assert "error" in await resp.json()


async def test_forged_or_expired_cookie_is_refused(env):
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    env.client.session.cookie_jar.update_cookies({SESSION_COOKIE: "x" * 43})
    resp = await env.client.get("/console/api/queue")
    assert resp.status == 401


# -- log-in, log-out, cookies ----------------------------------------------------------------------------


async def test_login_sets_a_strict_httponly_cookie_and_logout_ends_the_session(env):
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    resp = await try_login(env.client, "meier", PASSWORD)
    assert resp.status == 303
    assert resp.headers["Location"] == "/console/"
    cookie = next(v for k, v in resp.headers.items() if k == "Set-Cookie" and v.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # cookie_secure=false for the http:// test server
    token = re.search(rf"{SESSION_COOKIE}=([^;]+)", cookie).group(1)
    with env.engine.connect() as conn:
        stored = conn.execute(select(session_t.c.id)).scalars().all()
    assert stored == [session_hash(token)], "only the hash of the cookie is stored"

    page = await env.client.get("/console/")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', await page.text()).group(1)
    resp = await env.client.post("/console/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/console/login"
    with env.engine.connect() as conn:
        assert conn.execute(select(session_t.c.id)).first() is None
    env.client.session.cookie_jar.update_cookies({SESSION_COOKIE: token})
    assert (await env.client.get("/console/api/queue")).status == 401


async def test_cookie_is_secure_by_default(env_factory):
    env = await env_factory(cookie_secure=True)
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    page = await env.client.get("/console/login")
    assert "Secure" in page.headers["Set-Cookie"]
    # The client does not send Secure cookies over http://, so the CSRF cookie is given by hand.
    csrf_cookie = page.cookies["chub_csrf"].value
    token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text()).group(1)
    resp = await env.client.post("/console/login", data={"name": "meier", "password": PASSWORD, "csrf_token": token},
                                 headers={"Cookie": f"chub_csrf={csrf_cookie}"}, allow_redirects=False)
    assert resp.status == 303
    cookie = next(v for k, v in resp.headers.items() if k == "Set-Cookie" and v.startswith(SESSION_COOKIE))
    assert "Secure" in cookie
    assert ConsoleSettings().cookie_secure is True


async def test_login_redirects_only_inside_the_console(env):
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    for target, expected in (("//evil.example/x", "/console/"), ("https://evil.example/", "/console/"),
                             ("/console/queue?state=all", "/console/queue?state=all")):
        env.client.session.cookie_jar.clear()
        token = await login_form_token(env.client)
        resp = await env.client.post("/console/login", data={"name": "meier", "password": PASSWORD,
                                                             "csrf_token": token, "next": target},
                                     allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"] == expected


async def test_wrong_password_unknown_name_and_disabled_account_look_the_same(env):
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    new_user(env.engine, "alt", authorities=[KREIS[0]])
    with env.engine.begin() as conn:
        conn.execute(update(user_t).where(user_t.c.name == "alt").values(disabled_at=datetime.now(UTC)))
    bodies = []
    for name, password in (("meier", "wrong password!!"), ("nobody", PASSWORD), ("alt", PASSWORD)):
        resp = await try_login(env.client, name, password)
        assert resp.status == 401
        text = await resp.text()
        bodies.append(re.search(r'<p class="error"[^>]*>(.*?)</p>', text).group(1))
    assert len(set(bodies)) == 1


async def test_login_form_needs_its_csrf_token(env):
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    await login_form_token(env.client)  # sets the CSRF cookie
    resp = await env.client.post("/console/login", data={"name": "meier", "password": PASSWORD},
                                 allow_redirects=False)
    assert resp.status == 403
    resp = await env.client.post("/console/login", data={"name": "meier", "password": PASSWORD,
                                                         "csrf_token": "1.deadbeef"}, allow_redirects=False)
    assert resp.status == 403


async def test_login_rate_limit_per_client(env_factory):
    env = await env_factory(login_rate_per_minute=1, login_burst=2)
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    statuses = [(await try_login(env.client, f"x{i}", "wrong password!!")).status for i in range(3)]
    assert statuses == [401, 401, 429]


# -- lockout ---------------------------------------------------------------------------------------------------


async def test_lockout_after_repeated_failures_even_for_the_right_password(env_factory):
    env = await env_factory(lockout_threshold=3, lockout_minutes=15)
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    for _ in range(3):
        assert (await try_login(env.client, "meier", "wrong password!!")).status == 401
    resp = await try_login(env.client, "meier", PASSWORD)
    assert resp.status == 401, "locked: the right password is refused too (from this source)"
    with env.engine.connect() as conn:
        locked_until = conn.execute(select(failure_t.c.locked_until)).scalar()
    assert locked_until > datetime.now(UTC) + timedelta(minutes=14)
    with env.engine.begin() as conn:  # the lock runs out
        conn.execute(update(failure_t).values(locked_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert (await try_login(env.client, "meier", PASSWORD)).status == 303


def test_failures_outside_the_window_start_a_new_count(tmp_path, demo_db_url):
    engine, _ = hub_engine(tmp_path, demo_db_url)
    settings = ConsoleSettings(lockout_threshold=3, lockout_window_minutes=10)
    add_user(engine, "meier", "agent", PASSWORD, authorities=[KREIS[0]])
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert not authenticate(engine, "meier", "bad password 1", settings, now=t0).ok
    assert not authenticate(engine, "meier", "bad password 2", settings, now=t0 + timedelta(minutes=1)).ok
    # 20 minutes later the old failures no longer count: two more do not lock.
    later = t0 + timedelta(minutes=20)
    assert not authenticate(engine, "meier", "bad password 3", settings, now=later).ok
    assert not authenticate(engine, "meier", "bad password 4", settings, now=later).ok
    assert authenticate(engine, "meier", PASSWORD, settings, now=later).ok
    # A third failure inside the window locks.
    for i in range(3):
        authenticate(engine, "meier", f"bad password {i}", settings, now=later)
    result = authenticate(engine, "meier", PASSWORD, settings, now=later + timedelta(minutes=1))
    assert not result.ok and result.reason == "locked"


# -- passwords ------------------------------------------------------------------------------------------------


def test_only_an_argon2id_hash_is_stored(tmp_path, demo_db_url):
    engine, _ = hub_engine(tmp_path, demo_db_url)
    add_user(engine, "meier", "agent", PASSWORD, authorities=[KREIS[0]])
    with engine.connect() as conn:
        row = conn.execute(select(user_t)).mappings().one()
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    dump = "\n".join(engine.raw_connection().driver_connection.iterdump())
    assert PASSWORD not in dump
    assert authenticate(engine, "meier", PASSWORD).ok
    assert not authenticate(engine, "meier", PASSWORD + "x").ok


def test_account_rules(tmp_path, demo_db_url):
    engine, _ = hub_engine(tmp_path, demo_db_url)
    with pytest.raises(AuthError, match="at least 12"):
        add_user(engine, "meier", "agent", "short", authorities=[KREIS[0]])
    with pytest.raises(AuthError, match="unknown role"):
        add_user(engine, "meier", "root", PASSWORD, authorities=[KREIS[0]])
    with pytest.raises(AuthError, match="at least one"):
        add_user(engine, "meier", "agent", PASSWORD)
    with pytest.raises(AuthError, match="regional key"):
        add_user(engine, "meier", "agent", PASSWORD, regions=["Segeberg"])
    add_user(engine, "meier", "agent", PASSWORD, authorities=[KREIS[0]])
    with pytest.raises(AuthError, match="exists already"):
        add_user(engine, "meier", "agent", PASSWORD, authorities=[KREIS[0]])
    add_user(engine, "root", "admin", PASSWORD)  # admins need no scope


def test_sessions_expire_when_idle_and_after_the_maximum(tmp_path, demo_db_url):
    engine, _ = hub_engine(tmp_path, demo_db_url)
    settings = ConsoleSettings(session_idle_minutes=30, session_max_hours=8)
    user_id = add_user(engine, "meier", "agent", PASSWORD, authorities=[KREIS[0]])
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    token = create_session(engine, user_id, settings, now=t0)
    assert load_session(engine, token, settings, now=t0 + timedelta(minutes=29)).name == "meier"
    # Activity at 08:29 moved the idle limit to 08:59.
    assert load_session(engine, token, settings, now=t0 + timedelta(minutes=58)) is not None
    assert load_session(engine, token, settings, now=t0 + timedelta(minutes=58 + 31)) is None
    token = create_session(engine, user_id, settings, now=t0)
    for minutes in range(20, 8 * 60, 20):  # active all day
        assert load_session(engine, token, settings, now=t0 + timedelta(minutes=minutes)) is not None
    assert load_session(engine, token, settings, now=t0 + timedelta(hours=8, minutes=1)) is None


# -- roles and scopes ---------------------------------------------------------------------------------------------


async def test_agents_do_not_see_the_dashboard(env):
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    new_user(env.engine, "chefin", "supervisor", regions=["01060"])
    await login(env.client, "meier")
    assert (await env.client.get("/console/dashboard")).status == 403
    assert (await env.client.get("/console/api/dashboard")).status == 403
    env.client.session.cookie_jar.clear()
    await login(env.client, "chefin")
    assert (await env.client.get("/console/dashboard")).status == 200
    assert (await env.client.get("/console/api/dashboard")).status == 200


async def test_an_agent_of_authority_a_cannot_open_cases_of_authority_b(env):
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    mine = make_case(env.engine, text="Führerschein verloren", authority=KREIS, email="a@example.org")
    other = make_case(env.engine, text="Führerschein verloren", authority=SOEST, email="b@example.org")
    csrf = await login(env.client, "meier")
    assert (await env.client.get(f"/console/cases/{mine}")).status == 200
    assert (await env.client.get(f"/console/api/cases/{mine}")).status == 200
    for path in (f"/console/cases/{other}", f"/console/api/cases/{other}"):
        assert (await env.client.get(path)).status == 404
    for action, body in (("reply", {"text": "x"}), ("close", {}), ("forward", {"note": "x"}),
                         ("reroute", {"service_id": "x", "authority_id": KREIS[0]})):
        resp = await env.client.post(f"/console/cases/{other}/{action}", json=body,
                                     headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
        assert resp.status == 404, action
    listed = {c["id"] for c in (await (await env.client.get("/console/api/queue?state=all")).json())["cases"]}
    assert mine in listed and other not in listed


async def test_region_scope_and_admin(env):
    new_user(env.engine, "chefin", "supervisor", regions=["01060"])
    new_user(env.engine, "root", "admin")
    amt = make_case(env.engine, text="Reisepass", authority=("amt-010605053", "Amt Leezen"), email="c@example.org")
    soest = make_case(env.engine, text="Reisepass", authority=SOEST, email="d@example.org")
    unrouted_here = make_case(env.engine, text="Was?", email="e@example.org", state=CaseState.NEEDS_CLARIFICATION)
    set_case(env.engine, unrouted_here, route_json={"location": {"ars": "010605053088", "name": "Todesfelde"}})
    unrouted_there = make_case(env.engine, text="Was?", email="f@example.org", state=CaseState.NEEDS_CLARIFICATION)
    set_case(env.engine, unrouted_there, route_json={"location": {"ars": "059740040040", "name": "Soest"}})
    await login(env.client, "chefin")
    assert (await env.client.get(f"/console/api/cases/{amt}")).status == 200
    assert (await env.client.get(f"/console/api/cases/{soest}")).status == 404
    listed = {c["id"] for c in (await (await env.client.get("/console/api/queue")).json())["cases"]}
    assert listed == {amt, unrouted_here}, "the SQL scope matches the rule of Scope.covers_case"
    assert (await env.client.get(f"/console/api/cases/{unrouted_there}")).status == 404
    env.client.session.cookie_jar.clear()
    await login(env.client, "root")
    assert (await env.client.get(f"/console/api/cases/{soest}")).status == 200


def test_scope_rules(kb):
    region = Scope(False, frozenset(), ("01060",))
    assert region.covers_authority("amt-010605053", kb)
    assert not region.covers_authority("kreis-05974", kb)
    assert not region.covers_authority("lasd-01", kb), "a Land authority is not inside a county's region"
    unrouted = {"authority_id": None, "route_json": {"location": {"ars": "010605053088"}}}
    assert region.covers_case(unrouted, kb)
    # An office's agents do not see a case without an office; the Kreis' own do (the clarification queue of
    # the home region, issue 15.1: tests/console/test_clarification_queue.py).
    assert not Scope(False, frozenset({"amt-010605053"})).covers_case(unrouted, kb)
    assert Scope(False, frozenset({"kreis-01060"})).covers_case(unrouted, kb)
    assert not Scope().covers_case({"authority_id": "kreis-01060"}, kb), "no scope sees nothing"
    assert Scope(everything=True).covers_case({"authority_id": None}, kb)


# -- CSRF ------------------------------------------------------------------------------------------------------------


async def test_writes_need_the_sessions_csrf_token(env):
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    csrf = await login(env.client, "meier")
    json_headers = {"Accept": "application/json"}
    assert (await env.client.post("/console/calls", json={}, headers=json_headers)).status == 403
    assert (await env.client.post("/console/calls", json={},
                                  headers=json_headers | {"X-CSRF-Token": "forged"})).status == 403
    assert (await env.client.post("/console/calls", data={"csrf_token": csrf[:-1] + "x"},
                                  allow_redirects=False)).status == 403
    assert (await env.client.post("/console/calls", data={}, allow_redirects=False)).status == 403
    ok = await env.client.post("/console/calls", json={}, headers=json_headers | {"X-CSRF-Token": csrf})
    assert ok.status == 201
    form = await env.client.post("/console/calls", data={"csrf_token": csrf}, allow_redirects=False)
    assert form.status == 303


async def test_the_csrf_token_of_another_session_does_not_work(env):
    new_user(env.engine, "meier", authorities=[KREIS[0]])
    first = await login(env.client, "meier")
    env.client.session.cookie_jar.clear()
    second = await login(env.client, "meier")
    assert first != second
    resp = await env.client.post("/console/calls", json={},
                                 headers={"Accept": "application/json", "X-CSRF-Token": first})
    assert resp.status == 403


# -- the user CLI ----------------------------------------------------------------------------------------------------


def _cli(monkeypatch, argv, stdin=""):
    """hub.cli.main in this process (fast; the end-to-end test below runs the installed command)."""
    import hub.cli

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return hub.cli.main(argv)


CITIZEN_HUB = Path(sys.executable).with_name("citizen-hub")


async def test_user_add_through_the_installed_cli_then_log_in(tmp_path, demo_db_url, kb, aiohttp_client):
    """``citizen-hub user add`` as an operator runs it (its own process, password on stdin), then the log-in."""
    assert CITIZEN_HUB.exists(), f"the console script is installed next to the interpreter: {CITIZEN_HUB}"
    engine, url = hub_engine(tmp_path, demo_db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITIZEN_HUB_")}

    def run(*argv: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([str(CITIZEN_HUB), *argv, "--db", url], input=stdin, capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)

    added = run("user", "add", "meier", "--role", "agent", "--authority", KREIS[0], "--password-stdin",
                stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    refused = run("user", "add", "meier", "--role", "agent", "--authority", KREIS[0], "--password-stdin",
                  stdin=PASSWORD + "\n")
    assert refused.returncode == 2 and "exists already" in refused.stderr
    no_stdin = run("user", "add", "other", "--role", "agent", "--authority", KREIS[0])
    assert no_stdin.returncode == 2 and "--password-stdin" in no_stdin.stderr
    listed = run("user", "list")
    assert listed.returncode == 0 and "meier\tagent\tauthority:kreis-01060" in listed.stdout

    settings = settings_for(tmp_path, url)
    app, _service = make_app(settings, engine, kb)
    client = await aiohttp_client(app)
    assert (await try_login(client, "meier", PASSWORD + "x")).status == 401
    csrf = await login(client, "meier")
    assert csrf
    mine = make_case(engine, text="Pass", authority=KREIS, email="a@example.org")
    other = make_case(engine, text="Pass", authority=SOEST, email="b@example.org")
    assert (await client.get(f"/console/api/cases/{mine}")).status == 200
    assert (await client.get(f"/console/api/cases/{other}")).status == 404, "bound to the authority given"


def test_user_add_cli(tmp_path, demo_db_url, monkeypatch, capsys):
    engine, url = hub_engine(tmp_path, demo_db_url)
    assert _cli(monkeypatch, ["user", "add", "meier", "--role", "agent", "--authority", "kreis-01060",
                              "--authority", "amt-010605053", "--password-stdin", "--db", url], PASSWORD + "\n") == 0
    with engine.connect() as conn:
        user = conn.execute(select(user_t)).mappings().one()
        scopes = conn.execute(select(scope_t.c.kind, scope_t.c.value).order_by(scope_t.c.value)).all()
    assert user["role"] == "agent" and user["password_hash"].startswith("$argon2id$")
    assert scopes == [("authority", "amt-010605053"), ("authority", "kreis-01060")]
    assert authenticate(engine, "meier", PASSWORD).ok, "the trailing newline is not part of the password"

    assert _cli(monkeypatch, ["user", "add", "chefin", "--role", "supervisor", "--region", "01060",
                              "--password-stdin", "--db", url], PASSWORD) == 0
    capsys.readouterr()
    assert _cli(monkeypatch, ["user", "list", "--db", url]) == 0
    listing = capsys.readouterr().out
    assert "chefin\tsupervisor\tregion:01060" in listing and PASSWORD not in listing


@pytest.mark.parametrize(
    "argv, stdin, message",
    [
        (["--role", "agent", "--authority", "kreis-01060"], PASSWORD, "--password-stdin"),
        (["--role", "agent", "--authority", "nope-1", "--password-stdin"], PASSWORD, "unknown authority"),
        (["--role", "agent", "--region", "99999", "--password-stdin"], PASSWORD, "unknown region"),
        (["--role", "agent", "--authority", "kreis-01060", "--password-stdin"], "short\n", "at least 12"),
        (["--role", "agent", "--password-stdin"], PASSWORD, "at least one"),
        (["--role", "agent", "--authority", "kreis-01060", "--password-stdin"], "", "no password"),
    ],
)
def test_user_add_cli_refuses(tmp_path, demo_db_url, monkeypatch, capsys, argv, stdin, message):
    _engine, url = hub_engine(tmp_path, demo_db_url)
    assert _cli(monkeypatch, ["user", "add", "meier", *argv, "--db", url], stdin) == 2
    assert message in capsys.readouterr().err


def test_user_unlock_passwd_and_disable_cli(tmp_path, demo_db_url, monkeypatch):
    engine, url = hub_engine(tmp_path, demo_db_url)
    settings = ConsoleSettings(lockout_threshold=1)
    user_id = add_user(engine, "meier", "agent", PASSWORD, authorities=[KREIS[0]])
    authenticate(engine, "meier", "wrong password!!", settings)
    assert authenticate(engine, "meier", PASSWORD, settings).reason == "locked"
    assert _cli(monkeypatch, ["user", "unlock", "meier", "--db", url]) == 0
    assert authenticate(engine, "meier", PASSWORD, settings).ok
    token = create_session(engine, user_id)
    new_password = "another long passphrase"
    assert _cli(monkeypatch, ["user", "passwd", "meier", "--password-stdin", "--db", url], new_password) == 0
    assert load_session(engine, token) is None, "a new password ends the sessions"
    assert authenticate(engine, "meier", new_password).ok
    assert _cli(monkeypatch, ["user", "disable", "meier", "--db", url]) == 0
    assert not authenticate(engine, "meier", new_password).ok
    assert _cli(monkeypatch, ["user", "disable", "nobody", "--db", url]) == 2
