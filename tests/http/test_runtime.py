"""Process tuning of the servers (``hub.runtime``), each case in a fresh interpreter of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_the_young_generation_threshold_is_set_and_the_older_ones_are_kept():
    got = run("import gc, json; from hub.runtime import tune_gc; before = gc.get_threshold(); tune_gc(20000); "
              "print(json.dumps({'before': before, 'after': gc.get_threshold()}))")
    assert got["after"] == [20000, got["before"][1], got["before"][2]]


def test_a_threshold_of_zero_keeps_pythons_default():
    got = run("import gc, json; from hub.runtime import tune_gc; before = gc.get_threshold(); tune_gc(0); "
              "print(json.dumps({'before': before, 'after': gc.get_threshold()}))")
    assert got["after"] == got["before"] and got["before"][0] == 700


def test_freezing_takes_the_live_objects_out_of_later_collections():
    got = run("import gc, json; from hub.runtime import freeze_heap; kept = [[i] for i in range(50000)]; "
              "before = gc.get_freeze_count(); freeze_heap(); "
              "print(json.dumps({'before': before, 'after': gc.get_freeze_count()}))")
    assert got["before"] == 0 and got["after"] >= 50000


def test_the_default_threshold_is_the_measured_one():
    from hub.config import Settings

    assert Settings().server.gc_threshold == 20000


def test_citizen_hub_serve_sets_the_threshold_and_freezes_after_the_knowledge_base_is_loaded(tmp_path):
    """``citizen-hub serve`` up to the point where it would listen: the app it hands to run_app has the
    freeze as its last start-up hook (after the knowledge base is loaded), and the collector's young
    threshold is the configured one. In a fresh interpreter, so the tests' own collector is untouched."""
    db = tmp_path / "serve.sqlite3"
    code = f"""
import gc, json
from aiohttp import web
from hub.cli import knowledge as cli_knowledge
from hub.cli import main
seen = {{}}
def run_app(app, **kwargs):
    hooks = [getattr(h, "__name__", "") for h in app.on_startup]
    seen.update(threshold=gc.get_threshold()[0], hooks=hooks)
web.run_app = run_app
main(["init", "--db", "sqlite:///{db}", "--quiet"])
main(["serve", "--db", "sqlite:///{db}"])
print(json.dumps(seen))
"""
    got = run(code)
    assert got["threshold"] == 20000
    assert got["hooks"][-1] == "_freeze_after_loading" and "load_kb" in got["hooks"]
    assert got["hooks"].index("load_kb") < got["hooks"].index("_freeze_after_loading")
