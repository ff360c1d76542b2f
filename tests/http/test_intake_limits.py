"""Issue 14, item 2: intake limits per sender address, client address and API token.

:class:`hub.http.ratelimit.IntakeLimits` is the one implementation; these tests drive it directly (with a
clock the test turns) and through the real app: ``POST /api/requests`` (429 with Retry-After), the
citizen form and Open311. The SMTP listener has its own tests (tests/channels/email/test_email_limits.py).
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from web_support import hub_engine, make_app, open_form, post_form, settings_for

from hub.http.ratelimit import KINDS, IntakeLimited, IntakeLimits, IntakeLimitSettings, RateLimiter
from hub.http.tokens import add_token
from hub.queue.cases import case_t


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(clock=None, **values) -> IntakeLimits:
    return IntakeLimits(IntakeLimitSettings(**values), clock=clock or Clock())


def test_a_sender_gets_its_burst_then_waits_for_the_rate():
    clock = Clock()
    lim = limits(clock, sender_per_hour=60, sender_burst=3)
    for _ in range(3):
        lim.check(("email", "erika@example.de"))
    with pytest.raises(IntakeLimited) as caught:
        lim.check(("email", "Erika@Example.DE"))  # the same address, however it is written
    assert caught.value.limit == "sender" and caught.value.retry_after == 60
    assert "in 60 Sekunden" in str(caught.value)
    lim.check(("email", "someone.else@example.de"))  # others are not affected
    lim.check(("phone", "+4945511234"))
    clock.now += 60
    lim.check(("email", "erika@example.de"))  # one more per minute at 60 an hour


def test_a_refused_request_counts_against_none_of_its_keys():
    lim = limits(sender_burst=1, client_burst=5)
    lim.check(("ip", "192.0.2.7"), ("email", "a@example.de"))
    for _ in range(3):
        with pytest.raises(IntakeLimited):
            lim.check(("ip", "192.0.2.7"), ("email", "a@example.de"))
    # The client's bucket was not touched by the three refusals: 4 of its 5 are left.
    for n in range(4):
        lim.check(("ip", "192.0.2.7"), ("email", f"other{n}@example.de"))
    with pytest.raises(IntakeLimited) as caught:
        lim.check(("ip", "192.0.2.7"), ("email", "fresh@example.de"))
    assert caught.value.limit == "client"


def test_repeats_are_given_back_and_empty_keys_skipped():
    lim = limits(sender_burst=2)
    for _ in range(20):  # the same stored request again and again (an SMTP retry, a double click)
        lim.check(("email", "a@example.de"), ("phone", None), ("ip", ""))
        lim.refund(("email", "a@example.de"))
    lim.check(("email", "a@example.de"))
    lim.check(("email", "a@example.de"))
    with pytest.raises(IntakeLimited):
        lim.check(("email", "a@example.de"))


def test_one_request_counts_an_address_once_even_when_given_twice():
    lim = limits(sender_burst=2)
    lim.check(("email", "a@example.de"), ("email", "A@example.de"))  # envelope sender and From
    lim.check(("email", "a@example.de"))
    with pytest.raises(IntakeLimited):
        lim.check(("email", "a@example.de"))


def test_exempt_networks_skip_only_the_client_limit():
    lim = limits(client_burst=1, sender_burst=1, exempt_clients=["10.0.0.25/32", "2001:db8:1::/48"])
    for n in range(5):
        lim.check(("ip", "10.0.0.25"), ("email", f"s{n}@example.de"))  # the organisation's relay
        lim.check(("ip", "2001:db8:1:2::/64"))
    with pytest.raises(IntakeLimited):
        lim.check(("ip", "10.0.0.25"), ("email", "s0@example.de"))  # the sender limit still holds
    lim.check(("ip", "10.0.0.26"))
    with pytest.raises(IntakeLimited):
        lim.check(("ip", "10.0.0.26"))
    with pytest.raises(ValueError, match="not an IP network"):
        IntakeLimitSettings(exempt_clients=["relay.example.de"])
    assert IntakeLimitSettings(exempt_clients="10.0.0.0/8, ::1").exempt_clients == ["10.0.0.0/8", "::1/128"]


def test_switched_off_or_zero_rate_means_no_limit_and_unknown_kinds_are_an_error():
    off = limits(enabled=False, sender_burst=1)
    unlimited = limits(sender_per_hour=0, sender_burst=1)
    for _ in range(50):
        off.check(("email", "a@example.de"))
        unlimited.check(("email", "a@example.de"))
    with pytest.raises(ValueError, match="unknown intake limit kind"):
        limits().check(("fax", "123"))
    assert set(KINDS) == {"email", "phone", "ip", "token"}


def test_memory_is_bounded_by_max_keys():
    lim = limits(max_keys=100)
    for n in range(1000):
        lim.check(("email", f"spray{n}@example.de"))
    assert all(len(limiter) <= 100 for limiter in lim._limiters.values())
    bucket = RateLimiter(60, 1)
    bucket.take("k")
    assert bucket.peek("k")[0] is False and bucket.peek("k")[0] is False  # peeking takes nothing


# -- through the real app -------------------------------------------------------------------------------


@pytest.fixture
async def app_client(tmp_path, demo_db_url, kb, aiohttp_client):
    engine, url = hub_engine(tmp_path, demo_db_url)

    async def build(**limit_values):
        settings = settings_for(tmp_path, url, write_burst=100)
        for key, value in limit_values.items():
            setattr(settings.limits, key, value)
        app, service = make_app(settings, engine, kb)
        client = await aiohttp_client(app)
        client.engine = engine
        return client

    yield build
    engine.dispose()


def _cases(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(case_t)).scalar()


def _body(n: int, email: str = "erika@example.de") -> dict:
    return {"external_id": f"flood-{n}", "text": "Ich brauche einen neuen Reisepass", "location": "Bad Segeberg",
            "contact": {"email": email}}


async def test_the_api_answers_429_with_retry_after_for_one_sender_flooding(app_client):
    """The attack of issue 14 over the API: many requests of one citizen address."""
    client = await app_client(sender_burst=5)
    headers = {"Authorization": "Bearer " + add_token(client.engine, "frontend", "service")}
    statuses = []
    for n in range(30):
        resp = await client.post("/api/requests", json=_body(n), headers=headers)
        statuses.append(resp.status)
        if resp.status == 429:
            assert int(resp.headers["Retry-After"]) > 0
            assert "Zu viele Anfragen von diesem Absender" in (await resp.json())["error"]
    assert statuses == [201] * 5 + [429] * 25
    assert _cases(client.engine) == 5, "every refusal stored nothing; every 201 is a case"
    # A repeat of a stored request still gets its 200, and another citizen is not affected.
    assert (await client.post("/api/requests", json=_body(0), headers=headers)).status in (200, 429)
    assert (await client.post("/api/requests", json=_body(99, "other@example.de"), headers=headers)).status == 201


async def test_the_api_limits_each_token(app_client):
    client = await app_client(token_burst=3)
    a = {"Authorization": "Bearer " + add_token(client.engine, "a", "service")}
    b = {"Authorization": "Bearer " + add_token(client.engine, "b", "service")}
    got = [(await client.post("/api/requests", json=_body(n, f"c{n}@example.de"), headers=a)).status
           for n in range(4)]
    assert got == [201, 201, 201, 429]
    assert (await client.post("/api/requests", json=_body(10, "z@example.de"), headers=b)).status == 201
    # Sending a stored request again costs its token nothing.
    for _ in range(5):
        assert (await client.post("/api/requests", json=_body(10, "z@example.de"), headers=b)).status == 200


async def test_the_web_form_answers_429_per_client_and_per_sender(app_client):
    client = await app_client(client_burst=4, sender_burst=2)
    statuses = []
    for n in range(6):
        fields = await open_form(client)
        fields.update(text=f"Reisepass beantragen {n}", location="Bad Segeberg", action="submit",
                      email="flood@example.de" if n < 3 else f"p{n}@example.de", reply="email")
        resp = await post_form(client, fields)
        statuses.append(resp.status)
        if resp.status == 429:
            assert int(resp.headers["Retry-After"]) > 0
            assert "Sekunden" in await resp.text()
    # 2 of the flooding address, its third refused; then two more addresses until the client's 4 are used.
    assert statuses == [200, 200, 429, 200, 200, 429]
    assert _cases(client.engine) == 4


async def test_open311_answers_429_in_the_error_list(app_client):
    client = await app_client(sender_burst=1)
    key = add_token(client.engine, "city-app", "open311")
    fields = {"api_key": key, "service_code": "sh-strassenschaden", "address_string": "Rathausallee 50, Norderstedt",
              "description": "Schlagloch", "email": "flood@example.de"}
    first = await client.post("/open311/v2/requests.json", data=fields)
    assert first.status == 200, await first.text()
    second = await client.post("/open311/v2/requests.json", data=fields)
    assert second.status == 429 and int(second.headers["Retry-After"]) > 0
    body = await second.json()
    assert body[0]["code"] == 429 and "Zu viele Anfragen" in body[0]["description"]
    assert _cases(client.engine) == 1
