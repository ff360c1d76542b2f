"""Regions: loading the real Destatis/OSM data and resolving places, on SQLite and PostgreSQL.

Everything runs on the shipped data (no mocks). The whole of Germany is loaded once per module into a
temporary SQLite database; the index tests share that.
"""

from __future__ import annotations

import csv
import gzip
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlmodel import Session

from hub.db import create_schema, make_engine
from knowledge.models import Postcode, Region
from knowledge.regions import (
    POSTCODES_CSV,
    REGIONS_CSV,
    PlaceResolution,
    RegionIndex,
    RegionInfo,
    load_regions,
    normalize_place,
)

TODESFELDE = "010605053088"
AMT_LEEZEN = "010605053"
KREIS_SEGEBERG = "01060"
BAD_SEGEBERG = "010600005005"
HENSTEDT_ULZBURG = "010600039039"
WAKENDORF_I = "010605086093"
WAKENDORF_II = "010605048094"
TRAPPENKAMP = "010605024089"
KALTENKIRCHEN = "010600044044"
SEEDORF_SEGEBERG = "010605086075"  # Amt Trave-Land, Kreis Segeberg
SEEDORF_LAUENBURG = "010535358117"  # Amt Lauenburgische Seen, Kreis Herzogtum Lauenburg
SEEDORF_ROTENBURG = "033575404042"  # Samtgemeinde Selsingen, Landkreis Rotenburg (Wümme)

# What the shipped extract holds (31.12.2019). 1,210 Verbände are the real ones (textkennzeichen 51-58);
# the other 3,396 satzart-50 rows are verbandsfreie Gemeinden and get no row of their own.
N_LAND, N_KREIS, N_AMT, N_GEMEINDE = 16, 401, 1210, 11004
# 12,883 OSM pairs, one of which names Moorgrund (16063094), merged into Bad Salzungen before the extract.
N_POSTCODE_PAIRS = 12882


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """All of Germany in a temporary SQLite database: (engine, load counts, load seconds)."""
    path = tmp_path_factory.mktemp("regions") / "t.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    with Session(engine) as session:
        start = time.perf_counter()
        counts = load_regions(session)
        seconds = time.perf_counter() - start
    yield engine, counts, seconds
    engine.dispose()


@pytest.fixture(scope="module")
def index(loaded) -> RegionIndex:
    engine, _, _ = loaded
    with Session(engine) as session:
        return RegionIndex.from_session(session)


def arss(resolution: PlaceResolution) -> list[str]:
    return [r.ars for r, _ in resolution.candidates]


# -- loading ---------------------------------------------------------------------------------------


def test_load_counts_every_level(loaded):
    engine, counts, _ = loaded
    assert counts == (N_LAND + N_KREIS + N_AMT + N_GEMEINDE, N_POSTCODE_PAIRS)
    with Session(engine) as session:
        levels = dict(session.execute(select(Region.level, func.count()).group_by(Region.level)).all())
        pairs = session.execute(select(func.count()).select_from(Postcode)).scalar_one()
    assert levels == {"land": N_LAND, "kreis": N_KREIS, "amt": N_AMT, "gemeinde": N_GEMEINDE}
    assert pairs == N_POSTCODE_PAIRS


def test_load_keeps_population_postcode_and_decimal_comma_coordinates(loaded):
    engine, _, _ = loaded
    with Session(engine) as session:
        town = session.get(Region, BAD_SEGEBERG)
        kreis = session.get(Region, KREIS_SEGEBERG)
        kreis_sum = session.execute(
            select(func.sum(Region.population)).where(
                Region.level == "gemeinde", Region.ars.startswith("01060")
            )
        ).scalar_one()
    assert (town.ags, town.name, town.level, town.kind) == (
        "01060005",
        "Bad Segeberg, Stadt",
        "gemeinde",
        "Stadt",
    )
    assert town.population == 17381  # " 17 381" in the file
    assert town.postcode == "23795"
    assert town.lat == pytest.approx(53.94, abs=0.05) and town.lon == pytest.approx(10.31, abs=0.05)
    assert kreis.population == kreis_sum > 250_000


def test_verbandsfreie_gemeinde_hangs_below_the_kreis(loaded, index):
    engine, _, _ = loaded
    with Session(engine) as session:
        # Bad Segeberg's satzart-50 row (vb 0005, textkennzeichen 50) is not a Verband and has no row.
        assert session.get(Region, "010600005") is None
    assert index.get(BAD_SEGEBERG).parent_ars == KREIS_SEGEBERG
    assert index.get(HENSTEDT_ULZBURG).kind == "amtsfreie Gemeinde"
    assert [r.level for r in index.chain(BAD_SEGEBERG)] == ["gemeinde", "kreis", "land"]


def test_kreisfreie_stadt_is_a_kreis_with_its_gemeinde_below(index):
    kreis, city = index.get("01001"), index.get("010010000000")
    assert (kreis.level, kreis.kind, kreis.display_name, kreis.parent_ars) == (
        "kreis",
        "kreisfreie Stadt",
        "Flensburg",
        "01",
    )
    assert (city.level, city.parent_ars, city.ags) == ("gemeinde", "01001", "01001000")
    assert kreis.population == city.population == 90164


def test_todesfelde_chain_amt_kreis_land(index):
    chain = index.chain(TODESFELDE)
    assert [r.ars for r in chain] == [TODESFELDE, AMT_LEEZEN, KREIS_SEGEBERG, "01"]
    assert [r.display_name for r in chain] == [
        "Todesfelde",
        "Amt Leezen",
        "Kreis Segeberg",
        "Schleswig-Holstein",
    ]
    assert [r.level for r in chain] == ["gemeinde", "amt", "kreis", "land"]
    assert chain[1].kind == "Amt" and chain[2].kind == "Kreis"
    assert index.by_ags("01060088") == chain[0]
    assert index.chain("999999999999") == []


def test_reload_is_idempotent(loaded):
    engine, counts, _ = loaded
    with Session(engine) as session:
        assert load_regions(session) == counts
        regions = session.execute(select(func.count()).select_from(Region)).scalar_one()
        pairs = session.execute(select(func.count()).select_from(Postcode)).scalar_one()
    assert (regions, pairs) == counts


def test_plain_csv_subset_replaces_the_tables(tmp_path):
    """Uncompressed files work, and a reload with other data replaces instead of adding."""
    regions_csv, postcodes_csv = tmp_path / "gv.csv", tmp_path / "plz.csv"
    with gzip.open(REGIONS_CSV, "rt", encoding="utf-8-sig", newline="") as src:
        rows = list(csv.reader(src))
    # Keep Schleswig-Holstein's Land row and Kreis Segeberg; write with a BOM like Destatis does.
    keep = [rows[0]] + [r for r in rows[1:] if r[2] == "01" and (r[0] == "10" or r[4] == "60")]
    with open(regions_csv, "w", encoding="utf-8-sig", newline="") as out:
        csv.writer(out).writerows(keep)
    with gzip.open(POSTCODES_CSV, "rt", encoding="utf-8", newline="") as src:
        plz_rows = list(csv.reader(src))
    with open(postcodes_csv, "w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows([plz_rows[0]] + [r for r in plz_rows[1:] if r[1].startswith("01060")])

    engine = make_engine(f"sqlite:///{tmp_path}/subset.sqlite3")
    create_schema(engine)
    with Session(engine) as session:
        first = load_regions(session, regions_csv, postcodes_csv)
        second = load_regions(session, str(regions_csv), str(postcodes_csv))
        n_regions = session.execute(select(func.count()).select_from(Region)).scalar_one()
        n_segeberg = session.execute(
            select(func.count()).select_from(Region).where(Region.level == "gemeinde")
        ).scalar_one()
        index = RegionIndex.from_session(session)
    engine.dispose()
    assert first == second and first[0] == n_regions
    assert n_segeberg == 96  # incl. the uninhabited Forstgutsbezirk Buchholz (gemeindefreies Gebiet)
    assert index.resolve("Todesfelde").match.ars == TODESFELDE


# -- resolve ---------------------------------------------------------------------------------------


def test_postcode_23795_is_ambiguous_between_bad_segeberg_and_two_aemter(index):
    r = index.resolve("23795")
    assert r.match is None and r.ambiguous and r.method == "postcode"
    assert "23795" in r.reason
    # Every municipality of the postcode, not cut to the default limit of 10.
    assert len(r.candidates) == 14
    assert r.candidates[0][0].ars == BAD_SEGEBERG  # the largest first
    parents = {index.get(c.parent_ars).display_name for c, _ in r.candidates}
    assert parents == {"Kreis Segeberg", "Amt Trave-Land", "Amt Leezen"}
    villages = [c for c, _ in r.candidates if c.ars != BAD_SEGEBERG]
    assert len(villages) == 13 and all(c.level == "amt" for c in (index.get(v.parent_ars) for v in villages))


@pytest.mark.parametrize(
    "plz, ars", [("23812", "010600092092"), ("24623", "010605005027"), ("23823", SEEDORF_SEGEBERG)]
)
def test_postcode_with_one_municipality_matches(index, plz, ars):
    r = index.resolve(plz)
    assert r.match is not None and r.match.ars == ars and not r.ambiguous


@pytest.mark.parametrize(
    "query",
    [
        "Henstedt-Ulzburg",
        "Henstedt Ulzburg",
        "henstedt ulzburg",
        "HENSTEDT-ULZBURG",
        "Henstedt-Ulzbrug",
        "Henstedtulzburg",
    ],
)
def test_henstedt_ulzburg_with_spellings_and_typos(index, query):
    r = index.resolve(query)
    assert r.match is not None and r.match.ars == HENSTEDT_ULZBURG, r.reason


@pytest.mark.parametrize(
    "query", ["Bad Segeberg", "Segeberg", "Bad Segeberg, Stadt", "Stadt Bad Segeberg", "Segebreg"]
)
def test_segeberg_means_the_town(index, query):
    r = index.resolve(query)
    assert r.match is not None and r.match.ars == BAD_SEGEBERG and r.match.level == "gemeinde"
    assert r.match.display_name == "Bad Segeberg" and r.match.name == "Bad Segeberg, Stadt"


@pytest.mark.parametrize(
    "query, ars",
    [
        ("Wakendorf 2", WAKENDORF_II),
        ("Wakendorf II", WAKENDORF_II),
        ("Wakendorf I", WAKENDORF_I),
        ("wakendorf 1", WAKENDORF_I),
    ],
)
def test_roman_and_arabic_numerals(index, query, ars):
    assert index.resolve(query).match.ars == ars


def test_wakendorf_alone_is_ambiguous(index):
    r = index.resolve("Wakendorf")
    assert r.match is None and r.ambiguous
    assert set(arss(r)) == {WAKENDORF_I, WAKENDORF_II}
    assert "Wakendorf I" in r.reason and "Wakendorf II" in r.reason


@pytest.mark.parametrize(
    "query, ars",
    [
        ("Lübeck", "010030000000"),
        ("Luebeck", "010030000000"),
        ("Lubeck", "010030000000"),
        ("Groß Rönnau", "010605086030"),
        ("Gross Roennau", "010605086030"),
        ("Bornhoeved", "010605024012"),
        ("München", "091620000000"),
        ("Muenchen", "091620000000"),
        ("St. Peter-Ording", "010545417113"),
        ("Sankt Peter Ording", "010545417113"),
    ],
)
def test_umlaut_sharp_s_and_abbreviation_spellings(index, query, ars):
    r = index.resolve(query)
    assert r.match is not None and r.match.ars == ars, r.reason


def test_duplicated_name_resolves_inside_the_home_region(index, loaded):
    # Seedorf exists in Kreis Segeberg, Kreis Herzogtum Lauenburg and Landkreis Rotenburg (Wümme).
    r = index.resolve("Seedorf")
    assert r.match.ars == SEEDORF_SEGEBERG and not r.ambiguous
    assert set(arss(r)) == {SEEDORF_SEGEBERG, SEEDORF_LAUENBURG, SEEDORF_ROTENBURG}
    assert index.resolve("Seedorf", home_region="01053").match.ars == SEEDORF_LAUENBURG
    outside = index.resolve("Seedorf", home_region="")
    assert outside.match is None and outside.ambiguous and len(outside.candidates) == 3
    # A home region that holds none of them (Bayern) leaves it ambiguous too.
    assert index.resolve("Seedorf", home_region="09").ambiguous
    engine, _, _ = loaded
    with Session(engine) as session:
        lower_saxony = RegionIndex.from_session(session, home_region="03")
    assert lower_saxony.resolve("Seedorf").match.ars == SEEDORF_ROTENBURG
    assert lower_saxony.resolve("Leezen").ambiguous  # one in Schleswig-Holstein, one in Mecklenburg
    assert index.resolve("Leezen", home_region="13").match.ars == "130765668082"
    assert index.resolve("Leezen").match.ars == "010605053053"


def test_ambiguous_names_rank_by_population(index):
    r = index.resolve("Frankfurt")
    assert r.ambiguous and r.candidates[0][0].display_name == "Frankfurt am Main"
    r = index.resolve("Halle")
    assert r.ambiguous and r.candidates[0][0].display_name == "Halle (Saale)"
    assert len(index.resolve("Neuenkirchen").candidates) == 10  # 11 exist; limit=10 by default
    assert len(index.resolve("Neuenkirchen", limit=20).candidates) == 11


@pytest.mark.parametrize(
    "query, ars, level",
    [
        (TODESFELDE, TODESFELDE, "gemeinde"),
        ("01060088", TODESFELDE, "gemeinde"),
        ("0106 0088", TODESFELDE, "gemeinde"),
        (AMT_LEEZEN, AMT_LEEZEN, "amt"),
        ("01060", KREIS_SEGEBERG, "kreis"),  # not a postcode, so the Kreis key
    ],
)
def test_ars_and_ags_are_exact(index, query, ars, level):
    r = index.resolve(query)
    assert r.match is not None and (r.match.ars, r.match.level) == (ars, level)


@pytest.mark.parametrize(
    "query, ars",
    [
        ("23795 Bad Segeberg", BAD_SEGEBERG),
        ("Bad Segeberg 23795", BAD_SEGEBERG),
        ("D-23795 Bad Segeberg", BAD_SEGEBERG),
        ("23795 Mözen", "010605053057"),
        ("23795 Moezn", "010605053057"),
        ("24558 Wakendorf", WAKENDORF_II),  # the postcode decides between I and II
    ],
)
def test_postcode_and_name_narrow_to_one(index, query, ars):
    r = index.resolve(query)
    assert r.match is not None and r.match.ars == ars, r.reason


def test_postcode_and_name_that_do_not_fit(index):
    r = index.resolve("23795 Kiel")
    assert r.match is None and r.ambiguous
    assert "umfasst" in r.reason and "nicht" in r.reason
    assert "010020000000" in arss(r) and BAD_SEGEBERG in arss(r)


@pytest.mark.parametrize(
    "query, ars, level",
    [
        ("Kreis Segeberg", KREIS_SEGEBERG, "kreis"),
        ("Landkreis Segeberg", KREIS_SEGEBERG, "kreis"),
        ("Nordfriesland", "01054", "kreis"),
        ("Schleswig-Holstein", "01", "land"),
        ("Amt Leezen", AMT_LEEZEN, "amt"),
        ("Leezen", "010605053053", "gemeinde"),  # the Gemeinde, not its Amt
        ("Kreis Oldenburg", "03458", "kreis"),  # the Landkreis, not the kreisfreie Stadt Oldenburg
    ],
)
def test_kreis_amt_and_land_names(index, query, ars, level):
    r = index.resolve(query)
    assert r.match is not None and (r.match.ars, r.match.level) == (ars, level)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        "x" * 10_000,
        "\x00",
        "\x00\x01\x02",
        "\u200b",
        "Xyzzyhausen",
        "!!!",
        "12",
        "123",
        "99999",
        None,
    ],
)
def test_bad_input_gives_a_reason_never_an_exception(index, query):
    r = index.resolve(query)
    assert r.match is None and not r.ambiguous and r.candidates == []
    assert r.reason


def test_district_after_the_municipality(index):
    r = index.resolve("Norderstedt-Garstedt")
    assert r.match.ars == "010600063063" and r.method == "partial"


def test_unknown_postcode_with_a_good_name(index):
    r = index.resolve("99999 Kaltenkirchen")
    assert r.match.ars == KALTENKIRCHEN and "99999" in r.reason


def test_control_characters_around_a_name_are_ignored(index):
    assert index.resolve("\x00Bad\tSegeberg\x07\n").match.ars == BAD_SEGEBERG


def test_a_sentence_in_the_place_field(index):
    assert index.resolve("ich wohne in Trappenkamp").match.ars == TRAPPENKAMP


# Timings (load, index build, fuzzy resolution against a rapidfuzz scan) are in bench/bench_regions.py.
def test_fuzzy_resolution_of_typos_and_nonsense(index):
    expected = {"Henstedt-Ulzbrug": "Henstedt-Ulzburg", "Kaltenkirchn": "Kaltenkirchen",
                "Norderstet": "Norderstedt", "Bornhövedd": "Bornhöved"}
    for query, name in expected.items():
        res = index.resolve(query)
        assert res.match is not None and res.match.display_name == name, (query, res)
    nonsense = index.resolve("Xyzzyhausen")
    assert nonsense.match is None and nonsense.reason


# -- find_in_text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sentence, ars",
    [
        ("wir wohnen jetzt in Trappenkamp und wollen uns ummelden", TRAPPENKAMP),
        ("Ich bin nach 24568 Kaltenkirchen gezogen", KALTENKIRCHEN),
        ("Wir sind von Kiel nach Henstedt-Ulzburg gezogen.", HENSTEDT_ULZBURG),  # destination beats origin
        (
            "Henstedt-Ulzburg: wann ist das Bürgerbüro offen?",
            HENSTEDT_ULZBURG,
        ),  # multiword needs no preposition
        ("Mein Sohn wohnt in Bad Bramstedt", "010600004004"),
        ("Adresse: Hauptstraße 5, 23795 Bad Segeberg", BAD_SEGEBERG),
        ("Ich wohne in Segeberg", BAD_SEGEBERG),
        ("Umzug nach 24558 Wakendorf II", WAKENDORF_II),
        ("Ich komme aus Wakendorf 2", WAKENDORF_II),
        ("Wir ziehen aus Hamburg nach Seedorf", SEEDORF_SEGEBERG),  # home region decides
        ("Wohne in Kaltenkirchn seit Mai", KALTENKIRCHEN),  # a typo after a preposition
        ("Ich wohne in St. Peter-Ording.", "010545417113"),
        ("\x00\x01 ich lebe in Kiel", "010020000000"),
    ],
)
def test_find_in_text(index, sentence, ars):
    r = index.find_in_text(sentence)
    assert r is not None and r.match is not None and r.match.ars == ars, r


def test_find_in_text_kreis_and_amt(index):
    assert index.find_in_text("Ich lebe im Kreis Segeberg").match.ars == KREIS_SEGEBERG
    assert index.find_in_text("Das Amt Leezen hat nicht geantwortet").match.ars == AMT_LEEZEN


def test_find_in_text_ambiguous_place(index):
    r = index.find_in_text("Hallo, ich wohne in Wakendorf und brauche einen Pass")
    assert r is not None and r.match is None and r.ambiguous
    assert set(arss(r)) == {WAKENDORF_I, WAKENDORF_II}
    r = index.find_in_text("PLZ 23795, bitte einen Termin")
    assert r is not None and r.ambiguous and len(r.candidates) == 14


@pytest.mark.parametrize(
    "sentence",
    [
        "Ich habe meinen Ausweis verloren",
        "",
        "Termin in Ordnung?",
        "Ich wohne in Wald und gehe gern in den Wald",  # "Wald" is a Gemeinde, but here a word
        "Bei Regen fällt der Bus aus",
        "Wir fahren nach Norden",
        "Meine Kundennummer ist 23795.",  # a known postcode, but nothing says it is one
        "ich wohne in trappenkamp",  # lowercase never counts
        "Mein Name ist Ernst Berg",
        "x" * 10_000,
        "\x00",
    ],
)
def test_find_in_text_negatives(index, sentence):
    assert index.find_in_text(sentence) is None


def test_find_in_text_designation_allows_common_words(index):
    r = index.find_in_text("Ich wohne in der Gemeinde Wald")
    assert r is not None and r.ambiguous and all(c.display_name == "Wald" for c, _ in r.candidates)


# -- normalization and construction ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, key",
    [
        ("Bad Segeberg, Stadt", "bad segeberg"),
        ("Henstedt-Ulzburg", "henstedt ulzburg"),
        ("Wakendorf II", "wakendorf 2"),
        ("Wakendorf 2", "wakendorf 2"),
        ("Wakendorf I", "wakendorf 1"),
        ("Großenaspe", "grossenaspe"),
        ("Lübeck, Hansestadt", "luebeck"),
        ("St. Peter-Ording", "sankt peter ording"),
        ("Pfaffenhofen a.d.Ilm", "pfaffenhofen an der ilm"),
        ("Cottbus/Chóśebuz, Stadt", "cottbus chosebuz"),
        ("Bösenbrunn, Eichigt und Triebel/Vogtl.", "boesenbrunn eichigt und triebel vogtl"),
        ("", ""),
    ],
)
def test_normalize_place(raw, key):
    assert normalize_place(raw) == key


def test_index_from_plain_records():
    regions = [
        {
            "ars": "01",
            "ags": "01",
            "name": "Schleswig-Holstein",
            "level": "land",
            "kind": "Land",
            "parent_ars": None,
        },
        {
            "ars": "01060",
            "ags": "01060",
            "name": "Segeberg",
            "level": "kreis",
            "kind": "Kreis",
            "parent_ars": "01",
        },
        RegionInfo(
            TODESFELDE, "01060088", "Todesfelde", "Todesfelde", "gemeinde", "Gemeinde", "01060", 1090, "23826"
        ),
    ]
    small = RegionIndex(regions, [("23826", "01060088")], home_region="01")
    assert [r.display_name for r in small.chain(TODESFELDE)] == [
        "Todesfelde",
        "Kreis Segeberg",
        "Schleswig-Holstein",
    ]
    assert small.resolve("23826").match.ars == TODESFELDE
    assert small.resolve("Todesfeld").match.ars == TODESFELDE
    assert len(small) == 3


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_load_into_postgresql(postgres_url):
    """``postgres_url`` (tests/conftest.py) is a fresh schema, dropped afterwards; skipped without a server,
    except on CI."""
    engine = make_engine(postgres_url)
    try:
        create_schema(engine)
        with Session(engine) as session:
            counts = load_regions(session)
            assert load_regions(session) == counts  # idempotent
            n_regions = session.execute(select(func.count()).select_from(Region)).scalar_one()
            n_pairs = session.execute(select(func.count()).select_from(Postcode)).scalar_one()
            index = RegionIndex.from_session(session)
            schema = session.execute(text("SELECT current_schema()")).scalar_one()
    finally:
        engine.dispose()
    assert schema.startswith("t_")  # really the throw-away schema, not public
    assert counts == (N_LAND + N_KREIS + N_AMT + N_GEMEINDE, N_POSTCODE_PAIRS) == (n_regions, n_pairs)
    assert [r.ars for r in index.chain(TODESFELDE)] == [TODESFELDE, AMT_LEEZEN, KREIS_SEGEBERG, "01"]
    assert index.resolve("23795 Bad Segeberg").match.ars == BAD_SEGEBERG


def test_shipped_files_exist():
    assert Path(REGIONS_CSV).is_file() and Path(POSTCODES_CSV).is_file()
