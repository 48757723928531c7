"""Publishing outbox deltas that no touchpoint batch will publish: those written by the API.

The worker publishes the deltas of the batches it resolves (streams/pipeline.py). Deltas of
operations by people (erasure, merge, split, review verdicts) and of the customer's own
corrections are written by the API process into the same outbox, and this relay takes them
from there: read every unpublished delta, oldest first, skip those a batch has already sent,
publish to ``identity.deltas`` keyed by profile id, and mark them published once the broker
acknowledged them. Run periodically by the worker (``OutboxRelay.run_once`` on a timer).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Protocol

from graph.store import GraphStore

DELTAS_TOPIC = "identity.deltas"
#: How often the worker looks for deltas written outside its batches.
RELAY_INTERVAL_S = 0.5


class Publisher(Protocol):
    async def __call__(self, topic: str, key: bytes | None, value: bytes,
                       headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Any]: ...


class OutboxRelay:
    """Relays unpublished outbox deltas; ``in_flight`` and ``lock`` are shared with the batch
    pipeline so a delta is never sent twice at once and the store sees one user at a time."""

    def __init__(self, store: GraphStore, publish: Publisher, *, lock: asyncio.Lock | None = None,
                 in_flight: set[str] | None = None, batch: int = 500) -> None:
        self.store = store
        self._publish = publish
        self._lock = lock or asyncio.Lock()
        self._in_flight = in_flight if in_flight is not None else set()
        self._batch = batch

    async def run_once(self) -> int:
        """Publish what is waiting; returns how many deltas were published."""
        async with self._lock:
            pending = [d for d in await self.store.unpublished_deltas(limit=self._batch) if d.delta_id not in self._in_flight]
        if not pending:
            return 0
        ids = [d.delta_id for d in pending]
        self._in_flight.update(ids)
        try:
            acks = []
            for delta in pending:
                delta.times.emitted_at = datetime.now(timezone.utc).isoformat()
                acks.append(await self._publish(DELTAS_TOPIC, delta.profile_id.encode(), delta.to_json()))
            await asyncio.gather(*acks)
            async with self._lock:
                await self.store.mark_published(ids)
        finally:
            self._in_flight.difference_update(ids)
        return len(ids)


def relay_timer(relay: OutboxRelay) -> Callable[[], Awaitable[None]]:
    """The body of the worker's timer: one relay pass."""
    async def tick() -> None:
        await relay.run_once()
    return tick
