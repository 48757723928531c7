"""A sandbox session's speed, and proof that it leaves the live store alone.

On ~20k synthetic touchpoints (devstack/workload.py: shared identifiers, typos, Chinese and
Latin names) resolved into a "live" SQLite store, a sandbox is created from it, its history is
replayed through a candidate rule set, diffed and dropped. Reported: the replay's events/s
against resolving the same events as ``idgraph resolve --no-learn`` does (both keep one rule set
throughout; learning would add the fit to one side only), the diff's time, and how many
statements of the live store's logical dump differ after the session (must be 0).

The 1M-event load simulation is ``idgraph sandbox simulate`` (the worker's topic namespace, a
separate branch): its figures go under ``simulation_1m``, null until it lands, as do live topic
writes (a sandbox has no worker of its own yet, so nothing here produces to any topic).

    python -m perf.sandbox                  # 20,000 events
    python -m perf.sandbox --events 5000
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from devstack.workload import synthetic_events
from graph.factory import store_from_url
from identity.rules import Rules, load_rules
from sandbox.diff import sandbox_diff
from sandbox.replay import replay
from sandbox.workspace import create, drop
from service.blocking import start_with_blocking_index
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


async def session(workdir: Path, events: int) -> dict[str, Any]:
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
        "live_store_writes": changed, "live_topic_writes": None, "simulation_1m": None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idgraph-sandbox-") as tmp:
        result = asyncio.run(session(Path(tmp), args.events))
    print(f"{result['events']} events: resolve {result['resolve_events_per_s']:,} events/s, "
          f"replay {result['replay_events_per_s']:,} events/s ({result['replay_vs_resolve']}x resolve)")
    print(f"create {result['create_s']} s, replay {result['replay_s']} s, diff {result['diff_s']} s; "
          f"diff: {result['diff']}")
    print(f"live store statements changed by the session: {result['live_store_writes']} (must be 0)")
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
