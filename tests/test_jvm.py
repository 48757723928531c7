"""Apache Kafka from the project's jars: it starts, keeps its topics across a restart, and stops."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devstack.jvm import ApacheKafka, cluster_id


async def _produce(bootstrap: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("kept", value, key=b"k")
    finally:
        await producer.stop()


async def _read_all(bootstrap: str) -> list[bytes]:
    consumer = AIOKafkaConsumer("kept", bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        got: list[bytes] = []
        for _ in range(50):
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                got += [m.value for m in messages if m.value is not None]
            if len(got) >= 2:
                break
        return got
    finally:
        await consumer.stop()


async def test_kafka_keeps_its_topics_across_a_restart_on_its_data_directory(tmp_path):
    kafka = ApacheKafka(tmp_path / "kafka")
    with kafka:
        await _produce(kafka.bootstrap, b"before")
        await asyncio.to_thread(kafka.stop)
        assert not kafka.running
        await asyncio.to_thread(kafka.start)
        await _produce(kafka.bootstrap, b"after")
        assert await _read_all(kafka.bootstrap) == [b"before", b"after"]


def test_a_cluster_id_never_starts_with_a_dash_so_the_storage_tool_cannot_read_it_as_an_option():
    # 0xf8 encodes to '-' as the first base64 character: the first draw must be rejected.
    draws = iter([b"\xf8" + bytes(15), bytes(16)])
    drawn = cluster_id(lambda n: next(draws))
    assert not drawn.startswith("-")
    assert len(drawn) == 22
    assert next(draws, None) is None  # it drew again rather than altering the id
