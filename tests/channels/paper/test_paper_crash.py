"""Crash safety of the watched inbox: SIGKILL ``citizen-hub paper watch`` in the middle of a stack of scans,
start it again, and every scan is one request exactly once, and no original is lost.

A file is "acknowledged" when it has moved to ``done/``: its request was committed before the move. A
file killed between its commit and its move is read again after the restart, and intake's idempotency
(form id + page content) makes that the same request.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paper_support as P
from console_support import hub_engine
from sqlalchemy import func, select

from hub.queue.cases import message_t

ROOT = Path(__file__).resolve().parents[3]
N_SCANS = 6


def _watch(url: str, inbox: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CITIZEN_HUB_PAPER__HMAC_KEY=P.KEY,
               CITIZEN_HUB_QUEUE__ATTACHMENT_DIR=str(tmp_path / "attachments"))
    return subprocess.Popen([sys.executable, "-c", "import sys; from hub.cli import main; sys.exit(main())",
                             "paper", "watch", "--db", url, str(inbox), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_of_the_watcher_loses_no_scan_and_duplicates_none(tmp_path, demo_db_url):
    P.require_paper_tools(fonts=True)
    engine, url = hub_engine(tmp_path, demo_db_url)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    base = P.rasterise(P.make_form(case_id=None, case_token=None).pdf, 200)
    names = []
    for i in range(N_SCANS):
        name = f"scan-{i}.jpg"
        (inbox / name).write_bytes(P.scanned(P.write_in_box(base, 200, f"Anliegen Nummer {i}\nbitte melden",
                                                            seed=i), 1.0, seed=i))
        names.append(name)

    proc = _watch(url, inbox, tmp_path, "--interval", "0.2")
    done = inbox / "done"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        moved = [p for p in done.glob("*.jpg")] if done.exists() else []
        if len(moved) >= 2:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    acknowledged = sorted(p.name for p in done.glob("*.jpg"))
    assert 2 <= len(acknowledged) < N_SCANS, "the kill came too late to test anything"
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(message_t).where(message_t.c.channel == "paper")).scalar()
    assert stored >= len(acknowledged)  # every moved file's request was committed first
    left = sorted(p.name for p in inbox.iterdir() if p.is_file())
    assert sorted(left + acknowledged) == sorted(names)  # no original lost, none in two places

    again = _watch(url, inbox, tmp_path, "--once")
    assert again.wait(180) == 0, again.stderr.read().decode()[-2000:]
    assert sorted(p.name for p in done.glob("*.jpg")) == sorted(names)
    with engine.connect() as conn:
        per_page = conn.execute(select(message_t.c.external_id, func.count()).where(message_t.c.channel == "paper")
                                .group_by(message_t.c.external_id)).all()
    assert len(per_page) == N_SCANS and all(n == 1 for _ext, n in per_page)
    engine.dispose()
