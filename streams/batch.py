"""Resolving a JSON-lines file of events through the same engine and store as the stream worker."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterable, Iterator

import orjson

from graph.store import ReadViews, ResolutionStore
from identity.events import EventRejected, id_reused, parse_event
from identity.features import PreparedEvent, prepare
from identity.rules import Rules
from service.resolver import Resolver


@dataclass(slots=True)
class BatchReport:
    events: int = 0
    rejected: int = 0
    duplicates: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    deltas: int = 0
    event_ids: list[str] = field(default_factory=list)


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line.rstrip(b"\r\n")


def _reject(rejects: IO[bytes] | None, number: int, line: bytes, error: EventRejected) -> None:
    if rejects is not None:
        record = {"line": number, **error.as_dict(), "original": line.decode("utf-8", "replace")}
        rejects.write(orjson.dumps(record) + b"\n")


async def resolve_lines(
    lines: Iterable[tuple[int, bytes]],
    store: ResolutionStore,
    rules: Rules,
    *,
    batch_size: int = 200,
    rejects: IO[bytes] | None = None,
) -> BatchReport:
    """Resolve events in file order; bad lines go to ``rejects`` with their reason, never dropped silently."""
    resolver = Resolver(store, rules)
    report = BatchReport()
    batch: list[PreparedEvent] = []
    numbered: dict[str, tuple[int, bytes]] = {}  # the batch's lines, for refusing one after resolution

    async def flush() -> None:
        outcomes = await resolver.resolve(batch, ingested_at=datetime.now(timezone.utc).isoformat())
        for outcome in outcomes:
            if outcome.id_reused:
                report.rejected += 1
                report.event_ids.remove(outcome.event_id)
                _reject(rejects, *numbered[outcome.event_id], id_reused())
                continue
            report.duplicates += outcome.duplicate
            action = outcome.decision["action"]
            report.actions[action] = report.actions.get(action, 0) + (not outcome.duplicate)
            report.deltas += 0 if outcome.duplicate else len(outcome.deltas)
        batch.clear()
        numbered.clear()

    for number, line in lines:
        report.events += 1
        try:
            prepared = prepare(parse_event(line), rules)
        except EventRejected as error:
            report.rejected += 1
            _reject(rejects, number, line, error)
            continue
        report.event_ids.append(prepared.event_id)
        batch.append(prepared)
        numbered[prepared.event_id] = (number, line)
        if len(batch) >= batch_size:
            await flush()
    if batch:
        await flush()
    return report


async def write_assignments(store: ReadViews, event_ids: list[str], output: IO[str]) -> None:
    """``event_id,profile_id`` for each event, with the profile it belongs to now (after later merges).

    The profile id is empty for an event that belongs to no profile: one refused because its
    customer had their data erased.
    """
    current = dict(await store.assignments())
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(["event_id", "profile_id"])
    seen: set[str] = set()
    for event_id in event_ids:
        if event_id not in seen:
            seen.add(event_id)
            writer.writerow([event_id, current.get(event_id, "")])
