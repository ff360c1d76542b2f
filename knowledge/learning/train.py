"""Training one area's learned router from confirmed cases (text → service).

1. Features (:class:`~knowledge.learning.features.Featurizer`) from the area's example texts.
2. Out-of-fold decisions of a linear SVM (scikit-learn ``LinearSVC``, one-vs-rest, squared hinge) on
   ``folds`` splits (of at most ``CV_MAX`` examples): the catalogue weight ``β`` is chosen on them (the grid value with the best
   out-of-fold top-1), then the temperature ``T`` of the softmax that minimises the out-of-fold negative
   log-likelihood (temperature scaling, Guo et al. 2017: one parameter, so it cannot over-fit a few
   hundred cases and does not change the ranking), and the floor of catalogue-only services.
3. The final SVM on all examples.

With fewer than ``MIN_EXAMPLES`` examples or a single service there is nothing to learn: :func:`fit`
returns None and the area keeps routing by the catalogue alone.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from knowledge.learning.features import Featurizer
from knowledge.learning.model import AreaModel

__all__ = ["Example", "MIN_EXAMPLES", "data_version", "fit"]

MIN_EXAMPLES = 10
BETA_GRID = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
CV_MAX = 3000  # out-of-fold decisions on at most this many examples: enough for two parameters, and it
# keeps training on 10,000+ examples to one full fit plus three small ones
SVM_C = 0.5  # scikit-learn's default 1.0 over-fits a few cases per service; 0.5 is the usual text setting


@dataclass(frozen=True, slots=True)
class Example:
    """One confirmed decision: what the citizen wrote and which service (and office) was right."""

    id: int
    text: str
    service_id: str
    authority_id: str | None = None


def data_version(examples: Sequence[Example]) -> dict[str, object]:
    """What a model was trained on: count, highest example id and a digest of (id, service) pairs."""
    h = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: e.id):
        h.update(f"{ex.id}:{ex.service_id}:{ex.authority_id or ''}\n".encode())
    return {"count": len(examples), "max_id": max((e.id for e in examples), default=0),
            "digest": h.hexdigest()[:32]}


def _svm(x, y):
    from sklearn.svm import LinearSVC

    model = LinearSVC(C=SVM_C, loss="squared_hinge", dual="auto", max_iter=5000, tol=1e-4)
    model.fit(x, y)
    return model


def _folds(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """Stratified fold indices (each service spread over the folds), deterministic."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        start = int(rng.integers(k))
        fold_of[idx] = (np.arange(len(idx)) + start) % k
    return [np.flatnonzero(fold_of == f) for f in range(k)]


def _softmax_rows(d: np.ndarray, t: float) -> np.ndarray:
    z = d / t
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fit_temperature(d: np.ndarray, truth: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood (golden-section search on log T)."""
    rows = np.arange(len(truth))

    def nll(log_t: float) -> float:
        p = _softmax_rows(d, math.exp(log_t))
        return float(-np.log(np.clip(p[rows, truth], 1e-12, None)).mean())

    lo, hi = math.log(0.01), math.log(10.0)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return math.exp((lo + hi) / 2)


def fit(
    area: str,
    examples: Sequence[Example],
    catalogue: Callable[[str], dict[str, float]] | None = None,
    *,
    folds: int = 3,
    min_df: int = 2,
    min_examples: int = MIN_EXAMPLES,
    extra_stems: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> AreaModel | None:
    """Train the router of ``area`` on ``examples``; None when there is not enough to learn.

    ``catalogue(text)`` gives the catalogue's scores (service id → 0..100) for a text; without it the
    model uses text features only.
    """
    say = progress or (lambda _msg: None)
    counts = Counter(e.service_id for e in examples)
    if len(examples) < max(2, min_examples) or len(counts) < 2:
        return None
    classes = sorted(counts)
    row = {sid: i for i, sid in enumerate(classes)}
    texts = [e.text for e in examples]
    y = np.array([row[e.service_id] for e in examples], dtype=np.int64)
    say(f"Merkmale aus {len(texts)} Beispielen")
    featurizer, x = Featurizer.fit_transform(texts, min_df=min_df, extra_stems=extra_stems)
    # Out-of-fold decisions: what the model says about cases it has not seen.
    k = max(2, min(folds, min(counts.values())))
    sub = np.arange(len(y))
    if len(y) > CV_MAX:
        sub = np.sort(np.random.default_rng(0).choice(len(y), CV_MAX, replace=False))
    xs, ys = x[sub], y[sub]
    cat = np.zeros((len(sub), len(classes)), dtype=np.float64)
    if catalogue is not None:
        say("Katalogabgleich")
        for i, text in enumerate(texts[n] for n in sub):
            for sid, score in catalogue(text).items():
                j = row.get(sid)
                if j is not None:
                    cat[i, j] = score / 100.0
    oof = np.zeros((len(sub), len(classes)), dtype=np.float64)
    for f, test in enumerate(_folds(ys, k)):
        say(f"Kreuzvalidierung {f + 1}/{k}")
        train = np.setdiff1d(np.arange(len(ys)), test)
        if len(np.unique(ys[train])) < 2:
            continue
        svm = _svm(xs[train], ys[train])
        dec = svm.decision_function(xs[test])
        if dec.ndim == 1:  # two classes: one column for the second
            dec = np.stack([-dec, dec], axis=1)
        fold_d = np.full((len(test), len(classes)), -1.5)
        fold_d[:, svm.classes_] = dec
        oof[test] = fold_d
    best_beta, best_acc = 0.0, -1.0
    for beta in BETA_GRID:
        acc = float(((oof + beta * cat).argmax(axis=1) == ys).mean())
        if acc > best_acc + 1e-9:
            best_beta, best_acc = beta, acc
    d = oof + best_beta * cat
    temperature = _fit_temperature(d, ys)
    wrong = np.ones_like(oof, dtype=bool)
    wrong[np.arange(len(ys)), ys] = False
    floor = float(np.median(oof[wrong])) if wrong.any() else -1.0
    p = _softmax_rows(d, temperature)
    top3 = float((np.argsort(-d, axis=1)[:, :3] == ys[:, None]).any(axis=1).mean())
    say("Endgültiges Modell")
    svm = _svm(x, y)
    coef = svm.coef_.astype(np.float32)
    intercept = svm.intercept_.astype(np.float32)
    if len(classes) == 2:  # LinearSVC keeps one row for two classes
        coef = np.vstack([-coef[0], coef[0]])
        intercept = np.array([-intercept[0], intercept[0]], dtype=np.float32)
    authorities: dict[str, str] = {}
    by_service: dict[str, Counter] = {}
    for e in examples:
        if e.authority_id:
            by_service.setdefault(e.service_id, Counter())[e.authority_id] += 1
    for sid, c in by_service.items():
        authorities[sid] = c.most_common(1)[0][0]
    metrics = {"oof_top1": round(best_acc, 4), "oof_top3": round(top3, 4),
               "oof_mean_p": round(float(p.max(axis=1).mean()), 4), "folds": k,
               "features": featurizer.n_features, "classes": len(classes)}
    return AreaModel(area=area, featurizer=featurizer, classes=classes, coef=coef, intercept=intercept,
                     beta=best_beta, temperature=temperature, floor=floor, data_version=data_version(examples),
                     authorities=authorities, metrics=metrics)
