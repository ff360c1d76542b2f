"""SMTP intake throughput: concurrent clients, 1 kB bodies, every mail committed before its 250.

The listener (aiosmtpd), the intake writer (group commit, with the acknowledgement writer as its listener)
run in this process against a fresh SQLite database (WAL) and a raw-mail directory on local disk (every
mail fsynced), as ``citizen-hub email serve`` runs them. The clients run in a separate process, as the
organisation's mail server would: ``CLIENTS`` concurrent aiosmtplib connections, each sending its share of
mails one after the other (Postfix caches connections to a busy next hop, ``*_connection_cache_on_demand``);
a second round opens a new connection for every mail, the worst case. Every mail has its own sender and
Message-ID, so each one opens a case and queues an acknowledgement — the most work a mail can cause.
"hub CPU" is this process's CPU time (user + system, all threads) per mail.

After each round the database is checked: as many inbound messages as 250 replies, each with its raw file.

Run: ``.venv/bin/python -m bench email`` (about half a minute).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

TARGET = 200.0  # mails per second
CLIENTS = 32
MAILS_REUSED = 4000
MAILS_FRESH = 1500
WARMUP = 200
OURS = "anliegen@buergerservice.example.de"
BODY = (
    "Sehr geehrte Damen und Herren,\n\nich ziehe zum 1. Juli nach Norderstedt und möchte meinen Wohnsitz "
    "ummelden. Welche Unterlagen muss ich mitbringen, brauche ich einen Termin, und kann ich die "
    "Ummeldung auch online erledigen? Meine Frau und unsere zwei Kinder ziehen mit um; müssen alle "
    "persönlich erscheinen oder genügt eine Vollmacht? Außerdem haben wir ein Auto, das noch in Hamburg "
    "zugelassen ist. Muss ich das Kennzeichen ändern lassen, und wo mache ich das am besten? "
    "Vielen Dank für Ihre Hilfe.\n\nMit freundlichen Grüßen\nMax Mustermann\n"
)

BODY_1K = (BODY * 3).encode()[:1023].decode("utf-8", "ignore") + "\n"  # 1 kB of text


def make_mail(run: str, i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Bürger {i} <buerger{i}.{run}@example.org>"
    msg["To"] = OURS
    msg["Subject"] = f"Ummeldung Wohnsitz ({i})"
    msg["Message-ID"] = f"<bench-{run}-{i}@example.org>"
    msg["Date"] = "Tue, 04 Jun 2024 10:00:00 +0200"
    msg.set_content(BODY_1K)
    return msg.as_bytes().replace(b"\n", b"\r\n")


async def _clients(port: int, run: str, start: int, count: int, reuse: bool) -> tuple[float, list[float], int]:
    import aiosmtplib

    mails = [make_mail(run, start + i) for i in range(count)]
    latencies: list[float] = []
    bad = 0
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for m in mails:
        queue.put_nowait(m)

    async def worker(n: int) -> None:
        nonlocal bad
        client = None
        while not queue.empty():
            raw = queue.get_nowait()
            sender = f"w{n}@example.org"
            t0 = time.perf_counter()
            try:
                if reuse:
                    if client is None:
                        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
                        await client.connect()
                    _, reply = await client.sendmail(sender, [OURS], raw)
                else:
                    _, reply = await aiosmtplib.send(raw, sender=sender, recipients=[OURS], hostname="127.0.0.1",
                                                     port=port, timeout=60)
            except Exception as exc:  # counted, reported
                print(f"client error: {type(exc).__name__}: {exc}", file=sys.stderr)
                bad += 1
                client = None
                continue
            latencies.append(time.perf_counter() - t0)
            if "stored as message" not in reply:
                bad += 1
        if client is not None:
            await client.quit()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(CLIENTS)))
    return time.perf_counter() - t0, latencies, bad


def _client_process(port: int, run: str, start: int, count: int, reuse: bool, out) -> None:
    out.put(asyncio.run(_clients(port, run, start, count, reuse)))


def run_clients(port: int, run: str, start: int, count: int, reuse: bool) -> tuple[float, list[float], int]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_client_process, args=(port, run, start, count, reuse, out))
    proc.start()
    result = out.get()
    proc.join()
    return result


async def _bench(tmp: Path) -> list[tuple[str, float]]:
    from sqlalchemy import func, select

    from channels.email.listener import AckWriter, EmailIntake, EmailServer
    from channels.email.settings import EmailSettings
    from hub.db import make_engine
    from hub.http.ratelimit import IntakeLimits, IntakeLimitSettings
    from hub.migrate import upgrade
    from hub.queue.cases import message_t
    from hub.queue.intake import IntakeWriter
    from hub.queue.settings import QueueSettings

    engine = make_engine(f"sqlite:///{tmp / 'bench.sqlite3'}")
    upgrade(engine)
    queue = QueueSettings(attachment_dir=str(tmp / "att"))
    # Every mail gets its acknowledgement (the most work a mail causes): no global cap in the way.
    settings = EmailSettings(address=OURS, raw_mail_dir=str(tmp / "mail"), hostname="bench.local",
                             ack_global_limit=10_000_000)
    writer = IntakeWriter(engine, queue).start()
    acks = AckWriter(engine, queue)
    # One client address sends thousands of mails: the intake limits stay in the path (their cost is part
    # of the figure) with bursts no load test reaches.
    limits = IntakeLimits(IntakeLimitSettings(sender_burst=10_000_000, client_burst=10_000_000))
    intake = EmailIntake(writer, settings, acks=acks, limits=limits)
    server = await EmailServer(intake, settings, host="127.0.0.1", port=0).start()
    figures: list[tuple[str, float]] = []
    try:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, run_clients, server.port, "warm", 0, WARMUP, True)
        offset = WARMUP
        for label, count, reuse in (("connection kept open", MAILS_REUSED, True),
                                    ("new connection per mail", MAILS_FRESH, False)):
            before = writer.batches
            cpu0 = time.process_time()
            elapsed, lat, bad = await loop.run_in_executor(None, run_clients, server.port, "run", offset, count, reuse)
            offset += count
            rate = count / elapsed
            lat_ms = sorted(x * 1000 for x in lat)
            p50 = statistics.median(lat_ms)
            p99 = lat_ms[int(len(lat_ms) * 0.99) - 1]
            batches = writer.batches - before
            cpu_ms = (time.process_time() - cpu0) * 1000 / count
            print(f"{label:>26}: {count} mails in {elapsed:5.2f} s = {rate:7.1f} mails/s   "
                  f"latency p50 {p50:5.1f} ms  p99 {p99:6.1f} ms   {count / max(batches, 1):4.1f} mails/commit"
                  f"   hub CPU {cpu_ms:4.1f} ms/mail   failed {bad}")
            figures.append((label, rate if bad == 0 else 0.0))
        await asyncio.to_thread(acks.flush)
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(message_t)
                                  .where(message_t.c.direction == "in")).scalar_one()
            ack_rows = conn.execute(select(func.count()).select_from(message_t)
                                    .where(message_t.c.kind == "ack")).scalar_one()
            refs = conn.execute(select(message_t.c.raw_ref).where(message_t.c.direction == "in")
                                .limit(50)).scalars().all()
        sent = WARMUP + MAILS_REUSED + MAILS_FRESH
        print(f"{'check':>26}: {stored} of {sent} mails stored, {ack_rows} acknowledgements queued, "
              f"raw files present: {all(Path(r).exists() for r in refs)}")
        if stored != sent:
            figures.append(("stored == sent", 0.0))
    finally:
        await server.stop()
        await asyncio.to_thread(writer.stop)
        await asyncio.to_thread(intake.close)
        engine.dispose()
    return figures


def main() -> None:
    print(f"SMTP intake: {CLIENTS} concurrent clients (separate process), 1 kB bodies, 250 only after the commit; "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-email-", dir=os.environ.get("CITIZEN_HUB_BENCH_TMP")) as tmp:
        figures = asyncio.run(_bench(Path(tmp)))
    for label, rate in figures:
        verdict = "meets" if rate >= TARGET else "MISSES"
        print(f"result, {label}: {rate:.0f} mails/s — target ≥ {TARGET:.0f} mails/s: {verdict}")


if __name__ == "__main__":
    main()
