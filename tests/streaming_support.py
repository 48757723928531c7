"""Real components for streaming tests: the embedded broker, worker processes, topic readers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

REPO = Path(__file__).resolve().parents[1]


@dataclass
class WorkerProcess:
    """``idgraph worker`` as a child process, with its own store file and log."""

    broker_url: str
    workdir: Path
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def store_path(self) -> Path:
        return self.workdir / "graph.db"

    @property
    def log_path(self) -> Path:
        return self.workdir / "worker.log"

    def env(self) -> dict[str, str]:
        subs = self.workdir / "subscriptions.yaml"
        subs.write_text(yaml.safe_dump({"subscriptions": self.subscriptions}))
        return {
            **os.environ,
            "IDGRAPH_BROKER": self.broker_url,
            "IDGRAPH_STORE": f"sqlite:///{self.store_path}",
            "IDGRAPH_SUBSCRIPTIONS": str(subs),
            "IDGRAPH_SESSION_TIMEOUT_S": "2",
            "IDGRAPH_PARTITIONS": "2",
            **self.extra_env,
        }

    def start(self) -> "WorkerProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
                                     cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        return self

    async def ready(self, timeout_s: float = 60) -> "WorkerProcess":
        """Wait for the worker's 'worker ready' log line: its topics exist from then on."""
        await wait_until(lambda: self.log_path.exists() and b"worker ready" in self.log_path.read_bytes(),
                         timeout_s=timeout_s, what=f"worker ready in {self.log_path}")
        self.assert_alive()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final commit — a crash."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()[-3000:]


async def produce(bootstrap: str, events: Iterable[bytes | dict[str, Any]], topic: str = "touchpoints",
                  rate_per_s: float | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        for i, event in enumerate(events):
            value = event if isinstance(event, bytes) else orjson.dumps(event)
            await producer.send_and_wait(topic, value)
            if rate_per_s:
                await asyncio.sleep(1 / rate_per_s)
    finally:
        await producer.stop()


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

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
                records += [Record(m.topic, m.key, m.value, list(m.headers or [])) for m in messages]
                last_new = time.monotonic()
            if expect is not None and len(records) >= expect:
                # A moment longer, so that an unexpected extra record would be seen too.
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    records += [Record(m.topic, m.key, m.value, list(m.headers or [])) for m in messages]
                return records
            if expect is None and time.monotonic() - last_new > settle_s:
                return records
        return records
    finally:
        await consumer.stop()


async def wait_until(predicate, timeout_s: float = 60, interval_s: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
