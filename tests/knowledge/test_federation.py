"""Issue 13: every place answered from its own catalogue (items 1-3); Zuständigkeiten as area lists with a
role, conflicts and the deletion guard (items 4 and 7, on SQLite and PostgreSQL).

The setting of the issue: ``init --demo`` (Land Schleswig-Holstein's texts, Kreis Segeberg and Kreis Soest
offices) with the real München (09162) and Berlin (11000) DLDB exports imported beside it.
"""

from __future__ import annotations

import pytest
from catalog_support import (  # noqa: F401  (fixtures: engine, region_index, regions_template)
    BARK,
    LEEZEN_AMT,
    NORDERSTEDT,
    SEGEBERG,
    TODESFELDE,
    engine_fixture,
    leistung,
    office,
    region_index_fixture,
    regions_template_fixture,
)
from federation_support import BERLIN_AREA, federated_db
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from hub.db import create_schema, make_engine
from knowledge.base import KnowledgeBase
from knowledge.federation import BUND, ServiceView
from knowledge.models import Authority, Region, Responsibility, Service
from knowledge.regions import RegionIndex
from knowledge.sync import (
    DeletionRefused,
    PayloadError,
    ZustaendigkeitConflict,
    apply_change_set,
    export_region,
    parse_changes,
    parse_snapshot,
)

MUENCHEN = "09162"


@pytest.fixture(scope="module")
def fed_kb(tmp_path_factory):
    url = federated_db(tmp_path_factory.mktemp("fed") / "fed.sqlite3")
    engine = make_engine(url)
    kb = KnowledgeBase.load(engine)
    engine.dispose()
    return kb


def test_wohnsitz_anmelden_in_bad_segeberg_is_schleswig_holsteins_text_and_office(fed_kb):
    route = fed_kb.route("Wohnsitz anmelden", "Bad Segeberg")
    assert route.service.owner_ars == "01" and route.service.id == "sh-wohnsitz-anmelden"
    assert route.authority is not None and route.authority.region_ars.startswith("01060")
    answer = fed_kb.lookup("Wohnsitz anmelden", "Bad Segeberg").answers[0]
    body = answer.to_json()["service"]
    assert body["catalogue"] == "01" and body["sources"]["fees"]["catalogue"] == "01"
    assert "München" not in body["fees"] + body["short_text"]


def test_wohnsitz_anmelden_in_berlin_is_berlins_or_says_honestly_there_is_none(fed_kb):
    route = fed_kb.route("Wohnsitz anmelden", "Berlin")
    if route.service is None:
        # Berlin's 2016 export has "Anmeldung einer Wohnung" without the word Wohnsitz and no LeiKa key.
        assert "kein in Berlin gültiger Katalog" in route.reason
    else:
        assert route.service.owner_ars == BERLIN_AREA
    for answer in fed_kb.lookup("Wohnsitz anmelden", "Berlin").answers:
        assert answer.service.owner_ars in (BERLIN_AREA, "11", BUND), answer.service.id
    top = fed_kb.lookup("Anmeldung einer Wohnung", "Berlin").answers[0]
    assert top.service.id == "ber-120686" and top.authority is not None
    assert top.authority.region_ars.startswith("11")


def test_hund_anmelden_in_muenchen_never_answers_with_berlin(fed_kb):
    route = fed_kb.route("Hund anmelden", "München")
    assert route.service is None or route.service.owner_ars == MUENCHEN
    if route.authority is not None:
        assert route.authority.region_ars.startswith(MUENCHEN)
    for answer in fed_kb.lookup("Hund anmelden", "München").answers:
        assert answer.service.owner_ars == MUENCHEN, answer.service.id
        assert answer.authority is None or answer.authority.region_ars.startswith(MUENCHEN)
    # In Berlin the same words find Berlin's service, with a Berlin office or an honest "none".
    berlin = fed_kb.route("Hund anmelden", "Berlin")
    assert berlin.service.id == "ber-121494"
    assert berlin.authority is None or berlin.authority.region_ars.startswith("11")


def test_personalausweis_in_muenchen_is_muenchens_text_and_office(fed_kb):
    route = fed_kb.route("Personalausweis beantragen", "München")
    assert route.service.owner_ars == MUENCHEN and route.service.leika == "99008001000000"
    assert route.authority is not None and route.authority.region_ars.startswith(MUENCHEN)
    # The same Leistung in Bad Segeberg: Schleswig-Holstein's text, a Segeberg office.
    sh = fed_kb.route("Personalausweis beantragen", "Bad Segeberg")
    assert sh.service.owner_ars == "01" and sh.service.leika == "99008001000000"
    assert sh.authority.region_ars.startswith("01060")


def test_without_a_place_one_row_per_leistung(fed_kb):
    for query in ("Wohnsitz anmelden", "Personalausweis", "Reisepass beantragen", "Führerschein"):
        answers = fed_kb.lookup(query, limit=10).answers
        keys = [a.service.leistung for a in answers]
        assert len(keys) == len(set(keys)), (query, [a.service.id for a in answers])
        assert all(a.authority is None for a in answers)
    listing = fed_kb.services_at()
    assert len({v.leistung for v in listing}) == len(listing) == len(fed_kb.federation)
    # München and Schleswig-Holstein share the Personalausweis: one row for both.
    assert sum(1 for v in listing if v.leika == "99008001000000") == 1


# -- the rule itself, on a small federation ----------------------------------------------------------------


@pytest.fixture(scope="module")
def small(region_index):
    """A Land text with every field, a Kreis text and a Gemeinde text of the same Leistung that leave gaps."""
    leika = "99999999999999"
    land = Service(id="land-x", leika=leika, name="Baumfällung genehmigen", owner_ars="01", level="kreis",
                   short_text="Landestext", fees="50 Euro", documents=["Lageplan"], processing_time="2 Wochen",
                   online_url="https://land.example/baum")
    kreis = Service(id="kreis-x", leika=leika, name="Baum fällen im Kreis", owner_ars="01060", level="kreis",
                    short_text="Kreistext", fees="40 Euro")
    gemeinde = Service(id="gem-x", leika=leika, name="Baumfällung in Todesfelde", owner_ars="010605053088",
                       level="gemeinde", short_text="Gemeindetext")
    alone = Service(id="alone", name="Baumschutzsatzung Auskunft", owner_ars="010605053088")
    office = Authority(id="a-gem", name="Amt Leezen", region_ars="010605053")
    return KnowledgeBase(region_index, [land, kreis, gemeinde, alone], [office], [])


def test_the_most_local_text_wins_and_gaps_fall_back_field_by_field(small):
    todesfelde = small.regions.get("010605053088")
    view = small.view_at(small.services["land-x"], todesfelde)
    assert isinstance(view, ServiceView)
    assert view.id == "gem-x" and view.name == "Baumfällung in Todesfelde" and view.short_text == "Gemeindetext"
    assert view.fees == "40 Euro" and view.sources["fees"] == ("01060", "kreis-x")
    assert view.documents == ["Lageplan"] and view.sources["documents"] == ("01", "land-x")
    assert view.online_url == "https://land.example/baum" and view.processing_time == "2 Wochen"
    # Next door (Bark, same Amt) there is no Gemeinde text: the Kreis text wins.
    bark = small.view_at(small.services["land-x"], small.regions.get("010605053007"))
    assert bark.id == "kreis-x" and bark.fees == "40 Euro" and bark.sources["fees"] == ("01060", "kreis-x")
    # Outside Kreis Segeberg (Kiel) only the Land's text.
    kiel = small.regions.resolve("Kiel").match
    assert small.view_at(small.services["land-x"], kiel).id == "land-x"
    # A text without LeiKa stands alone, in its area: Todesfelde has it, Bark does not.
    assert [a.service.id for a in small.lookup("Baumschutzsatzung", "010605053088").answers][:1] == ["alone"]
    assert "alone" not in [a.service.id for a in small.lookup("Baumschutzsatzung", "010605053007").answers]


def test_a_synced_text_is_visible_at_once_and_its_removal_falls_back(small):
    todesfelde = "010605053088"
    text = Service(id="gem-y", leika="99999999999998", name="Osterfeuer anmelden", owner_ars=todesfelde)
    small.apply_service(text)
    assert small.lookup("Osterfeuer anmelden", todesfelde).answers[0].service.id == "gem-y"
    assert not small.lookup("Osterfeuer anmelden", "010605053007").answers
    small.remove_service("gem-y")
    assert not small.lookup("Osterfeuer anmelden", todesfelde).answers
    # Changing the Gemeinde's text in place: the new name is found, the old one is not.
    renamed = Service(id="gem-x", leika="99999999999999", name="Gehölz entfernen", owner_ars=todesfelde)
    old = small.services["gem-x"]
    small.apply_service(renamed)
    try:
        assert small.lookup("Gehölz entfernen", todesfelde).answers[0].service.id == "gem-x"
    finally:
        small.apply_service(old)


QUERIES = ["Wohnsitz anmelden", "Hund anmelden", "Personalausweis beantragen", "Reisepass", "Gewerbe anmelden",
           "Führerschein", "Baugenehmigung", "Kfz zulassen", "Geburtsurkunde", "Sperrmüll"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_place_never_gets_a_description_from_outside_its_chain(fed_kb, data):
    places = _places(fed_kb.regions)
    ars = data.draw(st.sampled_from(places))
    query = data.draw(st.sampled_from(QUERIES))
    region = fed_kb.regions.get(ars)
    chain = fed_kb.chain_areas(region)
    result = fed_kb.lookup(query, ars)
    for answer in result.answers:
        for text in answer.service.texts:
            assert any(a in chain for a in fed_kb.federation.areas_of(text)), (ars, query, text.id)
        for owner, _sid in answer.service.sources.values():
            assert owner in chain or any(owner in fed_kb.federation.lent and a in chain
                                         for a in fed_kb.federation.lent[owner])
    route = fed_kb.route(query, ars)
    if route.service is not None:
        assert any(a in chain for t in route.service.texts for a in fed_kb.federation.areas_of(t))


def _places(regions: RegionIndex) -> list[str]:
    # Places in and out of every catalogue: Segeberg, Soest, München, Berlin, Hamburg, Kiel, and more.
    picked = ["010605053088", "010600005005", "059740028028", "091620000000", "110000000000", "020000000000"]
    others = sorted(r.ars for r in regions if r.level == "gemeinde")[::700]
    return picked + others


def test_the_catalogue_listing_of_a_place_is_its_own(fed_kb):
    # KnowledgeBase.services_at is what Open311 GET services lists (with jurisdiction_id: the place's view).
    muenchen = fed_kb.services_at("091620000000")
    assert muenchen and all(v.owner_ars == MUENCHEN for v in muenchen)
    segeberg = fed_kb.services_at("010600005005")
    assert segeberg and {v.owner_ars for v in segeberg} == {"01"}
    keys = [v.leistung for v in segeberg]
    assert len(keys) == len(set(keys))


def test_the_answer_says_in_words_which_catalogue_each_part_came_from(small):
    body = small.lookup("Baumfällung", "010605053088").answers[0].to_json()["service"]
    assert body["id"] == "gem-x" and body["catalogue"] == "010605053088"
    assert body["sources"]["fees"] == {"catalogue": "01060", "id": "kreis-x"}
    assert body["origin"].startswith("Katalog Todesfelde")
    assert "Gebühren: Katalog Kreis Segeberg" in body["origin"] and "Unterlagen: Katalog Schleswig-Holstein" in body["origin"]


# -- Zuständigkeiten as area lists, conflicts, the deletion guard (items 4 and 7) ------------------------

LEIKA = "99036020001000"  # Kfz-Neuzulassung


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request):
    if request.param == "sqlite":
        yield request.getfixturevalue("engine")
        return
    engine = make_engine(request.getfixturevalue("postgres_url"))
    create_schema(engine)
    rows = [
        ("01", "Schleswig-Holstein", "land", None),
        (SEGEBERG, "Segeberg", "kreis", "01"),
        (LEEZEN_AMT, "Leezen", "amt", SEGEBERG),
        (TODESFELDE, "Todesfelde", "gemeinde", LEEZEN_AMT),
        (BARK, "Bark", "gemeinde", LEEZEN_AMT),
        ("010605053062", "Neversdorf", "gemeinde", LEEZEN_AMT),
        (NORDERSTEDT, "Norderstedt, Stadt", "gemeinde", SEGEBERG),
    ]
    with engine.begin() as conn:
        conn.execute(
            insert(Region.__table__),
            [{"ars": a, "name": n, "level": lv, "kind": "", "parent_ars": p} for a, n, lv, p in rows],
        )
    yield engine
    engine.dispose()


def snap(engine, region, body, **kw):
    return apply_change_set(engine, region, parse_snapshot(body), actor="test", **kw)


def change(engine, region, body, **kw):
    return apply_change_set(engine, region, parse_changes(body), actor="test", **kw)


def kreis_body() -> dict:
    return {
        "leistung": [leistung("se-kfz", "Fahrzeug zulassen", leika=LEIKA, ebene="kreis")],
        "organisationseinheit": [
            office("se-kv", "Kreisverwaltung Segeberg", SEGEBERG),
            office("se-aussen", "Zulassungsstelle Außenstelle Leezen", LEEZEN_AMT),
            office("se-info", "Bürgertelefon des Kreises", SEGEBERG),
        ],
        "zustaendigkeit": [
            {"ebene": "kreis", "gebiet_ars": SEGEBERG, "organisationseinheit_id": "se-kv"},
            # The county's branch office for part of the county: one object, a list of areas.
            {"leistung_id": "se-kfz", "gebiete": [TODESFELDE, BARK], "organisationseinheit_id": "se-aussen"},
            {"ebene": "kreis", "gebiete": [SEGEBERG], "organisationseinheit_id": "se-info", "rolle": "ansprechpunkt"},
        ],
    }


def kb_of(engine) -> KnowledgeBase:
    return KnowledgeBase.load(engine)


def test_an_area_list_is_stored_per_area_routed_most_specific_first_and_reads_back(db):
    result = snap(db, SEGEBERG, kreis_body())
    assert result.plan.summary()["zustaendigkeit"]["added"] == 4  # 1 + 2 areas + 1 contact point
    with db.connect() as conn:
        rows = conn.execute(
            select(Responsibility.region_ars, Responsibility.authority_id, Responsibility.role)
            .where(Responsibility.owner_ars == SEGEBERG)
            .order_by(Responsibility.region_ars, Responsibility.authority_id)
        ).all()
    assert (TODESFELDE, "se-aussen", "zustaendig") in rows and (BARK, "se-aussen", "zustaendig") in rows
    assert (SEGEBERG, "se-info", "ansprechpunkt") in rows
    kb = kb_of(db)
    todesfelde = kb.route("Fahrzeug zulassen", TODESFELDE)
    assert todesfelde.authority.id == "se-aussen"  # the most specific area wins
    assert kb.route("Fahrzeug zulassen", NORDERSTEDT).authority.id == "se-kv"  # the level mark, Kreis-wide
    # The contact point is never routed to, but it is known.
    view = kb.view_at(kb.services["se-kfz"], kb.regions.get(TODESFELDE))
    assert kb.responsibility.contact_points([view.id], "kreis", kb.regions.chain(TODESFELDE)) == ["se-info"]
    # Reading the catalogue back and sending it again changes nothing.
    with db.connect() as conn:
        exported = export_region(conn, SEGEBERG)
    assert {"ebene": "kreis", "gebiet_ars": SEGEBERG, "organisationseinheit_id": "se-info",
            "rolle": "ansprechpunkt"} in exported["zustaendigkeit"]
    assert snap(db, SEGEBERG, exported).applied is False
    # Deleting by the area list removes both rows.
    change(db, SEGEBERG, {"delete": {"zustaendigkeit": [
        {"leistung_id": "se-kfz", "gebiete": [TODESFELDE, BARK], "organisationseinheit_id": "se-aussen"}]}})
    assert kb_of(db).route("Fahrzeug zulassen", TODESFELDE).authority.id == "se-kv"


def test_equal_specificity_with_another_office_is_a_conflict_the_sync_refuses(db):
    snap(db, SEGEBERG, kreis_body())
    amt = {
        "organisationseinheit": [office("amt-leezen", "Amt Leezen", LEEZEN_AMT)],
        "zustaendigkeit": [
            {"leistung_id": "se-kfz", "gebiete": [TODESFELDE], "organisationseinheit_id": "amt-leezen"}
        ],
    }
    with pytest.raises(ZustaendigkeitConflict) as err:
        snap(db, LEEZEN_AMT, amt)
    assert err.value.status == 409
    message = str(err.value)
    assert TODESFELDE in message and "se-aussen" in message and SEGEBERG in message
    # Another text of the same Leistung (same LeiKa key) is the same Leistung: also a conflict.
    own = {
        "leistung": [leistung("amt-kfz", "Zulassung im Amt", leika=LEIKA, ebene="kreis")],
        "organisationseinheit": amt["organisationseinheit"],
        "zustaendigkeit": [{"leistung_id": "amt-kfz", "gebiet_ars": BARK, "organisationseinheit_id": "amt-leezen"}],
    }
    with pytest.raises(ZustaendigkeitConflict, match=BARK):
        snap(db, LEEZEN_AMT, own)
    # A more specific or a different area is no conflict: the Amt takes its third member municipality.
    own["zustaendigkeit"] = [
        {"leistung_id": "amt-kfz", "gebiet_ars": "010605053062", "organisationseinheit_id": "amt-leezen"}
    ]
    assert snap(db, LEEZEN_AMT, own).applied
    kb = kb_of(db)
    assert kb.route("Fahrzeug zulassen", "010605053062").authority.id == "amt-leezen"
    assert kb.route("Fahrzeug zulassen", TODESFELDE).authority.id == "se-aussen"
    # With partial the conflicting object is left out and named, the rest is written.
    part = change(db, LEEZEN_AMT, {"write": {"zustaendigkeit": [
        {"leistung_id": "amt-kfz", "gebiet_ars": TODESFELDE, "organisationseinheit_id": "amt-leezen"},
        {"ebene": "amt", "gebiet_ars": LEEZEN_AMT, "organisationseinheit_id": "amt-leezen"},
    ]}}, partial=True)
    assert part.applied and len(part.plan.errors) == 1 and "se-aussen" in part.plan.errors[0].message


def test_a_snapshot_deleting_more_than_the_allowed_share_is_refused_unless_forced(db):
    body = {"leistung": [leistung(f"se-{i}", f"Leistung {i}", ebene="kreis") for i in range(10)]}
    snap(db, SEGEBERG, body)
    smaller = {"leistung": body["leistung"][:7]}
    with pytest.raises(DeletionRefused) as err:
        snap(db, SEGEBERG, smaller)
    assert err.value.status == 409 and err.value.would_delete == {"leistung": ["se-7", "se-8", "se-9"]}
    assert "3 of the 10" in str(err.value) and "30%" in str(err.value) and "force" in str(err.value)
    kb = kb_of(db)
    assert "se-9" in kb.services  # nothing changed
    # A dry run still shows the diff; 10 % passes; the configured share and force are honoured.
    assert snap(db, SEGEBERG, smaller, dry_run=True).plan.diff()["removed"]["leistung"] == ["se-7", "se-8", "se-9"]
    assert snap(db, SEGEBERG, smaller, max_delete_share=0.5).applied
    assert snap(db, SEGEBERG, {"leistung": body["leistung"][:6]}).applied  # 1 of 7
    with pytest.raises(DeletionRefused):
        snap(db, SEGEBERG, {"leistung": []})
    assert snap(db, SEGEBERG, {"leistung": []}, force=True).applied


def test_area_list_and_role_are_validated():
    bad = [
        {"leistung_id": "x", "organisationseinheit_id": "o"},  # no area
        {"leistung_id": "x", "gebiet_ars": SEGEBERG, "gebiete": [SEGEBERG], "organisationseinheit_id": "o"},
        {"leistung_id": "x", "gebiete": [], "organisationseinheit_id": "o"},
        {"leistung_id": "x", "gebiete": ["0106"], "organisationseinheit_id": "o"},
        {"leistung_id": "x", "gebiete": SEGEBERG, "organisationseinheit_id": "o"},
        {"leistung_id": "x", "gebiete": [SEGEBERG], "organisationseinheit_id": "o", "rolle": "chef"},
    ]
    for item in bad:
        cs = parse_snapshot({"zustaendigkeit": [item]})
        assert cs.errors and not cs.writes["zustaendigkeit"], item
    with pytest.raises(PayloadError):
        parse_changes({"write": {"zustaendigkeit": {"not": "a list"}}})


def test_the_csv_gives_an_office_an_area_list(engine):
    from knowledge.importers.csv_import import parse_csv_text
    from knowledge.importers.store import store_batch

    text = (
        "name;leika;level;authority_name;authority_areas\n"
        f"Fahrzeug zulassen;{LEIKA};kreis;Kreisverwaltung;\n"
        f"Fahrzeug zulassen;{LEIKA};kreis;Außenstelle Leezen;{TODESFELDE}|{BARK}\n"
    )
    batch = parse_csv_text(text, id_prefix="se", region_ars=SEGEBERG)
    result = store_batch(engine, batch, SEGEBERG)
    assert result.plan.summary()["zustaendigkeit"]["added"] == 3
    kb = KnowledgeBase.load(engine)
    assert kb.route("Fahrzeug zulassen", TODESFELDE).authority.name == "Außenstelle Leezen"
    with pytest.raises(ValueError, match="authority_areas"):
        parse_csv_text("name;authority_name;authority_areas\nA;Amt;0106\n", id_prefix="x", region_ars=SEGEBERG)
    with pytest.raises(ValueError, match="not inside region"):
        parse_csv_text("name;authority_name;authority_areas\nA;Amt;02000\n", id_prefix="x", region_ars=SEGEBERG)
