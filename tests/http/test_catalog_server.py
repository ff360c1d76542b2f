"""The catalogue sync in the real server: ``citizen-hub serve`` processes, the CLI, real databases.

Nothing in-process: the database is set up with ``citizen-hub init --demo``, tokens are made with
``citizen-hub token add NAME --role catalog --region ARS``, the servers are ``citizen-hub serve``
subprocesses (so the route registry, the config defaults and the start-up hooks are the real ones),
and every check goes over HTTP.

* SQLite, one server on port 18118: a change POSTed is in ``GET /api/lookup`` (how fast: bench/bench_sync.py); a Gemeinde's
  token cannot touch the Kreis's entries (403, nothing changed); a ``citizen-hub catalog import`` run
  by another process reaches the running server's lookups.
* Two servers on one database (PostgreSQL, and a SQLite file): a change written through one is in the
  other's lookups; two writers sending the same ``If-Match`` at the same moment to the two
  processes: exactly one wins, the other gets 412, and both processes then answer with the winner;
  writers without ``If-Match`` through both processes all land, with consecutive versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from catalog_support import MUENCHEN
from sqlalchemy import select

from hub.db import make_engine
from hub.http.tokens import token_t
from hub.queue.cases import audit_t
from knowledge.models import Service
from knowledge.sync_models import version_t

ROOT = Path(__file__).resolve().parents[2]
PORT = 18118
SEGEBERG, TODESFELDE = "01060", "010605053088"  # demo regions: Kreis Segeberg, a Gemeinde in it
_SCRIPT = Path(sys.executable).with_name("citizen-hub")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "hub.cli"]


def _env() -> dict[str, str]:
    # No CITIZEN_HUB_* settings of the calling shell: the servers run on the defaults and --db only.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITIZEN_HUB_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def cli(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [*CLI, *argv], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"citizen-hub {' '.join(argv[:3])}: {done.stderr[-2000:]}"
    return done


def add_token(cwd: Path, db: str, name: str, region: str) -> str:
    token = cli(cwd, "token", "add", name, "--role", "catalog", "--region", region, "--db", db).stdout.strip()
    assert token and "\n" not in token
    return token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``citizen-hub serve`` in the background; stopped with SIGTERM (and killed if it will not stop)."""

    def __init__(self, cwd: Path, db: str, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                pytest.fail(f"port {port} is taken: another citizen-hub is running there")
        self.log = open(cwd / f"serve-{port}.log", "w+b")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--db", db, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env=_env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited:\n{self.output()}"
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{self.url}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the server did not start:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()


async def lookup_until(
    session: aiohttp.ClientSession,
    server: Server,
    query: str,
    location: str,
    service_id: str,
    limit: float = 15.0,
) -> float:
    """Seconds until ``service_id`` is among the lookup's results (fails after ``limit``, a bound on "it
    arrives", not a speed: how fast is measured in bench/bench_sync.py)."""
    started = time.perf_counter()
    while True:
        async with session.get(f"{server.url}/api/lookup", params={"q": query, "location": location}) as resp:
            assert resp.status == 200
            results = (await resp.json())["results"]
        elapsed = time.perf_counter() - started
        if any(r["service"]["id"] == service_id for r in results):
            return elapsed
        assert elapsed < limit, f"{service_id} not found by {query!r} after {elapsed:.2f} s"
        await asyncio.sleep(0.02)


async def lookup_names(session: aiohttp.ClientSession, server: Server, query: str, location: str) -> list:
    async with session.get(f"{server.url}/api/lookup", params={"q": query, "location": location}) as resp:
        return [(r["service"]["id"], r["service"]["name"]) for r in (await resp.json())["results"]]


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


# -- SQLite, one server ---------------------------------------------------------------------------------


async def test_a_change_posted_to_citizen_hub_serve_is_looked_up_within_a_second(tmp_path):
    db = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    cli(tmp_path, "init", "--demo", "--quiet", "--db", db)
    server = Server(tmp_path, db, PORT)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await server.wait_ready(session)
            kreis = add_token(tmp_path, db, "kreis-segeberg", SEGEBERG)  # made while the server runs
            gemeinde = add_token(tmp_path, db, "gemeinde-todesfelde", TODESFELDE)
            engine = make_engine(db)
            with engine.connect() as conn:
                stored = {r.name: r.token_hash for r in conn.execute(select(token_t))}
            engine.dispose()
            assert stored["kreis-segeberg"] == hashlib.sha256(kreis.encode()).hexdigest(), "stored hashed"
            assert kreis not in (tmp_path / "hub.sqlite3").read_bytes().decode("latin-1"), "never in clear"

            assert not await lookup_names(session, server, "Drachenflugerlaubnis", "Todesfelde")
            body = {
                "write": {
                    "leistung": [
                        {
                            "id": "se-drachen",
                            "name": "Drachenflugerlaubnis beantragen",
                            "ebene": "kreis",
                            "synonyme": ["Lenkdrachen"],
                        }
                    ]
                }
            }
            async with session.post(
                f"{server.url}/api/catalog/{SEGEBERG}/changes", json=body, headers=bearer(kreis)
            ) as resp:
                result = await resp.json()
                assert resp.status == 200 and result["applied"], result
                assert resp.headers["ETag"] == f'"{result["version"]}"'
            await lookup_until(session, server, "Lenkdrachen", "Todesfelde", "se-drachen")

            # The Gemeinde's token cannot change or remove the Kreis's service, nor write the Kreis.
            for path, attempt in (
                (
                    f"{TODESFELDE}/changes",
                    {"write": {"leistung": [{"id": "se-drachen", "name": "Gekapert", "ebene": "kreis"}]}},
                ),
                (f"{TODESFELDE}/changes", {"delete": {"leistung": ["se-drachen"]}}),
                (f"{SEGEBERG}/changes", {"delete": {"leistung": ["se-drachen"]}}),
            ):
                async with session.post(
                    f"{server.url}/api/catalog/{path}", json=attempt, headers=bearer(gemeinde)
                ) as resp:
                    assert resp.status == 403, (path, await resp.text())
            assert ("se-drachen", "Drachenflugerlaubnis beantragen") in await lookup_names(
                session, server, "Lenkdrachen", "Todesfelde"
            )

            # Another process (the importer) writes; the running server's lookups follow.
            csv = tmp_path / "leistungen.csv"
            csv.write_text(
                "name;synonyms;level\nKoboldzählung anmelden;Koboldzählung;kreis\n", encoding="utf-8"
            )
            cli(tmp_path, "catalog", "import", "--format", "csv", str(csv), "--region", SEGEBERG, "--db", db)
            await lookup_until(session, server, "Koboldzählung", "Todesfelde", "01060-koboldzaehlung-anmelden")

            # The real München export through the real CLI, with its progress bar; the running server finds
            # "Gewerbe anmelden" in München right after.
            done = cli(
                tmp_path, "catalog", "import", "--format", "dldb", str(MUENCHEN / "services_de.json"),
                "--locations", str(MUENCHEN / "locations_de.json"), "--region", "09162", "--id-prefix", "muc",
                "--db", db,
            )  # fmt: skip
            assert "leistung +287" in done.stdout and "100%" in done.stderr
            await lookup_until(session, server, "Gewerbe anmelden", "München", "muc-1063423")
            async with session.get(
                f"{server.url}/api/lookup", params={"q": "Gewerbe anmelden", "location": "München"}
            ) as resp:
                top = (await resp.json())["results"][0]
            assert top["service"]["id"] == "muc-1063423" and top["authority"]["id"] == "muc-loc-10546"

            engine = make_engine(db)
            with engine.connect() as conn:
                versions = [
                    (r.version, r.actor) for r in conn.execute(select(version_t).order_by(version_t.c.id))
                ]
                audit = [
                    r.actor for r in conn.execute(select(audit_t).where(audit_t.c.action.like("catalog_%")))
                ]
                assert (
                    conn.execute(
                        select(Service.__table__.c.name).where(Service.__table__.c.id == "se-drachen")
                    ).scalar()
                    == "Drachenflugerlaubnis beantragen"
                )
            engine.dispose()
            # The 403s wrote nothing; each write is one version, audited with who wrote it.
            assert versions == [(1, "token:kreis-segeberg"), (2, "cli:csv-import"), (1, "cli:dldb-import")]
            assert audit == ["token:kreis-segeberg", "cli:csv-import", "cli:dldb-import"]
    finally:
        server.stop()
    assert server.proc.returncode is not None


# -- two servers on one database ---------------------------------------------------------------------------


@pytest.mark.postgres
async def test_two_servers_on_one_postgresql_database(tmp_path, postgres_url):
    await two_servers(tmp_path, postgres_url)


async def test_two_servers_on_one_sqlite_file(tmp_path):
    await two_servers(tmp_path, f"sqlite:///{tmp_path / 'hub.sqlite3'}")


async def two_servers(tmp_path: Path, db: str) -> None:
    """Two ``citizen-hub serve`` on one database: visibility across them, and racing writers."""
    cli(tmp_path, "init", "--demo", "--quiet", "--db", db)
    token = add_token(tmp_path, db, "kreis-segeberg", SEGEBERG)
    a, b = Server(tmp_path, db, _free_port()), Server(tmp_path, db, _free_port())
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(a.wait_ready(session), b.wait_ready(session))

            def service(name: str) -> dict:
                return {
                    "write": {
                        "leistung": [
                            {"id": "se-fest", "name": name, "ebene": "kreis", "synonyme": ["Dorffest"]}
                        ]
                    }
                }

            # Written through A, looked up through B.
            async with session.post(
                f"{a.url}/api/catalog/{SEGEBERG}/changes",
                json=service("Dorffest anmelden"),
                headers=bearer(token),
            ) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.headers["ETag"] == '"1"'
            await lookup_until(session, b, "Dorffest", "Todesfelde", "se-fest")

            # Two writers, one in each process, send the same (current) If-Match at the same moment.
            for round_ in range(3):  # several rounds: the race must be decided right every time
                if round_:
                    async with session.get(f"{a.url}/api/catalog/{SEGEBERG}", headers=bearer(token)) as resp:
                        etag = resp.headers["ETag"]
                    # Back to a known version: make the next round's If-Match the current one.
                    async with session.post(
                        f"{a.url}/api/catalog/{SEGEBERG}/changes",
                        json=service(f"Dorffest Runde {round_}"),
                        headers=bearer(token, **{"If-Match": etag}),
                    ) as resp:
                        assert resp.status == 200
                        current = resp.headers["ETag"]
                else:
                    current = '"1"'

                async def write_at(server: Server, name: str, tag: str = current) -> tuple[int, str, str]:
                    async with session.post(
                        f"{server.url}/api/catalog/{SEGEBERG}/changes",
                        json=service(name),
                        headers=bearer(token, **{"If-Match": tag}),
                    ) as resp:
                        return resp.status, resp.headers.get("ETag", ""), name

                results = await asyncio.gather(
                    write_at(a, f"Schreiber A {round_}"), write_at(b, f"Schreiber B {round_}")
                )
                statuses = sorted(s for s, _, _ in results)
                assert statuses == [200, 412], results
                winner = next(n for s, _, n in results if s == 200)
                new = int(current.strip('"')) + 1
                assert all(tag == f'"{new}"' for _, tag, _ in results), "both answers carry the new version"
                for server in (a, b):
                    deadline = time.perf_counter() + 1.0
                    while ("se-fest", winner) not in await lookup_names(
                        session, server, "Dorffest", "Todesfelde"
                    ):
                        assert time.perf_counter() < deadline, f"{server.url} does not show {winner}"
                        await asyncio.sleep(0.02)

            # Without If-Match concurrent writers through both processes all land, one version each.
            async def blind(server: Server, i: int) -> int:
                body = {
                    "write": {"leistung": [{"id": f"se-blind-{i}", "name": f"Blind {i}", "ebene": "kreis"}]}
                }
                async with session.post(
                    f"{server.url}/api/catalog/{SEGEBERG}/changes", json=body, headers=bearer(token)
                ) as resp:
                    return resp.status

            assert await asyncio.gather(*(blind((a, b)[i % 2], i) for i in range(10))) == [200] * 10
        engine = make_engine(db)
        with engine.connect() as conn:
            versions = [r[0] for r in conn.execute(select(version_t.c.version).order_by(version_t.c.version))]
            blind_ids = conn.execute(
                select(Service.__table__.c.id).where(Service.__table__.c.id.like("se-blind-%"))
            ).all()
        engine.dispose()
        assert (
            versions == list(range(1, len(versions) + 1)) and len(versions) == 1 + 3 + 2 + 10
        )  # first, 3 races, 2 resets, 10 blind
        assert len(blind_ids) == 10
    finally:
        a.stop()
        b.stop()
