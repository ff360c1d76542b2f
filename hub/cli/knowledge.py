"""CLI: ``init``, ``serve``, ``lookup``, ``route`` and ``config`` (the stable contracts of the foundation)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from hub.cli import UsageError, add_common_options, open_engine, settings_from_args
from hub.config import reference_toml
from knowledge.models import format_hours, open_now


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create or migrate the schema, load regions, optionally the demo catalogue")
    add_common_options(p)
    p.add_argument("--demo", action="store_true", help="load the demo catalogue (Kreis Segeberg, Kreis Soest)")
    p.add_argument("--reload-regions", action="store_true", help="load the regions again even if present")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("serve", help="start the HTTP server")
    add_common_options(p)
    p.add_argument("--host", help="bind address (default from [server] host)")
    p.add_argument("--port", type=int, help="TCP port (default from [server] port)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("lookup", help="find services and the responsible authority for a query")
    add_common_options(p)
    p.add_argument("query", help="what the citizen asks, in their words")
    p.add_argument("--location", "-l", help="place: municipality name, postcode, AGS or ARS")
    p.add_argument("--limit", type=int, default=None, help="most results (default from [lookup])")
    p.add_argument("--json", action="store_true", help="print the same JSON as GET /api/lookup")
    p.set_defaults(func=cmd_lookup)

    p = sub.add_parser(
        "route",
        help="route JSON lines from stdin ({text, location}) to JSON lines on stdout, in order",
        description="Route JSON lines from stdin to JSON lines on stdout. With --evaluate FILE: route a "
        "labelled set instead and print how often the answer is right and how often the clarification "
        "rule asks when it should.",
    )
    add_common_options(p)
    p.add_argument(
        "--evaluate",
        metavar="FILE",
        help='labelled JSON lines {"text", "location", "service": [ids], "authority": [ids]}; an empty '
        "list means no service (office) can be right; prints n, top-1 accuracy and the clarification shares",
    )
    p.add_argument("--json", action="store_true", help="with --evaluate: print the figures as JSON")
    p.add_argument("--quiet", action="store_true", help="with --evaluate: no progress bar")
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("region", help="regions: find one by name, ARS, AGS or postcode")
    rsub = p.add_subparsers(dest="region_command", metavar="ACTION")
    rsub.required = True
    p = rsub.add_parser(
        "find",
        help="print ARS, AGS, level, kind and the chain above every region a name or key may mean",
        description="Find regions by name ('Konstanz', 'Kreis Segeberg', 'Amt Leezen', typos allowed), ARS, "
        "AGS or postcode; several matches are all printed, best first.",
    )
    add_common_options(p)
    p.add_argument("query", help="name, ARS, AGS or postcode")
    p.add_argument("--limit", type=int, default=10, help="most regions printed (default 10)")
    p.add_argument("--json", action="store_true", help="print the matches as JSON")
    p.set_defaults(func=cmd_region_find)

    p = sub.add_parser("config", help="print the documented configuration reference (TOML)")
    p.set_defaults(func=lambda args: print(reference_toml()) or 0)


def _engine(settings):
    from hub.db import make_engine

    return make_engine(settings.database.url, echo=settings.database.echo)


def _load_kb(args: argparse.Namespace):
    from sqlalchemy import func
    from sqlmodel import Session, select

    from knowledge.base import KnowledgeBase
    from knowledge.models import Region

    settings = settings_from_args(args)
    engine = _engine(settings)
    try:
        with Session(engine) as session:
            n = session.exec(select(func.count()).select_from(Region)).one()
    except Exception as exc:
        raise UsageError(
            f"cannot read the knowledge base at {settings.database.url}: run 'citizen-hub init' first ({exc.__class__.__name__})"
        ) from None
    if not n:
        raise UsageError("no regions loaded: run 'citizen-hub init --demo' first")
    return KnowledgeBase.load(engine, settings)


def cmd_init(args: argparse.Namespace) -> int:
    from sqlalchemy import func
    from sqlmodel import select

    from hub.db import session_scope
    from hub.migrate import masked_url
    from knowledge.models import Region
    from knowledge.regions import load_regions

    settings = settings_from_args(args)
    engine = open_engine(settings)  # creates a new database or migrates an old one to the newest revision
    progress = not args.quiet
    with session_scope(engine) as session:
        have = session.exec(select(func.count()).select_from(Region)).one()
    if have and not args.reload_regions:
        print(f"regions: {have} already loaded (use --reload-regions to load again)", file=sys.stderr)
    else:
        with session_scope(engine) as session:
            n_regions, n_postcodes = load_regions(
                session,
                settings.regions.regions_file or None,
                settings.regions.postcodes_file or None,
                progress=progress,
            )
        print(f"regions: loaded {n_regions} regions and {n_postcodes} postcode pairs", file=sys.stderr)
    if args.demo:
        from knowledge.catalogue import load_demo

        with session_scope(engine) as session:
            counts = load_demo(session)
        print("demo catalogue: " + ", ".join(f"{v} {k}" for k, v in counts.items()), file=sys.stderr)
    print(f"database ready: {masked_url(settings.database.url)}", file=sys.stderr)
    return 0


async def _freeze_after_loading(_app) -> None:
    from hub.runtime import freeze_heap

    freeze_heap()


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from hub.http.app import create_app
    from hub.migrate import masked_url
    from hub.runtime import tune_gc

    settings = settings_from_args(args)
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    # The database first: a start that cannot write to it ends here with one line, before any "serving".
    engine = open_engine(settings)
    app = create_app(settings, engine=engine)
    tune_gc(settings.server.gc_threshold)
    # After the knowledge base is loaded (the start-up hook create_app added first).
    app.on_startup.append(_freeze_after_loading)
    line = f"citizen-hub serving on http://{host}:{port}/ (database {masked_url(settings.database.url)})"
    try:
        # run_app calls ``print`` once the socket listens, after every start-up hook has run.
        web.run_app(app, host=host, port=port, access_log=None, print=lambda _banner: print(line, file=sys.stderr))
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    if not args.query.strip():
        raise UsageError("the query is empty: say what the citizen asks, e.g. citizen-hub lookup 'Reisepass'")
    if args.limit is not None and not 1 <= args.limit <= 100:
        raise UsageError("--limit must be between 1 and 100")
    kb = _load_kb(args)
    result = kb.lookup(args.query, args.location, limit=args.limit)
    if args.json:
        json.dump(result.to_json(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_lookup(result.to_json()))
    return 0


def format_authority(a: dict[str, Any], indent: str = "   ") -> str:
    lines = [f"{indent}Zuständig: {a['name']}" + (" (Demo-Daten)" if a.get("is_demo") else "")]
    address = ", ".join(x for x in (a.get("street"), f"{a.get('postcode', '')} {a.get('city', '')}".strip()) if x)
    if address:
        lines.append(f"{indent}  {address}")
    contact = " · ".join(x for x in (a.get("phone") and f"Tel. {a['phone']}", a.get("email")) if x)
    if contact:
        lines.append(f"{indent}  {contact}")
    if a.get("opening_hours"):
        state = open_now(a["opening_hours"])
        now = {True: "jetzt geöffnet", False: "jetzt geschlossen"}.get(state, "")
        lines.append(f"{indent}  {format_hours(a['opening_hours'])}" + (f" ({now})" if now else ""))
    return "\n".join(lines)


def format_lookup(result: dict[str, Any]) -> str:
    """The lookup result as a person reads it on a terminal."""
    out = []
    loc = result["location"]
    if loc:
        out.append(f"Ort: {loc['name']} ({loc['ars']})")
    elif result["location_candidates"]:
        names = ", ".join(c["name"] for c in result["location_candidates"][:8])
        more = len(result["location_candidates"]) - 8
        out.append(f"Ort mehrdeutig: {names}" + (f" und {more} weitere" if more > 0 else ""))
    elif result.get("location_reason"):
        out.append(f"Ort nicht gefunden: {result['location_reason']}")
    if not result["results"]:
        out.append("Keine passende Leistung gefunden.")
    for i, r in enumerate(result["results"], 1):
        s = r["service"]
        leika = f"  [LeiKa {s['leika']}]" if s.get("leika") else ""
        out.append(f"\n{i}. {s['name']}{leika}  (Treffer {r['score']:.0f})")
        if s.get("short_text"):
            out.append(f"   {s['short_text']}")
        if s.get("documents"):
            out.append("   Mitbringen: " + "; ".join(s["documents"]))
        if s.get("fees"):
            out.append(f"   Gebühren: {s['fees']}")
        if s.get("processing_time"):
            out.append(f"   Bearbeitungszeit: {s['processing_time']}")
        if s.get("online_url"):
            out.append(f"   Online: {s['online_url']}")
        if r["authority"]:
            out.append(format_authority(r["authority"]))
            if r.get("other_locations_total"):
                names = "; ".join(o["name"] for o in r["other_locations"][:3])  # a terminal line, not a list
                more = r["other_locations_total"] - min(3, len(r["other_locations"]))
                out.append(f"   Auch an {r['other_locations_total']} weiteren Standorten: {names}"
                           + (f" und {more} weiteren" if more > 0 else ""))
        elif r["authority_candidates"]:
            out.append("   Zuständig je nach Ort:")
            for c in r["authority_candidates"]:
                places = ", ".join(c["places"][:6]) + (" …" if len(c["places"]) > 6 else "")
                out.append(f"   - {c['authority']['name']}: {places}")
        elif r["responsibility"] and r["responsibility"]["reason"]:
            out.append(f"   Zuständigkeit unbekannt: {r['responsibility']['reason']}")
    return "\n".join(out) + "\n"


EMPTY_ROUTE = {
    "service": None,
    "authority": None,
    "location": None,
    "candidates": [],
    "location_candidates": [],
    "needs_clarification": True,
}


def route_lines(kb, stdin: Any, stdout: TextIO, stderr: TextIO) -> int:
    """Route each JSON line of ``stdin`` (bytes) to one JSON line on ``stdout``; returns the error count.

    A line that is not UTF-8, not JSON or not of the shape ``{"text": str, "location": str|null}``
    still gets its output line (all fields empty, ``reason`` says why), so outputs stay aligned with
    inputs; the problem is also reported on stderr.
    """
    errors = 0
    for number, raw in enumerate(stdin, 1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise ValueError('expected an object {"text": str, "location": str|null}')
            location = item.get("location")
            if location is not None and not isinstance(location, str):
                raise ValueError("'location' must be a string or null")
            out = kb.route(item["text"], location).to_json()
        except (UnicodeDecodeError, ValueError) as exc:
            errors += 1
            kind = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
            print(f"citizen-hub route: line {number}: invalid input: {kind}", file=stderr)
            out = dict(EMPTY_ROUTE, reason=f"invalid input: {kind}")
        stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        stdout.flush()
    return errors


def cmd_route(args: argparse.Namespace) -> int:
    if args.evaluate:
        items = read_labelled(args.evaluate)
        kb = _load_kb(args)
        figures = evaluate_routes(kb, items, progress=not args.quiet)
        if args.json:
            json.dump(figures, sys.stdout, ensure_ascii=False, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(format_evaluation(figures))
        return 0
    kb = _load_kb(args)
    errors = route_lines(kb, sys.stdin.buffer, sys.stdout, sys.stderr)
    return 1 if errors else 0


# -- route --evaluate --------------------------------------------------------------------------------

MAX_LABELLED_LINES = 1_000_000


def read_labelled(path: str) -> list[dict[str, Any]]:
    """The labelled requests of a JSON-lines file; :class:`UsageError` names the first bad line."""
    items: list[dict[str, Any]] = []
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed below; the error must name the file
    except OSError as exc:
        raise UsageError(f"--evaluate: cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        try:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if len(items) >= MAX_LABELLED_LINES:
                    raise UsageError(f"--evaluate: {path} has more than {MAX_LABELLED_LINES} lines")
                try:
                    item = json.loads(line)
                    _check_labelled(item)
                except ValueError as exc:
                    raise UsageError(f"--evaluate: {path} line {number}: {exc}") from None
                items.append(item)
        except UnicodeDecodeError:
            raise UsageError(f"--evaluate: {path} is not UTF-8") from None
    if not items:
        raise UsageError(f"--evaluate: {path} holds no labelled request")
    return items


def _check_labelled(item: Any) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise ValueError('expected an object {"text": str, "location": str|null, "service": [...], "authority": [...]}')
    if item.get("location") is not None and not isinstance(item["location"], str):
        raise ValueError("'location' must be a string or null")
    for key in ("service", "authority"):
        value = item.get(key, [])
        if isinstance(value, str):
            item[key] = [value]
        elif not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"'{key}' must be a list of ids (empty: none can be right)")
        else:
            item[key] = value


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def evaluate_routes(kb: Any, items: list[dict[str, Any]], progress: bool = False) -> dict[str, Any]:
    """Route every labelled request and measure the answers and the clarification rule.

    *Correct* means the top service is one of the labelled ``service`` ids and the office one of the
    labelled ``authority`` ids (an empty label: nothing can be right, e.g. an unmatched request or a place
    whose candidate places have different offices). The targets of issue 13: at least 0.90 of the correct
    answers pass unflagged, at least 0.80 of the wrong ones are flagged.
    """
    from tqdm import tqdm

    n = service_n = service_ok = office_n = office_ok = 0
    correct = correct_pass = wrong = wrong_flagged = 0
    by_kind: dict[str, dict[str, int]] = {}
    for item in tqdm(items, desc="route --evaluate", unit="req", file=sys.stderr, disable=not progress):
        route = kb.route(item["text"], item.get("location"))
        service = route.service.id if route.service else None
        authority = route.authority.id if route.authority else None
        services, offices = item.get("service") or [], item.get("authority") or []
        n += 1
        if services:
            service_n += 1
            service_ok += service in services
        if offices:
            office_n += 1
            office_ok += authority in offices
        right = service in services and authority in offices
        flagged = bool(route.needs_clarification)
        kind = by_kind.setdefault(str(item.get("kind") or "-"), {"n": 0, "correct": 0, "flagged": 0})
        kind["n"] += 1
        kind["correct"] += right
        kind["flagged"] += flagged
        if right:
            correct += 1
            correct_pass += not flagged
        else:
            wrong += 1
            wrong_flagged += flagged
    return {
        "n": n,
        "service_top1_accuracy": _share(service_ok, service_n),
        "office_top1_accuracy": _share(office_ok, office_n),
        "correct": correct,
        "correct_unflagged_share": _share(correct_pass, correct),
        "wrong": wrong,
        "wrong_flagged_share": _share(wrong_flagged, wrong),
        "by_kind": by_kind,
    }


def format_evaluation(f: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        f"n = {f['n']}",
        f"top-1 accuracy, service: {pct(f['service_top1_accuracy'])}",
        f"top-1 accuracy, office:  {pct(f['office_top1_accuracy'])}",
        f"correctly routed that pass unflagged: {pct(f['correct_unflagged_share'])} of {f['correct']} (target >= 0.90)",
        f"wrong top-1 answers that are flagged: {pct(f['wrong_flagged_share'])} of {f['wrong']} (target >= 0.80)",
        "by kind: " + "; ".join(
            f"{k} n={v['n']} correct={v['correct']} flagged={v['flagged']}" for k, v in sorted(f["by_kind"].items())
        ),
    ]
    return "\n".join(lines) + "\n"


# -- region find ---------------------------------------------------------------------------------------


def cmd_region_find(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from knowledge.regions import RegionIndex, describe_region, find_regions

    if not args.query.strip():
        raise UsageError("the query is empty: give a name, ARS, AGS or postcode, e.g. citizen-hub region find Konstanz")
    if not 1 <= args.limit <= 100:
        raise UsageError("--limit must be between 1 and 100")
    settings = settings_from_args(args)
    engine = _engine(settings)
    try:
        with Session(engine) as session:
            index = RegionIndex.from_session(session, home_region=settings.regions.home_region)
    except Exception as exc:
        raise UsageError(
            f"cannot read the regions at {settings.database.url}: run 'citizen-hub init' first ({exc.__class__.__name__})"
        ) from None
    if not len(index):
        raise UsageError("no regions loaded: run 'citizen-hub init' first")
    found = find_regions(index, args.query, args.limit)
    if args.json:
        rows = [
            {
                "ars": r.ars, "ags": r.ags, "name": r.display_name, "level": r.level, "kind": r.kind,
                "chain": [{"ars": c.ars, "name": c.display_name, "level": c.level} for c in index.chain(r.ars)[1:]],
            }
            for r in found
        ]
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0 if found else 1
    if not found:
        print(f"no region found for {args.query.strip()[:60]!r}", file=sys.stderr)
        return 1
    key = "".join(args.query.split())
    if key.isdigit() and not any(key in (r.ars, r.ags) for r in found) and not index.postcode_regions(key):
        print(f"no region has the key {key}; the closest:", file=sys.stderr)
    for i, region in enumerate(found, 1):
        print(f"{i}. {describe_region(index, region)}")
    return 0
