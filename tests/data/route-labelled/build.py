"""Build dev.jsonl and heldout.jsonl from phrasings.py (run once; the JSONL files are committed).

    .venv/bin/python tests/data/route-labelled/build.py sqlite:///path/with/demo+muenchen+berlin.sqlite3

The database is one made by ``citizen-hub init --demo`` with the München and Berlin exports imported
(``catalog import --format dldb --region 091620000000 ...`` and ``--region 110000000000 ...``). Offices come
from the responsibility registry for the *labelled* service at the *intended* place, never from the router.
The split is by a hash of the text, so a phrasing is in one file with all its places.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[2]))

import phrasings as P  # noqa: E402

from hub.config import load_settings  # noqa: E402
from hub.db import make_engine  # noqa: E402
from knowledge.base import KnowledgeBase  # noqa: E402

TYPO = {"Henstedt-Ulzbrug": "Henstedt-Ulzburg"}


def offices(kb, service_ids, places):
    """Every office registered for the service at the places; one catalogue's several locations (München's
    Bürgerbüros) are all right. Different offices at different candidate places: none can be right."""
    found = set()
    for sid in service_ids:
        service = kb.services[sid]
        for region in places:
            r = kb.responsible_for(service, region)
            found.add(frozenset({r.authority_id, *r.alternatives}) if r.authority_id else None)
    return sorted(next(iter(found))) if len(found) == 1 and None not in found else []


def places_of(kb, name):
    if name is None:
        return kb._home_places(), "no-place"
    res = kb.regions.resolve(TYPO.get(name, name))
    if res.match is not None:
        return [res.match], "clear"
    return [r for r, _ in res.candidates], "ambiguous-place"


def item(kb, text, location, services, in_text=None, kind=None, group="segeberg"):
    places, how = places_of(kb, in_text if in_text is not None else location)
    return {
        "group": group,
        "text": text,
        "location": location,
        "service": services,
        "authority": offices(kb, services, places) if services else [],
        "kind": kind or how,
    }


def main(url: str) -> None:
    settings = load_settings(None)
    settings.database.url = url
    kb = KnowledgeBase.load(make_engine(url), settings)
    items = []
    n = 0
    for services, phrases in P.SEGEBERG:
        for phrase in phrases:
            for variant in range(2):
                k = n * 2 + variant
                form = (n + 3 * variant) % 7
                if form <= 3:
                    place = P.SEGEBERG_PLACES[(n * 5 + variant * 11) % len(P.SEGEBERG_PLACES)]
                    items.append(item(kb, phrase, place, services))
                elif form == 4:
                    where = P.SEGEBERG_IN_TEXT[k % len(P.SEGEBERG_IN_TEXT)]
                    name = where.split(" ", 1)[1]
                    items.append(item(kb, f"{phrase} {where}", None, services, in_text=name))
                elif form == 5:
                    items.append(item(kb, phrase, None, services, in_text=None))
                else:
                    place = P.SEGEBERG_AMBIGUOUS[k % len(P.SEGEBERG_AMBIGUOUS)]
                    items.append(item(kb, phrase, place, services))
            n += 1
    for i, text in enumerate(P.UNMATCHED):
        items.append(item(kb, text, P.SEGEBERG_PLACES[i % len(P.SEGEBERG_PLACES)], [], kind="unmatched"))
        city, places = (("muenchen", P.MUENCHEN_PLACES), ("berlin", P.BERLIN_PLACES))[i % 2]
        items.append(item(kb, text, places[i % 3], [], kind="unmatched", group=city))
    for group, catalogue, places in (
        ("muenchen", P.MUENCHEN, P.MUENCHEN_PLACES),
        ("berlin", P.BERLIN, P.BERLIN_PLACES),
    ):
        city = "München" if group == "muenchen" else "Berlin"
        for j, (services, phrases) in enumerate(catalogue):
            for m, phrase in enumerate(phrases):
                items.append(item(kb, phrase, places[(j + m) % len(places)], services, group=group))
                if (j + m) % 2 and city not in phrase:
                    items.append(item(kb, f"{phrase} in {city}", None, services, in_text=city, group=group))
    files: dict[str, list[dict]] = {}
    for it in items:
        # The split is by phrasing (the text before an added place), so no phrasing is in both parts.
        h = int(hashlib.sha256(it["text"].split(" in ")[0].encode()).hexdigest(), 16)
        part = "heldout" if h % 5 < 2 else "dev"
        files.setdefault(f"{it.pop('group')}.{part}.jsonl", []).append(it)
    for name, rows in sorted(files.items()):
        with open(HERE / name, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(name, len(rows), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
