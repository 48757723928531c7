"""Resolution throughput on a real Neo4j: events/s, batch latency (p50, p99) and round trips,
by batch size, with one worker and with two writing at once.

    python -m perf.neo4j_throughput                                   # starts a Neo4j of its own
    python -m perf.neo4j_throughput --events 4000 --batch-sizes 50 200 --workers 1 2
    NEO4J_URI=neo4j://localhost:7687 NEO4J_PASSWORD=secret python -m perf.neo4j_throughput

Febrl4 records arrive as touchpoints, in file order, through the same resolver and default
rules as ``perf.accuracy``, once per (workers, batch size), each time on an emptied database.
Two workers are two processes, each with its own store and driver, taking alternate events of
the same stream (so one person's records reach both, and they race to create and merge).
A batch's latency is its whole resolve: read, decide, write, and re-runs after conflicts.

Without NEO4J_URI it starts Neo4j Community from the jars `make jars` built (devstack/jvm.py);
with it, ``NEO4J_USER`` (default neo4j) and ``NEO4J_DATABASE`` (default neo4j) say where, and
THE TARGET DATABASE IS EMPTIED before every run: point it at a scratch database only.

Round trips are counted by the store itself. A one-worker run is checked against the embedded
store (the same events must land on the same profiles); every run is checked for events lost or
applied twice and for identifiers held by two live profiles. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import Any, Mapping

import orjson

from graph import cypher
from graph.neo4j import Neo4jStore
from graph.neo4j_settings import Neo4jSettings
from service.resolver import Resolver
from graph.sqlite import SQLiteStore
from identity.events import parse_event
from identity.features import prepare
from identity.rules import Rules, load_rules
from perf.accuracy import load_dataset
from streams.batch import resolve_lines
from devstack.jvm import Neo4jServer

DEFAULT_BATCH_SIZES = (50, 200)
DEFAULT_WORKERS = (1, 2)
#: Seconds the worker processes get to start and prepare their events before all begin at once.
START_GRACE_S = 10.0

# Live profiles sharing an identifier: what two workers racing on one customer must not leave.
SHARED_IDENTIFIERS = """
MATCH (i:Identifier)<-[:HAS_IDENTIFIER]-(p:Profile)
WHERE NOT EXISTS { (p)-[:MERGED_INTO]->(:Profile) }
WITH i, count(p) AS holders WHERE holders > 1
RETURN count(i) AS shared
"""


def settings_from_env(env: Mapping[str, str]) -> Neo4jSettings:
    return Neo4jSettings.from_env(env["NEO4J_URI"], {
        "IDGRAPH_NEO4J_USER": env.get("NEO4J_USER", ""),
        "IDGRAPH_NEO4J_PASSWORD": env.get("NEO4J_PASSWORD", ""),
        "IDGRAPH_NEO4J_DATABASE": env.get("NEO4J_DATABASE", ""),
    })


async def empty_database(settings: Neo4jSettings) -> None:
    from neo4j import AsyncGraphDatabase

    async with AsyncGraphDatabase.driver(settings.url, auth=(settings.user, settings.password)) as driver:
        await driver.execute_query(cypher.DELETE_EVERYTHING.text, database_=settings.database)


async def reference_assignments(lines: list[tuple[int, bytes]], rules: Rules) -> dict[str, str]:
    """What the embedded store makes of the same events (its batch size does not matter)."""
    with tempfile.TemporaryDirectory(prefix="idgraph-neo4j-perf-") as tmp:
        async with SQLiteStore(Path(tmp) / "reference.db") as store:
            await resolve_lines(iter(lines), store, rules)
            return dict(await store.assignments())


async def _resolve_share(settings: Neo4jSettings, lines: list[tuple[int, bytes]], batch_size: int,
                         start_at: float) -> dict[str, Any]:
    rules = load_rules()
    prepared = [prepare(parse_event(line), rules) for _, line in lines]
    batches = [prepared[i:i + batch_size] for i in range(0, len(prepared), batch_size)]
    async with Neo4jStore(settings) as store:
        resolver = Resolver(store, rules)
        opened = store.stats.round_trips  # schema set-up is not part of the measurement
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started, latencies = time.time(), []
        for batch in batches:
            begun = time.perf_counter()
            await resolver.resolve(batch)
            latencies.append(time.perf_counter() - begun)
        return {"started": started, "ended": time.time(), "latencies": latencies,
                "round_trips": store.stats.round_trips - opened, "conflicts": store.stats.conflicts}


def _quiet_driver() -> None:
    # An emptied database makes the server warn of every label and relationship type a read
    # names before the first write creates it: noise between the figures.
    logging.getLogger("neo4j.notifications").setLevel(logging.ERROR)


def _worker(settings: Neo4jSettings, lines: list[tuple[int, bytes]], batch_size: int, start_at: float) -> dict[str, Any]:
    """One worker process's share of the stream."""
    _quiet_driver()
    return asyncio.run(_resolve_share(settings, lines, batch_size, start_at))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _check(settings: Neo4jSettings, lines: list[tuple[int, bytes]]) -> tuple[dict[str, str], int, int]:
    """The run's assignments, events not assigned exactly once, and identifiers held by two live profiles."""
    async with Neo4jStore(settings) as store:
        pairs = await store.assignments()
        result = await store.driver.execute_query(SHARED_IDENTIFIERS, database_=settings.database)
        shared = int(result.records[0]["shared"])
    assigned = [event_id for event_id, _ in pairs]
    wrong = abs(len(lines) - len(assigned)) + (len(assigned) - len(set(assigned)))
    return dict(pairs), wrong, shared


async def run(settings: Neo4jSettings, lines: list[tuple[int, bytes]], batch_size: int, workers: int,
              expected: dict[str, str]) -> dict[str, Any]:
    await empty_database(settings)
    async with Neo4jStore(settings):  # the schema, once, before the workers race to create it
        pass
    start_at = time.time() + START_GRACE_S
    shares = [lines[w::workers] for w in range(workers)]
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = await asyncio.gather(*(loop.run_in_executor(pool, _worker, settings, share, batch_size, start_at)
                                         for share in shares))
    seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)
    latencies = [t for r in results for t in r["latencies"]]
    assignments, wrong, shared = await _check(settings, lines)
    round_trips = sum(r["round_trips"] for r in results)
    return {
        "workers": workers,
        "batch_size": batch_size,
        "events": len(lines),
        "seconds": round(seconds, 3),
        "events_per_s": round(len(lines) / seconds, 1),
        "batch_p50_ms": round(_percentile(latencies, 0.50) * 1000, 1),
        "batch_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "round_trips_per_event": round(round_trips / len(lines), 4),
        "conflicts": sum(r["conflicts"] for r in results),
        "events_not_applied_once": wrong,
        "identifiers_shared_by_live_profiles": shared,
        "same_as_sqlite": assignments == expected if workers == 1 else None,
    }


def _line(r: dict[str, Any]) -> str:
    same = "" if r["same_as_sqlite"] is None else f", same as SQLite: {r['same_as_sqlite']}"
    return (f"{r['workers']} worker(s), batch {r['batch_size']:>4}: {r['events_per_s']:>7.1f} events/s, "
            f"batch p50 {r['batch_p50_ms']:.0f} ms, p99 {r['batch_p99_ms']:.0f} ms, "
            f"{r['round_trips_per_event']:.3f} round trips/event, {r['conflicts']} conflicts, "
            f"{r['events_not_applied_once']} events not applied once, "
            f"{r['identifiers_shared_by_live_profiles']} identifiers shared by live profiles{same}")


async def benchmark(settings: Neo4jSettings, events: int, batch_sizes: list[int], workers: list[int]) -> dict[str, Any]:
    rules = load_rules()
    lines = list(islice(enumerate(load_dataset("febrl4")[0], 1), events))
    expected = await reference_assignments(lines, rules)
    runs = []
    for count in workers:
        for size in batch_sizes:
            result = await run(settings, lines, size, count, expected)
            runs.append(result)
            print(_line(result), flush=True)
    return {"url": settings.url, "events": len(lines), "rule_version": rules.model_version, "cpus": os.cpu_count(),
            "runs": runs}


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="febrl4 records to resolve per run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    parser.add_argument("--workers", type=int, nargs="+", default=list(DEFAULT_WORKERS),
                        help="writer processes at once, one run per count")
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    _quiet_driver()
    with ExitStack() as stack:
        if env.get("NEO4J_URI"):
            settings = settings_from_env(env)
        else:
            server = stack.enter_context(Neo4jServer())
            print(f"started Neo4j Community at {server.uri} (no NEO4J_URI given)", flush=True)
            settings = Neo4jSettings(server.uri, server.user, server.password)
        result = asyncio.run(benchmark(settings, args.events, args.batch_sizes, args.workers))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
