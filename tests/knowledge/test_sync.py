"""The catalogue sync core: validation, scope, ownership, references, diff, versions, atomicity, the KB."""

from __future__ import annotations

import json
import re
import threading

import pytest
from catalog_support import (  # noqa: F401  (fixtures: engine, region_index, regions_template)
    BARK,
    LEEZEN_AMT,
    NORDERSTEDT,
    ROOT,
    SEGEBERG,
    TODESFELDE,
    counts,
    engine_fixture,
    leistung,
    level_registration,
    load_kb,
    office,
    override,
    region_index_fixture,
    regions_template_fixture,
)
from sqlalchemy import insert, select, text

from hub.db import create_schema, make_engine
from hub.http.tokens import grant_region, token_regions, token_t
from hub.queue.cases import audit_t, catalog_audit, utcnow
from knowledge.models import Region, Service
from knowledge.sync import (
    ConcurrentChange,
    PayloadError,
    ScopeError,
    UnknownRegion,
    VersionConflict,
    apply_change_set,
    changes_since,
    current_version,
    execute,
    export_region,
    kb_update_from_log,
    parse_changes,
    parse_snapshot,
    plan,
)
from knowledge.sync_models import SYNC_TABLES, version_t


def kreis_catalog() -> dict:
    """Kreis Segeberg: two services, its administration registered for kreis-level services."""
    return {
        "leistung": [
            leistung(
                "se-wunschkennzeichen",
                "Wunschkennzeichen reservieren",
                ebene="kreis",
                leika="99036006001000",
                synonyme=["Kennzeichen reservieren", "Autokennzeichen"],
                textmodule={
                    "kurztext": "Ein Wunschkennzeichen online reservieren.",
                    "kosten": "12,80 Euro",
                    "unterlagen": ["Personalausweis"],
                },
            ),
            leistung("se-baugenehmigung", "Baugenehmigung beantragen", ebene="kreis", synonyme=["Bauantrag"]),
        ],
        "organisationseinheit": [
            office(
                "se-kv",
                "Kreisverwaltung Segeberg",
                SEGEBERG,
                art="Kreisverwaltung",
                anschrift={"strasse": "Hamburger Straße 30", "plz": "23795", "ort": "Bad Segeberg"},
                kontakt={
                    "telefon": "04551 951-0",
                    "email": "info@segeberg.de",
                    "web": "https://www.segeberg.de",
                },
                oeffnungszeiten={
                    "mon": [["08:00", "12:00"]],
                    "thu": [["14:00", "17:30"], ["08:00", "12:00"]],
                },
            ),
        ],
        "zustaendigkeit": [level_registration("kreis", SEGEBERG, "se-kv")],
        "onlinedienst": [
            {
                "id": "se-wkz-online",
                "leistung_id": "se-wunschkennzeichen",
                "url": "https://www.segeberg.de/wunschkennzeichen",
                "name": "Online-Reservierung",
            }
        ],
    }


def snapshot(engine, region, body, **kw):
    """A snapshot as the hub applies it: recorded in the hub's audit log."""
    return apply_change_set(engine, region, parse_snapshot(body), actor="test", audit=catalog_audit, **kw)


def changes(engine, region, body, **kw):
    return apply_change_set(engine, region, parse_changes(body), actor="test", audit=catalog_audit, **kw)


# -- snapshots, diffs, versions ---------------------------------------------------------------------------


def test_a_snapshot_is_stored_versioned_audited_and_reads_back_unchanged(engine):
    result = snapshot(engine, SEGEBERG, kreis_catalog(), scopes=[SEGEBERG])
    assert result.applied and (result.previous_version, result.version) == (0, 1)
    assert result.plan.diff()["added"] == {
        "leistung": ["se-wunschkennzeichen", "se-baugenehmigung"],
        "organisationseinheit": ["se-kv"],
        "zustaendigkeit": [f"ebene=kreis@{SEGEBERG}>se-kv"],
        "onlinedienst": ["se-wkz-online"],
    }
    with engine.connect() as conn:
        svc = conn.execute(
            select(Service.__table__).where(Service.__table__.c.id == "se-wunschkennzeichen")
        ).one()
        exported = export_region(conn, SEGEBERG)
        audit = conn.execute(select(audit_t).where(audit_t.c.action == "catalog_snapshot")).one()
        version = conn.execute(select(version_t)).one()
    assert svc.owner_ars == SEGEBERG and svc.fees == "12,80 Euro" and svc.documents == ["Personalausweis"]
    assert svc.online_url == "https://www.segeberg.de/wunschkennzeichen", "derived from the onlinedienst"
    assert audit.actor == "test" and f"region {SEGEBERG} version 1" in audit.reason
    assert version.actor == "test" and version.summary["leistung"] == {"added": 2, "changed": 0, "removed": 0}
    # The opening hours come back sorted; everything else as sent.
    assert exported["organisationseinheit"][0]["oeffnungszeiten"]["thu"] == [
        ["08:00", "12:00"],
        ["14:00", "17:30"],
    ]

    again = snapshot(engine, SEGEBERG, exported)
    assert not again.applied and again.plan.empty and again.version == 1, "PUT of GET changes nothing"


def test_a_second_snapshot_yields_added_changed_removed(engine):
    snapshot(engine, SEGEBERG, kreis_catalog())
    body = kreis_catalog()
    body["leistung"][0]["name"] = "Wunschkennzeichen"
    body["leistung"][0]["synonyme"].append("KFZ-Kennzeichen")
    del body["leistung"][1]
    body["leistung"].append(leistung("se-fuehrerschein", "Führerschein umtauschen", ebene="kreis"))
    body["organisationseinheit"][0]["kontakt"]["telefon"] = "04551 951-9"
    result = snapshot(engine, SEGEBERG, body)
    diff = result.plan.diff()
    assert diff["added"]["leistung"] == ["se-fuehrerschein"]
    assert diff["changed"]["leistung"] == [{"id": "se-wunschkennzeichen", "fields": ["name", "synonyme"]}]
    assert diff["removed"]["leistung"] == ["se-baugenehmigung"]
    assert diff["changed"]["organisationseinheit"] == [{"id": "se-kv", "fields": ["kontakt.telefon"]}]
    assert result.version == 2


def test_a_dry_run_returns_the_diff_and_writes_nothing(engine):
    before = counts(engine)
    result = snapshot(engine, SEGEBERG, kreis_catalog(), dry_run=True)
    assert result.dry_run and not result.applied and result.version == 0
    assert result.plan.summary()["leistung"]["added"] == 2
    assert counts(engine) == before


def test_changes_write_and_delete_and_deletes_are_idempotent(engine):
    snapshot(engine, SEGEBERG, kreis_catalog())
    body = {
        "write": {"leistung": [leistung("se-jagdschein", "Jagdschein beantragen", ebene="kreis")]},
        "delete": {"leistung": ["se-baugenehmigung", "se-never-existed"]},
    }
    result = changes(engine, SEGEBERG, body)
    assert result.plan.diff()["added"]["leistung"] == ["se-jagdschein"]
    assert result.plan.diff()["removed"]["leistung"] == ["se-baugenehmigung"]
    again = changes(engine, SEGEBERG, {"delete": {"leistung": ["se-baugenehmigung"]}})
    assert not again.applied and again.version == 2, "deleting what is gone changes nothing"


def test_deleting_a_service_takes_its_own_zustaendigkeiten_and_online_services_along(engine):
    body = kreis_catalog()
    body["zustaendigkeit"].append(override("se-wunschkennzeichen", SEGEBERG, "se-kv"))
    snapshot(engine, SEGEBERG, body)
    result = changes(engine, SEGEBERG, {"delete": {"leistung": ["se-wunschkennzeichen"]}})
    removed = result.plan.diff()["removed"]
    assert removed["zustaendigkeit"] == [f"se-wunschkennzeichen@{SEGEBERG}>se-kv"]
    assert removed["onlinedienst"] == ["se-wkz-online"]
    assert counts(engine, SEGEBERG) | {"versions": 0, "regions": 0} == {
        "service": 1,
        "authority": 1,
        "responsibility": 1,
        "online": 0,
        "versions": 0,
        "regions": 0,
    }


# -- validation: per-object errors, atomicity, partial -----------------------------------------------------


def test_each_invalid_object_is_named_with_field_and_reason_and_nothing_is_written(engine):
    body = kreis_catalog()
    body["leistung"].append({"id": "se-x", "name": "", "leika": "9903", "ebene": "bund", "farbe": "rot"})
    body["organisationseinheit"].append(
        office(
            "se-amt",
            "Amt",
            SEGEBERG,
            anschrift={"plz": "2379"},
            kontakt={"email": "kein-at"},
            oeffnungszeiten={"mon": [["18:00", "08:00"]]},
        )
    )
    body["zustaendigkeit"].append({"gebiet_ars": SEGEBERG, "organisationseinheit_id": "se-kv"})
    body["onlinedienst"].append(
        {"id": "se-o2", "leistung_id": "se-wunschkennzeichen", "url": "javascript:alert(1)"}
    )
    with pytest.raises(PayloadError) as exc:
        snapshot(engine, SEGEBERG, body)
    got = {(e.object, e.field) for e in exc.value.errors}
    assert {
        ("leistung[2] id=se-x", "name"),
        ("leistung[2] id=se-x", "leika"),
        ("leistung[2] id=se-x", "ebene"),
        ("leistung[2] id=se-x", "farbe"),
        ("organisationseinheit[1] id=se-amt", "anschrift.plz"),
        ("organisationseinheit[1] id=se-amt", "kontakt.email"),
        ("organisationseinheit[1] id=se-amt", "oeffnungszeiten"),
        ("zustaendigkeit[1]", ""),
        ("onlinedienst[1] id=se-o2", "url"),
    } <= got
    messages = " ".join(e.message for e in exc.value.errors)
    assert "exactly one of leistung_id" in messages and "does not end after it starts" in messages
    assert counts(engine)["service"] == counts(engine)["versions"] == 0


def test_partial_applies_the_valid_objects_and_lists_the_rest(engine):
    body = kreis_catalog()
    body["leistung"][1]["leika"] = "nope"
    result = snapshot(engine, SEGEBERG, body, partial=True)
    assert result.applied
    assert result.plan.diff()["added"]["leistung"] == ["se-wunschkennzeichen"]
    assert [(e.object, e.field) for e in result.plan.errors] == [
        ("leistung[1] id=se-baugenehmigung", "leika")
    ]
    # A snapshot does not remove an object it could not read.
    snapshot(engine, SEGEBERG, kreis_catalog())
    body = kreis_catalog()
    body["leistung"][1]["name"] = ""
    result = snapshot(engine, SEGEBERG, body, partial=True)
    assert "se-baugenehmigung" not in result.plan.removed["leistung"]


def test_a_body_of_the_wrong_shape_is_refused_whole(engine):
    for body, message in (
        ([], "must be a JSON object"),
        ({"leistungen": []}, "unknown keys: leistungen"),
        ({"leistung": {"id": "x"}}, "'leistung' must be a list"),
    ):
        with pytest.raises(PayloadError, match=re.escape(message)):
            parse_snapshot(body)
    with pytest.raises(PayloadError, match="unknown keys: writes"):
        parse_changes({"writes": {}})
    cs = parse_changes({"write": {"leistung": [leistung("a", "A")]}, "delete": {"leistung": ["a", 7]}})
    assert sorted(e.object for e in cs.errors) == ["delete.leistung[0] id=a", "delete.leistung[1]"]
    assert cs.writes["leistung"] == {} and cs.deletes["leistung"] == {}


def test_control_characters_and_oversized_texts_are_refused():
    cs = parse_snapshot({"leistung": [leistung("a", "A\x00B"), leistung("b", "B", synonyme=["x" * 201])]})
    assert [(e.object, e.field) for e in cs.errors] == [
        ("leistung[0] id=a", "name"),
        ("leistung[1] id=b", "synonyme.0"),
    ]


def test_a_database_failure_in_the_middle_leaves_nothing_behind(engine, region_index):
    """Atomicity: a trigger fails the last insert of the transaction; services written before vanish too."""
    kb = load_kb(engine, region_index)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER fail_audit BEFORE INSERT ON hub_audit "
                "BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"
            )
        )
    with pytest.raises(Exception, match="disk full"):
        snapshot(engine, SEGEBERG, kreis_catalog())
    assert counts(engine)["service"] == counts(engine)["versions"] == 0
    with engine.connect() as conn:
        assert current_version(conn, SEGEBERG) == 0
    assert "se-wunschkennzeichen" not in kb.services


# -- scope and ownership ---------------------------------------------------------------------------------


def test_the_path_and_every_area_must_lie_inside_the_token_region(engine):
    with pytest.raises(ScopeError, match="outside this token's region"):
        snapshot(engine, BARK, {"leistung": [leistung("bark-1", "Hund anmelden")]}, scopes=[TODESFELDE])
    body = {"organisationseinheit": [office("tf-gv", "Gemeindeverwaltung", BARK)]}
    with pytest.raises(ScopeError) as exc:
        snapshot(engine, TODESFELDE, body, scopes=[TODESFELDE])
    assert exc.value.errors[0].object == "organisationseinheit[0] id=tf-gv"
    assert exc.value.errors[0].field == "gebiet_ars"
    with pytest.raises(ScopeError):
        changes(
            engine,
            TODESFELDE,
            {"delete": {"zustaendigkeit": [level_registration("amt", LEEZEN_AMT, "x")]}},
            scopes=[TODESFELDE],
        )
    assert counts(engine)["versions"] == 0


def test_an_area_must_lie_inside_the_catalogue_region_and_exist(engine):
    body = {"organisationseinheit": [office("a", "A", SEGEBERG), office("b", "B", "010609999999")]}
    with pytest.raises(PayloadError) as exc:
        snapshot(engine, TODESFELDE, body, scopes=[SEGEBERG])
    assert [(e.object, e.message) for e in exc.value.errors] == [
        (
            "organisationseinheit[0] id=a",
            f"{SEGEBERG} is not inside region {TODESFELDE} whose catalogue this is",
        ),
        (
            "organisationseinheit[1] id=b",
            "010609999999 is not inside region 010605053088 whose catalogue this is",
        ),
    ]
    with pytest.raises(PayloadError, match="no region with ARS 010605053999"):
        snapshot(engine, LEEZEN_AMT, {"organisationseinheit": [office("c", "C", "010605053999")]})
    with pytest.raises(UnknownRegion):
        snapshot(engine, "010605053999", {})


def test_a_gemeinde_cannot_change_the_kreis_entries_or_another_gemeinde(engine):
    snapshot(engine, SEGEBERG, kreis_catalog())
    snapshot(engine, BARK, {"leistung": [leistung("bark-hund", "Hund anmelden")]})
    before = counts(engine)
    for body in (
        {"write": {"leistung": [leistung("se-wunschkennzeichen", "Meins")]}},
        {"delete": {"organisationseinheit": ["se-kv"]}},
        {"write": {"leistung": [leistung("bark-hund", "Hund")]}},
    ):
        with pytest.raises(ScopeError, match="outside this token's region"):
            changes(engine, TODESFELDE, body, scopes=[TODESFELDE])
    assert counts(engine) == before
    # The Kreis may write inside (through the Gemeinde's path), but not take a Gemeinde's id over as its own.
    with pytest.raises(PayloadError, match=f"belongs to the catalogue of region {BARK}"):
        changes(engine, SEGEBERG, {"write": {"leistung": [leistung("bark-hund", "Hund")]}}, scopes=[SEGEBERG])
    ok = changes(engine, BARK, {"write": {"leistung": [leistung("bark-hund", "Hund")]}}, scopes=[SEGEBERG])
    assert ok.plan.diff()["changed"]["leistung"] == [{"id": "bark-hund", "fields": ["name"]}]


# -- references -------------------------------------------------------------------------------------------


def test_references_must_exist_and_named_objects_cannot_be_removed(engine):
    snapshot(engine, SEGEBERG, kreis_catalog())
    body = {
        "organisationseinheit": [office("nst-bau", "Bauaufsicht Norderstedt", NORDERSTEDT)],
        "zustaendigkeit": [
            override("se-baugenehmigung", NORDERSTEDT, "nst-bau"),
            override("se-gibtsnicht", NORDERSTEDT, "nst-bau"),
            override("se-baugenehmigung", NORDERSTEDT, "nst-fehlt"),
        ],
    }
    with pytest.raises(PayloadError) as exc:
        snapshot(engine, NORDERSTEDT, body)
    assert [e.message for e in exc.value.errors] == [
        "there is no leistung se-gibtsnicht",
        "there is no organisationseinheit nst-fehlt",
    ]
    del body["zustaendigkeit"][1:]
    snapshot(engine, NORDERSTEDT, body)  # Norderstedt overrides the Kreis's service: allowed

    with pytest.raises(
        PayloadError, match=f"still named by 1 zustaendigkeit\\(en\\) of region {NORDERSTEDT}"
    ):
        changes(engine, SEGEBERG, {"delete": {"leistung": ["se-baugenehmigung"]}})
    with pytest.raises(PayloadError, match="only be added to a leistung of the same catalogue"):
        changes(
            engine,
            NORDERSTEDT,
            {
                "write": {
                    "onlinedienst": [
                        {"id": "nst-o", "leistung_id": "se-baugenehmigung", "url": "https://example.org/x"}
                    ]
                }
            },
        )


# -- versions and concurrent writers -------------------------------------------------------------------


def test_if_match_version_is_checked(engine):
    snapshot(engine, SEGEBERG, kreis_catalog(), expected_version=0)
    with pytest.raises(VersionConflict) as exc:
        changes(engine, SEGEBERG, {"delete": {"leistung": ["se-baugenehmigung"]}}, expected_version=0)
    assert exc.value.current == 1
    assert (
        changes(
            engine, SEGEBERG, {"delete": {"leistung": ["se-baugenehmigung"]}}, expected_version={1}
        ).version
        == 2
    )


def test_of_two_writers_planned_on_the_same_version_only_one_commits(engine):
    snapshot(engine, SEGEBERG, kreis_catalog())
    with engine.connect() as conn:
        first = plan(conn, SEGEBERG, parse_changes({"write": {"leistung": [leistung("se-a", "A")]}}))
        second = plan(conn, SEGEBERG, parse_changes({"write": {"leistung": [leistung("se-b", "B")]}}))
    assert execute(engine, first, actor="one") == 2
    with pytest.raises(VersionConflict):
        execute(engine, second, actor="two")
    with engine.connect() as conn:
        ids = {r[0] for r in conn.execute(select(Service.__table__.c.id))}
    assert "se-a" in ids and "se-b" not in ids
    # Without If-Match the loser plans again on the new state and gets through.
    assert changes(engine, SEGEBERG, {"write": {"leistung": [leistung("se-b", "B")]}}).version == 3


def test_concurrent_writers_in_threads_get_consecutive_versions(engine):
    snapshot(engine, SEGEBERG, kreis_catalog())
    errors: list[Exception] = []

    def write(i: int) -> None:
        try:
            changes(engine, SEGEBERG, {"write": {"leistung": [leistung(f"se-t{i}", f"Leistung {i}")]}})
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with engine.connect() as conn:
        versions = sorted(r[0] for r in conn.execute(select(version_t.c.version)))
    assert versions == list(range(1, 8))


def test_a_reference_removed_by_another_region_at_the_same_time_is_a_conflict(engine):
    snapshot(engine, SEGEBERG, kreis_catalog())
    body = {
        "organisationseinheit": [office("nst-bau", "Bauaufsicht", NORDERSTEDT)],
        "zustaendigkeit": [override("se-baugenehmigung", NORDERSTEDT, "nst-bau")],
    }
    with engine.connect() as conn:
        p = plan(conn, NORDERSTEDT, parse_snapshot(body))
    changes(engine, SEGEBERG, {"delete": {"leistung": ["se-baugenehmigung"]}})  # between plan and write
    with pytest.raises(ConcurrentChange):
        execute(engine, p, actor="nst")
    assert counts(engine, NORDERSTEDT)["authority"] == 0


# -- pull consumers ---------------------------------------------------------------------------------------


def test_changes_since_serves_the_latest_state_of_each_changed_object(engine):
    snapshot(engine, SEGEBERG, kreis_catalog())
    changes(
        engine,
        SEGEBERG,
        {"write": {"leistung": [leistung("se-baugenehmigung", "Bauantrag stellen", ebene="kreis")]}},
    )
    changes(engine, SEGEBERG, {"delete": {"onlinedienst": ["se-wkz-online"]}})
    with engine.connect() as conn:
        since1 = changes_since(conn, SEGEBERG, 1)
        since0 = changes_since(conn, SEGEBERG, 0)
        assert changes_since(conn, SEGEBERG, 3) == []
    assert [(c["version"], c["kind"], c["op"], c["id"]) for c in since1] == [
        (2, "leistung", "upsert", "se-baugenehmigung"),
        (3, "onlinedienst", "delete", "se-wkz-online"),
    ]
    assert since1[0]["object"]["name"] == "Bauantrag stellen"
    assert {c["id"] for c in since0 if c["op"] == "upsert"} == {
        "se-wunschkennzeichen",
        "se-baugenehmigung",
        "se-kv",
        f"ebene=kreis@{SEGEBERG}>se-kv",
    }


# -- the knowledge base follows -----------------------------------------------------------------------


def test_the_knowledge_base_follows_every_change_without_a_rebuild(engine, region_index):
    kb = load_kb(engine, region_index)
    snapshot(engine, SEGEBERG, kreis_catalog()).kb.apply(kb)
    route = kb.route("Ich möchte ein Wunschkennzeichen reservieren", "Todesfelde")
    assert route.service.id == "se-wunschkennzeichen" and route.authority.id == "se-kv"
    assert kb.services["se-wunschkennzeichen"].online_url == "https://www.segeberg.de/wunschkennzeichen"

    # Norderstedt takes the building permit over for itself (override), Todesfelde stays with the Kreis.
    body = {
        "organisationseinheit": [office("nst-bau", "Bauaufsicht Norderstedt", NORDERSTEDT)],
        "zustaendigkeit": [override("se-baugenehmigung", NORDERSTEDT, "nst-bau")],
    }
    snapshot(engine, NORDERSTEDT, body).kb.apply(kb)
    assert kb.route("Baugenehmigung beantragen", "Norderstedt").authority.id == "nst-bau"
    assert kb.route("Baugenehmigung beantragen", "Todesfelde").authority.id == "se-kv"

    changes(engine, NORDERSTEDT, {"delete": {"zustaendigkeit": body["zustaendigkeit"]}}).kb.apply(kb)
    assert kb.route("Baugenehmigung beantragen", "Norderstedt").authority.id == "se-kv"

    changes(
        engine,
        SEGEBERG,
        {
            "write": {"leistung": [leistung("se-baugenehmigung", "Bauvorhaben genehmigen", ebene="kreis")]},
            "delete": {"onlinedienst": ["se-wkz-online"]},
        },
    ).kb.apply(kb)
    assert kb.lookup("Bauvorhaben genehmigen").answers[0].service.id == "se-baugenehmigung"
    assert kb.services["se-wunschkennzeichen"].online_url is None
    changes(engine, SEGEBERG, {"delete": {"leistung": ["se-baugenehmigung"]}}).kb.apply(kb)
    assert "se-baugenehmigung" not in kb.services
    assert all(a.service.id != "se-baugenehmigung" for a in kb.lookup("Bauvorhaben genehmigen").answers)

    # And the same state, built from scratch, answers the same.
    fresh = load_kb(engine, region_index)
    assert set(fresh.services) == set(kb.services) and set(fresh.authorities) == set(kb.authorities)
    for place in ("Norderstedt", "Todesfelde", "Bark"):
        assert (
            fresh.route("Wunschkennzeichen", place).to_json()
            == kb.route("Wunschkennzeichen", place).to_json()
        )


def test_another_process_changes_reach_the_knowledge_base_through_the_change_log(engine, region_index):
    kb = load_kb(engine, region_index)
    other = make_engine(str(engine.url))  # another process's engine on the same database
    snapshot(other, SEGEBERG, kreis_catalog())
    changes(other, SEGEBERG, {"delete": {"leistung": ["se-baugenehmigung"]}})
    kb_update_from_log(engine, [(SEGEBERG, 1), (SEGEBERG, 2)]).apply(kb)
    assert "se-wunschkennzeichen" in kb.services and "se-baugenehmigung" not in kb.services
    assert kb.route("Wunschkennzeichen reservieren", "Bark").authority.id == "se-kv"
    assert kb.services["se-wunschkennzeichen"].online_url.startswith("https://")
    other.dispose()


@pytest.mark.parametrize("through_the_log", [False, True])
def test_removing_one_of_several_locations_keeps_the_others_in_the_knowledge_base(engine, region_index,
                                                                                   through_the_log):
    # A county registering car registration at its main office and two branch offices, all for the county.
    kb = load_kb(engine, region_index)
    body = kreis_catalog()
    body["organisationseinheit"] += [office("se-kv-2", "Zulassungsstelle Norderstedt", SEGEBERG),
                                     office("se-kv-3", "Zulassungsstelle Kaltenkirchen", SEGEBERG)]
    body["zustaendigkeit"] += [override("se-wunschkennzeichen", SEGEBERG, o) for o in ("se-kv", "se-kv-2", "se-kv-3")]
    other = make_engine(str(engine.url))
    result = snapshot(other if through_the_log else engine, SEGEBERG, body)
    first = kb_update_from_log(engine, [(SEGEBERG, 1)]) if through_the_log else result.kb
    first.apply(kb)
    route = kb.route("Wunschkennzeichen reservieren", "Bark")
    assert route.authority.id == "se-kv"  # the office with the most registrations of its catalogue
    r = kb.responsible_for(route.service, kb.regions.resolve("Bark").match)
    assert r.alternatives == ("se-kv-2", "se-kv-3")
    gone = changes(other if through_the_log else engine, SEGEBERG,
                   {"delete": {"zustaendigkeit": [override("se-wunschkennzeichen", SEGEBERG, "se-kv")]}})
    (kb_update_from_log(engine, [(SEGEBERG, 2)]) if through_the_log else gone.kb).apply(kb)
    r = kb.responsible_for(route.service, kb.regions.resolve("Bark").match)
    assert (r.authority_id, r.alternatives) == ("se-kv-2", ("se-kv-3",))
    # The same state built from scratch answers the same.
    assert load_kb(engine, region_index).responsible_for(route.service, kb.regions.resolve("Bark").match) == r
    other.dispose()


# -- tables, migration, scopes ------------------------------------------------------------------------


def test_the_migration_creates_the_sync_tables_as_the_models_define_them(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from hub.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
        )
    mine = {t.name for t in SYNC_TABLES}
    assert [d for d in diffs if mine & set(re.findall(r"'(\w+)'", repr(d)))] == []
    assert mine <= set(SQLModel.metadata.tables)


def test_grant_region_is_idempotent_and_checks_its_input(engine):
    with engine.begin() as conn:
        tid = conn.execute(
            insert(token_t).values(name="tf", role="catalog", token_hash="0" * 64, created_at=utcnow())
        ).inserted_primary_key[0]
        assert grant_region(conn, tid, TODESFELDE) is True
        assert grant_region(conn, tid, TODESFELDE) is False
        with pytest.raises(ValueError, match="not an ARS"):
            grant_region(conn, tid, "0106")
        with pytest.raises(ValueError, match="no region"):
            grant_region(conn, tid, "010609999999")
        with pytest.raises(ValueError, match="no API token"):
            grant_region(conn, tid + 99, TODESFELDE)
        assert token_regions(conn, tid) == [TODESFELDE]


def test_the_schema_example_in_the_docs_is_a_valid_payload():
    """Every JSON example of docs/catalog-sync.md passes the JSON Schema and the pydantic models."""
    import jsonschema

    schema = json.loads((ROOT / "docs" / "catalog-sync.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = (ROOT / "docs" / "catalog-sync.md").read_text(encoding="utf-8")
    examples = re.findall(r"```json snapshot\n(.*?)```", doc, re.S)
    change_examples = re.findall(r"```json changes\n(.*?)```", doc, re.S)
    assert examples and change_examples
    for raw in examples:
        body = json.loads(raw)
        jsonschema.validate(body, {"$ref": "#/$defs/snapshot", "$defs": schema["$defs"]})
        assert parse_snapshot(body).errors == []
    for raw in change_examples:
        body = json.loads(raw)
        jsonschema.validate(body, {"$ref": "#/$defs/changes", "$defs": schema["$defs"]})
        assert parse_changes(body).errors == []
    # The schema and the models refuse the same mistakes.
    bad = {"leistung": [{"id": "x", "name": "X", "leika": "123"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, {"$ref": "#/$defs/snapshot", "$defs": schema["$defs"]})
    assert parse_snapshot(bad).errors


# -- PostgreSQL ---------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_sync_on_postgresql(postgres_url):
    engine = make_engine(postgres_url)
    create_schema(engine)
    regions = [
        {"ars": "01", "name": "Schleswig-Holstein", "level": "land", "kind": "Land", "parent_ars": None},
        {"ars": SEGEBERG, "name": "Segeberg", "level": "kreis", "kind": "Kreis", "parent_ars": "01"},
        {
            "ars": NORDERSTEDT,
            "name": "Norderstedt, Stadt",
            "level": "gemeinde",
            "kind": "Stadt",
            "parent_ars": SEGEBERG,
        },
    ]
    with engine.begin() as conn:
        conn.execute(insert(Region.__table__), regions)
    try:
        assert snapshot(engine, SEGEBERG, kreis_catalog(), expected_version=0).version == 1
        body = {
            "organisationseinheit": [office("nst-bau", "Bauaufsicht", NORDERSTEDT)],
            "zustaendigkeit": [override("se-baugenehmigung", NORDERSTEDT, "nst-bau")],
        }
        assert snapshot(engine, NORDERSTEDT, body).version == 1
        with pytest.raises(PayloadError, match="still named by"):
            changes(engine, SEGEBERG, {"delete": {"leistung": ["se-baugenehmigung"]}})
        with engine.connect() as conn:
            first = plan(conn, SEGEBERG, parse_changes({"write": {"leistung": [leistung("se-a", "A")]}}))
            second = plan(conn, SEGEBERG, parse_changes({"write": {"leistung": [leistung("se-b", "B")]}}))
        execute(engine, first, actor="one")
        with pytest.raises(VersionConflict):
            execute(engine, second, actor="two")
        with pytest.raises(PayloadError):  # PostgreSQL cannot store NUL: refused at the edge, not a 500
            snapshot(engine, SEGEBERG, {"leistung": [leistung("x", "X\x00")]})
        with engine.connect() as conn:
            assert current_version(conn, SEGEBERG) == 2
            assert [c["id"] for c in changes_since(conn, SEGEBERG, 1)] == ["se-a"]
            exported = export_region(conn, SEGEBERG)
        assert not snapshot(engine, SEGEBERG, exported).applied
    finally:
        engine.dispose()


def test_no_write_without_the_regions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    create_schema(engine)
    with pytest.raises(UnknownRegion, match="are the regions loaded"):
        snapshot(engine, SEGEBERG, kreis_catalog())
