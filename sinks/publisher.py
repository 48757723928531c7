"""How records reach the broker: the one publishing contract the pipeline and the sinks share."""

from __future__ import annotations

from typing import Any, Awaitable, Protocol


class Publisher(Protocol):
    """Enqueues one record in call order and returns an awaitable for the broker's acknowledgement.

    Two steps so that deltas of one profile keep their order on the partition while many
    are in flight at once.
    """

    async def __call__(self, topic: str, key: bytes | None, value: bytes | None,
                       headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Any]: ...
