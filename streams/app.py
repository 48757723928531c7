"""The worker: one Faust app whose agent resolves touchpoints and routes what changed.

The resolving agent routes each delta and notice to its subscriptions itself, right after
the store commit (streams/pipeline.py); ``identity.deltas`` and ``identity.touchpoints`` are
published for consumers outside idgraph, not read back.

Topics:
  ``touchpoints``             input events, any key (platforms may key by customer hint)
  ``identity.deltas``         every identity change, keyed by profile id (per-profile order), for outside consumers
  ``identity.touchpoints``    every resolved touchpoint, keyed by profile id, for outside consumers
  ``scenario.<name>``         each Kafka-sink subscription's projected deltas and notices
  ``idgraph.subscriptions``   subscription declarations from scenario processes
  ``idgraph.dead-letter``     refused events and failed deliveries, original bytes + reason headers

Each name carries the worker's topic namespace (``IDGRAPH_TOPIC_NAMESPACE``, identity/topics.py),
empty for the live worker; so does its consumer group.

The graph store is the durable state (no Faust tables): Tansu, the embedded broker, keeps
topics in memory only, and the store already makes every effect idempotent.
"""

from __future__ import annotations

from typing import Any, Awaitable

import faust
import httpx
import orjson
import structlog
from faust.serializers import codecs

from graph.factory import store_from_url
from graph.store import GraphStore
from identity.policy import load_policy
from identity.rules import Rules, load_rules
from service.blocking import start_with_blocking_index
from service.models import LiveRules, start_with_registry
from sinks.deadletter import DeadLetter, write_dead_letters
from sinks.router import Router
from sinks.subscriptions import Subscription, SubscriptionError, load_subscriptions, parse_subscriptions
from streams import topics
from streams.admin import ensure_topics
from streams.batching import BacklogBatches
from streams.collector import tune_collector
from streams.metrics import WorkerMetrics, install_metrics
from streams.pipeline import Incoming, OnDurable, ResolutionPipeline
from streams.results import BatchResult
from streams.scenario import Scenario, load_scenarios, register
from streams.settings import Settings
from streams.transport import LowLatencyTransport

SUBSCRIPTION_REFRESH_S = 1.0
#: How often the worker looks for deltas written outside its batches (by the profile API).
RELAY_INTERVAL_S = 0.5
#: A batch's deltas (~1 KB each) go out in one sweep; a full per-partition producer batch would
#: make ``send`` wait for the broker in the middle of it (aiokafka's default is 16 KB).
PRODUCER_BATCH_BYTES = 256 * 1024
#: How long a clean stop waits for deltas already sent to be acknowledged and marked published.
SHUTDOWN_DRAIN_S = 10.0
log = structlog.get_logger("idgraph.worker")


class OrjsonCodec(codecs.Codec):
    """JSON via orjson: several times faster than the standard library on the hot path."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


codecs.register("orjson", OrjsonCodec())


def faust_options(settings: Settings) -> dict[str, Any]:
    """Faust settings every idgraph app shares (the worker and scenario processes)."""
    session = settings.session_timeout_s
    return dict(
        broker=settings.broker,
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session,
        broker_rebalance_timeout=session,
        broker_heartbeat_interval=max(0.2, session / 6),
        broker_request_timeout=max(40.0, session + 10),
        broker_commit_interval=0.5,
        producer_linger=0.0,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        stream_wait_empty=False,
        worker_redirect_stdouts=False,
        value_serializer="orjson",
    )


class IdgraphApp(faust.App):
    """Faust with the low-latency transport and the idgraph components it wires together."""

    store: GraphStore
    pipeline: ResolutionPipeline
    sink_router: Router

    def __init__(self, settings: Settings, rules: Rules | None = None, scenarios: list[Scenario] | None = None) -> None:
        self.settings = settings
        #: The rules configured (IDGRAPH_RULES, else bundled); at start, the registry's live model
        #: replaces them, and the pipeline follows it from then on (service/models.py).
        self._configured_rules = rules or load_rules(settings.rules)
        self._rules_explicit = rules is not None or settings.rules is not None
        self.policy = load_policy(settings.policy)
        self.scenarios = scenarios or []
        self.fetch_wait_ms = settings.fetch_wait_ms
        self.metrics = WorkerMetrics()
        self._metrics_server: Any = None
        self._http: httpx.AsyncClient | None = None
        self._topics_ready: set[str] = set()
        self._notice_types: frozenset[str] = frozenset()
        (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
        super().__init__(settings.group_id, **faust_options(settings))

    def _new_transport(self) -> LowLatencyTransport:
        return LowLatencyTransport(self.conf.broker_consumer, self)

    async def on_start(self) -> None:
        await super().on_start()
        self.store = store_from_url(self.settings.store)
        await self.store.open()
        rules = await start_with_registry(self.store, self._configured_rules, explicit=self._rules_explicit)
        await start_with_blocking_index(self.store, rules)
        declared = load_subscriptions(self.settings.subscriptions) if self.settings.subscriptions else []
        for subscription in [*declared, *(s.subscription() for s in self.scenarios)]:
            await self.store.put_subscription(subscription.name, subscription.model_dump(mode="json"))
        self._http = httpx.AsyncClient()
        self.sink_router = Router(self.publish, self._http, self.metrics, topics=self.settings.topics)
        self.pipeline = ResolutionPipeline(self.store, LiveRules(self.store, rules), self.publish, policy=self.policy,
                                           max_hops=self.settings.max_hops, metrics=self.metrics,
                                           max_event_bytes=self.settings.max_event_bytes,
                                           notice_wanted=self.notice_wanted, route=self.sink_router.route,
                                           topics=self.settings.topics)
        self.pipeline.warm_up()
        await self.refresh_subscriptions()
        self._metrics_server = await install_metrics(self, self.metrics, self.settings.metrics_port)

    async def on_started(self) -> None:
        await super().on_started()
        tune_collector()
        log.info("worker ready", app_id=self.settings.group_id, store=self.store.kind, broker=self.settings.broker)

    async def on_stop(self) -> None:
        # Each part may be missing when the start failed half way; stop what exists.
        if (pipeline := getattr(self, "pipeline", None)) is not None:
            await pipeline.close(SHUTDOWN_DRAIN_S)  # before the store closes under a batch
        if (router := getattr(self, "sink_router", None)) is not None:
            await router.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self._http is not None:
            await self._http.aclose()
        if (store := getattr(self, "store", None)) is not None:
            await store.close()
        await super().on_stop()

    async def publish(self, topic: str, key: bytes | None, value: bytes | None,
                      headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Any]:
        """Enqueue raw bytes in order; the returned future resolves on the broker's acknowledgement."""
        return await self.producer.send(topic, key, value, partition=None, timestamp=None, headers=headers)

    def notice_wanted(self, event_type: str) -> bool:
        """Only touchpoint types some subscription asked for are published as notices: the rest would
        cost a publish, a consume and a validation per event for nobody."""
        return event_type in self._notice_types

    async def dead_letter(self, event: faust.EventT, reason_class: str, reason: str) -> None:
        source = {"topic": event.message.topic, "partition": event.message.partition, "offset": event.message.offset}
        letter = DeadLetter.build(event.value, reason_class, [{"path": "", "reason": reason}], source)
        self.metrics.observe_dead_letter(reason_class)
        await write_dead_letters(self.publish, self.settings.topics.dead_letter, [letter])

    async def refresh_subscriptions(self) -> list[Subscription]:
        """Adopt the registry's subscriptions, creating their topics before anything is routed there."""
        documents = await self.store.subscription_documents()
        subscriptions = parse_subscriptions(list(documents.values()), "store")
        plan = {t: n for t, n in topic_plan(self.settings, subscriptions).items() if t not in self._topics_ready}
        if plan:
            configs = topic_configs(self.settings, subscriptions)
            mismatched = await ensure_topics(self.settings.bootstrap_servers, plan, configs=configs,
                                             replication=self.settings.replication)
            for topic, have in mismatched.items():
                log.warning("topic exists with another partition count", topic=topic, partitions=have, configured=plan[topic])
            self._topics_ready.update(plan)
        await self.sink_router.update(subscriptions)
        self._notice_types = frozenset(t for s in subscriptions for t in s.event_types)
        return subscriptions


def create_app(settings: Settings, rules: Rules | None = None) -> IdgraphApp:
    scenarios = load_scenarios(settings.scenarios) if settings.scenarios else []
    app = IdgraphApp(settings, rules, scenarios)
    names = settings.topics
    touchpoints = app.topic(names.touchpoints, value_serializer="raw", key_serializer="raw")
    declarations = app.topic(names.subscriptions, value_serializer="raw", key_serializer="raw")

    @app.agent(touchpoints, name="idgraph.resolve")
    async def resolve(stream: faust.StreamT) -> None:
        manual = _manual_acks(stream)
        async for events in _batches(app, manual):
            batch = [Incoming(e.value, e.message.topic, e.message.partition, e.message.offset) for e in events]
            await app.pipeline.begin(batch, on_durable=_acknowledge(manual, events))

    @app.agent(declarations, name="idgraph.subscriptions")
    async def declare(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await _declare_one(app, event)

    @app.timer(SUBSCRIPTION_REFRESH_S)
    async def refresh() -> None:
        await app.refresh_subscriptions()

    @app.timer(RELAY_INTERVAL_S)
    async def relay_outbox() -> None:
        # Deltas written outside the stream (the profile API's operations) leave from here.
        await app.pipeline.relay_outbox()

    for scenario in scenarios:
        register(app, scenario, app.publish, names)
    return app


def _manual_acks(stream: faust.StreamT) -> faust.StreamT:
    """The agent's stream with automatic acks off: each event is acked once its effects are durable."""
    if not isinstance(stream, faust.Stream):
        raise TypeError(f"expected a Faust stream, got {type(stream).__name__}")
    return stream.noack()


def _batches(app: IdgraphApp, stream: faust.StreamT) -> BacklogBatches:
    settings = app.settings
    return BacklogBatches(stream, max_events=settings.batch_max, max_wait_s=settings.batch_wait_ms / 1000,
                          highwater=app.consumer.highwater)


def _acknowledge(stream: faust.StreamT, events: list[faust.EventT]) -> OnDurable:
    """Acknowledge a batch's offsets; the pipeline calls it once the batch's effects are durable."""
    async def acknowledge(_: BatchResult) -> None:
        for event in events:
            await stream.ack(event)
    return acknowledge


async def _declare_one(app: IdgraphApp, event: faust.EventT) -> None:
    """Store a scenario process's subscription declaration; a bad one is dead-lettered with its reason."""
    try:
        (subscription,) = parse_subscriptions([orjson.loads(event.value)], event.message.topic)
    except (SubscriptionError, orjson.JSONDecodeError, ValueError) as exc:
        await app.dead_letter(event, "schema", str(exc))
        return
    await app.store.put_subscription(subscription.name, subscription.model_dump(mode="json"))
    await app.refresh_subscriptions()


def topic_plan(settings: Settings, subscriptions: list[Subscription]) -> dict[str, int]:
    """Every topic the worker uses, with its partition count, for creating them up front."""
    names = settings.topics
    plan = {names.touchpoints: settings.partitions, names.deltas: settings.partitions,
            names.notices: settings.partitions, names.subscriptions: 1, names.dead_letter: 1}
    for subscription in subscriptions:
        plan[names.scoped(subscription.topic)] = settings.partitions
    return plan


def topic_configs(settings: Settings, subscriptions: list[Subscription]) -> dict[str, dict[str, str]]:
    """What each topic of :func:`topic_plan` is created with (streams/topics.py says why)."""
    raw = topics.raw_events(settings.raw_retention_hours)
    names = settings.topics
    configs = {names.touchpoints: raw, names.dead_letter: raw,
               names.deltas: topics.PROFILE_KEYED, names.notices: topics.PROFILE_KEYED}
    configs.update({names.scoped(s.topic): topics.PROFILE_KEYED for s in subscriptions})
    return configs


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the worker in the foreground until Ctrl-C (or SIGTERM); Faust handles the signals."""
    import mode.loop
    from faust import Worker

    from streams.logging import configure_logging

    mode.loop.use("uvloop")
    configure_logging(loglevel)
    Worker(create_app(settings), loglevel=loglevel).execute_from_commandline()


__all__ = ["IdgraphApp", "create_app", "faust_options", "run_worker", "topic_plan", "topic_configs"]
