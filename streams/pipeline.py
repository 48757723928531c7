"""One batch of touchpoint messages: validate, resolve, publish deltas, dead-letter the rest.

The caller acknowledges the batch's offsets only after :meth:`ResolutionPipeline.handle`
returns, and by then every effect is durable: outcomes in the store, deltas acknowledged
by the broker and marked published in the outbox, bad input in the dead-letter topic. A
crash anywhere before that redelivers the batch, and event-id idempotency plus the outbox
make the redelivery produce nothing twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Protocol, Sequence

import structlog

from graph.resolver import Resolver
from graph.store import GraphStore, Outcome, StoreUnavailable
from identity.deltas import IdentityDelta
from identity.events import EventRejected, FieldError, parse_event
from identity.features import PreparedEvent, prepare
from identity.rules import Rules
from streams.deadletter import DEAD_LETTER_TOPIC, DeadLetter

DELTAS_TOPIC = "identity.deltas"
log = structlog.get_logger("idgraph.pipeline")


class Publisher(Protocol):
    """Enqueues one record in call order and returns an awaitable for the broker's acknowledgement.

    Two steps so that deltas of one profile keep their order on the partition while many
    are in flight at once.
    """

    async def __call__(self, topic: str, key: bytes | None, value: bytes,
                       headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True)
class Incoming:
    value: bytes
    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)
    published: list[IdentityDelta] = field(default_factory=list)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class ResolutionPipeline:
    def __init__(self, store: GraphStore, rules: Rules, publish: Publisher, *, max_event_bytes: int,
                 retry_delay_s: float = 0.5, on_result: Callable[[BatchResult], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.rules = rules
        self.resolver = Resolver(store, rules)
        self._publish = publish
        self._max_event_bytes = max_event_bytes
        self._retry_delay_s = retry_delay_s
        self._on_result = on_result

    async def handle(self, batch: Sequence[Incoming]) -> BatchResult:
        result = BatchResult()
        accepted: list[PreparedEvent] = []
        messages: dict[str, Incoming] = {}
        for message in batch:
            prepared = self._accept(message, result)
            if prepared is not None:
                accepted.append(prepared)
                messages.setdefault(prepared.event_id, message)
        await self._dead_letter(result.rejected)
        if accepted:
            result.outcomes = await self._resolve(accepted, messages, result)
            result.published = await self._publish_deltas([o.event_id for o in result.outcomes])
        if self._on_result is not None:
            await self._on_result(result)
        return result

    def _accept(self, message: Incoming, result: BatchResult) -> PreparedEvent | None:
        try:
            if len(message.value) > self._max_event_bytes:
                reason = f"event is {len(message.value)} bytes; the limit is {self._max_event_bytes}"
                raise EventRejected("oversized", [FieldError(path="", reason=reason)])
            return prepare(parse_event(message.value), self.rules)
        except EventRejected as error:
            letter = DeadLetter.build(message.value, error.reason_class, error.as_dict()["errors"], message.source)
            result.rejected.append(letter)
            log.warning("event refused", reason_class=error.reason_class, source=message.source, errors=str(error))
            return None

    async def _resolve(self, accepted: list[PreparedEvent], messages: dict[str, Incoming], result: BatchResult) -> list[Outcome]:
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
        for prepared in accepted:
            try:
                outcomes += await self._resolve([prepared], messages, result)
            except Exception as exc:  # noqa: BLE001
                message = messages.get(prepared.event_id)
                letter = DeadLetter.build(prepared.event.to_json(), "internal_error",
                                          [{"path": "", "reason": f"{type(exc).__name__}: {exc}"}],
                                          message.source if message else {})
                log.error("event failed in resolution", event_id=prepared.event_id, error=repr(exc))
                await self._dead_letter([letter])
                result.rejected.append(letter)
        return outcomes

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        acks = [await self._publish(DEAD_LETTER_TOPIC, None, letter.value, letter.headers()) for letter in letters]
        await asyncio.gather(*acks)

    async def _publish_deltas(self, event_ids: list[str]) -> list[IdentityDelta]:
        """Relay the outbox: send unpublished deltas of these events, then mark them published."""
        pending = await self.store.unpublished_deltas(event_ids, limit=len(event_ids) * 4 + 100)
        if not pending:
            return []
        emitted_at = _now()
        acks = []
        for delta in pending:
            delta.times.emitted_at = emitted_at
            acks.append(await self._publish(DELTAS_TOPIC, delta.profile_id.encode(), delta.to_json()))
        await asyncio.gather(*acks)
        await self.store.mark_published([d.delta_id for d in pending])
        return pending
