"""Tuning of a server process as a whole: the garbage collector.

Done by the entry points that run a server (``citizen-hub serve``, ``python -m hub.intake_server``),
not by :func:`hub.http.app.create_app`: the tests build many apps in one process and must not have its
collector changed under them.
"""

from __future__ import annotations

import gc


def tune_gc(threshold: int) -> None:
    """Collect the youngest generation every ``threshold`` allocations (``[server] gc_threshold``).

    Python's default of 700 means a collection every few requests, each a walk over the young
    objects; the older generations keep their thresholds. 0 leaves Python's default.
    """
    if threshold > 0:
        _young, middle, old = gc.get_threshold()
        gc.set_threshold(threshold, middle, old)


def freeze_heap() -> None:
    """Take what is alive now (the loaded knowledge base) out of every later collection.

    The knowledge base is a few hundred thousand long-lived objects; without this each full
    collection walks them all, a pause of tens of milliseconds in the middle of requests (and after
    a fork, :func:`hub.intake_server.serve_prefork`, it would touch every page the processes share).
    """
    gc.collect()
    gc.freeze()
