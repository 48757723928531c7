"""A sandbox session's speed, and proof that it leaves the live store alone.

On ~20k synthetic touchpoints (devstack/workload.py: shared identifiers, typos, Chinese and
Latin names) resolved into a "live" SQLite store, a sandbox is created from it, its history is
replayed through a candidate rule set, diffed and dropped. Reported: the replay's events/s
against resolving the same events as ``idgraph resolve --no-learn`` does (both keep one rule set
throughout; learning would add the fit to one side only), the diff's time, and how many
statements of the live store's logical dump differ after the session (must be 0).

Then the load simulation (``idgraph sandbox simulate``): ``--simulate`` events (a million by
default) through a worker of the sandbox's own on an Apache Kafka (make jars) holding the live
topics, reported under ``simulation``: throughput, propagation p50/p99, worker memory, store
size, and CPU per event at 10k against the end. ``live_topic_writes`` is how far every live
topic's end offsets moved meanwhile (must be 0).

    python -m perf.sandbox                          # 20,000 events, then a 1,000,000-event simulation
    python -m perf.sandbox --events 5000 --simulate 20000 --rate 600
    python -m perf.sandbox --simulate 0             # no simulation (no Kafka needed)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from devstack.jvm import ApacheKafka
from devstack.simulate import sample_line, simulate_on_stack
from devstack.workload import synthetic_events
from graph.factory import store_from_url
from identity.rules import Rules, load_rules
from identity.topics import LIVE
from sandbox.diff import sandbox_diff
from sandbox.replay import replay
from sandbox.workspace import Sandbox, create, drop
from service.blocking import start_with_blocking_index
from streams.admin import delete_topics_with_prefix, end_offsets, ensure_topics
from streams.batch import resolve_lines


def candidate_rules(live: Rules) -> Rules:
    """A plausible change to try: a stricter link threshold."""
    thresholds = live.thresholds.model_copy(update={"link": min(0.99, live.thresholds.link + 0.04)})
    return live.model_copy(update={"version": "perf-candidate", "thresholds": thresholds})


def live_dump(path: Path) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return list(connection.iterdump())


async def resolve_live(lines: list[tuple[int, bytes]], url: str, rules: Rules) -> float:
    async with store_from_url(url) as store:
        await start_with_blocking_index(store, rules)
        started = time.perf_counter()
        await resolve_lines(lines, store, rules)
        return time.perf_counter() - started


async def session(workdir: Path, events: int, simulate: int, rate: float) -> dict[str, Any]:
    rules = load_rules()
    lines = [(n, orjson.dumps(e)) for n, (_, e) in enumerate(synthetic_events(max(events // 4, 1), events), 1)]
    live = workdir / "live.db"
    resolve_s = await resolve_live(lines, f"sqlite:///{live}", rules)
    before = live_dump(live)
    root = workdir / "sandboxes"
    started = time.perf_counter()
    sandbox, _ = await create(root, "perf", f"sqlite:///{live}", rules)
    create_s = time.perf_counter() - started
    started = time.perf_counter()
    report = await replay(sandbox.store_url, sandbox.candidate_url, candidate_rules(rules))
    replay_s = time.perf_counter() - started
    started = time.perf_counter()
    diff = await sandbox_diff(sandbox)
    diff_s = time.perf_counter() - started
    simulation, topic_writes = await simulate_beside_live(workdir, sandbox, simulate, rate) if simulate else (None, None)
    drop(root, "perf")
    after = live_dump(live)
    changed = len(set(before) ^ set(after)) + abs(len(before) - len(after))
    return {
        "events": events, "accepted": report.events - report.rejected,
        "resolve_events_per_s": round(events / resolve_s), "replay_events_per_s": round(report.events / replay_s),
        "replay_vs_resolve": round(resolve_s / replay_s * report.events / events, 3),
        "create_s": round(create_s, 3), "replay_s": round(replay_s, 3), "diff_s": round(diff_s, 3),
        "diff": {"profiles": diff.as_dict()["profiles"], "moved_events": len(diff.moved),
                 "changed_decisions": len(diff.changed)},
        "live_store_writes": changed, "live_topic_writes": topic_writes, "simulation": simulation,
    }


async def simulate_beside_live(workdir: Path, sandbox: Sandbox, events: int, rate: float) -> tuple[dict[str, Any], int]:
    """The sandbox's load simulation on a broker holding the live topics; how far they moved."""
    with ApacheKafka(workdir / "kafka") as kafka:
        await ensure_topics(kafka.bootstrap, {name: 4 for name in LIVE.fixed()})
        before = await end_offsets(kafka.bootstrap, sandbox.topic_namespace)
        result = await simulate_on_stack(sandbox.path / "simulation", sandbox.topic_namespace, events=events, rate=rate,
                                         broker_url=kafka.url, on_sample=lambda s: print(sample_line(s), flush=True))
        after = await end_offsets(kafka.bootstrap, sandbox.topic_namespace)
        await delete_topics_with_prefix(kafka.bootstrap, sandbox.topic_namespace)
    moved = sum(abs(after.get(name, 0) - offset) for name, offset in before.items()) + len(set(after) - set(before))
    figures = {k: v for k, v in dataclasses.asdict(result).items() if k != "samples"}
    figures["cost_ratio"] = round(result.cost_ratio, 2) if result.cost_ratio is not None else None
    return figures, moved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events in the live store, replayed and diffed")
    parser.add_argument("--simulate", type=int, default=1_000_000, help="events of the load simulation; 0 skips it")
    # One 2-core machine runs the worker, Kafka and the probe: past ~300k events a worker resolves
    # about 330/s (its CPU per event grows with the store), so 400/s ends in a backlog of minutes.
    parser.add_argument("--rate", type=float, default=250.0, help="the simulation's offered events per second")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idgraph-sandbox-") as tmp:
        result = asyncio.run(session(Path(tmp), args.events, args.simulate, args.rate))
    print(f"{result['events']} events: resolve {result['resolve_events_per_s']:,} events/s, "
          f"replay {result['replay_events_per_s']:,} events/s ({result['replay_vs_resolve']}x resolve)")
    print(f"create {result['create_s']} s, replay {result['replay_s']} s, diff {result['diff_s']} s; "
          f"diff: {result['diff']}")
    print(f"live store statements changed by the session: {result['live_store_writes']} (must be 0)")
    if (sim := result["simulation"]) is not None:
        print(f"simulation: {sim['events']:,} events at {sim['rate']:.0f}/s offered, {sim['events_per_s']:,.0f}/s resolved; "
              f"p50 {sim['p50_ms']} ms, p99 {sim['p99_ms']} ms; RSS at most {sim['rss_mb_max']:.0f} MB; store "
              f"{sim['store_mb'] or 0:.0f} MB; CPU per event {sim['cost_ms_at_mark']} ms from 10k to 20k events, "
              f"{sim['cost_ms_last_tenth']} ms over the last tenth (ratio {sim['cost_ratio']}, limit 1.5), "
              f"{sim['cost_ms_at_end']} ms over the run")
        print(f"live topic records written by the session: {result['live_topic_writes']} (must be 0)")
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
