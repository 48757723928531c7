"""Resolving events against a store: the one code path the batch CLI and the stream worker share.

Per event, inside the batch's transaction: look up the prior outcome (a redelivery changes
nothing and returns it), gather the neighbourhood, decide, plan, write. Reads and writes
share the transaction, so a later event in the same batch sees the earlier ones.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

from graph.store import GraphStore, Outcome
from identity.decide import decide
from identity.features import PreparedEvent
from identity.plan import plan_changes
from identity.rules import Rules


class Resolver:
    def __init__(self, store: GraphStore, rules: Rules) -> None:
        self.store = store
        self.rules = rules

    async def resolve(self, batch: Sequence[PreparedEvent], *, ingested_at: str | None = None) -> list[Outcome]:
        """Resolve a batch atomically: every event in it is applied, or none is."""
        outcomes: list[Outcome] = []
        async with self.store.transaction() as tx:
            await tx.prefetch(batch, self.rules)
            for prepared in batch:
                prior = await tx.outcome(prepared.event_id)
                if prior is not None:
                    outcomes.append(prior)
                    continue
                context = await tx.context(prepared, self.rules)
                decision = decide(prepared, context, self.rules)
                resolved_at = datetime.now(timezone.utc).isoformat()
                changes = plan_changes(
                    prepared, decision, context.profiles, resolved_at=resolved_at, ingested_at=ingested_at
                )
                await tx.apply(prepared, changes)
                outcomes.append(Outcome(prepared.event_id, decision.as_dict(), changes.deltas))
        return outcomes
