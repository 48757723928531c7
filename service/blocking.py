"""Whether a store's blocking index was built with the rules now running, and what to do if not.

Blocking keys are named by their rule's content (identity/features.py), so a rule set that
changes leaves the other rules' stored keys valid; but records written before a rule was added
have no keys for it, and are never found through it, until the index is rebuilt from the
features every record keeps (``idgraph reindex``, :meth:`graph.store.BlockingIndex.reindex_blocking`).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from graph.store import POSITIONAL, BlockingIndex, GraphStore, StoreError
from identity.features import blocking_signature
from identity.rules import Rules


log = structlog.get_logger("idgraph.blocking")


class BlockingIndexUnusable(StoreError):
    """A worker must not resolve against this index: every stored record would look new."""


@dataclass(frozen=True, slots=True)
class BlockingMismatch:
    """The store's index was built with other blocking rules than ``rules``."""

    stored: str
    running: str

    @property
    def positional(self) -> bool:
        """Keys from before rule ids, named by rule position: none match today's names."""
        return self.stored == POSITIONAL

    def describe(self) -> str:
        if self.positional:
            return ("the blocking index names its keys by rule position (written before keys were named "
                    "by rule content): no stored record is found as a candidate until it is rebuilt")
        stored, running = set(self.stored.split(",")), set(self.running.split(","))
        return (f"the blocking index was built with other blocking rules ({len(running - stored)} added, "
                f"{len(stored - running)} removed): records written before the change are not found "
                "through the added rules until it is rebuilt")


async def check_blocking_index(store: BlockingIndex, rules: Rules) -> BlockingMismatch | None:
    """None when the index fits ``rules``. An index with no signature yet (a new store) takes theirs."""
    running = blocking_signature(rules)
    stored = await store.blocking_signature()
    if stored is None:
        await store.record_blocking_signature(running)
        return None
    return None if stored == running else BlockingMismatch(stored, running)


async def start_with_blocking_index(store: GraphStore, rules: Rules) -> None:
    """What a worker does at start: an embedded store still keyed by rule position is rebuilt
    there and then (its schema migration marked it; a local file takes seconds). A remote graph
    keyed so is refused: resolving against it would create a duplicate of every customer, and
    its rebuild is an operator's call while no worker writes. Any other mismatch only hides
    older records from the added rules, so it is named in a warning with the command that mends it."""
    mismatch = await check_blocking_index(store, rules)
    if mismatch is None:
        return
    if mismatch.positional and store.kind == "sqlite":
        records = await store.reindex_blocking(rules)
        log.warning("blocking index rebuilt at start", problem=mismatch.describe(), records=records)
        return
    if mismatch.positional:
        raise BlockingIndexUnusable(f"{mismatch.describe()}; stop every worker, run `idgraph reindex` with their "
                                    "IDGRAPH_RULES and IDGRAPH_STORE, then start them again")
    log.warning("blocking index out of date: run `idgraph reindex` with this worker's IDGRAPH_RULES and "
                "IDGRAPH_STORE", problem=mismatch.describe(), stored=mismatch.stored, running=mismatch.running)
