"""Soak: ``make soak`` (``python -m bench.soak``) runs the real hub for ``SOAK_SECONDS`` (default 600) per database
under mixed traffic and reports whether it stays healthy.

Traffic (all at once, paced, on SQLite and then on PostgreSQL):

* intake on every channel, through the drivers of :mod:`bench.traffic.drivers` (API, web form, Open311,
  SMTP into ``citizen-hub email serve``, IMAP APPEND into the Dovecot mailbox ``citizen-hub email
  poll-imap`` reads, signed Twilio SMS webhooks whose answers go to a local Messages API),
  ``--intake-rate`` requests per second in all;
* ``--agents`` (50) agents in the console: each logs in (and now and then out and in again), looks
  services up, opens its queue and a case, and answers; answers to mail go out through the outbox to an
  outside SMTP server (:class:`bench.traffic.sink.SmtpSink`).

It prints, per endpoint, throughput and p50/p99 latency per time slice; the error count (every answer that
is not the expected one: must be 0); the resident memory of each hub process over time (must stay flat:
the mean of the last minute within 10 % of the second minute's); and, afterwards, the crash harness's
checks of what was stored (:func:`bench.crash.check_requests`, :func:`bench.crash.check_integrity`).
A PNG of the series is written beside the text report (``bench/results/soak-<db>-<time>.png`` and
``.txt``; matplotlib, a dev dependency). Figures are from one machine; on a shared one they are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.traffic import drivers as drv
from bench.traffic.hub import ROOT, HubConfig, HubProcesses, Imap, ensure_template, mask, prepare_database
from bench.traffic.sink import SmtpSink

RESULTS = ROOT / "bench" / "results"
INTAKE = ("api", "web", "open311", "smtp", "imap", "sms")
QUERIES = ("reisepass", "wunschkennzeichen", "hund anmelden", "ummelden", "führungszeugnis", "baugenehmigung",
           "personalausweis verloren", "wohngeld", "meldebescheinigung", "sperrmüll", "kfz zulassung", "elterngeld")
AGENT_PASSWORD = "soak-agent-passphrase-long-enough"


@dataclass
class Sample:
    at: float  # seconds since the start of the traffic
    endpoint: str
    seconds: float
    ok: bool


@dataclass
class SoakReport:
    url: str
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # "endpoint: what came back"
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    problems: list[str] = field(default_factory=list)
    stored: dict[str, int] = field(default_factory=dict)
    log_errors: list[str] = field(default_factory=list)
    shift_start: list[Sample] = field(default_factory=list)  # the agents' first log-ins, before the traffic
    shift_start_seconds: float = 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def memory_windows(self) -> dict[str, tuple[float, float, float]]:
        """Per process: the median RSS (MB) of the second window (minute), of the last, and their ratio.

        The median, not the mean: an agent's log-in holds argon2's 64 MiB for a moment (four at once in
        the console's log-in slots), which a sample now and then catches; that is not growth.
        """
        window = min(60.0, self.seconds / 5)
        out = {}
        for role, series in self.rss.items():
            second = [r for t, r in series if window <= t < 2 * window]
            last = [r for t, r in series if t >= self.seconds - window]
            if second and last:
                a, b = statistics.median(second) / 1e6, statistics.median(last) / 1e6
                out[role] = (a, b, b / a)
        return out

    @property
    def memory_flat(self) -> bool:
        return all(abs(ratio - 1) <= 0.10 for _, _, ratio in self.memory_windows().values())

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and self.memory_flat and not self.problems


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def slices(report: SoakReport, width: float) -> dict[str, list[tuple[float, int, float, float]]]:
    """Per endpoint: (slice start, count, p50 ms, p99 ms) for each slice of ``width`` seconds."""
    by: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in report.samples:
        by[s.endpoint][int(s.at // width)].append(s.seconds * 1000)
    n = max(1, math.ceil(report.seconds / width))
    return {ep: [(i * width, len(b.get(i, [])), _pct(b.get(i, []), 0.5), _pct(b.get(i, []), 0.99)) for i in range(n)]
            for ep, b in sorted(by.items())}


def render_text(report: SoakReport, width: float) -> str:
    lines = [f"soak on {mask(report.url)}: {report.seconds:.0f} s of mixed traffic"]
    logins = [x.seconds * 1000 for x in report.shift_start if x.endpoint == "console.login"]
    if logins:
        lines.append(f"  shift start (before the traffic): {len(logins) // 2} agents logged in within "
                     f"{report.shift_start_seconds:.0f} s; log-in requests p50 {_pct(logins, .5):.0f} ms, "
                     f"p99 {_pct(logins, .99):.0f} ms, max {max(logins):.0f} ms")
    lines.append(f"  {'endpoint':<18} {'count':>7} {'per s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    per_ep: dict[str, list[float]] = defaultdict(list)
    for s in report.samples:
        per_ep[s.endpoint].append(s.seconds * 1000)
    for ep, values in sorted(per_ep.items()):
        errors = sum(v for k, v in report.errors.items() if k.startswith(ep + ":"))
        lines.append(f"  {ep:<18} {len(values):>7} {len(values) / report.seconds:>7.2f} {_pct(values, .5):>8.1f} "
                     f"{_pct(values, .99):>8.1f} {max(values):>8.1f} {errors:>7}")
    series = slices(report, width)
    n = len(next(iter(series.values()), []))
    head = f"  {'t from (s)':<18} " + " ".join(f"{i * width:>6.0f}" for i in range(n))
    for title, pick, fmt in (("requests per second", lambda r: r[1] / width, "{:>6.1f}"),
                             ("p50 latency (ms)", lambda r: r[2], "{:>6.0f}"),
                             ("p99 latency (ms)", lambda r: r[3], "{:>6.0f}")):
        lines.append(f"\n  {title}, per {width:.0f} s slice")
        lines.append(head)
        for ep, rows in series.items():
            lines.append(f"  {ep:<18} " + " ".join(fmt.format(pick(r)) if r[1] else f"{'-':>6}" for r in rows))
    lines.append(f"\n  resident memory (MB, median per {width:.0f} s slice)")
    lines.append(head)
    for role, samples in sorted(report.rss.items()):
        cells = []
        for i in range(n):
            in_slice = [r for t, r in samples if i * width <= t < (i + 1) * width]
            cells.append(f"{statistics.median(in_slice) / 1e6:>6.0f}" if in_slice else f"{'-':>6}")
        lines.append(f"  {role:<18} " + " ".join(cells))
    for role, (a, b, ratio) in sorted(report.memory_windows().items()):
        verdict = "flat" if abs(ratio - 1) <= 0.10 else "NOT FLAT"
        lines.append(f"  {role:<5} median RSS in the second window {a:.1f} MB, in the last {b:.1f} MB: "
                     f"{ratio - 1:+.1%} ({verdict}: within 10 % required)")
    lines.append(f"  errors: {report.error_count}" + ("" if not report.errors else " — " + ", ".join(
        f"{k} x{v}" for k, v in report.errors.most_common(10))))
    lines.append("  stored: " + ", ".join(f"{k} {v}" for k, v in report.stored.items()))
    if report.log_errors:
        lines.append(f"  {len(report.log_errors)} ERROR/traceback lines in the hub's logs, e.g.:")
        lines += [f"    {e}" for e in report.log_errors[:5]]
    lines.append("  RESULT: " + ("ok: no errors, memory flat, everything acknowledged stored once"
                                 if report.ok else "FAIL"))
    lines += [f"    - {p}" for p in report.problems[:20]]
    return "\n".join(lines)


def render_png(report: SoakReport, width: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = slices(report, width)
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(12, 13), sharex=True)
    for ep, rows in series.items():
        ts = [r[0] + width / 2 for r in rows]
        ax1.plot(ts, [r[1] / width for r in rows], label=ep)
        line, = ax2.plot(ts, [r[3] for r in rows], label=f"{ep} p99")
        ax2.plot(ts, [r[2] for r in rows], linestyle=":", color=line.get_color())
    ax1.set_ylabel("requests per second")
    ax1.set_title(f"soak on {mask(report.url).split('?')[0]} — {report.seconds:.0f} s, errors: {report.error_count}")
    ax1.legend(fontsize=7, ncol=4)
    ax2.set_yscale("log")
    ax2.set_ylabel("latency ms (solid p99, dotted p50)")
    ax2.legend(fontsize=7, ncol=4)
    for role, s in sorted(report.rss.items()):
        ax3.plot([t for t, _ in s], [r / 1e6 for _, r in s], label=role)
    window = min(60.0, report.seconds / 5)
    ax3.axvspan(window, 2 * window, alpha=0.1, color="green", label="second window")
    ax3.axvspan(report.seconds - window, report.seconds, alpha=0.1, color="orange", label="last window")
    ax3.set_ylabel("resident memory MB")
    ax3.set_xlabel("seconds")
    ax3.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- agents --------------------------------------------------------------------------------------------------

_META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
_LOGIN_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Agent:
    """One agent in the console: log-in, lookups, the queue, a case, an answer; a new log-in now and then."""

    def __init__(self, name: str, base: str, rng: random.Random, record) -> None:
        self.name = name
        self.base = base
        self.rng = rng
        self.record = record
        self.csrf = ""
        self.logged_in = False
        self.session: aiohttp.ClientSession | None = None

    async def _timed(self, endpoint: str, method: str, path: str, expect: tuple[int, ...], **kw) -> Any:
        assert self.session is not None
        started = time.perf_counter()
        try:
            async with self.session.request(method, self.base + path, allow_redirects=False, **kw) as resp:
                body = await resp.read()
                ok = resp.status in expect
                self.record(endpoint, time.perf_counter() - started, ok, resp.status)
                return body if ok else None
        except drv.HTTP_GONE as exc:
            self.record(endpoint, time.perf_counter() - started, False, type(exc).__name__)
            return None

    async def login(self) -> bool:
        if self.session is not None:
            if self.logged_in:
                await self._timed("console.logout", "POST", "/console/logout", (303,),
                                  headers={"X-CSRF-Token": self.csrf})
            await self.session.close()
        self.logged_in = False
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                             timeout=aiohttp.ClientTimeout(total=60))
        page = await self._timed("console.login", "GET", "/console/login", (200,))
        match = _LOGIN_TOKEN.search(page.decode()) if page else None
        if not match:
            return False
        form = {"csrf_token": match.group(1), "name": self.name, "password": AGENT_PASSWORD, "next": "/console/"}
        if await self._timed("console.login", "POST", "/console/login", (303,), data=form) is None:
            return False
        page = await self._timed("console.page", "GET", "/console/", (200,))
        match = _META_CSRF.search(page.decode()) if page else None
        self.csrf = match.group(1) if match else ""
        self.logged_in = bool(self.csrf)
        return self.logged_in

    async def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.55:
            await self._timed("console.lookup", "GET", "/console/api/lookup", (200,),
                              params={"q": self.rng.choice(QUERIES), "location": self.rng.choice(drv.PLACES)})
            return
        body = await self._timed("console.queue", "GET", "/console/api/queue", (200,))
        if body is None:
            return
        import json

        cases = [c for c in json.loads(body)["cases"] if c["state"] not in ("closed", "dead_letter")]
        if not cases:
            return
        case = self.rng.choice(cases)
        if await self._timed("console.case", "GET", f"/console/api/cases/{case['id']}", (200,)) is None:
            return
        if roll < 0.85:
            text = f"Guten Tag, zu Ihrem Anliegen: bitte bringen Sie Ihren Ausweis mit. ({self.name})"
            # 409: the case moved on between the queue and the answer (another agent closed it): not an error
            await self._timed("console.reply", "POST", f"/console/cases/{case['id']}/reply", (200, 201, 303, 409),
                              json={"text": text}, headers={"X-CSRF-Token": self.csrf, "Accept": "application/json"})

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def _add_agents(url: str, n: int) -> list[str]:
    from hub.console.auth import add_user
    from hub.db import make_engine

    engine = make_engine(url)
    names = []
    for i in range(n):
        name = f"soak.agent{i:02d}"
        add_user(engine, name, "agent", AGENT_PASSWORD, regions=["01", "05"])
        names.append(name)
    engine.dispose()
    return names


# -- the run --------------------------------------------------------------------------------------------------


async def run_soak(url: str, run_dir: Path, *, seconds: float, agents: int = 50, intake_rate: float = 8.0,
                   think: float = 2.0, relogin: float = 0.002, dovecot: Any = None, template: Path | None = None,
                   seed: int = 1, progress: bool = True) -> SoakReport:
    import psutil

    from bench.crash import _tokens, _twilio, check_integrity, check_requests
    from hub.db import make_engine

    rng = random.Random(seed)
    report = SoakReport(url, seconds)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    await asyncio.to_thread(prepare_database, url, run_dir, template)
    names = await asyncio.to_thread(_add_agents, url, agents)
    engine = make_engine(url)
    channels = [c for c in INTAKE if c != "imap" or dovecot is not None]
    prefix = f"s{seed}"
    drivers = drv.build(channels, prefix)
    tickets: dict[str, list[drv.Ticket]] = {d.name: [] for d in drivers}
    t0 = 0.0

    agent_count = agents

    def record_start(endpoint: str, took: float, ok: bool, what: Any = "") -> None:
        report.shift_start.append(Sample(0.0, endpoint, took, ok))
        if not ok:
            report.errors[f"{endpoint} (shift start): {what}"] += 1

    def record(endpoint: str, took: float, ok: bool, what: Any = "") -> None:
        report.samples.append(Sample(time.monotonic() - t0, endpoint, took, ok))
        if not ok:
            report.errors[f"{endpoint}: {what}"] += 1

    extra = {"CONSOLE__LOGIN_RATE_PER_MINUTE": "100000", "CONSOLE__LOGIN_BURST": "10000"}
    with ExitStack() as stack:
        sink = stack.enter_context(SmtpSink(delay=(0.0, 0.005), seed=seed))
        imap = None
        if dovecot is not None:
            from dovecot_support import PASSWORD, USER

            dovecot.clear()
            imap = Imap("127.0.0.1", dovecot.port, USER, PASSWORD)
        twilio, fake_twilio = await _twilio("sms" in channels or "voice" in channels)
        config = HubConfig(url, run_dir, smtp_sink_port=sink.port, imap=imap, claim_timeout_seconds=60,
                           extra_env=extra, twilio=twilio, twilio_api_url=fake_twilio.url if fake_twilio else None)
        hub = HubProcesses(config, ("http", "smtp", "imap") if imap else ("http", "smtp"))
        stack.callback(lambda: hub.stop() if hub.procs else None)
        tokens = _tokens(engine, prefix)
        await asyncio.to_thread(hub.start)
        procs = {role: psutil.Process(pid) for role, pid in hub.pids().items()}
        say(f"  hub started in {hub.start_seconds[-1]:.1f} s; {agents} agents log in")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:
            ctx = drv.Context(hub, session, tokens, rng, dovecot=dovecot, twilio=twilio)
            for d in drivers:
                await d.setup(ctx)
            # The shift starts: every agent logs in within a minute, before the measured traffic, so that
            # the burst of argon2 hashes (64 MiB each) is reported on its own and the memory windows see the
            # steady state. Later an agent logs out and in again now and then (a break): those count.
            crew = [Agent(n, hub.http_url, random.Random(rng.random()), record_start) for n in names]
            started = time.monotonic()

            async def shift_start(agent: Agent) -> bool:
                await asyncio.sleep(rng.uniform(0, min(60.0, seconds / 10)))
                return await agent.login()

            ready = await asyncio.gather(*(shift_start(a) for a in crew))
            report.shift_start_seconds = time.monotonic() - started
            for agent in crew:
                agent.record = record
            say(f"  {sum(ready)} of {agent_count} agents logged in after {report.shift_start_seconds:.0f} s; "
                "the measured traffic starts")
            t0 = time.monotonic()
            end = t0 + seconds

            async def agent_loop(agent: Agent, logged_in: bool) -> None:
                while time.monotonic() < end:
                    if not logged_in or agent.rng.random() < relogin:
                        logged_in = await agent.login()
                    else:
                        await agent.step()
                    await asyncio.sleep(agent.rng.expovariate(1 / think))
                await agent.close()

            per_channel = intake_rate / len(drivers)

            async def intake_loop(d: drv.Driver) -> None:
                while time.monotonic() < end:
                    t = d.new_ticket(ctx)
                    started = time.perf_counter()
                    outcome = await d.send(ctx, t)
                    took = time.perf_counter() - started
                    if outcome != drv.SKIP:
                        tickets[d.name].append(t)
                        t.acked = outcome == drv.ACK
                        record(f"{d.name}.intake", took, outcome in (drv.ACK, drv.SENT), outcome)
                    await asyncio.sleep(rng.expovariate(per_channel))

            async def sampler() -> None:
                last = -60.0
                while time.monotonic() < end:
                    now = time.monotonic() - t0
                    for role, p in procs.items():
                        try:
                            report.rss[role].append((now, p.memory_info().rss))
                        except psutil.Error:
                            report.problems.append(f"the {role} process died at {now:.0f} s")
                            return
                    if now - last >= 60:
                        last = now
                        say(f"  {now:5.0f} s: {len(report.samples)} requests, {report.error_count} errors, "
                            + ", ".join(f"{r} {s[-1][1] / 1e6:.0f} MB" for r, s in report.rss.items()))
                    await asyncio.sleep(1.0)

            await asyncio.gather(sampler(), *(agent_loop(a, ok) for a, ok in zip(crew, ready, strict=True)),
                                 *(intake_loop(d) for d in drivers))
            for d in drivers:
                await d.settle(ctx, tickets[d.name], timeout=120)
                if d.must_arrive:
                    late = sum(not t.acked for t in tickets[d.name])
                    if late:
                        report.errors[f"{d.name}.intake: not stored 120 s after the end"] += late
            from bench.crash import _wait_drained

            report.problems += await _wait_drained(engine, 120)
            await asyncio.to_thread(hub.stop)
            if fake_twilio is not None:
                await fake_twilio.stop()
        for d in drivers:
            d.close()
        report.log_errors = hub.errors_in_logs()
    report.problems += check_requests(drivers, tickets, engine)
    report.problems += check_integrity(engine, run_dir / "attachments")
    report.stored = {d.name: sum(t.acked for t in tickets[d.name]) for d in drivers}
    engine.dispose()
    return report


def _pg_url():
    from bench.crash import _pg_url as make

    return make()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "600")),
                        help="length of the traffic per database (default 600, or $SOAK_SECONDS)")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default=os.environ.get("SOAK_DB", "both"))
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--intake-rate", type=float, default=8.0, help="intake requests per second, all channels")
    parser.add_argument("--think", type=float, default=2.0, help="mean pause of an agent between actions (s)")
    parser.add_argument("--slice", type=float, default=None, help="seconds per time slice (default: 1/10 of the run)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from dovecot_support import dovecot_missing, running_dovecot

    RESULTS.mkdir(parents=True, exist_ok=True)
    template = ensure_template(ROOT / "var" / "crash-template.sqlite3")
    width = args.slice or max(10.0, round(args.seconds / 10))
    failed = False
    with ExitStack() as stack:
        dovecot = None
        missing = dovecot_missing()
        if missing:
            print(f"soak: {missing}; the imap channel is left out", file=sys.stderr)
        else:
            dovecot = stack.enter_context(running_dovecot())
        for db in (("sqlite", "postgres") if args.db == "both" else (args.db,)):
            run_dir = Path(tempfile.mkdtemp(prefix=f"hub-soak-{db}-"))
            drop = None
            if db == "postgres":
                url, drop = _pg_url()
            else:
                url = f"sqlite:///{run_dir / 'hub.sqlite3'}"
            print(f"== soak on {db}: {args.seconds:.0f} s, {args.agents} agents, intake {args.intake_rate}/s "
                  f"(run in {run_dir})", file=sys.stderr, flush=True)
            try:
                report = asyncio.run(run_soak(url, run_dir, seconds=args.seconds, agents=args.agents,
                                              intake_rate=args.intake_rate, think=args.think, dovecot=dovecot,
                                              template=template))
            finally:
                if drop is not None:
                    drop()
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            text = render_text(report, width)
            base = RESULTS / f"soak-{db}-{stamp}"
            base.with_suffix(".txt").write_text(text + "\n")
            render_png(report, width, base.with_suffix(".png"))
            print(text + f"\n  report: {base.with_suffix('.txt')}\n  plot:   {base.with_suffix('.png')}", flush=True)
            failed |= not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
