"""Issue 18: the office agents confirmed takes part in the clarification verdict and carries a level.

A real knowledge base (the 23-service defect catalogue in Kreis Segeberg, every German region) and a model
trained on the hand-written reports of tests/data/learning; no database.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from catalog_support import region_index_fixture, regions_template_fixture  # noqa: F401  (fixtures)

from knowledge.base import KnowledgeBase
from knowledge.importers.csv_import import parse_csv
from knowledge.learning import Example, fit
from knowledge.learning.router import catalogue_scorer, catalogue_texts
from knowledge.models import Authority, Responsibility

DATA = Path(__file__).resolve().parents[2] / "data" / "learning"
AREA = "01060"
BAD_SEGEBERG = "010600005005"
WAHLSTEDT = "010600090090"
LIGHT_REPORT = "Die Laterne vor Haus 3 im Eichenweg ist seit Tagen aus"
BAUHOF = Authority(id="bs-bauhof", name="Bauhof Bad Segeberg", region_ars=BAD_SEGEBERG)


def build(region_index, *, registered_light: bool, bauhof_level: str | None = None) -> tuple[KnowledgeBase, str]:
    """The defect catalogue; the street lights registered to the Tiefbauamt (or to nobody), and the
    Bauhof optionally registered for a level mark in Bad Segeberg. Returns the kb and the light's id."""
    batch = parse_csv(DATA / "defects_catalogue.csv", id_prefix="d", region_ars=AREA)
    light = next(s.id for s in batch.services if s.name == "Straßenbeleuchtung")
    links = [Responsibility(service_id=sid, region_ars=AREA, authority_id=aid, owner_ars=AREA)
             for sid, aid in batch.links if registered_light or sid != light]
    if bauhof_level:
        links.append(Responsibility(service_id=None, level=bauhof_level, region_ars=BAD_SEGEBERG,
                                    authority_id=BAUHOF.id, owner_ars=AREA))
    kb = KnowledgeBase(region_index, batch.services, [*batch.authorities, BAUHOF], links)
    by_name = {s.name: s.id for s in batch.services}
    rows = [json.loads(x) for x in (DATA / "defects.jsonl").read_text(encoding="utf-8").splitlines()]
    # Agents sent every street-light case in Bad Segeberg to the Bauhof.
    examples = [Example(i + 1, r["text"], by_name[r["service"]],
                        BAUHOF.id if r["service"] == "Straßenbeleuchtung" else None, BAD_SEGEBERG)
                for i, r in enumerate(rows)]
    model = fit(AREA, examples, catalogue_scorer(kb, AREA), catalogue_texts=catalogue_texts(kb.services.values(), AREA))
    assert model is not None
    kb.learning.put(model)
    return kb, light


@pytest.fixture(scope="module")
def unregistered(region_index):  # noqa: F811
    return build(region_index, registered_light=False)


def test_a_request_flagged_only_for_a_missing_office_passes_when_agents_confirmed_one(unregistered):
    kb, light = unregistered
    saved = kb.learning.models
    kb.learning.replace({})
    plain = kb.route(LIGHT_REPORT, "Bad Segeberg")
    kb.learning.replace(saved)
    assert plain.service.id == light and plain.authority is None
    assert plain.needs_clarification and "Bad Segeberg" in plain.reason  # nobody is registered for it there

    routed = kb.route(LIGHT_REPORT, "Bad Segeberg")
    assert routed.service.id == light and routed.learned_area == AREA
    assert routed.authority.id == BAUHOF.id and routed.authority_source == "learned"
    assert not routed.needs_clarification and routed.reason is None
    # Not registered anywhere: the level of the office's own region.
    assert routed.authority_level == "gemeinde"
    assert routed.to_json()["authority"] == {"id": BAUHOF.id, "name": BAUHOF.name, "level": "gemeinde"}


def test_where_no_agent_confirmed_an_office_the_missing_office_is_still_flagged(unregistered):
    kb, light = unregistered
    elsewhere = kb.route(LIGHT_REPORT, "Wahlstedt")  # the cases were all in Bad Segeberg
    assert elsewhere.learned_area == AREA and elsewhere.service.id == light
    assert elsewhere.authority is None and elsewhere.needs_clarification


def test_a_learned_office_that_replaces_the_catalogues_carries_the_level_of_its_registration(region_index):  # noqa: F811
    kb, light = build(region_index, registered_light=True, bauhof_level="amt")
    routed = kb.route(LIGHT_REPORT, "Bad Segeberg")
    assert routed.service.id == light
    assert routed.authority.id == BAUHOF.id and routed.authority_source == "learned"
    assert routed.authority_level == "amt"  # its own registration in Bad Segeberg, not its region's level
    assert not routed.needs_clarification
    saved = kb.learning.models
    kb.learning.replace({})
    plain = kb.route(LIGHT_REPORT, "Bad Segeberg")
    kb.learning.replace(saved)
    assert plain.authority.name == "Tiefbauamt" and plain.authority_source is None
    assert plain.authority_level == "kreis"  # the catalogue's: its registration for the whole Kreis
