"""Reading and writing topics in streaming tests; the broker and workers come from devstack.stack."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def produce(bootstrap: str, events: Iterable[bytes | dict[str, Any]], topic: str = "touchpoints",
                  rate_per_s: float | None = None, key: bytes | None = None) -> None:
    """Send events in order; only events with one ``key`` are also consumed in that order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        for event in events:
            value = event if isinstance(event, bytes) else orjson.dumps(event)
            await producer.send_and_wait(topic, value, key=key)
            if rate_per_s:
                await asyncio.sleep(1 / rate_per_s)
    finally:
        await producer.stop()


def touchpoint(event_id: str, identifiers: dict[str, Any], traits: dict[str, Any] | None = None,
               minute: int = 0) -> dict[str, Any]:
    """A valid touchpoint event, as a platform would produce it."""
    return {"event_id": event_id, "scenario": "sales.crm", "type": "lead_created",
            "occurred_at": f"2026-03-01T09:{minute:02d}:00+08:00", "identifiers": identifiers, "traits": traits or {}}


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int

    def json(self) -> Any:
        return orjson.loads(self.value)


async def read_topic(bootstrap: str, topic: str, *, expect: int | None = None, settle_s: float = 1.5,
                     timeout_s: float = 60) -> list[Record]:
    """Read a topic from the start until ``expect`` records arrived, or nothing new for ``settle_s``.

    No consumer group: aiokafka assigns every partition itself, and nothing is committed.
    """
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=20, auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        records: list[Record] = []
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                records += [Record(m.topic, m.key, m.value, list(m.headers or []), m.partition) for m in messages]
                last_new = time.monotonic()
            if expect is not None and len(records) >= expect:
                # A moment longer, so that an unexpected extra record would be seen too.
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    records += [Record(m.topic, m.key, m.value, list(m.headers or []), m.partition) for m in messages]
                return records
            if expect is None and time.monotonic() - last_new > settle_s:
                return records
        return records
    finally:
        await consumer.stop()
