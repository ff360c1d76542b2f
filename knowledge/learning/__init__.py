"""Routing that learns from agents' confirmed decisions (issue 18).

Every case an agent confirms or re-routes is a labelled example (``hub_labelled_example``); history can
also be imported (``citizen-hub history import``). Per catalogue area a linear model learns text →
service from them, and the route combines it with the catalogue match into calibrated probabilities.

* :mod:`~knowledge.learning.features` – German-aware text features (stems, bigrams, compound parts,
  character n-grams), tf-idf, as plain data;
* :mod:`~knowledge.learning.model` – one area's model: scores, calibrated probabilities, the safe
  ``.npz`` format with its SHA-256;
* :mod:`~knowledge.learning.train` – fitting it (linear SVM, catalogue weight and temperature chosen on
  out-of-fold decisions);
* :mod:`~knowledge.learning.router` – which area's model answers a request, the atomic swap;
* :mod:`~knowledge.learning.store` – the ``learned_model`` table;
* :mod:`~knowledge.learning.evaluate` – k-fold evaluation (top-1, top-3, flagged, confused pairs);
* :mod:`~knowledge.learning.settings` – the ``[learning]`` config section.

This package knows nothing of the queue: the hub reads the examples and hands them to :func:`fit`.
"""

from knowledge.learning.model import AreaModel, ModelIntegrityError
from knowledge.learning.router import LearnedRanking, LearnedRouting
from knowledge.learning.train import Example, data_version, fit

__all__ = ["AreaModel", "Example", "LearnedRanking", "LearnedRouting", "ModelIntegrityError", "data_version",
           "fit"]
