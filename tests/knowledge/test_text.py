"""Text normalisation for matching: folding, tokens, stems, stopwords, compound splitting."""

from __future__ import annotations

import pytest

from knowledge.text import (
    STOPWORDS,
    analyze,
    fold,
    normalize,
    split_compound,
    stem,
    terms,
    tokenize,
    trigrams,
)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Führerschein", "Fuehrerschein"),
        ("FÜHRERSCHEIN", "führerschein"),
        ("Straße", "STRASSE"),
        ("Maßnahme", "Massnahme"),
        ("u\u0308ber", "über"),  # decomposed umlaut (u + combining diaeresis), as some phones send it
        ("Café", "Cafe"),
        ("ﬁnden", "finden"),  # ligature
    ],
)
def test_fold_makes_spellings_equal(a, b):
    assert fold(a) == fold(b)


def test_fold_transliterates_umlauts_and_sharp_s():
    assert fold("Äußerung Öl Übel ẞ") == "aeusserung oel uebel ss"


def test_tokenize_splits_on_punctuation_controls_and_emoji():
    assert tokenize("Gewerbe-Anmeldung!!\x00\x07 bitte😀sofort\t(Teil B)") == [
        "gewerbe", "anmeldung", "bitte", "sofort", "teil", "b",
    ]  # fmt: skip
    assert tokenize("Teil 1, § 51 AufenthG") == ["teil", "1", "51", "aufenthg"]


@pytest.mark.parametrize("junk", ["", "   ", "\x00", "\x00\x01\x02", "😀🙈", "\ud800", "¿¡…—", "\u200b\ufeff"])
def test_junk_has_no_tokens_and_never_raises(junk):
    assert tokenize(junk) == []
    assert normalize(junk) == ""
    assert terms(junk) == []


def test_lone_surrogates_are_dropped_not_raised():
    assert tokenize("Pass\ud800wort") == ["pass", "wort"]


def test_normalize_joins_folded_tokens():
    assert normalize("  Wohnsitz   AN-melden ") == "wohnsitz an melden"


@pytest.mark.parametrize(
    "forms",
    [
        ("anmelden", "anmeldung", "anmeldungen", "angemeldet"),
        ("ummelden", "ummeldung", "umgemeldet"),
        ("beglaubigen", "beglaubigung", "beglaubigt"),
        ("registrieren", "registriert"),
        ("gewerbe", "gewerbes"),
        ("heiraten", "geheiratet"),
        ("kind", "kinder", "kindern"),
        ("bescheinigung", "bescheinigungen"),
    ],
)
def test_inflected_forms_share_a_stem(forms):
    stems = {stem(fold(f)) for f in forms}
    assert len(stems) == 1, stems


@pytest.mark.parametrize(
    ("participle", "noun"),
    [("umgezogen", "Umzug"), ("verloren", "Verlust"), ("gestohlen", "Diebstahl"), ("geboren", "Geburt")],
)
def test_strong_participles_meet_the_catalogue_noun(participle, noun):
    assert stem(fold(participle)) == stem(fold(noun))


def test_stem_leaves_short_words_digits_and_distinct_words_alone():
    assert stem("kfz") == "kfz"
    assert stem("2019") == "2019"
    assert stem("pass") == "pass"
    assert stem(fold("Führerschein")) == "fuehrerschein"
    assert stem("abmelden") != stem("anmelden")
    assert stem("gebiet") == "gebiet"  # not a participle


def test_stopwords_german_and_english_are_removed():
    assert analyze("Ich möchte mein Auto anmelden, wie geht das?") == ["auto", "anmeld"]
    assert analyze("How do I register my car?") == analyze("register car") == [stem("register"), "car"]
    assert {"ich", "mein", "der", "die", "und", "wie", "kann", "my", "the", "how"} <= STOPWORDS
    # Words that do tell services apart are not stopwords.
    assert {"neu", "verloren", "kein", "pass", "auto"}.isdisjoint(STOPWORDS)


def test_terms_pair_surface_and_stem():
    assert terms("Wohnsitz anmelden") == [("wohnsitz", "wohnsitz"), ("anmelden", "anmeld")]


def test_split_compound_into_known_parts():
    vocab = {"wohnsitz", "anmeld", "meld", "sitz", "geburt", "urkund", "hund", "steu"}
    assert split_compound("wohnsitzanmeld", vocab) == ["wohnsitz", "anmeld"]
    assert split_compound("geburtsurkund", vocab) == ["geburt", "urkund"]  # linking "s" left uncovered
    assert split_compound("hundesteu", vocab) == ["hund", "steu"]


def test_split_compound_refuses_poor_or_trivial_splits():
    vocab = {"wohnsitz", "anmeld", "wohnsitzanmeld", "haus"}
    assert split_compound("wohnsitzanmeld", vocab) == ["wohnsitz", "anmeld"], "the whole word is not a part"
    assert split_compound("hausmeisterei", vocab) is None, "one part covering a third is no split"
    assert split_compound("kfz", vocab) is None
    assert split_compound("x" * 200, vocab) is None


def test_trigrams():
    assert list(trigrams("pass")) == ["pas", "ass"]
    assert list(trigrams("ab")) == ["ab"]
