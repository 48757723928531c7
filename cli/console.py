"""``idgraph send`` and ``idgraph tail``: a platform's first producer and consumer, from a shell.

``send`` checks every line of a JSON-lines file before it sends any, so a file with a bad line
is refused whole (each bad line named with its number) rather than half sent; with
``skip_invalid`` the good lines go and the bad ones are only reported. Each event is keyed by
:func:`identity.features.partition_key`, the same key the scenario runtime uses, so one
customer's events land in one partition and are resolved in the order they were sent. The
producer waits for every replica (``acks=all``) and is idempotent: a retried send is not a
second record.

``tail`` follows the topic a scenario's subscription delivers to, from its end (or its start),
and prints each delta as one JSON line.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from identity.events import EventRejected, parse_event
from identity.features import partition_key, prepare
from identity.rules import Rules

#: Records awaited together: enough to fill the producer's batches, few enough for a lively progress bar.
SEND_WINDOW = 500


@dataclass
class Checked:
    """A file's lines after validation: what will be sent, and what was refused and why."""

    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)


def check_lines(lines: Iterable[tuple[int, bytes]], rules: Rules) -> Checked:
    """Validate each numbered line as the worker would and key it; refused lines keep their number."""
    checked = Checked()
    for number, line in lines:
        try:
            event = parse_event(line)
            prepare(event, rules)  # the identifiers' checks: the worker refuses an event with a bad one
        except EventRejected as exc:
            checked.refused.append((number, f"{exc.reason_class}: {exc}"))
            continue
        checked.records.append((partition_key(event, rules), line))
    return checked


async def send_records(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]],
                       on_sent: Callable[[int], None]) -> float:
    """Produce ``records`` in order and wait until the broker has every one; return the seconds it took."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    started = time.monotonic()
    try:
        for start in range(0, len(records), SEND_WINDOW):
            window = records[start:start + SEND_WINDOW]
            acks = [await producer.send(topic, value, key=key) for key, value in window]
            await asyncio.gather(*acks)
            on_sent(len(window))
    finally:
        await producer.stop()
    return time.monotonic() - started


async def follow(bootstrap: str, topic: str, *, from_beginning: bool, on_ready: Callable[[], None],
                 wait_s: float = 60) -> AsyncIterator[bytes]:
    """Every record of ``topic`` from its end (or start) on, without a consumer group or commits.

    Partitions are assigned by hand and positioned before ``on_ready`` is called, so a record
    produced after that is never missed. Waits up to ``wait_s`` for the topic to exist (the worker
    creates a scenario's topic once its subscription is registered).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic, wait_s)
        await (consumer.seek_to_beginning(*partitions) if from_beginning else consumer.seek_to_end(*partitions))
        for tp in partitions:
            await consumer.position(tp)
        on_ready()
        async for message in consumer:
            if message.value is not None:  # a tombstone after an erasure carries no delta
                yield message.value
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str, wait_s: float) -> list[TopicPartition]:
    """Subscribe once the topic exists (subscribing to a missing one would auto-create it with one
    partition); without a group the consumer then assigns itself every partition."""
    deadline = time.monotonic() + wait_s
    while topic not in await consumer.topics():
        if time.monotonic() > deadline:
            raise LookupError(f"topic {topic!r} does not exist after {wait_s:.0f} s: is a worker running "
                              "with this subscription registered?")
        await asyncio.sleep(0.5)
    consumer.subscribe([topic])
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    return sorted(consumer.assignment())
