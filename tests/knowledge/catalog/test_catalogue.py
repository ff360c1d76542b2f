"""The demo catalogue (knowledge/demo) and its loader, on a real SQLite file and on the local PostgreSQL.

Also checks the hand-written lookup benchmark (tests/data/lookup_queries.jsonl): every query names real
ids, none is a copy of a catalogue name or synonym, and its expected authority is what the responsibility
rules give for its place.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from hub.db import create_schema, make_engine, session_scope
from knowledge.catalogue import DEMO_DIR, CatalogueError, load_catalogue_dir, load_demo
from knowledge.models import LEVELS, Authority, Responsibility, Service
from knowledge.responsibility import ResponsibilityIndex

ROOT = Path(__file__).resolve().parents[3]
QUERIES = ROOT / "tests" / "data" / "lookup_queries.jsonl"
DESTATIS = ROOT / "knowledge" / "data" / "destatis_gv_2019q4.csv.gz"
NORDERSTEDT = "010600063063"


def demo_json(name: str) -> list[dict]:
    return json.loads((DEMO_DIR / name).read_text(encoding="utf-8"))


def count(session: Session, model) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def counts(engine) -> tuple[int, int, int]:
    with Session(engine) as session:
        return count(session, Service), count(session, Authority), count(session, Responsibility)


@pytest.fixture()
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/t.sqlite3")
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture()
def loaded(engine):
    with session_scope(engine) as session:
        load_demo(session)
    return engine


@pytest.fixture()
def demo_copy(tmp_path):
    """A writable copy of the demo catalogue, for tests that change or break it."""
    path = tmp_path / "catalogue"
    shutil.copytree(DEMO_DIR, path)
    return path


def edit(path: Path, name: str, change) -> None:
    rows = json.loads((path / name).read_text(encoding="utf-8"))
    change(rows)
    (path / name).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


def amt_free_and_amt_regions(kreis: str) -> set[str]:
    """From the shipped Destatis file: the ARS at which a Kreis's 'amt' level must be registered —
    9 digits for an Amt, 12 digits for an amt-free municipality (gemeindefreie Gebiete excluded)."""
    with gzip.open(DESTATIS, "rt", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(io.StringIO(fh.read())))
    out = set()
    for r in rows:
        if r["land"] + r["rb"] + r["kreis"] != kreis or not r["gemeinde"]:
            continue
        if r["satzart"] != "60" or r["textkennzeichen"] == "66":  # 66: gemeindefreies Gebiet
            continue
        vb = r["land"] + r["rb"] + r["kreis"] + r["vb"]
        amt = any(
            x["satzart"] == "50"
            and x["textkennzeichen"] != "50"
            and x["land"] + x["rb"] + x["kreis"] + x["vb"] == vb
            for x in rows
        )
        out.add(vb if amt else vb + r["gemeinde"])
    return out


# --------------------------------------------------------------------------- the demo content


def test_demo_loads_with_the_counts_of_its_files(engine):
    with session_scope(engine) as session:
        result = load_demo(session)
    files = (
        len(demo_json("services.json")),
        len(demo_json("authorities.json")),
        len(demo_json("responsibilities.json")),
    )
    assert (result["services"], result["authorities"], result["responsibilities"]) == files
    assert result["inserted"] == sum(files) and result["updated"] == result["deleted"] == 0
    assert counts(engine) == files
    assert files[0] >= 80


def test_every_service_is_complete(loaded):
    with Session(loaded) as session:
        services = session.exec(select(Service)).all()
    for s in services:
        assert s.id.startswith("sh-"), s.id
        assert s.name.strip() and s.short_text.strip(), s.id
        assert s.level in LEVELS, s.id
        assert s.leika is None or (len(s.leika) == 14 and s.leika.isdigit()), s.id
        assert s.synonyms and all(isinstance(x, str) and x.strip() for x in s.synonyms), s.id
    # both German and English phrasings are there for the matcher to find
    all_synonyms = {x.lower() for s in services for x in s.synonyms}
    assert {
        "perso",
        "auto anmelden",
        "passport",
        "register my address",
        "driving licence application",
    } <= all_synonyms


def test_every_responsibility_points_at_existing_rows(loaded):
    with Session(loaded) as session:
        services = {s.id for s in session.exec(select(Service))}
        authorities = {a.id for a in session.exec(select(Authority))}
        rows = session.exec(select(Responsibility)).all()
    assert rows
    for r in rows:
        assert r.authority_id in authorities, r
        assert r.service_id is None or r.service_id in services, r
        assert r.service_id is not None or r.level in LEVELS, r


@pytest.mark.parametrize("kreis", ["01060", "05974"])
def test_every_amt_and_amt_free_town_does_amt_and_gemeinde_services(loaded, kreis):
    wanted = amt_free_and_amt_regions(kreis)
    if kreis == "01060":
        assert len(wanted) == 15  # 8 Ämter + 7 amt-free municipalities
        assert {"010605053", NORDERSTEDT} <= wanted
    else:
        assert len(wanted) == 14  # Kreis Soest: every town is amt-free
    with Session(loaded) as session:
        rows = session.exec(select(Responsibility).where(Responsibility.service_id.is_(None))).all()
    registered = {(r.region_ars, r.level) for r in rows}
    for region in wanted:
        assert (region, "amt") in registered, region
        assert (region, "gemeinde") in registered, region
    assert (kreis, "kreis") in registered
    assert (kreis[:2], "land") in registered


def test_norderstedt_runs_its_own_building_authority(loaded):
    with Session(loaded) as session:
        rows = session.exec(
            select(Responsibility).where(
                Responsibility.region_ars == NORDERSTEDT, Responsibility.service_id.is_not(None)
            )
        ).all()
        overrides = {r.service_id: r.authority_id for r in rows}
        bauaufsicht = session.get(Authority, "bauaufsicht-010600063063")
    assert bauaufsicht is not None and "Norderstedt" in bauaufsicht.name
    assert overrides["sh-baugenehmigung"] == "bauaufsicht-010600063063"
    assert {"sh-baugenehmigung", "sh-bauvorbescheid", "sh-abbruch"} <= set(overrides)


@dataclass(frozen=True)
class R:
    ars: str
    level: str
    display_name: str


def chain(*regions: tuple[str, str]) -> list[R]:
    return [R(ars, level, ars) for ars, level in regions]


TODESFELDE = chain(("010605053088", "gemeinde"), ("010605053", "amt"), ("01060", "kreis"), ("01", "land"))
NORDERSTEDT_CHAIN = chain((NORDERSTEDT, "gemeinde"), ("01060", "kreis"), ("01", "land"))
LIPPSTADT = chain(("059740028028", "gemeinde"), ("05974", "kreis"), ("05", "land"))
MOEHNESEE = chain(("059740032032", "gemeinde"), ("05974", "kreis"), ("05", "land"))
GESEKE = chain(("059740020020", "gemeinde"), ("05974", "kreis"), ("05", "land"))


@pytest.mark.parametrize(
    ("service", "where", "authority"),
    [
        ("sh-meldebescheinigung", TODESFELDE, "amt-010605053"),
        ("sh-kfz-neuzulassung", TODESFELDE, "kreis-01060"),
        ("sh-baumfaellung", TODESFELDE, "amt-010605053"),  # gemeinde level, done by the Amt
        ("sh-elterngeld", TODESFELDE, "lasd-luebeck"),  # the LASD office for Kreis Segeberg
        ("sh-schwerbehindertenausweis", NORDERSTEDT_CHAIN, "lasd-luebeck"),
        ("sh-reisepass", NORDERSTEDT_CHAIN, "stadt-010600063063"),
        ("sh-baugenehmigung", NORDERSTEDT_CHAIN, "bauaufsicht-010600063063"),
        ("sh-baugenehmigung", TODESFELDE, "kreis-01060"),
        ("sh-kita-platz", NORDERSTEDT_CHAIN, "jugendamt-010600063063"),  # Norderstedt has its own Jugendamt
        ("sh-kita-platz", TODESFELDE, "kreis-01060"),
        ("sh-baugenehmigung", LIPPSTADT, "stadt-059740028028"),
        ("sh-baugenehmigung", MOEHNESEE, "kreis-05974"),
        ("sh-baugenehmigung", GESEKE, "kreis-05974"),  # not one of the four towns with their own
        ("sh-elterngeld", MOEHNESEE, "kreis-05974"),  # NRW: the Kreis, not a Land office
        ("sh-sperrmuell", LIPPSTADT, "stadt-059740028028"),  # NRW: the towns collect waste
        ("sh-fischereischein", MOEHNESEE, "gemeinde-059740032032"),
    ],
)
def test_the_demo_registrations_resolve_as_in_real_life(loaded, service, where, authority):
    with Session(loaded) as session:
        index = ResponsibilityIndex(session.exec(select(Responsibility)).all())
        level = session.get(Service, service).level
    assert index.resolve(service, level, where).authority_id == authority


# --------------------------------------------------------------------------- the loader


def test_reload_is_idempotent(loaded):
    before = counts(loaded)
    with Session(loaded) as session:
        stamp = session.get(Service, "sh-reisepass").updated_at
    with session_scope(loaded) as session:
        result = load_demo(session)
    assert (result["inserted"], result["updated"], result["deleted"]) == (0, 0, 0)
    assert counts(loaded) == before
    with Session(loaded) as session:
        assert session.get(Service, "sh-reisepass").updated_at == stamp


def test_changes_in_the_files_are_applied(loaded, demo_copy):
    def rename(rows):
        next(r for r in rows if r["id"] == "sh-reisepass")["name"] = "Reisepass beantragen (neu)"

    def drop_norderstedt_abbruch(rows):
        rows[:] = [
            r for r in rows if not (r["service_id"] == "sh-abbruch" and r["region_ars"] == NORDERSTEDT)
        ]

    def move_leezen(rows):
        next(r for r in rows if r["region_ars"] == "010605053" and r["level"] == "amt")["authority_id"] = (
            "kreis-01060"
        )

    edit(demo_copy, "services.json", rename)
    edit(demo_copy, "responsibilities.json", drop_norderstedt_abbruch)
    edit(demo_copy, "responsibilities.json", move_leezen)
    with Session(loaded) as session:
        stamp = session.get(Service, "sh-reisepass").updated_at
    with session_scope(loaded) as session:
        result = load_catalogue_dir(session, demo_copy)
    assert (result["inserted"], result["updated"], result["deleted"]) == (0, 2, 1)
    with Session(loaded) as session:
        service = session.get(Service, "sh-reisepass")
        assert service.name == "Reisepass beantragen (neu)" and service.updated_at != stamp
        gone = session.exec(
            select(Responsibility).where(
                Responsibility.service_id == "sh-abbruch", Responsibility.region_ars == NORDERSTEDT
            )
        ).all()
        assert gone == []
        leezen = session.exec(
            select(Responsibility).where(
                Responsibility.region_ars == "010605053", Responsibility.level == "amt"
            )
        ).one()
        assert leezen.authority_id == "kreis-01060"


def test_other_owners_registrations_are_left_alone(loaded, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "responsibilities.json").write_text(
        json.dumps(
            [
                {
                    "service_id": "sh-reisepass",
                    "region_ars": "01060",
                    "authority_id": "kreis-01060",
                    "owner_ars": "99",
                }
            ]
        )
    )
    with session_scope(loaded) as session:
        assert load_catalogue_dir(session, other)["inserted"] == 1
    with session_scope(loaded) as session:
        assert load_demo(session)["deleted"] == 0
    with Session(loaded) as session:
        assert session.exec(select(Responsibility).where(Responsibility.owner_ars == "99")).one()


@pytest.mark.parametrize(
    ("name", "breakage", "message"),
    [
        ("services.json", lambda rows: rows[2].update(level="bezirk"), "sh-meldebescheinigung"),
        ("services.json", lambda rows: rows[0].update(leika="9911500500000"), "14-digit"),
        ("services.json", lambda rows: rows.append(dict(rows[0])), "occurs twice"),
        ("services.json", lambda rows: rows[1].update(colour="red"), "colour"),
        ("authorities.json", lambda rows: rows[0].update(region_ars="1060"), "regional key"),
        (
            "authorities.json",
            lambda rows: rows[0]["opening_hours"].update(mon=[["12:00", "08:00"]]),
            "start < end",
        ),
        ("responsibilities.json", lambda rows: rows[0].update(authority_id="amt-nowhere"), "amt-nowhere"),
        ("responsibilities.json", lambda rows: rows[0].update(service_id=None, level=None), "needs a level"),
    ],
)
def test_bad_input_is_refused_and_leaves_the_database_intact(loaded, demo_copy, name, breakage, message):
    edit(
        demo_copy,
        "services.json",
        lambda rows: next(r for r in rows if r["id"] == "sh-reisepass").update(name="X"),
    )
    edit(demo_copy, name, breakage)
    before = counts(loaded)
    with pytest.raises(CatalogueError, match=message) as err, session_scope(loaded) as session:
        load_catalogue_dir(session, demo_copy)
    assert name in str(err.value)
    assert counts(loaded) == before
    with Session(loaded) as session:  # the valid change in the same catalogue was not written either
        assert session.get(Service, "sh-reisepass").name != "X"


def test_unreadable_catalogues_get_a_clear_error(tmp_path, engine):
    with Session(engine) as session:
        with pytest.raises(CatalogueError, match="not a directory"):
            load_catalogue_dir(session, tmp_path / "missing")
        with pytest.raises(CatalogueError, match="none of"):
            load_catalogue_dir(session, tmp_path)
        (tmp_path / "services.json").write_text("[{", encoding="utf-8")
        with pytest.raises(CatalogueError, match="not JSON"):
            load_catalogue_dir(session, tmp_path)
        (tmp_path / "services.json").write_text('{"id": "x"}', encoding="utf-8")
        with pytest.raises(CatalogueError, match="JSON list"):
            load_catalogue_dir(session, tmp_path)


@pytest.mark.postgres
def test_demo_loads_idempotently_on_postgres(postgres_url):
    engine = make_engine(postgres_url)
    try:
        create_schema(engine)
        with session_scope(engine) as session:
            first = load_demo(session)
        with session_scope(engine) as session:
            second = load_demo(session)
        assert first["inserted"] == first["services"] + first["authorities"] + first["responsibilities"]
        assert (second["inserted"], second["updated"], second["deleted"]) == (0, 0, 0)
        assert counts(engine) == (first["services"], first["authorities"], first["responsibilities"])
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the lookup benchmark


def read_queries() -> list[dict]:
    return [json.loads(line) for line in QUERIES.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_lookup_queries_reference_the_catalogue_and_are_not_copies_of_it():
    queries = read_queries()
    assert len(queries) >= 150
    services = {s["id"]: s for s in demo_json("services.json")}
    authorities = {a["id"] for a in demo_json("authorities.json")}
    catalogue_words = {s["name"].lower() for s in services.values()}
    catalogue_words |= {x.lower() for s in services.values() for x in s["synonyms"]}
    for q in queries:
        assert set(q) == {"query", "location", "service", "authority"}, q
        assert q["service"] in services, q
        assert q["authority"] is None or q["authority"] in authorities, q
        assert q["location"] is not None or q["authority"] is None, q
        assert q["query"].strip().lower() not in catalogue_words, q
    assert len({q["query"].lower() for q in queries}) == len(queries)
    # every service family is asked for
    assert {q["service"] for q in queries} == set(services)


def test_lookup_queries_expect_what_the_responsibility_rules_give(kb):
    """The expected authority of each query is the one the real place resolver and responsibility walk
    give for the expected service (None when the place is ambiguous and the candidates differ)."""
    wrong = []
    for q in read_queries():
        if q["location"] is None:
            continue
        service = kb.services[q["service"]]
        place = kb.resolve_place(q["location"])
        if place is None:
            got = None
        elif place.match is not None:
            got = kb.responsible_for(service, place.match).authority_id
        else:
            found = {kb.responsible_for(service, region).authority_id for region, _ in place.candidates}
            got = found.pop() if len(found) == 1 else None
        if got != q["authority"]:
            wrong.append((q["query"], q["location"], q["authority"], got))
    assert wrong == []
