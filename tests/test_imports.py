"""Every module of the hub imports on its own, in a fresh interpreter.

The config model assembles the feature modules' settings sections (the channels' through the plugin
registry); a module that is imported first (a worker, a script, a test) must never meet a half-built
module on the way.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hub", "channels", "knowledge")


#: Entry points that a process may import first (CLI, workers, the app) besides the settings modules.
ENTRY_POINTS = ("hub.cli", "hub.http.app", "hub.queue.workers", "channels.email.listener", "channels.web.form", "knowledge.base")


def cycle_modules() -> list[str]:
    """The packages, every settings module (the config model imports them all) and the entry points."""
    names = set(PACKAGES) | set(ENTRY_POINTS) | {"hub.config", "hub.queue.sla"}
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if info.name.endswith("settings"):
                names.add(info.name)
    return sorted(names)


def test_the_module_list_holds_every_settings_module():
    names = cycle_modules()
    assert {"channels.email.settings", "channels.web.settings", "hub.queue.settings", "hub.console.settings",
            "hub.http.catalog_settings"} <= set(names)


def test_each_module_imports_first_in_a_fresh_interpreter():
    def try_import(name: str) -> tuple[str, int, str]:
        done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        return name, done.returncode, done.stderr.strip().splitlines()[-1:] and done.stderr.strip().splitlines()[-1]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [(n, err) for n, rc, err in pool.map(try_import, cycle_modules()) if rc != 0]
    assert failures == []
