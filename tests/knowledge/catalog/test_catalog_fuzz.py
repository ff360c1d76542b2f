"""Property tests of the catalogue parsers: the sync API's body (``hub.http.api_catalog.decode_body``, then
``knowledge.sync.parse_snapshot`` / ``parse_changes`` and the ``plan`` against the demo database) and the CSV
importer (``knowledge.importers.csv_import.decode_csv`` / ``parse_csv_text``). Whatever a municipality sends,
the answer is a change set, a plan or a batch — or the parser's own error (PayloadError and the other
SyncErrors, CatalogFormatError) with a message; never anything else, and nothing is written."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from strategies import FUZZ, csv_files, hostile_bytes, hostile_text, json_object_like, json_values

from hub.http.api_catalog import decode_body
from knowledge.importers.csv_import import COLUMNS, decode_csv, parse_csv_text
from knowledge.importers.dldb import CatalogFormatError, DldbBatch
from knowledge.sync import KINDS, ChangeSet, Plan, SyncError, parse_changes, parse_snapshot, plan

SEGEBERG = "01060"
ARS = st.sampled_from(("01060", "010605053088", "010600063063", "05974", "0", "99999", "01060x", ""))
IDENT = st.one_of(st.sampled_from(("se-reisepass", "se-kfz", "sh-wohnsitz-anmelden", "kreis-01060")),
                  hostile_text(40))

LEISTUNG = json_object_like({
    "id": IDENT, "name": hostile_text(120), "leika": st.sampled_from(("99086008001000", "123", "")),
    "ebene": st.sampled_from(("gemeinde", "amt", "kreis", "land", "bund")), "synonyme": st.lists(hostile_text(40)),
    "textmodule": json_object_like({"kurztext": hostile_text(200), "unterlagen": st.lists(hostile_text(40))}),
})
OFFICE = json_object_like({
    "id": IDENT, "name": hostile_text(120), "gebiet_ars": ARS,
    "anschrift": json_object_like({"plz": st.sampled_from(("23795", "2379", "")), "ort": hostile_text(40)}),
    "kontakt": json_object_like({"email": hostile_text(60), "web": hostile_text(60)}),
    "oeffnungszeiten": st.dictionaries(st.sampled_from(("mo", "di", "xx")), st.lists(st.tuples(
        st.sampled_from(("08:00", "12:00", "25:00", "8")), st.sampled_from(("12:00", "07:00", "x"))), max_size=2)),
})
ZUST = json_object_like({"leistung_id": IDENT, "ebene": st.sampled_from(("kreis", "gemeinde", "x")),
                         "gebiet_ars": ARS, "organisationseinheit_id": IDENT})
ONLINE = json_object_like({"id": IDENT, "leistung_id": IDENT, "url": st.sampled_from(
    ("https://example.org/x", "javascript:alert(1)", "http://", "")), "name": hostile_text(40)})
OBJECTS = {"leistung": LEISTUNG, "organisationseinheit": OFFICE, "zustaendigkeit": ZUST, "onlinedienst": ONLINE}
SNAPSHOT = st.fixed_dictionaries({}, optional={k: st.one_of(st.lists(v, max_size=4), json_values(4))
                                               for k, v in OBJECTS.items()})
CHANGES = st.fixed_dictionaries({}, optional={
    "write": st.one_of(SNAPSHOT, json_values(4)),
    "delete": st.one_of(st.fixed_dictionaries({}, optional={k: st.lists(st.one_of(IDENT, ZUST), max_size=3)
                                                           for k in KINDS}), json_values(4)),
})


def _through_the_sync_parsers(raw: bytes, mode: str, demo_engine) -> None:
    try:
        data = decode_body(raw)
        cs = parse_snapshot(data) if mode == "snapshot" else parse_changes(data)
        assert isinstance(cs, ChangeSet)
        for err in cs.errors:
            assert err.to_json()["message"]
        with demo_engine.connect() as conn:  # plan() only reads; the transaction is rolled back anyway
            try:
                for partial in (False, True):
                    assert isinstance(plan(conn, SEGEBERG, cs, scopes=[SEGEBERG], partial=partial), Plan)
            finally:
                conn.rollback()
    except SyncError as exc:
        assert str(exc)


@FUZZ
@given(body=SNAPSHOT)
def test_any_snapshot_is_planned_or_refused_with_a_reason(demo_engine, body):
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _through_the_sync_parsers(raw, "snapshot", demo_engine)


@FUZZ
@given(body=CHANGES)
def test_any_change_set_is_planned_or_refused_with_a_reason(demo_engine, body):
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _through_the_sync_parsers(raw, "changes", demo_engine)


@FUZZ
@given(raw=hostile_bytes(3000), mode=st.sampled_from(("snapshot", "changes")))
def test_any_bytes_as_a_catalogue_body_are_refused_with_a_reason(demo_engine, raw, mode):
    _through_the_sync_parsers(raw, mode, demo_engine)


def _through_the_csv_importer(raw: bytes) -> None:
    try:
        text, warnings = decode_csv(raw, "upload.csv")
        assert all(isinstance(w, str) for w in warnings)
        batch = parse_csv_text(text, id_prefix="fz", region_ars=SEGEBERG, source="upload.csv")
        assert isinstance(batch, DldbBatch)
    except CatalogFormatError as exc:
        assert str(exc).startswith("upload.csv")  # the message names the file (and line, column)


@FUZZ
@given(raw=csv_files(COLUMNS))
def test_any_spreadsheet_export_is_imported_or_refused_naming_the_line(raw):
    _through_the_csv_importer(raw)


@FUZZ
@given(raw=hostile_bytes(3000))
def test_any_bytes_as_a_csv_file_are_refused_naming_the_file(raw):
    _through_the_csv_importer(raw)
