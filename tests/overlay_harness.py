"""Checking the Neo4j store's in-memory overlay against the embedded store, with no server.

Two SQLite stores play two roles:

* the *reference* resolves each batch the embedded way: one transaction, every question
  answered by SQL after the earlier events of the batch were written;
* the *server* stands in for Neo4j: it is read the way ``load_neighbourhood`` reads Neo4j
  (:func:`neighbourhood_row` mirrors that statement over the embedded schema) and, like Neo4j
  under the Neo4j store, it is written only when the batch commits, and only from the batch's
  WritePlan rows (tests/plan_applier.py mirrors the write statements). After every batch its
  whole state must equal the reference's.

:class:`DifferentialRun` feeds every batch through both and asserts, event by event, that the
overlay's outcome, context and decision equal the reference's. The engine (decide, plan) is the
real one; only the server is a stand-in, which is why the Cypher itself is checked elsewhere
(tests/test_cypher_statements.py lints it; the contract suite runs it when NEO4J_URI is set).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from graph.overlay import BatchOverlay, Missing
from graph.snapshot import NeighbourhoodRequest, Snapshot, snapshot_from_row
from graph.sqlite import RECORDS_PER_PROFILE, SQLiteStore
from graph.store import Outcome
from graph.write_plan import plan_writes
from identity.decide import decide
from identity.features import PreparedEvent
from identity.model import ResolutionContext
from identity.plan import plan_changes
from identity.policy import load_policy
from identity.rules import Rules
from tests.plan_applier import apply_plan, graph_state

T = TypeVar("T")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _records(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [
        {"seq": seq, "event_id": e, "profile_id": p, "features": _text(f)}
        for seq, e, p, f in db.execute(sql, args)
    ]


def neighbourhood_row(db: sqlite3.Connection, request: NeighbourhoodRequest) -> dict[str, Any]:
    """``load_neighbourhood``'s result row, computed from the embedded store's tables."""
    p = request.params()
    outcomes = []
    for event_id in p["event_ids"]:
        row = db.execute("SELECT record FROM decisions WHERE event_id = ?", (event_id,)).fetchone()
        if row is not None:
            deltas = [_text(d) for (d,) in db.execute("SELECT delta FROM outbox WHERE event_id = ? ORDER BY seq", (event_id,))]
            outcomes.append({"event_id": event_id, "record": _text(row[0]), "deltas": deltas})
    identifiers = []
    for key in p["identifier_keys"]:
        holders = [h for (h,) in db.execute(
            "SELECT profile_id FROM identifiers WHERE key = ? ORDER BY profile_id LIMIT ?", (key, p["holder_limit"]))]
        if holders:  # an Identifier node exists while some profile holds it
            identifiers.append({"key": key, "holders": holders})
    blocking = []
    for key in p["blocking_keys"]:
        records = _records(db, "SELECT t.seq, t.event_id, t.profile_id, t.features FROM blocking b "
                               "JOIN touchpoints t ON t.seq = b.seq WHERE b.key = ? ORDER BY b.seq DESC LIMIT ?",
                           (key, p["per_key"]))
        if records:
            blocking.append({"key": key, "records": records})
    owners = list(p["profile_ids"]) + [
        h for x in identifiers if len(x["holders"]) <= p["generic_after"] for h in x["holders"]
    ]
    involved = owners + [r["profile_id"] for b in blocking for r in b["records"]]
    return {
        "outcomes": outcomes,
        "identifiers": identifiers,
        "blocking": blocking,
        "records": [
            {"profile_id": owner, "records": _records(
                db, "SELECT seq, event_id, profile_id, features FROM touchpoints WHERE profile_id = ? "
                    "ORDER BY seq DESC LIMIT ?", (owner, RECORDS_PER_PROFILE))}
            for owner in dict.fromkeys(owners) if _exists(db, owner)
        ],
        "profiles": [_profile(db, pid) for pid in dict.fromkeys(involved) if _exists(db, pid)],
        "terms": [{"key": k, "n": n} for k in p["term_keys"]
                  for (n,) in db.execute("SELECT n FROM term_counts WHERE key = ?", (k,))],
        "term_totals": [{"field": f, "records": r, "squares": sq} for f in p["term_fields"]
                        for r, sq in db.execute("SELECT records, squares FROM term_totals WHERE field = ?", (f,))],
    }


def _exists(db: sqlite3.Connection, profile_id: str) -> bool:
    return db.execute("SELECT 1 FROM profiles WHERE id = ?", (profile_id,)).fetchone() is not None


def _profile(db: sqlite3.Connection, profile_id: str) -> dict[str, Any]:
    version, created_at, traits = db.execute(
        "SELECT version, created_at, traits FROM profiles WHERE id = ?", (profile_id,)).fetchone()
    keys = [k for (k,) in db.execute("SELECT key FROM identifiers WHERE profile_id = ?", (profile_id,))]
    return {"id": profile_id, "version": version, "created_at": created_at, "traits": _text(traits), "identifiers": keys}


def comparable(ctx: ResolutionContext) -> tuple[Any, ...]:
    """A context with its records keyed by event: the embedded store lists strongly-matched
    profiles' records in set order, which no other store can (or needs to) reproduce."""
    return ctx.identifier_profiles, {r.event_id: r for r in ctx.records}, ctx.profiles, ctx.terms


class DifferentialRun:
    """Resolve batches through the embedded store and through the overlay; assert they agree."""

    def __init__(self, directory: Path, rules: Rules) -> None:
        self.rules = rules
        self.policy = load_policy()
        self.reference = SQLiteStore(directory / "reference.db")
        self.server = SQLiteStore(directory / "server.db")
        #: Every read the overlay needed: one per batch, plus follow-ups.
        self.reads: list[NeighbourhoodRequest] = []
        self.overlays: list[BatchOverlay] = []

    async def __aenter__(self) -> "DifferentialRun":
        await self.reference.open()
        await self.server.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reference.close()
        await self.server.close()

    def read(self, request: NeighbourhoodRequest) -> Snapshot:
        self.reads.append(request)
        return snapshot_from_row(neighbourhood_row(self.server.db, request), request)

    def settle(self, overlay: BatchOverlay, ask: Callable[[], T | Missing]) -> T:
        for _ in range(4):
            answer = ask()
            if not isinstance(answer, Missing):
                return answer
            overlay.snapshot.absorb(self.read(answer.request(overlay.snapshot, self.rules, len(overlay.retired))))
        raise AssertionError("the overlay kept asking for more")

    async def resolve(self, batch: Sequence[PreparedEvent]) -> list[Outcome]:
        overlay = BatchOverlay(self.read(NeighbourhoodRequest.for_batch(batch, self.rules)))
        self.overlays.append(overlay)
        outcomes: list[Outcome] = []
        async with self.reference.transaction() as tx:
            for prepared in batch:
                expected = await tx.outcome(prepared.event_id)
                assert self.settle(overlay, lambda: overlay.outcome(prepared.event_id)) == expected, prepared.event_id
                if expected is not None:
                    outcomes.append(expected)
                    continue
                context = await tx.context(prepared, self.rules)
                seen = self.settle(overlay, lambda: overlay.context(prepared, self.rules))
                assert comparable(seen) == comparable(context), prepared.event_id
                decision = decide(prepared, context, self.rules)
                assert decide(prepared, seen, self.rules).as_dict() == decision.as_dict(), prepared.event_id
                now = datetime.now(timezone.utc).isoformat()
                changes = plan_changes(prepared, decision, context.profiles, policy=self.policy, records=context.records,
                                       resolved_at=now)
                await tx.apply(prepared, changes)
                overlay.apply(prepared, changes, now)
                outcomes.append(Outcome(prepared.event_id, changes.decision.as_dict(), changes.deltas))
        await self._commit(overlay)
        return outcomes

    async def _commit(self, overlay: BatchOverlay) -> None:
        """Write the batch to the server the way the Neo4j store does, from its WritePlan rows
        alone, and check the server now holds exactly what the reference wrote."""
        apply_plan(self.server.db, plan_writes(overlay))
        assert graph_state(self.server.db) == graph_state(self.reference.db)
