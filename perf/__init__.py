"""Benchmarks, each runnable as ``python -m perf.<name>``; the last line printed is one JSON object."""
