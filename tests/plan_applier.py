"""Writing a batch's WritePlan rows into the embedded schema, statement by statement, as the
Neo4j write statements write the graph; and the graph's state, for comparing two stores.

This proves the plan carries everything the embedded store would have written (no row
missing, none on the wrong profile) without a Neo4j server. Each block below mirrors one
statement of graph/cypher.py, including what it must refuse: a stale version (lock_profiles),
an identifier created twice (create_identifiers), a row whose node does not exist.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from graph.write_plan import WritePlan
from identity.features import split_key


def _load(raw: bytes | str) -> Any:
    return orjson.loads(raw)


def _one(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> Any:
    row = db.execute(sql, args).fetchone()
    return None if row is None else row[0]


def _lock_profiles(db: sqlite3.Connection, plan: WritePlan) -> None:
    for row in plan.locks:
        live = _one(db, "SELECT version FROM profiles WHERE id = ? AND merged_into IS NULL", (row["id"],))
        assert live == row["version"], f"lock_profiles: {row['id']} is at {live}, the batch read {row['version']}"


def _upsert_profiles(db: sqlite3.Connection, plan: WritePlan) -> None:
    db.executemany(
        "INSERT INTO profiles (id, version, created_at, updated_at, traits) VALUES (:id, :version, :created_at, "
        ":updated_at, :traits) ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
        "updated_at = excluded.updated_at, traits = excluded.traits",
        plan.profiles,
    )


def _merge(db: sqlite3.Connection, row: dict[str, Any]) -> None:
    """record_merges, move_identifiers and move_touchpoints for one retired profile."""
    retired, survivor = row["retired"], row["survivor"]
    assert _one(db, "SELECT 1 FROM profiles WHERE id = ?", (row["into"],)), f"record_merges: no profile {row['into']}"
    db.execute("UPDATE profiles SET merged_into = ?, updated_at = ? WHERE id = ?", (survivor, row["merged_at"], retired))
    db.execute("UPDATE profiles SET merged_into = ? WHERE merged_into = ?", (survivor, retired))
    db.execute("UPDATE lineage SET survivor_id = ? WHERE survivor_id = ?", (survivor, retired))
    db.execute("INSERT INTO lineage (retired_id, survivor_id, event_id, merged_at) VALUES (?, ?, ?, ?)",
               (retired, survivor, row["event_id"], row["merged_at"]))
    db.execute("UPDATE OR IGNORE identifiers SET profile_id = ? WHERE profile_id = ?", (survivor, retired))
    db.execute("DELETE FROM identifiers WHERE profile_id = ?", (retired,))
    db.execute("UPDATE touchpoints SET profile_id = ? WHERE profile_id = ?", (survivor, retired))


def _identifiers(db: sqlite3.Connection, plan: WritePlan) -> None:
    created = set()
    for row in plan.identifiers:
        # The uniqueness constraint: an identifier read as absent must still be absent.
        assert not _one(db, "SELECT 1 FROM identifiers WHERE key = ?", (row["key"],)), f"create_identifiers: {row['key']}"
        created.add(row["key"])
    for row in plan.attachments:
        known = row["key"] in created or _one(db, "SELECT 1 FROM identifiers WHERE key = ?", (row["key"],))
        assert known, f"attach_identifiers: no Identifier node {row['key']}"
        assert _one(db, "SELECT 1 FROM profiles WHERE id = ?", (row["profile_id"],)), f"attach_identifiers: {row}"
        db.execute("INSERT OR IGNORE INTO identifiers (key, type, profile_id, first_seen, source) VALUES (?, ?, ?, ?, ?)",
                   (row["key"], split_key(row["key"])[0], row["profile_id"], row["first_seen"], row["source"]))


def _record_events(db: sqlite3.Connection, plan: WritePlan) -> None:
    for row in plan.events:
        assert _one(db, "SELECT 1 FROM profiles WHERE id = ?", (row["profile_id"],)), f"record_events: {row['profile_id']}"
        seq = db.execute(
            "INSERT INTO touchpoints (event_id, profile_id, scenario, type, occurred_at, ingested_at, event, features, terms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row["event_id"], row["profile_id"], row["scenario"], row["type"], row["occurred_at"], row["ingested_at"],
             row["event"], row["features"], orjson.dumps(row["terms"])),
        ).lastrowid
        db.executemany("INSERT INTO blocking (key, seq) VALUES (?, ?)", [(k, seq) for k in row["blocking_keys"]])
        db.execute("INSERT INTO decisions (event_id, profile_id, action, confidence, rule_version, decided_at, record) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", (row["event_id"], row["decided_profile_id"], row["action"],
                                                    row["confidence"], row["rule_version"], row["decided_at"], row["record"]))
        for review in row["reviews"]:
            db.execute("INSERT INTO reviews (event_id, profile_ids, reason, confidence, status, created_at) "
                       "VALUES (?, ?, ?, ?, 'open', ?)", (row["event_id"], orjson.dumps(review["profile_ids"]),
                                                          review["reason"], review["confidence"], row["decided_at"]))
        for delta in sorted(row["deltas"], key=lambda d: d["index"]):
            db.execute("INSERT INTO outbox (delta_id, event_id, profile_id, delta) VALUES (?, ?, ?, ?)",
                       (delta["delta_id"], row["event_id"], delta["profile_id"], delta["json"]))


def _count_terms(db: sqlite3.Connection, plan: WritePlan) -> None:
    for row in plan.terms:
        before = _one(db, "SELECT n FROM term_counts WHERE key = ?", (row["key"],)) or 0
        after = before + row["add"]
        db.execute("INSERT INTO term_counts (key, n) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET n = excluded.n",
                   (row["key"], after))
        db.execute("INSERT INTO term_totals (field, records, squares) VALUES (?, ?, ?) ON CONFLICT (field) DO UPDATE "
                   "SET records = records + excluded.records, squares = squares + excluded.squares",
                   (row["field"], row["add"], after * after - before * before))


def apply_plan(db: sqlite3.Connection, plan: WritePlan) -> None:
    """The batch write, in statement order, all or nothing."""
    db.execute("BEGIN IMMEDIATE")
    try:
        _lock_profiles(db, plan)
        _upsert_profiles(db, plan)
        for row in plan.merges:
            _merge(db, row)
        _identifiers(db, plan)
        _count_terms(db, plan)
        _record_events(db, plan)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def graph_state(db: sqlite3.Connection) -> dict[str, Any]:
    """Everything resolution wrote, minus wall-clock times (each store takes its own)."""
    q = db.execute
    return {
        "profiles": {i: (v, c, _load(t), m) for i, v, c, t, m in q(
            "SELECT id, version, created_at, traits, merged_into FROM profiles")},
        "identifiers": set(q("SELECT key, type, profile_id, source FROM identifiers")),
        "touchpoints": [(e, p, s, t, o, _load(ev), _load(f)) for e, p, s, t, o, ev, f in q(
            "SELECT event_id, profile_id, scenario, type, occurred_at, event, features FROM touchpoints ORDER BY seq")],
        "blocking": set(q("SELECT b.key, t.event_id FROM blocking b JOIN touchpoints t ON t.seq = b.seq")),
        "decisions": {e: (p, a, c, v, _load(r)) for e, p, a, c, v, r in q(
            "SELECT event_id, profile_id, action, confidence, rule_version, record FROM decisions")},
        "reviews": [(e, _load(p), r, c, s) for e, p, r, c, s in q(
            "SELECT event_id, profile_ids, reason, confidence, status FROM reviews ORDER BY id")],
        "outbox": [(d, e, p, _load(x), pub) for d, e, p, x, pub in q(
            "SELECT delta_id, event_id, profile_id, delta, published FROM outbox ORDER BY seq")],
        "lineage": dict(q("SELECT retired_id, survivor_id FROM lineage")),
        "term_counts": dict(q("SELECT key, n FROM term_counts")),
        "term_totals": set(q("SELECT field, records, squares FROM term_totals")),
        "touchpoint_terms": dict(q("SELECT event_id, terms FROM touchpoints")),
    }
