"""HTTP: /api/catalog, in-process with aiohttp's test client over a real SQLite database with every region."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from catalog_support import (  # noqa: F401  (fixtures: engine, region_index, regions_template)
    BARK,
    MUENCHEN,
    MUENCHEN_KREIS,
    SEGEBERG,
    TODESFELDE,
    TOKENS,
    auth,
    counts,
    engine_fixture,
    kreis_body,
    leistung,
    level_registration,
    load_kb,
    make_env,
    make_token,
    office,
    override,
    region_index_fixture,
    regions_template_fixture,
)
from sqlalchemy import select

from hub.config import Settings
from hub.db import make_engine
from hub.queue.cases import audit_t
from knowledge.importers import parse_dldb
from knowledge.importers.store import batch_change_set, store_batch
from knowledge.sync_models import version_t


@pytest.fixture()
async def env(aiohttp_client, engine, region_index):
    return await make_env(aiohttp_client, engine, region_index)


def muenchen_body() -> dict:
    batch = parse_dldb(
        MUENCHEN / "services_de.json",
        MUENCHEN / "locations_de.json",
        id_prefix="muc",
        region_ars=MUENCHEN_KREIS,
    )
    from knowledge.sync import snapshot_from_rows

    cs = batch_change_set(batch, MUENCHEN_KREIS, replace=True)
    rows = {k: [o.row for o in cs.writes[k].values()] for k in cs.writes}
    return snapshot_from_rows(
        rows["leistung"], rows["organisationseinheit"], rows["zustaendigkeit"], rows["onlinedienst"]
    )


# -- authentication and scope --------------------------------------------------------------------------------


async def test_writing_needs_a_catalog_token_with_a_region(env):
    url = f"/api/catalog/{SEGEBERG}/changes"
    resp = await env.client.post(url, json={})
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    assert "Bearer-Token ist nötig" in (await resp.json())["error"]
    resp = await env.client.post(url, json={}, headers={"Authorization": "Bearer chub_not-a-token"})
    assert resp.status == 401
    resp = await env.client.post(url, json={}, headers=auth(env, "intake"))
    assert resp.status == 403 and "Rolle „catalog“" in (await resp.json())["error"]
    resp = await env.client.post(url, json={}, headers=auth(env, "noscope"))
    assert resp.status == 403 and "keine Region" in (await resp.json())["error"]
    resp = await env.client.get(f"/api/catalog/{SEGEBERG}", headers=auth(env, "intake"))
    assert resp.status == 200, "any valid token reads"


async def test_a_gemeinde_token_cannot_write_another_gemeinde_or_the_kreis(env):
    assert (
        await env.client.put(
            f"/api/catalog/{SEGEBERG}/snapshot", json=kreis_body(), headers=auth(env, "segeberg")
        )
    ).status == 200
    before = counts(env.engine)

    resp = await env.client.put(
        f"/api/catalog/{BARK}/snapshot",
        json={"leistung": [leistung("x", "X")]},
        headers=auth(env, "todesfelde"),
    )
    body = await resp.json()
    assert resp.status == 403 and f"Region {BARK} liegt außerhalb der Region dieses Tokens" in body["error"]

    resp = await env.client.post(
        f"/api/catalog/{TODESFELDE}/changes",
        headers=auth(env, "todesfelde"),
        json={
            "write": {
                "organisationseinheit": [office("tf-x", "Bürgerbüro", BARK)],
                "leistung": [leistung("se-wkz", "Meins jetzt")],
            }
        },
    )
    body = await resp.json()
    assert resp.status == 403
    assert {(e["object"], e["field"]) for e in body["errors"]} == {
        ("write.organisationseinheit[0] id=tf-x", "gebiet_ars"),
        ("write.leistung[0] id=se-wkz", "id"),
    }
    resp = await env.client.post(
        f"/api/catalog/{TODESFELDE}/changes",
        headers=auth(env, "todesfelde"),
        json={"delete": {"organisationseinheit": ["se-kv"]}},
    )
    assert resp.status == 403
    assert counts(env.engine) == before, "nothing changed"
    assert env.kb.services["se-wkz"].name == "Wunschkennzeichen reservieren"

    # The Kreis's token reaches into its Gemeinden.
    resp = await env.client.post(
        f"/api/catalog/{TODESFELDE}/changes",
        headers=auth(env, "segeberg"),
        json={"write": {"leistung": [leistung("tf-hund", "Hund anmelden")]}},
    )
    assert resp.status == 200


async def test_unknown_regions_are_404(env):
    for path in ("/api/catalog/0106/changes", "/api/catalog/010609999999/changes"):
        resp = await env.client.post(path, json={}, headers=auth(env, "segeberg"))
        assert resp.status == 404, path


# -- writes, lookups, audit ----------------------------------------------------------------------------------


async def test_the_muenchen_catalogue_over_http_is_found_at_once(env):
    body = json.dumps(muenchen_body()).encode()
    resp = await env.client.put(
        f"/api/catalog/{MUENCHEN_KREIS}/snapshot",
        data=body,
        headers=auth(env, "muenchen", **{"Content-Type": "application/json"}),
    )
    result = await resp.json()
    assert resp.status == 200, result
    assert resp.headers["ETag"] == '"1"' and result["version"] == 1
    assert result["summary"]["leistung"]["added"] == 287
    resp = await env.client.get("/api/lookup", params={"q": "Gewerbe anmelden", "location": "München"})
    top = (await resp.json())["results"][0]
    assert top["service"]["id"] == "muc-1063423" and top["authority"]["id"] == "muc-loc-10546"


async def test_one_change_is_visible_in_the_next_lookup_and_audited(env):
    # In-process the change is in the index when the 200 is sent; the 1 s bound across processes is
    # tested in tests/test_catalog_server.py and measured in bench/bench_sync.py.
    await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot", json=kreis_body(), headers=auth(env, "segeberg")
    )
    resp = await env.client.post(
        f"/api/catalog/{TODESFELDE}/changes",
        headers=auth(env, "todesfelde"),
        json={
            "write": {
                "leistung": [leistung("tf-osterfeuer", "Osterfeuer anmelden", synonyme=["Brauchtumsfeuer"])],
                "organisationseinheit": [office("tf-gv", "Gemeinde Todesfelde", TODESFELDE)],
                "zustaendigkeit": [override("tf-osterfeuer", TODESFELDE, "tf-gv")],
            }
        },
    )
    assert resp.status == 200
    resp = await env.client.get("/api/lookup", params={"q": "Brauchtumsfeuer", "location": "Todesfelde"})
    top = (await resp.json())["results"][0]
    assert top["service"]["id"] == "tf-osterfeuer" and top["authority"]["id"] == "tf-gv"
    with env.engine.connect() as conn:
        actors = {r.actor for r in conn.execute(select(audit_t).where(audit_t.c.action.like("catalog_%")))}
        versions = {(r.region_ars, r.version, r.actor) for r in conn.execute(select(version_t))}
    assert actors == {"token:segeberg", "token:todesfelde"}
    assert versions == {(SEGEBERG, 1, "token:segeberg"), (TODESFELDE, 1, "token:todesfelde")}


async def test_a_bad_object_rejects_the_whole_change_set(env):
    body = {"leistung": [leistung(f"se-l{i}", f"Leistung Nummer {i}") for i in range(50)]}
    body["leistung"].append(leistung("se-bad", "Kaputt", leika="123", ebene="bund"))
    resp = await env.client.put(f"/api/catalog/{SEGEBERG}/snapshot", json=body, headers=auth(env, "segeberg"))
    result = await resp.json()
    assert resp.status == 400
    assert "nothing was changed" in result["error"]
    assert sorted((e["object"], e["field"]) for e in result["errors"]) == [
        ("leistung[50] id=se-bad", "ebene"),
        ("leistung[50] id=se-bad", "leika"),
    ]
    assert all(e["message"] for e in result["errors"])
    assert counts(env.engine)["service"] == counts(env.engine)["versions"] == 0
    assert not env.kb.lookup("Leistung Nummer 7").answers

    resp = await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot?partial=true", json=body, headers=auth(env, "segeberg")
    )
    result = await resp.json()
    assert resp.status == 200 and result["applied"] and len(result["diff"]["added"]["leistung"]) == 50
    assert len(result["errors"]) == 2
    assert env.kb.lookup("Leistung Nummer 7").answers[0].service.id == "se-l7"


async def test_dry_run_returns_the_diff_without_writing(env):
    resp = await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot?dry_run=true", json=kreis_body(), headers=auth(env, "segeberg")
    )
    result = await resp.json()
    assert resp.status == 200 and result["dry_run"] and not result["applied"]
    assert result["diff"]["added"]["leistung"] == ["se-wkz"]
    assert resp.headers["ETag"] == '"0"'
    assert counts(env.engine)["service"] == counts(env.engine)["versions"] == 0
    assert "se-wkz" not in env.kb.services
    resp = await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot?dry_run=maybe", json={}, headers=auth(env, "segeberg")
    )
    assert resp.status == 400


# -- concurrent writers --------------------------------------------------------------------------------------


async def test_if_match_keeps_concurrent_writers_from_overwriting_each_other(env):
    url = f"/api/catalog/{SEGEBERG}"
    resp = await env.client.get(url, headers=auth(env, "segeberg"))
    assert resp.headers["ETag"] == '"0"'
    resp = await env.client.put(
        f"{url}/snapshot", json=kreis_body(), headers=auth(env, "segeberg", **{"If-Match": '"0"'})
    )
    assert resp.status == 200 and resp.headers["ETag"] == '"1"'
    stale = kreis_body()
    stale["leistung"][0]["name"] = "Veraltet"
    resp = await env.client.put(
        f"{url}/snapshot", json=stale, headers=auth(env, "segeberg", **{"If-Match": '"0"'})
    )
    assert resp.status == 412 and resp.headers["ETag"] == '"1"' and (await resp.json())["version"] == 1
    assert env.kb.services["se-wkz"].name == "Wunschkennzeichen reservieren"

    async def write(name: str):
        body = {"write": {"leistung": [leistung("se-wkz", name, ebene="kreis")]}}
        r = await env.client.post(
            f"{url}/changes", json=body, headers=auth(env, "segeberg", **{"If-Match": '"1"'})
        )
        return r.status, name

    results = await asyncio.gather(write("Erster Schreiber"), write("Zweiter Schreiber"))
    assert sorted(s for s, _ in results) == [200, 412]
    winner = next(n for s, n in results if s == 200)
    assert env.kb.services["se-wkz"].name == winner
    with env.engine.connect() as conn:
        assert conn.execute(select(version_t.c.version).order_by(version_t.c.version.desc())).first()[0] == 2

    weak = await env.client.post(
        f"{url}/changes", json={}, headers=auth(env, "segeberg", **{"If-Match": 'W/"2"'})
    )
    assert weak.status == 412, "If-Match compares strongly"
    anything = await env.client.post(
        f"{url}/changes", json={}, headers=auth(env, "segeberg", **{"If-Match": "*"})
    )
    assert anything.status == 200


async def test_if_match_can_be_required(aiohttp_client, engine, region_index):
    env = await make_env(aiohttp_client, engine, region_index, require_if_match=True)
    url = f"/api/catalog/{SEGEBERG}/snapshot"
    resp = await env.client.put(url, json=kreis_body(), headers=auth(env, "segeberg"))
    assert resp.status == 428
    resp = await env.client.put(url + "?dry_run=true", json=kreis_body(), headers=auth(env, "segeberg"))
    assert resp.status == 200, "a dry run writes nothing and needs no If-Match"
    resp = await env.client.put(url, json=kreis_body(), headers=auth(env, "segeberg", **{"If-Match": '"0"'}))
    assert resp.status == 200


# -- bad bodies ----------------------------------------------------------------------------------------------


async def test_a_5_mb_malformed_body_is_400_and_changes_nothing(env):
    await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot", json=kreis_body(), headers=auth(env, "segeberg")
    )
    before = counts(env.engine)
    item = b'{"id": "se-x", "name": "Leistung", "synonyme": ["a", "b"]},'
    body = b'{"leistung": [' + item * (5_000_000 // len(item) + 1) + b'{"id": "se-y", "name": '
    assert len(body) >= 5_000_000 > Settings().server.max_body_bytes, "the catalogue has its own body limit"
    resp = await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot",
        data=body,
        headers=auth(env, "segeberg", **{"Content-Type": "application/json"}),
    )
    result = await resp.json()
    assert (
        resp.status == 400
        and "kein gültiges JSON" in result["error"]
        and "nichts wurde geändert" in result["error"]
    )
    assert counts(env.engine) == before
    assert "se-wkz" in env.kb.services and "se-x" not in env.kb.services

    json_type = {"Content-Type": "application/json"}
    resp = await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot", data=b"\xff\xfe{}", headers=auth(env, "segeberg", **json_type)
    )
    assert resp.status == 400 and "kein UTF-8" in (await resp.json())["error"]
    resp = await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot",
        data=b"[" * 100_000 + b"]" * 100_000,
        headers=auth(env, "segeberg", **json_type),
    )
    assert resp.status == 400
    resp = await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot",
        data="leistung=1",
        headers=auth(env, "segeberg", **{"Content-Type": "text/plain"}),
    )
    assert resp.status == 415
    assert counts(env.engine) == before


async def test_a_body_over_the_limit_is_413(aiohttp_client, engine, region_index):
    env = await make_env(aiohttp_client, engine, region_index, max_body_bytes=50_000)
    body = json.dumps({"leistung": [leistung(f"se-{i}", f"Leistung {i}") for i in range(2000)]})
    resp = await env.client.put(
        f"/api/catalog/{SEGEBERG}/snapshot",
        data=body,
        headers=auth(env, "segeberg", **{"Content-Type": "application/json"}),
    )
    assert resp.status == 413
    assert counts(engine)["versions"] == 0


# -- reading -------------------------------------------------------------------------------------------------


async def test_pull_consumers_read_the_catalogue_and_the_changes_since_a_version(env):
    url = f"/api/catalog/{SEGEBERG}"
    await env.client.put(f"{url}/snapshot", json=kreis_body(), headers=auth(env, "segeberg"))
    await env.client.post(
        f"{url}/changes",
        headers=auth(env, "segeberg"),
        json={"write": {"leistung": [leistung("se-jagd", "Jagdschein", ebene="kreis")]}},
    )
    resp = await env.client.get(url, headers=auth(env, "intake"))
    full = await resp.json()
    assert resp.headers["ETag"] == '"2"' and full["version"] == 2
    assert [x["id"] for x in full["catalog"]["leistung"]] == ["se-jagd", "se-wkz"]
    resp = await env.client.get(url, headers=auth(env, "intake", **{"If-None-Match": '"2"'}))
    assert resp.status == 304
    resp = await env.client.get(url, params={"since": "1"}, headers=auth(env, "intake"))
    since = await resp.json()
    assert [(c["version"], c["kind"], c["op"], c["id"]) for c in since["changes"]] == [
        (2, "leistung", "upsert", "se-jagd")
    ]
    for bad in ("-1", "x", "3"):
        resp = await env.client.get(url, params={"since": bad}, headers=auth(env, "intake"))
        assert resp.status == 400, bad
    resp = await env.client.get(url)
    assert resp.status == 401
    # PUT what GET served: nothing changes.
    resp = await env.client.put(f"{url}/snapshot", json=full["catalog"], headers=auth(env, "segeberg"))
    assert (await resp.json())["applied"] is False and resp.headers["ETag"] == '"2"'


# -- other processes -----------------------------------------------------------------------------------------


async def test_an_import_by_another_process_reaches_the_running_lookups(env):
    other = make_engine(str(env.engine.url))  # as `citizen-hub catalog import` in another process
    batch = parse_dldb(
        MUENCHEN / "services_de.json",
        MUENCHEN / "locations_de.json",
        id_prefix="muc",
        region_ars=MUENCHEN_KREIS,
    )
    await asyncio.to_thread(store_batch, other, batch, MUENCHEN_KREIS)
    other.dispose()
    # A bound on "it arrives" (the change-log poll), not a speed: how fast is measured in bench/bench_sync.py.
    deadline = time.perf_counter() + 15.0
    found = False
    while not found and time.perf_counter() < deadline:
        resp = await env.client.get("/api/lookup", params={"q": "Gewerbe anmelden", "location": "München"})
        results = (await resp.json())["results"]
        found = bool(results) and results[0]["service"]["id"] == "muc-1063423"
        if not found:
            await asyncio.sleep(0.05)
    assert found, "the other process's import never reached the running lookups"


# -- incremental index, full dry-run diff ------------------------------------------------------------------


async def test_changes_reach_lookups_without_any_rebuild_of_the_index(env, monkeypatch):
    """Each write updates the live index in place: building an index or a knowledge base is forbidden."""
    from knowledge.base import KnowledgeBase
    from knowledge.lookup import ServiceIndex
    from knowledge.responsibility import ResponsibilityIndex

    index, responsibility = env.kb.index, env.kb.responsibility
    size = len(index)

    def forbidden(*args, **kwargs):
        raise AssertionError("a catalogue write rebuilt the lookup index")

    monkeypatch.setattr(ServiceIndex, "from_services", classmethod(forbidden))
    monkeypatch.setattr(ServiceIndex, "__init__", forbidden)
    monkeypatch.setattr(ResponsibilityIndex, "__init__", forbidden)
    monkeypatch.setattr(KnowledgeBase, "load", classmethod(forbidden))
    monkeypatch.setattr(KnowledgeBase, "__init__", forbidden)

    url = f"/api/catalog/{SEGEBERG}"
    assert (
        await env.client.put(f"{url}/snapshot", json=kreis_body(), headers=auth(env, "segeberg"))
    ).status == 200

    async def top(q: str, location: str = "Todesfelde"):
        resp = await env.client.get("/api/lookup", params={"q": q, "location": location})
        results = (await resp.json())["results"]
        return (results[0]["service"]["id"], (results[0]["authority"] or {}).get("id")) if results else None

    assert await top("Kennzeichen reservieren") == ("se-wkz", "se-kv")
    # Changed: a new synonym is found, the old one is not.
    body = {"write": {"leistung": [leistung("se-wkz", "Wunschkennzeichen reservieren", ebene="kreis",
                                            synonyme=["Nummernschild"])]}}  # fmt: skip
    assert (await env.client.post(f"{url}/changes", json=body, headers=auth(env, "segeberg"))).status == 200
    assert await top("Nummernschild") == ("se-wkz", "se-kv")
    # A Gemeinde override moves the service to its own office for its area only.
    body = {
        "write": {
            "organisationseinheit": [office("tf-amt", "Amt vor Ort", TODESFELDE)],
            "zustaendigkeit": [override("se-wkz", TODESFELDE, "tf-amt")],
        }
    }
    resp = await env.client.post(
        f"/api/catalog/{TODESFELDE}/changes", json=body, headers=auth(env, "todesfelde")
    )
    assert resp.status == 200
    assert await top("Nummernschild") == ("se-wkz", "tf-amt")
    assert await top("Nummernschild", "Bark") == ("se-wkz", "se-kv")
    # Removed: the override, then the service.
    resp = await env.client.post(
        f"/api/catalog/{TODESFELDE}/changes",
        json={"delete": {"zustaendigkeit": body["write"]["zustaendigkeit"]}},
        headers=auth(env, "todesfelde"),
    )
    assert resp.status == 200 and await top("Nummernschild") == ("se-wkz", "se-kv")
    resp = await env.client.post(
        f"{url}/changes", json={"delete": {"leistung": ["se-wkz"]}}, headers=auth(env, "segeberg")
    )
    assert resp.status == 200 and await top("Nummernschild") is None
    assert env.kb.index is index and env.kb.responsibility is responsibility, (
        "the same index, updated in place"
    )
    assert len(index) == size


async def test_a_dry_run_answers_added_changed_and_removed_and_writes_nothing(env):
    url = f"/api/catalog/{SEGEBERG}"
    first = kreis_body()
    first["leistung"].append(leistung("se-jagd", "Jagdschein beantragen", ebene="kreis"))
    assert (await env.client.put(f"{url}/snapshot", json=first, headers=auth(env, "segeberg"))).status == 200
    before = counts(env.engine)

    second = kreis_body()
    second["leistung"][0]["synonyme"] = ["Kennzeichen reservieren", "Nummernschild"]  # changed
    second["leistung"].append(leistung("se-fisch", "Fischereischein beantragen", ebene="kreis"))  # added
    second["organisationseinheit"][0]["kontakt"] = {"telefon": "04551 951-9"}  # changed
    # se-jagd is missing: removed
    resp = await env.client.put(
        f"{url}/snapshot?dry_run=true", json=second, headers=auth(env, "segeberg", **{"If-Match": '"1"'})
    )
    result = await resp.json()
    assert resp.status == 200 and result["dry_run"] is True and result["applied"] is False
    assert result["version"] == result["previous_version"] == 1 and resp.headers["ETag"] == '"1"'
    assert result["diff"]["added"]["leistung"] == ["se-fisch"]
    assert result["diff"]["changed"]["leistung"] == [{"id": "se-wkz", "fields": ["synonyme"]}]
    assert result["diff"]["removed"]["leistung"] == ["se-jagd"]
    assert result["diff"]["changed"]["organisationseinheit"] == [
        {"id": "se-kv", "fields": ["kontakt.telefon"]}
    ]
    assert result["summary"]["leistung"] == {"added": 1, "changed": 1, "removed": 1}
    assert counts(env.engine) == before
    assert "se-fisch" not in env.kb.services and "se-jagd" in env.kb.services
    assert env.kb.services["se-wkz"].synonyms == ["Kennzeichen reservieren"]

    # For real, deleting se-jagd is more than 20 % of this small catalogue: refused, naming it, until forced.
    resp = await env.client.put(
        f"{url}/snapshot", json=second, headers=auth(env, "segeberg", **{"If-Match": '"1"'})
    )
    refused = await resp.json()
    assert resp.status == 409 and refused["would_delete"] == {"leistung": ["se-jagd"]}
    assert "se-jagd" in refused["error"] and "force" in refused["error"]
    assert counts(env.engine) == before
    # Forced, the same body gives the same diff.
    resp = await env.client.put(
        f"{url}/snapshot?force=true", json=second, headers=auth(env, "segeberg", **{"If-Match": '"1"'})
    )
    applied = await resp.json()
    assert applied["applied"] and applied["version"] == 2 and applied["diff"] == result["diff"]
    # A dry run of changes: a delete of something absent is no change at all.
    resp = await env.client.post(
        f"{url}/changes?dry_run=true",
        json={"delete": {"leistung": ["se-nie"]}},
        headers=auth(env, "segeberg"),
    )
    none = await resp.json()
    assert resp.status == 200 and none["summary"]["leistung"] == {"added": 0, "changed": 0, "removed": 0}
