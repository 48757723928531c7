"""The Neo4j store's writes for operations by people, as lists of named statements run in one
write transaction (graph/cypher.py); and reading a family back. Pure: no driver here.

An operation reads its family first (one read, ``family``) and writes in one transaction that
begins with ``lock_profiles``: the same optimistic check as a batch write, so an operation and
a worker's batch that touch one profile cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

from graph import cypher
from graph.cypher import Statement
from graph.store import ErasureWrite, Family, OperationRecord, OperationWrite, StoreConflict, StoreError
from graph.tombstones import _EVENT_PREFIX
from graph.write_plan import consent_json
from identity.deltas import IdentityDelta
from identity.features import split_key
from identity.model import ProfileState, TraitValue, consent_from_json, tombstone_hash


def _ignore(rows: list[dict[str, Any]]) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Step:
    statement: Statement
    params: dict[str, Any]
    check: Callable[[list[dict[str, Any]]], None] = field(default=_ignore)


def event_hash(secret: bytes, event_id: str) -> list[str]:
    return [tombstone_hash(secret, _EVENT_PREFIX + event_id)]


def family_from_row(row: dict[str, Any]) -> Family:
    traits = {n: TraitValue(**t) for n, t in orjson.loads(row["traits"]).items()}
    consent = consent_from_json(orjson.loads(row["consent"])) if row.get("consent") else {}
    keys = {i["key"] for i in row["identifiers"]}
    state = ProfileState(row["id"], int(row["version"]), row["created_at"], keys, traits, consent)
    return Family(state, {r["id"]: int(r["version"]) for r in row["retired"]},
                  [(t["event_id"], orjson.loads(t["event"])) for t in row["touchpoints"]],
                  {i["key"]: (i["first_seen"], i["source"]) for i in row["identifiers"]})


def _stale(rows: list[dict[str, Any]]) -> None:
    if rows:
        raise StoreConflict(f"profiles changed since they were read: {', '.join(sorted(r['id'] for r in rows))}")


def _all_written(sent: int, name: str) -> Callable[[list[dict[str, Any]]], None]:
    def check(rows: list[dict[str, Any]]) -> None:
        if rows and rows[0].get("written", sent) != sent:
            raise StoreError(f"{name} wrote {rows[0]['written']} of {sent} rows")
    return check


def _decided(rows: list[dict[str, Any]]) -> None:
    if not rows or rows[0]["decided"] != 1:
        raise StoreConflict("the review is no longer open")


def _lock(expected: dict[str, int]) -> list[Step]:
    rows = [{"id": p, "version": v} for p, v in sorted(expected.items())]
    return [Step(cypher.LOCK_PROFILES, {"profiles": rows}, _stale)] if rows else []


def _record(op: OperationRecord, deltas: list[IdentityDelta]) -> Step:
    return Step(cypher.RECORD_OPERATION, {
        "id": op.id, "kind": op.kind, "actor": op.actor, "at": op.at, "record": orjson.dumps(op.record).decode(),
        "profile_ids": list(op.profile_ids),
        "deltas": [{"delta_id": d.delta_id, "index": i, "profile_id": d.profile_id, "json": d.to_json().decode()}
                   for i, d in enumerate(deltas)],
    })


def operation_steps(write: OperationWrite, now: str) -> list[Step]:
    op = write.operation
    steps = _lock(write.expected)
    if write.profiles:
        rows = [{"id": p.id, "version": p.version, "created_at": p.created_at, "updated_at": now,
                 "traits": orjson.dumps({n: t.as_dict() for n, t in p.traits.items()}).decode(),
                 "consent": consent_json(p)} for p in write.profiles]
        steps += [Step(cypher.UPSERT_PROFILES, {"profiles": rows}),
                  Step(cypher.REVIVE_PROFILES, {"ids": [p.id for p in write.profiles]})]
    if write.retired:
        rows = [{"retired": r, "survivor": s, "operation_id": op.id, "at": now} for r, s in sorted(write.retired.items())]
        steps.append(Step(cypher.RETIRE_PROFILES, {"retired": rows}, _all_written(len(rows), "retire_profiles")))
    if write.touchpoints:
        rows = [{"event_id": e, "profile_id": p} for e, p in sorted(write.touchpoints.items())]
        steps.append(Step(cypher.REASSIGN_TOUCHPOINTS, {"touchpoints": rows}, _all_written(len(rows), "reassign_touchpoints")))
    if write.regroup_identifiers:
        concerned = sorted({*write.expected, *write.retired, *(p.id for p in write.profiles)})
        rows = [{"profile_id": p.id, "key": k, "type": split_key(k)[0], "at": now,
                 "first_seen": write.identifier_sources.get(k, (now, op.kind))[0],
                 "source": write.identifier_sources.get(k, (now, op.kind))[1]}
                for p in write.profiles for k in sorted(p.identifiers)]
        steps += [Step(cypher.DROP_IDENTIFIERS, {"ids": concerned}),
                  Step(cypher.SET_IDENTIFIERS, {"identifiers": rows}, _all_written(len(rows), "set_identifiers"))]
    if write.kept_apart:
        steps.append(Step(cypher.KEEP_APART, {"pairs": [sorted(p) for p in write.kept_apart], "operation_id": op.id}))
    if write.review is not None:
        review_id, status = write.review
        steps.append(Step(cypher.DECIDE_REVIEW, {"review_id": review_id, "status": status, "at": now,
                                                 "actor": op.actor, "operation_id": op.id}, _decided))
    if write.touchpoints or write.retired:
        moved = sorted({*write.expected, *write.retired, *write.touchpoints.values()})
        steps.append(Step(cypher.COUNT_RECORDS, {"ids": moved}))
    return [*steps, _record(op, write.deltas)]


def erasure_steps(write: ErasureWrite) -> list[Step]:
    family = {"family": list(write.family)}
    op = write.operation
    return [
        *_lock({write.profile_id: write.version}),
        # Keys first, while the touchpoints and identifiers that lead to them still exist.
        Step(cypher.ERASE_BLOCKING_KEYS, family),
        Step(cypher.ERASE_TERMS, family),
        Step(cypher.ERASE_IDENTIFIERS, family),
        Step(cypher.ERASE_TOUCHPOINTS, family),
        Step(cypher.ERASE_RECORDS, family),
        Step(cypher.ERASE_OPERATIONS, family),
        Step(cypher.ERASE_PROFILES, family),
        Step(cypher.RECORD_TOMBSTONE, {**family, "erased_at": op.at, "operation_id": op.id,
                                       "hashes": [{"hash": h, "via": v} for h, v in write.hashes],
                                       "profile_id": write.profile_id}),
        _record(op, [write.delta]),
    ]
