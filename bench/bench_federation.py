"""A national federation of catalogues (issue 13): ~1.1 million descriptions, place-aware lookup.

The federation is generated from the real texts in ``../shared`` (München 287 services, Berlin 2016 560) and
the demo catalogue (Schleswig-Holstein, 111), with variations:

* every real service is a Leistung: its LeiKa key, or for one without (Berlin, most of München) a
  synthetic key ``98…`` (one national service per real text);
* 16 Land catalogues, each with every Leistung (the Land's text: the real one);
* every Kreis (~400) and every Gemeinde (~11,000) of Germany with ~100 Leistungen of its own: the real text
  reworded (another name, fewer synonyms, its own fee, its own processing time or online link, or the
  field left empty so that it falls back to the Land's text);
* one office per Gemeinde and per Kreis, registered for the Gemeinde/Amt- and the Kreis-level services.

Measured, beside today's flat index at 10,000 services (bench_lookup's catalogue, ``ServiceIndex``) in the
same run: load time, resident memory, lookup p50/p99 (``KnowledgeBase.lookup(query, place)`` with a random
Gemeinde; the labelled queries and a typo of each), and the time until one municipality's 100 changed
services are visible: the change set written through ``knowledge.sync.apply_change_set`` into a real SQLite
database (with all regions) and the read-back ``KbUpdate`` applied to the national knowledge base, until a
lookup there shows the new text.

The descriptions are held as the knowledge base holds them (one record per description, no ORM row): the
database side of a million rows is what ``bench_sync`` measures.

Run: ``.venv/bin/python -m bench federation`` (full scale, a few minutes, ~2 GB); a quick run at a share of
the Gemeinden: ``BENCH_FEDERATION_SCALE=0.05 .venv/bin/python -m bench federation``.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import psutil
from tqdm import tqdm

from bench.bench_lookup import (
    CATALOGS,
    build_catalogue,
    load_base,
    load_queries,
    municipalities,
    percentile,
    timed,
)
from knowledge.base import KnowledgeBase
from knowledge.lookup import ServiceIndex
from knowledge.models import Authority, Service
from knowledge.regions import RegionIndex
from knowledge.sync import ResponsibilityRow

SEED = 20261202
PER_PLACE = 100
TARGET_P99_MS = 5.0
TARGET_RSS_GB = 3.0
TARGET_VISIBLE_S = 1.0
TARGET_FLAT_P99_MS = 3.0
N_TIMED = 2_000
FIELDS = (
    "id", "leika", "name", "synonyms", "short_text", "full_text", "documents", "fees", "processing_time",
    "online_url", "topic", "life_situation", "level", "owner_ars", "updated_at",
)


class Text:
    """One description as the knowledge base reads it (the attributes of ``knowledge.models.Service``)."""

    __slots__ = FIELDS

    def __init__(self, **kw):
        for f in FIELDS:
            setattr(self, f, kw.get(f))


def scale() -> float:
    try:
        value = float(os.environ.get("BENCH_FEDERATION_SCALE", "1"))
    except ValueError:
        value = 1.0
    return min(1.0, max(0.001, value))


def base_texts() -> list[Service]:
    """The real texts, each with a LeiKa key (a synthetic ``98…`` one where the export has none)."""
    base, demo, _sources = load_base()
    out, seen = [], set()
    for n, s in enumerate([*demo, *base]):
        leika = s.leika or f"98{n:012d}"
        if leika in seen:  # one base text per Leistung
            continue
        seen.add(leika)
        s.leika = leika
        out.append(s)
    return out


def _variant(s: Service, place: str, rng: random.Random, level: str) -> Text:
    r = rng.random()
    synonyms = list(s.synonyms or ())
    if r < 0.5:
        name = s.name
    elif r < 0.65:
        name = f"{s.name} beantragen" if not s.name.endswith(("en", "ung")) else s.name
    elif r < 0.8 and synonyms:
        name, synonyms = synonyms[0], [s.name, *synonyms[1:]]
    elif r < 0.99:
        name = f"Antrag: {s.name}"
    else:
        name = f"{s.name} ({place})"
    if rng.random() < 0.3:
        synonyms = synonyms[: len(synonyms) // 2]
    return Text(
        id=f"{place}-{s.leika}",
        leika=s.leika,
        name=name,
        synonyms=synonyms,
        short_text=s.short_text if rng.random() < 0.7 else "",
        full_text="",
        documents=s.documents if rng.random() < 0.5 else [],
        fees=f"{rng.randrange(5, 120)},00 EUR" if rng.random() < 0.6 else "",
        processing_time=rng.choice(("sofort", "1 Woche", "2 bis 4 Wochen", "")),
        online_url=f"https://{place}.example/{s.leika}" if rng.random() < 0.2 else None,
        topic=s.topic,
        life_situation=s.life_situation,
        level=s.level or level,
        owner_ars=place,
        updated_at=None,
    )


def build_federation(regions: RegionIndex, base: list[Service], share: float):
    """(descriptions, offices, registrations, the Gemeinden used) of the synthetic federation."""
    rng = random.Random(SEED)
    texts: list[Text] = []
    lands = sorted(r.ars for r in regions if r.level == "land")
    kreise = sorted(r.ars for r in regions if r.level == "kreis")
    gemeinden = sorted(r.ars for r in regions if r.level == "gemeinde")
    if share < 1.0:
        gemeinden = sorted(rng.sample(gemeinden, max(1, int(len(gemeinden) * share))))
    for land in lands:
        for s in base:
            texts.append(Text(**{f: getattr(s, f, None) for f in FIELDS} | {"id": f"{land}-{s.leika}",
                                                                            "owner_ars": land}))
    authorities, resps = [], []
    for kreis in tqdm(kreise, desc="Kreise", file=sys.stderr, leave=False):
        for s in rng.sample(base, min(PER_PLACE, len(base))):
            texts.append(_variant(s, kreis, rng, "kreis"))
        authorities.append(Authority(id=f"kv-{kreis}", name=f"Kreisverwaltung {kreis}", region_ars=kreis))
        resps.append(ResponsibilityRow(None, kreis, "kreis", f"kv-{kreis}"))
        resps.append(ResponsibilityRow(None, kreis, "land", f"kv-{kreis}"))
    for gem in tqdm(gemeinden, desc="Gemeinden", file=sys.stderr, mininterval=1, leave=False):
        for s in rng.sample(base, min(PER_PLACE, len(base))):
            texts.append(_variant(s, gem, rng, "gemeinde"))
        authorities.append(Authority(id=f"gv-{gem}", name=f"Gemeindeverwaltung {gem}", region_ars=gem))
        resps.append(ResponsibilityRow(None, gem, "gemeinde", f"gv-{gem}"))
        resps.append(ResponsibilityRow(None, gem, "amt", f"gv-{gem}"))
    return texts, authorities, resps, gemeinden


def sync_visible(kb: KnowledgeBase, regions_db: str, place: str, base: list[Service]) -> tuple[float, float, str]:
    """Write 100 changed services of ``place`` through the sync and apply them to ``kb``.

    Returns (seconds until a lookup at ``place`` shows the new text, of which the in-memory apply, query).
    """
    from hub.db import make_engine
    from knowledge.sync import apply_change_set, parse_changes

    mine = [t for t in kb.services.values() if t.owner_ars == place][:PER_PLACE]
    engine = make_engine(regions_db)

    def body(version: str) -> dict:
        return {"write": {"leistung": [
            {"id": t.id, "name": t.name if version == "v1" else f"{t.name} neu", "leika": t.leika,
             "ebene": t.level or "gemeinde", "synonyme": [x for x in t.synonyms or () if x and len(x) <= 200][:50],
             "textmodule": {"kosten": f"{version}: 42,00 EUR"}}
            for t in mine
        ]}}

    apply_change_set(engine, place, parse_changes(body("v1")), actor="bench")
    t0 = time.perf_counter()
    result = apply_change_set(engine, place, parse_changes(body("v2")), actor="bench")
    t1 = time.perf_counter()
    result.kb.apply(kb)
    t2 = time.perf_counter()
    probe = mine[0]
    answers = kb.lookup(f"{probe.name} neu", place).answers
    t3 = time.perf_counter()
    engine.dispose()
    ok = any(a.service.id == probe.id and a.service.fees == "v2: 42,00 EUR" for a in answers)
    if not ok:
        raise AssertionError(f"the synced text of {probe.id} is not visible at {place}")
    return t3 - t0, (t2 - t1) + (t3 - t2), probe.name


def _regions_db(tmp: Path) -> str:
    import knowledge.sync_models  # noqa: F401  (registers the sync tables)
    from hub.db import create_schema, make_engine, session_scope
    from knowledge.regions import load_regions

    url = f"sqlite:///{tmp / 'regions.sqlite3'}"
    engine = make_engine(url)
    create_schema(engine)
    with session_scope(engine) as session:
        load_regions(session)
    engine.dispose()
    return url


def main() -> int:
    if not (CATALOGS / "muenchen" / "services_de.json").exists():
        print("SKIP: the real catalogues are not readable; set CITIZEN_HUB_SHARED")
        return 0
    share = scale()
    proc = psutil.Process()
    rng = random.Random(SEED)
    regions = RegionIndex.from_files()
    base, demo, _ = load_base()
    queries, note = load_queries([], set())
    texts_q = [q.text for q in queries]

    # -- today's flat index at 10,000 services (bench_lookup's catalogue)
    gc.collect()
    rss0 = proc.memory_info().rss
    docs, _origin, _leika = build_catalogue(base, demo, municipalities(), 10_000)
    t0 = time.perf_counter()
    flat = ServiceIndex(docs)
    flat_load = time.perf_counter() - t0
    gc.collect()
    flat_rss = proc.memory_info().rss - rss0
    mix = [texts_q[i % len(texts_q)] for i in range(N_TIMED)]
    rng.shuffle(mix)
    flat_cold = timed(lambda q: flat.search(q, 10), texts_q, "flat 10k (cold)")  # first sight of each word
    flat_cpu: list[float] = []
    flat_lat = timed(lambda q: flat.search(q, 10), mix, "flat 10k", flat_cpu)
    flat = docs = None  # the flat index is freed before the federation is built
    gc.collect()

    # -- the federation
    rss1 = proc.memory_info().rss
    t0 = time.perf_counter()
    bases = base_texts()
    texts, authorities, resps, gemeinden = build_federation(regions, bases, share)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    kb = KnowledgeBase(regions, texts, authorities, resps)
    fed_load = time.perf_counter() - t0
    n_texts = len(texts)
    del texts
    gc.collect()
    gc.freeze()  # as hub/runtime.py does after loading: the collector no longer walks the catalogue
    fed_rss = proc.memory_info().rss
    places = [rng.choice(gemeinden) for _ in range(N_TIMED)]
    pairs = list(zip(mix, places, strict=True))
    cold = timed(lambda qp: kb.lookup(qp[0], qp[1]), pairs[: len(texts_q)], "federation (cold)")
    cpu: list[float] = []
    lat = timed(lambda qp: kb.lookup(qp[0], qp[1]), pairs, "federation", cpu)
    no_place = timed(lambda q: kb.lookup(q), mix[:500], "federation, no place")
    # Correctness on the way: every answer's texts are valid at the place.
    for q, place in pairs[:300]:
        chain = kb.chain_areas(kb.regions.get(place))
        for a in kb.lookup(q, place).answers:
            assert all(t.owner_ars in chain for t in a.service.texts), (q, place, a.service.id)

    with tempfile.TemporaryDirectory() as tmp:
        db = _regions_db(Path(tmp))
        visible, in_memory, probe = sync_visible(kb, db, gemeinden[len(gemeinden) // 2], bases)

    print(f"queries        {note}, +typo variants; {N_TIMED} timed, places: random Gemeinden")
    print(f"flat 10k       {len(_origin)} services: load {flat_load:.1f} s, index {flat_rss / 2**20:.0f} MB, "
          f"lookup p50 {percentile(flat_lat, .5):.2f} ms p99 {percentile(flat_lat, .99):.2f} ms "
          f"(target p99 ≤ {TARGET_FLAT_P99_MS:.0f} ms; CPU p99 {percentile(flat_cpu, .99):.2f} ms); first sight of each query p99 "
          f"{percentile(flat_cold, .99):.2f} ms")
    print(f"federation     scale {share:g}: {n_texts} descriptions, {len(kb.federation)} Leistungen, "
          f"{len(gemeinden)} Gemeinden, generated in {gen_s:.1f} s")
    print(f"  load         {fed_load:.1f} s (KnowledgeBase over the descriptions: Leistungen, areas, index)")
    print(f"  memory       RSS {fed_rss / 2**30:.2f} GB (process; +{(fed_rss - rss1) / 2**30:.2f} GB for the "
          f"federation; target ≤ {TARGET_RSS_GB:.0f} GB)")
    print(f"  lookup       p50 {percentile(lat, .5):.2f} ms p99 {percentile(lat, .99):.2f} ms at a place "
          f"(target p99 ≤ {TARGET_P99_MS:.0f} ms; CPU p99 {percentile(cpu, .99):.2f} ms); without a place p50 {percentile(no_place, .5):.2f} ms "
          f"p99 {percentile(no_place, .99):.2f} ms; first sight of each query p99 {percentile(cold, .99):.2f} ms")
    print(f"  ratio        place-aware p99 / flat 10k p99 = {percentile(lat, .99) / percentile(flat_lat, .99):.2f}")
    print(f"  sync         100 changed services of one Gemeinde visible after {visible * 1000:.0f} ms "
          f"(sync write + read-back + in-memory apply {in_memory * 1000:.0f} ms + lookup; "
          f"target ≤ {TARGET_VISIBLE_S:.0f} s; probe {probe!r})")
    rest = fed_rss <= TARGET_RSS_GB * 2**30 and visible <= TARGET_VISIBLE_S
    wall = rest and percentile(lat, .99) <= TARGET_P99_MS and percentile(flat_lat, .99) <= TARGET_FLAT_P99_MS
    cpu_ok = rest and percentile(cpu, .99) <= TARGET_P99_MS and percentile(flat_cpu, .99) <= TARGET_FLAT_P99_MS
    print(f"machine        load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall-clock p99 suffers)")
    scale_note = "" if share == 1.0 else " (at reduced scale)"
    print(f"targets        wall clock {'met' if wall else 'MISSED'}, CPU time {'met' if cpu_ok else 'MISSED'}{scale_note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
