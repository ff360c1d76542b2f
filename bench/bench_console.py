"""Agent console: the round trip of one keystroke of search-as-you-type over loopback, logged in.

A hub process (``python -m bench.bench_console --serve``) serves the console on 127.0.0.1 over a fresh
SQLite database with all German regions and the demo catalogue. The benchmark logs in like a browser
(log-in form, CSRF token, session cookie) and then "types" each query of the labelled set
``tests/data/lookup_queries.jsonl`` with its place, one character at a time: every prefix from two
characters on is one ``GET /console/api/lookup`` – what ``static/console.js`` sends per keystroke. The
time is measured in the client from sending the request to having read the whole JSON answer.

* one agent: keystrokes one after another (the latency an agent sees);
* 20 agents typing at the same time, each one keystroke after another (a busy call centre on one hub
  process).

Target: p99 ≤ 50 ms for one agent. Run: ``.venv/bin/python -m bench console``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "tests" / "data" / "lookup_queries.jsonl"
TARGET_MS = 50.0
PASSWORD = "bench password 1234"
AGENTS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_database(url: str) -> None:
    from hub.console.auth import add_user
    from hub.db import create_schema, make_engine, session_scope
    from hub.migrate import upgrade
    from knowledge.catalogue import load_demo
    from knowledge.regions import load_regions

    engine = make_engine(url)
    create_schema(engine)
    with session_scope(engine) as session:
        load_regions(session, progress=False)
    with session_scope(engine) as session:
        load_demo(session)
    upgrade(engine)
    add_user(engine, "bench", "agent", PASSWORD, regions=["01"])
    engine.dispose()


def serve(port: int, url: str) -> None:
    """The hub process: the app of hub.http.app with the console (and the queue it reads), on 127.0.0.1."""
    import logging

    from aiohttp import web

    from hub.config import Settings
    from hub.console.settings import ConsoleSettings
    from hub.http.app import create_app

    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    settings.database.url = url
    settings.console = ConsoleSettings(cookie_secure=False, login_rate_per_minute=1000, login_burst=1000)
    app = create_app(settings)  # every module of hub.http.routes: the queue and the console among them
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def _login(session, base: str) -> None:
    page = await (await session.get(f"{base}/console/login")).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = await session.post(f"{base}/console/login", data={"name": "bench", "password": PASSWORD,
                                                             "csrf_token": token}, allow_redirects=False)
    if resp.status != 303:
        raise RuntimeError(f"log-in failed: {resp.status}")


def _keystrokes(queries: list[dict]) -> list[tuple[str, str]]:
    out = []
    for q in queries:
        text, place = q["query"], q.get("location") or ""
        out.extend((text[:i], place) for i in range(2, len(text) + 1))
    return out


async def _type(session, base: str, strokes: list[tuple[str, str]], times: list[float], server: list[float]) -> None:
    for words, place in strokes:
        started = time.perf_counter()
        async with session.get(f"{base}/console/api/lookup", params={"q": words, "location": place}) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"lookup answered {resp.status}")
        times.append((time.perf_counter() - started) * 1000)
        server.append(json.loads(body)["took_ms"])


def _summary(label: str, times: list[float]) -> str:
    times = sorted(times)
    pick = lambda p: times[min(len(times) - 1, int(p / 100 * len(times)))]  # noqa: E731
    return (f"{label:<34} n={len(times):>6}  p50={pick(50):6.2f}  p90={pick(90):6.2f}  p99={pick(99):6.2f}  "
            f"max={times[-1]:7.2f}  mean={statistics.fmean(times):6.2f} ms")


async def measure(base: str, queries: list[dict]) -> dict[str, list[float]]:
    import aiohttp

    strokes = _keystrokes(queries)
    results: dict[str, list[float]] = {}
    jar = aiohttp.CookieJar(unsafe=True)  # cookies of 127.0.0.1 (an IP address)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        await _login(session, base)
        await _type(session, base, strokes[:200], [], [])  # warm-up
        times: list[float] = []
        server: list[float] = []
        await _type(session, base, strokes, times, server)
        results["one agent: round trip"] = times
        results["one agent: server (took_ms)"] = server
    sessions = []
    try:
        for _ in range(AGENTS):
            s = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            sessions.append(s)
            await _login(s, base)
        times, server = [], []
        share = max(1, len(strokes) // AGENTS)
        await asyncio.gather(*(_type(s, base, strokes[i * share:(i + 1) * share], times, server)
                               for i, s in enumerate(sessions)))
        results[f"{AGENTS} agents at once: round trip"] = times
    finally:
        for s in sessions:
            await s.close()
    return results


def main() -> None:
    queries = [json.loads(line) for line in QUERIES.read_text(encoding="utf-8").splitlines() if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.sqlite3"
        started = time.perf_counter()
        build_database(url)
        print(f"database with all regions and the demo catalogue built in {time.perf_counter() - started:.1f} s")
        port = _free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "bench.bench_console", "--serve", str(port), url], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the hub exited: {proc.stderr.read().decode()[-2000:]}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the hub did not start") from None
                    time.sleep(0.1)
            time.sleep(1.0)  # the knowledge base loads after the socket opens
            results = asyncio.run(measure(f"http://127.0.0.1:{port}", queries))
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"{len(queries)} labelled queries typed with their place, one request per keystroke from 2 characters on")
    for label, times in results.items():
        print(_summary(label, times))
    one = sorted(results["one agent: round trip"])
    p99 = one[min(len(one) - 1, int(0.99 * len(one)))]
    verdict = "PASS" if p99 <= TARGET_MS else "FAIL"
    print(f"target: p99 keystroke round trip ≤ {TARGET_MS:.0f} ms for one agent: {verdict} ({p99:.2f} ms)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        main()
