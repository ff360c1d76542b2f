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
def fed_url(tmp_path_factory):
    return federated_db(tmp_path_factory.mktemp("fed") / "fed.sqlite3")


@pytest.fixture(scope="module")
def fed_kb(fed_url):
    engine = make_engine(fed_url)
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


def test_wohnsitz_anmelden_in_berlin_is_berlins_own_text_with_a_berlin_office(fed_kb):
    # Berlin's 2016 export has "Anmeldung einer Wohnung" without the word Wohnsitz and no LeiKa key: it
    # joins the keyed Leistung of that name (Schleswig-Holstein's "Anmeldung einer Wohnung (Wohnsitz an- und
    # ummelden)") and is found by its words; the text shown stays Berlin's.
    for text in ("Wohnsitz anmelden", "Wohnsitz ummelden", "Wohnsitzanmeldung"):
        route = fed_kb.route(text, "Berlin")
        assert route.service is not None and route.service.id == "ber-120686", (text, route.reason)
        assert route.service.owner_ars == BERLIN_AREA and route.service.name == "Anmeldung einer Wohnung"
        assert route.authority is not None and route.authority.region_ars.startswith("11"), text
        assert not route.needs_clarification, (text, route.reason)
    assert fed_kb.federation.leistung_of("ber-120686") == "leika:99115005000000"
    # "Ummelden" alone is several services everywhere (Wohnsitz, Gewerbe, Fahrzeug): asked about, as in
    # München, and every candidate in Berlin is a Berlin text.
    ummelden = fed_kb.route("Ummelden", "Berlin")
    assert "ber-120686" in [s.id for s, _score in ummelden.candidates]
    assert all(s.owner_ars == BERLIN_AREA for s, _score in ummelden.candidates)
    assert ummelden.needs_clarification == fed_kb.route("Ummelden", "München").needs_clarification
    for answer in fed_kb.lookup("Wohnsitz anmelden", "Berlin").answers:
        assert answer.service.owner_ars in (BERLIN_AREA, "11", BUND), answer.service.id
    top = fed_kb.lookup("Anmeldung einer Wohnung", "Berlin").answers[0]
    assert top.service.id == "ber-120686" and top.authority is not None
    assert top.authority.region_ars.startswith("11")


def test_one_function_shows_a_chosen_service_as_the_place_sees_it_at_every_call_site(fed_kb):
    """KnowledgeBase.view_at: an SMS/phone answer, a paper form, the case API, Open311 and the console card
    show the same text and fees as the lookup at that place."""
    from datetime import datetime

    from channels.open311.api import attributes
    from channels.paper.forms.spec import form_spec
    from channels.twilio.answer import direct_answer
    from hub.console.pages import resolve_answer
    from knowledge.base import service_json

    looked = fed_kb.lookup("Personalausweis beantragen", "München").answers[0]
    card = looked.to_json()["service"]
    assert card["catalogue"] == MUENCHEN
    # The SMS/phone answer: the routed answer's id and place, through view_at (channels/twilio call sites).
    answer = direct_answer(fed_kb.route("Personalausweis beantragen", "München"), datetime(2026, 12, 2, 10))
    assert answer is not None and answer.place
    assert service_json(fed_kb.view_at(answer.service_id, answer.place)) == card
    # Chosen by any text of the Leistung (here Schleswig-Holstein's), a München case sees München's.
    sh_id = next(s.id for s in fed_kb.services.values() if s.leika == "99008001000000" and s.owner_ars == "01")
    assert service_json(fed_kb.view_at(sh_id, "München")) == card
    console_card, office = resolve_answer(fed_kb, sh_id, "München", None)
    assert console_card == card and office["region_ars"].startswith(MUENCHEN)
    # The paper form of a München case: München's documents and a München office.
    case = {"id": 7, "token": "T", "location": "München", "service_id": sh_id}
    spec = form_spec(fed_kb, sh_id, None, case)
    assert spec.service_id == card["id"] and spec.service_name == card["name"]
    assert list(spec.documents) == card["documents"] and spec.office.name
    # Open311: the service definition at the jurisdiction München carries München's fees.
    muc = fed_kb.regions.get("091620000000")
    attrs = {a["code"]: a["description"] for a in attributes(fed_kb.view_at(sh_id, muc))}
    if card["fees"]:
        assert card["fees"] in attrs["fees"]
    # The same id in Bad Segeberg: Schleswig-Holstein's text; without a place: the text's own catalogue.
    assert fed_kb.view_at(sh_id, "Bad Segeberg").owner_ars == "01"
    own = fed_kb.view_at(sh_id)
    assert own.id == sh_id and own.origin.startswith("Katalog Schleswig-Holstein")
    assert fed_kb.view_at("no-such-id", "München") is None


def test_hund_anmelden_in_muenchen_never_answers_with_berlin(fed_kb):
    route = fed_kb.route("Hund anmelden", "München")
    assert route.service is None or route.service.owner_ars == MUENCHEN
    # München's catalogue has no dog registration: whatever it answers explains "anmelden" only, so an agent
    # is asked rather than the caller told about the Wohnsitzanmeldung.
    assert route.needs_clarification and "Hund" not in (route.service.name if route.service else "Hund")
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


# -- unkeyed descriptions join their Leistung by name (issue 13, Berlin 2016) -------------------------------


def _join_kb(region_index, *texts):
    return KnowledgeBase(region_index, list(texts), [], [])


def test_an_unkeyed_text_joins_the_one_keyed_leistung_of_its_name_and_keeps_its_own_text(region_index):
    land = Service(id="land-b", leika="99999999999997", name="Baumfällung genehmigen (Baumschutz)",
                   synonyms=["Baum fällen"], owner_ars="01", fees="50 Euro", short_text="Landestext")
    gem = Service(id="gem-b", name="Baumfällung genehmigen", owner_ars="010605053088", short_text="Gemeindetext")
    kb = _join_kb(region_index, gem, land)  # the unkeyed text first: the join follows when the key arrives
    assert kb.federation.leistung_of("gem-b") == "leika:99999999999997"
    top = kb.lookup("Baum fällen", "010605053088").answers[0].service
    assert top.id == "gem-b" and top.short_text == "Gemeindetext"  # its own text
    assert top.fees == "50 Euro" and top.sources["fees"] == ("01", "land-b")  # the Leistung's gap filling
    # Next door (Bark) only the Land's text: the Gemeinde's text never leaves its area.
    assert kb.lookup("Baum fällen", "010605053007").answers[0].service.id == "land-b"


def test_an_ambiguous_or_different_name_stays_alone_and_the_join_follows_changes(region_index):
    a = Service(id="land-a", leika="99999999999996", name="Sondernutzung Straße", owner_ars="01")
    b = Service(id="kreis-a", leika="99999999999995", name="Straße Sondernutzung", owner_ars="01060")
    alone = Service(id="gem-a", name="Sondernutzung der Straße", owner_ars="010605053088")
    other = Service(id="gem-c", name="Sondernutzung für Cafés", owner_ars="010605053088")
    kb = _join_kb(region_index, a, b, alone, other)
    assert kb.federation.leistung_of("gem-a") == "id:gem-a"  # two keyed Leistungen have this name
    assert kb.federation.leistung_of("gem-c") == "id:gem-c"  # no keyed Leistung has this name
    kb.remove_service("kreis-a")  # now the name is unambiguous: the text joins
    assert kb.federation.leistung_of("gem-a") == "leika:99999999999996"
    kb.apply_service(b)  # and leaves again when a second Leistung takes the name
    assert kb.federation.leistung_of("gem-a") == "id:gem-a"
    # A keyed text of its own catalogue only is no Leistung to join ("in another catalogue").
    same = Service(id="gem-k", leika="99999999999994", name="Osterfeuer anmelden", owner_ars="010605053088")
    own = Service(id="gem-o", name="Osterfeuer anmelden", owner_ars="010605053088")
    kb = _join_kb(region_index, same, own)
    assert kb.federation.leistung_of("gem-o") == "id:gem-o"
    # A qualifier in the unkeyed name's brackets is part of its name: "(vorläufig)" is another service.
    land = Service(id="land-p", leika="99999999999993", name="Reisepass", owner_ars="01")
    temp = Service(id="gem-p", name="Reisepass (vorläufig)", owner_ars="010605053088")
    assert _join_kb(region_index, land, temp).federation.leistung_of("gem-p") == "id:gem-p"


NAMES = ["Hund anmelden", "Anmeldung Hund", "Hund anmelden (Steuer)", "Gewerbe anmelden", "Gewerbe-Anmeldung",
         "Baum fällen", "Fällen Baum (Genehmigung)"]
OWNERS = ["01", "01060", "010605053088", "010605053007", "09162"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(OWNERS),
                               st.sampled_from([None, "99999999999901", "99999999999902"])), min_size=1, max_size=8),
       drop=st.integers(0, 7))
def test_the_join_by_name_is_the_rule_whatever_the_order_of_changes(region_index, rows, drop):
    from knowledge.federation import name_key

    texts = [Service(id=f"t{i}", name=n, owner_ars=o, leika=k) for i, (n, o, k) in enumerate(rows)]
    kb = _join_kb(region_index, *texts)
    if drop < len(texts):  # an incremental change gives what a fresh build gives
        kb.remove_service(texts[drop].id)
        texts = texts[:drop] + texts[drop + 1:]
    fresh = _join_kb(region_index, *texts)
    for t in texts:
        assert kb.federation.leistung_of(t.id) == fresh.federation.leistung_of(t.id)
        if t.leika:
            assert kb.federation.leistung_of(t.id) == f"leika:{t.leika}"
            continue
        whole = name_key(t.name)
        named = [k for k in texts if k.leika and whole in (name_key(k.name), name_key(k.name, brackets=False))]
        keyed = {k.leika for k in named}
        others = [k for k in named if k.owner_ars != t.owner_ars]  # the name is used in another catalogue
        expect = f"leika:{keyed.pop()}" if len(keyed) == 1 and others else f"id:{t.id}"
        assert kb.federation.leistung_of(t.id) == expect, (t.name, t.owner_ars)
    # Whatever joined, a place sees only texts valid on its chain.
    for ars in ("010605053088", "010605053007", "091620000000"):
        chain = kb.chain_areas(kb.regions.get(ars))
        for answer in kb.lookup("Hund anmelden", ars).answers + kb.lookup("Baum fällen", ars).answers:
            assert all(x.owner_ars in chain for x in answer.service.texts)



def test_a_city_with_several_locations_answers_with_its_main_one_and_lists_the_others(fed_kb, fed_url):
    # München does "Wohnsitzanmeldung" at seven Bürgerbüros, one of them a training desk with three services.
    engine = make_engine(fed_url)
    with engine.connect() as conn:
        rows = conn.execute(select(Responsibility.service_id, Responsibility.authority_id)
                            .where(Responsibility.region_ars == MUENCHEN)).all()
    engine.dispose()
    route = fed_kb.route("Wohnsitzanmeldung", "München")
    offices = {a for s, a in rows if s == route.service.id}
    assert len(offices) > 2
    weight = {a: sum(1 for _, b in rows if b == a) for a in offices}
    assert weight[route.authority.id] == max(weight.values()) > min(weight.values())
    chosen = fed_kb.responsibility.resolve(route.service.id, route.service.level,
                                           fed_kb.regions.chain(route.location.ars))
    assert chosen.authority_id == route.authority.id
    assert {chosen.authority_id, *chosen.alternatives} == offices


def test_the_lookup_names_the_other_locations_in_json_and_in_the_terminal(fed_kb):
    from hub.cli.knowledge import format_lookup

    result = fed_kb.lookup("Wohnsitzanmeldung", "München", limit=1).to_json()
    top = result["results"][0]
    assert top["other_locations_total"] == len(top["other_locations"]) >= 2
    assert top["authority"]["id"] not in {o["id"] for o in top["other_locations"]}
    text = format_lookup(result)
    assert f"Auch an {top['other_locations_total']} weiteren Standorten: {top['other_locations'][0]['name']}" in text


@pytest.mark.parametrize("text", ["Sterbeurkunde", "Kirchenaustritt", "Zweitwohnungsteuer"])
def test_one_word_naming_the_whole_object_of_a_service_is_not_too_general(fed_kb, text):
    # Berlin's names add actions ("Kirchenaustritt erklären", "Urkunden - Ausstellung - Sterbeurkunde"): the
    # word explains everything the name says about a thing, so the request is clear.
    route = fed_kb.route(text, "Berlin")
    assert route.service is not None and route.service.owner_ars.startswith("11")
    assert text.lower()[:8] in route.service.name.lower().replace("-", "")
    assert not (route.reason or "").startswith("Anliegen zu allgemein"), route.reason


@pytest.mark.parametrize("place", ["München", "Berlin", "Bad Segeberg"])
def test_a_bare_action_is_asked_about_everywhere(fed_kb, place):
    route = fed_kb.route("anmelden", place)
    assert route.needs_clarification and "nur ein Vorgang" in route.reason
