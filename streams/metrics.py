"""Prometheus metrics of one worker process: defined once, observed in microseconds, served on /metrics.

Each worker process owns one :class:`WorkerMetrics` with its own ``CollectorRegistry`` (no
module-level globals, so tests and several apps in one process never share counters) and
serves it on its own port, ``IDGRAPH_METRICS_PORT`` (default 18100, 0 disables it).

Several workers: one endpoint per process, not prometheus-client's multiprocess mode. A
Faust worker is one process (its consumer thread lives inside it), so there is nothing to
aggregate across forks; Prometheus scrapes each worker and sums in PromQL. Workers on one
host need distinct ports; the compose stack runs two replicas, each on 18100 in its own
container, found by Prometheus through DNS service discovery (deploy/prometheus/prometheus.yml).

Label values are bounded: actions, kinds and reason classes are fixed sets (anything else
becomes ``other``); subscription names come from configuration; event ``scenario`` values
come from producers and are capped (see :class:`BoundedLabel`). Never an event, delta or
profile id: every distinct label value is a time series kept in memory here and in Prometheus.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.metadata
import re
import time
import tomllib
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from streams.results import BatchResult

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from graph.store import ProfileGrowth
    from identity.deltas import DeltaTimes, IdentityDelta

log = structlog.get_logger("idgraph.metrics")
# The client's ``*_created`` series would double the series of every counter and histogram for
# a start timestamp nothing reads (process_start_time_seconds says it); the switch is process-wide.
disable_created_metrics()

#: Seconds. Dense around the 200 ms propagation target (0.2 is a bound, so "share of deltas
#: within target" is an exact bucket ratio), coarse past a second, up to 5 minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5,
                   0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
ACTIONS = ("create", "link", "merge", "review", "refused")
PROTECTION_KINDS = ("limit", "generic_value", "conflicting_id")
EVENT_REASON_CLASSES = ("empty", "not_json", "schema", "oversized", "invalid_identifier", "hop_limit",
                        "id_conflict", "erased", "internal_error")
REASON_CLASSES = (*EVENT_REASON_CLASSES, "delivery_failed", "scenario_failed")
DELTA_KINDS = ("profile.created", "profile.updated", "profile.merged", "profile.split", "profile.erased")
SINK_TYPES = ("kafka", "webhook")
STORE_OPERATIONS = ("resolve", "mark_published")
OTHER = "other"
NONE = "none"

#: The event contract's scenario pattern (identity/events.py), the only values worth a series.
SCENARIO_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
TRAIT_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: Distinct producer scenarios kept as labels; a deployment has a handful, a runaway producer thousands.
MAX_SCENARIOS = 64
MAX_SUBSCRIPTIONS = 256
MAX_TRAITS = 64
#: Dead-lettered events are parsed again only to find their scenario; past this size, don't bother.
_SCENARIO_SNIFF_BYTES = 64 * 1024


class BoundedLabel:
    """Producer-controlled label values, folded so a bad producer cannot create unbounded series.

    A ``scenario`` arrives in every event, and the broker accepts whatever a producer sends,
    including events that fail validation. Left as is, a producer that puts a request id into
    ``scenario`` would add a time series (times every histogram bucket) per event, growing this
    process's memory and Prometheus's index until both fall over. So: values off the contract's
    pattern become ``invalid``, and once ``limit`` distinct values were seen, new ones become
    ``other``. First come, first kept: real scenarios appear early and stay.
    """

    __slots__ = ("_pattern", "_limit", "_seen")

    def __init__(self, pattern: re.Pattern[str], limit: int) -> None:
        self._pattern = pattern
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: object) -> str:
        # Type first: a refused event's scenario may be any JSON value, a dict or list unhashable.
        if not isinstance(value, str):
            return "invalid" if value is not None else "unknown"
        if value in self._seen:
            return value
        if not self._pattern.match(value):
            return "invalid"
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value

    def __len__(self) -> int:
        return len(self._seen)


class _Family:
    """A labelled metric with its children cached: ``labels()`` locks and builds a key on every call."""

    __slots__ = ("metric", "_children")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child

    def remove(self, *values: str) -> None:
        if self._children.pop(values, None) is not None:
            self.metric.remove(*values)

    def present(self) -> set[tuple[str, ...]]:
        return set(self._children)


def _known(value: object, allowed: tuple[str, ...]) -> str:
    return value if isinstance(value, str) and value in allowed else OTHER


@lru_cache(maxsize=1024)  # a batch's deltas share their ingested_at and emitted_at stamps
def _epoch(timestamp: str | None) -> float | None:
    """RFC 3339 to epoch seconds; None for a missing or unreadable stamp (metrics never raise)."""
    if not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return None


def _since(start: float | None, end: float) -> float | None:
    # Stamps may come from another host's clock: a negative span is skew, not time travel.
    return None if start is None else max(0.0, end - start)


class WorkerMetrics:
    """Every idgraph metric of one worker, and the typed calls the hot path makes.

    Instrumentation cost is a dict lookup and a lock-protected add per counter (about half a
    microsecond) and 1.5 µs per histogram observation; per event that is a few microseconds.
    """

    def __init__(self, *, max_scenarios: int = MAX_SCENARIOS, process_collectors: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process_collectors:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.scenario = BoundedLabel(SCENARIO_PATTERN, max_scenarios)
        self.subscription = BoundedLabel(SCENARIO_PATTERN, MAX_SUBSCRIPTIONS)
        self.trait = BoundedLabel(TRAIT_PATTERN, MAX_TRAITS)
        self._define_counters()
        self._define_histograms()
        self._define_gauges()
        self._initialise_known_series()

    def _counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> _Family:
        return _Family(Counter(name, doc, list(labels), registry=self.registry))

    def _histogram(self, name: str, doc: str, labels: Iterable[str] = ()) -> _Family:
        return _Family(Histogram(name, doc, list(labels), registry=self.registry, buckets=LATENCY_BUCKETS))

    def _define_counters(self) -> None:
        self.events_consumed = self._counter(
            "idgraph_events_consumed_total",
            "Touchpoint events taken from the broker, by producing scenario and outcome "
            "(resolved, duplicate, dead_lettered with its reason class).",
            ("scenario", "outcome", "reason_class"))
        self.decisions = self._counter("idgraph_decisions_total", "Resolution decisions of new events, by action.",
                                       ("action",))
        self.protections = self._counter(
            "idgraph_merge_protections_total",
            "Merge-protection rules that stopped or shaped a decision, by producing scenario and kind "
            "(a scenario suddenly hitting generic values is sending bad data).", ("scenario", "kind"))
        self.dead_letters = self._counter(
            "idgraph_dead_letters_total",
            "Records written to the dead-letter topic (refused events, failed deliveries), by reason class.",
            ("reason_class",))
        self.deltas_emitted = self._counter(
            "idgraph_deltas_emitted_total", "Identity deltas published to identity.deltas, by kind.", ("kind",))
        self.deltas_routed = self._counter(
            "idgraph_deltas_routed_total", "Projected deltas handed to a subscription's sink, by subscribing scenario.",
            ("scenario", "sink_type"))
        self.deltas_delivered = self._counter(
            "idgraph_deltas_delivered_total",
            "Projected deltas delivered (broker acknowledged, or webhook answered 2xx), by subscribing scenario.",
            ("scenario", "sink_type"))
        self.delivery_failures = self._counter(
            "idgraph_delivery_failures_total",
            "Deliveries given up after every attempt and dead-lettered, by subscribing scenario.",
            ("scenario", "sink_type"))
        self.delivery_retries = self._counter(
            "idgraph_delivery_retries_total", "Delivery attempts repeated after a failure, by subscribing scenario.",
            ("scenario", "sink_type"))
        self.sovereignty_conflicts = self._counter(
            "idgraph_sovereignty_conflicts_total",
            "Trait updates refused or arbitrated because another scenario owns the trait, by trait.", ("trait",))

    def _define_histograms(self) -> None:
        self.resolution = Histogram(
            "idgraph_event_resolution_seconds",
            "Time each event spent in resolution: from its batch being taken to the store commit it waited for.",
            registry=self.registry, buckets=LATENCY_BUCKETS)
        self.store_write = self._histogram(
            "idgraph_store_write_seconds",
            "Graph store write time per batch: the resolution transaction (reads, decisions, writes, commit) "
            "and the outbox update.", ("operation",))
        self.emit_latency = self._histogram(
            "idgraph_delta_emit_seconds",
            "From the cause event occurring (producer clock) or being ingested to its delta being emitted.",
            ("since",))
        self.delivery_latency = self._histogram(
            "idgraph_delivery_seconds", "From a delta being emitted to its delivery, by subscribing scenario.",
            ("scenario", "sink_type"))
        self.propagation = self._histogram(
            "idgraph_propagation_seconds",
            "End to end inside idgraph: from the cause event being ingested to the delta's delivery "
            "(the 200 ms target).", ("scenario", "sink_type"))

    def _define_gauges(self) -> None:
        self.consumer_lag = _Family(Gauge(
            "idgraph_consumer_lag_messages",
            "Records on an assigned partition not yet committed: fetch high watermark minus committed offset.",
            ["topic", "partition"], registry=self.registry))
        self.in_flight = Gauge("idgraph_in_flight_events", "Events taken from the broker and not yet acknowledged.",
                               registry=self.registry)
        self.open_reviews = Gauge("idgraph_open_reviews", "Review proposals waiting for a person (the review queue).",
                                  registry=self.registry)
        self.largest_profile = Gauge(
            "idgraph_largest_profile_records",
            "Records (touchpoints) of the largest live profile in the graph; chained links show as growth far past "
            "any real customer's count.", registry=self.registry)
        self.profiles_over_threshold = Gauge(
            "idgraph_profiles_over_growth_threshold",
            "Live profiles holding more records than IDGRAPH_PROFILE_GROWTH_THRESHOLD.", registry=self.registry)
        self.growth_threshold = Gauge(
            "idgraph_profile_growth_threshold_records", "The configured IDGRAPH_PROFILE_GROWTH_THRESHOLD.",
            registry=self.registry)
        self.webhook_backlog = _Family(Gauge(
            "idgraph_webhook_backlog", "Deltas queued for a webhook subscription, not yet delivered or given up.",
            ["scenario"], registry=self.registry))
        self.build_info = _Family(Gauge(
            "idgraph_build_info", "Always 1; labels say which version runs on which store and broker.",
            ["version", "store", "broker"], registry=self.registry))

    def _initialise_known_series(self) -> None:
        """Expose zeros for every fixed label value, so rate() starts at 0 instead of missing."""
        for action in ACTIONS:
            self.decisions(action)
        for reason in REASON_CLASSES:
            self.dead_letters(reason)
        for kind in DELTA_KINDS[:3]:
            self.deltas_emitted(kind)
        for operation in STORE_OPERATIONS:
            self.store_write(operation)
        for since in ("occurred", "ingested"):
            self.emit_latency(since)

    # --- the resolution path ---------------------------------------------------------------

    def observe_batch(self, result: BatchResult, *, resolve_seconds: float, store_seconds: float | None = None,
                      scenarios: Mapping[str, str] | None = None) -> None:
        """Count one handled batch: events by outcome, decisions, protections, dead letters, deltas.

        ``scenarios`` maps event id to the event's scenario (the pipeline has the parsed events);
        without it the scenario is taken from the outcome's deltas, else ``unknown``.
        """
        scenarios = scenarios or {}
        # Tallied first, so each labelled series is looked up and incremented once per batch.
        consumed: collections.Counter[tuple[str, str]] = collections.Counter()
        actions: collections.Counter[str] = collections.Counter()
        for outcome in result.outcomes:
            scenario = self.scenario(scenarios.get(outcome.event_id) or _delta_scenario(outcome.deltas))
            self.resolution.observe(resolve_seconds)
            if outcome.duplicate:
                consumed[scenario, "duplicate"] += 1
                continue
            consumed[scenario, "resolved"] += 1
            decision = outcome.decision
            actions[_known(decision.get("action"), ACTIONS)] += 1
            for protection in decision.get("protections", ()):
                self.protections(scenario, _known(protection.get("kind"), PROTECTION_KINDS)).inc()
            for conflict in (decision.get("evidence", {}).get("sovereignty") or {}).get("conflicts", ()):
                self.inc_sovereignty_conflict(conflict["trait"])
        for (scenario, kind), n in consumed.items():
            self.events_consumed(scenario, kind, NONE).inc(n)
        for action, n in actions.items():
            self.decisions(action).inc(n)
        for letter in result.rejected:
            reason = _known(letter.reason_class, EVENT_REASON_CLASSES)
            self.events_consumed(self.scenario(_sniff_scenario(letter.value)), "dead_lettered", reason).inc()
            self.dead_letters(reason).inc()
        self.observe_emitted(result.published)
        if store_seconds is not None:
            self.store_write("resolve").observe(store_seconds)

    def observe_emitted(self, deltas: Iterable["IdentityDelta"]) -> None:
        """Deltas just published: count them, and how long after their cause they left."""
        for delta in deltas:
            self.deltas_emitted(_known(delta.kind, DELTA_KINDS)).inc()
            times = delta.times
            emitted = _epoch(times.emitted_at)
            if emitted is None:
                continue
            for since, stamp in (("occurred", times.occurred_at), ("ingested", times.ingested_at)):
                span = _since(_epoch(stamp), emitted)
                if span is not None:
                    self.emit_latency(since).observe(span)

    def observe_store_write(self, operation: str, seconds: float) -> None:
        self.store_write(_known(operation, STORE_OPERATIONS)).observe(seconds)

    def observe_dead_letter(self, reason_class: str) -> None:
        """A dead letter written outside a batch (a delivery the router gave up)."""
        self.dead_letters(_known(reason_class, REASON_CLASSES)).inc()

    def in_flight_events(self, count: int) -> "_InFlight":
        """``with metrics.in_flight_events(len(batch)):`` around handling a batch."""
        return _InFlight(self.in_flight, count)

    def set_in_flight(self, count: int) -> None:
        self.in_flight.set(count)

    # --- the routing path ------------------------------------------------------------------

    def observe_routed(self, subscription: str, sink_type: str) -> None:
        labels = (self.subscription(subscription), _known(sink_type, SINK_TYPES))
        self.deltas_routed(*labels).inc()
        # Touched at zero, so failure ratios exist from the first routed delta, not the first failure.
        self.deltas_delivered(*labels)
        self.delivery_failures(*labels)

    def observe_delivered(self, subscription: str, sink_type: str, times: "DeltaTimes") -> None:
        """One delivery finished well: count it and time it from emission and from ingestion."""
        labels = (self.subscription(subscription), _known(sink_type, SINK_TYPES))
        self.deltas_delivered(*labels).inc()
        now = time.time()
        emitted = _since(_epoch(times.emitted_at), now)
        if emitted is not None:
            self.delivery_latency(*labels).observe(emitted)
        ingested = _since(_epoch(times.ingested_at), now)
        if ingested is not None:
            self.propagation(*labels).observe(ingested)

    def observe_delivery_failure(self, subscription: str, sink_type: str) -> None:
        """A delivery given up: it goes to the dead-letter topic, so it counts there too."""
        self.delivery_failures(self.subscription(subscription), _known(sink_type, SINK_TYPES)).inc()
        self.dead_letters("delivery_failed").inc()

    def observe_delivery_retry(self, subscription: str, sink_type: str, count: int = 1) -> None:
        if count > 0:
            self.delivery_retries(self.subscription(subscription), _known(sink_type, SINK_TYPES)).inc(count)

    # --- sampled state ---------------------------------------------------------------------

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag(topic, str(partition)).set(lag)

    def forget_lag(self, topic: str, partition: int) -> None:
        """A partition revoked in a rebalance: its last lag would otherwise stay forever."""
        self.consumer_lag.remove(topic, str(partition))

    def set_review_queue(self, size: int) -> None:
        self.open_reviews.set(size)

    def set_profile_growth(self, growth: "ProfileGrowth") -> None:
        self.largest_profile.set(growth.largest[0][1] if growth.largest else 0)
        self.profiles_over_threshold.set(growth.over_threshold)
        self.growth_threshold.set(growth.threshold)

    def set_webhook_backlog(self, backlogs: Mapping[str, int]) -> None:
        """Backlog of every webhook subscription; subscriptions gone since the last call are dropped."""
        current = {(self.subscription(name),): size for name, size in backlogs.items()}
        for labels in self.webhook_backlog.present() - set(current):
            self.webhook_backlog.remove(*labels)
        for labels, size in current.items():
            self.webhook_backlog(*labels).set(size)

    def inc_sovereignty_conflict(self, trait: str) -> None:
        self.sovereignty_conflicts(self.trait(trait)).inc()

    def set_build_info(self, *, store: str, broker: str, version: str | None = None) -> None:
        for labels in self.build_info.present():
            self.build_info.remove(*labels)
        self.build_info(version or idgraph_version(), store, broker).set(1)

    def exposition(self) -> bytes:
        """The text exposition format, as /metrics serves it."""
        return generate_latest(self.registry)


class _InFlight:
    __slots__ = ("_gauge", "_count")

    def __init__(self, gauge: Gauge, count: int) -> None:
        self._gauge, self._count = gauge, count

    def __enter__(self) -> None:
        self._gauge.inc(self._count)

    def __exit__(self, *exc: object) -> None:
        self._gauge.dec(self._count)


def _delta_scenario(deltas: list["IdentityDelta"]) -> str | None:
    return deltas[0].cause.scenario if deltas else None


def _sniff_scenario(value: bytes) -> str | None:
    """The scenario of a refused event, if it is JSON at all: refusals are rare, so a re-parse is cheap."""
    if len(value) > _SCENARIO_SNIFF_BYTES:
        return None
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return event.get("scenario") if isinstance(event, dict) else None


def idgraph_version() -> str:
    """The installed distribution's version, else pyproject's (a source checkout run in place)."""
    try:
        return importlib.metadata.version("idgraph")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def detect_broker_kind(bootstrap_servers: str) -> str:
    """``embedded`` for the Tansu broker idgraph starts itself, ``kafka`` for any other, ``unknown`` if unreachable.

    The embedded broker is recognised by the cluster id it was started with (devstack/broker.py).
    """
    from streams.admin import probe_cluster_id

    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    try:
        cluster_id = probe_cluster_id(host, int(port))
    except Exception:  # noqa: BLE001 - a label is not worth failing a worker over
        return "unknown"
    return "embedded" if cluster_id and cluster_id.startswith("idgraph-") else "kafka"


def start_metrics_server(metrics: WorkerMetrics, port: int, addr: str = "0.0.0.0") -> "WSGIServer | None":
    """Serve ``metrics`` on http://addr:port/metrics from a daemon thread; port 0 means disabled.

    All interfaces by default: in a container Prometheus scrapes from another address.
    """
    if port == 0:
        return None
    server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
    return server


# --- consumer lag ---------------------------------------------------------------------------

class _Partition(Protocol):
    topic: str
    partition: int


class LagConsumer(Protocol):
    """The public part of Faust's consumer (``app.consumer``) that lag needs."""

    def assignment(self) -> set[Any]: ...

    def highwater(self, tp: Any) -> int | None: ...

    async def position(self, tp: Any) -> int | None: ...


class LagSampler:
    """Consumer lag per assigned partition: fetch high watermark minus committed offset.

    * High watermark: ``app.consumer.highwater(tp)``, Faust's public call for the value
      aiokafka keeps from the last fetch response. Not ``highwaters()`` / ``end_offsets()``,
      which ask ListOffsets, and Tansu answers that with the last batch's base offset + 1
      (devstack/broker.py). ``None`` until the partition's first fetch: no lag reported yet.
    * Committed offset: ``app.monitor.tp_committed_offsets``, where Faust's consumer reports
      every commit it makes (public Monitor state). Before this process's first commit on a
      partition, the fetch position (``app.consumer.position(tp)``) stands in: right after
      assignment it is the committed offset the group resumed from.

    Committed, not fetched: records fetched but not yet processed are still owed, and they
    are what a crash would replay. Faust's own leader-election topic is left out: nothing
    idgraph does is behind on it.
    """

    INTERNAL_TOPIC = re.compile(r"-__assignor-__leader$")

    def __init__(self, consumer: LagConsumer, committed: Mapping[Any, int], metrics: WorkerMetrics,
                 *, position_timeout_s: float = 1.0) -> None:
        self._consumer = consumer
        self._committed = committed
        self._metrics = metrics
        self._timeout = position_timeout_s
        self._reported: set[tuple[str, int]] = set()

    async def sample(self) -> dict[tuple[str, int], int]:
        """Measure and publish the lag of every assigned partition; returns what it set."""
        try:
            assigned = [tp for tp in self._consumer.assignment() if not self.INTERNAL_TOPIC.search(tp.topic)]
        except Exception:  # noqa: BLE001 - ConsumerNotStarted before the first rebalance
            assigned = []
        lags: dict[tuple[str, int], int] = {}
        for tp in assigned:
            lag = await self._lag(tp)
            if lag is not None:
                lags[(tp.topic, tp.partition)] = lag
                self._metrics.set_lag(tp.topic, tp.partition, lag)
        current = {(tp.topic, tp.partition) for tp in assigned}
        for topic, partition in self._reported - current:
            self._metrics.forget_lag(topic, partition)
        self._reported = set(lags) | (self._reported & current)
        return lags

    async def _lag(self, tp: _Partition) -> int | None:
        highwater = self._consumer.highwater(tp)
        if highwater is None:
            return None
        committed = self._committed.get(tp)
        if committed is None:
            try:
                committed = await asyncio.wait_for(self._consumer.position(tp), self._timeout)
            except Exception:  # noqa: BLE001 - position unknown during a reset: skip this round
                return None
            if committed is None:
                return None
        return max(0, highwater - committed)


# --- wiring into the worker -----------------------------------------------------------------

async def install_metrics(app: Any, metrics: WorkerMetrics, port: int, *, addr: str = "0.0.0.0",
                          sample_interval_s: float = 2.0, review_interval_s: float = 15.0) -> "WSGIServer | None":
    """Start /metrics and the samplers of an :class:`streams.app.IdgraphApp`; call once from ``on_start``.

    Needs ``app.store`` and ``app.sink_router`` to exist. Registers three Faust timers (started by
    Faust in ``on_started``): lag and webhook backlogs/retries every ``sample_interval_s``, the
    review queue and profile growth every ``review_interval_s`` (they are store queries). Returns
    the HTTP server, for ``server.shutdown()`` in ``on_stop``.
    """
    if getattr(app, "_idgraph_metrics_installed", False):  # on_start runs again on a restart
        return None
    app._idgraph_metrics_installed = True
    broker = await asyncio.to_thread(detect_broker_kind, app.settings.bootstrap_servers)
    metrics.set_build_info(store=app.store.kind, broker=broker)
    lag = LagSampler(app.consumer, app.monitor.tp_committed_offsets, metrics)
    retries = WebhookRetryMirror(metrics)

    @app.timer(sample_interval_s, name="idgraph.metrics.sample")
    async def sample() -> None:
        try:
            await lag.sample()
            webhooks = app.sink_router.webhooks
            metrics.set_webhook_backlog({name: sender.backlog for name, sender in webhooks.items()})
            retries.sample(webhooks)
        except Exception as exc:  # noqa: BLE001 - a metrics hiccup must never stop the worker
            log.warning("metrics sampling failed", error=repr(exc))

    @app.timer(review_interval_s, name="idgraph.metrics.reviews")
    async def reviews() -> None:
        try:
            metrics.set_review_queue(await app.store.open_review_count())
        except Exception as exc:  # noqa: BLE001
            log.warning("review queue sampling failed", error=repr(exc))

    @app.timer(review_interval_s, name="idgraph.metrics.growth")
    async def growth() -> None:
        try:
            metrics.set_profile_growth(await app.store.profile_growth(app.settings.profile_growth_threshold, limit=1))
        except Exception as exc:  # noqa: BLE001
            log.warning("profile growth sampling failed", error=repr(exc))

    server = start_metrics_server(metrics, port, addr)
    if server is not None:
        log.info("metrics served", port=server.server_port, path="/metrics")
    return server


class WebhookRetryMirror:
    """Turns each webhook sender's own ``retries`` count into the retries counter.

    The sender counts retries already; mirroring the count keeps the delivery loop free of
    metrics code. A sender replaced after a subscription change starts again from zero.
    """

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics
        self._seen: dict[int, tuple[Any, int]] = {}

    def sample(self, senders: Mapping[str, Any]) -> None:
        seen: dict[int, tuple[Any, int]] = {}
        for name, sender in senders.items():
            _, before = self._seen.get(id(sender), (sender, 0))
            self._metrics.observe_delivery_retry(name, "webhook", sender.retries - before)
            seen[id(sender)] = (sender, sender.retries)  # holding the sender keeps its id unique
        self._seen = seen


__all__ = ["WorkerMetrics", "BoundedLabel", "LagSampler", "WebhookRetryMirror", "start_metrics_server",
           "install_metrics", "detect_broker_kind", "idgraph_version", "LATENCY_BUCKETS"]
