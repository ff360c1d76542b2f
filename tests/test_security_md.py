"""SECURITY.md names a test for every threat: each ``file::test`` it names exists, so the page cannot promise
a test that was renamed or never written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = re.compile(r"`([\w/]+\.py)::(\w+)`")


def test_every_test_named_in_security_md_exists():
    text = (ROOT / "SECURITY.md").read_text()
    refs = REF.findall(text)
    assert len(refs) > 50
    missing = []
    for path, name in refs:
        source = ROOT / "tests" / path
        if not source.exists() or not re.search(rf"^(async )?def {name}\(", source.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, f"SECURITY.md names tests that do not exist: {missing}"


def test_the_check_finds_a_missing_test():
    assert REF.findall("`queue/test_outbox.py::test_nothing_like_this`") == [("queue/test_outbox.py",
                                                                               "test_nothing_like_this")]
    assert not re.search(r"^(async )?def test_nothing_like_this\(", (ROOT / "tests/queue/test_outbox.py").read_text(), re.M)
