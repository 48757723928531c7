"""Schema of the embedded store, created and migrated by the store itself.

Each migration is applied once, in order, inside a transaction, and recorded in
``PRAGMA user_version``; a file written by a newer release is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

from graph.store import POSITIONAL


def _add_outbox_claims(db: sqlite3.Connection) -> None:
    """11: outbox claims (``ResolutionStore.transaction``'s ``claim_s``): until ``claimed_until``
    (epoch milliseconds) a worker's deltas are its own to send, and the outbox relay of every
    other worker leaves them alone. Rows written before, and without a claim, hold 0.

    ``ADD COLUMN`` has no ``IF NOT EXISTS``; the column is looked for first, so that running
    this again changes nothing, as with the migrations before it."""
    if "claimed_until" not in {row[1] for row in db.execute("PRAGMA table_info(outbox)")}:
        db.execute("ALTER TABLE outbox ADD COLUMN claimed_until INTEGER NOT NULL DEFAULT 0")


def _count_terms_per_profile(db: sqlite3.Connection) -> None:
    """12: term frequencies count profiles, not touchpoints (identity/plan.py ``terms_brought``):
    each touchpoint keeps only the keys no earlier touchpoint of its profile counts, and the
    counts and field totals are made again from what the touchpoints keep. Run again on its own
    result it changes nothing: the earliest touchpoint counting a key for its profile still does."""
    db.execute("CREATE TEMP TABLE first_terms AS SELECT t.profile_id, j.value AS key, MIN(t.seq) AS seq "
               "FROM touchpoints t, json_each(CAST(t.terms AS TEXT)) j GROUP BY t.profile_id, j.value")
    db.execute("CREATE INDEX temp.first_terms_seq ON first_terms (seq)")
    db.execute("UPDATE touchpoints SET terms = (SELECT json_group_array(key) FROM first_terms f WHERE f.seq = touchpoints.seq) "
               "WHERE CAST(terms AS TEXT) != '[]'")
    db.execute("DELETE FROM term_counts")
    db.execute("INSERT INTO term_counts (key, n) SELECT key, COUNT(*) FROM first_terms GROUP BY key")
    db.execute("DELETE FROM term_totals")
    db.execute("INSERT INTO term_totals (field, records, squares) "
               "SELECT substr(key, 1, instr(key, ':') - 1), SUM(n), SUM(n * n) FROM term_counts GROUP BY 1")
    db.execute("DROP TABLE temp.first_terms")


#: Statements run in order (a string is split on ``;``), or a function given the connection.
Migration = str | tuple[str, ...] | Callable[[sqlite3.Connection], None]

MIGRATIONS: tuple[Migration, ...] = (
    # 1: profiles, identifiers, touchpoints with their features and blocking keys,
    #    decisions, merge lineage, reviews and the delta outbox.
    """
    CREATE TABLE profiles (
        id          TEXT PRIMARY KEY,
        version     INTEGER NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        merged_into TEXT REFERENCES profiles (id),
        traits      TEXT NOT NULL
    );
    CREATE INDEX profiles_merged_into ON profiles (merged_into) WHERE merged_into IS NOT NULL;
    CREATE TABLE identifiers (
        key         TEXT NOT NULL,
        type        TEXT NOT NULL,
        profile_id  TEXT NOT NULL REFERENCES profiles (id),
        first_seen  TEXT NOT NULL,
        source      TEXT NOT NULL,
        PRIMARY KEY (key, profile_id)
    ) WITHOUT ROWID;
    CREATE INDEX identifiers_profile ON identifiers (profile_id);
    CREATE TABLE touchpoints (
        seq         INTEGER PRIMARY KEY,
        event_id    TEXT NOT NULL UNIQUE,
        profile_id  TEXT NOT NULL REFERENCES profiles (id),
        scenario    TEXT NOT NULL,
        type        TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        ingested_at TEXT NOT NULL,
        event       TEXT NOT NULL,
        features    TEXT NOT NULL
    );
    CREATE INDEX touchpoints_profile ON touchpoints (profile_id, seq);
    CREATE TABLE blocking (
        key TEXT NOT NULL,
        seq INTEGER NOT NULL REFERENCES touchpoints (seq),
        PRIMARY KEY (key, seq)
    ) WITHOUT ROWID;
    CREATE TABLE decisions (
        event_id     TEXT PRIMARY KEY REFERENCES touchpoints (event_id),
        profile_id   TEXT NOT NULL,
        action       TEXT NOT NULL,
        confidence   REAL NOT NULL,
        rule_version TEXT NOT NULL,
        decided_at   TEXT NOT NULL,
        record       TEXT NOT NULL
    );
    CREATE TABLE lineage (
        retired_id  TEXT PRIMARY KEY REFERENCES profiles (id),
        survivor_id TEXT NOT NULL REFERENCES profiles (id),
        event_id    TEXT NOT NULL,
        merged_at   TEXT NOT NULL
    );
    CREATE INDEX lineage_survivor ON lineage (survivor_id);
    CREATE TABLE reviews (
        id          INTEGER PRIMARY KEY,
        event_id    TEXT NOT NULL,
        profile_ids TEXT NOT NULL,
        reason      TEXT NOT NULL,
        confidence  REAL NOT NULL,
        status      TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY,
        delta_id   TEXT NOT NULL UNIQUE,
        event_id   TEXT NOT NULL,
        profile_id TEXT NOT NULL,
        delta      TEXT NOT NULL,
        published  INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_event ON outbox (event_id);
    CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published = 0;
    """,
    # 2: scenario subscriptions, kept with the graph so every worker sees the same registry.
    """
    CREATE TABLE subscriptions (
        name       TEXT PRIMARY KEY,
        document   TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 3: data sovereignty and human review: consent on profiles, review verdicts, pairs kept
    #    apart, operations by people, refused events, tombstones of erased customers, and the
    #    store's own secrets (the key of tombstone hashes).
    """
    ALTER TABLE profiles ADD COLUMN consent TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE reviews ADD COLUMN decided_at TEXT;
    ALTER TABLE reviews ADD COLUMN decided_by TEXT;
    ALTER TABLE reviews ADD COLUMN operation_id TEXT;
    CREATE INDEX reviews_status ON reviews (status, id);
    CREATE TABLE kept_apart (
        a            TEXT NOT NULL,
        b            TEXT NOT NULL,
        operation_id TEXT NOT NULL,
        PRIMARY KEY (a, b)
    ) WITHOUT ROWID;
    CREATE INDEX kept_apart_b ON kept_apart (b);
    CREATE TABLE operations (
        seq    INTEGER PRIMARY KEY,
        id     TEXT NOT NULL UNIQUE,
        kind   TEXT NOT NULL,
        actor  TEXT NOT NULL,
        at     TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE TABLE operation_profiles (
        profile_id   TEXT NOT NULL,
        operation_id TEXT NOT NULL,
        PRIMARY KEY (profile_id, operation_id)
    ) WITHOUT ROWID;
    CREATE TABLE refusals (
        event_id   TEXT PRIMARY KEY,
        record     TEXT NOT NULL,
        refused_at TEXT NOT NULL
    );
    CREATE TABLE tombstones (
        profile_id   TEXT PRIMARY KEY,
        erased_at    TEXT NOT NULL,
        operation_id TEXT NOT NULL
    );
    CREATE TABLE tombstone_keys (
        hash       TEXT PRIMARY KEY,
        profile_id TEXT NOT NULL,
        via        TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 4: a profile's unpublished deltas, read before each newer one is sent (per-profile order).
    """
    CREATE INDEX outbox_unpublished_profile ON outbox (profile_id, seq) WHERE published = 0;
    """,
    # 5: the timeline's full-text index (graph/fulltext.py): trigrams of each touchpoint's scenario,
    #    type, traits and payload. Filled by the search itself, a profile's new touchpoints at a time
    #    (indexing every touchpoint as it is written would cost the worker more than resolving it);
    #    emptied by a trigger, so erasure and splits leave no text of deleted touchpoints.
    #    A tuple: a trigger body holds semicolons of its own.
    (
        "CREATE VIRTUAL TABLE touchpoint_text USING fts5(body, tokenize = 'trigram')",
        "CREATE TRIGGER touchpoint_text_delete AFTER DELETE ON touchpoints BEGIN "
        "DELETE FROM touchpoint_text WHERE rowid = old.seq; END",
    ),
    # 6: term frequencies (identity/compare.py term_weights): how many profiles carry each
    #    term key (a touchpoint counts the keys it brought its profile, identity/plan.py
    #    terms_brought), and per field the records counted and the sum of squared counts. Each
    #    touchpoint keeps the keys it added, so erasure takes back exactly what it counted even
    #    if the rules changed since. Touchpoints stored before this migration hold `[]` until
    #    `idgraph reindex` counts them (SQLiteStore.backfill_term_counts).
    """
    CREATE TABLE term_counts (
        key TEXT PRIMARY KEY,
        n   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE term_totals (
        field   TEXT PRIMARY KEY,
        records INTEGER NOT NULL,
        squares INTEGER NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE touchpoints ADD COLUMN terms TEXT NOT NULL DEFAULT '[]';
    """,
    # 7: the persistent full-text index goes: filling it from a search took the file's write lock
    #    in a reader (the API). A search now ranks the profile's touchpoints in memory
    #    (graph/fulltext.py) and keeps no text of them.
    (
        "DROP TRIGGER touchpoint_text_delete",
        "DROP TABLE touchpoint_text",
    ),
    # 8: each profile's record count, for watching profile growth (ReadViews.profile_growth)
    #    through an index instead of counting touchpoints per poll. Kept by triggers, so every
    #    path that adds, moves (merge, split) or deletes (erasure) a touchpoint keeps it true.
    #    A table of its own and IF NOT EXISTS throughout: running it again changes nothing.
    (
        "CREATE TABLE IF NOT EXISTS profile_records ("
        "profile_id TEXT PRIMARY KEY REFERENCES profiles (id), records INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT OR REPLACE INTO profile_records (profile_id, records) "
        "SELECT profile_id, COUNT(*) FROM touchpoints GROUP BY profile_id",
        "CREATE INDEX IF NOT EXISTS profile_records_largest ON profile_records (records DESC, profile_id)",
        "CREATE TRIGGER IF NOT EXISTS profile_records_insert AFTER INSERT ON touchpoints BEGIN "
        "INSERT INTO profile_records (profile_id, records) VALUES (new.profile_id, 1) "
        "ON CONFLICT (profile_id) DO UPDATE SET records = records + 1; END",
        "CREATE TRIGGER IF NOT EXISTS profile_records_delete AFTER DELETE ON touchpoints BEGIN "
        "UPDATE profile_records SET records = records - 1 WHERE profile_id = old.profile_id; END",
        "CREATE TRIGGER IF NOT EXISTS profile_records_move AFTER UPDATE OF profile_id ON touchpoints "
        "WHEN old.profile_id IS NOT new.profile_id BEGIN "
        "UPDATE profile_records SET records = records - 1 WHERE profile_id = old.profile_id; "
        "INSERT INTO profile_records (profile_id, records) VALUES (new.profile_id, 1) "
        "ON CONFLICT (profile_id) DO UPDATE SET records = records + 1; END",
        # An erased profile leaves no row behind (nor does a retired one hold records).
        "CREATE TRIGGER IF NOT EXISTS profile_records_erase BEFORE DELETE ON profiles BEGIN "
        "DELETE FROM profile_records WHERE profile_id = old.id; END",
    ),
    # 9: blocking keys named by rule content (``b.<digest>:``), no longer by rule position
    #    (``b<N>:``). Rebuilding needs the rules, which the file does not hold: a file with
    #    positional keys is marked so, and the first worker (or ``idgraph reindex``) rebuilds it
    #    from the features every touchpoint keeps (SQLiteStore.reindex_blocking).
    f"""
    INSERT OR IGNORE INTO meta (name, value)
    SELECT 'blocking_signature', '{POSITIONAL}' WHERE EXISTS (SELECT 1 FROM blocking WHERE key >= 'b0' AND key < 'b:');
    """,
    # 10: the model registry: rule sets by version (``Rules.model_version``) and the log of which
    #     one was made live, by whom and why. The live version itself is the meta row
    #     ``live_model``, written with each log entry, so a worker's per-batch check is one read.
    #     IF NOT EXISTS: running it again (a test replays earlier migrations) changes nothing.
    """
    CREATE TABLE IF NOT EXISTS models (
        version       TEXT PRIMARY KEY,
        rules         TEXT NOT NULL,
        registered_at TEXT NOT NULL,
        registered_by TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS promotions (
        seq      INTEGER PRIMARY KEY,
        version  TEXT NOT NULL REFERENCES models (version),
        previous TEXT,
        action   TEXT NOT NULL CHECK (action IN ('promote', 'rollback')),
        by       TEXT NOT NULL,
        at       TEXT NOT NULL,
        reason   TEXT NOT NULL
    );
    """,
    _add_outbox_claims,
    _count_terms_per_profile,
    # 13: what an erasure deletes, found through indexes. It runs under the write lock every
    #     worker waits on, and read whole tables: every record's blocking keys (in its own delete,
    #     and again in the foreign-key check of each touchpoint it deleted), every delta ever
    #     sent, every review (parsing each one's profile list) and every operation's profiles.
    #     Blocking rows are now indexed by touchpoint (appended: seq only grows), deltas by
    #     profile (replacing the index of unsent ones by profile, which the read-back after each
    #     batch uses through `published = 0`), reviews by event, and the profiles each review
    #     names get a table of their own, kept by triggers. IF NOT EXISTS throughout: a replay
    #     is harmless.
    (
        "CREATE INDEX IF NOT EXISTS blocking_seq ON blocking (seq)",
        "CREATE INDEX IF NOT EXISTS outbox_profile ON outbox (profile_id, published, seq)",
        "DROP INDEX IF EXISTS outbox_unpublished_profile",
        "CREATE INDEX IF NOT EXISTS operation_profiles_operation ON operation_profiles (operation_id)",
        "CREATE INDEX IF NOT EXISTS reviews_event ON reviews (event_id)",
        # No foreign key to reviews: checking it would read this table by review, which no key serves.
        "CREATE TABLE IF NOT EXISTS review_profiles (profile_id TEXT NOT NULL, review_id INTEGER NOT NULL, "
        "PRIMARY KEY (profile_id, review_id)) WITHOUT ROWID",
        "INSERT OR IGNORE INTO review_profiles (profile_id, review_id) "
        "SELECT j.value, r.id FROM reviews r, json_each(r.profile_ids) j",
        "CREATE TRIGGER IF NOT EXISTS review_profiles_insert AFTER INSERT ON reviews BEGIN "
        "INSERT OR IGNORE INTO review_profiles (profile_id, review_id) SELECT value, new.id FROM json_each(new.profile_ids); END",
        "CREATE TRIGGER IF NOT EXISTS review_profiles_delete AFTER DELETE ON reviews BEGIN "
        "DELETE FROM review_profiles WHERE profile_id IN (SELECT value FROM json_each(old.profile_ids)) "
        "AND review_id = old.id; END",
    ),
)


def migrate(db: sqlite3.Connection) -> None:
    """Bring the file's schema up to date."""
    (current,) = db.execute("PRAGMA user_version").fetchone()
    if current > len(MIGRATIONS):
        raise sqlite3.DatabaseError(
            f"schema version {current} is newer than this release knows ({len(MIGRATIONS)}); upgrade idgraph"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        db.execute("BEGIN IMMEDIATE")
        # Another process starting on the same file may have applied it while this one waited
        # for the write lock: read the version again under the lock, or migration 6 (ALTER TABLE)
        # would run twice and fail the second process's start.
        if db.execute("PRAGMA user_version").fetchone()[0] >= version:
            db.execute("COMMIT")
            continue
        try:
            _apply(db, MIGRATIONS[version - 1])
            db.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _apply(db: sqlite3.Connection, migration: Migration) -> None:
    if callable(migration):
        migration(db)
        return
    for statement in migration if isinstance(migration, tuple) else migration.split(";"):
        if statement.strip():
            db.execute(statement)
