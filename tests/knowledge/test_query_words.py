"""What a search or a short request says besides the service: the place typed into it, personal names, and
the words people use for the same thing (issue 15). One implementation (``KnowledgeBase.place_in_query``,
``knowledge.text.query_terms``/``equivalents``) serves the console's lookup, ``/api/lookup`` and ``route``."""

from __future__ import annotations

import pytest

from knowledge.text import equivalents, query_terms, stem

VEHICLE = {"sh-kfz-halterwechsel", "sh-kfz-umzug", "sh-kfz-neuzulassung", "sh-kfz-abmelden", "sh-kfz-wiederzulassung"}


def top(kb, query, location=None):
    result = kb.lookup(query, location)
    return result, [a.service.id for a in result.answers]


@pytest.mark.parametrize(("query", "place"), [
    ("kfz ummelden Norderstedt", "Norderstedt"),
    ("Reisepass Norderstedt", "Norderstedt"),
    ("reisepass norderstedt", "Norderstedt"),
    ("sperrmüll bad segeberg", "Bad Segeberg"),
    ("Reisepass 24568 Kaltenkirchen", "Kaltenkirchen"),
    ("Hund anmelden in Wahlstedt", "Wahlstedt"),
    ("Norderstedt Personalausweis", "Norderstedt"),
    ("personalausweis kreis segeberg", "Kreis Segeberg"),
])
def test_a_place_typed_into_the_query_is_the_place(kb, query, place):
    result, ids = top(kb, query)
    assert result.place is not None and result.place.match is not None, query
    assert result.place.match.display_name == place
    assert result.place_from_query and place.split()[-1].lower() in result.place_from_query.lower()
    # the place's words are not searched for services: the answer is as good as without them
    without = kb.lookup(query.lower().replace(result.place_from_query.lower(), " "), None)
    assert ids[:1] == [a.service.id for a in without.answers][:1]
    assert result.answers[0].score == pytest.approx(without.answers[0].score, abs=0.5)
    # …and the office is the one of that place
    if result.answers[0].authority is not None:
        assert result.to_json()["location"]["name"] == place


def test_route_and_lookup_find_the_same_place_in_the_same_words(kb):
    for text in ("kfz ummelden Norderstedt", "Reisepass Norderstedt", "sperrmüll bad segeberg"):
        routed = kb.route(text)
        looked = kb.lookup(text)
        assert routed.location is not None and routed.location.ars == looked.place.match.ars
        assert routed.service is not None and routed.service.id == looked.answers[0].service.id


@pytest.mark.parametrize("query", ["Wald", "Baum fällen im Wald", "Sperrmüll Berg", "Pass", "Reisepass"])
def test_ordinary_and_catalogue_words_are_no_place(kb, query):
    result, _ids = top(kb, query)
    assert result.place is None or result.place.match is None, (query, result.place)


def test_an_explicit_place_field_wins_over_the_query(kb):
    result, _ids = top(kb, "Reisepass Norderstedt", "Kaltenkirchen")
    assert result.place.match.display_name == "Kaltenkirchen" and result.place_from_query is None


@pytest.mark.parametrize("query", ["kfz ummelden", "Kfz ummelden", "pkw ummelden", "KFZ umschreiben"])
def test_kfz_ummelden_finds_the_vehicle_services(kb, query):
    _result, ids = top(kb, query)
    assert ids[0] in VEHICLE, (query, ids)
    assert "sh-wohnsitz-anmelden" not in ids[:1]


@pytest.mark.parametrize(("query", "service"), [
    ("pkw abmelden", "sh-kfz-abmelden"),
    ("Auto abmelden", "sh-kfz-abmelden"),
    ("kfz zulassen", "sh-kfz-neuzulassung"),
    ("Perso verloren", "sh-personalausweis-verlust"),
])
def test_words_of_the_same_meaning(kb, query, service):
    _result, ids = top(kb, query)
    assert ids[0] == service, (query, ids)


def test_the_word_itself_still_beats_its_equivalent(kb):
    # "Wohnung anmelden" is a synonym of the Wohnsitz service; "Wohnsitz" is only its equivalent elsewhere
    _r, ids = top(kb, "Wohnung anmelden")
    assert ids[0] == "sh-wohnsitz-anmelden"
    assert "kfz" in {stem("kfz")} and stem("auto") in equivalents(stem("kfz"))
    assert equivalents("nichtsbekanntes") == ()


@pytest.mark.parametrize("query", [
    "Ich heiße Müller.", "ich heisse Müller", "Mein Name ist Müller", "Name: Müller", "Frau Müller",
    "Mein Name ist Anna Schmidt.", "Herr Fischer hier",
])
def test_a_name_someone_introduces_is_no_service(kb, query):
    result, ids = top(kb, query)
    assert not result.answers or result.answers[0].score < 60, (query, [(a.service.name, a.score)
                                                                        for a in result.answers[:3]])
    routed = kb.route(query, "Norderstedt")
    assert routed.needs_clarification


@pytest.mark.parametrize(("query", "service"), [
    ("Ich heiße Müller und möchte Sperrmüll anmelden", "sh-sperrmuell"),
    ("Frau Müller braucht einen Reisepass", "sh-reisepass"),
    ("Ich heiße Anna Fischer, ich brauche einen Angelschein", "sh-fischereischein"),
    ("Mein Name ist Becker, ich möchte meinen Namen ändern", None),
])
def test_the_request_around_the_name_is_still_understood(kb, query, service):
    _result, ids = top(kb, query)
    if service is None:
        assert ids and ids[0] in {"sh-namenserklaerung", "sh-kfz-adressaenderung"}, ids
    else:
        assert ids[0] == service, (query, ids)


def test_query_terms_leave_out_only_the_name():
    assert [s for _t, s in query_terms("Ich heiße Müller und brauche Sperrmüll")] == [stem("sperrmuell")]
    assert [t for t, _s in query_terms("Frau braucht einen Pass")] == ["pass"]  # no capital: no name
    assert [t for t, _s in query_terms("Namen ändern")] == ["namen", "aendern"]
    for hostile in ("", "heiße", "Frau", "Name ist", "heiße " * 5000, "\x00Frau\x00Müller"):
        query_terms(hostile)  # never raises
