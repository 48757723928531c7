"""Resolving a JSON-lines file of events through the same engine and store as the stream worker."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, AsyncIterable, AsyncIterator, Callable, Iterable, Iterator

import orjson

from graph.store import ReadViews, ResolutionStore
from identity.events import EventRejected, id_reused, parse_event
from identity.features import PreparedEvent, prepare
from identity.learning import Fit, StreamLearner
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
    #: The models learned from the file, in the order they took over.
    models: list[Fit] = field(default_factory=list)


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line.rstrip(b"\r\n")


def write_reject(rejects: IO[bytes] | None, number: int, line: bytes, error: EventRejected) -> None:
    if rejects is not None:
        record = {"line": number, **error.as_dict(), "original": line.decode("utf-8", "replace")}
        rejects.write(orjson.dumps(record) + b"\n")


async def resolve_lines(
    lines: Iterable[tuple[int, bytes]] | AsyncIterable[tuple[int, bytes]],
    store: ResolutionStore,
    rules: Rules,
    *,
    batch_size: int = 200,
    rejects: IO[bytes] | None = None,
    learner: StreamLearner | None = None,
    progress: Callable[[int], None] | None = None,
) -> BatchReport:
    """Resolve events in file order; bad lines go to ``rejects`` with their reason, never dropped silently.

    ``lines`` may be read page by page (another store's accepted history, numbered by its seq)
    rather than held in memory. With a ``learner`` the model is learned from the events
    themselves: the first events wait until it has seen enough of them to fit one, and each
    later fit takes over at the next batch. ``progress`` is told how many lines each batch settled."""
    run = _FileRun(store, rules, batch_size, rejects, learner, progress)
    async for number, line in _each(lines):
        await run.add(number, line)
    await run.finish()
    return run.report


async def _each(lines: Iterable[tuple[int, bytes]] | AsyncIterable[tuple[int, bytes]]) -> AsyncIterator[tuple[int, bytes]]:
    if isinstance(lines, AsyncIterable):
        async for line in lines:
            yield line
    else:
        for line in lines:
            yield line


class _FileRun:
    """One file's resolution: the events waiting to be resolved, the model in use, the report."""

    def __init__(self, store: ResolutionStore, rules: Rules, batch_size: int, rejects: IO[bytes] | None,
                 learner: StreamLearner | None, progress: Callable[[int], None] | None) -> None:
        self._store, self._rules, self._batch_size = store, rules, batch_size
        self._rejects, self._learner, self._progress = rejects, learner, progress
        self._resolver = Resolver(store, rules)
        #: Prepared and not yet resolved, each with its line (to refuse it after resolution).
        self._waiting: list[tuple[PreparedEvent, int, bytes]] = []
        #: Whether the events read may go: once a first model is learned, or once as many wait
        #: as the learner samples (a file too poor in duplicates goes on under the rules' model).
        self._warm = learner is None
        self._settled = 0  # lines refused since progress was last told
        self.report = BatchReport()

    async def add(self, number: int, line: bytes) -> None:
        self.report.events += 1
        try:
            prepared = prepare(parse_event(line), self._rules)
        except EventRejected as error:
            self._refuse(number, line, error)
            self._settled += 1
            return
        self.report.event_ids.append(prepared.event_id)
        self._waiting.append((prepared, number, line))
        if self._learner is not None:
            self._learner.observe(prepared.features, prepared.blocking_keys)
            if not self._warm:
                # The events wait for a first model worth having: a stream that opens with
                # distinct customers (one source's export before another's) would be resolved
                # under the cold-start model for nothing. The wait is bounded by the sample.
                if self._learner.due:
                    self._refit()
                self._warm = bool(self.report.models) or len(self._waiting) >= self._learner.sample_size
                if not self._warm:
                    return
        if len(self._waiting) >= self._batch_size:
            await self._flush()

    async def finish(self) -> None:
        if not self._warm and self._learner is not None and self._learner.seen:
            self._refit()  # a file shorter than the warm-up learns from all of it
        await self._flush(last=True)
        if self._progress is not None and self._settled:
            self._progress(self._settled)
            self._settled = 0

    def _refit(self) -> None:
        assert self._learner is not None
        fit = self._learner.fit()
        if fit is not None:
            self.report.models.append(fit)
            self._resolver = Resolver(self._store, fit.rules)

    async def _flush(self, *, last: bool = False) -> None:
        """Resolve the waiting events in full batches (and, ``last``, the remainder too)."""
        while len(self._waiting) >= self._batch_size or (last and self._waiting):
            if self._learner is not None and self._warm and self._learner.due:
                self._refit()
            batch, self._waiting = self._waiting[:self._batch_size], self._waiting[self._batch_size:]
            await self._resolve(batch)

    async def _resolve(self, batch: list[tuple[PreparedEvent, int, bytes]]) -> None:
        report = self.report
        outcomes = await self._resolver.resolve([prepared for prepared, _, _ in batch],
                                                ingested_at=datetime.now(timezone.utc).isoformat())
        for outcome, (_, number, line) in zip(outcomes, batch, strict=True):  # one outcome per event, in order
            if outcome.id_reused:
                report.event_ids.remove(outcome.event_id)
                self._refuse(number, line, id_reused())
                continue
            report.duplicates += outcome.duplicate
            action = outcome.decision["action"]
            report.actions[action] = report.actions.get(action, 0) + (not outcome.duplicate)
            report.deltas += 0 if outcome.duplicate else len(outcome.deltas)
        if self._progress is not None:
            self._progress(len(batch) + self._settled)
            self._settled = 0

    def _refuse(self, number: int, line: bytes, error: EventRejected) -> None:
        self.report.rejected += 1
        write_reject(self._rejects, number, line, error)


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
