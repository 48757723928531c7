"""CPU per event of the worker's hot path, by stage: what one core can resolve and route per second.

The synthetic workload of ``perf.propagation`` is resolved in batches through the real
pipeline (``ResolutionPipeline.handle``) on a temporary SQLite store, with deltas routed to
one Kafka-sink subscription entitled to every field, as the worker does; the broker is left
out (acknowledged at once), so what is measured is the worker's own CPU. A first run is
timed unprofiled (CPU seconds of this process per event); a second run under cProfile gives
each stage's share, scaled to the unprofiled total.

    python -m perf.hotpath [--events 4000] [--batch 200]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from graph.sqlite import SQLiteStore
from identity.rules import load_rules
from sinks.router import Router
from sinks.subscriptions import parse_subscriptions
from streams.collector import tune_collector
from streams.logging import configure_logging
from streams.pipeline import Incoming, ResolutionPipeline
from devstack.workload import synthetic_events

SUBSCRIPTION = {"name": "perf", "fields": ["traits.*", "identifiers.*"]}

#: Stage -> the functions (file suffix, name) whose cumulative time it is; the first found counts.
STAGES: dict[str, list[tuple[str, str]]] = {
    "parse (JSON + contract check)": [("identity/events.py", "parse_event")],
    "prepare (normalise, features)": [("identity/features.py", "prepare")],
    "store: redelivery lookup": [("graph/sqlite.py", "outcome")],
    "store: context read": [("graph/sqlite.py", "context")],
    "decide (fuzzy matching)": [("identity/decide.py", "decide")],
    "plan (changes, deltas)": [("identity/plan.py", "plan_changes")],
    "store: apply writes": [("graph/sqlite.py", "apply")],
    "store: outbox read-back": [("graph/sqlite.py", "unpublished_deltas")],
    "deltas, notices encoded": [("streams/pipeline.py", "_delta_records"), ("streams/pipeline.py", "_notices")],
    "route to subscriptions": [("sinks/router.py", "route")],
    "store: mark published": [("graph/sqlite.py", "mark_published")],
    "metrics + logs": [("streams/metrics.py", "observe_batch"), ("streams/logging.py", "log_batch")],
}


async def _acknowledged(topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> "asyncio.Future[None]":
    ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ack.set_result(None)
    return ack


def batches(events: int, size: int) -> list[list[Incoming]]:
    bodies = [orjson.dumps(e) for _, e in synthetic_events(customers=max(1, events // 5), events=events, seed=1000)]
    incoming = [Incoming(b, "touchpoints", 0, i) for i, b in enumerate(bodies)]
    return [incoming[i:i + size] for i in range(0, len(incoming), size)]


async def resolve_all(work: list[list[Incoming]], workdir: Path, profiler: cProfile.Profile | None = None) -> float:
    """CPU seconds this process spent resolving and routing every batch (under ``profiler``, if any)."""
    async with SQLiteStore(workdir / "graph.db") as store, httpx.AsyncClient() as http:
        router = Router(_acknowledged, http)
        subscriptions = parse_subscriptions([SUBSCRIPTION], "perf.hotpath")
        await router.update(subscriptions)
        wanted = {t for s in subscriptions for t in s.event_types}  # as the worker: notices only if asked for
        pipeline = ResolutionPipeline(store, load_rules(), _acknowledged, max_event_bytes=256 * 1024,
                                      route=router.route, notice_wanted=wanted.__contains__)
        pipeline.warm_up()
        if profiler is not None:
            profiler.enable()
        started = time.process_time()
        for batch in work:
            await pipeline.handle(batch)
        spent = time.process_time() - started
        if profiler is not None:
            profiler.disable()
        await router.stop()
    return spent


def stage_shares(stats: pstats.Stats, total: float) -> dict[str, float]:
    """Each stage's cumulative time as a share of ``total``."""
    cumulative: dict[tuple[str, str], float] = {}
    for (filename, _, name), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        for stage, functions in STAGES.items():
            for suffix, function in functions:
                if name == function and filename.endswith(suffix):
                    cumulative[(stage, function)] = cumulative.get((stage, function), 0.0) + ct
    return {stage: sum(v for (s, _), v in cumulative.items() if s == stage) / total for stage in STAGES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args(argv)
    configure_logging("info")  # as the worker runs in perf.propagation: decisions are debug lines
    tune_collector()  # as the worker, once started
    work = batches(args.events, args.batch)
    with tempfile.TemporaryDirectory(prefix="idgraph-hotpath-") as tmp:
        cpu = asyncio.run(resolve_all(work, Path(tmp) / "timed"))
        profiler = cProfile.Profile(time.process_time)  # CPU, not wall time: the machine is shared
        asyncio.run(resolve_all(work, Path(tmp) / "profiled", profiler))
    stats = pstats.Stats(profiler)
    profiled_total = sum(tt for (_, _, tt, _, _) in stats.stats.values())  # type: ignore[attr-defined]
    per_event_us = cpu / args.events * 1e6
    stages = {stage: round(share * per_event_us, 1) for stage, share in stage_shares(stats, profiled_total).items()}
    stages["other (event loop, batching, transaction)"] = round(per_event_us - sum(stages.values()), 1)
    print(f"CPU per event: {per_event_us:.0f} µs ({1e6 / per_event_us:.0f} events/s per core), "
          f"{args.events} events in batches of {args.batch}")
    for stage, us in stages.items():
        print(f"  {stage:<45} {us:8.1f} µs")
    figures = {"events": args.events, "batch": args.batch, "cpu_us_per_event": round(per_event_us, 1),
               "stages_us_per_event": stages}
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
