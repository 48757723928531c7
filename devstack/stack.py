"""A running stack on one machine: a broker (embedded, Apache Kafka, or one given) and worker processes.

The demo, the benchmarks and the end-to-end tests all need the same thing — a real broker
and real ``idgraph worker`` processes that can be killed and restarted — so it lives here once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Literal

import yaml

from devstack.broker import EmbeddedBroker
from devstack.jvm import ApacheKafka


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 60, interval_s: float = 0.1,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class WorkerProcess:
    """``idgraph worker`` as a child process, with its own directory, subscriptions and log.

    Its SQLite store is ``graph.db`` in that directory unless ``store`` names a file another
    worker of the same consumer group writes too.
    """

    broker_url: str
    workdir: Path
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    store: Path | None = None

    @property
    def store_path(self) -> Path:
        return self.store or self.workdir / "graph.db"

    @property
    def log_path(self) -> Path:
        return self.workdir / "worker.log"

    def env(self) -> dict[str, str]:
        subscriptions = self.workdir / "subscriptions.yaml"
        subscriptions.write_text(yaml.safe_dump({"subscriptions": self.subscriptions}, allow_unicode=True))
        return {
            **os.environ,
            "IDGRAPH_BROKER": self.broker_url,
            "IDGRAPH_STORE": f"sqlite:///{self.store_path}",
            "IDGRAPH_SUBSCRIPTIONS": str(subscriptions),
            "IDGRAPH_SESSION_TIMEOUT_S": "2",
            "IDGRAPH_PARTITIONS": "2",
            "IDGRAPH_DATA_DIR": str(self.workdir),
            # Each worker its own metrics port: several run side by side in tests and benchmarks.
            "IDGRAPH_METRICS_PORT": "0",
            **self.extra_env,
        }

    def start(self) -> "WorkerProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--loglevel", "info"],
                                         env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        return self

    async def ready(self, timeout_s: float = 60) -> "WorkerProcess":
        """Wait for the worker's 'worker ready' log line: its topics exist from then on."""
        def started() -> bool:
            self.assert_alive()
            return self.log_path.exists() and b"worker ready" in self.log_path.read_bytes()

        await wait_until(started, timeout_s=timeout_s, what=f"worker ready in {self.log_path}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "worker not started"
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final commit — a crash."""
        os.kill(self.pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait()

    def stop(self, timeout_s: float = 20) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def assert_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else "(no log)"
            raise RuntimeError(f"worker exited (code {self.proc.poll() if self.proc else None}); log tail:\n{tail}")


class LocalStack:
    """A broker and ``workers`` worker processes, started together and stopped in the right order (workers first).

    Without ``broker_url`` it starts its own broker: the in-memory embedded one, or Apache
    Kafka with its data under ``workdir/kafka`` (``broker="kafka"``, what the demo runs).
    The workers form one consumer group and share one store (``workdir/graph.db`` unless
    ``worker_env`` names another); each beyond the first has its directory ``workdir/worker-N``.
    """

    def __init__(self, workdir: Path, subscriptions: list[dict[str, Any]], *, broker_url: str | None = None,
                 broker: Literal["embedded", "kafka"] = "embedded", worker_env: dict[str, str] | None = None,
                 workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"a stack needs at least one worker, not {workers}")
        self._external = broker_url
        self._kind = broker
        self._broker: EmbeddedBroker | ApacheKafka | None = None
        self.workdir = workdir
        self.subscriptions = subscriptions
        # Kafka refuses sessions shorter than its group.min.session.timeout.ms (6 s); the worker's
        # 2 s suits the embedded broker only.
        self.worker_env = {**({"IDGRAPH_SESSION_TIMEOUT_S": "6"} if broker == "kafka" else {}), **(worker_env or {})}
        self.worker_count = workers
        self.workers: list[WorkerProcess] = []

    @property
    def worker(self) -> WorkerProcess | None:
        """The first worker: the one whose directory holds the store."""
        return self.workers[0] if self.workers else None

    def new_worker(self, n: int) -> WorkerProcess:
        """Worker ``n`` of the group (not started): number 1 in ``workdir``, the others beside it on its store."""
        first = n == 1
        workdir = self.workdir if first else self.workdir / f"worker-{n}"
        store = None if first else self.workdir / "graph.db"
        env = dict(self.worker_env) if first else {"IDGRAPH_STORE": f"sqlite:///{store}", **self.worker_env}
        return WorkerProcess(self.broker_url, workdir, self.subscriptions, env, store=store)

    @property
    def broker_url(self) -> str:
        if self._external:
            return self._external
        assert self._broker is not None, "stack not started"
        return self._broker.url

    @property
    def bootstrap(self) -> str:
        return self.broker_url.removeprefix("kafka://")

    async def __aenter__(self) -> "LocalStack":
        if not self._external:
            self._broker = (ApacheKafka(self.workdir / "kafka") if self._kind == "kafka"
                            else EmbeddedBroker(log_path=self.workdir / "broker.log")).start()
        try:
            # The first creates the store file and its schema alone; the others then start together.
            self.workers.append(await self.new_worker(1).start().ready())
            self.workers += [self.new_worker(n).start() for n in range(2, self.worker_count + 1)]
            for worker in self.workers[1:]:
                await worker.ready()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for worker in self.workers:
            worker.stop()
        if self._broker is not None:
            self._broker.stop()
