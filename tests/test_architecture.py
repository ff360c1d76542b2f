"""The rules of the house (docs/architecture.md), checked on the code itself.

* the import-linter contracts in ``pyproject.toml`` hold (channels → hub → knowledge, nothing upward);
* no import cycle between any two modules, counting imports inside functions too;
* no folder holds more than 15 Python modules directly;
* each case action has exactly one implementation, in :mod:`hub.casework`: nothing else changes a
  case's state for an agent, writes an agent's outbound message or a labelled example;
* every channel reaches the hub through the one registry, and the hub never imports a channel.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hub", "channels", "knowledge")
MAX_MODULES_PER_FOLDER = 15


def _lint_imports() -> Path:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        found = shutil.which("lint-imports")
        assert found, "import-linter is a dev dependency: pip install -e '.[dev]'"
        exe = Path(found)
    return exe


def test_the_import_contracts_hold():
    done = subprocess.run([str(_lint_imports()), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_cycle_between_modules():
    graph = grimp.build_graph(*PACKAGES)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    """The check above can fail: two modules that import each other (one of them inside a function)."""
    pkg = tmp_path / "cyclepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclepkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyclepkg import a\n    return a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("cyclepkg")) == [["cyclepkg.a", "cyclepkg.b"]]


@pytest.mark.parametrize("top", [*PACKAGES, "tests", "bench"])
def test_no_folder_holds_more_than_15_modules(top):
    crowded = {}
    for folder in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
        if "__pycache__" in folder.parts or "artifacts" in folder.parts:
            continue
        modules = sorted(p.name for p in folder.glob("*.py"))
        if len(modules) > MAX_MODULES_PER_FOLDER:
            crowded[str(folder.relative_to(ROOT))] = len(modules)
    assert crowded == {}


# -- one implementation of every case action ---------------------------------------------------------------

#: Modules that may move a case's state, and why.
STATE_WRITERS = {
    "hub/casework.py": "every action of an agent",
    "hub/queue/cases.py": "transition() itself",
    "hub/queue/routing.py": "the routing stage: new -> routed | needs_clarification",
    "hub/queue/intake.py": "the citizen wrote again: a waiting or answered case reopens",
    "hub/queue/workers.py": "a case that keeps failing goes to the dead letter",
}


def _python_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _calls(tree: ast.AST, names: set[str]) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in names:
                out.append(node)
    return out


def test_only_the_stages_and_casework_change_a_cases_state():
    offenders = []
    for path in _python_files():
        rel = str(path.relative_to(ROOT))
        if rel in STATE_WRITERS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree, {"transition", "try_transition", "transition_many"}):
            offenders.append(f"{rel}:{call.lineno}")
    assert offenders == [], "call hub.casework instead"


def test_only_casework_writes_an_agents_message_or_a_labelled_example():
    offenders = []
    for path in _python_files():
        rel = str(path.relative_to(ROOT))
        if rel in ("hub/casework.py", "hub/queue/outbox.py"):
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        for call in _calls(tree, {"enqueue"}):
            offenders.append(f"{rel}:{call.lineno} enqueue")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "insert" and node.args \
                    and getattr(node.args[0], "id", None) == "example_t":
                offenders.append(f"{rel}:{node.lineno} labelled example")
    assert offenders == [], "call hub.casework instead"


def test_no_second_implementation_of_a_case_action_by_name():
    """The old twins (console ``do_reply``, API ``_do_reply``, ...) must not come back."""
    actions = {"reply", "forward", "reroute", "close", "transition"}
    twins = []
    for path in _python_files():
        rel = str(path.relative_to(ROOT))
        if rel in STATE_WRITERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                bare = node.name.lstrip("_").removeprefix("do_")
                if node.name.lstrip("_").startswith("do_") and bare in actions:
                    twins.append(f"{rel}:{node.lineno} {node.name}")
    assert twins == []


def test_the_case_action_checks_can_fail(tmp_path):
    """The AST checks above see a transition or an enqueue hidden in an attribute call."""
    tree = ast.parse("from hub.queue import cases\ndef f(conn, row):\n    cases.transition(conn, row, 'closed')\n"
                     "    outbox.enqueue(conn, row, text='x', author='a')\n")
    assert len(_calls(tree, {"transition"})) == 1 and len(_calls(tree, {"enqueue"})) == 1


# -- the channel registry ---------------------------------------------------------------------------------


def test_every_channel_package_is_in_the_registry():
    from channels import REGISTRY
    from hub.plugins import Channel, channels

    packages = sorted(p.parent.name for p in (ROOT / "channels").glob("*/__init__.py"))
    registered = sorted(c.name for c in REGISTRY)
    assert packages == registered, "a channel package without a registry line (or the reverse)"
    assert all(isinstance(c, Channel) for c in REGISTRY)
    assert channels() == tuple(REGISTRY), "the hub finds the registry through the entry point"


def test_the_settings_model_holds_every_channels_sections():
    from hub.config import Settings
    from hub.plugins import settings_sections

    for section in settings_sections():
        assert Settings.model_fields[section.key].annotation is section.model
