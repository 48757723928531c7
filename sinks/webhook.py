"""HTTP webhook delivery: retries with exponential backoff, then the dead-letter topic.

Each webhook subscription owns a queue and a worker task, so a slow or failing endpoint
delays only its own deliveries. The caller learns each delivery's end through ``on_done``
(delivered or dead-lettered), which is when the delta's offset may be committed.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import httpx
import orjson
import structlog

from sinks.subscriptions import Subscription, WebhookSink

#: Called once per delivery with None when delivered, else the reason it was given up.
DoneCallback = Callable[[str | None], Awaitable[None]]
DeadLetter = Callable[[Subscription, dict[str, Any], str, int], Awaitable[None]]
#: Wait before writing a dead letter again when the broker refused it.
DEAD_LETTER_RETRY_S = 1.0

log = structlog.get_logger("idgraph.webhook")


@dataclass(slots=True)
class Delivery:
    body: dict[str, Any]
    on_done: DoneCallback


def backoff_delays(sink: WebhookSink, rng: random.Random | None = None) -> list[float]:
    """Waits between attempts: doubling from the initial delay, capped, with full jitter."""
    rng = rng or random.Random()
    delays = []
    for attempt in range(sink.max_attempts - 1):
        ceiling = min(sink.backoff_max_s, sink.backoff_initial_s * 2**attempt)
        delays.append(ceiling / 2 + rng.random() * ceiling / 2)
    return delays


class WebhookSender:
    """Delivers one subscription's deltas in order, one at a time."""

    def __init__(self, subscription: Subscription, client: httpx.AsyncClient, dead_letter: DeadLetter,
                 *, queue_size: int = 10_000) -> None:
        if not isinstance(subscription.sink, WebhookSink):
            raise TypeError(f"{subscription.name} does not have a webhook sink")
        self.subscription = subscription
        self.sink: WebhookSink = subscription.sink
        self._client = client
        self._dead_letter = dead_letter
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._current: Delivery | None = None
        self.delivered = 0
        self.failed = 0
        self.retries = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"webhook:{self.subscription.name}")

    async def stop(self) -> list[Delivery]:
        """Stop delivering; returns the jobs not finished (the one in flight first), whose
        ``on_done`` has not been called: the owner decides what becomes of them."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        unfinished = [self._current] if self._current is not None else []
        self._current = None
        while not self._queue.empty():
            unfinished.append(self._queue.get_nowait())
        return unfinished

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def submit(self, body: dict[str, Any], on_done: DoneCallback) -> None:
        await self._queue.put(Delivery(body, on_done))

    async def _run(self) -> None:
        while True:
            self._current = await self._queue.get()
            reason, attempts = await self._deliver(self._current.body)
            if reason is None:
                self.delivered += 1
            else:
                self.failed += 1
                await self._write_dead_letter(self._current.body, reason, attempts)
            job, self._current = self._current, None
            await job.on_done(reason)

    async def _write_dead_letter(self, body: dict[str, Any], reason: str, attempts: int) -> None:
        """A delivery given up is done only once its dead letter is written: until then the
        caller's offsets stay uncommitted, so a broker outage delays the delta but loses nothing."""
        while True:
            try:
                await self._dead_letter(self.subscription, body, reason, attempts)
                return
            except Exception as exc:  # noqa: BLE001 - the broker's error; retried, never fatal to the sender
                log.warning("dead letter not written; retrying", subscription=self.subscription.name,
                            error=repr(exc))
                await asyncio.sleep(DEAD_LETTER_RETRY_S)

    async def _attempt(self, payload: bytes) -> str | None:
        """One POST; None on a 2xx answer, else why it failed."""
        headers = {"content-type": "application/json", **self.sink.headers}
        try:
            response = await self._client.post(str(self.sink.url), content=payload, headers=headers, timeout=self.sink.timeout_s)
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def _deliver(self, body: dict[str, Any]) -> tuple[str | None, int]:
        payload = orjson.dumps(body)
        delays = backoff_delays(self.sink)
        reason = None
        for attempt in range(1, self.sink.max_attempts + 1):
            reason = await self._attempt(payload)
            if reason is None:
                return None, attempt
            if attempt < self.sink.max_attempts:
                self.retries += 1
                await asyncio.sleep(delays[attempt - 1])
        return f"gave up after {self.sink.max_attempts} attempts: {reason}", self.sink.max_attempts
