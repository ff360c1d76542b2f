"""Learned routing (issue 18): route latency with a model trained on 10,000 examples, training time, memory.

The 23-service defect catalogue of ``tests/data/learning`` in Kreis Segeberg, all of Germany's regions,
and 10,000 history examples made from the hand-written reports (each varied with a street, a house
number and a sentence around it, so no two texts are the same). Figures:

* training on the 10,000 examples (target ≤ 30 s), features and resident size of the loaded model;
* ``KnowledgeBase.route`` per request in-process, p50/p99, with the model (target p99 ≤ 2 ms) and, as the
  baseline measured in the same run, the catalogue alone;
* the ``.npz`` size and the time to load it (hash check included).
"""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc
from pathlib import Path

import numpy as np

from knowledge.base import KnowledgeBase
from knowledge.importers.csv_import import parse_csv
from knowledge.learning import AreaModel, Example, fit
from knowledge.regions import RegionIndex

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "learning"
AREA = "01060"
N_EXAMPLES = 10_000
N_ROUTES = 3_000
STREETS = ["Hauptstraße", "Kirchweg", "Am Markt", "Lindenallee", "Bahnhofstraße", "Schulstraße", "Dorfstraße",
           "Kurhausstraße", "Oldesloer Straße", "Hamburger Straße"]
BEFORE = ["", "Hallo, ", "Guten Tag, ", "Sehr geehrte Damen und Herren, ", "Moin! ", "Bitte kümmern: "]
AFTER = ["", " Danke!", " Bitte schnell beheben.", " Das ist schon das dritte Mal.", " Mit freundlichen Grüßen",
         " Foto anbei."]


def variants(rows: list[dict], n: int, seed: int = 1) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rows[i % len(rows)]
        text = (f"{rng.choice(BEFORE)}{r['text']} ({rng.choice(STREETS)} {rng.randint(1, 120)})"
                f"{rng.choice(AFTER)}")
        out.append((text, r["service"]))
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def main() -> None:
    regions = RegionIndex.from_files()
    batch = parse_csv(DATA / "defects_catalogue.csv", id_prefix="d", region_ars=AREA)
    kb = KnowledgeBase(regions, batch.services, batch.authorities, [])
    by_name = {s.name: s.id for s in batch.services}
    rows = [json.loads(x) for x in (DATA / "defects.jsonl").read_text(encoding="utf-8").splitlines()]
    history = variants(rows, N_EXAMPLES)
    examples = [Example(i + 1, t, by_name[s]) for i, (t, s) in enumerate(history)]

    def catalogue(text: str) -> dict[str, float]:
        return {h.id: h.score for h in kb.index.search(text, limit=10)}

    started = time.perf_counter()
    model = fit(AREA, examples, catalogue)
    train_s = time.perf_counter() - started
    assert model is not None
    data, sha = model.to_bytes()
    tracemalloc.start()
    started = time.perf_counter()
    loaded = AreaModel.from_bytes(data, sha)
    load_s = time.perf_counter() - started
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"training on {N_EXAMPLES} examples: {train_s:.1f} s (target ≤ 30 s) — "
          f"{model.metrics['features']} features, {model.metrics['classes']} services, "
          f"out-of-fold top-1 {100 * model.metrics['oof_top1']:.1f} %")
    print(f"stored model: {len(data) / 1e6:.2f} MB npz, load + hash check {1000 * load_s:.0f} ms; "
          f"loaded model ≈ {loaded.memory_bytes() / 1e6:.1f} MB resident (tracemalloc peak while loading "
          f"{peak / 1e6:.1f} MB)")

    queries = [t for t, _ in variants(rows, N_ROUTES, seed=2)]

    def timed(label: str) -> list[float]:
        for q in queries[:200]:
            kb.route(q, "Bad Segeberg")  # warm caches
        times = []
        for q in queries:
            t0 = time.perf_counter()
            kb.route(q, "Bad Segeberg")
            times.append((time.perf_counter() - t0) * 1000)
        print(f"{label:<28} p50 {pct(times, 50):.3f} ms  p99 {pct(times, 99):.3f} ms  ({len(times)} requests)")
        return times

    gc.collect()
    gc.freeze()  # as a hub process does after loading (hub.runtime.freeze_heap)
    kb.learning.replace({})
    base = timed("route, catalogue alone")
    kb.learning.replace({AREA: loaded})
    learned = timed("route, catalogue + model")
    assert kb.route(queries[0], "Bad Segeberg").learned_area == AREA
    print(f"ratio p99 combined / catalogue alone: {pct(learned, 99) / pct(base, 99):.2f}; "
          f"target p99 ≤ 2 ms: {'met' if pct(learned, 99) <= 2.0 else 'MISSED'}")
