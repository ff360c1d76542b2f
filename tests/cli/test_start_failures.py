"""Issue 14, item 6: a start that cannot open its database says nothing about serving and fails with one
line naming the URL (password masked) and the cause — for every process entry point.

Replayed as the attack found it, with the real command in a subprocess: PostgreSQL unreachable (a closed
port, a URL with a password) and a read-only SQLite file (``chattr +i``: root ignores file modes, not the
immutable flag).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_component

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [("serve", "--port", "0"), ("worker", "--once"), ("init", "--quiet"), ("email", "serve", "--port", "0"),
            ("token", "list")]


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("citizen-hub")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hub.cli"]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITIZEN_HUB_")} | {"PYTHONPATH": str(ROOT)}
    return subprocess.run([*_cli(), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line(done: subprocess.CompletedProcess, url_shown: str, cause: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(f"citizen-hub: cannot open the database {url_shown}: "), lines[0]
    assert cause in lines[0], lines[0]
    assert "serving" not in done.stderr + done.stdout and "listener on" not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_an_unreachable_postgresql_is_one_line_with_the_password_masked(tmp_path, command):
    done = run(tmp_path, *command, "--db", "postgresql+psycopg://hub:s3cr3t-pw@127.0.0.1:1/hub")
    assert_one_line(done, "postgresql+psycopg://hub:***@127.0.0.1:1/hub", "Connection refused")
    assert "s3cr3t-pw" not in done.stderr + done.stdout


@pytest.fixture
def read_only_db(tmp_path):
    """A migrated SQLite database whose file (and, with ``folder=True``, folder) cannot be written."""
    require_component(shutil.which("chattr") is not None, "chattr (e2fsprogs) is not installed")
    made: list[Path] = []

    def make(folder: bool) -> str:
        place = tmp_path / ("ro-folder" if folder else "ro-file")
        place.mkdir()
        url = f"sqlite:///{place / 'hub.sqlite3'}"
        assert run(tmp_path, "migrate", "--db", url).returncode == 0
        targets = sorted(place.iterdir()) + ([place] if folder else [])
        done = subprocess.run(["chattr", "+i", *map(str, targets)], capture_output=True, text=True)
        require_component(done.returncode == 0, f"chattr +i is not permitted here ({done.stderr.strip()})")
        made.extend(targets)
        return url

    yield make
    subprocess.run(["chattr", "-i", *map(str, made)], capture_output=True)


def test_a_read_only_sqlite_file_is_one_line_before_anything_serves(tmp_path, read_only_db):
    url = read_only_db(folder=False)
    for command in (("serve", "--port", "0"), ("worker", "--once"), ("email", "serve", "--port", "0"),
                    ("token", "add", "x", "--role", "service")):
        assert_one_line(run(tmp_path, *command, "--db", url), url, "readonly database")


def test_a_read_only_sqlite_folder_is_one_line_too(tmp_path, read_only_db):
    url = read_only_db(folder=True)
    assert_one_line(run(tmp_path, "serve", "--port", "0", "--db", url), url, "unable to open database file")


def test_a_writable_database_still_starts(tmp_path):
    url = f"sqlite:///{tmp_path / 'ok.sqlite3'}"
    done = run(tmp_path, "token", "add", "web", "--role", "service", "--db", url)
    assert done.returncode == 0 and done.stdout.startswith("chub_"), done.stderr
