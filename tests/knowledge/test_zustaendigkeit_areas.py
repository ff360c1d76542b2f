"""Issue 13 items 4 and 7: responsibilities as area lists with a role, conflicts, the deletion guard.

Every scenario runs on SQLite (all of Germany's regions) and on the local PostgreSQL (the regions it needs).
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
from sqlalchemy import insert, select

from hub.db import create_schema, make_engine
from knowledge.base import KnowledgeBase
from knowledge.models import Region, Responsibility
from knowledge.sync import (
    DeletionRefused,
    PayloadError,
    ZustaendigkeitConflict,
    apply_change_set,
    export_region,
    parse_changes,
    parse_snapshot,
)

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
