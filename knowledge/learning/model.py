"""One area's learned router: a linear model over text features plus the catalogue match, calibrated.

For a request with feature vector ``x`` and catalogue scores ``cat_s`` (0..1, the catalogue match of
:class:`knowledge.lookup.ServiceIndex` divided by 100) the score of service ``s`` is

    d_s = w_s · x + b_s + β · cat_s          (services with confirmed cases)
    d_s = w_o · x + b_o + γ · cat_s          (services of the area the catalogue found but no case named)

and the probabilities are ``softmax(d / T)`` over these services. ``w``, ``b`` come from a linear SVM,
``β`` (how much the catalogue counts) and ``T`` (the temperature that makes the probabilities calibrated:
of the requests routed with probability 0.8, about 80 % are right) are fitted on out-of-fold decisions
(:mod:`knowledge.learning.train`). ``w_o``, ``b_o`` are one class more, "the rest of the catalogue", learnt
from the catalogue texts of the area's services without cases (a model without it uses ``floor``, the
median out-of-fold score of a wrong service); ``γ``
(≥ β) how much the catalogue counts for a service the model has no case of: the largest weight that costs
the confirmed cases (almost) nothing, so a well-worded request for such a service keeps its catalogue
answer.

Persistence is plain data: a ``.npz`` archive (``numpy.load(..., allow_pickle=False)``) of float and
int arrays and one UTF-8 JSON header. :meth:`AreaModel.to_bytes` returns it with its SHA-256, which the
store keeps beside it and :meth:`AreaModel.from_bytes` checks before reading anything.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from knowledge.learning.features import Featurizer

__all__ = ["AreaModel", "ModelIntegrityError", "FORMAT"]

FORMAT = "citizen-hub-learned-router/1"


class ModelIntegrityError(ValueError):
    """A stored model whose bytes do not match its hash, or that is not in this format."""


@dataclass
class AreaModel:
    """The learned router of one catalogue area (ARS). Immutable once built: swapped whole, never edited."""

    area: str
    featurizer: Featurizer
    classes: list[str]  # service ids, row order of coef
    coef: np.ndarray  # (n_classes, n_features) float32
    intercept: np.ndarray  # (n_classes,) float32
    beta: float  # weight of the catalogue match
    temperature: float
    floor: float
    data_version: dict[str, Any]  # {"count", "max_id", "digest"} of the examples it was trained on
    # service id → most confirmed authority id; "service id@ARS" → the one most confirmed at that place
    authorities: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # out-of-fold figures of the training run
    sha256: str = ""
    gamma: float | None = None  # weight of the catalogue match of services without cases (None: β)
    rest_offset: float = 0.0  # added to the "rest of the catalogue" decision
    # The probability margin below which the route asks a person (knowledge.learning.train.clarify_margin,
    # calibrated on the out-of-fold decisions); None (a model stored before it): the catalogue's margins.
    clarify_margin: float | None = None

    def __post_init__(self) -> None:
        self._row = {sid: i for i, sid in enumerate(self.classes)}
        # One row more than classes: "the rest of the catalogue" (services without cases).
        self.has_other = self.coef.shape[0] == len(self.classes) + 1
        # Column-major: routing gathers the columns of the few features a request has.
        self._coef_t = np.ascontiguousarray(self.coef.T, dtype=np.float32)
        self.coef = self._coef_t.T  # a view: the weights are held once

    @property
    def known(self) -> Container[str]:
        """The services with confirmed cases (the model's classes), for ``in``."""
        return self._row.keys()

    @property
    def n_examples(self) -> int:
        return int(self.data_version.get("count", 0))

    def decision(self, text: str) -> np.ndarray:
        """``w · x + b`` for every class (no catalogue part)."""
        cols, vals = self.featurizer.vector(text)
        if len(cols) == 0:
            return self.intercept.astype(np.float64)
        return vals @ self._coef_t[cols] + self.intercept

    def scores(self, text: str, catalogue: dict[str, float], allowed: set[str] | None = None
               ) -> tuple[list[str], np.ndarray]:
        """Service ids and their combined decision values ``d`` (see the module docstring).

        ``catalogue`` maps service id → catalogue score 0..100; catalogue-only services are added when
        ``allowed`` (the area's services) contains them.
        """
        d = self.decision(text).astype(np.float64)
        rest = self.floor
        if self.has_other:
            rest, d = float(d[-1]) + self.rest_offset, d[:-1]
        ids = list(self.classes)
        for sid, score in catalogue.items():
            row = self._row.get(sid)
            if row is not None:
                d[row] += self.beta * score / 100.0
        gamma = self.beta if self.gamma is None else self.gamma
        extra = [(sid, rest + gamma * score / 100.0) for sid, score in catalogue.items()
                 if sid not in self._row and (allowed is None or sid in allowed)]
        if extra:
            ids += [sid for sid, _ in extra]
            d = np.concatenate([d, np.array([v for _, v in extra])])
        return ids, d

    def confirmed_office(self, service_id: str, places: list[str]) -> str | None:
        """The office agents confirmed most for ``service_id`` at the first of ``places`` (ARS, most local
        first) that has confirmed cases of it; None when none has."""
        for ars in places:
            office = self.authorities.get(f"{service_id}@{ars}")
            if office is not None:
                return office
        return None

    def probabilities(self, text: str, catalogue: dict[str, float], allowed: set[str] | None = None
                      ) -> list[tuple[str, float]]:
        """Calibrated probabilities, best first: ``[(service id, p), ...]`` summing to 1."""
        ids, d = self.scores(text, catalogue, allowed)
        return ranked(ids, softmax(d, self.temperature))

    # -- persistence ------------------------------------------------------------------------------

    def to_bytes(self) -> tuple[bytes, str]:
        """The model as an ``.npz`` archive and its SHA-256 (hex)."""
        header = {
            "format": FORMAT,
            "area": self.area,
            "classes": self.classes,
            "beta": self.beta,
            "gamma": self.gamma,
            "rest_offset": self.rest_offset,
            "clarify_margin": self.clarify_margin,
            "temperature": self.temperature,
            "floor": self.floor,
            "data_version": self.data_version,
            "authorities": self.authorities,
            "metrics": self.metrics,
            "featurizer": self.featurizer.state(),
        }
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            header=np.frombuffer(json.dumps(header, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
            idf=self.featurizer.idf.astype(np.float32),
            coef=self.coef.astype(np.float32),
            intercept=self.intercept.astype(np.float32),
        )
        data = buf.getvalue()
        return data, hashlib.sha256(data).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, sha256: str) -> AreaModel:
        """Read a stored model; raises :class:`ModelIntegrityError` when it is not exactly what was stored."""
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ModelIntegrityError(f"model hash mismatch (stored {sha256[:12]}…, bytes {digest[:12]}…)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                header = json.loads(npz["header"].tobytes().decode("utf-8"))
                idf, coef, intercept = npz["idf"], npz["coef"], npz["intercept"]
        except (ValueError, KeyError, OSError) as exc:
            raise ModelIntegrityError(f"not a learned-router archive: {exc}") from exc
        if header.get("format") != FORMAT:
            raise ModelIntegrityError(f"unknown model format {header.get('format')!r}")
        classes = [str(c) for c in header["classes"]]
        rows = coef.shape[0] if coef.ndim == 2 else -1
        if (rows not in (len(classes), len(classes) + 1) or coef.shape != (rows, len(idf))
                or intercept.shape != (rows,)):
            raise ModelIntegrityError("model arrays have inconsistent shapes")
        return cls(
            area=str(header["area"]),
            featurizer=Featurizer.from_state(header["featurizer"], idf),
            classes=classes,
            coef=coef,
            intercept=intercept,
            beta=float(header["beta"]),
            gamma=None if header.get("gamma") is None else float(header["gamma"]),
            rest_offset=float(header.get("rest_offset") or 0.0),
            clarify_margin=None if header.get("clarify_margin") is None else float(header["clarify_margin"]),
            temperature=float(header["temperature"]),
            floor=float(header["floor"]),
            data_version=dict(header["data_version"]),
            authorities=dict(header.get("authorities") or {}),
            metrics=dict(header.get("metrics") or {}),
            sha256=sha256,
        )

    def memory_bytes(self) -> int:
        """Approximate resident size: arrays plus the vocabulary dictionary."""
        vocab = sum(len(k) + 90 for k in self.featurizer.vocabulary)  # key str + dict slot + int
        return int(self._coef_t.nbytes + self.featurizer.idf.nbytes + vocab)


def softmax(d: np.ndarray, temperature: float) -> np.ndarray:
    z = d / max(temperature, 1e-6)
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def ranked(ids: list[str], p: np.ndarray) -> list[tuple[str, float]]:
    order = np.argsort(-p, kind="stable")
    return [(ids[i], float(p[i])) for i in order]
