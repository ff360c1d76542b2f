"""The CLI contracts: init, lookup (text and --json), route (JSON lines in, JSON lines out), config."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.cli import main
from hub.cli.knowledge import route_lines

ROUTE_KEYS = {
    "service",
    "authority",
    "location",
    "candidates",
    "location_candidates",
    "needs_clarification",
    "reason",
}
EXE = str(Path(sys.executable).with_name("citizen-hub"))


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([EXE, *args], input=stdin, capture_output=True, timeout=120, env=env)


def test_lookup_wunschkennzeichen_in_todesfelde_names_kreis_segeberg(demo_db_url):
    """The issue's acceptance line, through the installed console script."""
    proc = run("lookup", "wunschkennzeichen", "--location", "Todesfelde", "--db", demo_db_url)
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    first = out.split("\n2. ")[0]
    assert "Wunschkennzeichen" in first
    assert "Kreis Segeberg" in first
    assert "Todesfelde" in out


def test_route_contract_over_stdin(demo_db_url):
    lines = [
        {"text": "Ich möchte ein Wunschkennzeichen reservieren", "location": "Todesfelde"},
        {"text": "Ich muss meinen Wohnsitz anmelden", "location": "23795"},
        {"text": "Auto zulassen", "location": "23795"},
        {"text": "Reisepass beantragen", "location": None},
    ]
    raw = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()
    raw += b"\xff\xfe not utf-8\n" + b"{not json\n" + b'{"text": 5}\n'
    proc = run("route", "--db", demo_db_url, stdin=raw)
    assert proc.returncode == 1  # some lines were invalid
    outs = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    assert len(outs) == 7
    for out in outs:
        assert set(out) == ROUTE_KEYS
        assert len(out["candidates"]) <= 5
    kfz, melde, auto, pass_, bad_utf8, bad_json, bad_shape = outs
    assert kfz["authority"]["name"].startswith("Kreis") and kfz["needs_clarification"] is False
    assert kfz["location"]["name"] == "Todesfelde"
    # 23795 spans Bad Segeberg and villages of two Ämter: an Amt service must ask ...
    assert melde["authority"] is None and melde["needs_clarification"] is True
    assert len(melde["location_candidates"]) == 14
    # ... a county service under the same postcode resolves without asking.
    assert auto["authority"]["name"].startswith("Kreis") and auto["needs_clarification"] is False
    assert pass_["needs_clarification"] is True and pass_["service"] is not None
    assert "not UTF-8" in bad_utf8["reason"]
    assert bad_json["reason"].startswith("invalid input")
    assert bad_shape["reason"].startswith("invalid input")
    assert b"line 5" in proc.stderr and b"Traceback" not in proc.stderr


def test_route_lines_in_process_keeps_order(kb):
    stdin = io.BytesIO(b'{"text": "Hundesteuer", "location": "Norderstedt"}\n\n{"text": "", "location": null}\n')
    out, err = io.StringIO(), io.StringIO()
    assert route_lines(kb, stdin, out, err) == 0
    first, second = (json.loads(x) for x in out.getvalue().splitlines())
    assert first["service"] is not None and first["location"]["name"] == "Norderstedt"
    assert second["service"] is None and second["needs_clarification"] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["lookup", "   "], "query is empty"),
        (["lookup", "x", "--limit", "0"], "--limit"),
    ],
)
def test_lookup_bad_arguments_are_clear_errors(demo_db_url, capsys, args, message):
    assert main([*args, "--db", demo_db_url]) == 2
    assert message in capsys.readouterr().err


def test_lookup_json_matches_the_http_shape(demo_db_url, capsys):
    assert main(["lookup", "Führerschien", "--location", "Norderstedt", "--json", "--db", demo_db_url]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"query", "location", "location_candidates", "location_reason", "place_from_query", "results"}
    assert data["location"]["name"] == "Norderstedt"
    assert "Fahrerlaubnis" in data["results"][0]["service"]["name"] or "Führerschein" in data["results"][0]["service"]["name"]


def test_lookup_on_a_missing_database_says_run_init(tmp_path, capsys):
    assert main(["lookup", "Reisepass", "--db", f"sqlite:///{tmp_path}/empty.sqlite3"]) == 2
    assert "citizen-hub init" in capsys.readouterr().err


def test_lookup_control_characters_and_huge_query(demo_db_url, capsys):
    assert main(["lookup", "Reise\x00pass\x1b[31m" + "x" * 10_000, "--json", "--db", demo_db_url]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "\x00" not in data["query"] and "\x1b" not in data["query"]


def test_init_is_idempotent_and_loads_demo(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/fresh.sqlite3"
    assert main(["init", "--demo", "--quiet", "--db", url]) == 0
    assert main(["init", "--demo", "--quiet", "--db", url]) == 0
    err = capsys.readouterr().err
    assert "already loaded" in err and "demo catalogue" in err
    from sqlmodel import Session, func, select

    from hub.db import make_engine
    from knowledge.models import Region, Service

    engine = make_engine(url)
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Region)).one() > 12_000
        assert s.exec(select(func.count()).select_from(Service)).one() >= 80
    from hub.migrate import current_revision, head_revision

    # init migrates (not just create_all): the database is at the newest revision, with every table.
    assert current_revision(engine) == head_revision()


def test_config_command_prints_the_reference(capsys):
    assert main(["config"]) == 0
    assert "[database]" in capsys.readouterr().out


LABELLED = Path(__file__).resolve().parents[1] / "data" / "route-labelled"


def test_route_evaluate_prints_the_figures_with_progress(demo_db_url):
    out = run("route", "--evaluate", str(LABELLED / "segeberg.heldout.jsonl"), "--db", demo_db_url)
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    for words in ("n = 136", "top-1 accuracy, service", "top-1 accuracy, office", "pass unflagged", "are flagged"):
        assert words in text
    assert "route --evaluate" in out.stderr.decode()  # the progress bar


def test_route_evaluate_json_counts_a_wrong_answer_and_its_flag(demo_db_url, tmp_path, capsys):
    labelled = tmp_path / "set.jsonl"
    labelled.write_text(
        "\n".join(
            json.dumps(x, ensure_ascii=False)
            for x in (
                {"text": "Reisepass beantragen", "location": "Henstedt-Ulzburg", "service": ["sh-reisepass"],
                 "authority": ["gemeinde-010600039039"]},
                # labelled with the wrong office on purpose: routed unflagged, so a wrong answer not flagged
                {"text": "Reisepass beantragen", "location": "Norderstedt", "service": "sh-reisepass",
                 "authority": ["kreis-01060"]},
                {"text": "asdf qwer", "location": "Norderstedt", "service": [], "authority": []},
            )
        ),
        encoding="utf-8",
    )
    assert main(["route", "--evaluate", str(labelled), "--json", "--quiet", "--db", demo_db_url]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["n"] == 3 and figures["correct"] == 1 and figures["wrong"] == 2
    assert figures["correct_unflagged_share"] == 1.0 and figures["wrong_flagged_share"] == 0.5
    assert figures["service_top1_accuracy"] == 1.0 and figures["office_top1_accuracy"] == 0.5


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "holds no labelled request"),
        (b'{"text": 1}\n', "line 1"),
        (b'{"text": "x", "service": [1]}\n', "list of ids"),
        (b"not json\n", "line 1"),
        (b"\xff\xfe\n", "not UTF-8"),
    ],
)
def test_route_evaluate_bad_files_are_clear_errors(demo_db_url, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    assert main(["route", "--evaluate", str(bad), "--db", demo_db_url]) == 2
    assert message in capsys.readouterr().err


def test_route_evaluate_missing_file(demo_db_url, tmp_path, capsys):
    assert main(["route", "--evaluate", str(tmp_path / "nope.jsonl"), "--db", demo_db_url]) == 2
    assert "cannot read" in capsys.readouterr().err
