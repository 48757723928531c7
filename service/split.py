"""Splitting a wrong merge: the profile's touchpoints re-resolved without the wrong link.

The touchpoints are replayed, in their arrival order, through the real resolver into a
throwaway embedded store in which the two profiles are kept apart. The replay reads and writes
that store only through the store interface, so a split plans the same whatever store the
graph lives in, and the plan is written to the graph's store as any operation is. Profile ids derive from the
events that created them, so the replay recreates the same ids; the event that merged the two
now links to one side. Deterministic: the same family gives the same split. The replay uses the
current rules and policy, as any re-resolution would.
"""

from __future__ import annotations

from graph.sqlite import SQLiteStore
from graph.store import Family, OperationRecord, OperationWrite
from identity.events import parse_event
from identity.features import prepare
from identity.model import ProfileState
from identity.plan import OperationCause, operation_delta, profile_view
from identity.policy import Policy
from identity.rules import Rules
from service.resolver import Resolver

OPERATOR_SCENARIO = "idgraph.operator"


async def _replay(family: Family, separate: str, op: OperationRecord, rules: Rules,
                  policy: Policy) -> tuple[dict[str, str], dict[str, ProfileState], dict[str, str | None]]:
    """(event -> live profile, live states, family id -> its survivor, None if not recreated) of the replay."""
    batch = [prepare(parse_event(document), rules) for _, document in family.touchpoints]
    async with SQLiteStore(":memory:") as replay:
        await replay.apply_operation(OperationWrite(op, expected={}, kept_apart=[(family.profile.id, separate)]))
        await Resolver(replay, rules, policy=policy).resolve(batch)
        assignments = dict(await replay.assignments())
        states: dict[str, ProfileState] = {}
        for profile_id in sorted(set(assignments.values())):
            replayed = await replay.family(profile_id)
            assert replayed is not None, f"{profile_id} holds touchpoints of the replay, so it is live"
            states[profile_id] = replayed.profile
        survivors = {pid: await replay.survivor(pid) for pid in (family.profile.id, *family.retired)}
    return assignments, states, survivors


async def plan_split(family: Family, separate: str, op: OperationRecord, rules: Rules, policy: Policy) -> OperationWrite:
    live = family.profile.id
    assignments, states, survivors = await _replay(family, separate, op, rules, policy)
    versions = {live: family.profile.version, **family.retired}
    # Each side continues past every version consumers may have seen of it (or of the survivor).
    floor = max(versions.values())
    for state in states.values():
        state.version = max(floor, versions.get(state.id, 0)) + 1
    home = live if live in states else survivors[live] or next(iter(states))
    retired = {pid: survivors[pid] or home for pid in versions if pid not in states}
    cause = OperationCause(op.id, op.kind, "split", OPERATOR_SCENARIO, op.at)
    before = profile_view(family.profile)
    deltas = [operation_delta(cause, "profile.split", s, before if s.id == live else {}) for s in
              sorted(states.values(), key=lambda s: s.id != live)]
    op.record["separated"], op.record["profiles"] = separate, sorted(states)
    op.record["assignments"] = dict(assignments)
    return OperationWrite(
        op, expected={live: family.profile.version}, profiles=list(states.values()), retired=retired,
        touchpoints={e: p for e, p in assignments.items() if p != live}, regroup_identifiers=True,
        identifier_sources=family.identifier_sources, deltas=deltas, kept_apart=[(live, separate)],
    )
