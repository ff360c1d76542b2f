"""Hostile bodies for /api/catalog: each one is a 4xx with a reason, and nothing is changed.

Deep nesting, giant numbers, NaN, duplicate keys (which json.loads would silently resolve, turning a
snapshot into "remove everything"), NUL and other control characters in every kind of field, a BOM,
broken UTF-8. After each the stored catalogue, its version and the running lookups are as before.
"""

from __future__ import annotations

import json

import pytest
from catalog_support import (  # noqa: F401  (fixtures: engine, region_index, regions_template)
    SEGEBERG,
    auth,
    counts,
    engine_fixture,
    kreis_body,
    leistung,
    make_env,
    office,
    region_index_fixture,
    regions_template_fixture,
)

JSON = {"Content-Type": "application/json"}
GOOD = json.dumps(kreis_body())

HOSTILE: list[tuple[str, bytes, str]] = [  # (name, body, words the error must contain)
    ("deep arrays", b"[" * 200_000 + b"]" * 200_000, "zu tief verschachtelt"),
    ("deep objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "zu tief verschachtelt"),
    (
        "deep inside a field",
        b'{"leistung": [{"id": "se-x", "name": "X", "synonyme": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
        "zu tief verschachtelt",
    ),
    (
        "a giant integer",
        b'{"leistung": [{"id": "se-x", "name": ' + b"9" * 100_000 + b"}]}",
        "mehr als 20 Ziffern",
    ),
    ("a giant negative integer", b'{"leistung": [{"id": "se-x", "name": -' + b"9" * 5000 + b"}]}", "Ziffern"),
    ("a float out of range", b'{"leistung": [{"id": "se-x", "name": 1e999}]}', "außerhalb des Wertebereichs"),
    ("NaN", b'{"leistung": [{"id": "se-x", "name": NaN}]}', "NaN ist kein JSON"),
    ("Infinity", b'{"leistung": [{"id": "se-x", "name": -Infinity}]}', "ist kein JSON"),
    (
        "duplicate top-level keys",  # the second list would win: a snapshot that removes se-wkz
        b'{"leistung": ' + json.dumps(kreis_body()["leistung"]).encode() + b', "leistung": []}',
        "'leistung' kommt in einem Objekt zweimal vor",
    ),
    (
        "duplicate keys in an object",
        b'{"leistung": [{"id": "se-wkz", "id": "se-other", "name": "X"}]}',
        "zweimal",
    ),
    ("duplicate odd keys", b'{"leistung": [], "\\u0000": 1, "\\u0000": 2}', "kommt in einem Objekt zweimal vor"),
    ("a raw NUL byte", b'{"leistung": [{"id": "se-x", "name": "a\x00b"}]}', "kein gültiges JSON"),
    ("a raw control character", b'{"leistung": [{"id": "se-x", "name": "a\x1bb"}]}', "kein gültiges JSON"),
    ("a BOM", b"\xef\xbb\xbf" + GOOD.encode(), "BOM"),
    ("UTF-16", GOOD.encode("utf-16"), "kein UTF-8"),
    ("broken UTF-8", b'{"leistung": [{"id": "se-x", "name": "M\xfcnchen"}]}', "kein UTF-8"),
    ("an empty body", b"", "kein gültiges JSON"),
    ("a bare string", b'"leistung"', "must be a JSON object"),
    ("null", b"null", "must be a JSON object"),
    ("trailing garbage", GOOD.encode() + b" {}", "kein gültiges JSON"),
    ("a huge unknown key", b'{"' + b"k" * 1_000_000 + b'": []}', "unknown keys"),
]

NUL = "\u0000"
# Escaped NUL (valid JSON) in each kind of field: PostgreSQL cannot store it and no text may hold it.
NUL_FIELDS: list[tuple[str, dict]] = [
    ("leistung.name", {"leistung": [leistung("se-x", f"Hund{NUL}")]}),
    ("leistung.id", {"leistung": [leistung(f"se-x{NUL}", "Hund")]}),
    ("leistung.leika", {"leistung": [leistung("se-x", "Hund", leika=f"9903600600100{NUL}")]}),
    ("leistung.synonyme", {"leistung": [leistung("se-x", "Hund", synonyme=[f"a{NUL}"])]}),
    ("textmodule.volltext", {"leistung": [leistung("se-x", "Hund", textmodule={"volltext": f"x{NUL}"})]}),
    (
        "kontakt.email",
        {"organisationseinheit": [office("se-o", "O", SEGEBERG, kontakt={"email": f"a{NUL}@b.de"})]},
    ),
    (
        "kontakt.web",
        {"organisationseinheit": [office("se-o", "O", SEGEBERG, kontakt={"web": f"https://a{NUL}"})]},
    ),
    (
        "anschrift.plz",
        {"organisationseinheit": [office("se-o", "O", SEGEBERG, anschrift={"plz": f"2379{NUL}"})]},
    ),
    ("gebiet_ars", {"organisationseinheit": [office("se-o", "O", f"0106{NUL}")]}),
    (
        "oeffnungszeiten",
        {
            "organisationseinheit": [
                office("se-o", "O", SEGEBERG, oeffnungszeiten={"mon": [[f"08:00{NUL}", "12:00"]]})
            ]
        },
    ),
    (
        "onlinedienst.url",
        {"onlinedienst": [{"id": "se-on", "leistung_id": "se-wkz", "url": f"https://a/{NUL}"}]},
    ),
]


@pytest.fixture()
async def env(aiohttp_client, engine, region_index):
    env = await make_env(aiohttp_client, engine, region_index)
    resp = await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot", data=GOOD, headers=auth(env, "segeberg", **JSON)
    )
    assert resp.status == 200
    env.before = counts(engine)
    return env


async def _unchanged(env) -> None:
    assert counts(env.engine) == env.before, "nothing may change"
    resp = await env.client.get(f"/api/catalog/{SEGEBERG}", headers=auth(env, "segeberg"))
    assert resp.headers["ETag"] == '"1"'
    assert [x["id"] for x in (await resp.json())["catalog"]["leistung"]] == ["se-wkz"]
    assert env.kb.services["se-wkz"].name == "Wunschkennzeichen reservieren" and "se-x" not in env.kb.services


@pytest.mark.parametrize("path", ["snapshot", "changes"])
@pytest.mark.parametrize("name, body, words", HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_a_hostile_body_is_refused_and_nothing_changes(env, path, name, body, words):
    method = env.client.put if path == "snapshot" else env.client.post
    for query in ("", "?partial=true"):
        resp = await method(
            f"/api/catalog/{SEGEBERG}/{path}{query}", data=body, headers=auth(env, "segeberg", **JSON)
        )
        assert 400 <= resp.status < 500, (name, resp.status)
        result = await resp.json()
        assert words in result["error"], result["error"][:300]
        assert len(result["error"]) < 1000, "the error does not repeat what was sent"
        assert "\x00" not in json.dumps(result, ensure_ascii=False)
    await _unchanged(env)


@pytest.mark.parametrize("name, body", NUL_FIELDS, ids=[n for n, _ in NUL_FIELDS])
async def test_a_nul_character_in_any_field_is_a_400_naming_the_field(env, name, body):
    for query in ("", "?partial=true"):
        resp = await env.client.post(
            f"/api/catalog/{SEGEBERG}/changes{query}", json={"write": body}, headers=auth(env, "segeberg")
        )
        result = await resp.json()
        if query:  # partial: the bad object is skipped and named, nothing else was sent
            assert resp.status == 200 and result["applied"] is False and result["errors"], result
        else:
            assert resp.status == 400, result
        field = name.split(".")[-1]
        assert any(field in e["field"] or field == "id" for e in result["errors"]), result["errors"]
        assert NUL not in json.dumps(result, ensure_ascii=False), "errors never echo the value"
    await _unchanged(env)


async def test_the_errors_do_not_echo_a_hostile_id(env):
    evil = "<script>alert(1)</script>"
    resp = await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot",
        json={"leistung": [leistung(evil, "X")]},
        headers=auth(env, "segeberg"),
    )
    result = await resp.json()
    assert resp.status == 400 and result["errors"][0]["object"] == "leistung[0]"
    assert "<script>" not in await resp.text()
    await _unchanged(env)
