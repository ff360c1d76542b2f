"""CLI: ``catalog import`` (DLDB or CSV exports into a region), ``catalog scope``, ``catalog status``.

``grant_region`` is re-exported here for the token command (``token add NAME --role catalog --region ARS``).
"""

from __future__ import annotations

import argparse
import json
import sys

from hub.cli import UsageError, add_common_options, open_engine, settings_from_args
from hub.http.tokens import grant_region, revoke_region

__all__ = ["grant_region", "register", "revoke_region"]

MAX_ERRORS_SHOWN = 25


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("catalog", help="catalogue sync: import exports, token scopes, versions")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION")
    csub.required = True

    p = csub.add_parser(
        "import",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_csv_help(),
        help="import a DLDB (München, Berlin) or CSV catalogue into a region's catalogue",
        description="Import a catalogue export as the catalogue of region ARS: services, offices, which "
        "office does which service, online services. Goes through the same validation, versioning and "
        "audit as PUT/POST /api/catalog/ARS; running it again changes nothing.",
    )
    add_common_options(p)
    p.add_argument("file", metavar="FILE", help="services file (DLDB services_de.json, or the CSV)")
    p.add_argument("--format", required=True, choices=("dldb", "csv"), help="format of FILE")
    p.add_argument("--region", required=True, metavar="ARS", help="ARS of the region that owns the catalogue")
    p.add_argument(
        "--locations", metavar="FILE", help="DLDB locations (München) or authorities (Berlin) file"
    )
    p.add_argument("--topics", metavar="FILE", help="DLDB topics file (Berlin), gives services their topic")
    p.add_argument("--id-prefix", metavar="P", help="prefix of the object ids (default: the region's ARS)")
    p.add_argument(
        "--replace",
        action="store_true",
        help="make the region's catalogue exactly this file: remove what it no longer has",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --replace: apply even when it deletes more than [catalog] max_delete_share of the region's "
        "objects (default 20 %%); without it such an import is refused and says what it would delete",
    )
    p.add_argument("--partial", action="store_true", help="skip invalid objects instead of importing nothing")
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON (as the HTTP API does)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import)

    p = csub.add_parser("scope", help="which regions catalogue tokens may write")
    add_common_options(p)
    p.add_argument("action", choices=("list", "grant", "revoke"))
    p.add_argument("token", nargs="?", metavar="NAME", help="token name (all tokens for list)")
    p.add_argument("region", nargs="?", metavar="ARS", help="region ARS (grant, revoke)")
    p.set_defaults(func=cmd_scope)

    p = csub.add_parser("status", help="a region's catalogue version, object counts and latest versions")
    add_common_options(p)
    p.add_argument("region", metavar="ARS")
    p.add_argument("--last", type=int, default=10, help="how many versions to list (default 10)")
    p.set_defaults(func=cmd_status)


def _csv_help() -> str:
    """The CSV format for ``catalog import --help``: its columns and what splits a list in a cell."""
    from knowledge.importers.csv_import import COLUMN_HELP, COLUMNS, SYNONYM_SEPARATORS

    width = max(len(c) for c in COLUMNS)
    lines = [
        "CSV columns (--format csv; a header row names them, any order; the delimiter , ; or tab is detected):",
        *(f"  {c.ljust(width)}  {COLUMN_HELP[c]}" for c in COLUMNS),
        "",
        f"Keyword lists (synonyms) are split at {' and '.join(repr(x) for x in SYNONYM_SEPARATORS)} only; a comma is",
        "part of a keyword: 'Strassen, Fahrrad & Verkehr' stays one. documents are split at '|'.",
        "--region takes an ARS; find one with: citizen-hub region find NAME",
    ]
    return "\n".join(lines)


def _engine(args: argparse.Namespace):
    return open_engine(settings_from_args(args))


def _error_lines(errors) -> str:
    lines = [f"  {e.object}: {e.field or '-'}: {e.message}" for e in errors[:MAX_ERRORS_SHOWN]]
    if len(errors) > MAX_ERRORS_SHOWN:
        lines.append(f"  … and {len(errors) - MAX_ERRORS_SHOWN} more")
    return "\n".join(lines)


def cmd_import(args: argparse.Namespace) -> int:
    from hub.http.catalog_settings import catalog_settings
    from hub.queue.cases import catalog_audit
    from knowledge.importers import CatalogFormatError, parse_dldb
    from knowledge.importers.csv_import import parse_csv
    from knowledge.importers.store import store_batch
    from knowledge.regions import check_region
    from knowledge.sync import SyncError

    engine = _engine(args)
    try:
        with engine.connect() as conn:
            region = check_region(conn, args.region)
    except ValueError as exc:
        raise UsageError(f"--region: {exc}") from None
    prefix = args.id_prefix or region
    try:
        if args.format == "dldb":
            batch = parse_dldb(
                args.file, args.locations, id_prefix=prefix, region_ars=region, topics_path=args.topics
            )
        else:
            if args.locations or args.topics:
                raise UsageError("--locations and --topics belong to --format dldb; a CSV holds its offices")
            batch = parse_csv(args.file, id_prefix=prefix, region_ars=region)
    except (CatalogFormatError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    for warning in batch.warnings[:MAX_ERRORS_SHOWN]:
        print(f"warning: {warning}", file=sys.stderr)
    if len(batch.warnings) > MAX_ERRORS_SHOWN:
        print(f"warning: … and {len(batch.warnings) - MAX_ERRORS_SHOWN} more", file=sys.stderr)
    try:
        result = store_batch(
            engine,
            batch,
            region,
            actor=f"cli:{args.format}-import",
            audit=catalog_audit,
            replace=args.replace,
            partial=args.partial,
            dry_run=args.dry_run,
            progress=not args.quiet and not args.json,
            force=args.force,
            max_delete_share=catalog_settings(settings_from_args(args)).max_delete_share,
        )
    except SyncError as exc:
        details = _error_lines(exc.errors)
        raise UsageError(f"{exc.message}" + (f"\n{details}" if details else "")) from None
    if args.json:
        json.dump(result.to_json(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        if result.plan.errors:
            print(
                f"skipped {len(result.plan.errors)} invalid object(s):\n{_error_lines(result.plan.errors)}",
                file=sys.stderr,
            )
        counts = "; ".join(
            f"{kind} +{s['added']} ~{s['changed']} -{s['removed']}"
            for kind, s in result.plan.summary().items()
        )
        if result.dry_run:
            state = f"dry run, nothing written (version stays {result.version})"
        elif result.applied:
            state = f"version {result.previous_version} → {result.version}"
        else:
            state = f"nothing to change (version {result.version})"
        print(f"catalog {region}: {state}: {counts}")
    return 0


def _token_id(session, name: str) -> int:
    from sqlalchemy import select

    from hub.http.tokens import token_t

    row = session.execute(select(token_t.c.id, token_t.c.role).where(token_t.c.name == name)).first()
    if row is None:
        raise UsageError(f"no API token named {name!r}")
    if row.role != "catalog":
        raise UsageError(f"token {name!r} has the role {row.role!r}; only 'catalog' tokens write catalogues")
    return row.id


def cmd_scope(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from hub.db import session_scope
    from hub.http.tokens import scope_t, token_t

    engine = _engine(args)
    with session_scope(engine) as session:
        if args.action == "list":
            q = select(token_t.c.name, token_t.c.role, token_t.c.revoked_at, scope_t.c.region_ars).join(
                scope_t, scope_t.c.token_id == token_t.c.id
            )
            if args.token:
                q = q.where(token_t.c.name == args.token)
            for name, role, revoked, ars in session.execute(q.order_by(token_t.c.name, scope_t.c.region_ars)):
                print(f"{name}\t{role}\t{ars}" + ("\t(revoked)" if revoked else ""))
            return 0
        if not args.token or not args.region:
            raise UsageError(f"catalog scope {args.action} needs a token NAME and a region ARS")
        token_id = _token_id(session, args.token)
        try:
            if args.action == "grant":
                changed = grant_region(session, token_id, args.region)
            else:
                changed = revoke_region(session, token_id, args.region)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    verb = {"grant": "may now write", "revoke": "may no longer write"}[args.action]
    print(f"token {args.token} {verb} region {args.region}" + ("" if changed else " (unchanged)"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from knowledge.models import Authority, Responsibility, Service
    from knowledge.sync import current_version
    from knowledge.sync_models import online_t, version_t

    engine = _engine(args)
    with engine.connect() as conn:
        version = current_version(conn, args.region)
        counts = {}
        for label, table in (
            ("leistung", Service.__table__),
            ("organisationseinheit", Authority.__table__),
            ("zustaendigkeit", Responsibility.__table__),
            ("onlinedienst", online_t),
        ):
            counts[label] = conn.execute(
                select(func.count()).select_from(table).where(table.c.owner_ars == args.region)
            ).scalar()
        rows = conn.execute(
            select(version_t.c.version, version_t.c.created_at, version_t.c.actor, version_t.c.summary)
            .where(version_t.c.region_ars == args.region)
            .order_by(version_t.c.version.desc())
            .limit(max(0, args.last))
        ).all()
    print(f"catalog {args.region}: version {version}; " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for v, at, actor, summary in rows:
        parts = [
            f"{k} +{s['added']} ~{s['changed']} -{s['removed']}"
            for k, s in summary.items()
            if isinstance(s, dict) and any(s.values())
        ]
        print(f"  v{v}  {at:%Y-%m-%d %H:%M:%S}Z  {actor}  {summary.get('mode', '')}  " + "; ".join(parts))
    return 0
