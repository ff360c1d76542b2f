"""The hub's side of learned routing: labelled examples in, trained models out (issue 18).

* :func:`area_of` – the catalogue area an example was decided in (the same rule the router uses to pick
  a model, :mod:`knowledge.learning.router`);
* :func:`load_examples` / :func:`train` – read ``hub_labelled_example``, train every area whose examples
  changed since its model (``data_version``), store the model (``learned_model``) and swap it into the
  running knowledge base;
* :func:`parse_history` / :func:`import_history` – ``citizen-hub history import``: every line checked,
  all lines stored in one transaction or none;
* :class:`LearningThread` – trains on the ``[learning]`` schedule and picks up models other processes
  trained, in a background thread; routing never waits for it (the swap is one assignment);
* :func:`nearest_cases` – the past cases behind a suggestion, for the console.

Only :mod:`hub.casework` writes examples: from cases (re-route) and imported history (``case_id``
NULL, agent ``history-import``, :func:`hub.casework.import_examples`). Both kinds are covered by :mod:`hub.queue.privacy`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from hub.casework import import_examples
from hub.queue.cases import example_t
from knowledge.base import KnowledgeBase
from knowledge.learning import AreaModel, Example, fit
from knowledge.learning.router import CATALOGUE_HITS, allowed_owner, catalogue_scorer, catalogue_texts
from knowledge.learning.settings import LearningSettings
from knowledge.learning.store import delete_model, model_versions, read_models, write_model
from knowledge.lookup import Hit
from knowledge.text import normalize, terms

log = logging.getLogger(__name__)

IMPORT_AGENT = "history-import"
MAX_LINE_CHARS = 100_000
MAX_LINES = 1_000_000


# -- areas ------------------------------------------------------------------------------------------

def catalogue_owners(kb: KnowledgeBase) -> set[str]:
    """The regions (ARS) that own a catalogue in this knowledge base."""
    return {s.owner_ars for s in kb.services.values() if s.owner_ars}


def area_of(kb: KnowledgeBase, owners: set[str], text: str, location: str | None, service_id: str
            ) -> str | None:
    """The catalogue area a decision about ``text`` at ``location`` belongs to.

    The most local region of the place that owns a catalogue; for an unknown or ambiguous place the
    owner of the chosen service's catalogue. None when the service is not (any more) in the catalogue.
    """
    service = kb.services.get(service_id)
    if service is None:
        return None
    place = kb.resolve_place(location, text) if (location or text) else None
    if place is not None and place.match is not None:
        for region in kb.regions.chain(place.match.ars):
            if region.ars in owners:
                return region.ars
    return service.owner_ars or None


@dataclass
class AreaExamples:
    area: str
    examples: list[Example] = field(default_factory=list)


def load_examples(conn: Connection, kb: KnowledgeBase, max_per_area: int = 50_000) -> dict[str, list[Example]]:
    """Every labelled example, grouped by area, newest ``max_per_area`` per area, oldest first."""
    owners = catalogue_owners(kb)
    by_area: dict[str, list[Example]] = {}
    rows = conn.execute(select(example_t.c.id, example_t.c.text, example_t.c.location, example_t.c.service_id,
                               example_t.c.authority_id)
                        .where(example_t.c.service_id.isnot(None)).order_by(example_t.c.id))
    for eid, text, location, service_id, authority_id in rows:
        if not text or not text.strip():
            continue
        area = area_of(kb, owners, text, location, service_id)
        if area is not None:
            place = kb.resolve_place(location, text) if authority_id else None
            ars = place.match.ars if place is not None and place.match is not None else None
            by_area.setdefault(area, []).append(Example(eid, text, service_id, authority_id, ars))
    return {area: exs[-max_per_area:] for area, exs in by_area.items()}


def area_stems(kb: KnowledgeBase, area: str) -> list[str]:
    """Word stems of the area's service names and synonyms: the parts compounds are split into."""
    out: set[str] = set()
    for s in kb.services.values():
        if allowed_owner(s.owner_ars, [], area):
            for phrase in (s.name, *(s.synonyms or ())):
                if isinstance(phrase, str):
                    out.update(st for _t, st in terms(phrase) if len(st) >= 4)
    return sorted(out)


@dataclass
class TrainReport:
    trained: dict[str, AreaModel] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    too_few: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def train(engine: Engine, kb: KnowledgeBase, settings: LearningSettings | None = None, *, force: bool = False,
          areas: Iterable[str] | None = None, progress: Callable[[str], None] | None = None) -> TrainReport:
    """Train every area whose examples changed (all with ``force``), store and swap in the new models.

    An area whose examples fell below ``min_examples`` (deleted by privacy, say) loses its model: a model
    must not outlive the data it was made from.
    """
    settings = settings or LearningSettings()
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    report = TrainReport()
    with engine.connect() as conn:
        groups = load_examples(conn, kb, settings.max_examples)
        stored = read_models(conn)
    wanted = set(areas) if areas is not None else None
    for area in sorted(set(groups) | set(stored)):
        if wanted is not None and area not in wanted:
            continue
        examples = groups.get(area, [])
        old = stored.get(area)
        if len(examples) < settings.min_examples:
            if examples:
                report.too_few[area] = len(examples)
            if old is not None:
                with engine.begin() as conn:
                    delete_model(conn, area)
                kb.learning.drop(area)
                report.dropped.append(area)
            continue
        from knowledge.learning import data_version

        if old is not None and not force and old.data_version == data_version(examples):
            report.unchanged.append(area)
            if area not in kb.learning.models:
                kb.learning.put(old)
            continue
        say(f"Bereich {area}: {len(examples)} Beispiele")
        model = fit(area, examples, catalogue_scorer(kb, area), folds=settings.folds, min_examples=settings.min_examples,
                    extra_stems=area_stems(kb, area), catalogue_texts=catalogue_texts(kb.services.values(), area),
                    progress=lambda m, a=area: say(f"Bereich {a}: {m}"))
        if model is None:
            report.too_few[area] = len(examples)
            continue
        with engine.begin() as conn:
            write_model(conn, model)
        kb.learning.put(model)  # the swap: a request being routed keeps the model it started with
        report.trained[area] = model
    report.seconds = time.perf_counter() - started
    return report


def reload_models(engine: Engine, kb: KnowledgeBase) -> list[str]:
    """Swap in models other processes stored since; returns the areas that changed."""
    with engine.connect() as conn:
        versions = model_versions(conn)
        loaded = {a: m.sha256 for a, m in kb.learning.models.items()}
        changed = [a for a, sha in versions.items() if loaded.get(a) != sha]
        fresh = read_models(conn, changed) if changed else {}
    gone = [a for a in loaded if a not in versions]
    if changed or gone:
        models = {a: m for a, m in kb.learning.models.items() if a in versions}
        models.update(fresh)
        kb.learning.replace(models)
    return changed + gone


class LearningThread:
    """Background training on the ``[learning]`` schedule, and pick-up of models trained elsewhere."""

    def __init__(self, engine: Engine, kb: KnowledgeBase | Callable[[], KnowledgeBase | None],
                 settings: LearningSettings) -> None:
        self.engine = engine
        self._kb = kb
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _knowledge(self) -> KnowledgeBase | None:
        kb = self._kb
        return kb if isinstance(kb, KnowledgeBase) else kb()

    def start(self) -> None:
        if not self.settings.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="learning", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        every = self.settings.train_every_seconds
        next_train = time.monotonic() + every if every > 0 else None
        while not self._stop.wait(self.settings.reload_seconds):
            kb = self._knowledge()
            if kb is None:
                continue
            try:
                if next_train is not None and time.monotonic() >= next_train:
                    report = train(self.engine, kb, self.settings)
                    next_train = time.monotonic() + every
                    if report.trained:
                        log.info("learned routers trained: %s (%.1f s)", ", ".join(report.trained),
                                 report.seconds)
                reload_models(self.engine, kb)
            except Exception:  # a failed run must not end the schedule; the previous model stays
                log.exception("learned router training failed; the previous models stay")


# -- history import ---------------------------------------------------------------------------------

@dataclass
class HistoryLine:
    line: int
    text: str
    location: str | None
    service_id: str
    authority_id: str | None


def _service_by_name(kb: KnowledgeBase, name: str, places: list[str]) -> list[str]:
    wanted = normalize(name)
    return [s.id for s in kb.services.values()
            if normalize(s.name) == wanted and (not places or allowed_owner(s.owner_ars, places, ""))]


def _places(kb: KnowledgeBase, location: str | None) -> tuple[list[str] | None, str | None]:
    """ARS chain of ``location`` (empty without one), or an error message."""
    if location is None or not location.strip():
        return [], None
    place = kb.resolve_place(location)
    if place is None or place.match is None:
        if place is not None and place.ambiguous:
            return None, f"Ort {location!r} ist mehrdeutig ({len(place.candidates)} Orte)"
        return None, f"Ort {location!r} nicht gefunden"
    return [r.ars for r in kb.regions.chain(place.match.ars)], None


def parse_history(kb: KnowledgeBase, lines: Iterable[str], max_text_chars: int = 100_000
                  ) -> tuple[list[HistoryLine], list[tuple[int, str]]]:
    """Check every line of a history file; returns the good lines and ``(line number, error)`` for the bad."""
    good: list[HistoryLine] = []
    errors: list[tuple[int, str]] = []
    place_cache: dict[str | None, tuple[list[str] | None, str | None]] = {}
    for n, raw in enumerate(lines, 1):
        if n > MAX_LINES:
            errors.append((n, f"mehr als {MAX_LINES} Zeilen"))
            break
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_CHARS:
            errors.append((n, f"Zeile länger als {MAX_LINE_CHARS} Zeichen"))
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            errors.append((n, f"kein JSON: {exc.msg}"))
            continue
        if not isinstance(obj, dict):
            errors.append((n, "kein JSON-Objekt"))
            continue
        unknown = set(obj) - {"text", "location", "service", "authority"}
        if unknown:
            errors.append((n, "unbekannte Felder: " + ", ".join(sorted(map(str, unknown)))))
            continue
        text, location, service, authority = (obj.get(k) for k in ("text", "location", "service", "authority"))
        if not isinstance(text, str) or not text.strip():
            errors.append((n, "\"text\" fehlt oder ist leer"))
            continue
        if len(text) > max_text_chars:
            errors.append((n, f"\"text\" länger als {max_text_chars} Zeichen"))
            continue
        if location is not None and not isinstance(location, str):
            errors.append((n, "\"location\" muss Text oder null sein"))
            continue
        if not isinstance(service, str) or not service.strip():
            errors.append((n, "\"service\" fehlt"))
            continue
        if authority is not None and not isinstance(authority, str):
            errors.append((n, "\"authority\" muss Text oder null sein"))
            continue
        if location not in place_cache:
            place_cache[location] = _places(kb, location)
        places, problem = place_cache[location]
        if problem:
            errors.append((n, problem))
            continue
        if service in kb.services and (not places or allowed_owner(kb.services[service].owner_ars, places, "")):
            service_id = service
        else:
            found = _service_by_name(kb, service, places or [])
            if len(found) != 1:
                where = f" im Katalog von {location}" if location else ""
                what = "mehrdeutig" if found else "unbekannt"
                errors.append((n, f"Leistung {service!r}{where} {what}"))
                continue
            service_id = found[0]
        authority_id = None
        if authority:
            if authority in kb.authorities:
                authority_id = authority
            else:
                names = [a.id for a in kb.authorities.values() if normalize(a.name) == normalize(authority)]
                if len(names) != 1:
                    errors.append((n, f"Behörde {authority!r} {'mehrdeutig' if names else 'unbekannt'}"))
                    continue
                authority_id = names[0]
        good.append(HistoryLine(n, text, location, service_id, authority_id))
    return good, errors


def import_history(engine: Engine, rows: list[HistoryLine], agent: str = IMPORT_AGENT) -> int:
    """Store checked history lines as labelled examples, all in one transaction."""
    with engine.begin() as conn:
        return import_examples(conn, [{"text": r.text, "location": r.location, "service_id": r.service_id,
                                       "authority_id": r.authority_id} for r in rows], agent=agent)


# -- explanation ------------------------------------------------------------------------------------

def nearest_cases(engine: Engine, kb: KnowledgeBase, text: str, location: str | None, k: int = 5,
                  scan: int = 5000) -> list[dict[str, Any]]:
    """The past confirmed cases most like ``text`` in the feature space of its area's model.

    Each: ``{"similarity" (cosine 0..1), "text", "service_id", "service_name", "case_id"}``; empty when no
    model covers the place. Looks at the area's newest ``scan`` examples.
    """
    place = kb.resolve_place(location, text)
    hits = [Hit(view.id, score, matched) for view, score, matched in kb.search(text, place, CATALOGUE_HITS)]
    ranking = kb.learning.rank(text, place, hits, kb.services, kb.regions.chain)
    if ranking is None:
        return []
    model = kb.learning.models.get(ranking.area)
    if model is None:
        return []
    owners = catalogue_owners(kb)
    with engine.connect() as conn:
        rows = conn.execute(select(example_t.c.id, example_t.c.case_id, example_t.c.text, example_t.c.location,
                                   example_t.c.service_id).where(example_t.c.service_id.isnot(None))
                            .order_by(example_t.c.id.desc()).limit(scan * 4)).all()
    rows = [r for r in rows if r.text and area_of(kb, owners, r.text, r.location, r.service_id) == model.area]
    rows = rows[:scan]
    if not rows:
        return []
    cols, vals = model.featurizer.vector(text)
    matrix = model.featurizer.transform(r.text for r in rows)
    query = np.zeros(model.featurizer.n_features, dtype=np.float32)
    query[cols] = vals
    sims = matrix @ query
    order = np.argsort(-sims)[:k]
    out = []
    for i in order:
        if sims[i] <= 0:
            break
        r = rows[int(i)]
        service = kb.services.get(r.service_id)
        out.append({"similarity": round(float(sims[i]), 3), "text": r.text, "service_id": r.service_id,
                    "service_name": service.name if service else r.service_id, "case_id": r.case_id})
    return out
