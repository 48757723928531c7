"""Propagation latency and throughput through the embedded stack, as a subscriber sees it.

For each offered rate a fresh stack (embedded broker, one worker, a new embedded store)
receives synthetic touchpoints at that steady rate; a subscriber entitled to every field
measures, per delta, event produced -> delta consumed. The worker's CPU is read from
/proc through psutil. A rate is sustained when the worker keeps up: every delta arrives
within a second of the last event being sent.

    python -m perf.propagation                       # 100, 500, 1000 events/s, then the highest sustainable
    python -m perf.propagation --rates 500 --seconds 5 --no-search
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from streams.probe import PropagationProbe
from streams.stack import LocalStack
from streams.workload import synthetic_events

SUBSCRIPTION = {"name": "perf", "fields": ["traits.*", "identifiers.*"]}
TOPIC = "scenario.perf"
#: A rate counts as sustained when the last delta arrives this soon after the last event was sent.
DRAIN_LIMIT_S = 1.0


async def measure(rate: float, seconds: float, workdir: Path) -> dict[str, Any]:
    count = max(1, int(rate * seconds))
    events = [e for _, e in synthetic_events(customers=max(1, count // 5), events=count, seed=int(rate))]
    async with LocalStack(workdir, [SUBSCRIPTION], worker_env={"IDGRAPH_PARTITIONS": "4"}) as stack:
        assert stack.worker is not None
        worker = psutil.Process(stack.worker.pid)
        async with PropagationProbe(stack.bootstrap, [TOPIC]) as probe:
            await asyncio.sleep(1.0)  # let the worker's consumer group settle before the clock starts
            cpu_before, wall_before = worker.cpu_times(), time.monotonic()
            send_seconds = await probe.send(events, rate)
            sent_done = time.monotonic()
            await probe.settle(quiet_s=1.0, timeout_s=120)
            cpu_after = worker.cpu_times()
            result = probe.result(send_seconds)
    last_delivery = sent_done + max(0.0, (max(d.latency_ms for d in result.deliveries) / 1000) if result.deliveries else 0)
    busy = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {
        "p50_ms": round(result.percentile(50), 1),
        "p95_ms": round(result.percentile(95), 1),
        "p99_ms": round(result.percentile(99), 1),
        "max_ms": round(result.latencies()[-1], 1) if result.deliveries else None,
        "events_per_s": round(result.events_per_s, 1),
        "deltas": len(result.deliveries),
        "worker_cpu": round(busy / (time.monotonic() - wall_before), 3),
        "sustained": bool(result.deliveries) and result.latencies()[-1] / 1000 <= DRAIN_LIMIT_S + 1 / rate,
        "_drain_s": round(last_delivery - sent_done, 3),
    }


def _line(rate: float, r: dict[str, Any]) -> str:
    return (f"{rate:>6.0f} events/s offered: p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  "
            f"p99 {r['p99_ms']:6.1f} ms  max {r['max_ms']} ms  achieved {r['events_per_s']:.0f} events/s  "
            f"{r['deltas']} deltas  worker CPU {r['worker_cpu']:.2f} cores  {'sustained' if r['sustained'] else 'NOT sustained'}")


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
    for r in results.values():
        r.pop("_drain_s", None)
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
