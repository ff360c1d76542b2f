"""Catalogue tokens from the real CLI: ``citizen-hub token add NAME --role catalog --region ARS``.

The token is printed once and stored as its SHA-256 only, with its regions; a catalogue token without
a region, with an unknown region, or a region on another role is refused and leaves nothing behind. The
token made this way writes its region (and the regions inside it) and nothing else; a revoked one is 401.
"""

from __future__ import annotations

import hashlib

from catalog_support import (  # noqa: F401  (fixtures: engine, region_index, regions_template)
    BARK,
    SEGEBERG,
    TODESFELDE,
    counts,
    engine_fixture,
    leistung,
    make_env,
    region_index_fixture,
    regions_template_fixture,
)
from sqlalchemy import select

from hub.cli import main
from hub.http.tokens import scope_t, token_t


def token_add(engine, capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["token", "add", *argv, "--db", engine.url.render_as_string(hide_password=False)])
    out, err = capsys.readouterr()
    return code, out.strip(), err


def rows(engine) -> tuple[list, list]:
    with engine.connect() as conn:
        tokens = [
            tuple(r) for r in conn.execute(select(token_t.c.name, token_t.c.role, token_t.c.token_hash))
        ]
        scopes = [
            tuple(r)
            for r in conn.execute(
                select(token_t.c.name, scope_t.c.region_ars)
                .join(scope_t, scope_t.c.token_id == token_t.c.id)
                .order_by(scope_t.c.region_ars)
            )
        ]
    return tokens, scopes


def test_token_add_stores_the_hash_and_the_regions(engine, capsys):
    code, token, err = token_add(
        engine, capsys, "amt-leezen", "--role", "catalog", "--region", TODESFELDE, "--region", BARK
    )
    assert code == 0 and token.startswith("chub_") and "shown only this once" in err
    tokens, scopes = rows(engine)
    assert tokens == [("amt-leezen", "catalog", hashlib.sha256(token.encode()).hexdigest())]
    assert token not in str(tokens), "never stored in clear"
    assert scopes == [("amt-leezen", BARK), ("amt-leezen", TODESFELDE)]


def test_token_add_refuses_bad_regions_and_leaves_nothing(engine, capsys):
    for argv, message in (
        (("x1", "--role", "catalog"), "a catalog token needs --region ARS"),
        (("x2", "--role", "catalog", "--region", "010609999999"), "no region with ARS 010609999999"),
        (("x3", "--role", "catalog", "--region", "0106"), "not an ARS"),
        (("x4", "--role", "catalog", "--region", TODESFELDE, "--region", "99"), "no region with ARS 99"),
        (("x5", "--role", "service", "--region", TODESFELDE), "--region is for catalog and agent tokens only"),
    ):
        code, out, err = token_add(engine, capsys, *argv)
        assert code == 2 and message in err, (argv, err)
        assert out == "", "no token is printed"
    assert rows(engine) == ([], []), "a refused token leaves no row and no scope"


async def test_a_cli_token_writes_its_region_only_and_stops_when_revoked(
    aiohttp_client, engine, region_index, capsys
):
    env = await make_env(aiohttp_client, engine, region_index)
    code, token, _ = token_add(engine, capsys, "gemeinde-bark", "--role", "catalog", "--region", BARK)
    assert code == 0
    headers = {"Authorization": f"Bearer {token}"}
    body = {"write": {"leistung": [leistung("bark-hund", "Hund anmelden")]}}
    assert (await env.client.post(f"/api/catalog/{BARK}/changes", json=body, headers=headers)).status == 200
    before = counts(engine)
    for region in (TODESFELDE, SEGEBERG):  # the other Gemeinde, the Kreis above
        resp = await env.client.post(
            f"/api/catalog/{region}/changes",
            json={"write": {"leistung": [leistung("bark-x", "X")]}},
            headers=headers,
        )
        assert resp.status == 403, region
    assert counts(engine) == before

    assert main(["token", "revoke", "gemeinde-bark", "--db", str(engine.url)]) == 0
    resp = await env.client.post(f"/api/catalog/{BARK}/changes", json=body, headers=headers)
    assert resp.status == 401
    assert counts(engine) == before
