"""CLI: ``history import`` (past decisions as labelled examples), ``history train``, ``history evaluate``.

The learned router (:mod:`knowledge.learning`, :mod:`hub.learning`) trains per catalogue area on the
labelled examples: agents' confirmed re-routes and imported history. History files are JSON lines, one
object per line: ``{"text": str, "location": str|null, "service": str, "authority": str|null}``; ``service``
is a service id or a service name in the catalogue of that location.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hub.cli import UsageError, add_common_options, open_engine, settings_from_args

MAX_ERRORS_SHOWN = 25


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="learned routing: import past decisions, train, evaluate")
    hsub = p.add_subparsers(dest="history_command", metavar="ACTION")
    hsub.required = True

    p = hsub.add_parser("import", help="import past decisions (JSON lines) as labelled examples, then train",
                        description="Every line is checked first; with one bad line nothing is imported.")
    add_common_options(p)
    p.add_argument("file", metavar="FILE.jsonl")
    p.add_argument("--no-train", action="store_true", help="import only; train later with `history train`")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=cmd_import)

    p = hsub.add_parser("train", help="train the learned router of every area whose examples changed")
    add_common_options(p)
    p.add_argument("--force", action="store_true", help="retrain every area, changed or not")
    p.add_argument("--area", action="append", metavar="ARS", help="only this area (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=cmd_train)

    p = hsub.add_parser("evaluate", help="k-fold evaluation on labelled requests (JSON lines); stores nothing")
    add_common_options(p)
    p.add_argument("file", metavar="FILE.jsonl")
    p.add_argument("--folds", type=int, default=5, help="folds (default 5)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=cmd_evaluate)


def _progress(args: argparse.Namespace):
    if args.quiet:
        return None
    return lambda message: print(f"… {message}", file=sys.stderr, flush=True)


def _setup(args: argparse.Namespace):
    from knowledge.base import KnowledgeBase

    settings = settings_from_args(args)
    engine = open_engine(settings)
    return settings, engine, KnowledgeBase.load(engine, settings)


def _read(path: str, settings, kb):
    from hub.learning import parse_history

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{path}: Datei nicht gefunden")
    try:
        with file.open(encoding="utf-8-sig") as fh:
            return parse_history(kb, fh, settings.queue.max_text_chars)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: kein UTF-8 ({exc.reason} bei Byte {exc.start})") from exc


def _report_errors(path: str, errors: list[tuple[int, str]]) -> None:
    for n, message in errors[:MAX_ERRORS_SHOWN]:
        print(f"{path}:{n}: {message}", file=sys.stderr)
    if len(errors) > MAX_ERRORS_SHOWN:
        print(f"… und {len(errors) - MAX_ERRORS_SHOWN} weitere fehlerhafte Zeilen", file=sys.stderr)


def _print_train(report) -> None:
    for area, model in report.trained.items():
        m = model.metrics
        print(f"Bereich {area}: trainiert auf {model.n_examples} Beispielen, {m.get('classes')} Leistungen; "
              f"Kreuzvalidierung top-1 {100 * m.get('oof_top1', 0):.1f} %, top-3 {100 * m.get('oof_top3', 0):.1f} %"
              f" (Modell {model.sha256[:12]})")
    for area in report.unchanged:
        print(f"Bereich {area}: unverändert (keine neuen Beispiele)")
    for area, n in report.too_few.items():
        print(f"Bereich {area}: zu wenige Beispiele ({n}), kein Modell")
    for area in report.dropped:
        print(f"Bereich {area}: Modell entfernt (zu wenige Beispiele)")
    print(f"Training: {report.seconds:.1f} s")


def cmd_import(args: argparse.Namespace) -> int:
    from hub.learning import import_history, train

    settings, engine, kb = _setup(args)
    rows, errors = _read(args.file, settings, kb)
    if errors:
        _report_errors(args.file, errors)
        print(f"{len(errors)} fehlerhafte Zeilen: nichts importiert", file=sys.stderr)
        return 1
    n = import_history(engine, rows)
    print(f"{n} Beispiele importiert")
    if args.no_train:
        print("Trainieren mit: citizen-hub history train")
        return 0
    _print_train(train(engine, kb, settings.learning, progress=_progress(args)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from hub.learning import train

    settings, engine, kb = _setup(args)
    _print_train(train(engine, kb, settings.learning, force=args.force, areas=args.area,
                       progress=_progress(args)))
    return 0


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hub.learning import area_of, area_stems, catalogue_owners
    from knowledge.learning.evaluate import EvalItem, cross_validate

    if args.folds < 2 or args.folds > 50:
        raise UsageError("--folds: 2 bis 50")
    settings, _engine, kb = _setup(args)
    rows, errors = _read(args.file, settings, kb)
    if errors:
        _report_errors(args.file, errors)
        print(f"{len(errors)} fehlerhafte Zeilen: keine Auswertung", file=sys.stderr)
        return 1
    if len(rows) < 2 * args.folds:
        raise UsageError(f"zu wenige Zeilen ({len(rows)}) für {args.folds} Folds")
    owners = catalogue_owners(kb)
    items = [EvalItem(r.text, r.location, r.service_id, area_of(kb, owners, r.text, r.location, r.service_id))
             for r in rows]
    result = cross_validate(kb, items, args.folds, min_examples=settings.learning.min_examples,
                            train_folds=settings.learning.folds, progress=_progress(args),
                            extra_stems=lambda area: area_stems(kb, area))
    names = {sid: s.name for sid, s in kb.services.items()}
    data = result.to_json(names)
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    for label, key in (("Katalog + Modell", "combined"), ("nur Katalog", "catalogue_only")):
        s = data[key]
        print(f"{label}: top-1 {100 * s['top1']:.1f} %, top-3 {100 * s['top3']:.1f} %, "
              f"zur Klärung {100 * s['flagged']:.1f} % ({s['n']} Anfragen, {result.folds} Folds); "
              f"richtige ohne Rückfrage {_share(s['correct_unflagged'])} (Ziel ≥ 0.90), "
              f"falsche zur Klärung {_share(s['wrong_flagged'])} (Ziel ≥ 0.80)")
    if data["confused"]:
        print("Häufigste Verwechslungen (richtig → geroutet):")
        for c in data["confused"]:
            print(f"  {c['count']:4d}  {c['right']} → {c['routed']}")
    return 0
