"""``citizen-hub region find`` and the one check of a typed ARS (issue 13 item 6), over every German region."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine

from hub.cli import main
from knowledge.regions import UnknownRegionError, check_region

KONSTANZ = "083355004043"
TYPED = "083350043043"  # what a user typed for Konstanz (the town belongs to a Verwaltungsgemeinschaft)


def test_region_find_konstanz_prints_every_match_with_keys_and_chain(demo_db_url, capsys):
    assert main(["region", "find", "Konstanz", "--db", demo_db_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1. Konstanz  ARS 083355004043  AGS 08335043  gemeinde (Große Kreisstadt)")
    assert "VVG der Stadt Konstanz → Landkreis Konstanz → Baden-Württemberg" in lines[0]
    assert any("Landkreis Konstanz  ARS 08335" in line for line in lines)
    assert any("ARS 083355004 " in line and "Verwaltungsgemeinschaft" in line for line in lines)


def test_region_find_json_by_ags_and_typo(demo_db_url, capsys):
    assert main(["region", "find", "08335043", "--json", "--db", demo_db_url]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["ars"] == KONSTANZ and row["level"] == "gemeinde" and row["kind"] == "Große Kreisstadt"
    assert [c["level"] for c in row["chain"]] == ["amt", "kreis", "land"]
    assert main(["region", "find", "Konstnz", "--json", "--db", demo_db_url]) == 0
    assert json.loads(capsys.readouterr().out)[0]["ars"] == KONSTANZ


def test_region_find_an_unknown_key_says_so_and_lists_the_closest(demo_db_url, capsys):
    assert main(["region", "find", TYPED, "--db", demo_db_url]) == 0
    out = capsys.readouterr()
    assert "no region has the key 083350043043" in out.err and f"1. Konstanz  ARS {KONSTANZ}" in out.out


@pytest.mark.parametrize("query, code", [("Xqzwvbnm", 1), ("   ", 2)])
def test_region_find_nothing_or_empty(demo_db_url, capsys, query, code):
    assert main(["region", "find", query, "--db", demo_db_url]) == code


def test_check_region_suggests_konstanz_for_the_mistyped_ars(demo_db_url):
    engine = create_engine(demo_db_url)
    with engine.connect() as conn:
        assert check_region(conn, KONSTANZ) == KONSTANZ
        with pytest.raises(UnknownRegionError) as info:
            check_region(conn, TYPED)
        assert info.value.suggestions[0].ars == KONSTANZ
        assert "unknown region" in str(info.value) and "run" not in str(info.value).replace("region find", "")
        with pytest.raises(UnknownRegionError, match="is not an ARS.*083355004043 Konstanz"):
            check_region(conn, "Konstanz")
        for bad in ("0833", "12345678901234", "", None, 8335):
            with pytest.raises(ValueError):
                check_region(conn, bad)
    engine.dispose()


def test_catalog_import_with_an_unknown_ars_suggests_konstanz_not_init(demo_db_url, tmp_path, capsys):
    csv_file = tmp_path / "k.csv"
    csv_file.write_text("name;synonyms\nHund anmelden;Hundesteuer\n", encoding="utf-8")
    assert main(["catalog", "import", str(csv_file), "--format", "csv", "--region", TYPED, "--db", demo_db_url]) == 2
    err = capsys.readouterr().err
    assert f"unknown region: no region with ARS {TYPED}" in err and f"{KONSTANZ} Konstanz" in err
    assert "citizen-hub init" not in err


def test_token_add_with_an_unknown_ars_suggests_konstanz(demo_db_url, tmp_path, capsys):
    import shutil

    path = tmp_path / "copy.sqlite3"
    shutil.copyfile(demo_db_url.removeprefix("sqlite:///"), path)
    url = f"sqlite:///{path}"
    assert main(["token", "add", "konstanz-sync", "--role", "catalog", "--region", TYPED, "--db", url]) == 2
    err = capsys.readouterr().err
    assert f"no region with ARS {TYPED}" in err and f"{KONSTANZ} Konstanz" in err


def test_catalog_import_help_lists_the_columns_and_the_separators(capsys):
    with pytest.raises(SystemExit):
        main(["catalog", "import", "--help"])
    out = capsys.readouterr().out
    for column in ("name", "synonyms", "documents", "authority_hours", "leika"):
        assert f"\n  {column} " in out
    assert "split at '|' and ';' only" in out and "Strassen, Fahrrad & Verkehr" in out
