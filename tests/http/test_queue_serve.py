"""The queue as an operator meets it: ``citizen-hub init --demo``, ``citizen-hub serve``, a token from
``citizen-hub token add``, a request over HTTP, routed by the real knowledge base, a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("citizen-hub")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hub.cli"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CITIZEN_HUB_")} | {"PYTHONPATH": str(ROOT)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: Path, *args: str) -> str:
    done = subprocess.run([*_cli(), *args], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_init_serve_token_request_routed_and_stopped(tmp_path):
    db = f"sqlite:///{tmp_path / 'h.sqlite3'}"
    _run(tmp_path, "init", "--demo", "--quiet", "--db", db)
    port = _free_port()
    log = open(tmp_path / "serve.log", "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*_cli(), "serve", "--db", db, "--host", "127.0.0.1", "--port", str(port)],
                            cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT)

    def output() -> str:
        log.seek(0)
        return log.read().decode(errors="replace")[-3000:]

    base = f"http://127.0.0.1:{port}"
    try:
        service = _run(tmp_path, "token", "add", "web-frontend", "--role", "service", "--db", db).strip()
        agent = _run(tmp_path, "token", "add", "agent.meier", "--role", "agent", "--region", "01", "--db",
                     db).strip()

        async def scenario() -> tuple[dict, dict, str]:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                deadline = time.monotonic() + 90
                while True:
                    assert proc.poll() is None, f"the server exited:\n{output()}"
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with http.get(f"{base}/healthz") as resp:
                            if resp.status == 200:
                                break
                    assert time.monotonic() < deadline, f"the server did not start:\n{output()}"
                    await asyncio.sleep(0.2)
                body = {"channel": "api", "external_id": "curl-1", "text": "Ich möchte ein Wunschkennzeichen reservieren",
                        "location": "Todesfelde", "contact": {"name": "Erika Musterfrau", "email": "erika@example.de",
                                                              "phone": None}}
                auth = {"Authorization": f"Bearer {service}"}
                async with http.post(f"{base}/api/requests", json=body, headers=auth) as resp:
                    assert resp.status == 201, await resp.text()
                    created = await resp.json()
                async with http.post(f"{base}/api/requests", json=body, headers=auth) as resp:
                    assert resp.status == 200 and (await resp.json())["case_id"] == created["case_id"]
                deadline = time.monotonic() + 30
                while True:
                    async with http.get(f"{base}/api/cases/{created['case_id']}",
                                        headers={"Authorization": f"Bearer {agent}"}) as resp:
                        case = await resp.json()
                    if case["state"] != "new" or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                async with http.get(f"{base}/metrics") as resp:
                    metrics = await resp.text()
                return created, case, metrics

        created, case, metrics = asyncio.run(scenario())
        assert set(created) == {"case_id", "token", "state"} and created["state"] == "new"
        assert case["state"] == "routed", case["audit"]
        assert case["service"]["id"] == "sh-wunschkennzeichen" and case["authority"]["id"] == "kreis-01060"
        assert [a["to"] for a in case["audit"]] == ["new", "routed"]
        assert 'citizen_hub_queue_depth{state="routed"} 1' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, output()
        assert "Wunschkennzeichen" not in output()  # no message body in the server's log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
