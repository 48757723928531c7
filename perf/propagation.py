"""Propagation latency and throughput through the embedded stack, as a subscriber sees it.

For each offered rate a fresh stack (embedded broker, ``--workers`` worker processes in one
consumer group sharing a new embedded store) receives synthetic touchpoints at that steady rate; a subscriber entitled to every field
measures, per delta, event produced -> delta consumed. A rate is sustained when the worker
keeps up: every delta arrives within a second of the last event being sent.

A run ends when the subscriber has every delta it is entitled to (counted in the worker's
store once every event is resolved), not at the first quiet second: a worker that stalls
for a while must not end the measurement early and leave its slowest deltas uncounted.
Missing deltas (after two minutes) make a rate not sustained. CPU, read from /proc through
psutil, is in cores while the load is offered, for the workers (together), the broker and this
process: the three share the machine. ``worker_cpu_us_per_event`` is the workers' CPU from the
first event sent to the last delta delivered, over the events offered: a worker that falls
behind works on after the sending ends, and other load on a shared machine hardly moves it; ``loadavg`` is the
machine's 1-minute load average when the rate starts, to tell a busy machine from a slow worker.

The floor to compare with: after each rate, a bare aiokafka relay (consume, produce, in this
process) carries the same number of records at the same rate through the same broker, and
the same probe measures produced -> relayed record consumed. ``p50_vs_relay`` is idgraph's
p50 over the relay's: what resolution and routing add to the hops any Kafka stage pays.

The targets (issue 13): p99 < 50 ms at 100 events/s, < 200 ms at 1,000 events/s, and at
least 2,000 events/s sustained.

    python -m perf.propagation                       # 100, 500, 1000 events/s, then the highest sustainable
    python -m perf.propagation --rates 500 --seconds 5 --no-search
    python -m perf.propagation --broker kafka        # Apache Kafka (make jars) instead of the embedded broker
    python -m perf.propagation --workers 2           # two worker processes, the partitions split between them
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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devstack.jvm import ApacheKafka
from devstack.probe import PropagationProbe
from devstack.stack import LocalStack, WorkerProcess, wait_until
from devstack.workload import synthetic_events
from identity.deltas import IdentityDelta
from sinks.subscriptions import parse_subscriptions, project
from streams.admin import ensure_topics

SUBSCRIPTION = {"name": "perf", "fields": ["traits.*", "identifiers.*"]}
TOPIC = "scenario.perf"
#: A rate counts as sustained when the last delta arrives this soon after the last event was sent.
DRAIN_LIMIT_S = 1.0
#: Longest wait for the worker to resolve everything and the subscriber to receive every delta.
COMPLETE_TIMEOUT_S = 120.0
#: The bare relay's topics: it consumes the first and produces every record to the second.
RELAY_IN, RELAY_OUT = "perf.relay.in", "perf.relay.out"
#: (figure, rate, limit) the issue asks for: p99 below the limit, or a sustained rate at least it.
TARGETS = [("p99_ms", 100, 50.0), ("p99_ms", 1000, 200.0)]
TARGET_SUSTAINED = 2000.0
#: Kafka refuses group sessions shorter than its group.min.session.timeout.ms (6 s).
KAFKA_WORKER_ENV = {"IDGRAPH_SESSION_TIMEOUT_S": "6"}


async def measure(rate: float, seconds: float, workdir: Path, broker: str, workers: int = 1) -> dict[str, Any]:
    count = max(1, int(rate * seconds))
    events = [e for _, e in synthetic_events(customers=max(1, count // 5), events=count, seed=int(rate))]
    if broker == "kafka":
        with ApacheKafka(workdir / "kafka") as kafka:
            return await _measure_on(kafka.url, rate, events, workdir, KAFKA_WORKER_ENV, workers)
    return await _measure_on(None, rate, events, workdir, {}, workers)


async def _measure_on(broker_url: str | None, rate: float, events: list[dict[str, Any]], workdir: Path,
                      env: dict[str, str], workers: int) -> dict[str, Any]:
    worker_env = {"IDGRAPH_PARTITIONS": "4", **env}
    async with LocalStack(workdir, [SUBSCRIPTION], broker_url=broker_url, worker_env=worker_env,
                          workers=workers) as stack:
        assert stack.worker is not None
        loadavg = float(Path("/proc/loadavg").read_text().split()[0])
        cpu = _CpuMeter([w.pid for w in stack.workers])
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
            # Up to the last delta, not the end of sending: a worker behind works on after it.
            worker_cpu_s = cpu.busy_seconds("worker_cpu")
            result, repeats = probe.result(send_seconds), probe.repeats
        relay_p50 = await measure_relay(stack.bootstrap, rate, events)
    missing = max(0, expected - len(result.deliveries)) + unresolved  # each unresolved event counts as one
    p50 = result.percentile(50)
    return {
        "p50_ms": round(result.percentile(50), 1),
        "p95_ms": round(result.percentile(95), 1),
        "p99_ms": round(result.percentile(99), 1),
        "max_ms": round(result.latencies()[-1], 1) if result.deliveries else None,
        "events_per_s": round(result.events_per_s, 1),
        "deltas": len(result.deliveries),
        "deltas_repeated": repeats,
        "deltas_missing": missing,
        **cores,
        "worker_cpu_us_per_event": round(worker_cpu_s / len(events) * 1e6),
        "workers": workers,
        "loadavg": loadavg,
        "sustained": bool(result.deliveries) and not missing
                     and result.latencies()[-1] / 1000 <= DRAIN_LIMIT_S + 1 / rate,
        "relay_p50_ms": round(relay_p50, 1),
        "p50_vs_relay": round(p50 / relay_p50, 1) if relay_p50 > 0 else None,
    }


async def measure_relay(bootstrap: str, rate: float, events: list[dict[str, Any]]) -> float:
    """p50 ms, produced -> consumed, of records carried by a bare consume-produce relay at ``rate``."""
    await ensure_topics(bootstrap, {RELAY_IN: 4, RELAY_OUT: 4})
    consumer = AIOKafkaConsumer(RELAY_IN, bootstrap_servers=bootstrap, group_id="perf.relay",
                                auto_offset_reset="earliest", fetch_max_wait_ms=10)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await consumer.start()
    await producer.start()

    async def relay() -> None:
        while True:
            for messages in (await consumer.getmany(timeout_ms=100)).values():
                for message in messages:
                    await producer.send(RELAY_OUT, message.value, key=message.key)
    relaying = asyncio.ensure_future(relay())
    try:
        # The relay's records carry the events' ids as a delta's cause, so the probe matches them alike.
        records = [{"event_id": e["event_id"], "cause": {"event_id": e["event_id"]}} for e in events]
        async with PropagationProbe(bootstrap, [RELAY_OUT], send_topic=RELAY_IN) as probe:
            await asyncio.sleep(1.0)  # the relay's group settles, as the worker's does
            send_seconds = await probe.send(records, rate)
            try:
                await wait_until(lambda: probe.delivered >= len(records), COMPLETE_TIMEOUT_S, 0.05, "every record relayed")
            except TimeoutError:
                pass  # the percentile of what arrived
            return probe.result(send_seconds).percentile(50)
    finally:
        relaying.cancel()
        await asyncio.gather(relaying, return_exceptions=True)
        await producer.stop()
        await consumer.stop()


class _CpuMeter:
    """Cores used by the workers, the broker (every other child) and this process between start and stop."""

    def __init__(self, worker_pids: list[int]) -> None:
        me = psutil.Process()
        self._processes = {"worker_cpu": [psutil.Process(pid) for pid in worker_pids],
                           "broker_cpu": [p for p in me.children() if p.pid not in worker_pids],
                           "bench_cpu": [me]}
        self._before: dict[str, float] = {}
        self._started = 0.0

    def _busy(self) -> dict[str, float]:
        return {name: sum(sum(p.cpu_times()[:2]) for p in procs) for name, procs in self._processes.items()}

    def start(self) -> None:
        self._before, self._started = self._busy(), time.monotonic()

    def busy_seconds(self, name: str) -> float:
        """CPU seconds of ``name`` since start."""
        return self._busy()[name] - self._before[name]

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._started
        return {name: round((busy - self._before[name]) / elapsed, 3) for name, busy in self._busy().items()}


async def _expected_deltas(worker: WorkerProcess, events: int) -> tuple[int, int]:
    """Once every event is resolved: how many stored deltas the subscription is entitled to, and unresolved events.

    The store is read in a thread: deltas still arrive meanwhile, and a read on the event loop
    (decoding every delta takes a good part of a second at 1,000 events/s) would stamp them late.
    """
    deadline = time.monotonic() + COMPLETE_TIMEOUT_S
    while (resolved := await asyncio.to_thread(_resolved, worker)) < events and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # past the deadline: reported as unresolved, the rate is not sustained
    return await asyncio.to_thread(_entitled, worker.store_path), max(0, events - resolved)


def _entitled(store: Path) -> int:
    (subscription,) = parse_subscriptions([SUBSCRIPTION], "perf.propagation")
    deltas = (IdentityDelta.from_json(d) for (d,) in query_store(store, "SELECT delta FROM outbox"))
    return sum(project(d, subscription) is not None for d in deltas)


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
            f"{r['deltas']} deltas{missing} (+{r['deltas_repeated']} repeated)  "
            f"CPU cores: {r['workers']} worker(s) {r['worker_cpu']:.2f} ({r['worker_cpu_us_per_event']} us/event) "
            f"broker {r['broker_cpu']:.2f} bench {r['bench_cpu']:.2f}  load average {r['loadavg']:.2f}  "
            f"{'sustained' if r['sustained'] else 'NOT sustained'}  "
            f"bare relay p50 {r['relay_p50_ms']} ms (idgraph p50 x{r['p50_vs_relay']})")


def targets(results: dict[str, Any]) -> list[str]:
    """One line per target of issue 13: the figure, the limit, met or not."""
    lines = []
    for figure, rate, limit in TARGETS:
        got = results.get(str(rate), {}).get(figure)
        verdict = "not measured" if got is None else ("met" if got < limit else "MISSED")
        lines.append(f"target {figure} at {rate} events/s < {limit:.0f} ms: {got} ms, {verdict}")
    best = results["max_sustained_events_per_s"]
    lines.append(f"target sustained >= {TARGET_SUSTAINED:.0f} events/s: {best:.0f} events/s, "
                 f"{'met' if best >= TARGET_SUSTAINED else 'MISSED'}")
    if (p50 := results.get("100", {}).get("p50_vs_relay")) is not None:
        lines.append(f"idgraph p50 at 100 events/s is {p50}x a bare consume-produce-consume relay's")
    return lines


async def run(rates: list[float], seconds: float, search: list[float], broker: str, workers: int = 1) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="idgraph-propagation-") as tmp:
        for rate in rates:
            results[str(int(rate))] = r = await measure(rate, seconds, Path(tmp) / f"rate-{int(rate)}", broker, workers)
            print(_line(rate, r), flush=True)
        best = max((float(k) for k, v in results.items() if v["sustained"]), default=0.0)
        for rate in search:
            if rate <= best:
                continue
            r = await measure(rate, seconds, Path(tmp) / f"search-{int(rate)}", broker, workers)
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
    parser.add_argument("--broker", choices=["embedded", "kafka"], default="embedded",
                        help="the embedded broker (Tansu), or Apache Kafka from java/ (make jars)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the consumer group")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    results = asyncio.run(run(args.rates, args.seconds, [] if args.no_search else args.search, args.broker,
                              args.workers))
    results["broker"], results["workers"] = args.broker, args.workers
    print(f"highest sustained rate: {results['max_sustained_events_per_s']:.0f} events/s")
    for line in targets(results):
        print(line)
    sys.stdout.write(orjson.dumps(results).decode() + "\n")


if __name__ == "__main__":
    main()
