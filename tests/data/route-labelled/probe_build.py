"""Build probe.jsonl from probe_source.py (run once; the JSONL file is committed).

    .venv/bin/python tests/data/route-labelled/probe_build.py sqlite:///path/with/demo+muenchen+berlin.sqlite3

The same database as build.py's. Each labelled id is widened to every text of its Leistung valid at the
intended place; the offices are build.py's rule per labelled service (see :func:`offices`), never the router's answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[2]))

import probe_source as S  # noqa: E402
from build import places_of  # noqa: E402

from hub.config import load_settings  # noqa: E402
from hub.db import make_engine  # noqa: E402
from knowledge.base import KnowledgeBase  # noqa: E402

PREFIX = {"m:": "091620000000-", "b:": "110000000000-"}


def full_id(short: str) -> str:
    for p, ars in PREFIX.items():
        if short.startswith(p):
            return ars + short[len(p):]
    return short


def widen(kb, ids, places):
    """Every text of each labelled Leistung valid at the places (an id not valid there is a label error)."""
    out: list[str] = []
    for sid in ids:
        if sid not in kb.services:
            raise SystemExit(f"unknown service id {sid}")
        for region in places:
            view = kb._view_on(kb.services[sid], region)
            if view is None:
                raise SystemExit(f"{sid} has no text valid at {region.display_name}")
            out.extend(t.id for t in view.texts)
        if sid not in out:
            out.append(sid)
    return list(dict.fromkeys(out))


def offices(kb, service_ids, places):
    """build.py's rule per labelled service: every office registered for it at the places, none when the
    candidate places have different offices; a request with several acceptable services (two readings
    with the same outcome) accepts each one's offices."""
    found: set[str] = set()
    for sid in service_ids:
        per = set()
        for region in places:
            r = kb.responsible_for(kb.services[sid], region)
            per.add(frozenset({r.authority_id, *r.alternatives}) if r.authority_id else None)
        if len(per) == 1 and None not in per:
            found |= next(iter(per))
    return sorted(found)


def main(url: str) -> None:
    settings = load_settings(None)
    settings.database.url = url
    kb = KnowledgeBase.load(make_engine(url), settings)
    rows = []
    for group, items in (("segeberg", S.SEGEBERG), ("muenchen", S.MUENCHEN), ("berlin", S.BERLIN)):
        for text, location, short, opts in items:
            name = opts.get("place", location)
            places, how = places_of(kb, name)
            ids = [full_id(s) for s in short]
            services = widen(kb, ids, places) if ids else []
            kind = opts.get("kind") or (how if services else "unmatched")
            rows.append({
                "group": group,
                "text": text,
                "location": location,
                "service": services,
                "authority": offices(kb, services, places) if services else [],
                "kind": kind,
            })
    with open(HERE / "probe.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {g: sum(r["group"] == g for r in rows) for g in ("segeberg", "muenchen", "berlin")}
    print("probe.jsonl", counts, file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
