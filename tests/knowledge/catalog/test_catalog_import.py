"""Importing real catalogue exports (DLDB München and Berlin, CSV) into a region's catalogue."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re

import pytest
from catalog_support import (  # noqa: F401  (fixtures: engine, region_index, regions_template)
    BERLIN,
    MUENCHEN,
    MUENCHEN_KREIS,
    ROOT,
    TODESFELDE,
    counts,
    engine_fixture,
    load_kb,
    make_token,
    region_index_fixture,
    regions_template_fixture,
)
from sqlalchemy import select

from hub.cli import UsageError
from hub.cli import catalog as cli_catalog
from hub.http.tokens import scope_t
from knowledge.importers import CatalogFormatError, parse_dldb
from knowledge.importers.csv_import import COLUMNS, parse_csv, parse_csv_text
from knowledge.importers.store import store_batch
from knowledge.models import Authority, Responsibility, Service
from knowledge.sync import PayloadError
from knowledge.sync_models import online_t, version_t


def run_cli(*argv: str) -> int:
    """``citizen-hub catalog ...`` through the module's own ``register`` (as hub.cli wires it)."""
    parser = argparse.ArgumentParser(prog="citizen-hub")
    sub = parser.add_subparsers(dest="command")
    cli_catalog.register(sub)
    args = parser.parse_args(list(argv))
    return args.func(args)


def muenchen_batch(prefix: str = "muc"):
    return parse_dldb(
        MUENCHEN / "services_de.json",
        MUENCHEN / "locations_de.json",
        id_prefix=prefix,
        region_ars=MUENCHEN_KREIS,
    )


def test_the_muenchen_export_imports_completely_and_is_found(engine, region_index):
    raw = json.loads((MUENCHEN / "services_de.json").read_text(encoding="utf-8"))["data"]
    raw_locations = json.loads((MUENCHEN / "locations_de.json").read_text(encoding="utf-8"))["data"]
    result = store_batch(engine, muenchen_batch(), MUENCHEN_KREIS)
    assert result.applied and result.version == 1

    with engine.connect() as conn:
        services = {
            r.id: r
            for r in conn.execute(
                select(Service.__table__).where(Service.__table__.c.owner_ars == MUENCHEN_KREIS)
            )
        }
        offices = {r.id: r for r in conn.execute(select(Authority.__table__))}
        links = conn.execute(select(Responsibility.__table__)).all()
    assert len(raw) == 287
    assert len(services) == 287, "every service of the export is imported"
    assert set(services) == {f"muc-{item['id']}" for item in raw}
    assert len(offices) == len(raw_locations) == 109, "every location becomes an office"

    with_leika = {f"muc-{item['id']}": re.search(r"\d{14}", str(item.get("leika") or "")) for item in raw}
    kept = {sid: m.group(0) for sid, m in with_leika.items() if m}
    assert len(kept) == 132
    assert {sid: services[sid].leika for sid in kept} == kept, "LeiKa keys are kept"

    gewerbe = services["muc-1063423"]
    assert gewerbe.name == "Gewerbe-Anmeldung"
    assert "Gewerbe anmelden" in gewerbe.synonyms and "Gewerbeschein verloren" in gewerbe.synonyms
    keywords = next(i for i in raw if i["id"] == "1063423")["meta"]["keywords"]
    assert len(gewerbe.synonyms) == len([k for k in keywords.split(",") if k.strip()]), (
        "keywords become synonyms"
    )

    amt = offices["muc-loc-10546"]
    assert (amt.name, amt.street, amt.postcode, amt.city) == (
        "Gewerbeamt (KVR-III/21)",
        "Implerstraße 11",
        "81371",
        "München",
    )
    expected_links = {
        (f"muc-{i['id']}", f"muc-loc-{loc['location']}")
        for i in raw
        for loc in i.get("locations", [])
        if f"muc-loc-{loc['location']}" in offices
    }
    assert {(r.service_id, r.authority_id) for r in links} == expected_links
    assert all(r.region_ars == MUENCHEN_KREIS and r.owner_ars == MUENCHEN_KREIS for r in links)

    kb = load_kb(engine, region_index)
    answer = kb.lookup("Gewerbe anmelden", "München").to_json()
    assert answer["location"]["ars"] == "091620000000"
    first = answer["results"][0]
    assert first["service"]["id"] == "muc-1063423"
    assert first["authority"]["id"] == "muc-loc-10546"


def test_an_import_updates_a_running_knowledge_base_in_place(engine, region_index):
    kb = load_kb(engine, region_index)
    assert not kb.lookup("Gewerbe anmelden", "München").answers
    store_batch(engine, muenchen_batch(), MUENCHEN_KREIS, kb=kb)
    answer = kb.lookup("Gewerbe anmelden", "München").to_json()
    assert answer["results"][0]["service"]["id"] == "muc-1063423"
    assert answer["results"][0]["authority"]["name"] == "Gewerbeamt (KVR-III/21)"


def test_importing_again_changes_nothing_and_makes_no_version(engine):
    store_batch(engine, muenchen_batch(), MUENCHEN_KREIS)
    before = counts(engine)
    again = store_batch(engine, muenchen_batch(), MUENCHEN_KREIS)
    assert not again.applied and again.version == 1
    assert again.plan.empty
    assert counts(engine) == before


def test_replace_removes_what_the_export_no_longer_has_merge_keeps_it(engine):
    store_batch(engine, muenchen_batch(), MUENCHEN_KREIS)
    smaller = muenchen_batch()
    dropped = {s.id for s in smaller.services[:10]}
    smaller.services = smaller.services[10:]
    smaller.links = [(s, a) for s, a in smaller.links if s not in dropped]

    merged = store_batch(engine, smaller, MUENCHEN_KREIS)
    assert not merged.applied, "a merge never removes"
    assert counts(engine, MUENCHEN_KREIS)["service"] == 287

    replaced = store_batch(engine, smaller, MUENCHEN_KREIS, replace=True)
    assert replaced.applied and replaced.version == 2
    assert set(replaced.plan.removed["leistung"]) == dropped
    with engine.connect() as conn:
        left = {r[0] for r in conn.execute(select(Service.__table__.c.id))}
        dangling = conn.execute(
            select(Responsibility.__table__.c.id).where(Responsibility.__table__.c.service_id.in_(dropped))
        ).all()
    assert not (left & dropped) and not dangling


def test_the_cli_imports_with_a_progress_bar_and_reports_the_version(engine, capsys):
    url = str(engine.url)
    code = run_cli(
        "catalog",
        "import",
        "--format",
        "dldb",
        str(MUENCHEN / "services_de.json"),
        "--locations",
        str(MUENCHEN / "locations_de.json"),
        "--region",
        MUENCHEN_KREIS,
        "--id-prefix",
        "muc",
        "--db",
        url,
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert "version 0 → 1" in out and "leistung +287" in out and "organisationseinheit +109" in out
    assert "catalog 09162" in err and "100%" in err, "tqdm progress bar on stderr"
    assert counts(engine, MUENCHEN_KREIS)["service"] == 287

    code = run_cli("catalog", "status", MUENCHEN_KREIS, "--db", url)
    out, _ = capsys.readouterr()
    assert code == 0 and "version 1; 287 leistung, 109 organisationseinheit" in out
    assert "cli:dldb-import" in out


def test_the_cli_refuses_a_bad_region_and_a_bad_file(engine, tmp_path):
    with pytest.raises(UsageError, match="not an ARS"):
        run_cli(
            "catalog",
            "import",
            "--format",
            "dldb",
            str(MUENCHEN / "services_de.json"),
            "--region",
            "0916",
            "--db",
            str(engine.url),
        )
    broken = tmp_path / "services.json"
    broken.write_text('{"data": [ {"id": 1, "name": ', encoding="utf-8")
    with pytest.raises(UsageError, match="not valid JSON"):
        run_cli(
            "catalog",
            "import",
            "--format",
            "dldb",
            str(broken),
            "--region",
            MUENCHEN_KREIS,
            "--db",
            str(engine.url),
        )
    with pytest.raises(UsageError, match="no region with ARS 09999"):
        run_cli(
            "catalog",
            "import",
            "--format",
            "dldb",
            str(MUENCHEN / "services_de.json"),
            "--region",
            "09999",
            "--db",
            str(engine.url),
        )
    assert counts(engine)["service"] == 0


def test_the_berlin_2016_export_imports(engine):
    batch = parse_dldb(
        BERLIN / "services_de.json",
        BERLIN / "authority_de.json",
        id_prefix="ber",
        region_ars="11000",
        topics_path=BERLIN / "topic_de.json",
    )
    result = store_batch(engine, batch, "11000")
    raw = json.loads((BERLIN / "services_de.json").read_text(encoding="utf-8"))["data"]
    assert result.plan.summary()["leistung"]["added"] == len(raw) == 560
    assert result.plan.summary()["organisationseinheit"]["added"] == len(batch.authorities) > 400
    assert result.plan.summary()["zustaendigkeit"]["added"] == len(set(batch.links))


# -- CSV --------------------------------------------------------------------------------------------------


def _muenchen_rows(n: int) -> list[dict[str, str]]:
    """CSV rows of real München services and their first office, as a small municipality would write them."""
    raw = json.loads((MUENCHEN / "services_de.json").read_text(encoding="utf-8"))["data"]
    locations = {
        str(x["id"]): x for x in json.loads((MUENCHEN / "locations_de.json").read_text("utf-8"))["data"]
    }
    rows = []
    for item in raw:
        loc = next(
            (
                locations[str(x["location"])]
                for x in item.get("locations", [])
                if str(x["location"]) in locations
            ),
            None,
        )
        if loc is None or not re.fullmatch(r"\d{14}", str(item.get("leika") or "")):
            continue
        a = loc.get("address") or {}
        rows.append(
            {
                "name": item["name"],
                "leika": item["leika"],
                "synonyms": "|".join(k.strip() for k in item["meta"]["keywords"].split(",") if k.strip()),
                "level": "gemeinde",
                "authority_name": loc["name"],
                "authority_phone": (loc.get("contact") or {}).get("phone") or "",
                "authority_email": (loc.get("contact") or {}).get("email") or "",
                "authority_address": f"{a.get('street', '')} {a.get('house_number', '')}, "
                f"{a.get('postal_code', '')} {a.get('city', '')}",
            }
        )
        if len(rows) == n:
            break
    return rows


def _csv(rows: list[dict[str, str]], delimiter: str = ";") -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter=delimiter)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_a_csv_in_windows_1252_with_semicolons_imports(engine, region_index, tmp_path):
    rows = _muenchen_rows(25)
    path = tmp_path / "leistungen.csv"
    path.write_bytes(_csv(rows).encode("cp1252"))
    batch = parse_csv(path, id_prefix="csvtest", region_ars=MUENCHEN_KREIS)
    assert batch.warnings and "Windows-1252" in batch.warnings[0]
    assert len(batch.services) == 25
    by_name = {s.name: s for s in batch.services}
    for row in rows:
        s = by_name[row["name"]]
        assert s.leika == row["leika"]
        assert s.synonyms == [
            x for x in row["synonyms"].split("|") if x and x.casefold() != row["name"].casefold()
        ]
    office = next(a for a in batch.authorities if a.name == rows[0]["authority_name"])
    assert office.postcode and office.city == "München" and office.street

    result = store_batch(engine, batch, MUENCHEN_KREIS)
    assert result.plan.summary()["leistung"]["added"] == 25
    kb = load_kb(engine, region_index)
    answer = kb.lookup(rows[0]["name"], "München").to_json()
    assert answer["results"][0]["service"]["name"] == rows[0]["name"]
    assert answer["results"][0]["authority"]["name"] == rows[0]["authority_name"]


def test_csv_columns_hours_and_offices_shared_by_services(engine):
    text = (
        "name,synonyms,level,authority_name,authority_phone,authority_email,authority_address,"
        "authority_hours,leika\n"
        'Hund anmelden,"Hundesteuer; Hund ummelden",gemeinde,Amt Leezen,04552 99770,info@amt-leezen.de,'
        '"Hamburger Straße 28, 23816 Leezen","Mo-Fr 08:00-12:00; Do 14:00-18:00",\n'
        "Hund anmelden,,,Gemeinde Todesfelde,,,,,\n"
        "Wohnsitz anmelden,Ummelden|Anmeldung,amt,Amt Leezen,,,,,99115001001000\n"
    )
    batch = parse_csv_text(text, id_prefix="tf", region_ars=TODESFELDE)
    hund = next(s for s in batch.services if s.name == "Hund anmelden")
    assert hund.id == "tf-hund-anmelden" and hund.synonyms == ["Hundesteuer", "Hund ummelden"]
    amt = next(a for a in batch.authorities if a.name == "Amt Leezen")
    assert (amt.street, amt.postcode, amt.city) == ("Hamburger Straße 28", "23816", "Leezen")
    assert amt.opening_hours == {
        "mon": [["08:00", "12:00"]],
        "tue": [["08:00", "12:00"]],
        "wed": [["08:00", "12:00"]],
        "thu": [["08:00", "12:00"], ["14:00", "18:00"]],
        "fri": [["08:00", "12:00"]],
    }
    assert sorted(batch.links) == [
        ("tf-hund-anmelden", "tf-oe-amt-leezen"),
        ("tf-hund-anmelden", "tf-oe-gemeinde-todesfelde"),
        ("tf-wohnsitz-anmelden", "tf-oe-amt-leezen"),
    ]
    result = store_batch(engine, batch, TODESFELDE)
    assert result.plan.summary()["zustaendigkeit"]["added"] == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,gebuehr\nHund anmelden,10\n", r"unknown column\(s\) gebuehr"),
        ("leika\n99115001001000\n", r"the column\(s\) name are required"),
        ("name,leika\nA,1\nB,123\n", r":2: column leika: a LeiKa key has 14 digits"),
        ("name,level\nA,bund\n", r":2: column level: must be one of"),
        ("name,authority_email\nA,x@y.de\n", r":2: column authority_name: office details are given"),
        (
            "name,authority_name,authority_hours\nA,Amt,Mo-Fr 18:00-08:00\n",
            r"column authority_hours: 18:00-08:00",
        ),
        (
            "name,leika\nA,99115001001000\nA,99115001001001\n",
            r":3: column name: service csv-a is described twice",
        ),
    ],
)
def test_csv_errors_name_the_line_and_column(text, message):
    with pytest.raises(CatalogFormatError, match=message):
        parse_csv_text(text, id_prefix="csv", region_ars=TODESFELDE)


def test_every_csv_column_is_documented_and_the_example_imports(engine):
    text = (ROOT / "docs" / "catalog-sync.md").read_text(encoding="utf-8")
    for column in COLUMNS:
        assert f"| `{column}` |" in text, f"CSV column {column} is not documented in docs/catalog-sync.md"
    example = re.search(r"```csv\n(.*?)```", text, re.S).group(1)
    batch = parse_csv_text(example, id_prefix="doc", region_ars=TODESFELDE)
    assert [s.name for s in batch.services] == ["Hund anmelden", "Wohnsitz anmelden"]
    assert batch.authorities[0].opening_hours["thu"] == [["08:00", "12:00"], ["14:00", "18:00"]]
    assert store_batch(engine, batch, TODESFELDE).applied


def test_an_invalid_object_rejects_the_whole_import_unless_partial(engine):
    batch = muenchen_batch()
    batch.services[5].leika = "123"  # not a LeiKa key
    bad_id = batch.services[5].id
    with pytest.raises(PayloadError) as exc:
        store_batch(engine, batch, MUENCHEN_KREIS)
    errors = exc.value.errors
    assert (errors[0].object, errors[0].field) == (f"write.leistung[5] id={bad_id}", "leika")
    assert "pattern" in errors[0].message
    # The zustaendigkeiten of the bad service are named too: they could not be stored without it.
    assert errors[1:] and all(
        e.field == "leistung_id" and f"leistung {bad_id} of this change set is invalid" in e.message
        for e in errors[1:]
    )
    assert counts(engine)["service"] == counts(engine)["versions"] == 0

    result = store_batch(engine, batch, MUENCHEN_KREIS, partial=True)
    assert result.applied and result.plan.summary()["leistung"]["added"] == 286
    # Its offices' zustaendigkeiten for the skipped service are skipped with a reason, not stored dangling.
    assert any(e.field == "leistung_id" and bad_id in e.message for e in result.plan.errors)
    with engine.connect() as conn:
        assert conn.execute(select(version_t.c.summary)).scalar_one()["rejected"] == len(result.plan.errors)
        assert len(conn.execute(select(online_t)).all()) == 9


def test_the_cli_grants_lists_and_revokes_token_regions(engine, capsys):
    url = str(engine.url)
    make_token(engine, "gemeinde-todesfelde")
    make_token(engine, "intake", role="service")
    assert run_cli("catalog", "scope", "grant", "gemeinde-todesfelde", TODESFELDE, "--db", url) == 0
    assert run_cli("catalog", "scope", "grant", "gemeinde-todesfelde", TODESFELDE, "--db", url) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines() == [
        f"token gemeinde-todesfelde may now write region {TODESFELDE}",
        f"token gemeinde-todesfelde may now write region {TODESFELDE} (unchanged)",
    ]
    assert run_cli("catalog", "scope", "list", "--db", url) == 0
    assert capsys.readouterr()[0] == f"gemeinde-todesfelde\tcatalog\t{TODESFELDE}\n"
    with pytest.raises(UsageError, match="role 'service'"):
        run_cli("catalog", "scope", "grant", "intake", TODESFELDE, "--db", url)
    with pytest.raises(UsageError, match="no region with ARS"):
        run_cli("catalog", "scope", "grant", "gemeinde-todesfelde", "010609999999", "--db", url)
    with pytest.raises(UsageError, match="no API token named"):
        run_cli("catalog", "scope", "grant", "nobody", TODESFELDE, "--db", url)
    assert run_cli("catalog", "scope", "revoke", "gemeinde-todesfelde", TODESFELDE, "--db", url) == 0
    capsys.readouterr()
    assert run_cli("catalog", "scope", "list", "--db", url) == 0
    assert capsys.readouterr()[0] == ""
    with engine.connect() as conn:
        assert conn.execute(select(scope_t)).all() == []
