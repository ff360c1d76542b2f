"""The learned router's parts without a database: features, training, calibration, the safe format."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from knowledge.importers.csv_import import parse_csv
from knowledge.learning import AreaModel, Example, LearnedRouting, ModelIntegrityError, fit
from knowledge.learning.features import Featurizer, analyze
from knowledge.lookup import ServiceIndex

DATA = Path(__file__).resolve().parents[2] / "data" / "learning"


@pytest.fixture(scope="module")
def catalogue():
    batch = parse_csv(DATA / "defects_catalogue.csv", id_prefix="d", region_ars="01060")
    index = ServiceIndex.from_services(batch.services)
    by_name = {s.name: s.id for s in batch.services}
    return index, by_name


@pytest.fixture(scope="module")
def split(catalogue):
    _index, by_name = catalogue
    rows = [json.loads(line) for line in (DATA / "defects.jsonl").read_text(encoding="utf-8").splitlines()]
    perm = np.random.default_rng(7).permutation(len(rows))
    items = [(rows[i]["text"], by_name[rows[i]["service"]]) for i in perm]
    half = len(items) // 2
    return items[:half], items[half:]


def scorer(index):
    return lambda text: {h.id: h.score for h in index.search(text, limit=10)}


@pytest.fixture(scope="module")
def model(catalogue, split):
    index, _ = catalogue
    train, _test = split
    m = fit("01060", [Example(i + 1, t, s) for i, (t, s) in enumerate(train)], scorer(index))
    assert m is not None
    return m


def test_features_fold_stem_split_compounds_and_drop_numbers():
    words, chars = analyze("Straßenlaternen vor Haus 12 sind AUS", frozenset({"strass", "latern"}))
    assert "w:strassenlatern" in words
    assert "p:latern" in words and "p:strass" in words  # the compound's parts
    assert "b:strassenlatern haus" not in words  # a stopword between them breaks the bigram
    assert "b:latern kaputt" in analyze("Laterne kaputt")[0]
    assert not any("12" in k for k in (*words, *chars))  # a house number is no evidence
    assert " 0 " in chars and "aus" in chars


def test_featurizer_rows_are_unit_length_and_rare_words_stay_out():
    texts = ["Laterne kaputt", "Laterne aus", "Müll am Weg Meier", "Müll im Park"]
    f = Featurizer.fit(texts, min_df=2)
    assert "w:latern" in f.vocabulary and "w:muell" in f.vocabulary
    assert "w:meier" not in f.vocabulary  # one citizen's name is not kept in the model
    x = f.transform(texts)
    assert np.allclose(np.sqrt(x.multiply(x).sum(axis=1)).A.ravel(), 1.0)


def test_learned_router_beats_the_catalogue_on_held_out_reports(catalogue, split, model):
    """Trained on one half of the hand-written reports, judged on the other half."""
    index, _ = catalogue
    _train, test = split
    learned = sum(model.probabilities(t, scorer(index)(t))[0][0] == s for t, s in test) / len(test)
    plain = sum(bool(h := index.search(t, limit=1)) and h[0].id == s for t, s in test) / len(test)
    assert learned >= 0.5
    assert learned >= plain + 0.05


def test_probabilities_are_a_distribution_and_reasonably_calibrated(catalogue, split, model):
    index, _ = catalogue
    _train, test = split
    top, right = [], []
    for t, s in test:
        probs = model.probabilities(t, scorer(index)(t))
        assert abs(sum(p for _, p in probs) - 1.0) < 1e-6
        assert [p for _, p in probs] == sorted((p for _, p in probs), reverse=True)
        top.append(probs[0][1])
        right.append(probs[0][0] == s)
    # Calibration: the mean top probability is close to the share that is right (temperature scaling).
    assert abs(float(np.mean(top)) - float(np.mean(right))) < 0.15


def test_catalogue_only_services_can_still_win(catalogue, model):
    """A service no case named yet is found through the catalogue, if the area allows it."""
    index, _ = catalogue
    text = "Straßenbeleuchtung"
    cat = scorer(index)(text)
    ids, _d = model.scores(text, cat, allowed=set(cat))
    assert set(cat) <= set(ids)


def test_safe_format_round_trip_and_tampering(catalogue, model):
    index, _ = catalogue
    data, sha = model.to_bytes()
    again = AreaModel.from_bytes(data, sha)
    text = "Laterne vor Haus 12 ist aus"
    a, b = again.probabilities(text, scorer(index)(text)), model.probabilities(text, scorer(index)(text))
    assert [sid for sid, _ in a] == [sid for sid, _ in b]
    assert [p for _, p in a] == pytest.approx([p for _, p in b])
    assert again.data_version == model.data_version
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(ModelIntegrityError, match="hash"):
        AreaModel.from_bytes(bytes(broken), sha)
    # A pickled object array with a correct hash is still refused: nothing is ever unpickled.
    buf = io.BytesIO()
    np.savez(buf, header=np.array([{"format": "x"}], dtype=object), idf=np.zeros(1), coef=np.zeros((1, 1)),
             intercept=np.zeros(1))
    import hashlib

    evil = buf.getvalue()
    with pytest.raises(ModelIntegrityError):
        AreaModel.from_bytes(evil, hashlib.sha256(evil).hexdigest())
    with pytest.raises(ModelIntegrityError):
        AreaModel.from_bytes(b"not a zip", hashlib.sha256(b"not a zip").hexdigest())


def test_too_few_examples_means_no_model():
    assert fit("x", [Example(i, "Laterne", "a") for i in range(30)]) is None  # one service
    assert fit("x", [Example(1, "Laterne", "a"), Example(2, "Müll", "b")]) is None


def test_swap_is_whole(model):
    routing = LearnedRouting({"01060": model})
    before = routing.models
    routing.put(model)
    assert routing.models is not before  # a new dict: readers holding the old one are not disturbed
    assert before == {"01060": model}
    routing.drop("01060")
    assert routing.models == {}


def test_routing_vector_equals_training_rows(model):
    """The cached per-token path of routing gives exactly the training rows' numbers."""
    f = model.featurizer
    texts = ["Laterne vor Haus 12 ist aus, Laterne!", "Sperrmüllhaufen am Glascontainer", "", "???"]
    rows = f.transform(texts)
    for i, text in enumerate(texts):
        cols, vals = f.vector(text)
        dense = np.zeros(f.n_features, dtype=np.float32)
        dense[cols] = vals
        assert np.allclose(dense, rows[i].toarray().ravel(), atol=1e-6)


def reports(name, by_name):
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [(o["text"], by_name[o["service"]]) for o in map(json.loads, lines)]


def test_services_without_cases_keep_their_catalogue_answer(catalogue):
    """History names 18 of the 23 services; the other five are known only from the catalogue. With the
    catalogue's texts as "the rest of the catalogue" class, held-out reports of those five are answered
    with one of them far more often than by a model that has only the cases, and the 18 keep their
    accuracy."""
    from knowledge.learning.router import catalogue_texts

    index, by_name = catalogue
    batch = parse_csv(DATA / "defects_catalogue.csv", id_prefix="d", region_ars="01060")
    unseen = {by_name[n] for n in ("Ampeln", "Winterdienst", "Tote Tiere", "Papierkörbe", "Radwege")}
    train = [(t, s) for t, s in reports("defects.jsonl", by_name) + reports("defects_more.jsonl", by_name)
             if s not in unseen]
    held = reports("defects_heldout.jsonl", by_name)
    examples = [Example(i + 1, t, s) for i, (t, s) in enumerate(train)]
    with_rest = fit("01060", examples, scorer(index), catalogue_texts=catalogue_texts(batch.services, "01060"))
    cases_only = fit("01060", examples, scorer(index))
    assert with_rest.has_other and not cases_only.has_other

    def top1(model, items):
        hits = 0
        for text, sid in items:
            cat = scorer(index)(text)
            hits += model.probabilities(text, cat)[0][0] == sid
        return hits / len(items)

    new = [(t, s) for t, s in held if s in unseen]
    old = [(t, s) for t, s in held if s not in unseen]
    assert top1(with_rest, new) >= top1(cases_only, new) + 0.15
    assert top1(with_rest, old) >= top1(cases_only, old) - 0.03
    data, sha = with_rest.to_bytes()
    again = AreaModel.from_bytes(data, sha)
    assert again.has_other and again.rest_offset == with_rest.rest_offset and again.gamma == with_rest.gamma
    text = held[0][0]
    assert again.probabilities(text, scorer(index)(text)) == with_rest.probabilities(text, scorer(index)(text))


def test_the_office_confirmed_at_a_place_is_kept_per_place(catalogue, split):
    index, by_name = catalogue
    train, _test = split
    light = by_name["Straßenbeleuchtung"]
    examples = [Example(i + 1, t, s, "amt-x" if s == light else None, "010600005005")
                for i, (t, s) in enumerate(train)]
    examples.append(Example(len(examples) + 1, "Laterne aus", light, "amt-y", "010600044044"))
    m = fit("01060", examples, scorer(index))
    assert m.confirmed_office(light, ["010600005005", "01060"]) == "amt-x"
    assert m.confirmed_office(light, ["010600044044"]) == "amt-y"
    assert m.confirmed_office(light, ["010600063063", "01060"]) is None  # no case there: the catalogue's
    assert m.confirmed_office(by_name["Bäume"], ["010600005005"]) is None
    again = AreaModel.from_bytes(*m.to_bytes())
    assert again.confirmed_office(light, ["010600005005"]) == "amt-x"
