"""``citizen-hub history import / train / evaluate`` on a real database, and the route that uses the model."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from hub.cli import main
from hub.queue.cases import example_t
from knowledge.base import KnowledgeBase
from knowledge.learning.store import model_t

DATA = Path(__file__).resolve().parents[1] / "data" / "learning"
SEGEBERG = "01060"


@pytest.fixture()
def hub_db(hub):
    """A migrated copy of the demo database with the 23-service defect catalogue in Kreis Segeberg."""
    engine, url = hub
    assert main(["catalog", "import", str(DATA / "defects_catalogue.csv"), "--format", "csv", "--region",
                 SEGEBERG, "--db", url, "--quiet"]) == 0
    return engine, url


def examples(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(example_t)).scalar_one()


def write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def history_lines(location: str | None = "Bad Segeberg") -> list[str]:
    out = []
    for line in (DATA / "defects.jsonl").read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        obj["location"] = location
        out.append(json.dumps(obj, ensure_ascii=False))
    return out


def test_a_bad_line_imports_nothing_and_names_its_number(hub_db, tmp_path, capsys):
    engine, url = hub_db
    lines = history_lines()[:20]
    lines[3] = '{"text": "Laterne aus", "location": "Bad Segeberg"}'  # no service
    lines[7] = "{kein json"
    lines[9] = json.dumps({"text": "x", "location": "Bad Segeberg", "service": "Gibt es nicht"})
    lines[11] = json.dumps({"text": "Laterne", "location": "Nirgendwo-am-See", "service": "Straßenbeleuchtung"})
    lines[12] = json.dumps({"text": ["a"], "location": None, "service": "Straßenbeleuchtung"})
    lines[13] = json.dumps({"text": "a" * 200_000, "location": None, "service": "Straßenbeleuchtung"})
    lines[14] = json.dumps({"text": "a", "service": "Straßenbeleuchtung", "extra": 1})
    code = main(["history", "import", write(tmp_path / "h.jsonl", lines), "--db", url])
    err = capsys.readouterr().err
    assert code == 1
    for n in (4, 8, 10, 12, 13, 14, 15):
        assert f"h.jsonl:{n}:" in err
    assert "nichts importiert" in err
    assert examples(engine) == 0


def test_import_trains_and_route_uses_the_model_only_in_its_area(hub_db, tmp_path, capsys):
    engine, url = hub_db
    lines = history_lines()
    assert main(["history", "import", write(tmp_path / "h.jsonl", lines), "--db", url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{len(lines)} Beispiele importiert" in out
    assert f"Bereich {SEGEBERG}: trainiert auf {len(lines)} Beispielen" in out
    with engine.connect() as conn:
        row = conn.execute(select(model_t)).mappings().one()
    assert row["area"] == SEGEBERG and len(row["sha256"]) == 64 and row["data_version"]["count"] == len(lines)

    kb = KnowledgeBase.load(engine)
    assert kb.learning.models[SEGEBERG].sha256 == row["sha256"]  # loaded at start, hash checked
    routed = kb.route("Smart ohne Kennzeichen steht seit Wochen da", "Bad Segeberg")
    assert routed.learned_area == SEGEBERG
    assert routed.candidates[0][0].name == "Abgestellte Fahrzeuge"
    assert abs(sum(p for _, p in routed.probabilities) - 1) < 1e-6
    assert routed.candidates[0][1] == pytest.approx(100 * routed.probabilities[0][1])
    assert set(routed.to_json()) == {"service", "authority", "location", "candidates", "location_candidates",
                                     "needs_clarification", "reason"}  # the contract keeps its shape
    # Konstanz is another catalogue area: Segeberg's history never routes it.
    elsewhere = kb.route("Smart ohne Kennzeichen steht seit Wochen da", "Konstanz")
    assert elsewhere.learned_area is None and elsewhere.probabilities is None

    # Nothing changed: training again keeps the model.
    assert main(["history", "train", "--db", url, "--quiet"]) == 0
    assert "unverändert" in capsys.readouterr().out


def test_a_swapped_model_is_refused_at_load(hub_db, tmp_path, capsys):
    engine, url = hub_db
    assert main(["history", "import", write(tmp_path / "h.jsonl", history_lines()), "--db", url, "--quiet"]) == 0
    with engine.begin() as conn:
        data = conn.execute(select(model_t.c.model)).scalar_one()
        conn.execute(update(model_t).values(model=data[:-1] + bytes([data[-1] ^ 1])))
    kb = KnowledgeBase.load(engine)
    assert kb.learning.models == {}
    assert kb.route("Laterne vor Haus 12 ist aus", "Bad Segeberg").probabilities is None


def test_routing_during_training_uses_the_previous_model(hub_db, tmp_path):
    from hub.learning import train

    engine, url = hub_db
    assert main(["history", "import", write(tmp_path / "h.jsonl", history_lines()), "--db", url, "--quiet"]) == 0
    kb = KnowledgeBase.load(engine)
    old = kb.learning.models[SEGEBERG].sha256
    done = threading.Event()
    seen: set[str | None] = set()

    def retrain():
        train(engine, kb, force=True)
        done.set()

    t = threading.Thread(target=retrain)
    t.start()
    while not done.is_set():
        seen.add(kb.route("Scherben an der Bushaltestelle", "Bad Segeberg").learned_area)
    t.join()
    assert seen == {SEGEBERG}  # never without a model while the new one was being made
    assert kb.learning.models[SEGEBERG].sha256  # the new one is in
    assert old


def test_forget_and_purge_reach_imported_history(hub_db, tmp_path):
    from datetime import UTC, datetime, timedelta

    from hub.learning import train
    from hub.queue.privacy import forget, purge
    from hub.queue.settings import PrivacySettings

    engine, url = hub_db
    lines = history_lines()[:40]
    lines.append(json.dumps({"text": "Laterne kaputt, Rückruf an anna@example.org", "location": "Bad Segeberg",
                             "service": "Straßenbeleuchtung", "authority": None}))
    assert main(["history", "import", write(tmp_path / "h.jsonl", lines), "--db", url, "--quiet"]) == 0
    assert forget(engine, email="Anna@Example.org").examples == 1
    assert examples(engine) == 40
    later = datetime.now(UTC) + timedelta(days=800)
    assert purge(engine, PrivacySettings(), now=later).examples == 40
    kb = KnowledgeBase.load(engine)
    report = train(engine, kb)
    assert report.dropped == [SEGEBERG]  # the model does not outlive its data
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(model_t)).scalar_one() == 0


def test_evaluate_reports_top1_top3_flagged_and_confusions(hub_db, tmp_path, capsys):
    engine, url = hub_db
    code = main(["history", "evaluate", write(tmp_path / "e.jsonl", history_lines()), "--folds", "2",
                 "--db", url, "--json"])
    captured = capsys.readouterr()
    assert code == 0
    data = json.loads(captured.out)
    assert data["folds"] == 2
    assert data["combined"]["n"] == len(history_lines())
    assert data["combined"]["top1"] > data["catalogue_only"]["top1"]
    assert 0 <= data["combined"]["flagged"] <= 1
    for key in ("combined", "catalogue_only"):  # the clarification rule's two shares (issue 13)
        assert 0 <= data[key]["correct_unflagged"] <= 1 and 0 <= data[key]["wrong_flagged"] <= 1
    assert data["confused"] and {"right", "routed", "count"} <= set(data["confused"][0])
    assert "Fold 2/2" in captured.err  # progress
    assert examples(engine) == 0  # evaluation stores nothing
    assert main(["history", "evaluate", str(tmp_path / "missing.jsonl"), "--db", url]) == 2


def route_top1(kb: KnowledgeBase, queries: list[dict]) -> float:
    hits = 0
    for q in queries:
        routed = kb.route(q["query"], q["location"])
        hits += bool(routed.candidates) and routed.candidates[0][0].id == q["service"]
    return hits / len(queries)


def test_well_worded_requests_do_not_lose_with_a_model_in_the_demo_area(hub_db, tmp_path, capsys):
    """Issue 18: the labelled set of well-worded requests (tests/data/lookup_queries.jsonl, demo catalogue)
    routes at least as well with a model trained on imported defect history in Kreis Segeberg, the demo
    area, as with the catalogue alone."""
    engine, url = hub_db
    lines = history_lines() + history_lines_of("defects_more.jsonl")
    assert main(["history", "import", write(tmp_path / "h.jsonl", lines), "--db", url, "--quiet"]) == 0
    kb = KnowledgeBase.load(engine)
    assert SEGEBERG in kb.learning.models
    queries = [json.loads(x) for x in (DATA.parent / "lookup_queries.jsonl").read_text(encoding="utf-8").splitlines()
               if x.strip()]
    with_model = route_top1(kb, queries)
    in_area = sum(kb.route(q["query"], q["location"]).learned_area == SEGEBERG for q in queries)
    saved = kb.learning.models
    kb.learning.replace({})
    alone = route_top1(kb, queries)
    kb.learning.replace(saved)
    with capsys.disabled():
        print(f"\nlookup_queries.jsonl ({len(queries)}, {in_area} routed by the Segeberg model): route top-1 "
              f"catalogue alone {alone:.1%}, with the model {with_model:.1%}")
    assert in_area >= len(queries) // 2  # the model really is asked
    assert with_model >= 0.909  # the figure of today (catalogue lookup, no model)
    assert with_model >= alone - 0.01  # at most 1 % of the well-worded requests change their answer


def history_lines_of(name: str, location: str | None = "Bad Segeberg") -> list[str]:
    out = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        obj["location"] = location
        out.append(json.dumps(obj, ensure_ascii=False))
    return out


def test_the_office_agents_confirmed_at_a_place_is_suggested_where_it_differs(hub_db, tmp_path):
    """Issue 18: "service and, where it differs, the responsible office". In Bad Segeberg agents sent the
    street-light cases to the Gebäudemanagement, not to the catalogue's Tiefbauamt: the route there says so;
    elsewhere in the Kreis, and for services without a confirmed office, the catalogue's office stays."""
    engine, url = hub_db
    lines = []
    for line in history_lines():
        obj = json.loads(line)
        if obj["service"] == "Straßenbeleuchtung":
            obj["authority"] = "Gebäudemanagement"
        lines.append(json.dumps(obj, ensure_ascii=False))
    assert main(["history", "import", write(tmp_path / "h.jsonl", lines), "--db", url, "--quiet"]) == 0
    kb = KnowledgeBase.load(engine)
    here = kb.route("Die Laterne vor Haus 3 im Eichenweg ist seit Tagen aus", "Bad Segeberg")
    assert here.service.name == "Straßenbeleuchtung"
    assert here.authority.name == "Gebäudemanagement" and here.authority_source == "learned"
    assert here.to_json()["authority"]["name"] == "Gebäudemanagement"
    kb.learning.replace({})
    plain = kb.route("Die Laterne vor Haus 3 im Eichenweg ist seit Tagen aus", "Bad Segeberg")
    assert plain.authority.name == "Tiefbauamt" and plain.authority_source is None  # the catalogue's office
    kb = KnowledgeBase.load(engine)
    elsewhere = kb.route("Die Laterne vor Haus 3 im Eichenweg ist seit Tagen aus", "Wahlstedt")
    assert elsewhere.learned_area == SEGEBERG and elsewhere.service.name == "Straßenbeleuchtung"
    assert elsewhere.authority.name == "Tiefbauamt" and elsewhere.authority_source is None
    other = kb.route("Riesiges Schlagloch in der Kurhausstraße", "Bad Segeberg")
    assert other.service.name == "Schlaglöcher und Fahrbahnschäden"
    assert other.authority.name == "Tiefbauamt" and other.authority_source is None
