"""How records reach the broker: the one publishing contract the pipeline and the sinks share."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Protocol


class Publisher(Protocol):
    """Enqueues one record in call order and returns an awaitable for the broker's acknowledgement.

    Two steps so that deltas of one profile keep their order on the partition while many
    are in flight at once.
    """

    async def __call__(self, topic: str, key: bytes | None, value: bytes | None,
                       headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Any]: ...


async def resend(publish: Publisher, topic: str, key: bytes | None, value: bytes | None) -> Awaitable[Any]:
    """Send a record again from a retry loop: a publisher that raises (the producer is down)
    gives a failed acknowledgement instead, so the loop retries rather than dying with it."""
    try:
        return await publish(topic, key, value)
    except Exception as exc:  # noqa: BLE001 - handed to the retry loop as a failed acknowledgement
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed
