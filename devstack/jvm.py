"""Apache Kafka and Neo4j Community as child processes, from the jars `make jars` fetches.

The test suite runs the production path for real with these: Kafka in KRaft combined mode
(one process is broker and controller) and Neo4j embedded behind Bolt, each on loopback
ports picked when it starts. Both die with the process that started them (like the embedded
broker), write their output to a log file whose tail a failed start shows, and stop on
:meth:`stop` or when the ``with`` block ends.

Kafka runs with the settings of its own single-node ``config/server.properties``; nothing is
relaxed to suit idgraph's clients.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Callable, Self

from devstack.broker import BrokerError, die_with_parent, free_port, kill_orphan, terminate

#: Where `make jars` puts each server's classpath (java/*/target/lib).
JAVA_DIR = Path(os.environ.get("IDGRAPH_JAVA_DIR", Path(__file__).resolve().parents[1] / "java"))
_LOG_TAIL_BYTES = 4000
#: Neo4j needs these opened on Java 17 (its page cache and Bolt use JDK internals).
_NEO4J_OPENS = ["java.base/java.nio=ALL-UNNAMED", "java.base/java.io=ALL-UNNAMED",
                "java.base/sun.nio.ch=ALL-UNNAMED", "java.base/java.lang=ALL-UNNAMED"]
_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
"""


def classpath(server: str) -> str:
    """The classpath of ``kafka`` or ``neo4j``, or a :class:`BrokerError` saying to run ``make jars``."""
    lib = JAVA_DIR / server / "target" / "lib"
    jars = sorted(lib.glob("*.jar"))
    own = sorted((JAVA_DIR / server / "target").glob("idgraph-*.jar"))
    if not jars:
        raise BrokerError(f"no {server} jars in {lib}: run `make jars` (Maven fetches them from Maven Central)")
    return os.pathsep.join(str(j) for j in [*own, *jars])


def cluster_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A new KRaft cluster id: a random UUID, URL-safe base64 without padding (22 characters).

    Never one starting with '-': the storage tool would read it as an option (``-t -Xa...``) and
    fail, about one format in 64. Kafka's own ``Uuid.randomUuid`` draws again for the same reason.
    """
    while True:
        drawn = base64.urlsafe_b64encode(uuid.UUID(bytes=random_bytes(16), version=4).bytes).rstrip(b"=").decode()
        if not drawn.startswith("-"):
            return drawn


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found:
        raise BrokerError("no `java` on PATH and JAVA_HOME unset: install a JDK 17 (make system-deps does)")
    return found


class _JavaServer:
    """A Java child process with a log file and a readiness check."""

    name = "server"

    def __init__(self, workdir: Path | None, startup_timeout: float) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"idgraph-{self.name}-"))
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0  # where this launch's output begins: a restart appends to the log

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _launch(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a+b")
        self._log_start = self._log.seek(0, os.SEEK_END)
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
                                      cwd=self.workdir, env={**os.environ, **(env or {})},
                                      start_new_session=True, preexec_fn=die_with_parent())
        weakref.finalize(self, kill_orphan, self._proc)

    def _wait_for(self, line: bytes) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise self._failure("exited during startup")
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                if line in log.read():
                    return
            time.sleep(0.1)
        raise self._failure(f"was not ready within {self.startup_timeout} s")

    def _failure(self, what: str) -> BrokerError:
        code = self._proc.poll() if self._proc else None
        data = self.log_path.read_bytes() if self.log_path.exists() else b""
        tail = data[-_LOG_TAIL_BYTES:].decode(errors="replace") or "(empty)"
        return BrokerError(f"{self.name} {what} (exit code {code}); log {self.log_path} ends:\n{tail}")

    def stop(self, timeout: float = 15.0) -> None:
        """Close its input (Neo4j stops on that), SIGTERM, then SIGKILL after ``timeout``; safe twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None and proc.poll() is None:
            proc.stdin.close()
        terminate(proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Self:
        raise NotImplementedError


class ApacheKafka(_JavaServer):
    """One Kafka node in KRaft combined mode; with a ``workdir`` its topics outlive a restart."""

    name = "kafka"

    def __init__(self, workdir: Path | None = None, *, port: int | None = None, startup_timeout: float = 60.0) -> None:
        super().__init__(workdir, startup_timeout)
        self.port = port or free_port()
        self.controller_port = free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def properties(self) -> str:
        # Kafka's own config/server.properties for one node, with loopback ports and our data dir.
        return "\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.workdir / 'data'}", "num.partitions=1",
            "offsets.topic.replication.factor=1", "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1", "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1", "group.initial.rebalance.delay.ms=0", "",
        ])  # fmt: skip

    def start(self) -> Self:
        """Format the data directory on first use, launch, and block until the server has started."""
        if self.running:
            return self
        cp = classpath("kafka")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config, log4j = self.workdir / "server.properties", self.workdir / "log4j2.properties"
        config.write_text(self.properties())
        log4j.write_text(_LOG4J2)
        base = [java(), "-Xmx512m", f"-Dlog4j2.configurationFile={log4j}", "-cp", cp]
        if not (self.workdir / "data" / "meta.properties").exists():
            formatted = subprocess.run([*base, "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(config)],
                                       capture_output=True, text=True, timeout=120)
            if formatted.returncode != 0:
                raise BrokerError(f"kafka storage format failed: {formatted.stderr[-_LOG_TAIL_BYTES:]}")
        self._launch([*base, "kafka.Kafka", str(config)])
        try:
            self._wait_for(b"Kafka Server started")
        except BaseException:
            self.stop()
            raise
        return self


class Neo4jServer(_JavaServer):
    """Neo4j Community with Bolt on loopback; user ``neo4j`` has ``password`` (random by default)."""

    name = "neo4j"
    user = "neo4j"

    def __init__(self, workdir: Path | None = None, *, port: int | None = None, password: str | None = None,
                 startup_timeout: float = 90.0) -> None:
        super().__init__(workdir, startup_timeout)
        self.port = port or free_port()
        self.password = password or secrets.token_urlsafe(16)

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    def start(self) -> Self:
        if self.running:
            return self
        opens = [f"--add-opens={o}" for o in _NEO4J_OPENS]
        self._launch([java(), "-Xmx1g", *opens, "-cp", classpath("neo4j"), "idgraph.neo4j.Server",
                      str(self.workdir / "home"), str(self.port)], env={"NEO4J_INITIAL_PASSWORD": self.password})
        try:
            self._wait_for(f"READY {self.uri}".encode())
        except BaseException:
            self.stop()
            raise
        return self
