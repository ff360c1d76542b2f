"""The routing stage: the knowledge base decides service and authority of each new case.

A new case goes to ``routed`` when the router is sure (a service, a responsible authority, no
clarification asked for, confidence at least ``min_confidence``) and to ``needs_clarification`` for an
agent otherwise; the router's whole answer is kept in ``route_json`` so the agent sees the candidates.
An agent's correction (:func:`reroute`) is recorded as a labelled example.

The stage depends only on the :class:`Router` protocol: ``knowledge.base.KnowledgeBase`` is the real
one; :class:`KeywordRouter` is a small deterministic router over a dict (for tests, benchmarks and a
hub without a catalogue).
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection, Engine

from hub.queue.cases import (
    CaseState,
    SlaPolicy,
    StaleState,
    message_t,
    transition_many,
    try_transition,
    utcnow,
)


@runtime_checkable
class RouteResultLike(Protocol):
    confidence: float

    def to_json(self) -> dict[str, Any]: ...


@runtime_checkable
class Router(Protocol):
    """Anything that routes a citizen's text and place (``knowledge.base.KnowledgeBase`` does).

    ``service_id`` is the service the client named (``hub_case.requested_service_id``): a router routes
    by it when it knows it, finding only the office from the text and place, and by the text otherwise.
    The stage passes it only when a case has one, so a router for text alone still fits.
    """

    def route(self, text: str, location: str | None, *, service_id: str | None = None) -> RouteResultLike: ...


@dataclass
class SimpleRouteResult:
    """A route in the JSON shape of the route contract (see ``knowledge.base.RouteResult``)."""

    service: dict[str, Any] | None = None
    authority: dict[str, Any] | None = None
    location: dict[str, Any] | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    location_candidates: list[dict[str, Any]] = field(default_factory=list)
    needs_clarification: bool = True
    reason: str | None = None
    confidence: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "authority": self.authority,
            "location": self.location,
            "candidates": self.candidates,
            "location_candidates": self.location_candidates,
            "needs_clarification": self.needs_clarification,
            "reason": self.reason,
        }


_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFC", text).casefold())


class KeywordRouter:
    """Routes by counting keyword hits: deterministic, dependency-free, good enough for small catalogues.

    ``services`` maps a service id to ``{"name", "leika", "keywords": [...], "authority": {"id", "name",
    "level"}}``; ``places`` maps a lower-case place name or postcode to ``{"ars", "name"}`` (optional).
    Confidence is the best service's share of all keyword hits of the two best services, as a
    percentage: one clear winner scores 100, a tie 50, no hit 0.
    """

    def __init__(self, services: Mapping[str, Mapping[str, Any]],
                 places: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.services = {sid: dict(s) for sid, s in services.items()}
        self.keywords = {sid: {w for k in s.get("keywords", ()) for w in _words(k)} | set(_words(s["name"]))
                         for sid, s in self.services.items()}
        self.places = {k.casefold(): dict(v) for k, v in (places or {}).items()}

    def route(self, text: str, location: str | None = None, *, service_id: str | None = None
              ) -> SimpleRouteResult:
        words = _words(text)
        counted = sorted(
            ((sum(1 for w in words if w in kws), sid) for sid, kws in self.keywords.items()),
            key=lambda item: (-item[0], item[1]),
        )
        hits = [(n, sid) for n, sid in counted if n > 0]
        if service_id in self.services:  # the client named it: the only candidate, a clear winner
            hits = [(max([n for n, _ in hits] + [1]), service_id)]
        result = SimpleRouteResult()
        result.candidates = [
            {"id": sid, "name": self.services[sid]["name"], "leika": self.services[sid].get("leika"),
             "score": float(n)} for n, sid in hits[:5]
        ]
        place = self.places.get((location or "").strip().casefold())
        if place is None:
            place = next((self.places[w] for w in words if w in self.places), None)
        result.location = dict(place) if place else None
        if not hits:
            result.reason = "no matching service" if text.strip() else "empty request"
            return result
        best, sid = hits[0]
        second = hits[1][0] if len(hits) > 1 else 0
        result.confidence = 100.0 * best / (best + second)
        service = self.services[sid]
        result.service = {"id": sid, "name": service["name"], "leika": service.get("leika")}
        result.authority = dict(service["authority"]) if service.get("authority") else None
        if second == best:
            result.reason = "two services match equally well"
        elif result.authority is None:
            result.reason = "no responsible authority known"
        else:
            result.needs_clarification = False
        return result


class NoRouter:
    """The router of a hub without a knowledge base: every case goes to an agent."""

    def route(self, text: str, location: str | None = None, *, service_id: str | None = None
              ) -> SimpleRouteResult:
        return SimpleRouteResult(reason="no knowledge base is loaded; an agent routes this case")


# -- the knowledge base's decisions, remembered ---------------------------------------------------------------


class RouteCache:
    """The routing decisions of one knowledge base for texts it has seen lately, shared by every caller.

    ``route(text, location, service_id=…)`` and ``resolve_place(location, text)`` answer exactly what the
    knowledge base answers for the same arguments (the arguments are the key, unchanged): a decision is a
    pure function of the text, the place and what the knowledge base knows. An SMS channel that looked a
    text up to answer it in its webhook and the routing stage that routes the same case afterwards (when the
    SMS could not be answered directly) ask once; a question many citizens send ("Personalausweis
    beantragen") is decided once.

    What the knowledge base knows changes in two ways, and both empty the cache before the next decision:
    a catalogue change applied to it (whoever applies one calls :func:`catalogue_changed`) and a new set of
    learned models (``kb.learning.models`` is swapped whole, so its identity tells). A decision is kept at
    most ``ttl`` seconds (a change applied without the call shows after that, and citizens' texts do not
    stay in memory), and at most ``size`` of them (the oldest go first). The decisions are shared: callers
    read them and never change them.
    """

    def __init__(self, kb: Any, *, size: int = 4096, ttl: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._kb = weakref.ref(kb)
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self.hits = 0
        self.misses = 0
        self._entries: dict[tuple, tuple[float, Any]] = {}
        self._models = self._models_of(kb)
        self._generation = 0
        self._lock = threading.Lock()

    @staticmethod
    def _models_of(kb: Any) -> Any:
        learning = getattr(kb, "learning", None)
        return getattr(learning, "models", None)

    @property
    def kb(self) -> Any:
        kb = self._kb()
        if kb is None:  # pragma: no cover - the cache lives as long as its knowledge base
            raise RuntimeError("the knowledge base of this cache is gone")
        return kb

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1

    def remember(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()``, kept under ``key`` like the decisions: for what a caller derives from them alone (and
        from the key), such as a channel's answer to a text on a given day. ``key[0]`` names the caller."""
        kb = self.kb
        now = self.clock()
        models = self._models_of(kb)
        if models is not self._models:  # the learned router changed: every decision may be another now
            with self._lock:
                self._entries.clear()
                self._generation += 1
                self._models = models
        found = self._entries.get(key)
        if found is not None and found[0] > now:
            self.hits += 1
            return found[1]
        self.misses += 1
        generation = self._generation
        value = compute()
        with self._lock:
            # Not kept when the knowledge base changed while it was computed (another thread's clear).
            if generation == self._generation and models is self._models_of(kb):
                entries = self._entries
                if len(entries) >= self.size:
                    for old in list(entries)[: max(1, self.size // 8)]:
                        del entries[old]
                entries[key] = (now + self.ttl, value)
        return value

    def route(self, text: str, location: str | None = None, *, service_id: str | None = None) -> Any:
        """``kb.route(text, location, service_id=service_id)``, remembered."""
        kb = self.kb
        if service_id is None:
            return self.remember(("route", text, location), lambda: kb.route(text, location))
        return self.remember(("route", text, location, service_id),
                         lambda: kb.route(text, location, service_id=service_id))

    def resolve_place(self, location: str | None, text: str = "") -> Any:
        """``kb.resolve_place(location, text)``, remembered."""
        kb = self.kb
        return self.remember(("place", location, text), lambda: kb.resolve_place(location, text))


_CACHES: weakref.WeakKeyDictionary[Any, RouteCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def route_cache(kb: Any) -> RouteCache:
    """The one :class:`RouteCache` of the knowledge base ``kb`` (made on first use)."""
    cache = _CACHES.get(kb)
    if cache is None:
        with _CACHES_LOCK:
            cache = _CACHES.get(kb)
            if cache is None:
                cache = _CACHES[kb] = RouteCache(kb)
    return cache


def catalogue_changed(kb: Any) -> None:
    """``kb``'s catalogue changed (services, offices, responsibilities): forget its remembered decisions.

    Called by whoever applies a change to a running knowledge base, once it is applied: what was decided
    while a large change was applied in slices is forgotten with the rest."""
    cache = _CACHES.get(kb)
    if cache is not None:
        cache.clear()


def _cached(router: Router) -> Router:
    """The knowledge base through its :class:`RouteCache`; any other router as it is (a test's router may
    answer differently each time)."""
    from knowledge.base import KnowledgeBase  # late: the knowledge base is heavy, tests route without it

    return route_cache(router) if isinstance(router, KnowledgeBase) else router


# Built once: the routing stage reads the texts of every batch it claims.
_CASE_TEXTS = (
    select(message_t.c.case_id, message_t.c.text, message_t.c.location)
    .where(message_t.c.case_id.in_(bindparam("case_ids", expanding=True)), message_t.c.direction == "in")
    .order_by(message_t.c.id)
)


def case_texts(conn: Connection, case_ids: list[int]) -> dict[int, tuple[str, str | None]]:
    """Per case: all inbound texts in order, joined, and the last place the citizen named."""
    parts: dict[int, list[tuple[str, str | None]]] = {}
    for case_id, text, location in conn.execute(_CASE_TEXTS, {"case_ids": list(case_ids)}):
        parts.setdefault(case_id, []).append((text, location))
    return {
        case_id: ("\n\n".join(t for t, _ in rows if t), next((loc for _, loc in reversed(rows) if loc), None))
        for case_id, rows in parts.items()
    }


def case_text(conn: Connection, case_id: int) -> tuple[str, str | None]:
    """All inbound texts of one case in order, joined, and the last place the citizen named."""
    return case_texts(conn, [case_id]).get(case_id, ("", None))


class RoutingStage:
    """Routes one claimed case: read, ask the router (outside any transaction), write the decision."""

    def __init__(
        self,
        engine: Engine,
        router: Router | Callable[[], Router | None] | None,
        *,
        min_confidence: float = 0.0,
        policy: SlaPolicy | None = None,
        observe: Callable[[float, datetime, str], None] | None = None,
    ) -> None:
        self.engine = engine
        self._router = router
        self.min_confidence = min_confidence
        self.policy = policy or SlaPolicy()
        self.observe = observe  # called with (router seconds, case created_at, new state)

    @property
    def router(self) -> Router:
        router = self._router
        if router is not None and not hasattr(router, "route") and callable(router):
            router = router()  # a late-bound router (the knowledge base loads after start-up)
        return _cached(router) if router is not None else NoRouter()

    def decide(self, result: RouteResultLike) -> tuple[str, dict[str, Any], str | None]:
        """The new state, the columns to write, and why (for the audit log)."""
        data = result.to_json()
        service, authority = data.get("service"), data.get("authority")
        confidence = float(getattr(result, "confidence", 0.0) or 0.0)
        values = {
            "service_id": service["id"] if service else None,
            "service_name": service["name"] if service else None,
            "authority_id": authority["id"] if authority else None,
            "authority_name": authority["name"] if authority else None,
            "route_confidence": confidence,
            "route_reason": data.get("reason"),
            "route_json": data,
            "routed_at": utcnow(),
        }
        # The audit log is append-only and survives `forget`: it gets fixed wording only. The router's
        # own reason can quote the citizen ("no place called '…' found") and stays in route_reason.
        if data.get("needs_clarification") or not service or not authority:
            return CaseState.NEEDS_CLARIFICATION, values, "the router asks for clarification"
        if confidence < self.min_confidence:
            return (CaseState.NEEDS_CLARIFICATION, values,
                    f"low confidence ({confidence:.0f} < {self.min_confidence:.0f})")
        return CaseState.ROUTED, values, f"routed with confidence {confidence:.0f}"

    def process_rows(
        self,
        rows: list[Mapping[str, Any]],
        actor: str = "router",
        *,
        conn: Connection | None = None,
        texts: Mapping[int, tuple[str, str | None]] | None = None,
    ) -> dict[int, str | None | Exception]:
        """Route the cases ``rows`` (as read) and write every decision in one transaction.

        Returns ``{case_id: new state}``; None for a case that was no longer new (nothing written), the
        exception for a case the router failed on (nothing written for it, the others are).
        ``conn`` (not in a transaction) and ``texts`` (from :func:`case_texts`) save round trips.
        """
        if conn is None:
            with self.engine.connect() as own:
                return self.process_rows(rows, actor, conn=own, texts=texts)
        outcome: dict[int, str | None | Exception] = {}
        todo = [r for r in rows if r["state"] == CaseState.NEW]
        for r in rows:
            if r["state"] != CaseState.NEW:
                outcome[r["id"]] = None
        if not todo:
            return outcome
        if texts is None:
            texts = case_texts(conn, [r["id"] for r in todo])
            conn.commit()
        decisions = []
        for row in todo:
            text, location = texts.get(row["id"], ("", None))
            started = time.perf_counter()
            try:
                named = row.get("requested_service_id")
                result = (self.router.route(text, row["location"] or location, service_id=named) if named
                          else self.router.route(text, row["location"] or location))
                decision = self.decide(result)
            except Exception as exc:  # one case the router cannot handle must not stop the others
                outcome[row["id"]] = exc
                continue
            decisions.append((row, decision, time.perf_counter() - started))
        moves = [(row, state, values, reason) for row, (state, values, reason), _ in decisions]
        try:
            with conn.begin():
                transition_many(conn, moves, actor=actor, policy=self.policy)
            for row, state, _values, _reason in moves:
                outcome[row["id"]] = str(state)
        except StaleState:  # an agent was faster with some case: write them one by one
            with conn.begin():
                for row, state, values, reason in moves:
                    done = try_transition(conn, row, state, actor=actor, reason=reason, policy=self.policy,
                                          values=values)
                    outcome[row["id"]] = str(state) if done is not None else None
        if self.observe is not None:
            for row, (state, _values, _reason), elapsed in decisions:
                if outcome[row["id"]] is not None:
                    self.observe(elapsed, row["created_at"], str(state))
        return outcome
