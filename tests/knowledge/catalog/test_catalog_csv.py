"""Bad CSV files for ``citizen-hub catalog import --format csv``: a clear error with the line, nothing stored.

Wrong delimiter, a missing or doubled column, a BOM (fine), UTF-16 (fine), broken UTF-8, Windows-1252
(fine, with a warning), an unterminated quote, a cell over the size limit, a NUL byte, a header and
nothing else, a file over the size limit. Each is checked on the parser and once more end to end
through the CLI against a real database.
"""

from __future__ import annotations

import re

import pytest
from catalog_support import (  # noqa: F401  (fixtures: engine, region_index, regions_template)
    TODESFELDE,
    counts,
    engine_fixture,
    region_index_fixture,
    regions_template_fixture,
)

from hub.cli import main
from knowledge.importers import csv_import
from knowledge.importers.csv_import import parse_csv
from knowledge.importers.dldb import CatalogFormatError

GOOD = "name;leika;synonyms;level;authority_name\nHund anmelden;;Hundesteuer;gemeinde;Amt Leezen\n"

BAD: list[tuple[str, bytes, str]] = [  # (name, file content, the error must match this)
    (
        "pipe delimiter",
        b"name|leika|synonyms\nHund anmelden||Hundesteuer\n",
        r"\.csv:1: the header row is one column",
    ),
    ("space delimiter", b"name leika\nHund 1\n", r":1: the header row is one column 'name leika'"),
    ("missing name column", b"leika;level\n99115001001000;amt\n", r":1: the column\(s\) name are required"),
    ("a typo in a column", b"name;synonym\nHund;Steuer\n", r":1: unknown column\(s\) synonym; known are"),
    ("a column twice", b"name;leika;name\nHund;;Katze\n", r":1: the column\(s\) name occur twice"),
    ("more cells than columns", b"name;level\nHund;amt;extra\n", r":2: more cells than columns"),
    (
        "broken UTF-8 in line 3",
        "name;synonyms\nHündin;Welpe\nKatze;".encode() + b"M\xfcll\n",
        r":3: not valid UTF-8 \(byte 0xfc at column 8\)",
    ),
    ("broken UTF-16", b"\xff\xfe" + "name\nHund\n".encode("utf-16-le") + b"\x00\xd8", r"not valid UTF-16"),
    ("an unterminated quote", b'name;short_text\nHund;"nie zu\nKatze;x\n', r":2: unexpected end of data; is a quote not closed\?"),
    ("text after a closing quote", b'name;short_text\nHund;"a"b\n', r":2: '.' expected after '\"'"),
    (
        "a cell over the size limit",
        b"name;full_text\nHund;" + b"x" * 200_000 + b"\n",
        r":2: field larger than",
    ),
    ("a NUL byte", b"name\nHund\nKa\x00tze\n", r":3: a NUL byte: binary data"),
    ("an empty file", b"", r":1: empty file"),
    ("only a header", b"name;leika\n", r"no services"),
    ("a bad LeiKa key", b"name;leika\nHund;\nKatze;123\n", r":3: column leika: a LeiKa key has 14 digits"),
    (
        "line count past blank lines and a cell of two lines",
        b'name;short_text;leika\n\nHund;"zwei\nZeilen";\n\nKatze;x;123\n',
        r":6: column leika",
    ),
    (
        "hours past midnight",
        b"name;authority_name;authority_hours\nA;Amt;Mo 08:00-24:30\n",
        r":2: column authority_hours",
    ),
]


def run_cli(*argv: str) -> int:
    """The real entry point of ``citizen-hub`` (exit code 2 and a message for a usage error)."""
    return main(list(argv))


def write(tmp_path, content: bytes, name: str = "leistungen.csv"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("name, content, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_csv_file_is_a_clear_error_with_the_line(tmp_path, name, content, message):
    with pytest.raises(CatalogFormatError, match=message):
        parse_csv(write(tmp_path, content), id_prefix="tf", region_ars=TODESFELDE)


@pytest.mark.parametrize(
    "name, content, warned",
    [
        ("UTF-8", GOOD.encode(), False),
        ("UTF-8 with BOM", b"\xef\xbb\xbf" + GOOD.encode(), False),
        ("UTF-16 with BOM", GOOD.encode("utf-16"), False),
        ("Windows-1252", GOOD.replace("Hund ", "Hündin ").encode("cp1252"), True),
        ("comma", GOOD.replace(";", ",").encode(), False),
        ("tab", GOOD.replace(";", "\t").encode(), False),
        ("CRLF", GOOD.replace("\n", "\r\n").encode(), False),
        ("upper-case header", GOOD.replace("name;leika", "Name;LEIKA").encode(), False),
    ],
)
def test_accepted_encodings_and_delimiters(tmp_path, name, content, warned):
    batch = parse_csv(write(tmp_path, content), id_prefix="tf", region_ars=TODESFELDE)
    assert [s.name.replace("Hündin", "Hund") for s in batch.services] == ["Hund anmelden"]
    assert batch.services[0].synonyms == ["Hundesteuer"]
    assert [a.name for a in batch.authorities] == ["Amt Leezen"], "the BOM is not part of the first column"
    assert bool(batch.warnings) == warned


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD.encode() + b"Katze anmelden;;;gemeinde;\n" * 2000)
    monkeypatch.setattr(csv_import, "MAX_FILE_BYTES", 10_000)
    with pytest.raises(CatalogFormatError, match=r"bytes, over the limit of 10000"):
        parse_csv(path, id_prefix="tf", region_ars=TODESFELDE)
    with pytest.raises(CatalogFormatError, match="cannot read"):
        parse_csv(tmp_path / "missing.csv", id_prefix="tf", region_ars=TODESFELDE)


@pytest.mark.parametrize(
    "name, content, message",
    [
        b
        for b in BAD
        if b[0]
        in (
            "pipe delimiter",
            "missing name column",
            "broken UTF-8 in line 3",
            "an unterminated quote",
            "a bad LeiKa key",
        )
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "",
)
def test_the_cli_prints_the_error_with_the_line_and_stores_nothing(
    engine, tmp_path, capsys, name, content, message
):
    before = counts(engine)
    path = write(tmp_path, content)
    code = run_cli(
        "catalog", "import", "--format", "csv", str(path), "--region", TODESFELDE, "--db", str(engine.url)
    )
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert counts(engine) == before


def test_the_cli_imports_a_good_csv_with_a_bom(engine, tmp_path, capsys):
    path = write(tmp_path, b"\xef\xbb\xbf" + GOOD.encode())
    argv = (
        "catalog",
        "import",
        "--format",
        "csv",
        str(path),
        "--region",
        TODESFELDE,
        "--db",
        str(engine.url),
    )
    assert run_cli(*argv) == 0
    out = capsys.readouterr()
    assert "version 0 → 1" in out.out and "leistung +1" in out.out
    assert counts(engine, TODESFELDE)["service"] == 1


@pytest.mark.parametrize(
    "cell, synonyms",
    [
        # the bug of issue 13: a keyword with a comma was split at it
        ('"Strassen, Fahrrad & Verkehr"', ["Strassen, Fahrrad & Verkehr"]),
        ('"Strassen, Fahrrad & Verkehr|Schlagloch"', ["Strassen, Fahrrad & Verkehr", "Schlagloch"]),
        ('"Hundesteuer; Hund ummelden"', ["Hundesteuer", "Hund ummelden"]),  # ; still splits (older files)
        ('"a|b;c"', ["a", "b", "c"]),
        ('" | |Hundesteuer|hundesteuer|Hund anmelden"', ["Hundesteuer"]),  # empty, duplicate and the name dropped
    ],
)
def test_keyword_lists_split_at_bar_and_semicolon_never_at_a_comma(cell, synonyms):
    text = f"name,synonyms\nHund anmelden,{cell}\n"
    batch = csv_import.parse_csv_text(text, id_prefix="tf", region_ars=TODESFELDE)
    assert batch.services[0].synonyms == synonyms
