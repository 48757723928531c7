"""Propagation latency and throughput through the embedded stack, as a subscriber sees it.

For each offered rate a fresh stack (embedded broker, one worker, a new embedded store)
receives synthetic touchpoints at that steady rate; a subscriber entitled to every field
measures, per delta, event produced -> delta consumed. A rate is sustained when the worker
keeps up: every delta arrives within a second of the last event being sent.

A run ends when the subscriber has every delta it is entitled to (counted in the worker's
store once every event is resolved), not at the first quiet second: a worker that stalls
for a while must not end the measurement early and leave its slowest deltas uncounted.
Missing deltas (after two minutes) make a rate not sustained. CPU, read from /proc through
psutil, is in cores while the load is offered, for the worker, the broker and this process:
the three share the machine.

    python -m perf.propagation                       # 100, 500, 1000 events/s, then the highest sustainable
    python -m perf.propagation --rates 500 --seconds 5 --no-search
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
import psutil

from devstack.probe import PropagationProbe
from devstack.stack import LocalStack, WorkerProcess, wait_until
from devstack.workload import synthetic_events
from identity.deltas import IdentityDelta
from sinks.subscriptions import parse_subscriptions, project

SUBSCRIPTION = {"name": "perf", "fields": ["traits.*", "identifiers.*"]}
TOPIC = "scenario.perf"
#: A rate counts as sustained when the last delta arrives this soon after the last event was sent.
DRAIN_LIMIT_S = 1.0
#: Longest wait for the worker to resolve everything and the subscriber to receive every delta.
COMPLETE_TIMEOUT_S = 120.0


async def measure(rate: float, seconds: float, workdir: Path) -> dict[str, Any]:
    count = max(1, int(rate * seconds))
    events = [e for _, e in synthetic_events(customers=max(1, count // 5), events=count, seed=int(rate))]
    async with LocalStack(workdir, [SUBSCRIPTION], worker_env={"IDGRAPH_PARTITIONS": "4"}) as stack:
        assert stack.worker is not None
        cpu = _CpuMeter(stack.worker.pid)
        async with PropagationProbe(stack.bootstrap, [TOPIC]) as probe:
            await asyncio.sleep(1.0)  # let the worker's consumer group settle before the clock starts
            cpu.start()
            send_seconds = await probe.send(events, rate)
            cores = cpu.stop()
            expected, unresolved = await _expected_deltas(stack.worker, len({e["event_id"] for e in events}))
            try:
                await wait_until(lambda: probe.delivered >= expected, COMPLETE_TIMEOUT_S, 0.05, "every delta delivered")
            except TimeoutError:
                pass  # reported as missing
            result = probe.result(send_seconds)
    missing = max(0, expected - len(result.deliveries)) + unresolved  # each unresolved event counts as one
    return {
        "p50_ms": round(result.percentile(50), 1),
        "p95_ms": round(result.percentile(95), 1),
        "p99_ms": round(result.percentile(99), 1),
        "max_ms": round(result.latencies()[-1], 1) if result.deliveries else None,
        "events_per_s": round(result.events_per_s, 1),
        "deltas": len(result.deliveries),
        "deltas_missing": missing,
        **cores,
        "sustained": bool(result.deliveries) and not missing
                     and result.latencies()[-1] / 1000 <= DRAIN_LIMIT_S + 1 / rate,
    }


class _CpuMeter:
    """Cores used by the worker, the broker (every other child) and this process between start and stop."""

    def __init__(self, worker_pid: int) -> None:
        me = psutil.Process()
        self._processes = {"worker_cpu": [psutil.Process(worker_pid)],
                           "broker_cpu": [p for p in me.children() if p.pid != worker_pid],
                           "bench_cpu": [me]}
        self._before: dict[str, float] = {}
        self._started = 0.0

    def _busy(self) -> dict[str, float]:
        return {name: sum(sum(p.cpu_times()[:2]) for p in procs) for name, procs in self._processes.items()}

    def start(self) -> None:
        self._before, self._started = self._busy(), time.monotonic()

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._started
        return {name: round((busy - self._before[name]) / elapsed, 3) for name, busy in self._busy().items()}


async def _expected_deltas(worker: WorkerProcess, events: int) -> tuple[int, int]:
    """Once every event is resolved: how many stored deltas the subscription is entitled to, and unresolved events."""
    try:
        await wait_until(lambda: _resolved(worker) >= events, COMPLETE_TIMEOUT_S, 0.1, "every event resolved")
    except TimeoutError:
        pass  # reported as unresolved: the rate is not sustained
    (subscription,) = parse_subscriptions([SUBSCRIPTION], "perf.propagation")
    deltas = (IdentityDelta.model_validate_json(d) for (d,) in query_store(worker.store_path, "SELECT delta FROM outbox"))
    return sum(project(d, subscription) is not None for d in deltas), max(0, events - _resolved(worker))


def _resolved(worker: WorkerProcess) -> int:
    return query_store(worker.store_path, "SELECT COUNT(*) FROM decisions")[0][0]


def query_store(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a running worker's SQLite store, opened read-only beside it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _line(rate: float, r: dict[str, Any]) -> str:
    missing = f" ({r['deltas_missing']} MISSING)" if r["deltas_missing"] else ""
    return (f"{rate:>6.0f} events/s offered: p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  "
            f"p99 {r['p99_ms']:6.1f} ms  max {r['max_ms']} ms  achieved {r['events_per_s']:.0f} events/s  "
            f"{r['deltas']} deltas{missing}  "
            f"CPU cores: worker {r['worker_cpu']:.2f} broker {r['broker_cpu']:.2f} bench {r['bench_cpu']:.2f}  "
            f"{'sustained' if r['sustained'] else 'NOT sustained'}")


async def run(rates: list[float], seconds: float, search: list[float]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="idgraph-propagation-") as tmp:
        for rate in rates:
            results[str(int(rate))] = r = await measure(rate, seconds, Path(tmp) / f"rate-{int(rate)}")
            print(_line(rate, r), flush=True)
        best = max((float(k) for k, v in results.items() if v["sustained"]), default=0.0)
        for rate in search:
            if rate <= best:
                continue
            r = await measure(rate, seconds, Path(tmp) / f"search-{int(rate)}")
            print(_line(rate, r), flush=True)
            if not r["sustained"]:
                break
            results[str(int(rate))], best = r, rate
    results["max_sustained_events_per_s"] = best
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each rate is offered")
    parser.add_argument("--search", type=float, nargs="+", default=[1500, 2000, 2500, 3000, 4000],
                        help="higher rates tried in order until one is not sustained")
    parser.add_argument("--no-search", action="store_true")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.rates, args.seconds, [] if args.no_search else args.search))
    print(f"highest sustained rate: {results['max_sustained_events_per_s']:.0f} events/s")
    sys.stdout.write(orjson.dumps(results).decode() + "\n")


if __name__ == "__main__":
    main()
