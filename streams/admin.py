"""The Kafka admin calls the worker itself makes: create its topics, and ask a broker for its cluster id.

Plain Kafka protocol, whatever answers it (Apache Kafka, or the embedded Tansu broker that
devstack/broker.py starts on one machine and recognises by the cluster id it was given).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiokafka.admin import AIOKafkaAdminClient

_TOPIC_ALREADY_EXISTS = 36


class TopicError(RuntimeError):
    """A topic could not be created (anything other than "it already exists")."""


class BrokerUnreachable(RuntimeError):
    """No bootstrap server accepted a connection within the wait the worker is given."""


def wait_for_broker(bootstrap: str, wait_s: float, interval_s: float = 0.5) -> None:
    """Return once any of ``bootstrap`` (host:port, comma-separated) accepts a TCP connection.

    A worker started before its broker (or while it restarts) waits this long, then exits with
    one line naming the address for its supervisor to start it again, rather than failing deep in
    the Kafka client's start (a traceback, or its bootstrap retries). A connection is enough:
    this only tells "down" from "up"; the Kafka clients do the rest.
    """
    hosts = [_host_port(address) for address in bootstrap.split(",")]
    deadline = time.monotonic() + wait_s
    while True:
        for name, port in hosts:
            try:
                socket.create_connection((name, port), timeout=1.0).close()
                return
            except OSError:
                pass
        if time.monotonic() >= deadline:
            raise BrokerUnreachable(f"no Kafka broker accepted a connection at {bootstrap} within {wait_s:g} s")
        time.sleep(interval_s)


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` as a socket address; an IPv6 literal comes bracketed (``[::1]:9092``)."""
    host, _, port = address.strip().rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def probe_cluster_id(host: str, port: int, timeout: float = 1.0) -> str | None:
    """Send one Kafka Metadata (v2) request and return the cluster id it reports.

    The id proves *our* process answered: Tansu does not reliably exit when its port
    is taken (the bind panics in a worker thread), so an answer on the port may come
    from another broker. Plain sockets rather than aiokafka, so this works from sync
    code and from inside a running event loop alike.
    """
    client_id = b"idgraph-probe"
    # api_key=3 (Metadata), api_version=2, correlation_id=1, then a null topic array (= all).
    body = struct.pack(">hhih", 3, 2, 1, len(client_id)) + client_id + struct.pack(">i", -1)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        return _cluster_id_from_metadata_v2(_recv_exactly(sock, size))


def _cluster_id_from_metadata_v2(data: bytes) -> str | None:
    correlation_id, brokers = struct.unpack_from(">ii", data, 0)
    if correlation_id != 1 or brokers < 1:
        return None
    pos = 8
    for _ in range(brokers):
        pos += 4  # node_id
        pos = _skip_string(data, pos)  # host
        pos += 4  # port
        pos = _skip_string(data, pos)  # rack
    (length,) = struct.unpack_from(">h", data, pos)
    return None if length < 0 else data[pos + 2 : pos + 2 + length].decode()


def _skip_string(data: bytes, pos: int) -> int:
    length = int(struct.unpack_from(">h", data, pos)[0])
    return pos + 2 + max(length, 0)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection mid-response")
        data += chunk
    return data


async def ensure_topics(
    bootstrap: str,
    partitions: Mapping[str, int],
    *,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    replication: int = 1,
    timeout_ms: int = 10_000,
) -> dict[str, int]:
    """Create each topic with its partition count and config; return existing topics whose count differs.

    Explicit creation matters on Tansu because auto-creation picks 4 partitions. A topic an
    operator created with another count is theirs to keep (ordering is per key either way),
    so it is reported rather than refused.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        configs = configs or {}
        wanted = [NewTopic(name, count, replication, topic_configs=dict(configs.get(name, {})))
                  for name, count in partitions.items()]
        response = await admin.create_topics(wanted, timeout_ms=timeout_ms)
        existing = _created_or_existing(response.topic_errors)
        return await _partition_mismatches(admin, existing, partitions) if existing else {}
    finally:
        await admin.close()


async def delete_topics_with_prefix(bootstrap: str, prefix: str, timeout_ms: int = 10_000) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (a sandbox's namespace, its Faust
    internal topics included) and return their names. An empty prefix is refused: it is live."""
    if not prefix:
        raise ValueError("refusing to delete topics by an empty prefix: that would be every live topic")
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        doomed = sorted(name for name in await admin.list_topics() if name.startswith(prefix))
        if doomed:
            await admin.delete_topics(doomed, timeout_ms=timeout_ms)
        return doomed
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, exclude_prefix: str) -> dict[str, int]:
    """Every topic's end offset (summed over its partitions), except the broker's internal
    topics and those starting with ``exclude_prefix``: what a sandbox must leave as it found.
    Right on Apache Kafka; the embedded broker's ListOffsets answers are not (devstack/broker.py)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if not t.startswith(("__", exclude_prefix))]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # loads every topic's partitions
        partitions = [TopicPartition(n, p) for n in names for p in consumer.partitions_for_topic(n) or ()]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {name: sum(end for tp, end in ends.items() if tp.topic == name) for name in names}


def _created_or_existing(topic_errors: list[Any]) -> list[str]:
    """Names that already existed; any other per-topic error is fatal."""
    existing = []
    for topic, code, *message in topic_errors:
        if code == _TOPIC_ALREADY_EXISTS:
            existing.append(topic)
        elif code != 0:
            raise TopicError(f"cannot create topic {topic!r}: error {code} {message}")
    return existing


async def _partition_mismatches(
    admin: AIOKafkaAdminClient, topics: list[str], partitions: Mapping[str, int]
) -> dict[str, int]:
    found = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(topics)}
    return {name: have for name, have in found.items() if have != partitions[name]}
