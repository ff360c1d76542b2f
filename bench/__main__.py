"""Run the benchmarks: ``python -m bench`` (all) or ``python -m bench lookup regions`` (by name)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path


def discover() -> list[str]:
    """Names of the ``bench_*`` modules next to this file, sorted."""
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = discover()
    if argv:
        wanted = {a.removeprefix("bench_") for a in argv}
        unknown = wanted - {n.removeprefix("bench_") for n in names}
        if unknown:
            print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: {', '.join(names)}", file=sys.stderr)
            return 2
        names = [n for n in names if n.removeprefix("bench_") in wanted]
    crashed = []
    for name in names:
        print(f"\n{'=' * 78}\n== {name}\n{'=' * 78}", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            module.main()
        except Exception:  # a crashing benchmark must not hide the others' figures
            traceback.print_exc()
            crashed.append(name)
        print(f"-- {name}: {time.perf_counter() - started:.1f} s", flush=True)
    if crashed:
        print(f"\ncrashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
