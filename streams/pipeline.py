"""One batch of touchpoint messages: validate, resolve, publish deltas, dead-letter the rest.

A batch takes two steps. :meth:`ResolutionPipeline.begin` resolves it in one store
transaction and hands its deltas to the producer; the relay it starts finishes once the
broker acknowledged every delta and the outbox marked them published, and only then calls
``on_durable``, where the caller acknowledges the batch's offsets. By then every effect is
durable: outcomes in the store, deltas acknowledged by the broker and marked published, bad
input in the dead-letter topic. A crash anywhere before that redelivers the batch, and
event-id idempotency plus the outbox make the redelivery produce nothing twice.

Each delta and notice is also routed to the subscriptions entitled to it right here, after
the store commit, instead of by a consumer of ``identity.deltas`` (still published for
consumers outside idgraph): that saves a broker round trip and a decode per delta. The outbox
marks a delta published only once ``identity.deltas`` and every sink have it, so a crash
before then redelivers the batch, and the redelivery routes the delta again.

The broker's round trip would otherwise be idle time per batch, so the next batch may be
resolved while the previous one's deltas are still on their way (``max_in_flight`` batches
at most). Offsets are committed only up to the first unacknowledged one, so a later batch
finishing first never lets an earlier one's offsets be skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, NamedTuple, Protocol, Sequence

import orjson
import structlog

from graph.store import Outbox, Outcome, ResolutionStore, StoreUnavailable
from identity.deltas import IdentityDelta
from identity.events import EventRejected, FieldError, id_reused, parse_event
from identity.features import PreparedEvent, prepare
from identity.notices import TouchpointNotice, notice_for
from identity.policy import Policy
from identity.rules import Rules
from identity.topics import LIVE, TopicNames
from service.models import LiveRules
from service.resolver import Resolver
from sinks.deadletter import DeadLetter, write_dead_letters
from sinks.publisher import Publisher, resend
from streams.logging import log_batch
from streams.metrics import WorkerMetrics
from streams.results import BatchResult

log = structlog.get_logger("idgraph.pipeline")
#: At most this many outbox deltas read back per batch: far more than a crash leaves unsent.
_OUTBOX_READ_LIMIT = 10_000
#: How long a batch's deltas are this worker's alone to send (Outbox.orphaned_deltas). It sends
#: them right after the commit and marks them once the broker has them, well within this; before
#: claims, every other worker's outbox relay sent them too (20-28% of deltas twice with two
#: workers). Past it, whatever is left (a worker that cannot reach the broker, or died after its
#: events were acknowledged elsewhere) is any relay's to send.
DELTA_CLAIM_S = 30.0
#: Exercises every normaliser (CJK and Latin names, phone, email) in :meth:`ResolutionPipeline.warm_up`.
WARM_UP_EVENT = {"event_id": "idgraph-warm-up", "scenario": "idgraph.warm-up", "type": "warm_up",
                 "occurred_at": "2026-01-01T00:00:00+00:00",
                 "identifiers": {"phone": "13800138000", "email": "Warm.Up@Example.com"},
                 "traits": {"name": "張偉 Zhang Wei", "city": "上海"}}


@dataclass(frozen=True, slots=True)
class Incoming:
    value: bytes | None  # None: a record with a null value (a tombstone), which is no event
    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


OnDurable = Callable[[BatchResult], Awaitable[None]]


class _Sending(NamedTuple):
    """A delta handed to the producer and the relay that marks it published once the broker has it."""

    delta: IdentityDelta
    relay: "asyncio.Task[BatchResult]"


#: Hands a delta or notice to every subscription entitled to it; calls ``on_done`` once all
#: sinks have it (sinks/router.py ``Router.route``).
Route = Callable[[IdentityDelta | TouchpointNotice, Callable[[], Awaitable[Any]]], Awaitable[Any]]

#: (topic, key, value) of a record the relay may have to send again; no value is a tombstone.
Record = tuple[str, bytes | None, bytes | None]
#: The accepted records of a batch by event id, in batch order (one id may come more than once).
Messages = dict[str, list[Incoming]]


def _each_profile_in_version_order(deltas: list[IdentityDelta]) -> list[IdentityDelta]:
    """The deltas with each profile's sorted by version, in the places that profile's deltas held.

    What the outbox read-back finds is not always older than the batch's own deltas: another
    worker may commit a newer version of the same customer between this batch's commit and that
    read. Sent as read, it would overtake this batch's older delta on the profile's partition.
    """
    of_profile: dict[str, list[IdentityDelta]] = defaultdict(list)
    for delta in deltas:
        of_profile[delta.profile_id].append(delta)
    in_order = {p: iter(sorted(ds, key=lambda d: d.profile_version)) for p, ds in of_profile.items()}
    return [next(in_order[delta.profile_id]) for delta in deltas]


class WorkerStore(ResolutionStore, Outbox, Protocol):
    """The store as the pipeline uses it: it resolves batches and relays their outbox."""


class ResolutionPipeline:
    def __init__(self, store: WorkerStore, rules: Rules | LiveRules, publish: Publisher, *, max_event_bytes: int,
                 policy: Policy | None = None, max_hops: int = 8, metrics: WorkerMetrics | None = None,
                 notice_wanted: Callable[[str], bool] = lambda event_type: True,  # by default every type
                 retry_delay_s: float = 0.5, max_in_flight: int = 4,
                 on_result: OnDurable | None = None, route: Route | None = None, topics: TopicNames = LIVE) -> None:
        self.store = store
        #: Given LiveRules, the registry's live model is checked before each batch; given Rules,
        #: those are used throughout. The resolver holds the rules in use (:attr:`rules`).
        self._follow = rules if isinstance(rules, LiveRules) else None
        self.resolver = Resolver(store, rules.rules if isinstance(rules, LiveRules) else rules, policy=policy,
                                 claim_s=DELTA_CLAIM_S)
        self.metrics = metrics or WorkerMetrics(process_collectors=False)
        self._max_hops = max_hops
        self._notice_wanted = notice_wanted
        self._publish = publish
        self._max_event_bytes = max_event_bytes
        self._retry_delay_s = retry_delay_s
        self._on_result = on_result
        self._route = route
        self._topics = topics
        # One store user at a time: the embedded store shares one connection, so an outbox
        # mark issued while a batch's transaction is open would commit or roll back with it.
        self._store_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(max_in_flight)
        #: Each delta sent but not yet marked published, with its unfinished relay.
        self._in_flight: dict[str, _Sending] = {}
        #: Set by :meth:`close`: no new batch starts. ``_idle`` is set while no batch is resolving.
        self._closing = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def rules(self) -> Rules:
        """The rules the next batch is resolved under."""
        return self.resolver.rules

    async def handle(self, batch: Sequence[Incoming]) -> BatchResult:
        """Resolve a batch and return once all its effects are durable."""
        return await (await self.begin(batch))

    async def begin(self, batch: Sequence[Incoming], on_durable: OnDurable | None = None) -> "asyncio.Task[BatchResult]":
        """Resolve the batch and send its deltas; the returned relay finishes when all is durable.

        Waits first while ``max_in_flight`` relays are unfinished, so a slow broker slows the
        consumer down instead of piling up batches.
        """
        await self._slots.acquire()
        await self._enter()
        result = BatchResult()
        started = time.perf_counter()
        try:
            await self._follow_live_model()
            accepted, messages = self._accept_all(batch, result)
            await write_dead_letters(self._publish, self._topics.dead_letter, result.rejected)
            earlier: set[asyncio.Task[BatchResult]] = set()
            store_seconds = None
            if accepted:
                async with self._store_lock:
                    store_started = time.perf_counter()
                    result.outcomes = await self._resolve(accepted, messages, result)
                    store_seconds = time.perf_counter() - store_started
                    result.published, earlier = await self._unpublished(result.outcomes)
                await write_dead_letters(self._publish, self._topics.dead_letter, self._refuse_reused_ids(result, messages))
            types = {p.event_id: p.event.type for p in accepted}
            wanted = [o for o in result.outcomes if self._notice_wanted(types[o.event_id])]
            notices = self._notices(accepted, wanted)
            records = [r for d in result.published for r in self._delta_records(d)]
            records += [(self._topics.notices, n.profile_id.encode(), n.to_json()) for n in notices]
            acks = [await self._publish(*record) for record in records]
            routed: list[IdentityDelta | TouchpointNotice] = [*result.published, *notices]
            deliveries = [await self._deliver(r) for r in routed]
        except BaseException:
            self._slots.release()
            raise
        finally:
            self._leave()
        self.metrics.observe_batch(result, resolve_seconds=time.perf_counter() - started, store_seconds=store_seconds,
                                   scenarios={p.event_id: p.event.scenario for p in accepted})
        log_batch(result)
        relay = asyncio.ensure_future(self._relay(result, records, acks, deliveries, earlier, on_durable))
        relay.add_done_callback(self._forget)
        for delta in result.published:
            self._in_flight[delta.delta_id] = _Sending(delta, relay)
        return relay

    async def relay_outbox(self, limit: int = 500) -> int:
        """Send outbox deltas that no worker is sending (those the profile API wrote); return how many.

        The pipeline owns the map of deltas on their way to the broker, so this relay registers
        its deltas there as a batch does: neither sends a delta the other is sending, and a batch
        that meets one of these waits for this relay before its offsets count as durable.
        """
        await self._slots.acquire()  # released by _relay, as for a batch
        await self._enter()
        try:
            async with self._store_lock:
                pending = await self.store.orphaned_deltas(limit=limit, known=self._in_flight.keys())
                records = [r for d in pending for r in self._delta_records(d)]
                acks = [await self._publish(*record) for record in records]
                deliveries = [await self._deliver(d) for d in pending]
        except BaseException:
            self._slots.release()
            raise
        finally:
            self._leave()
        if not pending:
            self._slots.release()
            return 0
        relay = asyncio.ensure_future(self._relay(BatchResult(published=pending), records, acks, deliveries, set(), None))
        relay.add_done_callback(self._forget)
        for delta in pending:
            self._in_flight[delta.delta_id] = _Sending(delta, relay)
        return len((await relay).published)

    def warm_up(self) -> None:
        """Prepare a sample event, nothing stored: normalisation builds its tables on first use.

        That takes 0.1-0.4 s; done before the worker reports ready, it does not delay the first
        events it handles.
        """
        prepare(parse_event(orjson.dumps(WARM_UP_EVENT)), self.rules)

    async def close(self, timeout_s: float) -> None:
        """Stop taking batches, let the one being resolved finish, and wait a while for relays.

        After this returns nothing of the pipeline uses the store, so the caller may close it:
        a batch begun later waits until the caller cancels it, unresolved and unacknowledged,
        and a restart redelivers it. Relays still unfinished after ``timeout_s`` are left to a
        redelivery as well.
        """
        self._closing = True
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:  # a broker that is down holds the batch: the store closes under it
            log.warning("a batch was still being resolved at shutdown", waited_s=timeout_s)
        relays = {sending.relay for sending in self._in_flight.values()}
        if relays:
            _, late = await asyncio.wait(relays, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
            for relay in late:  # it would mark the outbox of a closed store
                relay.cancel()

    async def _follow_live_model(self) -> None:
        """Take up a newly promoted model before this batch is prepared: the previous batch's
        transaction has committed and this one's has not begun, so each event is decided whole
        under one model, and the decision names it."""
        if self._follow is None:
            return
        try:
            async with self._store_lock:
                rules = await self._follow.refresh()
        except StoreUnavailable as exc:
            # The batch waits the outage out in _resolve; the model is checked again before the next.
            log.warning("live model not checked: store unavailable", error=str(exc))
            return
        if rules is not None:
            self.resolver = self.resolver.under(rules)

    async def _enter(self) -> None:
        if self._closing:
            self._slots.release()
            await asyncio.Event().wait()  # never set: the stopping worker cancels this batch
        self._busy += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    def _accept_all(self, batch: Sequence[Incoming], result: BatchResult) -> tuple[list[PreparedEvent], Messages]:
        accepted: list[PreparedEvent] = []
        messages: Messages = {}
        for message in batch:
            prepared = self._accept(message, result)
            if prepared is not None:
                accepted.append(prepared)
                messages.setdefault(prepared.event_id, []).append(message)
        return accepted, messages

    def _accept(self, message: Incoming, result: BatchResult) -> PreparedEvent | None:
        """The message prepared for resolution, or None when it went to the dead letters.

        Whatever is wrong with one message, it alone is refused: the rest of its batch goes on.
        """
        try:
            return self._prepare(message)
        except EventRejected as error:
            letter = DeadLetter.build(message.value or b"", error.reason_class, error.as_dict()["errors"], message.source)
            log.warning("event refused", reason_class=error.reason_class, source=message.source, errors=str(error))
        except Exception as exc:  # noqa: BLE001 - a defect of ours shows in the dead letter, never loses the batch
            letter = DeadLetter.build(message.value or b"", "internal_error",
                                      [{"path": "", "reason": f"{type(exc).__name__}: {exc}"}], message.source)
            log.error("event failed in validation", source=message.source, error=repr(exc))
        result.rejected.append(letter)
        return None

    def _prepare(self, message: Incoming) -> PreparedEvent:
        if message.value is None:
            raise EventRejected("empty", [FieldError(path="", reason="the record has no value (null)")])
        if len(message.value) > self._max_event_bytes:
            reason = f"event is {len(message.value)} bytes; the limit is {self._max_event_bytes}"
            raise EventRejected("oversized", [FieldError(path="", reason=reason)])
        event = parse_event(message.value)
        if event.causation is not None and event.causation.hops > self._max_hops:
            reason = f"caused through {event.causation.hops} scenario hops; the limit is {self._max_hops}"
            raise EventRejected("hop_limit", [FieldError(path="causation.hops", reason=reason)])
        return prepare(event, self.rules)

    async def _resolve(self, accepted: list[PreparedEvent], messages: Messages, result: BatchResult) -> list[Outcome]:
        """Resolve the batch; if it fails for a reason other than the store, isolate the culprit."""
        ingested_at = _now()
        while True:
            try:
                return await self.resolver.resolve(accepted, ingested_at=ingested_at)
            except StoreUnavailable as exc:
                log.warning("store unavailable, retrying", error=str(exc))
                await asyncio.sleep(self._retry_delay_s)
            except Exception:  # noqa: BLE001 - one poison event must not stop the stream
                if len(accepted) == 1:
                    raise
                break
        outcomes: list[Outcome] = []
        for position, prepared in enumerate(accepted):
            try:
                outcomes += await self._resolve([prepared], messages, result)
            except Exception as exc:  # noqa: BLE001
                # This record, not an earlier one of the batch under the same id.
                nth = sum(1 for p in accepted[:position] if p.event_id == prepared.event_id)
                message = messages[prepared.event_id][nth]
                # The bytes as they arrived: re-encoding the event is one more thing that can fail.
                letter = DeadLetter.build(message.value or b"", "internal_error",
                                          [{"path": "", "reason": f"{type(exc).__name__}: {exc}"}], message.source)
                log.error("event failed in resolution", event_id=prepared.event_id, error=repr(exc))
                await write_dead_letters(self._publish, self._topics.dead_letter, [letter])
                result.rejected.append(letter)
        return outcomes

    @staticmethod
    def _refuse_reused_ids(result: BatchResult, messages: Messages) -> list[DeadLetter]:
        """Take out of the result the events whose id an event with other content already used.

        Neither was changed: the first stays applied, this one goes to the dead letters for its
        producer to give it an id of its own.
        """
        letters: list[DeadLetter] = []
        error = id_reused()
        # Outcomes come in the order of the batch's records: the nth outcome under an id is the
        # nth record carrying it. Within one batch the first is applied and a later one is refused.
        seen: dict[str, int] = {}
        for outcome in result.outcomes:
            nth = seen[outcome.event_id] = seen.get(outcome.event_id, -1) + 1
            if not outcome.id_reused:
                continue
            message = messages[outcome.event_id][nth]
            letters.append(DeadLetter.build(message.value or b"", error.reason_class, error.as_dict()["errors"],
                                            message.source))
            log.warning("event refused", reason_class=error.reason_class, source=message.source, errors=str(error))
        if letters:
            result.outcomes = [o for o in result.outcomes if not o.id_reused]
            result.rejected += letters
        return letters

    async def _unpublished(self, outcomes: list[Outcome]) -> tuple[list[IdentityDelta], set[asyncio.Task[BatchResult]]]:
        """The outbox entries of these outcomes still to send, and the relays already sending the others.

        Read back from the outbox: a redelivered event's deltas, since a crash may have kept
        them from the broker, and every unsent delta about a profile this batch changed, so that
        none goes out after a newer one of the same profile. A delta an earlier batch is still relaying is not sent twice, but this batch is not
        durable before that relay is: its offsets may be committed first.
        """
        redelivered = [o.event_id for o in outcomes if o.duplicate]
        fresh = [d for o in outcomes if not o.duplicate for d in o.deltas]
        # A profile's older deltas a crash or the API left unsent go out first, so that each
        # profile's deltas reach the topic in version order.
        profiles = sorted({p for d in fresh for p in (d.profile_id, *d.merged_from)})
        # The outbox is asked only for what this pipeline does not hold: under load most of what
        # it finds is this batch's own deltas and those still on their way, and decoding them
        # again cost more than resolving.
        known = {*self._in_flight, *(d.delta_id for d in fresh)}
        stored = await self.store.unpublished_deltas(redelivered, limit=_OUTBOX_READ_LIMIT, profile_ids=profiles,
                                                     known=known) if redelivered or profiles else []
        if not stored:  # the batch planned its own deltas of each profile in version order
            return fresh, self._sending(redelivered, profiles)
        pending = {d.delta_id: d for d in [*stored, *fresh]}
        return _each_profile_in_version_order(list(pending.values())), self._sending(redelivered, profiles)

    def _sending(self, event_ids: Sequence[str], profile_ids: Sequence[str]) -> set[asyncio.Task[BatchResult]]:
        """The relays still sending a delta of these events or about these profiles (as the outbox matches them)."""
        events, profiles = set(event_ids), set(profile_ids)
        return {s.relay for s in self._in_flight.values()
                if s.delta.profile_id in profiles or s.delta.cause.event_id in events}

    def _delta_records(self, delta: IdentityDelta) -> list[Record]:
        """The delta keyed by its profile; after an erasure, tombstones for every erased profile id.

        Both per-profile topics are compacted (streams/topics.py): the tombstones make the broker
        drop the customer's earlier deltas and touchpoint notices once subscribers had the erasure.
        """
        delta.emit(_now())
        deltas, notices = self._topics.deltas, self._topics.notices
        records: list[Record] = [(deltas, delta.profile_id.encode(), delta.to_json())]
        if delta.kind == "profile.erased":
            erased = [p.encode() for p in (delta.profile_id, *delta.merged_from)]
            records += [(topic, key, None) for topic in (deltas, notices) for key in erased]
        return records

    @staticmethod
    def _notices(accepted: list[PreparedEvent], outcomes: list[Outcome]) -> list[TouchpointNotice]:
        """Tell event-type subscribers what was resolved; a redelivered event is told again (same notice)."""
        prepared: dict[str, PreparedEvent] = {}
        for p in accepted:  # the first record of an id is the one applied; a later one was refused
            prepared.setdefault(p.event_id, p)
        resolved_at = _now()
        notices: list[TouchpointNotice] = []
        for outcome in outcomes:
            if outcome.decision["action"] == "refused":  # an erased customer's event: nothing to tell
                continue
            notice = notice_for(prepared[outcome.event_id], outcome.decision, ingested_at=None, resolved_at=resolved_at)
            notice.times.emitted_at = resolved_at
            notices.append(notice)
        return notices

    async def _deliver(self, record: IdentityDelta | TouchpointNotice) -> "asyncio.Future[None]":
        """Route one record to its subscriptions; the future resolves once every sink has it."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def finished() -> None:
            if not done.done():
                done.set_result(None)
        if self._route is None:
            done.set_result(None)
        else:
            await self._route(record, finished)
        return done

    async def _relay(self, result: BatchResult, records: list[Record], acks: list[Awaitable[Any]],
                     deliveries: list["asyncio.Future[None]"], earlier: set[asyncio.Task[BatchResult]],
                     on_durable: OnDurable | None) -> BatchResult:
        """Wait for the broker and the sinks, mark the outbox, then let the caller acknowledge the offsets.

        The slot is given back once the broker has the batch's records: a webhook retrying
        against a failing endpoint delays only this batch's offsets, not the next batches.
        """
        released = False
        try:
            await self._until_acknowledged(records, acks)
            self._slots.release()
            released = True
            await asyncio.gather(*deliveries)
            if result.published:
                marking = time.perf_counter()
                async with self._store_lock:
                    await self.store.mark_published([d.delta_id for d in result.published])
                self.metrics.observe_store_write("mark_published", time.perf_counter() - marking)
        finally:
            # Marked, or left for a redelivery to send again.
            this = asyncio.current_task()
            for delta in result.published:
                sending = self._in_flight.get(delta.delta_id)
                if sending is not None and sending.relay is this:
                    del self._in_flight[delta.delta_id]
            if not released:
                self._slots.release()
        await asyncio.gather(*earlier)  # a failed one fails this batch too: both are redelivered
        if self._on_result is not None:
            await self._on_result(result)
        if on_durable is not None:
            await on_durable(result)
        return result

    @staticmethod
    def _forget(relay: "asyncio.Task[BatchResult]") -> None:
        if not relay.cancelled() and relay.exception() is not None:
            # The batch's offsets stay unacknowledged: a restart redelivers it.
            log.error("batch relay failed", error=repr(relay.exception()))

    async def _until_acknowledged(self, records: list[Record], acks: list[Awaitable[Any]]) -> None:
        """Await the broker's acknowledgements, sending the batch's records again if that fails.

        The offsets stay unacknowledged meanwhile; a re-sent delta keeps its id, so a
        subscriber that saw the first copy can tell.
        """
        while True:
            try:
                await asyncio.gather(*acks)
                return
            except Exception as exc:  # noqa: BLE001 - the broker may be back after a pause
                log.warning("publishing failed, retrying", records=len(records), error=repr(exc))
                await asyncio.sleep(self._retry_delay_s)
                acks = [await resend(self._publish, *record) for record in records]
