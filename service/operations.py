"""Operations by people on the identity graph: the customer's corrections, consent and erasure,
and an operator's merges, splits and review verdicts.

Each is one atomic store write with its own decision record (who, why, under which rule and
policy versions) and its deltas in the outbox the worker relays, so scenarios hear of it as
they hear of any other change. The customer's corrections and consent are touchpoints of the
``customer`` scenario, resolved like any other event: the sovereignty policy ranks them above
scenario writes, and deltas and idempotency come with the resolver.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import combinations
from typing import Any, Awaitable, Callable, Mapping, Protocol, TypeVar

from graph.store import (ErasureWrite, Family, OperationDocument, OperationRecord, OperationWrite, Outcome,
                         ProfileOperations, ReadViews, ResolutionStore, ReviewRecord, StoreConflict)
from graph.tombstones import erasure_hashes
from identity.deltas import IdentityDelta
from identity.events import EventRejected, parse_event
from identity.features import prepare
from identity.model import stable_id
from identity.plan import OperationCause, erased_delta, operation_delta, plan_merge, profile_view
from identity.policy import CUSTOMER, Policy, load_policy
from identity.rules import Rules
from service.resolver import Resolver

T = TypeVar("T")
#: Attempts of an operation whose profiles another writer changed between its read and write.
ATTEMPTS = 5
OPERATOR_SCENARIO = "idgraph.operator"


class OperationError(ValueError):
    """An operation that cannot be done as asked (the API answers 422)."""


class NotFound(OperationError):
    """What the operation names does not exist (the API answers 404)."""


class Conflict(OperationError):
    """The operation was already done or undone (the API answers 409)."""


@dataclass(frozen=True, slots=True)
class OperationResult:
    #: The operation's record; an erasure of an id already erased answers with its tombstone instead.
    record: Mapping[str, Any]
    deltas: list[IdentityDelta]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def customer_traits(policy: Policy) -> list[str]:
    """Traits the policy puts the customer first for: the ones a customer may correct."""
    def first(rule: Any, owners: tuple[str, ...]) -> bool:
        return CUSTOMER in owners or (isinstance(rule, tuple) and rule[:1] == (CUSTOMER,))
    return sorted(name for name, t in policy.traits.items() if first(t.rule, t.owners))


class OperationsStore(ResolutionStore, ReadViews, ProfileOperations, Protocol):
    """The store as operations use it: they read profiles and reviews, write through the
    operations role, and resolve the customer's own events like any touchpoint."""


class Operations:
    """Operations on one store under one rule set and sovereignty policy."""

    def __init__(self, store: OperationsStore, rules: Rules, policy: Policy | None = None) -> None:
        self.store = store
        self.rules = rules
        self.policy = policy or load_policy()
        self.resolver = Resolver(store, rules, policy=self.policy)

    # --- the customer's own events --------------------------------------------------------

    async def customer_event(self, profile_id: str, *, type_: str, actor: str, idempotency_key: str | None = None,
                             traits: dict[str, Any] | None = None, consent: dict[str, bool] | None = None) -> Outcome:
        """Resolve a correction or consent answer as a touchpoint of the ``customer`` scenario."""
        live = await self._live(profile_id)
        key = idempotency_key or uuid.uuid4().hex
        document = {
            "event_id": stable_id("api", actor, type_, key), "scenario": CUSTOMER, "type": type_,
            "occurred_at": _now(), "traits": traits or {}, "consent": consent,
            "payload": {"actor": actor}, "causation": {"profile_id": live},
        }
        try:
            prepared = prepare(parse_event({k: v for k, v in document.items() if v is not None}), self.rules)
        except EventRejected as exc:
            raise OperationError(str(exc)) from None
        (outcome,) = await self.resolver.resolve([prepared])
        return outcome

    # --- merge, review verdicts, split -----------------------------------------------------

    async def merge(self, profile_ids: list[str], *, actor: str, reason: str) -> OperationResult:
        return await self._retrying(lambda: self._merge(profile_ids, actor, reason, None))

    async def decide_review(self, review_id: int, approve: bool, *, actor: str, reason: str) -> OperationResult:
        async def once() -> OperationResult:
            review = await self.store.review(review_id)
            if review is None:
                raise NotFound(f"no review {review_id}")
            if review["status"] != "open":
                raise Conflict(f"review {review_id} was already {review['status']}")
            if approve:
                return await self._merge(review["profile_ids"], actor, reason, review_id)
            return await self._reject(review, actor, reason)
        return await self._retrying(once)

    async def split(self, profile_id: str, separate: str, *, actor: str, reason: str) -> OperationResult:
        from service.split import plan_split  # the replay needs an embedded store; imported when used

        async def once() -> OperationResult:
            family = await self._family(profile_id)
            if separate not in family.retired:
                raise OperationError(f"{separate} was not merged into {family.profile.id}: nothing to split off")
            op = self._record("split", actor, reason, [family.profile.id, *family.retired])
            write = await plan_split(family, separate, op, self.rules, self.policy)
            await self.store.apply_operation(write)
            return OperationResult(write.operation.record, write.deltas)
        return await self._retrying(once)

    async def _merge(self, ids: list[str], actor: str, reason: str, review_id: int | None) -> OperationResult:
        families = {f.profile.id: f for f in [await self._family(i) for i in ids]}
        if len(families) < 2 and review_id is None:
            raise Conflict(f"{', '.join(ids)} are already one profile")
        op = self._record("review.approve" if review_id is not None else "merge", actor, reason,
                          sorted({*families, *(r for f in families.values() for r in f.retired)}))
        op.record["review_id"] = review_id
        review = None if review_id is None else (review_id, "approved")
        if len(families) < 2:
            write = OperationWrite(op, expected={}, review=review)
            await self.store.apply_operation(write)
            return OperationResult(op.record, [])
        target, losers = plan_merge([f.profile for f in families.values()], self.policy)
        survivor = families[target.id]
        target.version = survivor.profile.version + 1
        cause = OperationCause(op.id, op.kind, "merge", OPERATOR_SCENARIO, op.at)
        delta = operation_delta(cause, "profile.merged", target, profile_view(survivor.profile), losers)
        sources: dict[str, tuple[str, str]] = {}
        for family in families.values():
            for key, (first_seen, source) in family.identifier_sources.items():
                if key not in sources or first_seen < sources[key][0]:
                    sources[key] = (first_seen, source)
        op.record["survivor"], op.record["retired"] = target.id, losers
        write = OperationWrite(
            op, expected={f.profile.id: f.profile.version for f in families.values()}, profiles=[target],
            retired={r: target.id for f in families.values() for r in (*f.retired, f.profile.id) if r != target.id},
            touchpoints={e: target.id for pid in losers for e, _ in families[pid].touchpoints},
            regroup_identifiers=True, identifier_sources=sources, deltas=[delta], review=review,
        )
        await self.store.apply_operation(write)
        return OperationResult(op.record, [delta])

    async def _reject(self, review: ReviewRecord, actor: str, reason: str) -> OperationResult:
        live = sorted({await self._live(p) for p in review["profile_ids"]})
        op = self._record("review.reject", actor, reason, live)
        op.record["review_id"] = review["id"]
        pairs = list(combinations(live, 2))  # live is sorted, so each pair is too
        op.record["kept_apart"] = [list(p) for p in pairs]
        await self.store.apply_operation(OperationWrite(op, expected={}, kept_apart=pairs,
                                                        review=(review["id"], "rejected")))
        return OperationResult(op.record, [])

    # --- erasure ---------------------------------------------------------------------------

    async def erase(self, profile_id: str, *, actor: str, requested_by: str) -> OperationResult:
        """Erase the customer behind an id; an id already erased answers with its tombstone."""
        async def once() -> OperationResult:
            family = await self.store.family(profile_id)
            if family is None:
                tombstone = await self.store.tombstone(profile_id)
                if tombstone is None:
                    raise NotFound(f"no profile {profile_id}")
                return OperationResult({"kind": "erase", **tombstone, "already_erased": True}, [])
            return await self._erase(family, actor, requested_by)
        return await self._retrying(once)

    async def _erase(self, family: Family, actor: str, requested_by: str) -> OperationResult:
        live = family.profile.id
        ids = [live, *family.retired]
        # No free-text reason: whatever a person types about the customer would outlive them here.
        op = self._record("erase", actor, f"erasure requested by the {requested_by}", ids)
        op.record["identifiers"], op.record["touchpoints"] = len(family.profile.identifiers), len(family.touchpoints)
        keys = set(family.profile.identifiers)
        for _, document in family.touchpoints:
            try:
                keys.update(prepare(parse_event(document), self.rules).identifier_keys)
            except EventRejected:
                pass  # its keys were never attached, so there is nothing of them to recognise
        hashes = erasure_hashes(self.store.erasure_key, keys, ids, [e for e, _ in family.touchpoints])
        scenario = CUSTOMER if requested_by == "customer" else OPERATOR_SCENARIO
        delta = erased_delta(OperationCause(op.id, "erase", "erase", scenario, op.at), live,
                             family.profile.version + 1, family.retired)
        await self.store.erase(ErasureWrite(op, live, family.profile.version, ids, hashes, delta))
        return OperationResult(op.record, [delta])

    # --- helpers ---------------------------------------------------------------------------

    def _record(self, kind: str, actor: str, reason: str, profile_ids: list[str]) -> OperationRecord:
        """The common part of an operation's record; each operation then adds the fields of its kind."""
        at = _now()
        op_id = stable_id("op", kind, actor, at, uuid.uuid4().hex)
        record = OperationDocument(operation_id=op_id, kind=kind, actor=actor, reason=reason, at=at,
                                   profile_ids=list(profile_ids), rule_version=self.rules.version,
                                   policy_version=self.policy.version)
        return OperationRecord(op_id, kind, actor, at, tuple(profile_ids), record)

    async def _live(self, profile_id: str) -> str:
        live = await self.store.survivor(profile_id)
        if live is None:
            raise NotFound(f"no profile {profile_id}")
        return live

    async def _family(self, profile_id: str) -> Family:
        family = await self.store.family(profile_id)
        if family is None:
            raise NotFound(f"no profile {profile_id}")
        return family

    async def _retrying(self, once: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await once()
            except StoreConflict:
                if attempt == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")
