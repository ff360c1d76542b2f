"""The case page shows the nearest past cases behind the learned router's suggestion (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

from console_support import KREIS, hub_engine, login, make_app, make_case, new_user, set_case, settings_for

from hub.cli import main
from knowledge.base import KnowledgeBase

DATA = Path(__file__).resolve().parents[1] / "data" / "learning"


async def test_case_page_lists_similar_past_cases_escaped(tmp_path, demo_db_url, aiohttp_client):
    engine, url = hub_engine(tmp_path, demo_db_url)
    assert main(["catalog", "import", str(DATA / "defects_catalogue.csv"), "--format", "csv", "--region", "01060",
                 "--db", url, "--quiet"]) == 0
    lines = []
    for line in (DATA / "defects.jsonl").read_text(encoding="utf-8").splitlines():
        obj = json.loads(line) | {"location": "Bad Segeberg"}
        lines.append(json.dumps(obj, ensure_ascii=False))
    lines.append(json.dumps({"text": "Laterne <b>kaputt</b> am Kirchweg", "location": "Bad Segeberg",
                             "service": "Straßenbeleuchtung"}, ensure_ascii=False))
    history = tmp_path / "h.jsonl"
    history.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["history", "import", str(history), "--db", url, "--quiet"]) == 0
    kb = KnowledgeBase.load(engine)
    app, _service = make_app(settings_for(tmp_path, url), engine, kb)
    client = await aiohttp_client(app)
    new_user(engine, "chefin", "supervisor", authorities=[KREIS[0]])
    await login(client, "chefin")
    case_id = make_case(engine, text="Die Laterne am Kirchweg ist kaputt", authority=KREIS)
    set_case(engine, case_id, location="Bad Segeberg")
    html = await (await client.get(f"/console/cases/{case_id}")).text()
    assert 'id="nearest-cases"' in html
    section = html.split('id="nearest-cases"')[1].split("</section>")[0]
    assert "Straßenbeleuchtung" in section
    assert "Laterne &lt;b&gt;kaputt&lt;/b&gt; am Kirchweg" in section  # citizen text escaped
    assert "<b>kaputt" not in section
    engine.dispose()
