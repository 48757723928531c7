"""Measuring propagation as a subscriber sees it: event produced -> delta consumed.

A paced producer stamps each event's send time; a consumer on the scenario topics matches
every delta it receives to its cause event and records the difference. Used by the demo
and by ``perf.propagation``, so both report the same thing the same way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from identity.topics import LIVE


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    delta: dict[str, Any]
    latency_ms: float


@dataclass(slots=True)
class ProbeResult:
    sent: int
    send_seconds: float
    deliveries: list[Delivery] = field(default_factory=list)

    def latencies(self, topic: str | None = None) -> list[float]:
        return sorted(d.latency_ms for d in self.deliveries if topic is None or d.topic == topic)

    def percentile(self, q: float, topic: str | None = None) -> float:
        values = self.latencies(topic)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]

    @property
    def events_per_s(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds else 0.0


class TopicWatcher:
    """Reads topics from their start without joining a consumer group, handing each JSON record on.

    Observers must not take partitions away from the consumers they watch, and must not
    commit anything: no group, no commits.
    """

    def __init__(self, bootstrap: str, topics: Sequence[str], on_record: Callable[[str, dict[str, Any], float], None]) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self._on_record = on_record
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "TopicWatcher":
        self._consumer = AIOKafkaConsumer(*self.topics, bootstrap_servers=self.bootstrap, group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=5)
        await self._consumer.start()
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            for messages in (await self._consumer.getmany(timeout_ms=100)).values():
                now = time.time()
                for message in messages:
                    if message.value is not None:  # a tombstone after an erasure
                        self._on_record(message.topic, orjson.loads(message.value), now)


#: Sends awaited together: a long run must not hold an acknowledgement per event.
ACK_WINDOW = 1000


class PropagationProbe:
    """Sends events and times their deliveries; keeps each delivery for :meth:`result`, or, for a
    run too long to keep them all, hands each to ``on_delivery`` instead."""

    def __init__(self, bootstrap: str, topics: Sequence[str], *, send_topic: str = LIVE.touchpoints,
                 on_delivery: Callable[[Delivery], None] | None = None) -> None:
        self.bootstrap = bootstrap
        self.send_topic = send_topic
        self._sent_at: dict[str, float] = {}
        self._deliveries: list[Delivery] = []
        self._on_delivery = on_delivery or self._deliveries.append
        self._delivered = 0
        #: What was already delivered, by topic and delta (or, for a notice, its event).
        self._seen: set[tuple[str, str | None, str]] = set()
        #: Copies of a record already delivered: at-least-once repeats, not counted as deliveries.
        self.repeats = 0
        self._watcher = TopicWatcher(bootstrap, topics, self._observe)

    @property
    def sent(self) -> int:
        return len(self._sent_at)

    @property
    def delivered(self) -> int:
        return self._delivered

    def delivered_to(self, topic: str) -> int:
        return sum(1 for d in self._deliveries if d.topic == topic)

    async def __aenter__(self) -> "PropagationProbe":
        await self._watcher.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._watcher.__aexit__(*exc)

    def _observe(self, topic: str, delta: dict[str, Any], now: float) -> None:
        event_id = delta["cause"]["event_id"]
        sent = self._sent_at.get(event_id)
        if sent is None:
            return
        # A subscriber has a delta when its first copy arrives; a repeat (a relay sending what
        # another worker is still sending) must neither count towards the total nor weigh on the tail.
        key = (topic, delta.get("delta_id"), event_id)
        if key in self._seen:
            self.repeats += 1
            return
        self._seen.add(key)
        self._delivered += 1
        self._on_delivery(Delivery(topic, delta, (now - sent) * 1000))

    async def send(self, events: Iterable[dict[str, Any]], rate_per_s: float,
                   on_progress: Callable[[int], None] | None = None) -> float:
        """Produce ``events`` at a steady rate; returns the seconds it took."""
        # A platform's producer as it comes: 5 ms is the stock linger of the Java client since Kafka
        # 4.0 and of librdkafka. aiokafka's own default (0) sends a request per event: at 1,000
        # events/s, ~0.1 cores more here and ~0.15 more in the broker (perf.propagation, one run
        # each), taken from the two cores the worker shares with them. The wait counts in the
        # latency measured: each event's clock starts before its send.
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks=1)
        await producer.start()
        acks = []
        started = time.perf_counter()
        try:
            for i, event in enumerate(events):
                due = started + i / rate_per_s
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                self._sent_at[event["event_id"]] = time.time()
                acks.append(await producer.send(self.send_topic, orjson.dumps(event)))
                if len(acks) >= ACK_WINDOW:
                    await asyncio.gather(*acks)
                    acks.clear()
                if on_progress is not None and i % 50 == 0:
                    on_progress(i)
            await asyncio.gather(*acks)
        finally:
            await producer.stop()
        return time.perf_counter() - started

    async def settle(self, quiet_s: float = 1.0, timeout_s: float = 60, on_progress: Callable[[], None] | None = None) -> None:
        """Wait until no delivery has arrived for ``quiet_s``."""
        deadline = time.monotonic() + timeout_s
        seen, last_change = self.delivered, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_change < quiet_s:
            await asyncio.sleep(0.05)
            if self.delivered != seen:
                seen, last_change = self.delivered, time.monotonic()
            if on_progress is not None:
                on_progress()

    def result(self, send_seconds: float) -> ProbeResult:
        return ProbeResult(len(self._sent_at), send_seconds, list(self._deliveries))
