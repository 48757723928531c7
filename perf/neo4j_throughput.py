"""Resolution throughput on a live Neo4j by batch size: events/s and round trips per event.

    NEO4J_URI=neo4j://localhost:7687 NEO4J_PASSWORD=secret python -m perf.neo4j_throughput
    python -m perf.neo4j_throughput --events 5000 --batch-sizes 1 20 100 500

Febrl4 records arrive as touchpoints, in file order, through the same resolver, default
rules and batch loop as ``perf.accuracy``, once per batch size, each time on an emptied
database. ``NEO4J_USER`` (default neo4j) and ``NEO4J_DATABASE`` (default neo4j) say where.
THE TARGET DATABASE IS EMPTIED before every run: point it at a scratch database only.

Round trips are counted by the store itself (a query is one, a commit another), so the
figures hold for any network; events/s depends on the latency to the server. Every run is
also checked against the embedded store: the same events must land on the same profiles.

Without NEO4J_URI it says so and exits 0. The last line printed is always one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any, Mapping

import orjson

from graph import cypher
from graph.neo4j import Neo4jStore
from graph.neo4j_settings import Neo4jSettings
from graph.sqlite import SQLiteStore
from identity.rules import Rules, load_rules
from perf.accuracy import load_dataset
from streams.batch import resolve_lines

DEFAULT_BATCH_SIZES = (1, 10, 50, 200, 500)


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


async def run_batch_size(settings: Neo4jSettings, lines: list[tuple[int, bytes]], rules: Rules,
                         batch_size: int, expected: dict[str, str]) -> dict[str, Any]:
    await empty_database(settings)
    store = Neo4jStore(settings)
    async with store:
        opened = store.stats.round_trips  # schema set-up is not part of the measurement
        started = time.perf_counter()
        report = await resolve_lines(iter(lines), store, rules, batch_size=batch_size)
        seconds = time.perf_counter() - started
        stats = store.stats
        round_trips = stats.round_trips - opened
        same = dict(await store.assignments()) == expected
    batches = -(-report.events // batch_size)
    return {
        "batch_size": batch_size,
        "events": report.events,
        "seconds": round(seconds, 3),
        "events_per_s": round(report.events / seconds, 1),
        "round_trips": round_trips,
        "round_trips_per_event": round(round_trips / report.events, 4),
        "round_trips_per_batch": round(round_trips / batches, 2),
        "conflicts": stats.conflicts,
        "same_as_sqlite": same,
    }


async def benchmark(settings: Neo4jSettings, events: int, batch_sizes: list[int]) -> dict[str, Any]:
    rules = load_rules()
    lines = list(islice(enumerate(load_dataset("febrl4")[0], 1), events))
    expected = await reference_assignments(lines, rules)
    runs = []
    for size in batch_sizes:
        run = await run_batch_size(settings, lines, rules, size, expected)
        runs.append(run)
        print(f"batch {size:>5}: {run['events_per_s']:>8.1f} events/s, {run['round_trips_per_event']:.3f} round trips "
              f"per event ({run['round_trips_per_batch']:.1f} per batch), {run['conflicts']} conflicts, "
              f"same as SQLite: {run['same_as_sqlite']}", flush=True)
    return {"url": settings.url, "events": len(lines), "rule_version": rules.model_version, "runs": runs}


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="febrl4 records to resolve per run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    if not env.get("NEO4J_URI"):
        print("NEO4J_URI is not set: no Neo4j to measure. Set NEO4J_URI (and NEO4J_PASSWORD) to a scratch database.")
        result: dict[str, Any] = {"skipped": "NEO4J_URI not set"}
    else:
        result = asyncio.run(benchmark(settings_from_env(env), args.events, args.batch_sizes))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
