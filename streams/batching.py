"""Batches sized by the backlog: what has arrived, or is known to be arriving, when the caller is ready.

Faust's ``Stream.noack_take`` suits neither end of the load. After every batch it waits its
``within`` even when a backlog is queued, and its buffer cannot fill while the caller works on
a batch, so under load it yields only what trickles in during that wait. And Faust hands a
stream its messages one per event-loop turn, interleaved with fetching them, so "whatever is
queued right now" is often a single event although hundreds are already fetched.

:class:`BacklogBatches` reads the stream in a task of its own and closes a batch when it is
full, or when nothing more is known to be coming: the stream's queue is empty and the consumer
has fetched nothing beyond the last event's offset (its partition's high watermark). An idle
worker therefore handles an event at once, a busy one shares the per-batch costs (a store
transaction, a broker round trip) among everything that is already there, and a batch never
waits on the clock for events that may not come. ``max_wait_s`` only bounds the wait for
records the consumer knows of but has not handed over yet. Under a backlog that wait is what
sizes a batch: Faust hands over ~3 events per millisecond, so 5 ms made batches of ~15 while
thousands waited fetched (a store transaction, an outbox mark and a produce request per 15
events); the default is now 50 ms. Its clock starts when the caller asks for a batch, not at
the batch's first event, which the reader may take while the caller still works on the
previous batch: that clock could run out before the caller waited at all.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable

import faust
from faust.types import TP, ChannelT

#: Reads the consumer's high watermark of a partition: the offset the next record will get.
Highwater = Callable[[TP], "int | None"]


class BacklogBatches:
    """Iterate a ``noack`` stream in batches; the caller acks each event once its effects are durable."""

    def __init__(self, stream: faust.StreamT, *, max_events: int, max_wait_s: float, highwater: Highwater) -> None:
        self._stream = stream
        self._max_events = max_events
        self._max_wait_s = max_wait_s
        self._highwater = highwater
        self._pending: list[faust.EventT] = []
        self._ready = asyncio.Event()  # a batch is complete, or the reader stopped
        self._room = asyncio.Event()  # the reader may take more events off the stream
        self._timer: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[None] | None = None
        self._asked = False  # the caller waits for a batch: the clock may run

    async def __aiter__(self) -> AsyncIterator[list[faust.EventT]]:
        self._reader = asyncio.ensure_future(self._read())
        try:
            while True:
                await self._wait()
                if not self._pending:
                    self._reader.result()  # the stream ended: re-raise its error, if any
                    return
                yield self._take()
        finally:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for event in self._stream.events():
                self._pending.append(event)
                if len(self._pending) >= self._max_events or not self._more_coming(event):
                    self._complete()
                elif self._asked:
                    self._start_clock()
                while len(self._pending) >= self._max_events:
                    self._room.clear()
                    await self._room.wait()  # the rest waits in Faust's own buffer
        finally:
            self._ready.set()

    async def _wait(self) -> None:
        """Until a batch is ready: full, nothing more known to be coming, or ``max_wait_s`` spent here."""
        if self._pending:
            self._start_clock()
        self._asked = True
        try:
            await self._ready.wait()
        finally:
            self._asked = False

    def _start_clock(self) -> None:
        if self._timer is None and not self._ready.is_set():
            self._timer = asyncio.get_running_loop().call_later(self._max_wait_s, self._complete)

    def _more_coming(self, event: faust.EventT) -> bool:
        """Whether the consumer already holds events beyond this one (then the batch grows)."""
        channel = self._stream.channel
        if isinstance(channel, ChannelT) and not channel.queue.empty():
            return True
        message = event.message
        try:
            highwater = self._highwater(message.tp)
        except Exception:  # noqa: BLE001 - a partition just revoked, or not fetched yet: nothing is known
            return False
        return highwater is not None and highwater > message.offset + 1

    def _complete(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ready.set()

    def _take(self) -> list[faust.EventT]:
        """Everything read so far: the reader never holds more than ``max_events``."""
        batch, self._pending = self._pending, []
        if self._reader is not None and not self._reader.done():
            self._ready.clear()
        self._room.set()
        return batch
