"""The worker's pipelining, without a broker: relays that finish after the broker acknowledges, and backlog batches."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx
import orjson

from faust.types import TP

from graph.sqlite import SQLiteStore
from identity.deltas import IdentityDelta
from identity.events import parse_event
from identity.features import prepare
from service.models import LiveRules, promote, register, start_with_registry
from service.resolver import Resolver
from sinks.router import Router
from sinks.subscriptions import parse_subscriptions
from streams.batching import BacklogBatches
from streams.pipeline import BatchResult, Incoming, ResolutionPipeline


class Broker:
    """A publisher whose acknowledgements the test releases by hand."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.acks: list[tuple[str, asyncio.Future[None]]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers: Any = None) -> "asyncio.Future[None]":
        self.sent.append((topic, value))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append((topic, ack))
        return ack

    def acknowledge(self, error: Exception | None = None, topic: str | None = None) -> None:
        for sent_to, ack in self.acks:
            if not ack.done() and topic in (None, sent_to):
                ack.set_exception(error) if error else ack.set_result(None)

    def delta_ids(self) -> list[str]:
        return [orjson.loads(value)["delta_id"] for topic, value in self.sent if topic == "identity.deltas" and value]


def incoming(event_id: str, phone: str, offset: int) -> Incoming:
    value = orjson.dumps({"event_id": event_id, "scenario": "sales.crm", "type": "lead_created",
                          "occurred_at": "2026-03-01T09:00:00+08:00", "identifiers": {"phone": phone}, "traits": {}})
    return Incoming(value, "touchpoints", 0, offset)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_batch_is_durable_only_after_the_broker_acknowledged_and_the_outbox_marked(store, rules):
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096)
    durable: list[BatchResult] = []

    async def on_durable(result: BatchResult) -> None:
        durable.append(result)
        assert await store.unpublished_deltas() == [], "offsets are acknowledged only after the outbox marks"

    relay = await pipeline.begin([incoming("a1", "13800138000", 0)], on_durable)
    await settle()
    assert broker.delta_ids() and not durable, "the deltas left, but the batch waits for the broker"
    assert len(await store.unpublished_deltas()) == len(broker.delta_ids())
    broker.acknowledge()
    assert (await relay).published and durable


async def test_the_next_batch_is_resolved_while_the_previous_one_waits_for_the_broker(store, rules):
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096)
    first = await pipeline.begin([incoming("b1", "13800138001", 0)])
    second = await pipeline.begin([incoming("b2", "13800138002", 1)])
    await settle()
    assert not first.done() and not second.done()
    assert await store.decision("b2") is not None
    broker.acknowledge()
    await asyncio.gather(first, second)


async def test_at_most_max_in_flight_batches_wait_for_the_broker(store, rules):
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096, max_in_flight=2)
    await pipeline.begin([incoming("c1", "13800138003", 0)])
    await pipeline.begin([incoming("c2", "13800138004", 1)])
    third = asyncio.ensure_future(pipeline.begin([incoming("c3", "13800138005", 2)]))
    await settle()
    assert not third.done() and await store.decision("c3") is None, "the third batch waits for a free slot"
    broker.acknowledge()
    relay = await asyncio.wait_for(third, 1)
    broker.acknowledge()
    await relay


async def test_a_duplicate_of_an_event_in_flight_sends_nothing_and_waits_for_the_first_relay(store, rules):
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096)
    first = await pipeline.begin([incoming("d1", "13800138006", 0)])
    sent = broker.delta_ids()
    again = await pipeline.begin([incoming("d1", "13800138006", 1)])
    await settle()
    assert broker.delta_ids() == sent, "a delta still on its way is not sent a second time"
    assert not again.done(), "the duplicate's offset must not be committed before the first relay's deltas are marked"
    broker.acknowledge()
    assert (await again).published == [] and (await first).published
    assert await store.unpublished_deltas() == []


async def test_a_failed_publish_is_sent_again_and_keeps_its_delta_ids(store, rules):
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096, retry_delay_s=0.01)
    relay = await pipeline.begin([incoming("e1", "13800138007", 0)])
    first_ids, first_sent = broker.delta_ids(), len(broker.sent)
    broker.acknowledge(RuntimeError("broker gone"))
    while len(broker.sent) == first_sent:
        await asyncio.sleep(0.005)
    broker.acknowledge()
    await relay
    assert broker.delta_ids() == first_ids * 2
    assert await store.unpublished_deltas() == []


# --- BacklogBatches -------------------------------------------------------------------------------

@dataclass
class Message:
    tp: TP
    offset: int


@dataclass
class Event:
    message: Message


@dataclass
class Queue:
    items: int = 0

    def empty(self) -> bool:
        return self.items == 0


@dataclass
class Channel:
    queue: Queue = field(default_factory=Queue)


class FakeStream:
    """Hands out events one per loop turn, as a Faust stream does; the test decides when they arrive."""

    def __init__(self) -> None:
        self.channel = Channel()
        self.inbox: asyncio.Queue[Event] = asyncio.Queue()

    async def events(self) -> AsyncIterator[Event]:
        while True:
            yield await self.inbox.get()


TOUCHPOINTS = TP("touchpoints", 0)


def event(offset: int) -> Event:
    return Event(Message(TOUCHPOINTS, offset))


async def next_batch(batches: AsyncIterator[list[Event]], timeout: float = 1.0) -> list[int]:
    return [e.message.offset for e in await asyncio.wait_for(batches.__anext__(), timeout)]


async def test_an_idle_worker_gets_a_lone_event_at_once():
    stream = FakeStream()
    batches = BacklogBatches(stream, max_events=10, max_wait_s=5.0, highwater=lambda tp: 1).__aiter__()
    stream.inbox.put_nowait(event(0))
    assert await next_batch(batches, timeout=0.5) == [0]
    await batches.aclose()


async def test_events_the_consumer_already_fetched_join_the_batch():
    stream = FakeStream()
    highwater = {"value": 3}
    batches = BacklogBatches(stream, max_events=10, max_wait_s=5.0, highwater=lambda tp: highwater["value"]).__aiter__()
    for offset in range(3):
        stream.inbox.put_nowait(event(offset))
    assert await next_batch(batches) == [0, 1, 2]
    await batches.aclose()


async def test_a_batch_never_exceeds_max_events_and_the_rest_follows():
    stream = FakeStream()
    batches = BacklogBatches(stream, max_events=2, max_wait_s=5.0, highwater=lambda tp: 5).__aiter__()
    for offset in range(5):
        stream.inbox.put_nowait(event(offset))
    assert [await next_batch(batches) for _ in range(3)] == [[0, 1], [2, 3], [4]]
    await batches.aclose()


async def test_records_announced_but_not_delivered_are_waited_for_only_max_wait():
    stream = FakeStream()
    batches = BacklogBatches(stream, max_events=10, max_wait_s=0.05, highwater=lambda tp: 100).__aiter__()
    stream.inbox.put_nowait(event(0))
    started = asyncio.get_running_loop().time()
    assert await next_batch(batches) == [0]
    assert 0.04 <= asyncio.get_running_loop().time() - started < 0.5
    await batches.aclose()


async def test_the_wait_for_announced_records_starts_when_the_caller_asks():
    """Events read while the caller works on its last batch do not use up the next batch's wait."""
    stream = FakeStream()
    batches = BacklogBatches(stream, max_events=10, max_wait_s=0.3, highwater=lambda tp: 100).__aiter__()
    stream.inbox.put_nowait(event(0))
    assert await next_batch(batches) == [0]
    stream.inbox.put_nowait(event(1))
    await asyncio.sleep(0.6)  # the caller works on batch [0], longer than max_wait
    asyncio.get_running_loop().call_later(0.03, stream.inbox.put_nowait, event(2))
    assert await next_batch(batches) == [1, 2]
    await batches.aclose()


async def test_a_failing_stream_fails_the_batches():
    class Broken(FakeStream):
        async def events(self) -> AsyncIterator[Event]:
            yield event(0)
            raise RuntimeError("consumer crashed")

    batches = BacklogBatches(Broken(), max_events=10, max_wait_s=0.01, highwater=lambda tp: 1).__aiter__()
    assert await next_batch(batches) == [0]
    try:
        await next_batch(batches)
    except RuntimeError as exc:
        assert "consumer crashed" in str(exc)
    else:
        raise AssertionError("the stream's error must reach the agent")


async def _written_outside_the_stream(store, rules, phone: str) -> None:
    """What a profile API write leaves: a delta in the outbox that no batch will send."""
    await Resolver(store, rules).resolve([prepare(parse_event(incoming("api-1", phone, 0).value), rules)])


async def test_deltas_the_api_wrote_are_sent_by_the_pipeline_and_marked_once_acknowledged(store, rules):
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096)
    await _written_outside_the_stream(store, rules, "13800138011")
    relaying = asyncio.ensure_future(pipeline.relay_outbox())
    await settle()
    assert len(broker.delta_ids()) == 1 and not relaying.done()
    broker.acknowledge()
    assert await asyncio.wait_for(relaying, 1) == 1
    assert await store.unpublished_deltas() == []


async def test_the_outbox_relay_never_sends_a_delta_a_batch_is_still_sending(store, rules):
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096)
    batch = await pipeline.begin([incoming("b1", "13800138012", 0)])
    assert await pipeline.relay_outbox() == 0
    assert len(broker.delta_ids()) == 1, "sent by the batch alone"
    broker.acknowledge()
    await asyncio.wait_for(batch, 1)


async def test_another_workers_outbox_relay_leaves_a_batchs_deltas_to_the_worker_sending_them(store, rules):
    broker, others = Broker(), Broker()
    batch = await ResolutionPipeline(store, rules, broker, max_event_bytes=4096).begin([incoming("w1", "13800138014", 0)])
    async with SQLiteStore(store.path) as same_file:  # a second worker process's handle
        relaying = ResolutionPipeline(same_file, rules, others, max_event_bytes=4096).relay_outbox()
        assert await asyncio.wait_for(relaying, 1) == 0
    assert others.sent == [] and len(broker.delta_ids()) == 1
    broker.acknowledge()
    await asyncio.wait_for(batch, 1)


async def test_a_batch_meeting_a_delta_the_relay_is_sending_waits_for_that_relay(store, rules):
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096)
    await _written_outside_the_stream(store, rules, "13800138013")
    relaying = asyncio.ensure_future(pipeline.relay_outbox())
    await settle()
    again = await pipeline.begin([incoming("api-1", "13800138013", 1)])  # the same event arrives by the stream
    await settle()
    assert len(broker.delta_ids()) == 1, "the stream's redelivery does not send the relay's delta again"
    broker.acknowledge()
    await asyncio.wait_for(asyncio.gather(relaying, again), 1)


def _nested(levels: int) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    for _ in range(levels):
        inner = {"x": inner}
    return inner


async def _dead_letters_among_good_neighbours(store, rules, bad: Incoming) -> list[Any]:
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=256 * 1024)
    good = [incoming("n1", "13800138031", 0), incoming("n2", "13800138032", 2)]
    beginning = asyncio.ensure_future(pipeline.begin([good[0], bad, good[1]]))
    while not beginning.done():  # the dead letter is acknowledged before the batch is resolved
        broker.acknowledge()
        await asyncio.sleep(0.001)
    relay = beginning.result()
    broker.acknowledge()
    result = await asyncio.wait_for(relay, 1)
    assert sorted(o.event_id for o in result.outcomes) == ["n1", "n2"], "the bad record's neighbours are resolved"
    return result.rejected


async def test_a_record_with_a_null_value_is_dead_lettered_and_its_batch_goes_on(store, rules):
    (letter,) = await _dead_letters_among_good_neighbours(store, rules, Incoming(None, "touchpoints", 0, 1))
    assert letter.reason_class == "empty" and letter.source == {"topic": "touchpoints", "partition": 0, "offset": 1}


async def test_a_payload_nested_too_deep_is_dead_lettered_with_its_bytes_and_its_batch_goes_on(store, rules):
    body = orjson.loads(incoming("deep", "13800138033", 1).value) | {"payload": _nested(300)}
    bad = Incoming(json.dumps(body).encode(), "touchpoints", 0, 1)  # orjson refuses to write 300 levels
    (letter,) = await _dead_letters_among_good_neighbours(store, rules, bad)
    assert (letter.reason_class, letter.errors) == ("schema", [{"path": "payload", "reason": "nested more than 32 levels deep"}])
    assert letter.value == bad.value


async def test_a_profiles_older_unsent_delta_goes_out_before_its_newer_one(store, rules):
    """A crash left version 1 in the outbox; the customer's next event must not overtake it."""
    await Resolver(store, rules).resolve([prepare(parse_event(incoming("v1", "13800138041", 0).value), rules)])
    (left,) = await store.unpublished_deltas()
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096)
    later = orjson.loads(incoming("v2", "13800138041", 1).value) | {"traits": {"city": "上海"}}
    relay = await pipeline.begin([Incoming(orjson.dumps(later), "touchpoints", 0, 1)])
    broker.acknowledge()
    await asyncio.wait_for(relay, 1)
    sent = [orjson.loads(v) for t, v in broker.sent if t == "identity.deltas"]
    assert [(d["profile_id"], d["profile_version"]) for d in sent] == [(left.profile_id, 1), (left.profile_id, 2)]
    assert await store.unpublished_deltas() == []


class AnotherWorkerCommitsFirst(SQLiteStore):
    """A real store file whose outbox read-back lets another worker's batch commit just before it,
    as a second worker process racing on the same customer may."""

    meanwhile: Callable[[], Awaitable[Any]] | None = None

    async def unpublished_deltas(self, *args: Any, **kwargs: Any) -> list[IdentityDelta]:
        if self.meanwhile is not None:
            other_worker, self.meanwhile = self.meanwhile, None
            await other_worker()
        return await super().unpublished_deltas(*args, **kwargs)


async def test_another_workers_newer_delta_read_back_from_the_outbox_goes_out_after_this_batchs_older_one(
        tmp_path, rules):
    broker, others = Broker(), Broker()
    async with AnotherWorkerCommitsFirst(tmp_path / "graph.db") as store, SQLiteStore(store.path) as same_file:
        other = ResolutionPipeline(same_file, rules, others, max_event_bytes=4096)
        with_a_city = orjson.loads(incoming("w2", "13800138042", 0).value) | {"traits": {"city": "上海"}}
        relays: list[asyncio.Task[BatchResult]] = []

        async def other_worker_links_the_same_phone() -> None:
            relays.append(await other.begin([Incoming(orjson.dumps(with_a_city), "touchpoints", 1, 0)]))
        store.meanwhile = other_worker_links_the_same_phone
        relays.append(await ResolutionPipeline(store, rules, broker, max_event_bytes=4096).begin(
            [incoming("w1", "13800138042", 0)]))
        sent = [orjson.loads(v) for t, v in broker.sent if t == "identity.deltas"]
        assert [d["profile_version"] for d in sent] == [1, 2], "version 2 was committed first by the other worker"
        broker.acknowledge()
        others.acknowledge()
        await asyncio.wait_for(asyncio.gather(*relays), 1)


async def test_closing_waits_for_the_batch_being_resolved_so_the_store_can_close_after(store, rules):
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096)
    # The null record's dead letter waits for the broker: the batch is begun but not yet resolved.
    batch = [Incoming(None, "touchpoints", 0, 0), incoming("s1", "13800138051", 1)]
    beginning = asyncio.ensure_future(pipeline.begin(batch))
    await settle()
    closing = asyncio.ensure_future(pipeline.close(timeout_s=1))
    await settle()
    assert not closing.done() and await store.decision("s1") is None, "the batch is still to be resolved"
    while not beginning.done():
        broker.acknowledge()
        await asyncio.sleep(0.001)
    broker.acknowledge()
    await asyncio.wait_for(closing, 1)
    relay = beginning.result()
    assert relay.done() and [o.event_id for o in (await relay).outcomes] == ["s1"]
    assert await store.unpublished_deltas() == [], "its deltas were acknowledged and marked before close returned"


async def test_a_batch_begun_after_closing_never_touches_the_store(store, rules):
    pipeline = ResolutionPipeline(store, rules, Broker(), max_event_bytes=4096)
    await pipeline.close(timeout_s=1)
    late = asyncio.ensure_future(pipeline.begin([incoming("s3", "13800138053", 0)]))
    await settle()
    assert not late.done() and await store.decision("s3") is None
    late.cancel()


async def _resolved_twice(store, rules, again: Incoming) -> BatchResult:
    broker = Broker()
    pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096)
    first = await pipeline.begin([incoming("r1", "13800138061", 0)])
    broker.acknowledge()
    await first
    beginning = asyncio.ensure_future(pipeline.begin([again, incoming("r2", "13800138062", 2)]))
    while not beginning.done():
        broker.acknowledge()
        await asyncio.sleep(0.001)
    broker.acknowledge()
    return await asyncio.wait_for(beginning.result(), 1)


async def test_an_event_id_reused_for_other_content_is_dead_lettered_and_the_first_event_stands(store, rules):
    result = await _resolved_twice(store, rules, incoming("r1", "13800138069", 1))
    (letter,) = result.rejected
    assert (letter.reason_class, letter.errors[0]["path"]) == ("id_conflict", "event_id")
    assert letter.value == incoming("r1", "13800138069", 1).value, "the refused event's bytes, as they arrived"
    assert [o.event_id for o in result.outcomes] == ["r2"]
    first = await store.profile((await store.decision("r1"))["profile_id"])
    assert first.identifiers["phone"] == ["+8613800138061"], "the first event's profile, untouched"


async def test_a_redelivery_encoded_differently_is_still_a_redelivery(store, rules):
    same = orjson.loads(incoming("r1", "13800138061", 0).value)
    reordered = json.dumps(dict(reversed(list(same.items()))), indent=2).encode()
    result = await _resolved_twice(store, rules, Incoming(reordered, "touchpoints", 0, 1))
    assert result.rejected == [] and [(o.event_id, o.duplicate) for o in result.outcomes] == [("r1", True), ("r2", False)]


async def test_a_batchs_deltas_reach_the_subscription_topic_from_the_resolving_pipeline(store, rules):
    broker = Broker()
    async with httpx.AsyncClient() as http:
        router = Router(broker, http)
        await router.update(parse_subscriptions([{"name": "crm", "fields": ["identifiers.*"]}], "test"))
        pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096, route=router.route)
        relay = await pipeline.begin([incoming("r1", "13800138010", 0)])
        broker.acknowledge()
        await relay
        await router.stop()
    routed = [orjson.loads(value) for topic, value in broker.sent if topic == "scenario.crm"]
    assert [d["delta_id"] for d in routed] == broker.delta_ids()


async def test_a_batch_is_durable_only_once_its_subscriptions_sink_acknowledged(store, rules):
    broker = Broker()
    async with httpx.AsyncClient() as http:
        router = Router(broker, http)
        await router.update(parse_subscriptions([{"name": "crm", "fields": ["identifiers.*"]}], "test"))
        pipeline = ResolutionPipeline(store, rules, broker, max_event_bytes=4096, route=router.route,
                                      notice_wanted=lambda event_type: False)
        relay = await pipeline.begin([incoming("r2", "13800138011", 0)])
        broker.acknowledge(topic="identity.deltas")
        await settle()
        assert not relay.done() and await store.unpublished_deltas(), "the sink has not acknowledged yet"
        broker.acknowledge(topic="scenario.crm")
        assert (await relay).published and await store.unpublished_deltas() == []
        await router.stop()


async def test_a_pipeline_following_the_live_model_resolves_the_next_batch_under_a_promoted_one(store, rules):
    await start_with_registry(store, rules, explicit=False)
    broker = Broker()
    pipeline = ResolutionPipeline(store, LiveRules(store, rules), broker, max_event_bytes=4096)
    first = await pipeline.begin([incoming("e1", "13800000001", 0)])
    broker.acknowledge()
    await first
    stricter = rules.model_copy(update=dict(version="stricter", thresholds={"link": 0.99, "review": 0.5}))
    await register(store, stricter, "ana")
    await promote(store, stricter.model_version, by="ana", reason="")
    second = await pipeline.begin([incoming("e2", "13800000002", 1)])
    broker.acknowledge()
    outcomes = [o for result in (await first, await second) for o in result.outcomes]
    assert [o.decision["rule_version"] for o in outcomes] == [rules.model_version, stricter.model_version]
    assert pipeline.rules == stricter
