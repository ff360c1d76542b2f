"""CLI of the paper channel: ``paper form``, ``paper ingest``, ``paper watch``.

* ``citizen-hub paper form --service ID --location PLACE [--case ID] --out FILE.pdf`` – the pre-filled form
  (:func:`channels.paper.forms.spec.form_spec`, the same as the API and the console make).
* ``citizen-hub paper ingest FILE… [--json]`` – scan files into the queue; with ``--json`` one object a page
  (``file, page, status, case_id, case_token, service_id, authority_id, authority_name, text, reason`` and
  more). Exit code 0 when every page was accepted, 1 when a page was rejected.
* ``citizen-hub paper watch DIR [--once]`` – read every file put into DIR; a file whose pages became
  requests moves to ``DIR/done/``, a file with no accepted page to ``DIR/rejected/``, each with a ``.json``
  report beside it. An original is never deleted, and a file the hub could not read for its own reasons
  (database down, no key) stays in DIR for the next round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hub.cli import UsageError, add_common_options, settings_from_args

log = logging.getLogger(__name__)

#: Files the watcher leaves alone: hidden, partial uploads, its own reports.
_SKIP_SUFFIXES = (".part", ".tmp", ".crdownload", ".json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("paper", help="paper channel: pre-filled forms, scanned forms in")
    actions = p.add_subparsers(dest="paper_command", metavar="ACTION")
    actions.required = True

    f = actions.add_parser("form", help="write the pre-filled form for a service at a place (and a case) as PDF")
    add_common_options(f)
    f.add_argument("--service", required=True, help="service id (see citizen-hub lookup)")
    f.add_argument("--location", help="the citizen's place (name, postcode, AGS/ARS); default: the case's place")
    f.add_argument("--case", type=int, help="case id: its token and the citizen's data go onto the form")
    f.add_argument("--out", required=True, metavar="FILE.pdf", help="where to write the PDF")
    f.set_defaults(func=cmd_form)

    i = actions.add_parser("ingest", help="read scanned forms (PDF, PNG, TIFF, JPEG) into the queue")
    add_common_options(i)
    i.add_argument("files", nargs="+", metavar="FILE")
    i.add_argument("--json", action="store_true", help="one JSON object a page on stdout")
    i.set_defaults(func=cmd_ingest)

    w = actions.add_parser("watch", help="read every scan put into a folder; done/ and rejected/ beside it")
    add_common_options(w)
    w.add_argument("dir", nargs="?", metavar="DIR", help="the inbox (default [paper] inbox_dir)")
    w.add_argument("--once", action="store_true", help="read what is there now and exit")
    w.add_argument("--interval", type=float, default=2.0, help="seconds between two looks (default 2)")
    w.set_defaults(func=cmd_watch)


def _engine(settings: Any):
    from hub.db import make_engine
    from hub.migrate import upgrade

    engine = make_engine(settings.database.url, echo=settings.database.echo)
    upgrade(engine)
    return engine


def cmd_form(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from channels.paper.forms.form import render_form
    from channels.paper.forms.spec import FormProblem, form_spec
    from channels.paper.settings import paper_settings
    from hub.queue.cases import case_t
    from knowledge.base import KnowledgeBase

    settings = settings_from_args(args)
    key = paper_settings(settings).signing_key()
    engine = _engine(settings)
    case = None
    if args.case is not None:
        with engine.connect() as conn:
            row = conn.execute(select(case_t).where(case_t.c.id == args.case)).mappings().first()
        if row is None:
            raise UsageError(f"no case {args.case}")
        case = dict(row)
    kb = KnowledgeBase.load(engine, settings)
    try:
        spec = form_spec(kb, args.service, args.location, case)
    except FormProblem as exc:
        raise UsageError(str(exc)) from None
    form = render_form(spec, key)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(form.pdf)
    print(f"form {spec.form_id} for {spec.service_name!r}, to {spec.office.name}: {out}", file=sys.stderr)
    return 0


class _Runner:
    """An intake writer and the ingest service of one CLI process."""

    def __init__(self, settings: Any) -> None:
        from channels.paper.ingest import PaperIngest
        from channels.paper.settings import paper_settings
        from hub.queue.cases import SlaPolicy
        from hub.queue.intake import AttachmentStore, IntakeWriter
        from hub.queue.settings import queue_settings

        self.engine = _engine(settings)
        queue = queue_settings(settings)
        sla = getattr(settings, "sla", None)
        self.writer = IntakeWriter(self.engine, queue, SlaPolicy(sla)).start()
        self.ingest = PaperIngest(self.engine, self.writer.submit, paper_settings(settings),
                                  AttachmentStore(queue.attachment_dir))

    def close(self) -> None:
        self.writer.stop()


def _summary(answer: dict[str, Any]) -> str:
    where = f"{answer['file']}" + (f" p.{answer['page']}" if answer["page"] is not None else "")
    if answer["status"] == "accepted":
        extra = " (seen before)" if answer["duplicate"] else ""
        mark = " – please check the text" if answer["needs_review"] else ""
        return f"{where}: accepted, case {answer['case_id']} [{answer['case_token']}]{extra}{mark}"
    return f"{where}: rejected – {answer['reason']}"


def cmd_ingest(args: argparse.Namespace) -> int:
    from channels.paper.settings import paper_settings
    from hub.queue.intake import IntakeUnavailable

    settings = settings_from_args(args)
    paper_settings(settings).signing_key()  # no key: say so before anything is read
    files = [Path(f) for f in args.files]
    for f in files:
        if not f.is_file():
            raise UsageError(f"no such file: {f}")
    runner = _Runner(settings)
    rejected = 0
    try:
        for path in tqdm(files, desc="scans", unit="file", file=sys.stderr, disable=len(files) < 2):
            try:
                answers = asyncio.run(runner.ingest.ingest(path.read_bytes(), path.name,
                                                           raw_ref=str(path.resolve())))
            except (IntakeUnavailable, RuntimeError) as exc:  # the hub's problem: nothing was rejected
                raise UsageError(f"{path.name} was not read: {exc}") from None
            for answer in answers:
                rejected += answer["status"] != "accepted"
                if args.json:
                    sys.stdout.write(json.dumps(answer, ensure_ascii=False) + "\n")
                else:
                    print(_summary(answer), file=sys.stderr)
            sys.stdout.flush()
    finally:
        runner.close()
    return 1 if rejected else 0


# -- the watched inbox ------------------------------------------------------------------------------------


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/stem-2.ext`` … when that is taken (an original is never overwritten)."""
    target = folder / name
    n = 2
    while target.exists() or target.with_name(target.name + ".json").exists():
        target = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
        n += 1
    return target


def _candidates(inbox: Path) -> list[Path]:
    return sorted(p for p in inbox.iterdir()
                  if p.is_file() and not p.name.startswith(".") and not p.name.endswith(_SKIP_SUFFIXES))


def process_file(path: Path, runner: _Runner) -> Path | None:
    """Ingest one file of the inbox and move it (with its report) to done/ or rejected/; None = left in place."""
    from hub.queue.intake import IntakeUnavailable

    data = path.read_bytes()
    try:
        answers = asyncio.run(runner.ingest.ingest(data, path.name, raw_ref=None, keep_original=True))
    except (IntakeUnavailable, RuntimeError, OSError) as exc:
        log.warning("paper watch: %s stays in the inbox for now: %s", path.name, type(exc).__name__)
        return None
    accepted = any(a["status"] == "accepted" for a in answers)
    folder = path.parent / ("done" if accepted else "rejected")
    folder.mkdir(exist_ok=True)
    target = _free_name(folder, path.name)
    report = {"file": path.name, "moved_to": str(target), "pages": answers,
              "reason": None if accepted else "; ".join(sorted({a["reason"] or "" for a in answers}))}
    tmp = target.with_name("." + target.name + ".json.tmp")
    tmp.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, target.with_name(target.name + ".json"))
    os.replace(path, target)  # a move on one file system: the original is never copied and deleted
    return target


def _stable(path: Path, seen: dict[Path, tuple[int, float]]) -> bool:
    """Whether ``path`` has kept its size and time since the last look (a scanner may still be writing)."""
    stat = path.stat()
    now = (stat.st_size, stat.st_mtime)
    before, seen[path] = seen.get(path), now
    return before == now


def cmd_watch(args: argparse.Namespace) -> int:
    from channels.paper.settings import paper_settings

    settings = settings_from_args(args)
    paper_settings(settings).signing_key()  # no key: say so at the start, not at the first scan
    inbox = Path(args.dir or paper_settings(settings).inbox_dir)
    if not inbox.is_dir():
        raise UsageError(f"no such folder: {inbox}")
    runner = _Runner(settings)
    seen: dict[Path, tuple[int, float]] = {}
    try:
        while True:
            for path in _candidates(inbox):
                # --once reads what is there; the loop waits until a file stops growing.
                if not args.once and not _stable(path, seen):
                    continue
                target = process_file(path, runner)
                seen.pop(path, None)
                if target is not None:
                    print(f"{path.name} -> {target.parent.name}/{target.name}", file=sys.stderr)
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        runner.close()
