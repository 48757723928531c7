"""What instrumenting a batch costs the worker: WorkerMetrics.observe_batch per event.

A batch of 200 new customers is resolved once through the real pipeline on a temporary
SQLite store; its result is then observed many times, as the worker observes every batch.

    python -m perf.metrics_overhead [--events 200] [--repeats 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from graph.sqlite import SQLiteStore
from identity.rules import load_rules
from streams.metrics import WorkerMetrics
from streams.pipeline import Incoming, ResolutionPipeline
from streams.results import BatchResult

#: What the worker can afford per event for its metrics, of a ~1 ms budget per event.
BUDGET_US = 50.0


async def _acknowledged(topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> "asyncio.Future[None]":
    ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ack.set_result(None)
    return ack


async def resolved_batch(events: int, workdir: Path) -> tuple[BatchResult, dict[str, str]]:
    bodies: list[dict[str, Any]] = [{"event_id": f"c{i}", "scenario": "sales.crm", "type": "lead_created",
                                     "occurred_at": "2026-03-01T09:00:00+08:00",
                                     "identifiers": {"crm_id": f"c-{i}"}, "traits": {}} for i in range(events)]
    async with SQLiteStore(workdir / "graph.db") as store:
        pipeline = ResolutionPipeline(store, load_rules(), _acknowledged, max_event_bytes=4096)
        result = await pipeline.handle([Incoming(orjson.dumps(b), "touchpoints", 0, i) for i, b in enumerate(bodies)])
    return result, {b["event_id"]: b["scenario"] for b in bodies}


def measure(result: BatchResult, scenarios: dict[str, str], repeats: int) -> list[float]:
    """Microseconds per event of each observation."""
    metrics = WorkerMetrics(process_collectors=False)
    events = len(result.outcomes) + len(result.rejected)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        metrics.observe_batch(result, resolve_seconds=0.05, store_seconds=0.04, scenarios=scenarios)
        samples.append((time.perf_counter() - started) / events * 1e6)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idgraph-metrics-") as tmp:
        result, scenarios = asyncio.run(resolved_batch(args.events, Path(tmp)))
    samples = sorted(measure(result, scenarios, args.repeats))
    figures = {"events_per_batch": args.events, "repeats": args.repeats,
               "median_us_per_event": round(statistics.median(samples), 2),
               "p90_us_per_event": round(samples[int(len(samples) * 0.9) - 1], 2),
               "budget_us_per_event": BUDGET_US}
    print(f"observe_batch: median {figures['median_us_per_event']} µs per event, "
          f"p90 {figures['p90_us_per_event']} µs (budget {BUDGET_US} µs) over {args.repeats} batches of {args.events}")
    print(orjson.dumps(figures).decode())
    return 0 if figures["median_us_per_event"] < BUDGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
