"""Load simulation: synthetic traffic at a steady rate through one worker's topic namespace, measured as it runs.

The events come lazily from devstack/workload.py (realistic identifier overlap, typos, Chinese
and Latin names), so a million of them never sit in memory at once. The probe (devstack/probe.py)
times each delta from event sent to delta consumed on the watched scenario topic. Every
``every_s`` a :class:`Sample` says how far the run is: throughput, propagation p50/p99 over the
period, the worker's memory (RSS) and CPU, and the store's size on disk as it grows.

Cost per event is worker CPU seconds per resolved event over a stretch of the run, compared at
two stretches: from ``COST_MARK`` to twice as many events resolved, and the last tenth of the
events, so a run of a million shows whether the cost grows with the graph (the issue wants the
end within 1.5x of the mark). Both are stretches, not averages since the start: the first events
arrive while the worker joins its group and are resolved in a burst of large batches, each event
cheaper than in the steady state that follows at the offered rate, and an average from the start
carries that into the mark.
Progress is the highest event number whose delta arrived: events are numbered in sending order
and each partition is resolved in order, and an event that changes nothing has no delta to count.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Mapping, Sequence

import psutil

from devstack.probe import Delivery, PropagationProbe
from devstack.stack import LocalStack
from devstack.workload import synthetic_events
from identity.topics import TopicNames

#: Where the cost per event is read first: the issue compares a million events' cost with it.
COST_MARK = 10_000
#: Events per synthetic customer: each customer is seen about this many times across scenarios.
EVENTS_PER_CUSTOMER = 5
#: How long the end waits for deltas after the last delivery before it calls the run complete.
QUIET_S = 3.0
#: Longest wait for the worker to catch up once every event is sent.
DRAIN_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The run so far; latencies over the period since the previous sample."""

    elapsed_s: float
    sent: int
    resolved: int
    #: Sent per second over the period: the offered rate, as the producer kept it.
    events_per_s: float
    #: Resolved per second over the period: below ``events_per_s`` while the worker falls behind.
    resolved_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    rss_mb: float
    store_mb: float | None
    cpu_s: float


@dataclass
class Simulation:
    events: int
    rate: float
    seconds: float
    resolved: int
    deltas: int
    events_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    rss_mb_max: float
    store_mb: float | None
    #: CPU per event from COST_MARK events resolved to twice as many.
    cost_ms_at_mark: float | None
    #: CPU per event over the whole run.
    cost_ms_at_end: float | None
    #: CPU per event over the last tenth of the events: what an event costs at the largest store.
    cost_ms_last_tenth: float | None = None
    samples: list[Sample] = field(default_factory=list)

    @property
    def cost_ratio(self) -> float | None:
        """Cost per event over the last tenth over the cost at :data:`COST_MARK`: flat growth is 1.0."""
        if not self.cost_ms_at_mark or self.cost_ms_last_tenth is None:
            return None
        return self.cost_ms_last_tenth / self.cost_ms_at_mark


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _rounded(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 1)


def event_number(event_id: str) -> int:
    """The sending order of a :func:`workload` event, from its id (``wl-0000042``)."""
    return int(event_id.rpartition("-")[2])


def workload(events: int, seed: int = 7) -> Iterator[dict[str, object]]:
    """The run's events, made one at a time."""
    customers = max(1, events // EVENTS_PER_CUSTOMER)
    return (event for _, event in synthetic_events(customers, events, seed))


def store_megabytes(path: Path | None) -> float | None:
    """An SQLite store's size on disk, its write-ahead log included; None for a store without a file."""
    if path is None:
        return None
    files = [path, path.with_name(path.name + "-wal")]
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


class _Meter:
    """What the run has seen: resolved events, latencies, and the worker's CPU and memory."""

    def __init__(self, worker_pid: int, store_path: Path | None) -> None:
        self._worker = psutil.Process(worker_pid)
        self._store_path = store_path
        self._cpu_start = self._cpu_total()
        self.started = time.monotonic()
        self.latencies = array("d")
        self.window: list[float] = []
        self.resolved = 0
        self.rss_max = 0.0

    def _cpu_total(self) -> float:
        times = self._worker.cpu_times()
        return float(times.user + times.system)

    def cpu_s(self) -> float:
        """The worker's CPU seconds since the meter started."""
        return self._cpu_total() - self._cpu_start

    def on_delivery(self, delivery: Delivery) -> None:
        self.latencies.append(delivery.latency_ms)
        self.window.append(delivery.latency_ms)
        self.resolved = max(self.resolved, event_number(delivery.delta["cause"]["event_id"]) + 1)

    def sample(self, sent: int, previous: Sample | None) -> Sample:
        now = time.monotonic() - self.started
        window, self.window = self.window, []
        rss = self._worker.memory_info().rss / 1e6
        self.rss_max = max(self.rss_max, rss)
        period = now - (previous.elapsed_s if previous else 0.0)
        done = sent - (previous.sent if previous else 0)
        resolved = self.resolved - (previous.resolved if previous else 0)
        per_s = (lambda count: count / period) if period > 0 else (lambda count: 0.0)
        return Sample(round(now, 1), sent, self.resolved, per_s(done), per_s(resolved), percentile(window, 50),
                      percentile(window, 99), rss, store_megabytes(self._store_path), self.cpu_s())


async def simulate(bootstrap: str, topics: TopicNames, watch: Sequence[str], worker_pid: int, *, events: int,
                   rate: float, store_path: Path | None = None, every_s: float = 10.0, seed: int = 7,
                   cost_mark: int = COST_MARK,
                   on_sample: Callable[[Sample], None] = lambda sample: None) -> Simulation:
    """Send ``events`` synthetic touchpoints at ``rate``/s to ``topics.touchpoints`` and measure them
    arriving on the ``watch`` topics (a subscription of the worker's own), until all are resolved.

    A resolved event is one whose delta reached a watched topic: a subscription entitled to every
    field (``traits.*``, ``identifiers.*``) sees every event that changes something.
    """
    meter = _Meter(worker_pid, store_path)
    samples: list[Sample] = []
    async with PropagationProbe(bootstrap, watch, send_topic=topics.touchpoints, on_delivery=meter.on_delivery) as probe:
        async def report() -> None:
            while True:
                await asyncio.sleep(every_s)
                samples.append(meter.sample(probe.sent, samples[-1] if samples else None))
                on_sample(samples[-1])

        reporting = asyncio.ensure_future(report())
        try:
            send_seconds = await probe.send(workload(events, seed), rate)
            await probe.settle(QUIET_S, DRAIN_TIMEOUT_S)
        finally:
            reporting.cancel()
            await asyncio.gather(reporting, return_exceptions=True)
        final = meter.sample(probe.sent, samples[-1] if samples else None)
    seconds = max(send_seconds, final.elapsed_s - QUIET_S)
    resolved = meter.resolved
    return Simulation(
        events=events, rate=rate, seconds=round(seconds, 1), resolved=resolved, deltas=probe.delivered,
        events_per_s=round(resolved / seconds, 1) if seconds else 0.0,
        p50_ms=_rounded(percentile(meter.latencies, 50)), p99_ms=_rounded(percentile(meter.latencies, 99)),
        rss_mb_max=round(max(meter.rss_max, final.rss_mb), 1), store_mb=final.store_mb,
        cost_ms_at_mark=stretch_cost([*samples, final], cost_mark, 2 * cost_mark),
        # Every event sent is resolved by now (the worker went quiet), delta or not.
        cost_ms_at_end=round(final.cpu_s / probe.sent * 1000, 3) if probe.sent else None,
        cost_ms_last_tenth=stretch_cost([*samples, final], 0.9 * final.resolved, final.resolved),
        samples=[*samples, final],
    )


def stretch_cost(samples: Sequence[Sample], start: float, end: float) -> float | None:
    """CPU ms per event between the samples around ``start`` and ``end`` resolved events (the last at
    or before ``start``, the first at or past ``end``, or the last sample)."""
    first = next((s for s in reversed(samples) if s.resolved <= start), None)
    last = next((s for s in samples if s.resolved >= end), samples[-1] if samples else None)
    if first is None or last is None or last.resolved <= first.resolved:
        return None
    return round((last.cpu_s - first.cpu_s) / (last.resolved - first.resolved) * 1000, 3)


def sample_line(s: Sample) -> str:
    """One progress line of a run, as `idgraph sandbox simulate` and perf.simulate print it."""
    p50 = f"{s.p50_ms:.0f}" if s.p50_ms is not None else "-"
    p99 = f"{s.p99_ms:.0f}" if s.p99_ms is not None else "-"
    store = f"{s.store_mb:.0f} MB" if s.store_mb is not None else "-"
    cost = f" ({s.cpu_s / s.resolved * 1000:.2f} ms/event)" if s.resolved else ""
    return (f"{s.elapsed_s:>7.0f} s  sent {s.sent:>8,} ({s.events_per_s:>4.0f}/s)  resolved {s.resolved:>8,} "
            f"({s.resolved_per_s:>4.0f}/s)  "
            f"p50 {p50:>5} ms  p99 {p99:>5} ms  rss {s.rss_mb:>5.0f} MB  store {store}  cpu {s.cpu_s:.0f} s{cost}")


#: The subscription a simulated worker is watched through: entitled to every field, so every
#: event that changes something shows up on its topic.
WATCH_SUBSCRIPTION = {"name": "simulate", "fields": ["traits.*", "identifiers.*"]}


async def simulate_on_stack(workdir: Path, namespace: str, *, events: int, rate: float,
                            broker: Literal["embedded", "kafka"] = "kafka", broker_url: str | None = None,
                            worker_env: Mapping[str, str] | None = None, every_s: float = 10.0,
                            on_sample: Callable[[Sample], None] = lambda sample: None) -> Simulation:
    """:func:`simulate` through a worker of its own in ``namespace``, with a fresh store under
    ``workdir``: on the broker at ``broker_url``, or on one started for the run (``broker``)."""
    topics = TopicNames(namespace)
    env = {"IDGRAPH_TOPIC_NAMESPACE": namespace, "IDGRAPH_PARTITIONS": "4", **(worker_env or {})}
    async with LocalStack(workdir, [WATCH_SUBSCRIPTION], broker_url=broker_url, broker=broker, worker_env=env) as stack:
        assert stack.worker is not None
        await asyncio.sleep(1.0)  # let the worker's consumer group settle before the clock starts
        return await simulate(stack.bootstrap, topics, [topics.scoped(f"scenario.{WATCH_SUBSCRIPTION['name']}")],
                              stack.worker.pid, events=events, rate=rate, store_path=stack.worker.store_path,
                              every_s=every_s, on_sample=on_sample)
