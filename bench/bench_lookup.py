"""Service lookup at 10,000 services: latency, accuracy and memory against a rapidfuzz full scan.

The catalogue is built from the real exports: München (287 services) and Berlin 2016 (560), each copied
for other real municipalities (names sometimes reworded, synonyms partly kept) until there are 10,000
services, plus the demo catalogue (``knowledge/demo/services.json``) once, unchanged. All of Germany's
regions are loaded as well, so the memory figure is that of a realistic process.

Queries are the labelled set ``tests/data/lookup_queries.jsonl`` plus a typo variant of each. A hit counts
as correct when it is the expected service, a copy of it, or a service with the same LeiKa key (the same
national service, e.g. München's "Personalausweis" for the demo's); "strict" counts only the expected id.
The baseline is ``rapidfuzz.process.extract(query, names_and_synonyms, scorer=fuzz.WRatio, limit=10)``
with rapidfuzz's default pre-processing (lower case, no punctuation; choices processed once, up front).

Run: ``.venv/bin/python -m bench lookup`` (about a minute).
"""

from __future__ import annotations

import csv
import gc
import gzip
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from rapidfuzz import fuzz, process, utils
from tqdm import tqdm

from knowledge.importers import CatalogFormatError, parse_dldb
from knowledge.lookup import SearchDoc, ServiceIndex, doc_from_service
from knowledge.models import Service

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CITIZEN_HUB_SHARED", ROOT.parent / "shared"))
CATALOGS = SHARED / "data" / "catalogs"
DEMO_SERVICES = ROOT / "knowledge" / "demo" / "services.json"
LABELLED = ROOT / "tests" / "data" / "lookup_queries.jsonl"
REGIONS_CSV = ROOT / "knowledge" / "data" / "destatis_gv_2019q4.csv.gz"

N_SERVICES = 10_000
MIN_TIMED = 2_000
BASELINE_BUDGET_S = 60.0  # the baseline stops after this; accuracy is then over the queries it answered
TARGET_P99_MS = 3.0
TARGET_RATIO = 5.0
SEED = 20260608


@dataclass
class Query:
    text: str
    expected: str | None  # service id, None when the labelled set has no service for it
    kind: str  # "labelled" | "typo" | "synthetic"


# --------------------------------------------------------------------------- data


def load_regions() -> tuple[object, str]:
    """All of Germany's regions, the way the hub holds them; says which loader was used."""
    try:
        from knowledge.regions import RegionIndex
    except ImportError:  # the regions module is not there (yet): hold the raw rows instead
        RegionIndex = None  # noqa: N806
    if RegionIndex is not None and hasattr(RegionIndex, "from_files"):
        index = RegionIndex.from_files()
        return index, f"knowledge.regions.RegionIndex.from_files() ({len(index)} regions)"
    with gzip.open(REGIONS_CSV, "rt", encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows, f"{REGIONS_CSV.name} read into a list ({len(rows)} rows; no knowledge.regions.RegionIndex)"


def municipalities() -> list[tuple[str, str]]:
    """(ARS, name) of every Gemeinde in the shipped Destatis extract."""
    out = []
    with gzip.open(REGIONS_CSV, "rt", encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["satzart"] == "60":
                ars = row["land"] + row["rb"] + row["kreis"] + row["vb"] + row["gemeinde"]
                out.append((ars, row["gemeindename"].split(",")[0].strip()))
    return out


def load_demo() -> list[Service]:
    if not DEMO_SERVICES.exists():
        return []
    raw = json.loads(DEMO_SERVICES.read_text(encoding="utf-8"))
    items = raw.get("services", raw.get("data", [])) if isinstance(raw, dict) else raw
    fields = set(Service.model_fields)
    out = []
    for item in items:
        if isinstance(item, dict) and item.get("id") and item.get("name"):
            out.append(Service(**{k: v for k, v in item.items() if k in fields and k != "updated_at"}))
    return out


def load_base() -> tuple[list[Service], list[Service], dict[str, str]]:
    """(services to replicate, demo services, counts by source)."""
    muc = parse_dldb(
        CATALOGS / "muenchen" / "services_de.json", id_prefix="muc", region_ars="091620000000"
    ).services
    ber = parse_dldb(
        CATALOGS / "berlin-2016" / "services_de.json",
        id_prefix="ber",
        region_ars="110000000000",
        topics_path=CATALOGS / "berlin-2016" / "topic_de.json",
    ).services
    demo = load_demo()
    return muc + ber, demo, {"München": str(len(muc)), "Berlin 2016": str(len(ber)), "demo": str(len(demo))}


def _reword(name: str, synonyms: list[str], town: str, rng: random.Random) -> tuple[str, list[str]]:
    """A plausible other municipality's wording of the same service."""
    kept = [s for s in synonyms if rng.random() < 0.85]
    r = rng.random()
    if r < 0.40:
        return name, kept
    if r < 0.55 and not name.endswith(("en", "ung")) and len(name) < 40:
        return f"{name} beantragen", kept
    if r < 0.65:
        return f"Antrag: {name}", kept
    if r < 0.75:
        return f"{name} ({town})", kept
    if r < 0.85 and kept:
        return kept[0], [name, *kept[1:]]
    return f"{name} – Bürgerservice", kept


def build_catalogue(
    base: list[Service], demo: list[Service], towns: list[tuple[str, str]], n: int
) -> tuple[list[SearchDoc], dict[str, str], dict[str, str | None]]:
    """``n`` search docs; origin (doc id → base service id); LeiKa key by base service id."""
    rng = random.Random(SEED)
    docs = [doc_from_service(s) for s in demo] + [doc_from_service(s) for s in base]
    origin = {d.id: d.id for d in docs}
    leika = {s.id: s.leika for s in [*demo, *base]}
    towns = towns[:]
    rng.shuffle(towns)
    copy = 0
    while len(docs) < n:
        for s in base:
            if len(docs) >= n:
                break
            ars, town = towns[copy % len(towns)]
            copy += 1
            name, synonyms = _reword(s.name, list(s.synonyms), town, rng)
            doc = doc_from_service(s)
            doc.id, doc.name, doc.synonyms = f"{s.id}@{ars}", name, synonyms
            docs.append(doc)
            origin[doc.id] = s.id
    return docs, origin, leika


def _typo(text: str, rng: random.Random) -> str:
    words = text.split()
    long = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not long:
        return text.lower()
    i = rng.choice(long)
    w = words[i]
    k = rng.randrange(1, len(w) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        w = w[:k] + w[k + 1] + w[k] + w[k + 2 :]  # swap neighbours
    elif kind == 1:
        w = w[:k] + w[k + 1 :]  # drop a letter
    elif kind == 2:
        w = w[:k] + w[k] + w[k:]  # double a letter
    else:
        w = w.replace("ü", "ue").replace("ö", "oe").replace("ä", "ae").replace("ß", "ss").lower()
    words[i] = w
    return " ".join(words)


def load_queries(docs: list[SearchDoc], demo_ids: set[str]) -> tuple[list[Query], str]:
    rng = random.Random(SEED)
    out: list[Query] = []
    if LABELLED.exists():
        for line in LABELLED.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            out.append(Query(row["query"], row.get("service"), "labelled"))
        note = f"{LABELLED.relative_to(ROOT)}: {len(out)} labelled queries"
    else:
        # Stand-in until the labelled set exists: synonyms of demo (or München) services as queries.
        pool = [d for d in docs if d.id in demo_ids] or [d for d in docs if d.id.startswith("muc-") and "@" not in d.id]
        for d in rng.sample(pool, min(200, len(pool))):
            text = rng.choice(d.synonyms) if d.synonyms else d.name
            out.append(Query(text, d.id, "synthetic"))
        note = f"{LABELLED.relative_to(ROOT)} missing: {len(out)} synthetic queries (a synonym of a service)"
    out += [Query(_typo(q.text, rng), q.expected, "typo") for q in out if q.kind != "typo"]
    return out, note


# --------------------------------------------------------------------------- measuring


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round(p * (len(sorted_values) - 1)))]


def timed(fn: Callable[[str], object], texts: Sequence[str], desc: str, cpu: list[float] | None = None) -> list[float]:
    """Wall-clock milliseconds per call, sorted; with ``cpu``, also this thread's CPU milliseconds (sorted)."""
    lat = []
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for text in tqdm(texts, desc=desc, file=sys.stderr, mininterval=0.5, leave=False):
        c0, t0 = cpu_clock(), clock()
        fn(text)
        t1, c1 = clock(), cpu_clock()
        lat.append((t1 - t0) / 1e6)
        if cpu is not None:
            cpu.append((c1 - c0) / 1e6)
    lat.sort()
    if cpu is not None:
        cpu.sort()
    return lat


def accuracy(
    ranked: Callable[[str], list[str]],
    queries: Sequence[Query],
    same: Callable[[str, str], bool],
) -> dict[str, tuple[float, float, float, int]]:
    """kind → (top-1, top-3, strict top-1, n) over queries with an expected service."""
    out: dict[str, list[int]] = {}
    for q in queries:
        if not q.expected:
            continue
        ids = ranked(q.text)[:3]
        row = out.setdefault(q.kind, [0, 0, 0, 0])
        row[0] += bool(ids) and same(ids[0], q.expected)
        row[1] += any(same(i, q.expected) for i in ids)
        row[2] += bool(ids) and ids[0] == q.expected
        row[3] += 1
    out["all"] = [sum(r[i] for r in out.values()) for i in range(4)]
    return {k: (r[0] / r[3], r[1] / r[3], r[2] / r[3], r[3]) for k, r in out.items() if r[3]}


class Baseline:
    """The full scan the index is compared with."""

    def __init__(self, docs: Sequence[SearchDoc]):
        self.choices: list[str] = []
        self.owner: list[str] = []
        for d in docs:
            for text in (d.name, *d.synonyms):
                self.choices.append(utils.default_process(text))
                self.owner.append(d.id)

    def search(self, query: str) -> list[tuple[str, float, int]]:
        return process.extract(utils.default_process(query), self.choices, scorer=fuzz.WRatio, limit=10)

    def ids(self, raw: list[tuple[str, float, int]]) -> list[str]:
        """Service ids of the matched strings, best first, each once."""
        return list(dict.fromkeys(self.owner[i] for _text, _score, i in raw))

    def ranked(self, query: str) -> list[str]:
        return self.ids(self.search(query))


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def main() -> int:
    started = time.perf_counter()
    load = os.getloadavg()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    try:
        base, demo, sources = load_base()
    except (CatalogFormatError, OSError) as exc:
        print(f"SKIP: the real catalogues are not readable ({exc}); set CITIZEN_HUB_SHARED")
        return 0
    regions, regions_note = load_regions()
    rss_regions = proc.memory_info().rss
    docs, origin, leika = build_catalogue(base, demo, municipalities(), N_SERVICES)
    demo_ids = {s.id for s in demo}

    def same(hit: str, expected: str) -> bool:
        o = origin.get(hit, hit)
        return o == expected or (leika.get(o) is not None and leika.get(o) == leika.get(expected))

    gc.collect()
    rss_before_index = proc.memory_info().rss
    t0 = time.perf_counter()
    index = ServiceIndex(docs)
    build_s = time.perf_counter() - t0
    gc.collect()
    rss_index = proc.memory_info().rss
    phrases = sum(1 + len(d.synonyms) for d in docs)

    queries, query_note = load_queries(docs, demo_ids)
    texts = [q.text for q in queries]
    print(f"catalogue      {len(index)} services ({', '.join(f'{k} {v}' for k, v in sources.items())}, copies)")
    print(f"               {phrases} names+synonyms; regions: {regions_note} [{type(regions).__name__}]")
    print(f"queries        {query_note}, +{sum(q.kind == 'typo' for q in queries)} typo variants")

    # Ours: first sight of every query (empty expansion cache), then the timed mix.
    index.clear_cache()
    cold = timed(lambda q: index.search(q, 10), texts, "lookup (cold)")
    rng = random.Random(SEED)
    mix = [texts[i % len(texts)] for i in range(max(MIN_TIMED, 2 * len(texts)))]
    rng.shuffle(mix)
    warm_cpu: list[float] = []
    warm = timed(lambda q: index.search(q, 10), mix, "lookup (timed)", warm_cpu)

    # Baseline: every query once (it is ~50x slower), timed and ranked in the same pass.
    baseline = Baseline(docs)
    base_ranked: dict[str, list[str]] = {}
    base_lat: list[float] = []
    base_started = time.perf_counter()
    order = texts[:]
    rng.shuffle(order)
    for text in tqdm(order, desc="baseline", file=sys.stderr, mininterval=0.5, leave=False):
        t0 = time.perf_counter_ns()
        raw = baseline.search(text)
        base_lat.append((time.perf_counter_ns() - t0) / 1e6)
        base_ranked[text] = baseline.ids(raw)
        if time.perf_counter() - base_started > BASELINE_BUDGET_S:
            break
    base_lat.sort()
    answered = [q for q in queries if q.text in base_ranked]

    ours_acc = accuracy(lambda q: [h.id for h in index.search(q, 3)], answered, same)
    base_acc = accuracy(lambda q: base_ranked[q], answered, same)
    demo_docs = [d for d in docs if d.id in demo_ids]
    demo_index, demo_base = ServiceIndex(demo_docs), Baseline(demo_docs)
    strict = (lambda a, b: a == b)  # noqa: E731 - a one-line predicate
    ours_demo = accuracy(lambda q: [h.id for h in demo_index.search(q, 3)], queries, strict) if demo_docs else {}
    base_demo = accuracy(demo_base.ranked, queries, strict) if demo_docs else {}

    # Incremental updates on the full index.
    upd = []
    extra = [SearchDoc(f"bench-upd-{i}", f"{d.name} Neu", list(d.synonyms), d.text, d.topic, d.leika)
             for i, d in enumerate(docs[:300])]  # fmt: skip
    for d in extra:
        t0 = time.perf_counter_ns()
        index.upsert(d)
        upd.append((time.perf_counter_ns() - t0) / 1e6)
    rem = []
    for d in extra:
        t0 = time.perf_counter_ns()
        index.remove(d.id)
        rem.append((time.perf_counter_ns() - t0) / 1e6)
    upd.sort()
    rem.sort()
    gc.collect()
    rss_all = proc.memory_info().rss

    p = {k: percentile(warm, v) for k, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}
    c = {k: percentile(cold, v) for k, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}
    b = {k: percentile(base_lat, v) for k, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}
    ratio50, ratio99 = b["p50"] / p["p50"], b["p99"] / p["p99"]
    print(f"index build    {build_s:.2f} s for {len(docs)} services ({build_s / len(docs) * 1e3:.3f} ms each)")
    print(f"updates        upsert p50 {percentile(upd, .5):.3f} ms p99 {percentile(upd, .99):.3f} ms; "
          f"remove p50 {percentile(rem, .5):.3f} ms p99 {percentile(rem, .99):.3f} ms")  # fmt: skip
    print(f"lookup         timed {len(warm)} queries: p50 {p['p50']:.3f} ms  p95 {p['p95']:.3f} ms  "
          f"p99 {p['p99']:.3f} ms  max {warm[-1]:.2f} ms")  # fmt: skip
    print(f"  CPU time     same queries, this thread's CPU time only: p50 {percentile(warm_cpu, .5):.3f} ms  "
          f"p95 {percentile(warm_cpu, .95):.3f} ms  p99 {percentile(warm_cpu, .99):.3f} ms "
          f"(load average at start {load[0]:.1f} on {os.cpu_count()} CPUs)")  # fmt: skip
    print(f"  first sight  {len(cold)} queries, empty expansion cache: p50 {c['p50']:.3f} ms  "
          f"p95 {c['p95']:.3f} ms  p99 {c['p99']:.3f} ms")  # fmt: skip
    if len(answered) < len(queries):
        print(f"NOTE           the baseline answered {len(answered)} of {len(queries)} queries in its time budget")
    print(f"baseline       timed {len(base_lat)} queries: p50 {b['p50']:.2f} ms  p95 {b['p95']:.2f} ms  "
          f"p99 {b['p99']:.2f} ms")  # fmt: skip
    print(f"speed-up       p50 {ratio50:.0f}×  p99 {ratio99:.0f}×")
    print("accuracy       (10k catalogue; copy or same LeiKa counts)     top-1   top-3  strict-top-1     n")
    for kind in sorted(ours_acc):
        o, bb = ours_acc[kind], base_acc.get(kind, (0, 0, 0, 0))
        print(f"  {kind:<9}    ours     {o[0]:6.1%}  {o[1]:6.1%}  {o[2]:6.1%}  {o[3]:5d}")
        print(f"  {'':<9}    baseline {bb[0]:6.1%}  {bb[1]:6.1%}  {bb[2]:6.1%}  {bb[3]:5d}")
    if ours_demo:
        print(f"accuracy       (demo catalogue alone, {len(demo_docs)} services, exact id)")
        for kind in sorted(ours_demo):
            o, bb = ours_demo[kind], base_demo.get(kind, (0, 0, 0, 0))
            print(f"  {kind:<9}    ours {o[0]:6.1%} / {o[1]:6.1%}    baseline {bb[0]:6.1%} / {bb[1]:6.1%}   (top-1 / top-3)")
    print(f"memory (RSS)   {_mb(rss_all)} with regions + catalogue + index "
          f"(start {_mb(rss0)}, regions +{_mb(rss_regions - rss0)}, index +{_mb(rss_index - rss_before_index)})")  # fmt: skip

    top1_ok = ours_acc["all"][0] >= base_acc.get("all", (0,))[0]
    checks = [
        (f"p99 {p['p99']:.2f} ms <= {TARGET_P99_MS} ms", p["p99"] <= TARGET_P99_MS),
        (f"speed-up p50 {ratio50:.0f}x >= {TARGET_RATIO:.0f}x", ratio50 >= TARGET_RATIO),
        (f"top-1 {ours_acc['all'][0]:.1%} >= baseline {base_acc.get('all', (0,))[0]:.1%}", top1_ok),
    ]
    verdict = "PASS" if all(ok for _t, ok in checks) else "FAIL"
    print(f"{verdict}: " + "; ".join(f"{t} {'ok' if ok else 'MISSED'}" for t, ok in checks))
    print(f"(bench_lookup ran {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    main()
