"""The one clarification rule (knowledge/clarify.py): pure cases, the demo knowledge base, the labelled set.

The margins were calibrated on tests/data/route-labelled/*.dev.jsonl; the targets of issue 13 are
checked here on the held-out parts (*.heldout.jsonl), which the calibration never saw.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from catalog_support import MUENCHEN, regions_template_fixture  # noqa: F401  (fixture)

from hub.cli.knowledge import evaluate_routes, read_labelled
from knowledge.clarify import (
    AMBIGUOUS,
    GENERAL_COVERAGE,
    KNOWN,
    MISSING,
    UNKNOWN,
    Margins,
    Option,
    PlaceState,
    clarify,
    misses_the_object,
    same_service,
    too_general,
)

LABELLED = Path(__file__).resolve().parents[1] / "data" / "route-labelled"
HU = "Henstedt-Ulzburg"


def opt(key, confidence, offices=("a",), name=None, leika=None):
    return Option(key, name or key, confidence, frozenset(offices), leika)


# -- the rule, pure ----------------------------------------------------------------------------------------


def test_nothing_matches_is_flagged():
    verdict = clarify([], PlaceState(KNOWN))
    assert verdict.needed and "keine passende Leistung" in verdict.reason


@pytest.mark.parametrize("confidence", [1.0, 0.74, 0.56])
def test_a_lone_candidate_is_not_flagged_for_its_absolute_score(confidence):
    assert not clarify([opt("Reisepass beantragen", confidence)], PlaceState(KNOWN)).needed


def test_a_missing_place_matters_only_when_the_places_have_different_offices():
    same = clarify([opt("Wunschkennzeichen", 1.0, offices=("kreis",))], PlaceState(MISSING, None, 95))
    assert not same.needed
    differ = clarify([opt("Personalausweis", 1.0, offices=("amt-1", "stadt-2"))], PlaceState(MISSING, None, 95))
    assert differ.needed and "kein Ort angegeben" in differ.reason


def test_an_ambiguous_place_matters_only_when_the_places_have_different_offices():
    place = PlaceState(AMBIGUOUS, "Postleitzahl 23795 umfasst 14 Gemeinden", 14)
    assert not clarify([opt("KFZ", 1.0, offices=("kreis",))], place).needed
    verdict = clarify([opt("Ausweis", 1.0, offices=("amt", "stadt", None))], place)
    assert verdict.needed and "14 mögliche Orte" in verdict.reason and "23795" in verdict.reason


def test_an_unknown_place_or_no_office_is_flagged():
    assert clarify([opt("x", 1.0)], PlaceState(UNKNOWN, "kein Ort namens 'Springfield' gefunden")).reason.endswith(
        "'Springfield' gefunden"
    )
    assert clarify([opt("x", 1.0, offices=(None,))], PlaceState(KNOWN)).needed


def test_a_close_competitor_at_another_office_is_flagged_a_distant_one_is_not():
    margins = Margins(office=0.10, service=0.06)
    close = clarify([opt("Baugenehmigung", 0.80, ("kreis",)), opt("Bauberatung", 0.75, ("stadt",))], PlaceState(KNOWN), margins)
    assert close.needed and close.competitor == "Bauberatung" and close.margin == pytest.approx(0.05)
    far = clarify([opt("Baugenehmigung", 0.90, ("kreis",)), opt("Bauberatung", 0.75, ("stadt",))], PlaceState(KNOWN), margins)
    assert not far.needed


def test_a_close_clearly_different_service_is_flagged_even_at_the_same_office():
    options = [
        opt("p", 0.86, name="Personalausweis beantragen", leika="99008001000000"),
        opt("r", 0.86, name="Reisepass beantragen", leika="99085001000000"),
    ]
    verdict = clarify(options, PlaceState(KNOWN))
    assert verdict.needed and "verschiedene Leistungen" in verdict.reason


def test_variants_of_one_leistung_at_the_same_office_are_not_a_reason_to_ask():
    options = [
        opt("r", 1.0, name="Reisepass beantragen", leika="99085001000000"),
        opt("v", 0.97, name="Vorläufigen Reisepass beantragen", leika="99085001012005"),
        opt("b", 0.97, name="Reisepass beantragen", leika=None),  # the same text in another catalogue
    ]
    assert not clarify(options, PlaceState(KNOWN)).needed


def test_a_competitor_nobody_provides_at_the_place_is_no_competitor():
    options = [opt("muc-wohnsitz", 1.0, ("muc-buergerbuero",)), opt("sh-wohnsitz", 1.0, (None,), name="Anderes")]
    assert not clarify(options, PlaceState(KNOWN)).needed


def test_the_margin_works_on_probabilities_too():
    """A learned router hands calibrated probabilities and its own margin (here 0.4): 0.6 against 0.3 is
    close, 0.8 against 0.1 is not."""
    model = Margins(0.4, 0.4)
    close = [opt("a", 0.6, ("x",), name="Hund anmelden"), opt("b", 0.3, ("y",), name="Wohnsitz anmelden")]
    assert clarify(close, PlaceState(KNOWN), model, calibrated=True).needed
    clear = [opt("a", 0.8, ("x",), name="Hund anmelden"), opt("b", 0.1, ("y",), name="Wohnsitz anmelden")]
    assert not clarify(clear, PlaceState(KNOWN), model, calibrated=True).needed


def test_a_confident_model_is_not_second_guessed_as_too_general():
    """ "Scherben an der Bushaltestelle" explains little of a catalogue name; the model's cases are sure."""
    model = Margins(0.4, 0.4)
    weak = Option("glas", "Glasbruch", 0.9, frozenset({"a"}), coverage=0.3, words=1)
    rival = Option("halt", "Haltestellen", 0.05, frozenset({"b"}))
    assert not clarify([weak, rival], PlaceState(KNOWN), model, calibrated=True).needed
    assert clarify([weak, rival], PlaceState(KNOWN), model).general  # the catalogue's scores: a guess
    unsure = Option("glas", "Glasbruch", 0.5, frozenset({"a"}), coverage=0.3, words=1)
    verdict = clarify([unsure, Option("halt", "Haltestellen", 0.3, frozenset({"b"}))], PlaceState(KNOWN), model,
                      calibrated=True)
    assert verdict.needed and verdict.general  # not confident: the catalogue's rule still speaks


def test_same_service_by_leika_object_or_shared_word():
    assert same_service(opt("a", 1, name="Reisepass", leika="99085001000000"), opt("b", 1, name="x", leika="99085001012005"))
    assert not same_service(opt("a", 1, name="Reisepass", leika="99085001000000"), opt("b", 1, name="Reisepass", leika="99008001000000"))
    assert same_service(opt("a", 1, name="Hund anmelden"), opt("b", 1, name="Hundehaltung - Anmeldung - Gefährlicher Hund"))
    assert same_service(opt("a", 1, name="Wohnsitzanmeldung"), opt("b", 1, name="Wohnsitz anmelden"))
    assert not same_service(opt("a", 1, name="Hund anmelden"), opt("b", 1, name="Wohnsitz anmelden"))


def test_one_general_word_that_explains_little_of_the_name_is_too_general():
    weak = Option("pflege", "Hilfe zur Pflege", 0.70, frozenset({"a"}), coverage=0.37, words=1)
    assert too_general(weak)
    verdict = clarify([weak], PlaceState(KNOWN))
    assert verdict.needed and verdict.general and "zu allgemein" in verdict.reason
    # Most of the name explained by one word ("Pflege"), or two words of the request: a real answer.
    assert not clarify([Option("p", "Hilfe zur Pflege", 0.8, frozenset({"a"}), coverage=GENERAL_COVERAGE, words=1)],
                       PlaceState(KNOWN)).needed
    assert not too_general(Option("p", "Reisepass beantragen", 0.6, frozenset({"a"}), coverage=0.3, words=2))
    assert not too_general(opt("named", 1.0))  # a client-named service: coverage 1


def test_a_best_candidate_that_explains_only_the_action_and_misses_the_object_is_flagged():
    # "Hund anmelden" in a catalogue without dog registration: Wohnsitzanmeldung explains "anmelden" only.
    wrong = Option("wohnsitz", "Wohnsitzanmeldung", 0.72, frozenset({"bb"}), explained=("anmeld",), missed=("hund",))
    assert misses_the_object(wrong) == "hund"
    verdict = clarify([wrong], PlaceState(KNOWN))
    assert verdict.needed and "nur zum Teil erkannt" in verdict.reason and "hund" in verdict.reason
    # The object explained, or only actions and short words missed: a real answer (a request of nothing but an
    # action is the too-general rule's, below).
    for fine in (Option("h", "Hund anmelden", 1.0, frozenset({"a"}), explained=("hund", "anmeld")),
                 Option("p", "Reisepass beantragen", 0.9, frozenset({"a"}), explained=("reisepass",),
                        missed=("verlaenger",)),
                 Option("w", "Wohnsitzanmeldung", 0.9, frozenset({"a"}), explained=("anmeld",),
                        missed=("neu", "kfz"))):
        assert misses_the_object(fine) is None and not clarify([fine], PlaceState(KNOWN)).needed
    # A confident learned model is not second-guessed by the catalogue's words.
    model = Margins(0.3, 0.3)
    sure = Option("wohnsitz", "Wohnsitzanmeldung", 0.95, frozenset({"bb"}), explained=("anmeld",), missed=("hund",))
    assert not clarify([sure, Option("x", "X", 0.05, frozenset({"bb"}))], PlaceState(KNOWN), model,
                       calibrated=True).needed


def test_a_request_that_names_only_an_action_is_too_general():
    # "anmelden" alone: a flat, a dog, a business? "verloren": what? An agent asks.
    for words in (("anmeld",), ("verlust",), ("beantrag", "neu")):
        only = Option("w", "Anmeldung einer Wohnung", 1.0, frozenset({"a"}), explained=words)
        verdict = clarify([only], PlaceState(KNOWN))
        assert verdict.needed and verdict.general and "nur ein Vorgang" in verdict.reason, words
    # With its object, or with a known word left over (the object rule speaks then), it is not this rule.
    assert not too_general(Option("h", "Hund anmelden", 1.0, frozenset({"a"}), explained=("hund", "anmeld")))
    assert not too_general(Option("w", "Wohnsitzanmeldung", 1.0, frozenset({"a"}), explained=("anmeld",),
                                  missed=("hund",)))


# -- on the demo knowledge base ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, location", [("Können Sie mir helfen?", None), ("Können Sie mir helfen?", HU),
                                            ("Ich brauche Hilfe", "Bad Segeberg"),
                                            ("Wann haben Sie geöffnet?", "Bad Segeberg")])
def test_a_general_request_is_flagged(kb, text, location):
    route = kb.route(text, location)
    assert route.needs_clarification, (route.service and route.service.name)
    assert "zu allgemein" in route.reason


def test_reisepass_in_henstedt_ulzburg_is_routed_without_asking(kb):
    route = kb.route("Reisepass beantragen", HU)
    assert not route.needs_clarification and route.reason is None
    assert route.service.id == "sh-reisepass" and route.authority.id == "gemeinde-010600039039"


def test_a_clear_request_below_the_old_threshold_is_routed(kb):
    route = kb.route("Führungszeugnis für den neuen Job", "Bad Segeberg")
    assert route.confidence < kb.settings.confident_score
    assert not route.needs_clarification and route.service.id == "sh-fuehrungszeugnis"


@pytest.mark.parametrize(
    "text, location, words",
    [
        ("asdf qwer", HU, "keine passende Leistung"),
        ("", HU, "leere Anfrage"),
        ("Reisepass beantragen", None, "kein Ort angegeben"),
        ("ich brauche einen neuen Ausweis", "23795", "Ort mehrdeutig"),
        ("Personalausweis beantragen", "Springfield", "Ort nicht gefunden"),
        ("Ausweis oder Pass", "Bad Segeberg", "Leistungen kommen in Frage"),
        # The best match is the "Fragen" of "Grundsteuer (Fragen zum Grundsteuerbescheid)": too general.
        ("Ich habe eine Frage zum Hund", "Bad Segeberg", "zu allgemein"),
    ],
)
def test_the_flag_cases(kb, text, location, words):
    route = kb.route(text, location)
    assert route.needs_clarification and words in route.reason, route.reason


def test_a_county_service_without_a_place_goes_to_the_county(kb):
    route = kb.route("Wunschkennzeichen reservieren", None)
    assert not route.needs_clarification and route.authority.id == "kreis-01060" and route.location is None


def test_an_ambiguous_postcode_with_one_office_is_not_asked_about(kb):
    route = kb.route("Auto abmelden", "23795")
    assert route.location is None and route.location_candidates
    assert not route.needs_clarification and route.authority.id == "kreis-01060"


def test_the_margins_are_the_configured_ones(kb):
    old = kb.settings.clarify_office_margin, kb.settings.clarify_service_margin
    try:
        kb.settings.clarify_office_margin = kb.settings.clarify_service_margin = 0.0
        assert not kb.route("Ausweis oder Pass", "Bad Segeberg").needs_clarification
    finally:
        kb.settings.clarify_office_margin, kb.settings.clarify_service_margin = old


# -- the labelled set: targets on the held-out part ------------------------------------------------------------


def _report(name, figures):
    print(
        f"\n{name}: n={figures['n']} service top-1 {figures['service_top1_accuracy']} office top-1 "
        f"{figures['office_top1_accuracy']} correct unflagged {figures['correct_unflagged_share']} "
        f"wrong flagged {figures['wrong_flagged_share']}"
    )


def test_segeberg_heldout_meets_the_targets(kb):
    figures = evaluate_routes(kb, read_labelled(str(LABELLED / "segeberg.heldout.jsonl")))
    _report("segeberg.heldout", figures)
    assert figures["n"] >= 100
    assert figures["correct_unflagged_share"] >= 0.90
    assert figures["wrong_flagged_share"] >= 0.80
    assert figures["office_top1_accuracy"] >= 0.90


@pytest.fixture(scope="module")
def muenchen_kb(regions_template, tmp_path_factory):  # noqa: F811
    if not (MUENCHEN / "services_de.json").exists():
        pytest.skip(f"the München export is not at {MUENCHEN} (set CITIZEN_HUB_SHARED)")
    from hub.db import make_engine
    from hub.queue.cases import catalog_audit
    from knowledge.base import KnowledgeBase
    from knowledge.importers import parse_dldb
    from knowledge.importers.store import store_batch

    path = tmp_path_factory.mktemp("muc") / "muc.sqlite3"
    shutil.copyfile(regions_template, path)
    engine = make_engine(f"sqlite:///{path}")
    batch = parse_dldb(
        str(MUENCHEN / "services_de.json"), str(MUENCHEN / "locations_de.json"), id_prefix="091620000000",
        region_ars="091620000000",
    )
    store_batch(engine, batch, "091620000000", actor="test", audit=catalog_audit)
    yield KnowledgeBase.load(engine)
    engine.dispose()


def test_muenchen_heldout_routes_to_munich_offices(muenchen_kb):
    figures = evaluate_routes(muenchen_kb, read_labelled(str(LABELLED / "muenchen.heldout.jsonl")))
    _report("muenchen.heldout", figures)
    assert figures["office_top1_accuracy"] >= 0.85
    assert figures["correct_unflagged_share"] >= 0.85


def test_the_labelled_files_are_large_enough_and_disjoint():
    dev = {line for f in LABELLED.glob("*.dev.jsonl") for line in f.read_text(encoding="utf-8").splitlines()}
    held = {line for f in LABELLED.glob("*.heldout.jsonl") for line in f.read_text(encoding="utf-8").splitlines()}
    assert len(dev) + len(held) >= 400 and not dev & held
    assert os.path.getsize(LABELLED / "phrasings.py") > 0


@pytest.fixture(scope="module")
def three_kb(regions_template, tmp_path_factory):  # noqa: F811
    """``init --demo`` with the München and Berlin exports imported as the labelled files' build.py says:
    ``catalog import --format dldb --region 091620000000 ...`` and ``--region 110000000000 ...``."""
    from catalog_support import BERLIN

    if not (MUENCHEN / "services_de.json").exists() or not (BERLIN / "services_de.json").exists():
        pytest.skip(f"the München/Berlin exports are not at {MUENCHEN.parent} (set CITIZEN_HUB_SHARED)")
    from hub.db import make_engine, session_scope
    from hub.queue.cases import catalog_audit
    from knowledge.base import KnowledgeBase
    from knowledge.catalogue import load_demo
    from knowledge.importers import parse_dldb
    from knowledge.importers.store import store_batch

    path = tmp_path_factory.mktemp("three") / "three.sqlite3"
    shutil.copyfile(regions_template, path)
    engine = make_engine(f"sqlite:///{path}")
    with session_scope(engine) as session:
        load_demo(session)
    muc = parse_dldb(str(MUENCHEN / "services_de.json"), str(MUENCHEN / "locations_de.json"),
                     id_prefix="091620000000", region_ars="091620000000")
    store_batch(engine, muc, "091620000000", actor="test", audit=catalog_audit)
    ber = parse_dldb(str(BERLIN / "services_de.json"), str(BERLIN / "authority_de.json"), id_prefix="110000000000",
                     region_ars="110000000000", topics_path=str(BERLIN / "topic_de.json"))
    store_batch(engine, ber, "110000000000", actor="test", audit=catalog_audit)
    yield KnowledgeBase.load(engine)
    engine.dispose()


def test_the_three_catalogues_together_meet_the_targets_on_the_heldout_sets(three_kb):
    """The clarification targets of issue 13 with the demo, München and Berlin loaded at once, per city and
    pooled over the held-out sets (which the calibration, on *.dev.jsonl only, never saw)."""
    correct = unflagged = wrong = flagged = 0
    for name in ("segeberg", "muenchen", "berlin"):
        figures = evaluate_routes(three_kb, read_labelled(str(LABELLED / f"{name}.heldout.jsonl")))
        _report(f"{name}.heldout (three catalogues)", figures)
        correct += figures["correct"]
        unflagged += round(figures["correct_unflagged_share"] * figures["correct"])
        wrong += figures["wrong"]
        flagged += round(figures["wrong_flagged_share"] * figures["wrong"])
        # Every city on its own: München and Berlin have 18 and 13 right answers, 6 and 5 wrong ones, so
        # one request more on the wrong side of the rule still keeps the targets.
        assert figures["correct"] >= 10 and figures["wrong"] >= 5, name
        assert figures["correct_unflagged_share"] >= 0.90, name
        assert figures["wrong_flagged_share"] >= 0.80, name
    print(f"\npooled: correct unflagged {unflagged}/{correct}, wrong flagged {flagged}/{wrong}")
    assert correct >= 100 and wrong >= 30
    assert unflagged / correct >= 0.90
    assert flagged / wrong >= 0.80


@pytest.mark.parametrize(
    "text, service, office",
    [
        # München files both under LeiKa 99089018000000 ("Munition besitzen und erwerben" first).
        ("Waffenbesitzkarte", "091620000000-1072647", "091620000000-loc-10517"),
        # Under 99108001000000 with "Parkausweis für Härtefalle"; "Anwohnerparkausweis" is Berlin's word.
        ("Anwohnerparkausweis", "091620000000-1072043", "091620000000-loc-10427"),
        # Under 99036008003000 with "Umschreibung Fahrzeug – innerhalb Münchens" and its other office.
        ("Auto abmelden", "091620000000-1064305", "091620000000-loc-102101"),
    ],
)
def test_of_one_catalogues_texts_under_one_key_the_request_chooses_the_text_and_its_office(
    three_kb, text, service, office
):
    """One Leistung with two texts in the same catalogue: the answer is the text whose name or synonym the
    request matched (or, for another catalogue's word, the one closest to it), with that text's office."""
    route = three_kb.route(text, "80331 München")
    assert route.service.id == service and route.authority.id == office
    assert not route.needs_clarification
