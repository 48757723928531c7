"""``idgraph up``: a broker, the profile API and a worker on this machine, each its own process.

The broker is Apache Kafka by default (KRaft, from the jars ``make jars`` fetches), with its
data under ``IDGRAPH_DATA_DIR/kafka`` beside the store, so topics survive a restart of ``up``
as the store does. ``--broker embedded`` runs the in-memory Tansu broker instead: quick, but
every topic is lost when it stops, which suits tests and nothing else.

``up`` only supervises. The worker is a child process of its own that ``up`` restarts when it
crashes; the broker and the API are not the worker's children, so a worker crash takes
neither down and loses no record. Stopping ``up`` (Ctrl-C, SIGTERM) stops the worker first,
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

import orjson

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
Echo = Callable[[str], None]


@dataclass(frozen=True)
class UpOptions:
    broker: BrokerKind = "kafka"
    kafka_port: int = KAFKA_PORT
    api_port: int = 8080
    loglevel: str = "warning"


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and why."""


def listeners(settings: Settings, options: UpOptions) -> list[Listener]:
    """The ports ``up`` will listen on, for :func:`require_free` to check before starting anything."""
    needed = [Listener("worker metrics", "0.0.0.0", settings.metrics_port, "IDGRAPH_METRICS_PORT"),
              Listener("profile API", "127.0.0.1", options.api_port, "--api-port or IDGRAPH_API_PORT")]
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


def start_api(settings: Settings, port: int, echo: Echo) -> subprocess.Popen[bytes] | None:
    """The profile API beside the worker, with a fresh dev admin token printed once it listens."""
    if port == 0:
        return None
    from api.auth import issue

    token, entry = issue(["admin"], "local-admin")
    # The console's live counters read the worker's metrics endpoint (api/pages/counters.py).
    metrics_url = os.environ.get("IDGRAPH_WORKER_METRICS_URL") or f"http://127.0.0.1:{settings.metrics_port}/metrics"
    env = {**os.environ, "IDGRAPH_STORE": settings.store, "IDGRAPH_WORKER_METRICS_URL": metrics_url,
           "IDGRAPH_API_TOKENS": orjson.dumps([entry.model_dump(exclude_none=True)]).decode()}
    api = subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--port", str(port)], env=env,
                           start_new_session=True, preexec_fn=die_with_parent())
    deadline = time.monotonic() + API_READY_S
    while not _listening(port):
        if api.poll() is not None or time.monotonic() > deadline:
            terminate(api, 5)
            raise StackError(f"the profile API did not start on port {port} (exit code {api.poll()}); see its output above")
        time.sleep(0.1)
    echo(f"Profile API on http://127.0.0.1:{port}/v1 (OpenAPI at /v1/openapi.json); dev admin token:")
    echo(f"  {token}")
    return api


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def supervise_worker(settings: Settings, loglevel: str, echo: Echo) -> int:
    """Run ``idgraph worker`` until it exits cleanly or refuses its configuration; restart it on a crash."""
    env = {**os.environ, "IDGRAPH_BROKER": str(settings.broker), "IDGRAPH_DATA_DIR": str(settings.data_dir)}
    backoff = 0.5  # the first quick crash waits 1 s
    while True:
        started = time.monotonic()
        worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--loglevel", loglevel], env=env,
                                  start_new_session=True, preexec_fn=die_with_parent())
        echo(f"Worker (pid {worker.pid}): store {settings.store}; Ctrl-C stops everything.")
        try:
            code = worker.wait()
        finally:
            terminate(worker, 20)  # on Ctrl-C or SIGTERM: the worker stops first, before what it talks to
        if code in (0, 2):  # a clean stop, or a configuration it refused: restarting would not help
            return code
        backoff = 1.0 if time.monotonic() - started > STEADY_S else min(backoff * 2, MAX_BACKOFF_S)
        echo(f"Worker exited with code {code}; the broker and API keep running; restarting it in {backoff:.0f} s.")
        time.sleep(backoff)


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
    try:
        if settings.broker is None:
            broker = start_broker(settings, options, echo)
            settings = settings.with_broker(broker.url)
            echo(f"  export IDGRAPH_BROKER={broker.url}")
            echo("  idgraph send events.jsonl")
        api = start_api(settings, options.api_port, echo)
        return supervise_worker(settings, options.loglevel, echo)
    except KeyboardInterrupt:
        return 0
    finally:
        terminate(api, 10)
        if broker is not None:
            broker.stop()
