"""The hub as real processes: ``citizen-hub serve`` (HTTP: web form, Open311, API, console),
``citizen-hub email serve`` (SMTP) and ``citizen-hub email poll-imap`` (IMAP), started, SIGKILLed and
restarted by the crash harness (:mod:`bench.crash`) and the soak (:mod:`bench.soak`).

Every process reads its configuration from the environment (``CITIZEN_HUB_<SECTION>__<KEY>``), so a
renamed or removed key fails the start instead of being ignored. Ports are picked free at each start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("citizen-hub")
#: The ``citizen-hub`` command of this environment (the script pip installed, else the same entry point).
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "import sys; from hub.cli import main; sys.exit(main())"]
HUB_ADDRESS = "anliegen@hub.example"
CSRF_SECRET = "crash-and-soak-" + "s" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mask(url: str) -> str:
    """The URL without a password (for output)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url


def prepare_database(url: str, run_dir: Path, template: Path | None = None) -> None:
    """Regions, the demo catalogue and the queue tables in ``url``.

    SQLite: a copy of ``template`` (a database ``citizen-hub init --demo`` made) when given, which saves
    the region import; else, and on PostgreSQL, ``citizen-hub init --demo``.
    """
    if url.startswith("sqlite:///") and template is not None and template.exists():
        target = Path(url.removeprefix("sqlite:///"))
        target.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(template) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        command = [*CLI, "migrate", "--db", url]
    else:
        command = [*CLI, "init", "--demo", "--quiet", "--db", url]
    run_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(command, cwd=run_dir, env=_base_env(), check=True, capture_output=True, timeout=600)


def ensure_template(path: Path) -> Path:
    """A SQLite database with every region and the demo catalogue, made once (``citizen-hub init --demo``)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        subprocess.run([*CLI, "init", "--demo", "--quiet", "--db", f"sqlite:///{tmp}"], cwd=ROOT,
                       env=_base_env(), check=True, capture_output=True, timeout=600)
        tmp.rename(path)
    return path


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITIZEN_HUB_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@dataclass
class Imap:
    """Where the IMAP poller fetches mail: a Dovecot mailbox (``tests/dovecot_support.py``)."""

    host: str
    port: int
    user: str
    password: str


@dataclass
class HubConfig:
    """What the hub processes are started with."""

    url: str
    run_dir: Path
    smtp_sink_port: int | None = None  # outbound mail goes here (a local aiosmtpd sink)
    imap: Imap | None = None
    twilio: Any = None  # bench.traffic.drivers.TwilioAccount; with twilio_api_url: the SMS channel is on
    twilio_api_url: str | None = None  # a local Messages API (tests/twilio_support.FakeTwilio)
    claim_timeout_seconds: float = 4.0
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        d = self.run_dir
        values = {
            "DATABASE__URL": self.url,
            "QUEUE__ATTACHMENT_DIR": str(d / "attachments"),
            # A killed process's claims come back after this; short, so that a run recovers quickly.
            "QUEUE__CLAIM_TIMEOUT_SECONDS": str(self.claim_timeout_seconds),
            "QUEUE__POLL_SECONDS": "0.5",
            "WEB__CSRF_SECRET": CSRF_SECRET,
            # The load comes from one address (127.0.0.1); the limits per client are not what is tested.
            "WEB__WRITE_BURST": "1000000",
            "WEB__WRITE_RATE_PER_MINUTE": "1000000",
            "WEB__READ_BURST": "1000000",
            "WEB__READ_RATE_PER_MINUTE": "1000000",
            # The same for the intake limit per client address ([limits] client_per_hour: 300 an hour from one
            # IP would refuse most of a soak's web, Open311 and SMTP traffic); the per-sender limit stays on
            # (every driver writes as its own citizen), as in a hub behind the organisation's own relay.
            "LIMITS__EXEMPT_CLIENTS": "127.0.0.0/8,::1/128",
            "CONSOLE__CSRF_SECRET": CSRF_SECRET,
            "CONSOLE__COOKIE_SECURE": "false",
            "EMAIL__ADDRESS": HUB_ADDRESS,
            "EMAIL__RAW_MAIL_DIR": str(d / "mail"),
            "EMAIL__ACK_RATE_LIMIT": "1000000",
            "EMAIL__SMTP_HOST": "127.0.0.1",
            "EMAIL__SMTP_PORT": str(self.smtp_sink_port or 25),
            "EMAIL__SMTP_TIMEOUT_SECONDS": "10",
            # The paper channel: forms signed with this key, letters into the run's print folder.
            "PAPER__HMAC_KEY": "crash-harness-paper-key-0123456789abcdef",
            "PAPER__PRINT_DIR": str(d / "print"),
        }
        if self.imap is not None:
            values.update({
                "EMAIL__IMAP_HOST": self.imap.host, "EMAIL__IMAP_PORT": str(self.imap.port),
                "EMAIL__IMAP_TLS": "false", "EMAIL__IMAP_USERNAME": self.imap.user,
                "EMAIL__IMAP_PASSWORD": self.imap.password, "EMAIL__IMAP_POLL_SECONDS": "0.2",
            })
        if self.twilio is not None and self.twilio_api_url:
            values.update({
                "TWILIO__ACCOUNT_SID": self.twilio.account_sid, "TWILIO__AUTH_TOKEN": self.twilio.auth_token,
                "TWILIO__PUBLIC_URL": self.twilio.public_url, "TWILIO__PHONE_NUMBERS": self.twilio.number,
                "TWILIO__API_BASE_URL": self.twilio_api_url,
            })
        values.update(self.extra_env)
        env = _base_env()
        env.update({f"CITIZEN_HUB_{k}": v for k, v in values.items()})
        return env


@dataclass
class Proc:
    role: str  # http | smtp | imap
    popen: subprocess.Popen
    port: int | None
    log: Path


class HubProcesses:
    """Starts the hub's processes for the roles asked for, kills them at once, starts them again."""

    def __init__(self, config: HubConfig, roles: tuple[str, ...] = ("http", "smtp", "imap")) -> None:
        self.config = config
        self.roles = roles
        self.procs: dict[str, Proc] = {}
        self.starts = 0
        self.kills = 0
        self.start_seconds: list[float] = []
        self._ports: dict[str, int | None] = {}

    @property
    def http_url(self) -> str:
        # The last one started: between a kill and the restart a request finds the port closed (the hub is
        # gone, as for a real client), rather than no port at all (a KeyError in the client, which broke a run).
        return f"http://127.0.0.1:{self._ports['http']}"

    @property
    def smtp_port(self) -> int:
        port = self.procs["smtp"].port
        assert port is not None
        return port

    def pids(self) -> dict[str, int]:
        return {role: p.popen.pid for role, p in self.procs.items()}

    def _command(self, role: str, port: int | None) -> list[str]:
        if role == "http":
            return [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)]
        if role == "smtp":
            return [*CLI, "email", "serve", "--smtp", "--host", "127.0.0.1", "--port", str(port)]
        if role == "imap":
            return [*CLI, "email", "poll-imap"]
        raise ValueError(role)

    def start(self, timeout: float = 120.0) -> None:
        """Start every role and wait until each is ready (HTTP: /healthz 200; SMTP: port open; IMAP: running)."""
        started = time.monotonic()
        env = self.config.env()
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        for role in self.roles:
            port = free_port() if role in ("http", "smtp") else None
            log = self.config.run_dir / f"{role}.{self.starts}.log"
            with open(log, "wb") as out:
                popen = subprocess.Popen(self._command(role, port), cwd=self.config.run_dir, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)
            self.procs[role] = Proc(role, popen, port, log)
            self._ports[role] = port
        deadline = started + timeout
        for proc in self.procs.values():
            self._wait_ready(proc, deadline)
        self.starts += 1
        self.start_seconds.append(time.monotonic() - started)

    def _wait_ready(self, proc: Proc, deadline: float) -> None:
        while True:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"the {proc.role} process exited with {proc.popen.returncode}:\n"
                                   + proc.log.read_text(errors="replace")[-3000:])
            if proc.role == "imap":
                if "polling" in proc.log.read_text(errors="replace"):
                    return
            elif proc.role == "http":
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/healthz", timeout=2) as r:
                        if r.status == 200:
                            return
            else:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", proc.port), 0.5):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {proc.role} process did not become ready:\n"
                                   + proc.log.read_text(errors="replace")[-3000:])
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL every process at the same moment: none gets to shut down cleanly."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.popen.pid, signal.SIGKILL)
        for proc in self.procs.values():
            proc.popen.wait(30)
        self.kills += 1
        self.procs.clear()

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM every process and wait (SIGKILL after ``timeout``)."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.popen.terminate()
        for proc in self.procs.values():
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(10)
        self.procs.clear()

    def alive(self) -> dict[str, bool]:
        return {role: p.popen.poll() is None for role, p in self.procs.items()}

    def errors_in_logs(self) -> list[str]:
        """Lines of every log of this run that report a traceback or an ERROR (for the summary)."""
        found = []
        for log in sorted(self.config.run_dir.glob("*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if " ERROR " in line or line.startswith("Traceback"):
                    found.append(f"{log.name}: {line[:300]}")
        return found


@contextlib.contextmanager
def running(config: HubConfig, roles: tuple[str, ...]) -> Iterator[HubProcesses]:
    hub = HubProcesses(config, roles)
    try:
        yield hub
    finally:
        if hub.procs:
            hub.stop()


def clean(run_dir: Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)
