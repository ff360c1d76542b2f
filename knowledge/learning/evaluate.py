"""k-fold evaluation of the combined router on labelled requests (``citizen-hub history evaluate``).

Every item is routed by the real ``KnowledgeBase.route`` with models trained on the other folds only, so
the figures are what a hub would have answered for requests it had not seen: top-1 and top-3 (the right
service first / among the first three candidates), the share the route flags for clarification, the
same figures of the catalogue alone, and the pairs of services most often confused (right → routed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from knowledge.learning.router import catalogue_scorer, catalogue_texts
from knowledge.learning.train import Example, fit

__all__ = ["EvalItem", "Evaluation", "cross_validate"]


@dataclass(frozen=True, slots=True)
class EvalItem:
    text: str
    location: str | None
    service_id: str
    area: str | None  # the catalogue area the item belongs to (None: not in any catalogue)


@dataclass
class Scores:
    n: int = 0
    top1: int = 0
    top3: int = 0
    flagged: int = 0
    correct_unflagged: int = 0  # right first and not flagged
    wrong_flagged: int = 0  # wrong first (or nothing) and flagged

    def add(self, right: str, candidates: list[str], flagged: bool) -> None:
        ok = bool(candidates) and candidates[0] == right
        self.n += 1
        self.top1 += ok
        self.top3 += right in candidates[:3]
        self.flagged += flagged
        self.correct_unflagged += ok and not flagged
        self.wrong_flagged += (not ok) and flagged

    def json(self) -> dict[str, Any]:
        """Shares of all requests, and the clarification rule's two shares (issue 13: the right answers
        that pass unflagged, target ≥ 0.90; the wrong ones that are flagged, target ≥ 0.80; None when
        there are none)."""
        n = max(self.n, 1)
        wrong = self.n - self.top1
        return {"n": self.n, "top1": round(self.top1 / n, 4), "top3": round(self.top3 / n, 4),
                "flagged": round(self.flagged / n, 4),
                "correct_unflagged": round(self.correct_unflagged / self.top1, 4) if self.top1 else None,
                "wrong_flagged": round(self.wrong_flagged / wrong, 4) if wrong else None}


@dataclass
class Evaluation:
    folds: int
    learned: Scores = field(default_factory=Scores)
    catalogue: Scores = field(default_factory=Scores)
    confused: Counter = field(default_factory=Counter)

    def to_json(self, names: dict[str, str] | None = None, most: int = 10) -> dict[str, Any]:
        names = names or {}
        return {
            "folds": self.folds,
            "combined": self.learned.json(),
            "catalogue_only": self.catalogue.json(),
            "confused": [{"right": names.get(a, a), "routed": names.get(b, b), "count": c}
                         for (a, b), c in self.confused.most_common(most)],
        }


def _folds(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation(n) % k


def cross_validate(kb: Any, items: Sequence[EvalItem], folds: int = 5, *, min_examples: int = 10,
                   train_folds: int = 3, progress: Callable[[str], None] | None = None,
                   extra_stems: Callable[[str], Sequence[str]] | None = None) -> Evaluation:
    """Route every item with models trained on the other folds; the knowledge base's own models are put
    back afterwards. ``kb`` is a ``knowledge.base.KnowledgeBase`` (not imported: base imports this
    package)."""
    say = progress or (lambda _m: None)
    folds = max(2, min(folds, len(items))) if len(items) >= 2 else 1
    result = Evaluation(folds)
    fold_of = _folds(len(items), folds)
    saved = dict(kb.learning.models)

    try:
        for f in range(folds):
            say(f"Fold {f + 1}/{folds}: Training")
            by_area: dict[str, list[Example]] = {}
            for i, item in enumerate(items):
                if fold_of[i] != f and item.area is not None:
                    by_area.setdefault(item.area, []).append(Example(i + 1, item.text, item.service_id))
            models = {}
            for area, examples in by_area.items():
                model = fit(area, examples, catalogue_scorer(kb, area), folds=train_folds, min_examples=min_examples,
                            catalogue_texts=catalogue_texts(kb.services.values(), area),
                            extra_stems=extra_stems(area) if extra_stems else ())
                if model is not None:
                    models[area] = model
            test = [item for i, item in enumerate(items) if fold_of[i] == f]
            say(f"Fold {f + 1}/{folds}: {len(test)} Anfragen routen")
            for item in test:
                kb.learning.replace({})
                plain = kb.route(item.text, item.location)
                result.catalogue.add(item.service_id, [s.id for s, _ in plain.candidates], plain.needs_clarification)
                kb.learning.replace(models)
                routed = kb.route(item.text, item.location)
                ids = [s.id for s, _ in routed.candidates]
                result.learned.add(item.service_id, ids, routed.needs_clarification)
                if ids and ids[0] != item.service_id:
                    result.confused[(item.service_id, ids[0])] += 1
                elif not ids:
                    result.confused[(item.service_id, "—")] += 1
    finally:
        kb.learning.replace(saved)
    return result
