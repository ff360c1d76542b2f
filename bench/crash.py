"""Crash harness: SIGKILL the hub at random moments during a concurrent load on every channel, restart it,
and check that nothing acknowledged was lost, nothing was stored twice and nothing is half-stored.

``make crash`` (``python -m bench.crash``) runs many kills on SQLite and on PostgreSQL and prints a
summary; ``tests/crash/`` runs a few, bounded in time, in the test-suite. One run:

1. a database with the regions and the demo catalogue; tokens for a service, an Open311 client and an
   agent; an outside SMTP server (:class:`bench.traffic.sink.SmtpSink`) the outbox delivers to, and a
   real Dovecot mailbox the IMAP poller reads;
2. the hub's processes (``citizen-hub serve``, ``email serve``, ``email poll-imap``) under load from
   every channel driver (:mod:`bench.traffic.drivers`: API, web form, Open311, SMTP, IMAP, Twilio SMS)
   and agents answering e-mail cases; once the load is flowing, after a random pause, every process gets SIGKILL at the same moment; start again,
   load again; ``kills`` times;
3. recovery: the hub starts once more; the clients that may send again do (every request whose answer
   they lost, and a sample of acknowledged ones, as mail servers and browsers do), the IMAP poller empties
   the mailbox, routing and the outbox finish, the hub stops;
4. the checks (:func:`check_requests`, :func:`check_integrity`, :func:`check_outbox`):

   * every acknowledged request is stored exactly once; none is stored twice; every mail the mailbox
     held is stored exactly once;
   * nothing is half-stored: every message has its case, every case its first message and its
     ``create`` audit entry, every attachment row its file (whole: size and SHA-256), every stored mail
     its raw file; no case is left ``new`` (claims of the killed processes came back); SQLite's
     ``integrity_check`` and ``foreign_key_check`` pass;
   * the outbox: every acknowledged answer is in the outbox once; no mail reached the outside server
     twice; every message marked ``sent`` arrived exactly once; none is left ``pending`` or ``sending``;
     one the killed sender had in hand is ``uncertain`` (it may or may not have arrived, at most once,
     and it is not sent again: an agent decides, as ``hub/queue/outbox.py`` defines).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from bench.traffic import drivers as drv
from bench.traffic.hub import ROOT, HubConfig, HubProcesses, Imap, ensure_template, mask, prepare_database
from bench.traffic.sink import SmtpSink

DEFAULT_CHANNELS = ("api", "web", "open311", "smtp", "imap", "sms", "reply")


@dataclass
class Cycle:
    """One load-and-kill round."""

    acked: int
    seconds: float  # from the start of the load to the kill
    start_seconds: float  # how long the hub took to start before it


@dataclass
class CrashReport:
    url: str
    kills: int
    seed: int
    cycles: list[Cycle] = field(default_factory=list)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)  # per channel: ack, lost, refused:…
    tickets: dict[str, int] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)
    resent: dict[str, int] = field(default_factory=dict)
    outbox: Counter[str] = field(default_factory=Counter)  # send states of outbound e-mail at the end
    sink_mails: int = 0
    sms_sent: int = 0  # SMS answers the local Twilio API took
    problems: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"crash run on {mask(self.url)}: {self.kills} SIGKILLs, seed {self.seed}, {self.seconds:.0f} s"]
        for i, c in enumerate(self.cycles, 1):
            lines.append(f"  kill {i}: after {c.seconds:.2f} s of load, {c.acked} acknowledged in that round "
                         f"(the hub took {c.start_seconds:.1f} s to start)")
        lines.append(f"  {'channel':<8} {'sent':>7} {'acked':>7} {'lost':>6} {'resent':>7}  other answers")
        for name in self.tickets:
            out = self.outcomes.get(name, Counter())
            other = ", ".join(f"{k} x{v}" for k, v in sorted(out.items()) if k not in (drv.ACK, drv.LOST, drv.SENT))
            lines.append(f"  {name:<8} {self.tickets[name]:>7} {self.acked.get(name, 0):>7} "
                         f"{out.get(drv.LOST, 0):>6} {self.resent.get(name, 0):>7}  {other or '-'}")
        states = ", ".join(f"{k} {v}" for k, v in sorted(self.outbox.items())) or "none"
        lines.append(f"  outbox (e-mail): {states}; the outside server took {self.sink_mails} mails; "
                     f"the local Twilio API took {self.sms_sent} SMS")
        if self.log_errors:
            lines.append(f"  {len(self.log_errors)} ERROR/traceback lines in the hub's logs, e.g.:")
            lines += [f"    {e}" for e in self.log_errors[:5]]
        lines.append("  RESULT: " + ("ok: nothing acknowledged lost, nothing twice, nothing half-stored"
                                     if self.ok else f"{len(self.problems)} PROBLEMS"))
        lines += [f"    - {p}" for p in self.problems[:40]]
        return "\n".join(lines)


# -- checks (each returns the problems it found; tests/crash/test_crash_checks.py shows they can fail) --------


def check_requests(drivers: list[drv.Driver], tickets: dict[str, list[drv.Ticket]], engine: Engine) -> list[str]:
    """Every acknowledged request stored exactly once, none twice, every ``must_arrive`` one once."""
    problems = []
    with engine.connect() as conn:
        for d in drivers:
            mine = tickets.get(d.name, [])
            stored = d.stored(conn, mine)
            for t in mine:
                n = stored.get(t.key, 0)
                if n > 1:
                    problems.append(f"{d.name}: request {t.key} is stored {n} times")
                elif n == 0 and t.acked:
                    problems.append(f"{d.name}: request {t.key} was acknowledged and is not stored")
                elif n == 0 and d.must_arrive:
                    problems.append(f"{d.name}: request {t.key} waited in the mailbox and was never stored")
    return problems


def check_integrity(engine: Engine, attachment_dir: Path) -> list[str]:
    """Nothing half-stored (see the module docstring)."""
    from hub.queue.cases import attachment_t, audit_t, case_t, message_t

    problems = []
    m, c, a, au = message_t, case_t, attachment_t, audit_t
    with engine.connect() as conn:
        orphans = conn.execute(select(m.c.id).where(~select(c.c.id).where(c.c.id == m.c.case_id).exists())).scalars().all()
        if orphans:
            problems.append(f"{len(orphans)} messages without their case, e.g. {orphans[:5]}")
        empty = conn.execute(select(c.c.id).where(~select(m.c.id).where(
            m.c.case_id == c.c.id, m.c.direction == "in").exists())).scalars().all()
        if empty:
            problems.append(f"{len(empty)} cases without an inbound message, e.g. {empty[:5]}")
        unaudited = conn.execute(select(c.c.id).where(~select(au.c.id).where(
            au.c.case_id == c.c.id, au.c.action == "create").exists())).scalars().all()
        if unaudited:
            problems.append(f"{len(unaudited)} cases without their 'create' audit entry, e.g. {unaudited[:5]}")
        lonely = conn.execute(select(a.c.id).where(~select(m.c.id).where(m.c.id == a.c.message_id).exists())).scalars().all()
        if lonely:
            problems.append(f"{len(lonely)} attachment rows without their message, e.g. {lonely[:5]}")
        for att_id, sha, size in conn.execute(select(a.c.id, a.c.sha256, a.c.size_bytes)):
            path = attachment_dir / sha[:2] / sha
            if not path.exists():
                problems.append(f"attachment {att_id}: its file {path.name} is missing")
                continue
            data = path.read_bytes()
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                problems.append(f"attachment {att_id}: its file is not whole ({len(data)} of {size} bytes)")
        for mid, ref in conn.execute(select(m.c.id, m.c.raw_ref).where(m.c.channel == "email", m.c.direction == "in")):
            if not ref:
                problems.append(f"mail message {mid} has no raw_ref")
            elif not Path(ref).exists():
                problems.append(f"mail message {mid}: its original {ref} is missing")
        new = conn.execute(select(func.count()).select_from(c).where(c.c.state == "new")).scalar_one()
        if new:
            problems.append(f"{new} cases are still 'new' after the recovery (routing did not take them back)")
        if engine.dialect.name == "sqlite":
            check = conn.execute(text("PRAGMA integrity_check")).scalar()
            if check != "ok":
                problems.append(f"SQLite integrity_check: {check}")
            fk = conn.execute(text("PRAGMA foreign_key_check")).all()
            if fk:
                problems.append(f"SQLite foreign_key_check: {len(fk)} rows, e.g. {fk[:3]}")
    return problems


def outbox_states(engine: Engine) -> list[tuple[int, str | None, str | None]]:
    from hub.queue.cases import message_t as m

    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(m.c.id, m.c.external_id, m.c.send_state).where(
            m.c.direction == "out", m.c.channel == "email"))]


def check_outbox(rows: list[tuple[int, str | None, str | None]], received: Counter[str],
                 replies: list[drv.Ticket] = ()) -> list[str]:
    """The outbox against what the outside server received (see the module docstring)."""
    problems = []
    by_external = {ext: (mid, state) for mid, ext, state in rows}
    for ext, n in received.items():
        if n > 1:
            problems.append(f"mail {ext} reached the outside server {n} times")
        if ext not in by_external:
            problems.append(f"the outside server got mail {ext}, which is not in the outbox")
    for mid, ext, state in rows:
        n = received.get(ext or "", 0)
        if state == "sent" and n != 1:
            problems.append(f"outbound message {mid} is marked sent and arrived {n} times")
        elif state in ("pending", "sending"):
            problems.append(f"outbound message {mid} is still {state} after the recovery")
        elif state == "failed":
            problems.append(f"outbound message {mid} failed (the outside server took everything)")
    ids = {mid for mid, _, _ in rows}
    for t in replies:
        if t.acked and t.data.get("message_id") not in ids:
            problems.append(f"acknowledged reply {t.key} (message {t.data.get('message_id')}) is not in the outbox")
    return problems


# -- the run --------------------------------------------------------------------------------------------------


async def _load(ctx: drv.Context, drivers: list[drv.Driver], tickets: dict[str, list[drv.Ticket]],
                outcomes: dict[str, Counter[str]], stop: asyncio.Event, acked: list[int]) -> None:
    async def client(d: drv.Driver) -> None:
        while not stop.is_set():
            t = d.new_ticket(ctx)
            t.sends += 1
            outcome = await d.send(ctx, t)
            if outcome == drv.SKIP:
                continue
            tickets[d.name].append(t)
            outcomes[d.name][outcome] += 1
            if outcome == drv.ACK:
                t.acked = True
                acked[0] += 1
            elif outcome == drv.LOST:
                return  # the hub is gone; this client waits for the next round
            elif outcome.startswith("refused"):
                await asyncio.sleep(0.05)

    await asyncio.gather(*(client(d) for d in drivers for _ in range(d.clients)))


async def _wait_drained(engine: Engine, timeout: float) -> list[str]:
    from hub.queue.cases import case_t, message_t

    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            new = conn.execute(select(func.count()).select_from(case_t).where(case_t.c.state == "new")).scalar_one()
            busy = conn.execute(select(func.count()).select_from(message_t).where(
                message_t.c.direction == "out", message_t.c.send_state.in_(("pending", "sending")))).scalar_one()
        if not new and not busy:
            return []
        if time.monotonic() > deadline:
            return [f"after {timeout:.0f} s still {new} new cases and {busy} outbound messages pending or sending"]
        await asyncio.sleep(0.5)


def _tokens(engine: Engine, prefix: str) -> drv.Tokens:
    from hub.http.tokens import add_token

    return drv.Tokens(service=add_token(engine, f"{prefix}-service", "service"),
                      open311=add_token(engine, f"{prefix}-open311", "open311"),
                      agent=add_token(engine, f"{prefix}-agent", "agent", all_authorities=True))


async def run_crash(url: str, run_dir: Path, *, kills: int = 3, seed: int | None = None,
                    channels: tuple[str, ...] = DEFAULT_CHANNELS, dovecot: Any = None,
                    template: Path | None = None, min_acks: int = 30, max_pause: float = 2.0,
                    resend_sample: int = 30, progress: bool = False) -> CrashReport:
    """One crash run (see the module docstring); ``dovecot`` is a running ``tests/dovecot_support.Dovecot``
    (needed for the ``imap`` channel)."""
    from hub.db import make_engine

    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    started = time.monotonic()
    report = CrashReport(url, kills, seed)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    await asyncio.to_thread(prepare_database, url, run_dir, template)
    engine = make_engine(url)
    prefix = f"c{seed}"
    drivers = drv.build(channels, prefix)
    tickets: dict[str, list[drv.Ticket]] = {d.name: [] for d in drivers}
    outcomes: dict[str, Counter[str]] = {d.name: Counter() for d in drivers}
    roles = tuple(r for r in ("http", "smtp", "imap") if any(r in d.roles for d in drivers) or r == "http")
    if "imap" in roles and dovecot is None:
        raise ValueError("the imap channel needs a running Dovecot (tests/dovecot_support.running_dovecot)")
    if dovecot is not None:
        dovecot.clear()
    with ExitStack() as stack:
        sink = stack.enter_context(SmtpSink(seed=seed))
        imap = Imap("127.0.0.1", dovecot.port, *_dovecot_login()) if dovecot is not None else None
        twilio, fake_twilio = await _twilio("sms" in channels)
        config = HubConfig(url, run_dir, smtp_sink_port=sink.port, imap=imap, twilio=twilio,
                           twilio_api_url=fake_twilio.url if fake_twilio else None)
        hub = HubProcesses(config, roles)
        stack.callback(lambda: hub.stop() if hub.procs else None)
        tokens = _tokens(engine, prefix)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as session:
            ctx = drv.Context(hub, session, tokens, rng, dovecot=dovecot, twilio=twilio)
            await asyncio.to_thread(hub.start)
            for d in drivers:
                await d.setup(ctx)
            for cycle in range(kills):
                stop = asyncio.Event()
                acked = [0]
                t0 = time.monotonic()
                load = asyncio.create_task(_load(ctx, drivers, tickets, outcomes, stop, acked))
                while acked[0] < min_acks:
                    if load.done() or time.monotonic() - t0 > 120:
                        stop.set()
                        await load
                        raise RuntimeError(f"round {cycle + 1}: the load stalled at {acked[0]} acknowledgements "
                                           f"({dict(outcomes)})")
                    await asyncio.sleep(0.02)
                await asyncio.sleep(rng.uniform(0, max_pause))
                hub.kill()  # every process at the same moment
                loaded = time.monotonic() - t0
                stop.set()
                await asyncio.wait_for(load, 60)
                report.cycles.append(Cycle(acked[0], loaded, hub.start_seconds[-1]))
                say(f"  kill {cycle + 1}/{kills}: {acked[0]} acknowledged in {loaded:.1f} s; starting again")
                await asyncio.to_thread(hub.start)

            # Recovery: clients that may send again do; the mailbox empties; routing and the outbox finish.
            for d in drivers:
                if not d.idempotent:
                    continue
                again = [t for t in tickets[d.name] if not t.acked]
                again += rng.sample([t for t in tickets[d.name] if t.acked],
                                    min(resend_sample, sum(t.acked for t in tickets[d.name])))
                for t in again:
                    t.sends += 1
                    outcome = await d.send(ctx, t)
                    if outcome == drv.ACK:
                        t.acked = True
                    else:
                        report.problems.append(f"{d.name}: sending {t.key} again after the restart got {outcome}")
                report.resent[d.name] = len(again)
            for d in drivers:
                await d.settle(ctx, tickets[d.name], timeout=60 + 0.05 * len(tickets[d.name]))
            report.problems += await _wait_drained(engine, 60 + 3 * config.claim_timeout_seconds)
            await asyncio.to_thread(hub.stop)
        if fake_twilio is not None:
            await fake_twilio.stop()
            report.sms_sent = len(fake_twilio.requests)
        for d in drivers:
            d.close()
        report.log_errors = hub.errors_in_logs()
        received = sink.snapshot()
    report.problems += check_requests(drivers, tickets, engine)
    report.problems += check_integrity(engine, run_dir / "attachments")
    rows = outbox_states(engine)
    report.problems += check_outbox(rows, received, tickets.get("reply", []))
    report.outbox = Counter(state for _, _, state in rows)
    report.sink_mails = sum(received.values())
    for d in drivers:
        report.tickets[d.name] = len(tickets[d.name])
        report.acked[d.name] = sum(t.acked for t in tickets[d.name])
        report.outcomes[d.name] = outcomes[d.name]
    engine.dispose()
    report.seconds = time.monotonic() - started
    return report


async def _twilio(wanted: bool) -> tuple[Any, Any]:
    """The Twilio account of the run and a local Messages API the hub's SMS answers go to (or Nones)."""
    if not wanted:
        return None, None
    from twilio_support import ACCOUNT_SID, AUTH_TOKEN, HUB_NUMBER, PUBLIC_URL, FakeTwilio

    fake = await FakeTwilio().start()
    return drv.TwilioAccount(ACCOUNT_SID, AUTH_TOKEN, PUBLIC_URL, HUB_NUMBER), fake


def _dovecot_login() -> tuple[str, str]:
    from dovecot_support import PASSWORD, USER

    return USER, PASSWORD


# -- make crash -----------------------------------------------------------------------------------------------


def _pg_url() -> tuple[str, Any]:
    """A private schema in the local PostgreSQL (database ``test``) and a function that drops it."""
    import uuid

    import psycopg

    schema = "crash_" + uuid.uuid4().hex[:10]
    dsn = "host=127.0.0.1 port=5432 dbname=test user=postgres"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    base = os.environ.get("CITIZEN_HUB_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    return f"{base}?options=-csearch_path%3D{schema}", drop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=int(os.environ.get("CRASH_KILLS", "20")),
                        help="SIGKILLs per database (default 20, or $CRASH_KILLS)")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--channels", default=",".join(DEFAULT_CHANNELS),
                        help=f"comma-separated drivers (default {','.join(DEFAULT_CHANNELS)})")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, database)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))  # tests/dovecot_support.py
    from dovecot_support import dovecot_missing, running_dovecot

    channels = tuple(c for c in args.channels.split(",") if c)
    failed = False
    template = ensure_template(ROOT / "var" / "crash-template.sqlite3")
    with ExitStack() as stack:
        dovecot = None
        if "imap" in channels:
            missing = dovecot_missing()
            if missing:
                print(f"crash: {missing}; leaving out the imap channel", file=sys.stderr)
                channels = tuple(c for c in channels if c != "imap")
            else:
                dovecot = stack.enter_context(running_dovecot())
        for db in (("sqlite", "postgres") if args.db == "both" else (args.db,)):
            run_dir = Path(tempfile.mkdtemp(prefix=f"hub-crash-{db}-"))
            drop = None
            if db == "postgres":
                url, drop = _pg_url()
            else:
                url = f"sqlite:///{run_dir / 'hub.sqlite3'}"
            print(f"== crash on {db}: {args.kills} kills, channels {', '.join(channels)} (run in {run_dir})",
                  file=sys.stderr, flush=True)
            try:
                report = asyncio.run(run_crash(url, run_dir, kills=args.kills, seed=args.seed, channels=channels,
                                               dovecot=dovecot, template=template, progress=True))
            finally:
                if drop is not None:
                    drop()
            print(report.summary(), flush=True)
            failed |= not report.ok
            if not args.keep and report.ok:
                import shutil

                shutil.rmtree(run_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
