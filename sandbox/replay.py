"""Replaying a store's accepted history, in acceptance order, through a rule set into another store."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import AsyncIterator, Callable

from graph.factory import store_from_url
from graph.store import FIRST_EVENT, ReadViews
from identity.rules import Rules
from service.blocking import start_with_blocking_index
from service.models import live_rules, make_live
from streams.batch import BatchReport, resolve_lines

PAGE = 2000


async def history(store: ReadViews, page: int = PAGE) -> AsyncIterator[tuple[int, bytes]]:
    """Every accepted event as (seq, event JSON), oldest first, read a page at a time."""
    after = FIRST_EVENT
    while rows := await store.accepted_events(after, page):
        for row in rows:
            yield row.seq, row.event
        after = rows[-1].cursor


async def accepted_count(url: str) -> int:
    async with store_from_url(url) as store:
        return await store.applied_count()


async def replay(source_url: str, target_url: str, rules: Rules, *, rejects: Path | None = None,
                 batch_size: int = 200, progress: Callable[[int], None] | None = None) -> BatchReport:
    """Resolve ``source_url``'s history under ``rules`` into ``target_url`` at batch speed.
    The source is only read; an event the target already holds is a duplicate, not applied twice."""
    async with store_from_url(source_url) as source, store_from_url(target_url) as target:
        await start_with_blocking_index(target, rules)
        # A worker on the target (sandbox worker --candidate) resolves under what built it.
        await make_live(target, rules, by="sandbox", reason=f"replay of {source_url}")
        with rejects.open("wb") if rejects is not None else nullcontext() as bad:
            return await resolve_lines(history(source), target, rules, batch_size=batch_size, rejects=bad,
                                       progress=progress)


async def copy_history(live_url: str, sandbox_url: str, rules: Rules) -> None:
    """A snapshot of a live store that is no SQLite file (Neo4j): its history replayed under its
    live model (``rules`` while none is live), which :func:`replay` makes the sandbox store's."""
    async with store_from_url(live_url) as live:
        rules = await live_rules(live, rules)
    await replay(live_url, sandbox_url, rules)
