"""The service search index: typos, inflection, compounds, sentences, updates, bad input.

Most cases run against the real München catalogue (parsed with the DLDB importer), the rest against a
few hand-written services with colloquial and English synonyms.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from knowledge.importers import parse_dldb
from knowledge.lookup import MAX_QUERY_CHARS, Hit, SearchDoc, ServiceIndex
from knowledge.models import Service

ROOT = Path(__file__).resolve().parents[2]
MUENCHEN = Path(os.environ.get("CITIZEN_HUB_SHARED", ROOT.parent / "shared")) / "data" / "catalogs" / "muenchen"

WOHNSITZ = "muc-1063475"  # Wohnsitzanmeldung
PERSO = "muc-1063441"  # Personalausweis
PERSO_VERLUST = "muc-1076889"  # Verlust oder Diebstahl Personalausweis
REISEPASS = "muc-1063453"
GEWERBE_AN = "muc-1063423"  # Gewerbe-Anmeldung
FUEHRERSCHEIN_EU = "muc-1071944"  # Umschreibung EU/EWR-Führerschein
FZ = "muc-1063565"  # Führungszeugnis


@pytest.fixture(scope="module")
def muenchen() -> list[Service]:
    if not (MUENCHEN / "services_de.json").exists():
        pytest.skip(f"the München export is not at {MUENCHEN} (set CITIZEN_HUB_SHARED)")
    return parse_dldb(MUENCHEN / "services_de.json", id_prefix="muc", region_ars="09162").services


@pytest.fixture(scope="module")
def index(muenchen) -> ServiceIndex:
    return ServiceIndex.from_services(muenchen)


def top(index: ServiceIndex, query: str, n: int = 1) -> list[str]:
    return [h.id for h in index.search(query, n)]


# -- the München catalogue -------------------------------------------------------------------------


def test_builds_from_services(index, muenchen):
    assert len(index) == len(muenchen) == 287
    assert PERSO in index


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Personalausweis", PERSO),
        ("personalauswies", PERSO),  # transposed letters
        ("Personalausweiss", PERSO),  # doubled letter
        ("Wohnsitzanmeldung", WOHNSITZ),
        ("Wohnsitzanmeldng", WOHNSITZ),  # typo inside a compound
        ("Führungszeugnis", FZ),
        ("fuehrungszeugnis", FZ),
        ("Fuhrungszeugnis", FZ),  # umlaut dropped instead of transliterated
        ("Gewerbe anmelden", GEWERBE_AN),
        ("Reisepass beantragen", REISEPASS),
        ("99050012104000", GEWERBE_AN),  # a LeiKa key
    ],
)
def test_finds_the_service(index, query, expected):
    assert top(index, query) == [expected]


@pytest.mark.parametrize("query", ["Führerschien", "Fuehrerschein umschreiben", "Führerschein umschreiben"])
def test_typos_and_transliteration_find_the_same_service(index, query):
    assert FUEHRERSCHEIN_EU in top(index, query, 2)


def test_typo_without_vowel(index):
    # "ummeldng": Ummeldung is a synonym of three services; all three are offered, the Wohnsitz one among them.
    assert WOHNSITZ in top(index, "ummeldng", 3)
    assert index.search("ummeldng", 1)[0].score >= 75


@pytest.mark.parametrize("query", ["Wohnsitz anmelden", "anmeldung wohnsitz", "Wohnsitzanmeldung", "wohnsitz anmeldungen"])
def test_compound_and_its_parts_match_each_other(index, query):
    hits = index.search(query, 3)
    assert hits[0].id == WOHNSITZ
    assert hits[0].score >= 90, "both parts of the compound are there: a full match"


def test_word_order_does_not_matter(index):
    a, b = index.search("Personalausweis verloren", 5), index.search("verloren Personalausweis", 5)
    assert [h.id for h in a] == [h.id for h in b]
    assert a[0].id == PERSO_VERLUST  # "Personalausweisverlust" is a synonym: compound of both words


def test_umlauts_and_sharp_s_are_spelling_variants(index):
    for a, b in [("Führungszeugnis", "Fuehrungszeugnis"), ("Straßenverkehr", "Strassenverkehr")]:
        assert index.search(a, 5) == index.search(b, 5)


def test_a_long_sentence_does_not_dilute_the_score(index):
    short = index.search("Personalausweis verloren", 1)[0]
    long = index.search(
        "Hallo, ich habe gestern beim Einkaufen leider meinen Personalausweis verloren, was muss ich jetzt tun?", 1
    )[0]
    assert long.id == short.id == PERSO_VERLUST
    assert long.score >= short.score - 10 and long.score >= 85


def test_colloquial_sentence(index):
    hits = index.search("ich bin umgezogen und muss mich ummelden", 3)
    assert WOHNSITZ in [h.id for h in hits[:2]]
    assert hits[0].score >= 80


def test_hits_are_ranked_scored_and_say_what_matched(index, muenchen):
    names = {s.id: [s.name, *s.synonyms] for s in muenchen}
    hits = index.search("Führerschein", 10)
    assert 1 < len(hits) <= 10
    assert all(isinstance(h, Hit) and 0 < h.score <= 100 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len({h.id for h in hits}) == len(hits)
    for h in hits:
        assert h.matched in names[h.id], "matched is the service's name or one of its synonyms"


def test_unrelated_words_find_nothing_or_little(index):
    assert index.search("xyzzy qwrtz", 5) == []
    assert all(h.score < 55 for h in index.search("Mallorca Sonnenschein Strand", 5))


def test_same_catalogue_same_answers_whatever_the_insertion_order(muenchen, index):
    reverse = ServiceIndex.from_services(reversed(muenchen))
    for q in ["Ausweis", "Pass", "Wohnung anmelden", "Kennzeichen verloren", "Hund"]:
        assert reverse.search(q, 10) == index.search(q, 10)


def test_answers_do_not_depend_on_the_process_hash_seed(muenchen):
    """Sets of strings iterate in another order in every process; the ranking must not follow them."""
    script = (
        "import json, sys\n"
        "from knowledge.importers import parse_dldb\n"
        "from knowledge.lookup import ServiceIndex\n"
        f"index = ServiceIndex.from_services(parse_dldb({str(MUENCHEN / 'services_de.json')!r}, "
        "id_prefix='muc', region_ars='09162').services)\n"
        "queries = ['Ausweis', 'Pass', 'ummeldng', 'Kennzeichen weg', 'Fuehrerschien', 'Hund', 'Gewerbe']\n"
        "print(json.dumps([[(h.id, h.score) for h in index.search(q, 10)] for q in queries]))\n"
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        outputs.add(done.stdout)
    assert len(outputs) == 1


# -- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "   ", "\x00", "\x00\x01\x1b[31m", "😀😀😀", "\ud800\udfff", "!!!???", "der die das"])
def test_empty_or_garbage_query_gives_nothing(index, query):
    assert index.search(query) == []


@pytest.mark.parametrize("query", [None, 42, b"Personalausweis", ["Pass"]])
def test_non_text_query_gives_nothing(index, query):
    assert index.search(query) == []  # type: ignore[arg-type]


def test_control_characters_inside_words_separate_them(index):
    assert top(index, "Personal\x00ausweis") == top(index, "Personal ausweis")
    assert top(index, "Personalausweis\x07\x1b") == [PERSO]


def test_huge_queries_are_cut(index):
    ten_kb = ("Personalausweis verloren " + "bla " * 2500)[:10_000]
    hits = index.search(ten_kb)
    assert hits and hits[0].id == PERSO_VERLUST
    one_word = "a" * 50_000
    assert index.search(one_word) == []
    beyond = "x " * MAX_QUERY_CHARS + "Personalausweis"
    assert index.search(beyond) == [], "text after the cut is not looked at"


def test_limit(index):
    assert index.search("Ausweis", 0) == []
    assert len(index.search("Ausweis", 1)) == 1
    assert len(index.search("Ausweis", 3)) == 3


# -- hand-written services -----------------------------------------------------------------------------


def demo_docs() -> list[SearchDoc]:
    return [
        SearchDoc("sh-perso", "Personalausweis beantragen", ["Perso", "Ausweis", "ID card", "identity card"],
                  text="Den Personalausweis beantragen Sie persönlich.", topic="Ausweise", leika="99008001000000"),
        SearchDoc("sh-wohnsitz", "Anmeldung einer Wohnung", ["Wohnsitz anmelden", "Ummeldung", "Umzug",
                  "register my address", "change of address"], topic="Meldewesen"),
        SearchDoc("sh-hund", "Hundesteuer anmelden", ["Hund anmelden", "dog tax"], topic="Steuern"),
        SearchDoc("sh-strasse", "Straßensperrung beantragen", ["Sondernutzung Straße", "Umzugswagen Halteverbot"],
                  text="Für einen Umzugswagen vor dem Haus braucht es eine Halteverbotszone."),
        SearchDoc("sh-sperrmuell", "Sperrmüll anmelden", ["Sperrmüllabholung", "alte Möbel entsorgen"],
                  text="Die Abfallwirtschaft holt Sperrmüll zweimal im Jahr kostenlos ab."),
    ]  # fmt: skip


@pytest.fixture()
def small() -> ServiceIndex:
    return ServiceIndex(demo_docs())


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Perso", "sh-perso"),
        ("neuer perso", "sh-perso"),
        ("I need a new ID card", "sh-perso"),
        ("how do I register my address", "sh-wohnsitz"),
        ("Wohnsitzanmeldung", "sh-wohnsitz"),
        ("Steuer für meinen Hund", "sh-hund"),  # both parts of the compound, in other words
        ("Hundesteuer", "sh-hund"),
        ("Strassensperrung", "sh-strasse"),
        ("Halteverbot für den Umzugswagen", "sh-strasse"),
        ("alte moebel entsorgen", "sh-sperrmuell"),
    ],
)
def test_colloquial_and_english_synonyms(small, query, expected):
    assert top(small, query) == [expected]


def test_description_only_match_is_found_but_scored_low(small):
    hits = small.search("Abfallwirtschaft")
    assert [h.id for h in hits] == ["sh-sperrmuell"]
    assert hits[0].score < 55
    assert hits[0].matched == "Sperrmüll anmelden", "a description match is reported under the name"


def test_upsert_and_remove_are_visible_immediately(small):
    assert small.search("Fischereischein") == []
    small.upsert(SearchDoc("sh-fisch", "Fischereischein beantragen", ["Angelschein"]))
    assert len(small) == 6
    assert top(small, "Angelschein") == ["sh-fisch"]
    assert top(small, "Fischereischien") == ["sh-fisch"], "typo correction knows the new word at once"

    small.upsert(SearchDoc("sh-fisch", "Jagdschein beantragen", ["Jägerprüfung"]))  # same id: replaced
    assert len(small) == 6
    assert small.search("Angelschein") == []
    assert small.search("Fischereischien") == []
    assert top(small, "Jagdschein") == ["sh-fisch"]

    assert small.remove("sh-fisch") is True
    assert small.remove("sh-fisch") is False
    assert len(small) == 5
    assert small.search("Jagdschein") == [] and small.search("Jagdschien") == []
    assert top(small, "Perso") == ["sh-perso"], "the others are untouched"


def test_removing_a_service_keeps_shared_words_of_the_others(small):
    small.upsert(SearchDoc("sh-hund2", "Hund abmelden", ["Hundesteuer abmelden"]))
    small.remove("sh-hund")
    assert top(small, "Hundesteuer") == ["sh-hund2"]
    small.remove("sh-hund2")
    assert small.search("Hundesteuer") == []


def test_incremental_index_equals_a_fresh_build(small):
    docs = demo_docs()
    for d in docs:  # churn: remove and re-add everything, in another order
        small.remove(d.id)
    for d in reversed(docs):
        small.upsert(d)
    fresh = ServiceIndex(docs)
    for q in ["Perso", "Umzug", "Hund", "Straße", "Sperrmüll", "register address", "Abfallwirtschaft"]:
        assert small.search(q) == fresh.search(q)


def test_searching_while_another_thread_updates(small):
    """The routing worker searches in its own thread while catalogue sync changes the index."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def churn() -> None:
        try:
            i = 0
            while not stop.is_set():
                small.upsert(SearchDoc(f"t-{i % 50}", f"Wohnung Sondergenehmigung {i}", [f"Ausweis {i}", "Umzug"]))
                small.remove(f"t-{(i * 7) % 50}")
                i += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        deadline = time.perf_counter() + 1.0
        while time.perf_counter() < deadline:
            for q in ("Umzug", "Ausweis", "Wohnung anmelden", "Sondergenehmigung 12"):
                small.search(q)
    finally:
        stop.set()
        worker.join()
    assert errors == []
    assert top(small, "Perso") == ["sh-perso"]


def test_many_upserts_each_findable(small):
    # Upsert cost is measured in bench/bench_lookup.py ("updates").
    docs = [SearchDoc(f"x-{i}", f"Dienstleistung Nummer {i} Genehmigungsverfahren", [f"Synonym{i}", "Antrag"])
            for i in range(500)]  # fmt: skip
    for d in docs:
        small.upsert(d)
    assert top(small, "Synonym321") == ["x-321"]
    assert top(small, "Synonym7") == ["x-7"]


def test_upsert_service_and_odd_documents(small):
    small.upsert_service(Service(id="sh-x", name="Wohngeld beantragen", synonyms=["Mietzuschuss"]))
    assert top(small, "Mietzuschuss") == ["sh-x"]
    small.upsert(SearchDoc("empty", "", []))  # nothing searchable: stored, never found
    small.upsert(SearchDoc("emoji", "😀", ["\x00"]))
    assert "empty" in small and "emoji" in small
    assert small.search("😀") == []
    assert small.remove("empty") and small.remove("emoji")


def test_empty_index():
    index = ServiceIndex()
    assert len(index) == 0
    assert index.search("Personalausweis") == []
