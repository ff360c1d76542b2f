"""A hostile mail of many tiny MIME parts (issue 14): the bounded parse against the full one.

The attack: one multipart/mixed of 330,000 tiny text parts (about 12 MB) took 22 s and 433 MB to accept,
because the attachment count limit was applied only after the whole parse. ``channels.email.parse``
now stops at ``[email] max_mime_parts`` (default 1000). Each figure is measured in a fresh process
(peak resident memory is per process): the bounded ``parse_mail`` of the hub, and as the baseline the
standard library's full parse of the same bytes (``email.message_from_bytes``, what the hub did before).

Run: ``.venv/bin/python -m bench mime`` (about half a minute, most of it the baseline).
"""

from __future__ import annotations

import multiprocessing
import resource
import time

PARTS = 330_000


def hostile(n: int = PARTS) -> bytes:
    part = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    return (b"From: Eve <eve@example.org>\r\nTo: anliegen@hub.example\r\nSubject: parts\r\n"
            b"Message-ID: <many-parts@example.org>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + part * n + b"--b--\r\n")


def _measure(kind: str, out) -> None:
    from email import message_from_bytes

    from channels.email.parse import POLICY, parse_mail

    raw = hostile()
    parse_mail(b"Subject: warm-up\r\n\r\nx")  # first-use costs (header registry, regexes) outside the figure
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if kind == "bounded":
        parse_mail(raw)
    else:
        message_from_bytes(raw, policy=POLICY)
    seconds = time.perf_counter() - started
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB on Linux
    out.send((seconds, grown, len(raw)))


def run(kind: str) -> tuple[float, float, int]:
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_measure, args=(kind, there))
    proc.start()
    result = here.recv()
    proc.join()
    return result


def main() -> None:
    bounded = run("bounded")
    full = run("full")
    print(f"hostile mail: {PARTS:,} MIME parts, {bounded[2] / 1e6:.1f} MB")
    print(f"{'':26}{'seconds':>10}{'MB more RSS':>14}")
    print(f"{'hub parse_mail (bounded)':26}{bounded[0]:10.2f}{bounded[1]:14.0f}")
    print(f"{'full parse (baseline)':26}{full[0]:10.2f}{full[1]:14.0f}")
    print(f"ratio: {full[0] / max(bounded[0], 1e-9):.0f}x faster, "
          f"{full[1] / max(bounded[1], 1.0):.0f}x less memory growth than the full parse")


if __name__ == "__main__":
    main()
