"""The dead-letter contract: what could not be processed, unchanged, with why in the headers.

The message value is the original bytes exactly as they arrived (an event that failed
validation) or as they would have been delivered (a delta a webhook refused), so nothing
is lost and it can be replayed as is. Headers say what went wrong, following the Kafka
Connect convention of keeping the reason beside the record rather than wrapping it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import orjson

from sinks.publisher import Publisher

H_REASON_CLASS = "idgraph.reason_class"  # empty | not_json | schema | oversized | invalid_identifier | hop_limit | id_conflict | internal_error | delivery_failed
H_ERRORS = "idgraph.errors"  # JSON list of {"path", "reason"}
H_SOURCE = "idgraph.source"  # JSON: topic/partition/offset of an event, or subscription/sink of a delivery
H_FAILED_AT = "idgraph.failed_at"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    value: bytes
    reason_class: str
    errors: list[dict[str, str]]
    source: dict[str, Any]
    failed_at: str

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (H_REASON_CLASS, self.reason_class.encode()),
            (H_ERRORS, orjson.dumps(self.errors)),
            (H_SOURCE, orjson.dumps(self.source)),
            (H_FAILED_AT, self.failed_at.encode()),
        ]

    @classmethod
    def build(cls, value: bytes, reason_class: str, errors: list[dict[str, str]], source: dict[str, Any]) -> "DeadLetter":
        return cls(value, reason_class, errors, source, datetime.now(timezone.utc).isoformat())

    @classmethod
    def from_message(cls, value: bytes, headers: Iterable[tuple[str, bytes]]) -> "DeadLetter":
        found = dict(headers)
        return cls(
            value=value,
            reason_class=found[H_REASON_CLASS].decode(),
            errors=orjson.loads(found[H_ERRORS]),
            source=orjson.loads(found[H_SOURCE]),
            failed_at=found[H_FAILED_AT].decode(),
        )


async def write_dead_letters(publish: Publisher, topic: str, letters: Iterable[DeadLetter]) -> None:
    """Publish dead letters to ``topic`` (the dead-letter topic of the writer's namespace) and wait until the broker has them all.

    All are enqueued before any acknowledgement is awaited, so a batch of them costs one round
    trip; a failed publish raises, since a dead letter that was not written would be lost.
    """
    acks = [await publish(topic, None, letter.value, letter.headers()) for letter in letters]
    await asyncio.gather(*acks)
