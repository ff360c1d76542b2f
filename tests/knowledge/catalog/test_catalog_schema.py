"""docs/catalog-sync.schema.json says what the server accepts, no more and no less.

Every example body in docs/catalog-sync.md validates against the schema and is applied by the real
HTTP API; a matrix of objects, each one field off a valid object, gets the same verdict from the schema
and from the server's own validation (knowledge/sync.py). The few rules a JSON Schema cannot state
(areas inside the region, references, span order) are listed in SERVER_ONLY and checked to be refused
by the server.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
from catalog_support import (  # noqa: F401  (fixtures: engine, region_index, regions_template)
    NORDERSTEDT,
    ROOT,
    SEGEBERG,
    auth,
    counts,
    engine_fixture,
    make_env,
    region_index_fixture,
    regions_template_fixture,
)

from knowledge.sync import parse_changes, parse_snapshot

DOC = (ROOT / "docs" / "catalog-sync.md").read_text(encoding="utf-8")
SCHEMA = json.loads((ROOT / "docs" / "catalog-sync.schema.json").read_text(encoding="utf-8"))


def _validator(definition: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": SCHEMA["$defs"]})


SNAPSHOT, CHANGES, WHOLE = (
    _validator("snapshot"),
    _validator("changes"),
    jsonschema.Draft202012Validator(SCHEMA),
)


def schema_ok(body: Any, validator: jsonschema.Draft202012Validator = SNAPSHOT) -> bool:
    return not list(validator.iter_errors(body))


def server_ok(body: Any, mode: str = "snapshot") -> bool:
    try:
        cs = parse_snapshot(body) if mode == "snapshot" else parse_changes(body)
    except Exception:  # PayloadError: the whole body has the wrong shape
        return False
    return not cs.errors


def test_the_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_the_docs_examples_pass_the_schema_and_the_server():
    snapshots = [json.loads(x) for x in re.findall(r"```json snapshot\n(.*?)```", DOC, re.S)]
    changes = [json.loads(x) for x in re.findall(r"```json changes\n(.*?)```", DOC, re.S)]
    assert snapshots and changes, "the docs lost their examples"
    for body in snapshots:
        assert schema_ok(body, SNAPSHOT) and schema_ok(body, WHOLE)
        assert server_ok(body, "snapshot")
    for body in changes:
        assert schema_ok(body, CHANGES) and schema_ok(body, WHOLE)
        assert server_ok(body, "changes")


async def test_the_docs_examples_are_applied_by_the_http_api(aiohttp_client, engine, region_index):
    """The snapshot of Kreis Segeberg, then the changes of Norderstedt, exactly as the docs show them."""
    snapshot = json.loads(re.search(r"```json snapshot\n(.*?)```", DOC, re.S).group(1))
    changes = json.loads(re.search(r"```json changes\n(.*?)```", DOC, re.S).group(1))
    env = await make_env(aiohttp_client, engine, region_index)
    resp = await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot", json=snapshot, headers=auth(env, "segeberg")
    )
    assert resp.status == 200, await resp.text()
    # The Kreis token reaches Norderstedt (a Gemeinde of the Kreis).
    resp = await env.client.post(
        f"/api/catalog/{NORDERSTEDT}/changes", json=changes, headers=auth(env, "segeberg")
    )
    result = await resp.json()
    assert resp.status == 200, result
    assert result["diff"]["added"]["organisationseinheit"] == ["nst-bauaufsicht"]
    assert result["diff"]["removed"]["organisationseinheit"] == [], "deleting what is not there is a no-op"
    found = env.kb.lookup("Bauantrag", location="Norderstedt").answers[0]
    assert (found.service.id, found.authority.id) == ("se-baugenehmigung", "nst-bauaufsicht")
    # Reading the catalogue back gives a body that again passes the schema.
    resp = await env.client.get(f"/api/catalog/{SEGEBERG}", headers=auth(env, "segeberg"))
    assert schema_ok((await resp.json())["catalog"], SNAPSHOT)


# -- the matrix: one field off a valid object -----------------------------------------------------------

BASE = {
    "leistung": {
        "id": "se-a",
        "name": "Hund anmelden",
        "leika": "99036006001000",
        "ebene": "kreis",
        "synonyme": ["Hundesteuer"],
        "textmodule": {"kurztext": "Kurz.", "unterlagen": ["Ausweis"], "kosten": "10 Euro"},
    },
    "organisationseinheit": {
        "id": "se-kv",
        "name": "Kreisverwaltung",
        "art": "Kreisverwaltung",
        "gebiet_ars": SEGEBERG,
        "anschrift": {"strasse": "Hamburger Straße 30", "plz": "23795", "ort": "Bad Segeberg"},
        "kontakt": {"telefon": "04551 951-0", "email": "info@segeberg.de", "web": "https://www.segeberg.de"},
        "oeffnungszeiten": {"mon": [["08:00", "12:00"]]},
    },
    "zustaendigkeit": {"leistung_id": "se-a", "gebiet_ars": SEGEBERG, "organisationseinheit_id": "se-kv"},
    "onlinedienst": {
        "id": "se-on",
        "leistung_id": "se-a",
        "url": "https://www.segeberg.de/hund",
        "name": "Online",
    },
}

DROP = object()

# (kind, dotted path, value): the base object with that one field set (DROP: removed).
MUTATIONS: list[tuple[str, str, Any]] = [
    # leistung
    ("leistung", "id", DROP),
    ("leistung", "id", ""),
    ("leistung", "id", "-x"),
    ("leistung", "id", "a b"),
    ("leistung", "id", "a/b"),
    ("leistung", "id", "x" * 100),
    ("leistung", "id", "x" * 101),
    ("leistung", "id", "muc:1.2_3-4"),
    ("leistung", "id", 17),
    ("leistung", "name", DROP),
    ("leistung", "name", ""),
    ("leistung", "name", "   "),
    ("leistung", "name", "x" * 300),
    ("leistung", "name", "x" * 301),
    ("leistung", "name", "Hund\x00"),
    ("leistung", "name", "Hund\x1b[31m"),
    ("leistung", "name", "Hund\tanmelden"),
    ("leistung", "name", None),
    ("leistung", "name", ["Hund"]),
    ("leistung", "leika", None),
    ("leistung", "leika", "9903600600100"),
    ("leistung", "leika", "990360060010000"),
    ("leistung", "leika", "9903600600100x"),
    ("leistung", "leika", 99036006001000),
    ("leistung", "ebene", "bund"),
    ("leistung", "ebene", "amt"),
    ("leistung", "ebene", None),
    ("leistung", "ebene", DROP),
    ("leistung", "synonyme", []),
    ("leistung", "synonyme", "Hundesteuer"),
    ("leistung", "synonyme", [""]),
    ("leistung", "synonyme", ["x" * 201]),
    ("leistung", "synonyme", ["ok"] * 200),
    ("leistung", "synonyme", ["ok"] * 201),
    ("leistung", "synonyme", [3]),
    ("leistung", "synonyme", ["a\x00b"]),
    ("leistung", "textmodule", {}),
    ("leistung", "textmodule", "Kurz"),
    ("leistung", "textmodule.kurztext", "x" * 1000),
    ("leistung", "textmodule.kurztext", "x" * 1001),
    ("leistung", "textmodule.volltext", "Zeile 1\nZeile 2\r\n"),
    ("leistung", "textmodule.volltext", "x" * 50_001),
    ("leistung", "textmodule.unterlagen", ["x"] * 101),
    ("leistung", "textmodule.unterlagen", [""]),
    ("leistung", "textmodule.kosten", "\x07"),
    ("leistung", "textmodule.thema", "Familie"),
    ("leistung", "textmodule.lebenslage", "x" * 301),
    ("leistung", "textmodule.extra", "x"),
    ("leistung", "online_url", "https://x.de"),
    ("leistung", "owner_ars", SEGEBERG),
    # organisationseinheit
    ("organisationseinheit", "gebiet_ars", DROP),
    ("organisationseinheit", "gebiet_ars", "0106"),
    ("organisationseinheit", "gebiet_ars", "01060005"),
    ("organisationseinheit", "gebiet_ars", "010605053"),
    ("organisationseinheit", "gebiet_ars", 1060),
    ("organisationseinheit", "id", DROP),
    ("organisationseinheit", "id", "se kv"),
    ("organisationseinheit", "name", DROP),
    ("organisationseinheit", "art", "x" * 301),
    ("organisationseinheit", "anschrift", {}),
    ("organisationseinheit", "anschrift.plz", "2379"),
    ("organisationseinheit", "anschrift.plz", ""),
    ("organisationseinheit", "anschrift.plz", 23795),
    ("organisationseinheit", "anschrift.land", "DE"),
    ("organisationseinheit", "anschrift.ort", "Bad\x00Segeberg"),
    ("organisationseinheit", "kontakt.email", "kein-at.de"),
    ("organisationseinheit", "kontakt.email", "a@b"),
    ("organisationseinheit", "kontakt.email", ""),
    ("organisationseinheit", "kontakt.email", "a\x00b@c.de"),
    ("organisationseinheit", "kontakt.email", "a b@c.de"),
    ("organisationseinheit", "kontakt.web", "ftp://x.de"),
    ("organisationseinheit", "kontakt.web", "javascript:alert(1)"),
    ("organisationseinheit", "kontakt.web", "https://x.de/\x00"),
    ("organisationseinheit", "kontakt.web", ""),
    ("organisationseinheit", "kontakt.fax", "0"),
    ("organisationseinheit", "kontakt.telefon", "x" * 101),
    ("organisationseinheit", "oeffnungszeiten", {}),
    ("organisationseinheit", "oeffnungszeiten", {"mon": []}),
    ("organisationseinheit", "oeffnungszeiten", {"monday": [["08:00", "12:00"]]}),
    ("organisationseinheit", "oeffnungszeiten", {"mon": [["8:00", "12:00"]]}),
    ("organisationseinheit", "oeffnungszeiten", {"mon": [["08:00", "24:00"]]}),
    ("organisationseinheit", "oeffnungszeiten", {"mon": [["08:00", "24:01"]]}),
    ("organisationseinheit", "oeffnungszeiten", {"mon": [["08:00"]]}),
    ("organisationseinheit", "oeffnungszeiten", {"mon": [["08:00", "12:00", "14:00"]]}),
    ("organisationseinheit", "oeffnungszeiten", {"mon": ["08:00-12:00"]}),
    ("organisationseinheit", "oeffnungszeiten", {"sun": [["10:00", "11:00"], ["12:00", "13:00"]]}),
    # zustaendigkeit
    ("zustaendigkeit", "leistung_id", DROP),
    ("zustaendigkeit", "ebene", "kreis"),
    ("zustaendigkeit", "ebene", None),
    ("zustaendigkeit", "leistung_id", None),
    ("zustaendigkeit", "organisationseinheit_id", DROP),
    ("zustaendigkeit", "organisationseinheit_id", "a b"),
    ("zustaendigkeit", "gebiet_ars", "123"),
    ("zustaendigkeit", "id", "z1"),
    # Area lists (issue 13): instead of gebiet_ars, never beside it; and the role.
    ("zustaendigkeit", "gebiete", ["01060", "010605053088"]),
    ("zustaendigkeit", "gebiete", []),
    ("zustaendigkeit", "gebiete", ["0106"]),
    ("zustaendigkeit", "gebiete", "01060"),
    ("zustaendigkeit", "gebiete", None),
    ("zustaendigkeit", "gebiet_ars", None),
    ("zustaendigkeit", "rolle", "ansprechpunkt"),
    ("zustaendigkeit", "rolle", "zustaendig"),
    ("zustaendigkeit", "rolle", "chef"),
    ("zustaendigkeit", "rolle", None),
    # onlinedienst
    ("onlinedienst", "url", DROP),
    ("onlinedienst", "url", "http://x.de"),
    ("onlinedienst", "url", "https://"),
    ("onlinedienst", "url", "https://x.de/a b"),
    ("onlinedienst", "url", "https://x.de/\x00"),
    ("onlinedienst", "url", "https://x.de/" + "a" * 2000),
    ("onlinedienst", "leistung_id", DROP),
    ("onlinedienst", "id", DROP),
    ("onlinedienst", "id", "x" * 101),
    ("onlinedienst", "name", "x" * 301),
]


def mutate(kind: str, path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BASE[kind])
    *parents, last = path.split(".")
    target = obj
    for part in parents:
        target = target[part]
    if value is DROP:
        target.pop(last, None)
    else:
        target[last] = value
    return obj


def _case_id(case: tuple[str, str, Any]) -> str:
    kind, path, value = case
    shown = "DROP" if value is DROP else repr(value)
    return f"{kind}.{path}={shown[:30]}"


@pytest.mark.parametrize("case", MUTATIONS, ids=[_case_id(c) for c in MUTATIONS])
def test_schema_and_server_agree(case):
    kind, path, value = case
    obj = mutate(kind, path, value)
    snapshot = {kind: [obj]}
    verdict = schema_ok(snapshot)
    assert server_ok(snapshot) == verdict, (
        f"schema says {'valid' if verdict else 'invalid'}, server disagrees"
    )
    # Written through /changes, the same object gets the same verdict.
    changes = {"write": {kind: [obj]}}
    assert schema_ok(changes, CHANGES) == verdict == server_ok(changes, "changes")
    if kind == "zustaendigkeit":  # a zustaendigkeit is also deleted by its triple
        deletion = {"delete": {kind: [obj]}}
        assert schema_ok(deletion, CHANGES) == verdict == server_ok(deletion, "changes")


def test_the_matrix_covers_both_verdicts_and_every_field_of_the_schema():
    verdicts = {schema_ok({k: [mutate(k, p, v)]}) for k, p, v in MUTATIONS}
    assert verdicts == {True, False}
    for kind in BASE:
        fields = set(SCHEMA["$defs"][kind]["properties"])
        mutated = {p.split(".")[0] for k, p, _ in MUTATIONS if k == kind}
        assert fields <= mutated, f"{kind}: no case for {sorted(fields - mutated)}"
        assert schema_ok({kind: [BASE[kind]]}) and server_ok({kind: [BASE[kind]]})


BODIES: list[tuple[str, Any]] = [
    ("snapshot", {}),
    ("snapshot", []),
    ("snapshot", {"leistung": {}}),
    ("snapshot", {"leistungen": []}),
    ("snapshot", {"leistung": ["se-a"]}),
    ("changes", {}),
    ("changes", {"write": {}, "delete": {}}),
    ("changes", {"write": []}),
    ("changes", {"upsert": {}}),
    ("changes", {"delete": {"leistung": ["se-a", "se-b"]}}),
    ("changes", {"delete": {"leistung": [{"id": "se-a"}]}}),
    ("changes", {"delete": {"leistung": ["a b"]}}),
    ("changes", {"delete": {"onlinedienst": "se-on"}}),
    ("changes", {"delete": {"zustaendigkeit": ["se-a@01060>se-kv"]}}),
    ("changes", {"write": {"leistung": [BASE["leistung"]]}, "delete": {"organisationseinheit": ["x"]}}),
]


@pytest.mark.parametrize("mode, body", BODIES, ids=[f"{m}:{json.dumps(b)[:40]}" for m, b in BODIES])
def test_schema_and_server_agree_on_the_shape_of_bodies(mode, body):
    validator = SNAPSHOT if mode == "snapshot" else CHANGES
    assert schema_ok(body, validator) == server_ok(body, mode)


# Rules only the server can check; the schema lets these through and the server refuses them.
SERVER_ONLY = [
    (
        "span that ends before it starts",
        {
            "organisationseinheit": [
                mutate("organisationseinheit", "oeffnungszeiten", {"mon": [["12:00", "08:00"]]})
            ]
        },
    ),
    ("an id twice in one change set", {"leistung": [BASE["leistung"], BASE["leistung"]]}),
]


@pytest.mark.parametrize("reason, body", SERVER_ONLY, ids=[r for r, _ in SERVER_ONLY])
def test_rules_beyond_the_schema_are_enforced_by_the_server(reason, body):
    assert schema_ok(body)
    assert not server_ok(body)
