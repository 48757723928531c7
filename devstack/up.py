"""``idgraph up``: a broker, the profile API and a worker on this machine, each its own process.

The broker is Apache Kafka by default (KRaft, from the jars ``make jars`` fetches), with its
data under ``IDGRAPH_DATA_DIR/kafka`` beside the store, so topics survive a restart of ``up``
as the store does. ``--broker embedded`` runs the in-memory Tansu broker instead: quick, but
every topic is lost when it stops, which suits tests and nothing else.

``up`` only supervises. The workers (``--workers N``, one consumer group on one store; the
touchpoint partitions are split between them) and the API are child processes of their own that ``up``
restarts when they exit (the API with the same dev token); neither is the other's child, nor
the broker's, so a crash of one takes nothing else down and loses no record. Stopping ``up`` (Ctrl-C, SIGTERM) stops the workers first,
then the API, then the broker. Every port is checked before anything starts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Callable, Literal

from devstack.broker import EmbeddedBroker, die_with_parent, terminate
from devstack.jvm import ApacheKafka
from streams.ports import Listener, require_free
from streams.settings import Settings

BrokerKind = Literal["kafka", "embedded"]
#: Kafka's own default port: clients and tools reach the local stack as they reach any Kafka.
KAFKA_PORT = 9092
#: A worker that crashes again within this long waits twice as long before its next start.
STEADY_S = 60.0
MAX_BACKOFF_S = 30.0
API_READY_S = 30.0
#: How often ``up`` looks whether the worker or the API has exited.
SUPERVISE_INTERVAL_S = 0.2
Echo = Callable[[str], None]


@dataclass(frozen=True)
class UpOptions:
    broker: BrokerKind = "kafka"
    kafka_port: int = KAFKA_PORT
    api_port: int = 8080
    loglevel: str = "warning"
    #: Worker processes in the consumer group; more than IDGRAPH_PARTITIONS leaves some idle.
    workers: int = 1


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and why."""


def listeners(settings: Settings, options: UpOptions) -> list[Listener]:
    """The ports ``up`` will listen on, for :func:`require_free` to check before starting anything."""
    needed = [Listener(f"worker {n} metrics", "0.0.0.0", metrics_port(settings, n), "IDGRAPH_METRICS_PORT")
              for n in range(1, options.workers + 1)]
    needed.append(Listener("profile API", "127.0.0.1", options.api_port, "--api-port or IDGRAPH_API_PORT"))
    if settings.broker is None and options.broker == "kafka":
        needed.append(Listener("Apache Kafka", "127.0.0.1", options.kafka_port, "--kafka-port"))
    return needed


def start_broker(settings: Settings, options: UpOptions, echo: Echo) -> EmbeddedBroker | ApacheKafka:
    if options.broker == "embedded":
        embedded = EmbeddedBroker(log_path=settings.data_dir / "broker.log").start()
        echo(f"Embedded broker on {embedded.url} (in memory: every topic is lost when it stops). "
             "Produce touchpoints there, e.g.")
        return embedded
    kafka_dir = settings.data_dir / "kafka"
    started = time.monotonic()
    kafka = ApacheKafka(kafka_dir, port=options.kafka_port, startup_timeout=180).start()
    echo(f"Apache Kafka on {kafka.url} (topics kept in {kafka_dir}; started in {time.monotonic() - started:.1f} s). "
         "Produce touchpoints there, e.g.")
    return kafka


class Child:
    """A process ``up`` keeps running: started again when it exits, after a wait that doubles with
    each crash coming soon after the last start (a crash loop must not spin)."""

    def __init__(self, name: str, launch: Callable[[], subprocess.Popen[bytes]], others: str) -> None:
        self.name, self.others = name, others
        self._launch = launch
        self._backoff = 0.5  # the first quick crash waits 1 s
        self._due: float | None = None  # when a crashed child starts again
        self.started = time.monotonic()
        self.proc: subprocess.Popen[bytes] | None = launch()

    def exited(self) -> int | None:
        """The exit code of a process that ended since the last call; the child is then due to start again."""
        if self.proc is None or (code := self.proc.poll()) is None:
            return None
        self.proc = None
        self._backoff = 1.0 if time.monotonic() - self.started > STEADY_S else min(self._backoff * 2, MAX_BACKOFF_S)
        self._due = time.monotonic() + self._backoff
        return code

    def crashed(self, code: int, echo: Echo) -> None:
        echo(f"{self.name} exited with code {code}; {self.others} keep running; restarting it in {self._backoff:.0f} s.")

    def restart_when_due(self) -> None:
        if self.proc is None and self._due is not None and time.monotonic() >= self._due:
            self._due, self.started = None, time.monotonic()
            try:
                self.proc = self._launch()
            except StackError:  # did not come up: counted as a crash, tried again after a longer wait
                self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
                self._due = time.monotonic() + self._backoff

    def stop(self, timeout_s: float) -> None:
        terminate(self.proc, timeout_s)


def api_launcher(settings: Settings, port: int, echo: Echo) -> Callable[[], subprocess.Popen[bytes]]:
    """Starts the profile API beside the worker and waits until it listens; a fresh dev admin token,
    printed once, stays the same across restarts."""
    from api.auth import ENV_TOKENS, inline_tokens_with, issue

    token, entry = issue(["admin"], "local-admin")
    # The console's live counters read the worker's metrics endpoint (api/pages/counters.py).
    metrics_url = os.environ.get("IDGRAPH_WORKER_METRICS_URL") or f"http://127.0.0.1:{settings.metrics_port}/metrics"
    # The dev token joins the tokens the user set inline: theirs keep working under up.
    env = {**os.environ, "IDGRAPH_STORE": settings.store, "IDGRAPH_WORKER_METRICS_URL": metrics_url,
           ENV_TOKENS: inline_tokens_with(entry, os.environ.get(ENV_TOKENS))}
    first = True

    def launch() -> subprocess.Popen[bytes]:
        nonlocal first
        api = subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--port", str(port)], env=env,
                               start_new_session=True, preexec_fn=die_with_parent())
        deadline = time.monotonic() + API_READY_S
        while not _listening(port):
            if api.poll() is not None or time.monotonic() > deadline:
                terminate(api, 5)
                raise StackError(f"the profile API did not start on port {port} (exit code {api.poll()}); see its output above")
            time.sleep(0.1)
        if first:
            echo(f"Profile API (pid {api.pid}) on http://127.0.0.1:{port}/v1 (OpenAPI at /v1/openapi.json); dev admin token:")
            echo(f"  {token}")
        else:
            echo(f"Profile API (pid {api.pid}) on http://127.0.0.1:{port}/v1 again, with the same token.")
        first = False
        return api
    return launch


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def metrics_port(settings: Settings, n: int) -> int:
    """Worker ``n``'s metrics port: the next ones after IDGRAPH_METRICS_PORT (0, none, for all)."""
    return settings.metrics_port + n - 1 if settings.metrics_port else 0


def worker_label(n: int, workers: int) -> str:
    """How ``up`` names worker ``n`` of ``workers`` in what it prints."""
    return "Worker" if workers == 1 else f"Worker {n}"


def worker_launcher(settings: Settings, loglevel: str, echo: Echo, n: int = 1,
                    workers: int = 1) -> Callable[[], subprocess.Popen[bytes]]:
    label = worker_label(n, workers)
    env = {**os.environ, "IDGRAPH_BROKER": str(settings.broker), "IDGRAPH_DATA_DIR": str(settings.data_dir),
           "IDGRAPH_METRICS_PORT": str(metrics_port(settings, n))}

    def launch() -> subprocess.Popen[bytes]:
        worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--loglevel", loglevel], env=env,
                                  start_new_session=True, preexec_fn=die_with_parent())
        echo(f"{label} (pid {worker.pid}): store {settings.store}; Ctrl-C stops everything.")
        return worker
    return launch


def supervise(workers: list[Child], api: Child | None, echo: Echo) -> int:
    """Watch the workers and the API, starting each again when it exits, until a worker stops
    cleanly or refuses its configuration (restarting would not help; the API has no such exit)."""
    children = [*workers, *([api] if api is not None else [])]
    while True:
        for child in children:
            code = child.exited()
            if code is None:
                child.restart_when_due()
                continue
            if child in workers and code in (0, 2):
                return code
            child.crashed(code, echo)
        time.sleep(SUPERVISE_INTERVAL_S)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_up(settings: Settings, options: UpOptions, echo: Echo) -> int:
    """Check the ports, start the broker, the API and the worker; stop them in reverse order."""
    require_free(listeners(settings, options))
    # A service manager's stop is a Ctrl-C. SIGINT is set explicitly too: a process started in the
    # background by a shell without job control inherits it ignored, and Python then leaves it so.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    broker = api = None
    workers: list[Child] = []
    # Prepared before anything starts, so tokens set wrongly inline stop up with nothing running.
    launch_api = api_launcher(settings, options.api_port, echo) if options.api_port else None
    try:
        if settings.broker is None:
            broker = start_broker(settings, options, echo)
            settings = settings.with_broker(broker.url)
            echo(f"  export IDGRAPH_BROKER={broker.url}")
            echo("  idgraph send events.jsonl")
        if launch_api is not None:
            api = Child("Profile API", launch_api, "the broker and worker")
        others = "the broker, the API and the other workers" if options.workers > 1 else "the broker and API"
        workers = [Child(worker_label(n, options.workers),
                         worker_launcher(settings, options.loglevel, echo, n, options.workers), others)
                   for n in range(1, options.workers + 1)]
        return supervise(workers, api, echo)
    except KeyboardInterrupt:
        return 0
    finally:  # the workers stop first, before what they talk to
        for worker in workers:
            worker.stop(20)
        if api is not None:
            api.stop(10)
        if broker is not None:
            broker.stop()
