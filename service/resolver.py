"""Resolving events against a store: the one code path the batch CLI and the stream worker share.

Per event, inside the batch's transaction: look up the prior outcome (a redelivery changes
nothing and returns it), gather the neighbourhood, decide, plan, write. Reads and writes
share the transaction, so a later event in the same batch sees the earlier ones.

A store that checks optimistically (Neo4j) may refuse the batch at commit because another
worker changed what it read (:class:`StoreConflict`); nothing was written, so the batch is
re-run from the read, a bounded number of times, after a short random pause that keeps two
conflicting workers from colliding again in step. Past that bound the batch is contended, not
wrong: it surfaces as :class:`StoreUnavailable` (a busy store), which the stream worker waits
out and retries like an outage, and one log line says how often it conflicted.
"""

from __future__ import annotations

import asyncio
import random

import structlog
from dataclasses import replace
from datetime import datetime, timezone
from typing import Sequence

from graph.store import Outcome, ResolutionStore, StoreConflict, StoreUnavailable
from identity.decide import decide
from identity.features import PreparedEvent
from identity.plan import plan_changes, plan_refusal
from identity.policy import Policy, load_policy
from identity.rules import Rules


#: Runs of one batch before a conflict is passed on to the caller.
CONFLICT_ATTEMPTS = 5
#: Upper bound of the first pause after a conflict; it doubles with each further attempt.
CONFLICT_PAUSE_S = 0.02

log = structlog.get_logger("idgraph.resolver")


class Resolver:
    def __init__(self, store: ResolutionStore, rules: Rules, *, policy: Policy | None = None,
                 attempts: int = CONFLICT_ATTEMPTS, claim_s: float = 0.0) -> None:
        """``claim_s``: the caller sends the deltas itself (ResolutionStore.transaction)."""
        self.store = store
        self.rules = rules
        self.policy = policy or load_policy()
        self.attempts = attempts
        self.claim_s = claim_s
        self._jitter = random.Random()

    def under(self, rules: Rules) -> "Resolver":
        """This resolver with other rules, everything else as it is (a promoted model)."""
        return Resolver(self.store, rules, policy=self.policy, attempts=self.attempts, claim_s=self.claim_s)

    async def resolve(self, batch: Sequence[PreparedEvent], *, ingested_at: str | None = None) -> list[Outcome]:
        """Resolve a batch atomically: every event in it is applied, or none is."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await self._resolve_once(batch, ingested_at)
            except StoreConflict as exc:
                if attempt == self.attempts:
                    log.warning("batch gave up after store conflicts", attempts=attempt, events=len(batch),
                                last_conflict=str(exc))
                    raise StoreUnavailable(f"a batch of {len(batch)} events conflicted with other writers "
                                           f"{attempt} times in a row; retry it later: {exc}") from exc
                await asyncio.sleep(self._jitter.uniform(0, CONFLICT_PAUSE_S * 2 ** (attempt - 1)))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _resolve_once(self, batch: Sequence[PreparedEvent], ingested_at: str | None) -> list[Outcome]:
        outcomes: list[Outcome] = []
        async with self.store.transaction(claim_s=self.claim_s) as tx:
            await tx.prefetch(batch, self.rules)
            for prepared in batch:
                prior = await tx.outcome(prepared.event_id)
                if prior is not None:
                    outcomes.append(_redelivered(prior, prepared))
                    continue
                context = await tx.context(prepared, self.rules)
                refusal = plan_refusal(prepared, context.erased, self.rules.model_version) if context.erased else None
                if refusal is not None:
                    # An erased customer's old event: keep its id and the reason, nothing of it.
                    await tx.refuse(prepared, refusal)
                    outcomes.append(Outcome(prepared.event_id, refusal, []))
                    continue
                decision = decide(prepared, context, self.rules)
                resolved_at = datetime.now(timezone.utc).isoformat()
                changes = plan_changes(prepared, decision, context.profiles, policy=self.policy, records=context.records,
                                       resolved_at=resolved_at, ingested_at=ingested_at)
                await tx.apply(prepared, changes)
                outcomes.append(Outcome(prepared.event_id, changes.decision.as_dict(), changes.deltas))
        return outcomes


def _redelivered(prior: Outcome, prepared: PreparedEvent) -> Outcome:
    """The earlier outcome of an event id, marked when the event now carries other content.

    Refusals keep no digest (nothing of an erased customer's event is kept), and decisions
    recorded before digests existed have none: those count as redeliveries.
    """
    recorded = prior.decision.get("event_digest")
    if recorded and prepared.digest and recorded != prepared.digest:
        return replace(prior, id_reused=True)
    return prior
