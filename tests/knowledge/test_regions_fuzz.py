"""Property tests of place resolution (``knowledge/regions.py``: ``RegionIndex.resolve`` for the location a
citizen or agent types, ``find_in_text`` for a place named in a request's text) over every German region:
any string gives a PlaceResolution that is consistent — one match, or candidates and a reason — never an
exception; and the routing that uses it (``KnowledgeBase.route``) answers too."""

from __future__ import annotations

from hypothesis import given
from strategies import FUZZ, hostile_text, place_strings

from knowledge.regions import PlaceResolution


def _consistent(res: PlaceResolution | None, allow_none: bool = False) -> None:
    if res is None:
        assert allow_none
        return
    assert isinstance(res, PlaceResolution)
    if res.match is not None:
        assert res.match.ars
    else:
        assert res.reason, "no place was chosen and nothing says why"
    assert all(0 <= score <= 100 for _, score in res.candidates)
    if res.ambiguous:
        assert res.match is None and len(res.candidates) > 1


@FUZZ
@given(text=place_strings())
def test_any_location_resolves_to_one_place_or_says_why_not(kb, text):
    _consistent(kb.regions.resolve(text))
    _consistent(kb.regions.resolve(text, home_region="05974"))


@FUZZ
@given(text=hostile_text(2000))
def test_any_request_text_finds_a_place_or_none(kb, text):
    _consistent(kb.regions.find_in_text(text), allow_none=True)


@FUZZ
@given(text=hostile_text(300), location=place_strings())
def test_routing_answers_any_text_and_location(kb, text, location):
    result = kb.route(text, location)
    assert result.needs_clarification or result.service is not None
    assert result.to_json()["needs_clarification"] == result.needs_clarification
