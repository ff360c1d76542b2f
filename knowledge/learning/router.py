"""The combined router: the catalogue match and the area's learned model, as calibrated probabilities.

:class:`LearnedRouting` holds one :class:`~knowledge.learning.model.AreaModel` per catalogue area (ARS).
``KnowledgeBase.route`` asks it once per request (:meth:`LearnedRouting.rank`); it answers None when no
model covers the request's place, and the route is the catalogue's alone, as before.

Which area's model
    The request's place, most local first (Gemeinde → Amt → Kreis → Land): the first region with a model.
    An example belongs to the area it was decided in, so a model trained on Konstanz's cases is never asked
    about a place in Kreis Segeberg. Without a place: the home region's model, else the only model there
    is, else the model of the area whose catalogue matched best.

Swapping
    :meth:`LearnedRouting.replace` installs a new dictionary of models in one assignment: a request being
    routed while training runs keeps using the model it started with.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from knowledge.learning.model import AreaModel

if TYPE_CHECKING:  # pragma: no cover
    from knowledge.lookup import Hit
    from knowledge.models import Service
    from knowledge.regions import PlaceResolution, RegionInfo

__all__ = ["LearnedRanking", "LearnedRouting", "allowed_owner", "catalogue_scorer", "catalogue_texts"]

# Catalogue hits the combined router looks at; lower ones than the lookup's min_score count too, as
# evidence beside the model.
CATALOGUE_HITS = 10


@dataclass(frozen=True)
class LearnedRanking:
    """The combined router's answer: services with calibrated probabilities, best first."""

    area: str
    probabilities: list[tuple[str, float]]  # (service id, p), summing to 1 over the area's candidates
    model_sha256: str
    # service id → the office agents confirmed for it at the request's place (the place known).
    offices: dict[str, str] = field(default_factory=dict)
    # The model's calibrated clarification margin on the probability scale (AreaModel.clarify_margin).
    margin: float | None = None
    # The services the model has confirmed cases of: only for them are its probabilities calibrated (a
    # service known from the catalogue alone shares the "rest of the catalogue" with its neighbours).
    known: Container[str] = frozenset()


def allowed_owner(owner: str, places: Iterable[str], area: str) -> bool:
    """May a service owned by ``owner`` be suggested for a request at ``places`` (ARS) in ``area``?

    Nationwide services (no owner), services of a region the place lies in, and — without a place —
    services of the area and of the regions above or below it.
    """
    if not owner:
        return True
    places = list(places)
    if places:
        return owner in places
    return area.startswith(owner) or owner.startswith(area)


def catalogue_scorer(kb: Any, area: str | None) -> Callable[[str], dict[str, float]]:
    """``text → {service id: catalogue score 0..100}`` as a request in ``area`` sees it: the same
    ``KnowledgeBase.search`` (and so the same service ids) that ``route`` hands to :meth:`LearnedRouting.rank`,
    so the catalogue weight a model learns is the one it is used with. ``kb`` is a
    ``knowledge.base.KnowledgeBase`` (not imported: it imports this package)."""
    from knowledge.regions import PlaceResolution

    region = kb.regions.get(area) if area else None
    place = PlaceResolution(region) if region is not None else None

    def score(text: str) -> dict[str, float]:
        return {view.id: s for view, s, _m in kb.search(text, place, CATALOGUE_HITS)}

    return score


def catalogue_texts(services: Iterable[Service], area: str, max_chars: int = 500) -> list[tuple[str, str]]:
    """``(text, service id)``: the name, each synonym and the short text of every service of ``area``'s
    catalogues (those :func:`allowed_owner` lets a request in the area see); training adds them as one
    example each (:func:`knowledge.learning.train.fit`)."""
    out: list[tuple[str, str]] = []
    for s in services:
        if allowed_owner(s.owner_ars, [], area):
            for phrase in (s.name, *(s.synonyms or ()), (s.short_text or "")[:max_chars]):
                if isinstance(phrase, str) and phrase.strip():
                    out.append((phrase, s.id))
    return out


class LearnedRouting:
    """The learned models of every area, swapped whole."""

    def __init__(self, models: dict[str, AreaModel] | None = None, home_region: str = "") -> None:
        self._models: dict[str, AreaModel] = dict(models or {})
        self.home_region = home_region
        self._lock = threading.Lock()  # only writers take it; readers read one reference

    @property
    def models(self) -> dict[str, AreaModel]:
        return self._models

    def replace(self, models: dict[str, AreaModel]) -> None:
        """Install a whole new set of models (atomic for readers)."""
        with self._lock:
            self._models = dict(models)

    def put(self, model: AreaModel) -> None:
        """Install or replace one area's model."""
        with self._lock:
            self._models = {**self._models, model.area: model}

    def drop(self, area: str) -> None:
        with self._lock:
            self._models = {k: v for k, v in self._models.items() if k != area}

    def model_for(self, chain: list[RegionInfo], hits: list[Hit] = (),
                  services: dict[str, Service] | None = None) -> AreaModel | None:
        """The model of the most local area of ``chain`` (the place, most local first), or the fallback."""
        models = self._models
        if not models:
            return None
        for region in chain:
            model = models.get(region.ars)
            if model is not None:
                return model
        if chain:
            return None
        home = self.home_region
        for area, model in models.items():
            if home and home.startswith(area):
                return model
        if len(models) == 1:
            return next(iter(models.values()))
        for hit in hits:
            service = (services or {}).get(hit.id)
            if service is not None:
                for area, model in models.items():
                    if service.owner_ars and (area.startswith(service.owner_ars)
                                              or service.owner_ars.startswith(area)):
                        return model
        return None

    def rank(self, text: str, place: PlaceResolution | None, hits: list[Hit], services: dict[str, Service],
             chain_of: Callable[[str], list[RegionInfo]]) -> LearnedRanking | None:
        """Calibrated probabilities for ``text`` at ``place``; None when no model covers the place."""
        if not self._models:
            return None
        if place is not None and place.match is not None:
            chain = chain_of(place.match.ars)
        elif place is not None and place.ambiguous:
            # Several candidate places: a model only if they all share it.
            found = {id(m): m for r, _ in place.candidates[:25]
                     if (m := self.model_for(chain_of(r.ars))) is not None}
            if len(found) != 1:
                return None
            model = next(iter(found.values()))
            return self._rank(model, text, hits, services, [])
        else:
            chain = []
        model = self.model_for(chain, hits, services)
        if model is None:
            return None
        return self._rank(model, text, hits, services, [r.ars for r in chain])

    def _rank(self, model: AreaModel, text: str, hits: list[Hit], services: dict[str, Service],
              places: list[str]) -> LearnedRanking:
        catalogue: dict[str, float] = {}
        allowed: set[str] = set()
        for hit in hits:
            service = services.get(hit.id)
            if service is None:
                continue
            catalogue[hit.id] = hit.score
            if allowed_owner(service.owner_ars, places, model.area):
                allowed.add(hit.id)
        probabilities = [(sid, p) for sid, p in model.probabilities(text, catalogue, allowed) if sid in services]
        offices = {}
        if places:
            for sid, _p in probabilities[:5]:
                office = model.confirmed_office(sid, places)
                if office is not None:
                    offices[sid] = office
        return LearnedRanking(model.area, probabilities, model.sha256, offices, model.clarify_margin, model.known)
