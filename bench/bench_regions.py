"""Regions: loading all of Germany, building the place index, resolving free place strings.

Figures (they used to be timed assertions in tests/test_regions.py; timings belong here, not in tests):

* loading the shipped Destatis + OSM data (12,631 regions, 12,882 postcode pairs) into SQLite, and into
  the local PostgreSQL when it runs (a throw-away schema in database ``test``);
* building :class:`knowledge.regions.RegionIndex` from the database;
* ``RegionIndex.resolve`` on exact names, typo'd names, postcodes and "postcode name" strings, and
  ``find_in_text`` on request sentences;
* the baseline, measured in the same run: ``rapidfuzz.process.extractOne`` of the query over all
  municipality names (WRatio, default pre-processing, choices processed once) — what a plain fuzzy scan
  would cost — with the share of typo'd names each resolves to the right municipality.

Run: ``.venv/bin/python -m bench regions`` (about half a minute).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence

from rapidfuzz import fuzz, process, utils
from sqlmodel import Session
from tqdm import tqdm

from hub.db import create_schema, make_engine
from knowledge.regions import RegionIndex, load_regions

SEED = 20261201
N_QUERIES = 1_000
HOME = "01060"
PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def timed(fn: Callable[[str], object], texts: Sequence[str], desc: str) -> tuple[list[float], list[object]]:
    """Milliseconds per call (sorted) and the results, in input order."""
    lat, out = [], []
    for text in tqdm(texts, desc=desc, file=sys.stderr, mininterval=0.5, leave=False):
        t0 = time.perf_counter()
        out.append(fn(text))
        lat.append((time.perf_counter() - t0) * 1e3)
    return sorted(lat), out


def summary(lat: Sequence[float]) -> str:
    return f"p50 {percentile(lat, 50):6.3f} ms  p99 {percentile(lat, 99):6.3f} ms  max {lat[-1]:6.2f} ms"


def typo(name: str, rng: random.Random) -> str:
    """One deletion, swap or doubled letter inside the name (what a hurried agent types)."""
    letters = [i for i, c in enumerate(name) if c.isalpha()]
    if len(letters) < 5:
        return name
    i = rng.choice(letters[1:-1])
    kind = rng.randrange(3)
    if kind == 0:
        return name[:i] + name[i + 1 :]
    if kind == 1 and i + 1 < len(name):
        return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    return name[:i] + name[i] + name[i:]


def load_into(url: str) -> tuple[float, tuple[int, int], RegionIndex, float]:
    engine = make_engine(url)
    try:
        create_schema(engine)
        with Session(engine) as session:
            t0 = time.perf_counter()
            counts = load_regions(session, progress=False)
            load_s = time.perf_counter() - t0
        with Session(engine) as session:
            t0 = time.perf_counter()
            index = RegionIndex.from_session(session, home_region=HOME)
            index_s = time.perf_counter() - t0
    finally:
        engine.dispose()
    return load_s, counts, index, index_s


def postgres_load() -> tuple[float, tuple[int, int]] | str:
    try:
        import psycopg

        schema = "bench_" + uuid.uuid4().hex[:8]
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except Exception as exc:  # no server here: report, do not fail the other figures
        return f"not measured: PostgreSQL not reachable ({type(exc).__name__})"
    try:
        load_s, counts, _, _ = load_into(f"{PG_URL}?options=-csearch_path%3D{schema}")
        return load_s, counts
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        load_s, counts, index, index_s = load_into(f"sqlite:///{tmp}/regions.sqlite3")
    print(f"load (SQLite)   {counts[0]} regions, {counts[1]} postcode pairs in {load_s:.2f} s")
    pg = postgres_load()
    if isinstance(pg, str):
        print(f"load (PG)       {pg}")
    else:
        print(f"load (PG)       {pg[1][0]} regions, {pg[1][1]} postcode pairs in {pg[0]:.2f} s")
    print(f"index           built from the database in {index_s:.2f} s")

    rng = random.Random(SEED)
    # The index keeps its tables private; a benchmark may read them to pick its sample.
    towns = [r for r in index._by_ars.values() if r.level == "gemeinde"]
    codes_of: dict[str, list[str]] = {}
    for plz, arss in index._plz.items():
        for ars in arss:
            codes_of.setdefault(ars, []).append(plz)
    sample = rng.sample(towns, N_QUERIES)
    exact = [r.display_name for r in sample]
    typos = [typo(r.display_name, rng) for r in sample]
    with_plz = [(r, sorted(codes_of.get(r.ars, ()))) for r in sample]
    plz_names = [f"{codes[0]} {r.display_name}" for r, codes in with_plz if codes]
    postcodes = [codes[0] for _, codes in with_plz if codes]
    sentences = [f"wir sind nach {r.display_name} gezogen und brauchen einen neuen Ausweis" for r in sample[:300]]

    def resolve(text: str):
        return index.resolve(text)

    rows = []
    for label, texts in (("exact name", exact), ("typo'd name", typos), ("postcode", postcodes),
                         ("postcode + name", plz_names)):
        lat, _ = timed(resolve, texts, label)
        rows.append((label, len(texts), lat))
    lat_text, _ = timed(index.find_in_text, sentences, "find_in_text")
    rows.append(("find_in_text", len(sentences), lat_text))

    # Correct = the intended municipality is the match, or among the ranked candidates when the name is
    # shared (then an agent is asked to choose, which is right for a name that exists several times).
    _, ours = timed(resolve, typos, "accuracy")
    ours_ok = sum(1 for r, res in zip(sample, ours, strict=True)
                  if (res.match and res.match.ars == r.ars) or (not res.match and r.ars in
                                                                 [c.ars for c, _ in res.candidates[:5]]))

    names = [r.display_name for r in towns]
    choices = [utils.default_process(n) for n in names]

    def baseline(text: str):
        return process.extractOne(utils.default_process(text), choices, scorer=fuzz.WRatio)

    base_lat, base_out = timed(baseline, typos, "baseline")
    base_ok = sum(1 for r, hit in zip(sample, base_out, strict=True) if hit and towns[hit[2]].ars == r.ars)

    print(f"resolve         {N_QUERIES} municipalities sampled from all of Germany (seed {SEED}), home {HOME}")
    for label, n, lat in rows:
        print(f"  {label:<15} n={n:5d}  {summary(lat)}")
    ours_typo = rows[1][2]
    print(f"baseline        extractOne over {len(names)} municipality names: n={len(typos)}  {summary(base_lat)}")
    print(f"speed-up        typo'd names: p50 {percentile(base_lat, 50) / percentile(ours_typo, 50):.0f}x  "
          f"p99 {percentile(base_lat, 99) / percentile(ours_typo, 99):.0f}x")
    print(f"accuracy        typo'd names resolved to the intended place: ours {ours_ok / N_QUERIES:.1%} "
          f"(match, or among the top-5 candidates of a shared name), baseline {base_ok / N_QUERIES:.1%} "
          f"(best name is the intended one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
