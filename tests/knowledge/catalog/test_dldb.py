"""Parsing DLDB catalogue exports (the real München and Berlin files) into services and authorities."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from knowledge.importers import CatalogFormatError, DldbBatch, html_to_text, parse_dldb, parse_dldb_data
from knowledge.importers import dldb as dldb_module
from knowledge.models import Authority, Service

ROOT = Path(__file__).resolve().parents[3]
CATALOGS = Path(os.environ.get("CITIZEN_HUB_SHARED", ROOT.parent / "shared")) / "data" / "catalogs"
MUENCHEN = CATALOGS / "muenchen"
BERLIN = CATALOGS / "berlin-2016"
MUC_ARS = "091620000000"


@pytest.fixture(scope="module")
def raw() -> dict:
    if not (MUENCHEN / "services_de.json").exists():
        pytest.skip(f"the München export is not at {MUENCHEN} (set CITIZEN_HUB_SHARED)")
    return {
        "services": json.loads((MUENCHEN / "services_de.json").read_text(encoding="utf-8"))["data"],
        "locations": json.loads((MUENCHEN / "locations_de.json").read_text(encoding="utf-8"))["data"],
    }


@pytest.fixture(scope="module")
def muc(raw) -> DldbBatch:
    return parse_dldb(MUENCHEN / "services_de.json", MUENCHEN / "locations_de.json", id_prefix="muc", region_ars=MUC_ARS)


# -- the real München export ----------------------------------------------------------------------------


def test_every_service_is_imported(muc, raw):
    assert len(muc.services) == 287
    assert all(isinstance(s, Service) for s in muc.services)
    assert {s.id for s in muc.services} == {f"muc-{item['id']}" for item in raw["services"]}
    assert all(s.owner_ars == MUC_ARS and s.name == s.name.strip() and s.name for s in muc.services)
    assert muc.warnings == []


def test_keywords_become_synonyms(muc, raw):
    by_id = {s.id: s for s in muc.services}
    gewerbe = by_id["muc-1063423"]
    assert gewerbe.name == "Gewerbe-Anmeldung"
    keywords = next(i for i in raw["services"] if i["id"] == "1063423")["meta"]["keywords"]
    assert gewerbe.synonyms == [k.strip() for k in keywords.split(",")]
    assert "Gewerbe anmelden" in gewerbe.synonyms
    for s in muc.services:
        assert all(syn and syn == syn.strip() for syn in s.synonyms), s.id
        assert len({x.casefold() for x in s.synonyms}) == len(s.synonyms), "no duplicates"
        assert s.name.casefold() not in {x.casefold() for x in s.synonyms}, "the name is not repeated"
    assert sum(1 for s in muc.services if s.synonyms) == 158  # the others have no keywords
    meldebescheinigung = by_id["muc-1063576"]  # its keywords start with its own name
    assert "Meldebescheinigung" not in meldebescheinigung.synonyms and meldebescheinigung.synonyms


def test_leika_keys_are_kept(muc, raw):
    leika = [s.leika for s in muc.services if s.leika]
    assert len(leika) == 132
    assert all(re.fullmatch(r"\d{14}", k) for k in leika)
    assert {s.id: s.leika for s in muc.services}["muc-1063423"] == "99050012104000"
    # One service lists four keys; the first one is kept.
    assert {s.id: s.leika for s in muc.services}["muc-1064076"] == "99036008007003"


def test_descriptions_fees_and_duration_become_text(muc):
    by_id = {s.id: s for s in muc.services}
    gewerbe = by_id["muc-1063423"]
    assert gewerbe.full_text.startswith("Sie haben eine gewerbliche Niederlassung als Haupt- oder Filialbetrieb")
    assert "- Mit BayernID anmelden" in gewerbe.full_text, "list items stay readable"
    assert "Beratungs- und Informationsangebot" in gewerbe.full_text, "link text is kept, the link is not"
    assert gewerbe.fees == "50 bis 60 Euro (abhängig von der Rechtsform)"
    assert gewerbe.processing_time == "20 Minuten"
    for s in muc.services:
        for text in (s.full_text, s.short_text, s.fees):
            assert "<" not in text and "&nbsp;" not in text and "&amp;" not in text and "\u200b" not in text
        assert len(s.short_text) <= 300
        flat = " ".join(s.full_text.replace("\n- ", " ").split())
        assert flat.startswith(s.short_text.rstrip("…")[:50]), "the short text is the start of the description"
    # 62 services have no description, one has only a zero-width space ("<p>\u200b</p>").
    assert sum(1 for s in muc.services if s.full_text) == 287 - 62 - 1
    assert all(s.online_url is None or s.online_url.startswith("https://") for s in muc.services)


def test_every_location_becomes_an_authority(muc, raw):
    assert len(muc.authorities) == len(raw["locations"]) == 109
    assert all(isinstance(a, Authority) and a.region_ars == MUC_ARS for a in muc.authorities)
    amt = {a.id: a for a in muc.authorities}["muc-loc-10546"]
    assert (amt.name, amt.kind, amt.street, amt.postcode, amt.city) == (
        "Gewerbeamt (KVR-III/21)", "Kreisverwaltungsreferat", "Implerstraße 11", "81371", "München"
    )  # fmt: skip
    assert (amt.phone, amt.email) == ("089 233-45141", "gewerbemeldung.kvr@muenchen.de")
    assert amt.opening_hours == {}, "the export has no opening hours"
    assert not amt.is_demo


def test_links_pair_services_with_their_offices(muc, raw):
    expected = {(f"muc-{i['id']}", f"muc-loc-{loc['location']}") for i in raw["services"] for loc in i["locations"]}
    assert set(muc.links) == expected
    assert len(muc.links) == len(set(muc.links))
    assert ("muc-1063423", "muc-loc-10546") in muc.links


def test_without_locations_file_there_are_no_authorities(raw):
    batch = parse_dldb(MUENCHEN / "services_de.json", id_prefix="muc", region_ars="09162")
    assert len(batch.services) == 287 and batch.authorities == [] and batch.links == [] and batch.warnings == []


# -- the Berlin 2016 export -----------------------------------------------------------------------------


def test_berlin_authorities_with_nested_locations_and_topics():
    if not (BERLIN / "services_de.json").exists():
        pytest.skip("the Berlin export is not there")
    batch = parse_dldb(
        BERLIN / "services_de.json", BERLIN / "authority_de.json", id_prefix="ber", region_ars="11000",
        topics_path=BERLIN / "topic_de.json",
    )  # fmt: skip
    assert len(batch.services) == 560
    assert all(s.leika is None and s.synonyms == [] and s.full_text == "" for s in batch.services)
    by_id = {s.id: s for s in batch.services}
    assert by_id["ber-120335"].name == "Abmeldung einer Wohnung"
    assert by_id["ber-120335"].topic == "Meldeangelegenheiten"
    assert sum(1 for s in batch.services if s.topic) == 560
    assert len(batch.authorities) == 509  # 510 offices, one listed under two authorities
    office = {a.id: a for a in batch.authorities}["ber-loc-326311"]
    assert office.name == "Amtsgericht Charlottenburg – Handelsregister"
    assert office.website == "", "placeholder web addresses (example.com) are dropped"
    ids = {a.id for a in batch.authorities}
    assert all(aid in ids for _sid, aid in batch.links)
    assert any("not in the locations file" in w for w in batch.warnings)
    assert any("more than one authority" in w for w in batch.warnings)


# -- HTML -----------------------------------------------------------------------------------------------


def test_html_to_text_keeps_only_text():
    html = (
        '<p>Erst&nbsp;lesen &amp; dann <a href="javascript:alert(1)" onclick="steal()">hier</a> klicken.</p>'
        "<script>alert('x')</script><style>p{color:red}</style>"
        "<ul><li>eins</li><li><strong>zwei</strong></li></ul>Zeile<br>neue Zeile\u200b<!-- Kommentar -->"
    )
    assert html_to_text(html) == "Erst lesen & dann hier klicken.\n- eins\n- zwei\nZeile\nneue Zeile"


@pytest.mark.parametrize("html", [None, "", "<p>", "<<<>>>", "<p><b>offen", "&#xZZZ; &#99999999;", "<img src=x onerror=alert(1)>"])
def test_html_to_text_never_raises_and_leaks_no_markup(html):
    text = html_to_text(html)
    assert isinstance(text, str)
    assert "onerror" not in text and "<p" not in text and "<img" not in text


def test_short_text_cuts_at_a_sentence_or_word():
    text = "Erster Satz. " + "Zweiter Satz mit vielen Wörtern " * 20 + "."
    assert dldb_module._short_text(text) == "Erster Satz."
    long = "Wort " * 200
    short = dldb_module._short_text(long)
    assert len(short) <= 300 and short.endswith("…") and "Wor…" not in short


# -- opening hours (not in the shipped exports; newer DLDB exports carry them) -------------------------


def test_opening_hours_in_several_shapes(tmp_path):
    services = {"data": [{"id": "1", "name": "Dienst", "locations": [{"location": "7"}]}]}
    locations = {"data": [{
        "id": "7", "name": "Bürgerbüro", "address": {"street": "Markt", "house_number": "1"},
        "contact": {"phone": "0123", "email": "a@b.de", "webinfo": "https://stadt.example.org"},
        "opening_hours": {
            "monday": "08:00-12:00, 14:00 - 18:00",
            "Dienstag": [{"start": "8:00", "end": "12:30"}],
            "wed": [["09:00:00", "13:00:00"]],
            "thu": "geschlossen",
            "fri": [{"start": "14:00", "end": "12:00"}],  # end before start: dropped
            "holiday": "10:00-11:00",  # not a weekday: ignored
        },
    }]}  # fmt: skip
    batch = parse_dldb_data(services, locations, id_prefix="x", region_ars="010605053088")
    (office,) = batch.authorities
    assert office.opening_hours == {
        "mon": [["08:00", "12:00"], ["14:00", "18:00"]],
        "tue": [["08:00", "12:30"]],
        "wed": [["09:00", "13:00"]],
    }
    assert (office.street, office.website) == ("Markt 1", "https://stadt.example.org")
    assert batch.links == [("x-1", "x-loc-7")]


# -- bad files ------------------------------------------------------------------------------------------


def write(tmp_path: Path, content: str | bytes, name: str = "services.json") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{", "not valid JSON"),
        ("", "not valid JSON"),
        ("[]", "'data' list"),
        ('{"meta": {}}', "'data' list"),
        ('{"data": "x"}', "'data' is str"),
        ('{"data": [1, 2]}', "data[0] is int"),
        ('{"data": [{"name": "ohne id"}]}', "no usable 'id'"),
        ('{"data": [{"id": true, "name": "x"}]}', "no usable 'id'"),
        ('{"data": [{"id": "../../etc", "name": "x"}]}', "not a catalogue key"),
        ('{"data": [{"id": "1"}]}', "has no name"),
        ('{"data": [{"id": "1", "name": "  "}]}', "has no name"),
        ('{"data": [{"id": "1", "name": "a"}, {"id": 1, "name": "b"}]}', "occurs twice"),
        (b'{"data": [{"id": "1", "name": "Gr\xfcn"}]}', "not UTF-8"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"data": [{"id": ' + "9" * 10_000 + ', "name": "x"}]}', "not acceptable JSON"),
    ],
)
def test_malformed_files_raise_a_clear_error(tmp_path, content, reason):
    path = write(tmp_path, content)
    with pytest.raises(CatalogFormatError, match=re.escape(reason)) as info:
        parse_dldb(path, id_prefix="x", region_ars="09162")
    assert isinstance(info.value, ValueError)


def test_truncated_real_export_is_rejected(tmp_path, raw):
    data = (MUENCHEN / "services_de.json").read_bytes()
    path = write(tmp_path, data[: len(data) // 2])
    with pytest.raises(CatalogFormatError, match="not valid JSON"):
        parse_dldb(path, id_prefix="muc", region_ars="09162")


def test_wrong_locations_file_is_rejected(tmp_path, raw):
    services = MUENCHEN / "services_de.json"
    bad = write(tmp_path, '{"data": [{"id": "7"}]}', "locations.json")
    with pytest.raises(CatalogFormatError, match="locations file: location 7"):
        parse_dldb(services, bad, id_prefix="muc", region_ars="09162")
    # Services where the locations should be: the file has no offices, so nothing links, but it is not
    # silently accepted as offices either (services have no address, their names become offices).
    with pytest.raises(CatalogFormatError, match="locations file"):
        parse_dldb(services, write(tmp_path, "[1]", "l2.json"), id_prefix="muc", region_ars="09162")


def test_missing_and_oversized_files(tmp_path, monkeypatch):
    with pytest.raises(CatalogFormatError, match="cannot read"):
        parse_dldb(tmp_path / "nope.json", id_prefix="x", region_ars="09162")
    path = write(tmp_path, '{"data": []}' + " " * 100)
    monkeypatch.setattr(dldb_module, "MAX_FILE_BYTES", 50)
    with pytest.raises(CatalogFormatError, match="over the limit"):
        parse_dldb(path, id_prefix="x", region_ars="09162")


def test_optional_fields_of_the_wrong_type_are_skipped(tmp_path):
    path = write(tmp_path, json.dumps({"data": [{
        "id": 5, "name": "Dienst", "description": 42, "fees": ["x"], "duration": "abc", "leika": 12,
        "meta": "kaputt", "locations": "keine", "links": [1, {"name": "Online-Antrag", "link": "javascript:x"}],
    }]}))  # fmt: skip
    (service,) = parse_dldb(path, id_prefix="x", region_ars="09162").services
    assert (service.id, service.name, service.full_text, service.fees) == ("x-5", "Dienst", "", "")
    assert (service.leika, service.synonyms, service.processing_time, service.online_url) == (None, [], "", None)


def test_prefix_and_region_are_checked():
    with pytest.raises(ValueError, match="id_prefix"):
        parse_dldb_data({"data": []}, id_prefix="MUC!", region_ars="09162")
    with pytest.raises(ValueError, match="region_ars"):
        parse_dldb_data({"data": []}, id_prefix="muc", region_ars="0916")
