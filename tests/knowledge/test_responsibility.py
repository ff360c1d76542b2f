"""The responsibility walk: overrides first (most local wins), then the level mark up the region chain."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from knowledge.models import Responsibility
from knowledge.responsibility import ResponsibilityIndex


@dataclass(frozen=True)
class R:
    ars: str
    level: str
    display_name: str


TODESFELDE = [
    R("010605053088", "gemeinde", "Todesfelde"),
    R("010605053", "amt", "Amt Leezen"),
    R("01060", "kreis", "Segeberg"),
    R("01", "land", "Schleswig-Holstein"),
]
NORDERSTEDT = [
    R("010600063063", "gemeinde", "Norderstedt"),
    R("01060", "kreis", "Segeberg"),
    R("01", "land", "Schleswig-Holstein"),
]


def level(region, lvl, authority):
    return Responsibility(service_id=None, region_ars=region, level=lvl, authority_id=authority)


def override(service, region, authority):
    return Responsibility(service_id=service, region_ars=region, authority_id=authority)


@pytest.fixture()
def index():
    return ResponsibilityIndex(
        [
            level("01060", "kreis", "kreis-segeberg"),
            level("010605053", "amt", "amt-leezen"),
            level("010605053", "gemeinde", "amt-leezen"),
            level("010600063063", "amt", "stadt-norderstedt"),
            level("01", "land", "lfsd-sh"),
            override("baugenehmigung", "010600063063", "bauaufsicht-norderstedt"),
        ]
    )


def test_level_mark_walks_up_to_the_amt(index):
    r = index.resolve("meldebescheinigung", "amt", TODESFELDE)
    assert (r.authority_id, r.via, r.region_ars) == ("amt-leezen", "level", "010605053")


def test_level_mark_walks_up_to_the_kreis_and_land(index):
    assert index.resolve("zulassung", "kreis", TODESFELDE).authority_id == "kreis-segeberg"
    assert index.resolve("elterngeld", "land", TODESFELDE).authority_id == "lfsd-sh"


def test_amt_free_town_does_amt_services_itself(index):
    assert index.resolve("meldebescheinigung", "amt", NORDERSTEDT).authority_id == "stadt-norderstedt"


def test_override_beats_the_level_mark_only_where_it_applies(index):
    r = index.resolve("baugenehmigung", "kreis", NORDERSTEDT)
    assert (r.authority_id, r.via) == ("bauaufsicht-norderstedt", "override")
    assert index.resolve("baugenehmigung", "kreis", TODESFELDE).authority_id == "kreis-segeberg"


def test_most_local_override_wins(index):
    index.add(override("baugenehmigung", "01060", "kreis-bauamt"))
    assert index.resolve("baugenehmigung", "kreis", NORDERSTEDT).authority_id == "bauaufsicht-norderstedt"
    assert index.resolve("baugenehmigung", "kreis", TODESFELDE).authority_id == "kreis-bauamt"


def test_nothing_registered_is_said_explicitly(index):
    r = index.resolve("meldebescheinigung", "gemeinde", NORDERSTEDT)
    assert r.authority_id is None and r.via == "none"
    assert "keine Stelle eingetragen" in r.reason and "Norderstedt" in r.reason
    assert index.resolve("x", "amt", []).reason == "kein Ort angegeben"


def test_incremental_discard_is_idempotent(index):
    row = override("baugenehmigung", "010600063063", "bauaufsicht-norderstedt")
    index.discard(row)
    index.discard(row)
    assert index.resolve("baugenehmigung", "kreis", NORDERSTEDT).authority_id == "kreis-segeberg"


def test_level_registration_needs_a_valid_level():
    with pytest.raises(ValueError, match="needs a level"):
        ResponsibilityIndex([level("01060", "bezirk", "x")])


BUERGERBUERO_ROWS = [
    *(override(f"svc-{i}", "09162", "bb-ruppertstr") for i in range(5)),
    *(override(f"svc-{i}", "09162", "bb-pasing") for i in range(4)),
    override("svc-0", "09162", "bb-ausbildung"),
]
MUENCHEN_CHAIN = [R("091620000000", "gemeinde", "München"), R("09162", "kreis", "München"), R("09", "land", "Bayern")]


@pytest.mark.parametrize("order", [1, -1])
def test_several_locations_of_one_key_are_kept_and_chosen_the_same_whatever_the_order(order):
    index = ResponsibilityIndex(BUERGERBUERO_ROWS[::order])
    r = index.resolve("svc-0", "gemeinde", MUENCHEN_CHAIN)
    # The location that does the most services of its catalogue first, the others listed.
    assert r.authority_id == "bb-ruppertstr" and r.via == "override"
    assert r.alternatives == ("bb-pasing", "bb-ausbildung")
    assert index.resolve("svc-4", "gemeinde", MUENCHEN_CHAIN).alternatives == ()


def test_removing_one_location_leaves_the_others_responsible():
    index = ResponsibilityIndex(BUERGERBUERO_ROWS)
    index.discard(override("svc-0", "09162", "bb-ruppertstr"))
    index.discard(override("svc-0", "09162", "bb-ruppertstr"))  # idempotent: the weights count it once
    r = index.resolve("svc-0", "gemeinde", MUENCHEN_CHAIN)
    assert (r.authority_id, r.alternatives) == ("bb-pasing", ("bb-ausbildung",))
    index.discard(override("svc-0", "09162", "bb-pasing"))
    assert index.resolve("svc-0", "gemeinde", MUENCHEN_CHAIN).authority_id == "bb-ausbildung"
    index.discard(override("svc-0", "09162", "bb-ausbildung"))
    assert index.resolve("svc-0", "gemeinde", MUENCHEN_CHAIN).authority_id is None
    # Adding a row twice (an unchanged row synced again) registers it once.
    index.add(override("svc-1", "09162", "bb-pasing"))
    assert len(index) == 7


def test_several_offices_for_one_level_are_locations_too():
    index = ResponsibilityIndex([level("01060", "kreis", "kreis-a"), level("01060", "kreis", "kreis-b"),
                                 override("x", "01060", "kreis-b")])
    r = index.resolve("zulassung", "kreis", TODESFELDE)
    assert (r.authority_id, r.alternatives) == ("kreis-b", ("kreis-a",))
