"""Routing each delta to every subscription entitled to it, through that subscription's sink.

A delta counts as handled — its offset may be committed — once every sink has finished
with it: Kafka sinks when the broker acknowledged the projected record, webhook sinks when
the POST succeeded or the delivery was dead-lettered. Webhooks deliver from their own
queues, so the router never waits on one endpoint to serve the next delta.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from typing import Any, Awaitable, Callable, Protocol

import httpx
import orjson
import structlog

from identity.deltas import DeltaTimes, IdentityDelta
from identity.notices import TouchpointNotice
from identity.topics import LIVE, TopicNames
from sinks.deadletter import DeadLetter, write_dead_letters
from sinks.publisher import Publisher, resend
from sinks.subscriptions import KafkaSink, Subscription, project, project_notice
from sinks.webhook import Delivery, WebhookSender

log = structlog.get_logger("idgraph.router")
#: (topic, key, value) of a record sent to a Kafka sink; no value is a tombstone.
Record = tuple[str, bytes, bytes | None]


def _tombstones(topic: str, record: IdentityDelta | TouchpointNotice) -> list[Record]:
    """After an erasure, a tombstone per erased profile id: the topic is compacted
    (streams/topics.py), so the broker then drops the customer's earlier records there."""
    if not isinstance(record, IdentityDelta) or record.kind != "profile.erased":
        return []
    return [(topic, p.encode(), None) for p in (record.profile_id, *record.merged_from)]
OnDone = Callable[[], Awaitable[Any]]


class DeliveryMetrics(Protocol):
    """What the router counts; the worker's metrics (streams/metrics.py) provide it."""

    def observe_routed(self, subscription: str, sink_type: str) -> None: ...

    def observe_delivered(self, subscription: str, sink_type: str, times: DeltaTimes) -> None: ...

    def observe_delivery_failure(self, subscription: str, sink_type: str) -> None: ...

    def observe_delivery_retry(self, subscription: str, sink_type: str, count: int = 1) -> None: ...


class Unmetered:
    """Counts nothing: for a router whose deliveries nobody measures."""

    def observe_routed(self, subscription: str, sink_type: str) -> None:
        pass

    def observe_delivered(self, subscription: str, sink_type: str, times: DeltaTimes) -> None:
        pass

    def observe_delivery_failure(self, subscription: str, sink_type: str) -> None:
        pass

    def observe_delivery_retry(self, subscription: str, sink_type: str, count: int = 1) -> None:
        pass


def _project(record: IdentityDelta | TouchpointNotice, subscription: Subscription) -> dict[str, Any] | None:
    return project(record, subscription) if isinstance(record, IdentityDelta) else project_notice(record, subscription)


@dataclass(slots=True)
class _Pending:
    """Counts a delta's outstanding sinks and fires ``on_done`` when the last one finishes."""

    remaining: int
    on_done: OnDone

    async def finish(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            await self.on_done()


class Router:
    def __init__(self, publish: Publisher, http: httpx.AsyncClient, metrics: DeliveryMetrics | None = None, *,
                 retry_delay_s: float = 0.5, topics: TopicNames = LIVE) -> None:
        self._publish = publish
        self._topics = topics
        self._retry_delay_s = retry_delay_s
        self._http = http
        self._metrics: DeliveryMetrics = metrics or Unmetered()
        self._subscriptions: dict[str, Subscription] = {}
        self._webhooks: dict[str, WebhookSender] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions.values())

    @property
    def webhooks(self) -> dict[str, WebhookSender]:
        return dict(self._webhooks)

    async def update(self, subscriptions: list[Subscription]) -> None:
        """Adopt a new set of subscriptions; webhook senders start and stop to match."""
        wanted = {s.name: s for s in subscriptions}
        for name, sender in list(self._webhooks.items()):
            if wanted.get(name) != sender.subscription:
                unfinished = await sender.stop()
                del self._webhooks[name]
                await self._abandon(sender.subscription, unfinished)
        for name, subscription in wanted.items():
            if not isinstance(subscription.sink, KafkaSink) and name not in self._webhooks:
                sender = WebhookSender(subscription, self._http, self._dead_letter_delivery)
                sender.start()
                self._webhooks[name] = sender
        if set(wanted) != set(self._subscriptions):
            log.info("subscriptions updated", subscriptions=sorted(wanted))
        self._subscriptions = wanted

    async def _abandon(self, subscription: Subscription, jobs: list[Delivery]) -> None:
        """Deliveries a changed or removed subscription left queued go to the dead letters (projected
        under the old terms, they must not reach a new endpoint) and count as finished, so the
        batches waiting on them commit."""
        reason = "subscription changed or removed before delivery"
        for job in jobs:
            await self._dead_letter_delivery(subscription, job.body, reason, 0)
            await job.on_done(reason)

    async def stop(self) -> None:
        # Deliveries unfinished at shutdown stay unacknowledged: their events are redelivered.
        for sender in self._webhooks.values():
            await sender.stop()
        self._webhooks.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def route(self, record: IdentityDelta | TouchpointNotice, on_done: OnDone) -> list[str]:
        """Hand a delta or a touchpoint notice to each entitled subscription's sink; returns their names."""
        targets = [(s, body) for s in self._subscriptions.values() if (body := _project(record, s)) is not None]
        if not targets:
            await on_done()
            return []
        pending = _Pending(len(targets), on_done)
        key = record.profile_id.encode()
        for subscription, body in targets:
            name = subscription.name
            if isinstance(subscription.sink, KafkaSink):
                self._metrics.observe_routed(name, "kafka")
                topic = self._topics.scoped(subscription.topic)
                records = [(topic, key, orjson.dumps(body)), *_tombstones(topic, record)]
                acks = [await self._publish(*r) for r in records]
                self._spawn(self._after_ack(acks, records, pending, name, record.times))
            else:
                self._metrics.observe_routed(name, "webhook")
                await self._webhooks[name].submit(
                    body, partial(self._webhook_done, subscription=name, times=record.times, pending=pending))
        return [s.name for s, _ in targets]

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_ack(self, acks: list[Awaitable[Any]], records: list[Record], pending: _Pending,
                         subscription: str, times: DeltaTimes) -> None:
        """Count the delivery once the broker has the records, sending them all again while any fails.

        The delta's offset stays unacknowledged meanwhile, so a stop before success redelivers it.
        """
        while True:
            failed = [r for r in await asyncio.gather(*acks, return_exceptions=True) if isinstance(r, BaseException)]
            if not failed:
                break
            log.warning("scenario publish failed, retrying", subscription=subscription, error=repr(failed[0]))
            self._metrics.observe_delivery_retry(subscription, "kafka")
            await asyncio.sleep(self._retry_delay_s)
            acks = [await resend(self._publish, *r) for r in records]
        self._metrics.observe_delivered(subscription, "kafka", times)
        await pending.finish()

    async def _webhook_done(self, reason: str | None, subscription: str, times: DeltaTimes, pending: _Pending) -> None:
        if reason is None:
            self._metrics.observe_delivered(subscription, "webhook", times)
        else:
            self._metrics.observe_delivery_failure(subscription, "webhook")
        await pending.finish()

    async def _dead_letter_delivery(self, subscription: Subscription, body: dict[str, Any], reason: str, attempts: int) -> None:
        source = {"subscription": subscription.name, "sink": "webhook", "attempts": attempts, "delta_id": body.get("delta_id")}
        letter = DeadLetter.build(orjson.dumps(body), "delivery_failed", [{"path": "", "reason": reason}], source)
        log.warning("delivery dead-lettered", subscription=subscription.name, delta_id=body.get("delta_id"), reason=reason)
        await write_dead_letters(self._publish, self._topics.dead_letter, [letter])
