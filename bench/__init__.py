"""Benchmarks: ``python -m bench`` runs every ``bench/bench_*.py`` module's ``main()``.

Benchmarks report figures and compare them with targets; they do not gate (a missed target prints FAIL
and still exits 0). A benchmark that crashes makes the run exit 1.
"""
