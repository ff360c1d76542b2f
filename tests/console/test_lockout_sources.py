"""Issue 14, item 8: the lockout cannot be used to lock an agent out from elsewhere.

Replayed over real TCP: an attacker at 127.0.0.2 guesses the agent's password until the lockout; the
attacker's address is then refused even the right password, while the agent at 127.0.0.1 logs in as
usual. (Linux routes all of 127.0.0.0/8 to the loopback device, so a client can bind 127.0.0.2 as its
source address: two machines on one host.)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from console_support import KREIS, PASSWORD, hub_engine, make_app, new_user, settings_for
from sqlalchemy import func, select

from hub.console.auth import authenticate, failure_t, list_users, source_key, unlock_user
from hub.console.settings import ConsoleSettings

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def env(tmp_path, demo_db_url, kb, aiohttp_client):
    engine, url = hub_engine(tmp_path, demo_db_url)
    app, _ = make_app(settings_for(tmp_path, url, lockout_threshold=3, lockout_minutes=15,
                                   login_rate_per_minute=600, login_burst=100), engine, kb)
    client = await aiohttp_client(app)
    new_user(engine, "meier", authorities=[KREIS[0]])
    client.engine = engine
    yield client
    engine.dispose()


async def login_from(base: str, source: str, name: str, password: str) -> int:
    """One log-in over TCP from ``source`` (a loopback address of its own): the status of the POST."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{base}/console/login") as page:
            token = _TOKEN.search(await page.text()).group(1)
        async with http.post(f"{base}/console/login", allow_redirects=False,
                             data={"name": name, "password": password, "csrf_token": token}) as resp:
            return resp.status


async def test_guessing_from_elsewhere_locks_out_only_the_guesser(env):
    base = f"http://127.0.0.1:{env.port}"
    for n in range(3):
        assert await login_from(base, "127.0.0.2", "meier", f"guess number {n}!") == 401
    assert await login_from(base, "127.0.0.2", "meier", PASSWORD) == 401, "the attacker's source is locked"
    assert await login_from(base, "127.0.0.1", "meier", PASSWORD) == 303, "the agent at their desk logs in"
    # More guessing from the attacker's source changes nothing for the agent.
    for n in range(5):
        await login_from(base, "127.0.0.2", "meier", f"more guesses {n}!")
    assert await login_from(base, "127.0.0.1", "meier", PASSWORD) == 303
    # What is stored is a hash of the source, never the address.
    with env.engine.connect() as conn:
        sources = set(conn.execute(select(failure_t.c.source)).scalars())
    assert sources == {source_key("127.0.0.2")}
    assert [u["locked_sources"] for u in list_users(env.engine)] == [1]
    assert unlock_user(env.engine, "meier")
    assert await login_from(base, "127.0.0.2", "meier", PASSWORD) == 303


def test_each_source_has_its_own_count_and_a_success_resets_only_its_own(tmp_path, demo_db_url):
    engine, _ = hub_engine(tmp_path, demo_db_url)
    settings = ConsoleSettings(lockout_threshold=3, lockout_window_minutes=10, lockout_minutes=15)
    new_user(engine, "meier", authorities=[KREIS[0]])
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    for n in range(2):
        assert not authenticate(engine, "meier", f"bad {n}", settings, now=t0, source="192.0.2.1").ok
        assert not authenticate(engine, "meier", f"bad {n}", settings, now=t0, source="198.51.100.9").ok
    assert authenticate(engine, "meier", PASSWORD, settings, now=t0, source="192.0.2.1").ok
    assert not authenticate(engine, "meier", "bad 3", settings, now=t0, source="192.0.2.1").ok  # count: 1
    assert not authenticate(engine, "meier", "bad 3", settings, now=t0, source="198.51.100.9").ok  # count: 3
    locked = authenticate(engine, "meier", PASSWORD, settings, now=t0 + timedelta(minutes=1), source="198.51.100.9")
    assert not locked.ok and locked.reason == "locked"
    assert authenticate(engine, "meier", PASSWORD, settings, now=t0 + timedelta(minutes=1), source="192.0.2.1").ok
    # The lock runs out; rows that no longer matter are removed on the way.
    later = t0 + timedelta(minutes=40)
    assert authenticate(engine, "meier", PASSWORD, settings, now=later, source="198.51.100.9").ok
    assert not authenticate(engine, "meier", "bad", settings, now=later, source="203.0.113.5").ok
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(failure_t)).scalar() == 1
    engine.dispose()
