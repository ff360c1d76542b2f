"""The knowledge base's remembered routing decisions (``hub.queue.routing.RouteCache``).

A remembered decision is the knowledge base's own for the same arguments; a catalogue change applied to it,
a new set of learned models and the age limit each make the next decision a fresh one.
"""

from __future__ import annotations

import threading

import pytest

from hub.queue.routing import RouteCache, RoutingStage, catalogue_changed, route_cache
from knowledge.base import KnowledgeBase

TEXT = "Personalausweis beantragen in Norderstedt"


@pytest.fixture(scope="module")
def own_kb(demo_engine):
    """A knowledge base of this module (the session's is shared; only the catalogue test changes its own)."""
    return KnowledgeBase.load(demo_engine)


def test_a_remembered_decision_is_the_knowledge_bases_own(own_kb):
    cache = RouteCache(own_kb)
    for text, place in ((TEXT, None), ("Hund anmelden", "Bad Segeberg"), ("xyz", None), ("", None)):
        first = cache.route(text, place)
        assert first.to_json() == own_kb.route(text, place).to_json()
        assert cache.route(text, place) is first  # asked again: not decided again
    assert cache.hits == 4 and cache.misses == 4
    place = cache.resolve_place(None, TEXT)
    assert place is cache.resolve_place(None, TEXT)
    assert place.match.ars == own_kb.resolve_place(None, TEXT).match.ars


def test_a_named_service_is_part_of_the_key(own_kb):
    cache = RouteCache(own_kb)
    by_text = cache.route(TEXT, None)
    other = next(s for s in own_kb.services.values() if s.id != by_text.service.id)
    named = cache.route(TEXT, None, service_id=other.id)
    assert named.service.id == other.id
    assert cache.route(TEXT, None).service.id == by_text.service.id


def test_a_catalogue_change_is_seen_by_the_next_decision(demo_engine):
    own_kb = KnowledgeBase.load(demo_engine)
    cache = route_cache(own_kb)
    assert route_cache(own_kb) is cache  # one cache per knowledge base, shared by the channel and routing
    before = cache.route(TEXT, None)
    assert before.service is not None
    for sid in [s.id for s in own_kb.services.values() if s.name == before.service.name]:
        own_kb.remove_service(sid)
    assert cache.route(TEXT, None) is before  # not told yet: the remembered decision
    catalogue_changed(own_kb)
    after = cache.route(TEXT, None)
    assert after.service is None or after.service.id != before.service.id
    assert after.to_json() == own_kb.route(TEXT, None).to_json()


def test_new_learned_models_make_every_decision_fresh(own_kb):
    cache = RouteCache(own_kb)
    first = cache.route(TEXT, None)
    own_kb.learning.replace({})  # a new dictionary of models, as training or a reload installs it
    again = cache.route(TEXT, None)
    assert again is not first and again.to_json() == first.to_json()
    assert cache.route(TEXT, None) is again


def test_decisions_are_kept_for_ttl_seconds_and_size_entries(own_kb):
    now = [0.0]
    cache = RouteCache(own_kb, size=8, ttl=10.0, clock=lambda: now[0])
    first = cache.route(TEXT, None)
    now[0] = 9.9
    assert cache.route(TEXT, None) is first
    now[0] = 10.1
    assert cache.route(TEXT, None) is not first
    for n in range(20):
        cache.remember(("test", n), lambda n=n: n)
    assert len(cache._entries) <= 8


def test_a_decision_made_while_the_catalogue_changed_is_not_kept(own_kb):
    cache = RouteCache(own_kb)
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return "decided with the old catalogue"

    worker = threading.Thread(target=cache.remember, args=(("slow",), slow))
    worker.start()
    started.wait(5)
    cache.clear()  # catalogue_changed() from another thread, meanwhile
    release.set()
    worker.join(5)
    assert cache.remember(("slow",), lambda: "fresh") == "fresh"


def test_the_routing_stage_routes_the_knowledge_base_through_its_cache(own_kb, demo_engine):
    stage = RoutingStage(demo_engine, lambda: own_kb)
    assert stage.router is route_cache(own_kb)

    class Counting:
        def route(self, text, location=None, *, service_id=None):
            raise AssertionError("not called")
    other = Counting()
    assert RoutingStage(demo_engine, other).router is other  # any other router is asked every time
