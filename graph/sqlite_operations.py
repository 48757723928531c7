"""The embedded store's writes for operations by people (merge, split, review verdicts, erasure),
and the term counts that resolution and erasure both keep (:func:`count_terms`, :class:`BatchTerms`).

Each function runs inside the caller's ``BEGIN IMMEDIATE`` transaction, so an operation is
written whole or not at all, and its deltas enter the same outbox the worker relays.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Iterable, Iterator, Mapping, Sequence, TypeVar

import orjson

from graph.store import ErasureWrite, OperationRecord, OperationWrite, StoreConflict
from identity.deltas import IdentityDelta
from identity.features import split_key, term_field
from identity.model import FieldTerms, ProfileState, TermCounts


_V = TypeVar("_V")

#: Values bound per ``IN (...)`` list: far below any SQLite's limit on a statement's parameters.
IN_LIST_SIZE = 500


def placeholders(n: int) -> str:
    """``?, ?, ...``: one parameter mark per value of an ``IN (...)`` list."""
    return ",".join("?" * n)


def in_lists(values: Sequence[_V]) -> Iterator[Sequence[_V]]:
    """``values`` in slices of at most :data:`IN_LIST_SIZE`, one statement's ``IN (...)`` list each."""
    for start in range(0, len(values), IN_LIST_SIZE):
        yield values[start:start + IN_LIST_SIZE]


def upsert_profile(db: sqlite3.Connection, profile: ProfileState, now: str, *, revive: bool = False) -> None:
    traits = orjson.dumps({name: t.as_dict() for name, t in profile.traits.items()})
    consent = orjson.dumps({purpose: c.as_dict() for purpose, c in profile.consent.items()})
    db.execute(
        "INSERT INTO profiles (id, version, created_at, updated_at, traits, consent) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at, "
        "traits = excluded.traits, consent = excluded.consent"
        + (", merged_into = NULL" if revive else ""),
        (profile.id, profile.version, profile.created_at, now, traits, consent),
    )


def count_terms(db: sqlite3.Connection, changes: Mapping[str, int]) -> None:
    """Add (or, negative, take back) the profiles counting each term key, keeping each field's
    totals; a count that falls to zero is deleted, so an erased value leaves no row behind."""
    totals: dict[str, list[int]] = {}
    for key, change in sorted(changes.items()):
        (after,) = db.execute("INSERT INTO term_counts (key, n) VALUES (?, ?) "
                              "ON CONFLICT (key) DO UPDATE SET n = n + excluded.n RETURNING n", (key, change)).fetchone()
        before = max(after - change, 0)
        if after <= 0:
            db.execute("DELETE FROM term_counts WHERE key = ?", (key,))
            after = 0
        field_totals = totals.setdefault(term_field(key), [0, 0])
        field_totals[0] += after - before
        field_totals[1] += after * after - before * before
    db.executemany(
        "INSERT INTO term_totals (field, records, squares) VALUES (?, ?, ?) ON CONFLICT (field) DO UPDATE SET "
        "records = records + excluded.records, squares = squares + excluded.squares",
        [(f, records, squares) for f, (records, squares) in totals.items()])


def counted_terms(db: sqlite3.Connection, profile_ids: Iterable[str]) -> dict[str, set[str]]:
    """The term keys each of ``profile_ids`` counts, through the touchpoints that brought them."""
    held: dict[str, set[str]] = {p: set() for p in profile_ids}
    for chunk in in_lists(list(held)):
        for profile_id, terms in db.execute(f"SELECT profile_id, terms FROM touchpoints WHERE profile_id IN "
                                            f"({placeholders(len(chunk))}) AND CAST(terms AS TEXT) != '[]'", tuple(chunk)):
            held[profile_id].update(orjson.loads(terms))
    return held


class BatchTerms:
    """A resolution batch's term counts, read once and counted in memory, written at its end.

    Per event the counts took two reads and two or three upserts (~5% of perf.hotpath's profile); the
    batch's events now share one read of their keys and one write per key touched. Each event
    still sees the counts with those of the events before it in the batch.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._values: dict[str, int] = {}
        self._added: Counter[str] = Counter()  # not written yet
        self._totals: dict[str, list[int]] = {}

    def load(self, keys: Sequence[str]) -> None:
        """Read the stored counts of ``keys`` not read yet (0 for a key no profile counts),
        and their fields' totals."""
        missing = list(dict.fromkeys(k for k in keys if k not in self._values))
        if not missing:  # each event's keys were read with the batch's (SQLiteTransaction.prefetch)
            return
        self._load_totals([term_field(k) for k in missing])
        for chunk in in_lists(missing):
            self._values.update(dict.fromkeys(chunk, 0))
            self._values.update(self._db.execute(f"SELECT key, n FROM term_counts WHERE key IN ({placeholders(len(chunk))})",
                                                 tuple(chunk)))

    def _load_totals(self, fields: Sequence[str]) -> None:
        missing = list(dict.fromkeys(f for f in fields if f not in self._totals))
        if missing:
            self._totals.update({f: [0, 0] for f in missing})
            self._totals.update((f, [records, squares]) for f, records, squares in self._db.execute(
                f"SELECT field, records, squares FROM term_totals WHERE field IN ({placeholders(len(missing))})", tuple(missing)))

    def read(self, keys: Sequence[str], fields: Sequence[str]) -> TermCounts:
        """The counts of ``keys`` and the totals of ``fields`` (those with records), this batch's counting included."""
        if not keys:
            return TermCounts()
        self.load(keys)
        self._load_totals(fields)
        totals = {f: FieldTerms(*self._totals[f]) for f in fields if self._totals[f][0] > 0}
        return TermCounts({k: self._values[k] for k in keys}, totals)

    def add(self, keys: Sequence[str]) -> None:
        """One more profile counts each of ``keys`` (brought by a touchpoint, ``ChangeSet.terms``)."""
        self.load(keys)
        for key in dict.fromkeys(keys):
            before = self._values[key]
            self._values[key] = before + 1
            self._added[key] += 1
            totals = self._totals[term_field(key)]
            totals[0] += 1
            totals[1] += 2 * before + 1

    def flush(self) -> None:
        """Write what the batch counted; before its commit."""
        if self._added:
            count_terms(self._db, self._added)
            self._added = Counter()


def _check_versions(db: sqlite3.Connection, expected: dict[str, int]) -> None:
    for profile_id, version in expected.items():
        row = db.execute("SELECT version, merged_into FROM profiles WHERE id = ?", (profile_id,)).fetchone()
        if row is None or row[0] != version or row[1] is not None:
            raise StoreConflict(f"profile {profile_id} changed since it was read; read it again and retry")


def _record_operation(db: sqlite3.Connection, op: OperationRecord, deltas: Sequence[IdentityDelta]) -> None:
    try:
        db.execute("INSERT INTO operations (id, kind, actor, at, record) VALUES (?, ?, ?, ?, ?)",
                   (op.id, op.kind, op.actor, op.at, orjson.dumps(op.record)))
    except sqlite3.IntegrityError:
        raise StoreConflict(f"operation {op.id} was already applied") from None
    db.executemany("INSERT OR IGNORE INTO operation_profiles (profile_id, operation_id) VALUES (?, ?)",
                   [(p, op.id) for p in op.profile_ids])
    db.executemany("INSERT INTO outbox (delta_id, event_id, profile_id, delta) VALUES (?, ?, ?, ?)",
                   [(d.delta_id, op.id, d.profile_id, d.to_json()) for d in deltas])


def _regroup_identifiers(db: sqlite3.Connection, write: OperationWrite, now: str) -> None:
    concerned = [*write.expected, *write.retired, *(p.id for p in write.profiles)]
    db.execute(f"DELETE FROM identifiers WHERE profile_id IN ({placeholders(len(concerned))})", concerned)
    rows = []
    for profile in write.profiles:
        for key in sorted(profile.identifiers):
            first_seen, source = write.identifier_sources.get(key, (now, write.operation.kind))
            rows.append((key, split_key(key)[0], profile.id, first_seen, source))
    db.executemany("INSERT INTO identifiers (key, type, profile_id, first_seen, source) VALUES (?, ?, ?, ?, ?)", rows)


def apply_operation(db: sqlite3.Connection, write: OperationWrite, now: str) -> None:
    op = write.operation
    _check_versions(db, write.expected)
    for profile in write.profiles:
        upsert_profile(db, profile, now, revive=True)
        db.execute("DELETE FROM lineage WHERE retired_id = ?", (profile.id,))
    for retired, survivor in write.retired.items():
        db.execute("UPDATE profiles SET merged_into = ?, updated_at = ? WHERE id = ?", (survivor, now, retired))
        db.execute(
            "INSERT INTO lineage (retired_id, survivor_id, event_id, merged_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (retired_id) DO UPDATE SET survivor_id = excluded.survivor_id",
            (retired, survivor, op.id, now),
        )
    db.executemany("UPDATE touchpoints SET profile_id = ? WHERE event_id = ?",
                   [(p, e) for e, p in write.touchpoints.items()])
    if write.regroup_identifiers:
        _regroup_identifiers(db, write, now)
    db.executemany("INSERT OR IGNORE INTO kept_apart (a, b, operation_id) VALUES (?, ?, ?)",
                   [(*sorted(pair), op.id) for pair in write.kept_apart])
    if write.review is not None:
        review_id, status = write.review
        changed = db.execute(
            "UPDATE reviews SET status = ?, decided_at = ?, decided_by = ?, operation_id = ? WHERE id = ? AND status = 'open'",
            (status, now, op.actor, op.id, review_id),
        ).rowcount
        if not changed:
            raise StoreConflict(f"review {review_id} is no longer open")
    _record_operation(db, op, write.deltas)


def erase(db: sqlite3.Connection, write: ErasureWrite) -> None:
    """Everything personal of the family goes; what stays names no one (see docs/api.md)."""
    _check_versions(db, {write.profile_id: write.version})
    family = write.family
    marks = placeholders(len(family))
    rows = db.execute(f"SELECT event_id, terms FROM touchpoints WHERE profile_id IN ({marks})", family).fetchall()
    events = [e for e, _ in rows]
    emarks = placeholders(len(events))
    # The counts of the family's values go with them (a value only they had leaves no row).
    count_terms(db, {key: -n for key, n in Counter(k for _, terms in rows for k in orjson.loads(terms)).items()})
    db.execute(f"DELETE FROM blocking WHERE seq IN (SELECT seq FROM touchpoints WHERE profile_id IN ({marks}))", family)
    db.execute(f"DELETE FROM decisions WHERE event_id IN ({emarks})", events)
    db.execute(f"DELETE FROM outbox WHERE profile_id IN ({marks})", family)
    db.execute(f"DELETE FROM outbox WHERE event_id IN ({emarks})", events)
    db.execute(f"DELETE FROM reviews WHERE event_id IN ({emarks})", events)
    db.execute(f"DELETE FROM reviews WHERE id IN (SELECT review_id FROM review_profiles WHERE profile_id IN ({marks}))", family)
    db.execute(f"DELETE FROM touchpoints WHERE profile_id IN ({marks})", family)
    db.execute(f"DELETE FROM identifiers WHERE profile_id IN ({marks})", family)
    db.execute(f"DELETE FROM kept_apart WHERE a IN ({marks}) OR b IN ({marks})", (*family, *family))
    # Records of earlier operations on the family may carry an operator's free-text reason.
    operations = [o for (o,) in db.execute(
        f"SELECT DISTINCT operation_id FROM operation_profiles WHERE profile_id IN ({marks})", family)]
    if operations:
        omarks = placeholders(len(operations))
        db.execute(f"DELETE FROM operations WHERE id IN ({omarks})", operations)
        db.execute(f"DELETE FROM operation_profiles WHERE operation_id IN ({omarks})", operations)
    db.execute(f"DELETE FROM lineage WHERE retired_id IN ({marks}) OR survivor_id IN ({marks})", (*family, *family))
    db.execute(f"UPDATE profiles SET merged_into = NULL WHERE id IN ({marks})", family)
    db.execute(f"DELETE FROM profiles WHERE id IN ({marks})", family)
    op = write.operation
    db.executemany("INSERT OR REPLACE INTO tombstones (profile_id, erased_at, operation_id) VALUES (?, ?, ?)",
                   [(p, op.at, op.id) for p in family])
    db.executemany("INSERT OR IGNORE INTO tombstone_keys (hash, profile_id, via) VALUES (?, ?, ?)",
                   [(h, write.profile_id, via) for h, via in write.hashes])
    _record_operation(db, op, [write.delta])


def compact(db: sqlite3.Connection) -> None:
    """Leave no old page image behind: secure_delete zeroes freed cells, the checkpoint empties
    the WAL, and VACUUM rewrites the file so no page keeps a stale copy. Costs a full rewrite of
    the file, which erasures (rare, and legally required) can afford."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("VACUUM")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
