"""A whole sandbox session, beside a live worker on Apache Kafka, writes nothing live.

Create (a snapshot of the live store), load own data, replay under candidate rules, diff,
simulate load through the sandbox's own worker, drop: afterwards the live store holds exactly
what it held, every live topic ends where it ended, and no topic of the sandbox remains.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from devstack.jvm import ApacheKafka
from devstack.stack import WorkerProcess
from streams.admin import end_offsets
from tests.streaming_support import produce, read_topic, touchpoint
from tests.sandbox_support import CSV, MAP, strict_rules

SERVICE = {"name": "service", "fields": ["traits.*"]}
#: Kafka refuses sessions shorter than its group.min.session.timeout.ms (6 s).
KAFKA_ENV = {"IDGRAPH_SESSION_TIMEOUT_S": "6"}
SANDBOX = "sandbox.trial."


@pytest.fixture
async def kafka(tmp_path) -> AsyncIterator[ApacheKafka]:
    with ApacheKafka(tmp_path / "kafka") as running:
        yield running


def dump(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return list(connection.iterdump())


async def topic_names(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


class Cli:
    def __init__(self, tmp: Path, live: WorkerProcess, broker_url: str) -> None:
        self.tmp = tmp
        self.env = {"IDGRAPH_DATA_DIR": str(tmp / "data"), "IDGRAPH_STORE": f"sqlite:///{live.store_path}",
                    "IDGRAPH_BROKER": broker_url, **KAFKA_ENV}

    def __call__(self, *args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "cli.main", *args], env={**os.environ, **self.env},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr

    def strict_rules(self) -> Path:
        return strict_rules(self.tmp)


async def test_a_full_sandbox_session_leaves_the_live_store_and_every_live_topic_as_they_were(kafka, tmp_path):
    live = await WorkerProcess(kafka.url, tmp_path / "live", [SERVICE], KAFKA_ENV).start().ready()
    try:
        await produce(kafka.bootstrap, [touchpoint(f"live-{i}", {"crm_id": f"L-{i}"}, {"name": "Wang Fang"}) for i in range(3)])
        await read_topic(kafka.bootstrap, "scenario.service", expect=3)
        store, offsets = dump(live.store_path), await end_offsets(kafka.bootstrap, SANDBOX)
        idgraph = Cli(tmp_path, live, kafka.url)
        idgraph("sandbox", "create", "trial")
        (tmp_path / "own.csv").write_text(CSV)
        idgraph("sandbox", "load", "trial", str(tmp_path / "own.csv"), *MAP)
        idgraph("sandbox", "replay", "trial", "--rules", str(idgraph.strict_rules()))
        idgraph("sandbox", "diff", "trial")
        idgraph("sandbox", "simulate", "trial", "--events", "200", "--rate", "100", "--every", "2")
        during = await topic_names(kafka.bootstrap)
        idgraph("sandbox", "drop", "trial")
        assert dump(live.store_path) == store
        assert await end_offsets(kafka.bootstrap, SANDBOX) == offsets
    finally:
        live.stop()
    assert SANDBOX + "touchpoints" in during
    assert [t for t in await topic_names(kafka.bootstrap) if t.startswith(SANDBOX)] == []
