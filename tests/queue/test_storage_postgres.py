"""The foundation on the real local PostgreSQL: init, load regions and demo, look up, route."""

from __future__ import annotations

import json

from hub.cli import main


def test_init_and_lookup_on_postgres(postgres_url, capsys):
    assert main(["init", "--demo", "--quiet", "--db", postgres_url]) == 0
    assert main(["init", "--demo", "--quiet", "--db", postgres_url]) == 0  # idempotent
    capsys.readouterr()
    assert main(["lookup", "wunschkennzeichen", "--location", "Todesfelde", "--json", "--db", postgres_url]) == 0
    data = json.loads(capsys.readouterr().out)
    top = data["results"][0]
    assert "Wunschkennzeichen" in top["service"]["name"]
    assert "Segeberg" in top["authority"]["name"]
    assert data["location"]["ars"] == "010605053088"
