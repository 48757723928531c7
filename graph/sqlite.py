"""The embedded graph store: one SQLite file in WAL mode, the default on one machine.

SQLite calls run on the event loop's thread. Each statement is an indexed lookup on a
local file taking microseconds, and a hop to a worker thread per call would cost more
than the call itself; a batch of events is one ``BEGIN IMMEDIATE`` transaction, so a
second process sharing the file waits for it rather than interleaving.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, AsyncIterator, Collection, Sequence

import orjson

from graph import fulltext, sqlite_operations as operations
from graph.sqlite_checkpoints import Checkpointer
from graph.sqlite_schema import migrate
from graph.store import (
    FIRST_EVENT,
    AcceptedEvent,
    ErasureWrite,
    Family,
    GraphStore,
    OpenReview,
    OperationDocument,
    OperationWrite,
    Outcome,
    ProfileGrowth,
    ProfileSnapshot,
    Promotion,
    RegisteredModel,
    ReviewRecord,
    StoreConflict,
    StoreError,
    StoreTransaction,
    StoreUnavailable,
    TimelineEntry,
    TombstoneRecord,
    UnknownModel,
    decode_deltas,
)
from graph.tombstones import event_hashes
from identity.deltas import IdentityDelta
from identity.features import (
    Features,
    PreparedEvent,
    blocking_keys,
    blocking_signature,
    brought_by_each,
    identifiers_by_type,
    rarest_first,
    split_key,
    term_keys,
)
from identity.model import (
    ConsentValue,
    DecisionRecord,
    ErasedMatch,
    MatchRecord,
    ProfileState,
    ResolutionContext,
    TraitValue,
    consent_from_json,
)
from identity.plan import ChangeSet
from identity.rules import Rules

#: Earlier records compared per strongly-matched profile; the most recent ones carry the most.
RECORDS_PER_PROFILE = 20


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _epoch_ms(ahead_s: float = 0.0) -> int:
    """Milliseconds since the epoch, ``ahead_s`` from now: every process on the file shares the clock."""
    return int((time.time() + ahead_s) * 1000)


#: How long a write waits for another process's transaction before the store counts as busy.
BUSY_TIMEOUT_S = 30.0
#: SQLite's page cache per connection, in KiB (negative: a size, not a page count). The
#: default 2 MiB held too little of the indexes every event reads and writes (blocking keys,
#: identifiers, touchpoint ids): perf.hotpath read ~9 pages per event from the file at 10,000
#: events, ~2 with 64 MiB. Pages are taken as read, so a reader that touches little holds little.
PAGE_CACHE_KIB = 64 * 1024

#: Parsed forms kept of recently read JSON columns. The same candidates come back event after
#: event (a common name's records, a returning customer's profile), and parsing them again was
#: most of what reading them cost. Keyed by the stored text itself, so a change is a new entry.
_PARSED_KEPT = 8192


@lru_cache(maxsize=_PARSED_KEPT)
def _features_from_json(raw: str) -> Features:
    """A stored touchpoint's features; shared between readers, which never change them."""
    features: Features = orjson.loads(raw)
    return features


@lru_cache(maxsize=_PARSED_KEPT)
def _traits_from_json(raw: str) -> dict[str, TraitValue]:
    return {name: TraitValue(**t) for name, t in orjson.loads(raw).items()}


@lru_cache(maxsize=_PARSED_KEPT)
def _consent_from_json(raw: str) -> dict[str, ConsentValue]:
    # Kept apart from the traits: most events change a profile's traits, few its consent.
    return consent_from_json(orjson.loads(raw))


def _profile_state(pid: str, version: int, created_at: str, traits: str, consent: str, keys: str) -> ProfileState:
    # Copies: a profile state is the planner's to change, the kept parse is everyone's.
    return ProfileState(pid, version, created_at, set(orjson.loads(keys)), dict(_traits_from_json(traits)),
                        dict(_consent_from_json(consent)))


def load_profiles(db: sqlite3.Connection, ids: set[str]) -> dict[str, ProfileState]:
    """Live states of profiles by id, with their identifiers and consent."""
    if not ids:
        return {}
    # One statement, identifiers gathered by SQLite: every event reads its candidates' profiles.
    rows = db.execute(
        "SELECT id, version, created_at, traits, consent, "
        "(SELECT json_group_array(key) FROM identifiers WHERE profile_id = profiles.id) "
        f"FROM profiles WHERE id IN ({operations.placeholders(len(ids))})", tuple(ids))
    return {row[0]: _profile_state(*row) for row in rows}


def kept_apart(db: sqlite3.Connection, ids: set[str]) -> frozenset[frozenset[str]]:
    """Pairs kept apart by people among ``ids`` (live profiles), each side followed to its live profile.

    Read through the indexes from ``ids``: every profile that is one of them or was merged into
    one (lineage is one hop deep), then the pairs naming those. Matching the pairs' live sides
    against ``ids`` instead read the whole table for every event with two candidates, a cost that
    grew with every split and rejected review.
    """
    if len(ids) < 2:
        return frozenset()
    marks = operations.placeholders(len(ids))
    rows = db.execute(
        f"WITH family (id, live) AS (SELECT id, id FROM profiles WHERE id IN ({marks}) AND merged_into IS NULL "
        f"UNION ALL SELECT id, merged_into FROM profiles WHERE merged_into IN ({marks})) "
        "SELECT fa.live, fb.live FROM family fa JOIN kept_apart k ON k.a = fa.id JOIN family fb ON fb.id = k.b",
        (*ids, *ids),
    )
    return frozenset(frozenset(pair) for pair in rows if pair[0] != pair[1])


class SQLiteTransaction(StoreTransaction):
    def __init__(self, db: sqlite3.Connection, erasure_key: bytes, claimed_until_ms: int = 0) -> None:
        self._db = db
        self._erasure_key = erasure_key
        self._claimed_until_ms = claimed_until_ms  # the outbox rows it writes are its caller's to send until then
        #: Event ids of the batch with no stored outcome, read at once by :meth:`prefetch`;
        #: an event applied or refused in this transaction leaves it, so a repeat in the same
        #: batch is looked up like any redelivery.
        self._unseen: set[str] = set()
        #: False once :meth:`prefetch` found no tombstone: until this transaction ends none can
        #: appear (erasures write in transactions of their own), so events need not be hashed.
        self._tombstones = True
        #: The batch's term counts, kept in memory and written by :meth:`flush`.
        self._terms = operations.BatchTerms(db)

    async def prefetch(self, batch: Sequence[PreparedEvent], rules: Rules) -> None:
        # Almost every event is new: one set-based query spares two lookups per event that find nothing.
        ids = list({prepared.event_id for prepared in batch})
        seen: set[str] = set()
        for chunk in operations.in_lists(ids):
            marks = operations.placeholders(len(chunk))
            seen.update(e for (e,) in self._db.execute(
                f"SELECT event_id FROM decisions WHERE event_id IN ({marks}) "
                f"UNION ALL SELECT event_id FROM refusals WHERE event_id IN ({marks})", (*chunk, *chunk)))
        self._unseen = set(ids) - seen
        self._tombstones = self._db.execute("SELECT EXISTS (SELECT 1 FROM tombstone_keys)").fetchone()[0] == 1
        self._terms.load([key for prepared in batch for key in prepared.term_keys])

    def flush(self) -> None:
        """Write what the batch kept in memory; the store calls it before committing."""
        self._terms.flush()

    async def outcome(self, event_id: str) -> Outcome | None:
        if event_id in self._unseen:
            return None
        row = self._db.execute("SELECT record FROM decisions WHERE event_id = ?", (event_id,)).fetchone()
        if row is None:
            refused = self._db.execute("SELECT record FROM refusals WHERE event_id = ?", (event_id,)).fetchone()
            return None if refused is None else Outcome(event_id, orjson.loads(refused[0]), [], duplicate=True)
        deltas = [
            IdentityDelta.from_json(d)
            for (d,) in self._db.execute("SELECT delta FROM outbox WHERE event_id = ? ORDER BY seq", (event_id,))
        ]
        return Outcome(event_id, orjson.loads(row[0]), deltas, duplicate=True)

    async def context(self, prepared: PreparedEvent, rules: Rules) -> ResolutionContext:
        db = self._db
        generic_after = rules.identifiers.generic_after_profiles
        holders: dict[str, tuple[str, ...]] = {}
        for key in prepared.identifier_keys:
            # One holder past the limit is enough to know a value is generic; a shop phone
            # on thousands of profiles must not load them all for every event.
            rows = db.execute(
                "SELECT profile_id FROM identifiers WHERE key = ? LIMIT ?", (key, generic_after + 1)
            ).fetchall()
            if rows:
                holders[key] = tuple(r[0] for r in rows)
        found = [(key, db.execute(
            "SELECT t.event_id, t.profile_id, t.features FROM blocking b JOIN touchpoints t ON t.seq = b.seq "
            "WHERE b.key = ? ORDER BY b.seq DESC LIMIT ?", (key, rules.candidates_per_key)).fetchall())
            for key in prepared.blocking_keys]
        records = {row[0]: MatchRecord(row[0], row[1], _features_from_json(row[2]))
                   for row in rarest_first(found, rules.candidates_per_event, lambda row: row[0])}
        strong = {p for ps in holders.values() if len(ps) <= generic_after for p in ps}
        for profile_id in strong:
            for event_id, features in db.execute(
                "SELECT event_id, features FROM touchpoints WHERE profile_id = ? ORDER BY seq DESC LIMIT ?",
                (profile_id, RECORDS_PER_PROFILE),
            ):
                records.setdefault(event_id, MatchRecord(event_id, profile_id, _features_from_json(features)))
        profile_ids = strong | {r.profile_id for r in records.values()}
        terms = self._terms.read(prepared.term_keys, rules.term_frequency_fields)
        return ResolutionContext(holders, tuple(records.values()), load_profiles(db, profile_ids),
                                 kept_apart(db, profile_ids), self._erased(prepared), terms)

    def _erased(self, prepared: PreparedEvent) -> tuple[ErasedMatch, ...]:
        if not self._tombstones:
            return ()
        hashes = event_hashes(self._erasure_key, prepared)
        rows = self._db.execute(
            "SELECT k.profile_id, t.erased_at, k.via FROM tombstone_keys k JOIN tombstones t ON t.profile_id = k.profile_id "
            f"WHERE k.hash IN ({operations.placeholders(len(hashes))}) ORDER BY k.via, k.profile_id",
            hashes,
        )
        return tuple(ErasedMatch(p, at, via) for p, at, via in rows)

    async def refuse(self, prepared: PreparedEvent, record: DecisionRecord) -> None:
        self._unseen.discard(prepared.event_id)
        self._db.execute("INSERT INTO refusals (event_id, record, refused_at) VALUES (?, ?, ?)",
                         (prepared.event_id, orjson.dumps(record), _now()))

    async def apply(self, prepared: PreparedEvent, changes: ChangeSet) -> None:
        self._unseen.discard(prepared.event_id)
        now = _now()
        for profile in changes.profiles:
            self._upsert_profile(profile, now)
        for retired, survivor in changes.retired.items():
            self._retire(retired, survivor, prepared.event_id, now)
        source = prepared.event.scenario
        self._db.executemany(
            "INSERT OR IGNORE INTO identifiers (key, type, profile_id, first_seen, source) VALUES (?, ?, ?, ?, ?)",
            [(key, split_key(key)[0], pid, now, source) for key, pid in changes.attachments],
        )
        self._insert_touchpoint(prepared, changes, now)
        decision = changes.decision
        self._db.execute(
            "INSERT INTO decisions (event_id, profile_id, action, confidence, rule_version, decided_at, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (decision.event_id, decision.profile_id, decision.action, decision.confidence,
             decision.rule_version, now, orjson.dumps(decision.as_dict())),
        )
        if decision.review is not None:
            self._db.execute(
                "INSERT INTO reviews (event_id, profile_ids, reason, confidence, status, created_at) "
                "VALUES (?, ?, ?, ?, 'open', ?)",
                (decision.event_id, orjson.dumps(list(decision.review.profile_ids)), decision.review.reason,
                 decision.review.confidence, now),
            )
        self._db.executemany(
            "INSERT INTO outbox (delta_id, event_id, profile_id, delta, claimed_until) VALUES (?, ?, ?, ?, ?)",
            [(d.delta_id, prepared.event_id, d.profile_id, d.to_json(), self._claimed_until_ms) for d in changes.deltas],
        )

    def _upsert_profile(self, profile: ProfileState, now: str) -> None:
        operations.upsert_profile(self._db, profile, now)

    def _retire(self, retired: str, survivor: str, event_id: str, now: str) -> None:
        """Point everything of a merged profile at its survivor; lineage stays one hop deep."""
        db = self._db
        db.execute("UPDATE profiles SET merged_into = ?, updated_at = ? WHERE id = ?", (survivor, now, retired))
        db.execute("UPDATE profiles SET merged_into = ? WHERE merged_into = ?", (survivor, retired))
        db.execute("UPDATE lineage SET survivor_id = ? WHERE survivor_id = ?", (survivor, retired))
        db.execute(
            "INSERT INTO lineage (retired_id, survivor_id, event_id, merged_at) VALUES (?, ?, ?, ?)",
            (retired, survivor, event_id, now),
        )
        db.execute("UPDATE OR IGNORE identifiers SET profile_id = ? WHERE profile_id = ?", (survivor, retired))
        db.execute("DELETE FROM identifiers WHERE profile_id = ?", (retired,))
        db.execute("UPDATE touchpoints SET profile_id = ? WHERE profile_id = ?", (survivor, retired))

    def _insert_touchpoint(self, prepared: PreparedEvent, changes: ChangeSet, now: str) -> None:
        event = prepared.event
        cursor = self._db.execute(
            "INSERT INTO touchpoints (event_id, profile_id, scenario, type, occurred_at, ingested_at, event, features, terms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (event.event_id, changes.decision.profile_id, event.scenario, event.type,
             event.occurred_at.isoformat(), now, event.to_json(), orjson.dumps(prepared.features),
             orjson.dumps(changes.terms)),
        )
        self._terms.add(changes.terms)
        self._db.executemany(
            "INSERT OR IGNORE INTO blocking (key, seq) VALUES (?, ?)",
            [(key, cursor.lastrowid) for key in prepared.blocking_keys],
        )


class SQLiteStore(GraphStore):
    """The embedded store. ``path`` may be ``":memory:"`` for throwaway use."""

    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._erasure_key = b""
        self._checkpointer: Checkpointer | None = None

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
            db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode survives a process crash (kill -9); only power loss can drop the
            # last commits, never tear one.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
            # Deleted content is overwritten with zeros, so an erased customer does not linger in
            # free pages of the file (graph/sqlite_operations.py compacts the rest away).
            db.execute("PRAGMA secure_delete = ON")
            migrate(db)
            self._erasure_key = self._secret(db, "erasure_key")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the SQLite store at {self.path}: {exc}") from None
        self._db = db
        if self.path != ":memory:":  # graph/sqlite_checkpoints.py says why commits no longer checkpoint
            db.execute("PRAGMA wal_autocheckpoint = 0")
            self._checkpointer = Checkpointer(self.path)
            self._checkpointer.start()

    @staticmethod
    def _secret(db: sqlite3.Connection, name: str) -> bytes:
        db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", (name, secrets.token_hex(32)))
        return bytes.fromhex(db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0])

    @property
    def erasure_key(self) -> bytes:
        self.db  # noqa: B018 - raises when not open
        return self._erasure_key

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._db is not None:
            self._db.close()  # the last connection to close checkpoints the rest
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the SQLite store is not open; call open() or use 'async with'")
        return self._db

    async def _begin_immediate(self) -> None:
        """Take the write lock. While another process (a second worker, the profile API) holds
        it, wait on the event loop, not in SQLite's busy handler, which would stop this
        process's consuming, producing and acknowledging for as long as the other's transaction."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.0005
        while not self._try_begin_immediate():
            if time.monotonic() >= deadline:
                raise StoreUnavailable(f"SQLite store {self.path} is busy: another process held its write lock "
                                       f"for {BUSY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.01)

    def _try_begin_immediate(self) -> bool:
        """``BEGIN IMMEDIATE`` if the lock is free now. The busy handler is off for this one
        statement only: other coroutines' statements on the connection keep waiting as before."""
        db = self.db
        db.execute("PRAGMA busy_timeout = 0")
        try:
            db.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            return False
        finally:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    @asynccontextmanager
    async def transaction(self, *, claim_s: float = 0.0) -> AsyncIterator[StoreTransaction]:
        db = self.db
        await self._begin_immediate()
        try:
            tx = SQLiteTransaction(db, self._erasure_key, _epoch_ms(claim_s) if claim_s else 0)
            yield tx
            tx.flush()
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            db.execute("ROLLBACK")
            raise StoreUnavailable(f"SQLite store {self.path} could not commit: {exc}") from exc

    async def survivor(self, profile_id: str) -> str | None:
        row = self.db.execute("SELECT id, merged_into FROM profiles WHERE id = ?", (profile_id,)).fetchone()
        if row is None:
            return None
        live: str = row[1] or row[0]
        return live

    async def profile(self, profile_id: str) -> ProfileSnapshot | None:
        live = await self.survivor(profile_id)
        if live is None:
            return None
        version, created_at, updated_at, traits, consent = self.db.execute(
            "SELECT version, created_at, updated_at, traits, consent FROM profiles WHERE id = ?", (live,)
        ).fetchone()
        keys = [key for (key,) in self.db.execute("SELECT key FROM identifiers WHERE profile_id = ?", (live,))]
        identifiers = identifiers_by_type(keys)
        merged_from = [r[0] for r in self.db.execute("SELECT retired_id FROM lineage WHERE survivor_id = ?", (live,))]
        return ProfileSnapshot(live, version, created_at, updated_at, identifiers, orjson.loads(traits), merged_from,
                               orjson.loads(consent))

    async def decisions(self, event_ids: Sequence[str]) -> dict[str, DecisionRecord]:
        found: dict[str, DecisionRecord] = {}
        for chunk in operations.in_lists(event_ids):
            found.update((e, orjson.loads(r)) for e, r in self.db.execute(
                f"SELECT event_id, record FROM decisions WHERE event_id IN ({operations.placeholders(len(chunk))})",
                tuple(chunk)))
        return found

    async def decisions_for(self, profile_id: str) -> list[DecisionRecord]:
        live = await self.survivor(profile_id) or profile_id
        rows = self.db.execute(
            "SELECT d.record FROM decisions d JOIN touchpoints t ON t.event_id = d.event_id "
            "WHERE t.profile_id = ? ORDER BY t.seq",
            (live,),
        )
        return [orjson.loads(r[0]) for r in rows]

    async def timeline(self, profile_id: str) -> list[TimelineEntry]:
        live = await self.survivor(profile_id) or profile_id
        rows = self.db.execute(
            "SELECT event_id, scenario, type, occurred_at, event FROM touchpoints WHERE profile_id = ? ORDER BY seq",
            (live,),
        )
        # occurred_at keeps the offset it was sent with, so as text 09:00+08:00 sorts after
        # 02:00Z though it happened first: order by the instant, then by event id (as the Neo4j
        # store does; arrival order differs between workers and replays).
        entries = sorted(rows, key=lambda row: (datetime.fromisoformat(row[3]), row[0]))
        return [TimelineEntry(e, s, t, o, orjson.loads(ev)) for e, s, t, o, ev in entries]

    async def search_timeline(self, profile_id: str, terms: Sequence[str], limit: int = 200, *,
                              start: datetime | None = None, end: datetime | None = None) -> list[TimelineEntry]:
        live = await self.survivor(profile_id) or profile_id
        # occurred_at keeps the offset it was sent with, so the range is compared as instants:
        # julianday() reads RFC 3339 offsets (to the millisecond), on both sides alike.
        bounds = [(op, bound.isoformat()) for op, bound in ((">=", start), ("<", end)) if bound is not None]
        where = " AND ".join(["profile_id = ?", *[f"julianday(occurred_at) {op} julianday(?)" for op, _ in bounds]])
        # Read only (graph/fulltext.py ranks them in memory): a search takes no write lock.
        rows = self.db.execute(f"SELECT event_id, scenario, type, occurred_at, event FROM touchpoints WHERE {where} "
                               "ORDER BY seq", (live, *[bound for _, bound in bounds]))
        entries = [TimelineEntry(e, s, t, o, orjson.loads(ev)) for e, s, t, o, ev in rows]
        found = fulltext.rank([fulltext.body(e.scenario, e.type, e.event) for e in entries], terms, limit)
        return [entries[i] for i in found]

    async def assignments(self) -> list[tuple[str, str]]:
        return list(self.db.execute("SELECT event_id, profile_id FROM touchpoints ORDER BY seq"))

    async def applied_count(self) -> int:
        (count,) = self.db.execute("SELECT COUNT(*) FROM touchpoints").fetchone()
        return int(count)

    async def accepted_events(self, after: tuple[int, str] = FIRST_EVENT, limit: int = 1000) -> list[AcceptedEvent]:
        rows = self.db.execute("SELECT seq, event_id, event FROM touchpoints WHERE seq > ? ORDER BY seq LIMIT ?",
                               (after[0], limit))  # seq is the primary key here: unique, so it alone orders
        # Stored as bytes (TouchpointEvent.to_json); a row written as text would read as str.
        return [AcceptedEvent(seq, event_id, event if isinstance(event, bytes) else event.encode())
                for seq, event_id, event in rows]

    async def sample_features(self, limit: int) -> list[Features]:
        return [orjson.loads(f) for (f,) in self.db.execute(
            "SELECT features FROM touchpoints ORDER BY random() LIMIT ?", (limit,))]

    async def unpublished_deltas(self, event_ids: Sequence[str] | None = None, limit: int = 1000, *,
                                 profile_ids: Sequence[str] = (), known: Collection[str] = ()) -> list[IdentityDelta]:
        if event_ids is None and not profile_ids:
            rows = self.db.execute("SELECT delta_id, delta FROM outbox WHERE published = 0 ORDER BY seq LIMIT ?", (limit,))
        else:
            events, profiles = list(event_ids or ()), list(profile_ids)
            # Each side through its own index: with an OR between them SQLite read every unsent
            # delta instead, however many a broker outage left.
            rows = self.db.execute(
                "SELECT delta_id, delta FROM outbox WHERE seq IN ("
                f"SELECT seq FROM outbox WHERE published = 0 AND event_id IN ({operations.placeholders(len(events))}) "
                f"UNION ALL SELECT seq FROM outbox WHERE published = 0 AND profile_id IN ({operations.placeholders(len(profiles))})"
                ") ORDER BY seq LIMIT ?",
                (*events, *profiles, limit),
            )
        # Decoding is most of the cost, and a worker under load holds most of what it finds.
        return decode_deltas(rows, known)

    async def orphaned_deltas(self, limit: int = 1000, *, known: Collection[str] = ()) -> list[IdentityDelta]:
        rows = self.db.execute("SELECT delta_id, delta FROM outbox WHERE published = 0 AND claimed_until <= ? "
                               "ORDER BY seq LIMIT ?", (_epoch_ms(), limit))
        return decode_deltas(rows, known)

    async def mark_published(self, delta_ids: list[str]) -> None:
        if not delta_ids:
            return
        async with self._writing() as db:  # one commit for them all, the lock taken as a batch takes it
            for chunk in operations.in_lists(delta_ids):
                db.execute(f"UPDATE outbox SET published = 1 WHERE delta_id IN ({operations.placeholders(len(chunk))})", chunk)

    async def open_reviews(self) -> list[OpenReview]:
        rows = self.db.execute(
            "SELECT id, event_id, profile_ids, reason, confidence, created_at FROM reviews "
            "WHERE status = 'open' ORDER BY id"
        )
        return [OpenReview(id=i, event_id=e, profile_ids=orjson.loads(p), reason=r, confidence=c, created_at=t)
                for i, e, p, r, c, t in rows]

    async def open_review_count(self) -> int:
        (count,) = self.db.execute("SELECT COUNT(*) FROM reviews WHERE status = 'open'").fetchone()
        return int(count)

    async def profile_growth(self, threshold: int, limit: int = 10) -> ProfileGrowth:
        # Both walk the profile_records_largest index (graph/sqlite_schema.py, 8): a retired
        # profile holds no records, so the largest are live ones unless nothing has any.
        (over,) = self.db.execute("SELECT COUNT(*) FROM profile_records WHERE records > ?", (threshold,)).fetchone()
        largest = self.db.execute(
            "SELECT r.profile_id, r.records FROM profile_records r JOIN profiles p ON p.id = r.profile_id "
            "WHERE r.records > 0 AND p.merged_into IS NULL ORDER BY r.records DESC, r.profile_id LIMIT ?",
            (limit,)).fetchall()
        return ProfileGrowth(threshold, over, [(pid, n) for pid, n in largest])

    async def blocking_signature(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = 'blocking_signature'").fetchone()
        return None if row is None else str(row[0])

    async def record_blocking_signature(self, signature: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('blocking_signature', ?)", (signature,))

    async def reindex_blocking(self, rules: Rules) -> int:
        """One transaction: candidates are never read from a half-built index."""
        async with self._writing() as db:
            db.execute("DELETE FROM blocking")
            records = 0
            rows = db.execute("SELECT seq, features FROM touchpoints ORDER BY seq")
            while chunk := rows.fetchmany(1000):
                db.executemany("INSERT OR IGNORE INTO blocking (key, seq) VALUES (?, ?)",
                               [(key, seq) for seq, features in chunk
                                for key in blocking_keys(orjson.loads(features), rules)])
                records += len(chunk)
            db.execute("INSERT INTO meta (name, value) VALUES ('blocking_signature', ?) "
                       "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (blocking_signature(rules),))
        return records

    async def backfill_term_counts(self, rules: Rules) -> int:
        """One transaction, a page of touchpoints at a time. A touchpoint stored before counting
        began holds ``[]`` (schema migration 6), as does one that had no counted field or brought
        its profile no value it lacked: all are looked at, and each counts and keeps the keys it
        brings its profile (identity.features.brought_by_each), so a second run counts nothing."""
        async with self._writing() as db:
            terms, held, counted, seq = operations.BatchTerms(db), dict[str, set[str]](), 0, -1
            while page := db.execute("SELECT seq, profile_id, features FROM touchpoints WHERE CAST(terms AS TEXT) = '[]' "
                                     "AND seq > ? ORDER BY seq LIMIT 1000", (seq,)).fetchall():
                seq = page[-1][0]
                keyed = [(s, p, keys) for s, p, features in page if (keys := term_keys(orjson.loads(features), rules))]
                held.update(operations.counted_terms(db, {p for _, p, _ in keyed} - held.keys()))
                brought = brought_by_each([(p, keys) for _, p, keys in keyed], held)
                rows = [(s, keys) for (s, _, _), keys in zip(keyed, brought) if keys]
                db.executemany("UPDATE touchpoints SET terms = ? WHERE seq = ?", [(orjson.dumps(k), s) for s, k in rows])
                terms.load([key for _, keys in rows for key in keys])  # the page's counts in one read
                for _, keys in rows:
                    terms.add(keys)
                counted += len(rows)
            terms.flush()
        return counted

    async def generic_identifiers(self, rules: Rules) -> list[tuple[str, int]]:
        return list(self.db.execute(
            "SELECT key, COUNT(*) AS n FROM identifiers GROUP BY key HAVING n > ? ORDER BY n DESC, key",
            (rules.identifiers.generic_after_profiles,),
        ))

    async def subscription_documents(self) -> dict[str, dict[str, Any]]:
        rows = self.db.execute("SELECT name, document FROM subscriptions ORDER BY name")
        return {name: orjson.loads(document) for name, document in rows}

    async def put_subscription(self, name: str, document: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO subscriptions (name, document, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
            (name, orjson.dumps(document), _now()),
        )

    async def delete_subscription(self, name: str) -> bool:
        return self.db.execute("DELETE FROM subscriptions WHERE name = ?", (name,)).rowcount > 0

    # --- operations by people ---------------------------------------------------------------

    async def family(self, profile_id: str) -> Family | None:
        live = await self.survivor(profile_id)
        if live is None:
            return None
        db = self.db
        retired = dict(db.execute(
            "SELECT l.retired_id, p.version FROM lineage l JOIN profiles p ON p.id = l.retired_id "
            "WHERE l.survivor_id = ? ORDER BY l.merged_at, l.retired_id", (live,)))
        touchpoints = [(e, orjson.loads(ev)) for e, ev in db.execute(
            "SELECT event_id, event FROM touchpoints WHERE profile_id = ? ORDER BY seq", (live,))]
        sources = {k: (f, s) for k, f, s in db.execute(
            "SELECT key, first_seen, source FROM identifiers WHERE profile_id = ?", (live,))}
        return Family(load_profiles(db, {live})[live], retired, touchpoints, sources)

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[sqlite3.Connection]:
        async with self.transaction():
            yield self.db

    async def apply_operation(self, write: OperationWrite) -> None:
        async with self._writing() as db:
            operations.apply_operation(db, write, _now())

    async def erase(self, write: ErasureWrite) -> None:
        async with self._writing() as db:
            operations.erase(db, write)
        operations.compact(self.db)

    async def tombstone(self, profile_id: str) -> TombstoneRecord | None:
        row = self.db.execute("SELECT profile_id, erased_at, operation_id FROM tombstones WHERE profile_id = ?",
                              (profile_id,)).fetchone()
        return None if row is None else TombstoneRecord(profile_id=row[0], erased_at=row[1], operation_id=row[2])

    async def operations_for(self, profile_id: str) -> list[OperationDocument]:
        live = await self.survivor(profile_id) or profile_id
        family = [live, *(r for (r,) in self.db.execute("SELECT retired_id FROM lineage WHERE survivor_id = ?", (live,)))]
        rows = self.db.execute(
            "SELECT DISTINCT o.seq, o.record FROM operations o JOIN operation_profiles p ON p.operation_id = o.id "
            f"WHERE p.profile_id IN ({operations.placeholders(len(family))}) ORDER BY o.seq",
            family,
        )
        return [orjson.loads(record) for _, record in rows]

    async def reviews(self, status: str | None = None) -> list[ReviewRecord]:
        return self._reviews(*(("WHERE status = ?", (status,)) if status else ("", ())))

    async def review(self, review_id: int) -> ReviewRecord | None:
        # By key: the default reads every review, and each verdict asks for one.
        found = self._reviews("WHERE id = ?", (review_id,))
        return found[0] if found else None

    def _reviews(self, where: str, args: tuple[Any, ...]) -> list[ReviewRecord]:
        rows = self.db.execute(
            "SELECT id, event_id, profile_ids, reason, confidence, created_at, status, decided_at, decided_by, "
            f"operation_id FROM reviews {where} ORDER BY id", args)
        return [ReviewRecord(id=i, event_id=e, profile_ids=orjson.loads(p), reason=r, confidence=c, created_at=t,
                             status=s, decided_at=da, decided_by=db, operation_id=o)
                for i, e, p, r, c, t, s, da, db, o in rows]

    async def identifier_holders(self, keys: Sequence[str]) -> dict[str, list[str]]:
        if not keys:
            return {}
        rows = self.db.execute(
            "SELECT DISTINCT i.key, COALESCE(p.merged_into, p.id) FROM identifiers i JOIN profiles p ON p.id = i.profile_id "
            f"WHERE i.key IN ({operations.placeholders(len(keys))}) ORDER BY 1, 2",
            tuple(keys),
        )
        holders: dict[str, list[str]] = {}
        for key, profile_id in rows:
            holders.setdefault(key, []).append(profile_id)
        return holders

    # --- the model registry -----------------------------------------------------------------

    async def register_model(self, version: str, rules_yaml: str, by: str) -> bool:
        return self.db.execute(
            "INSERT OR IGNORE INTO models (version, rules, registered_at, registered_by) VALUES (?, ?, ?, ?)",
            (version, rules_yaml, _now(), by)).rowcount > 0

    async def model(self, version: str) -> RegisteredModel | None:
        row = self.db.execute("SELECT version, rules, registered_at, registered_by FROM models WHERE version = ?",
                              (version,)).fetchone()
        return None if row is None else RegisteredModel(*row)

    async def models(self) -> list[RegisteredModel]:
        rows = self.db.execute("SELECT version, rules, registered_at, registered_by FROM models ORDER BY rowid")
        return [RegisteredModel(*row) for row in rows]

    async def live_model(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = 'live_model'").fetchone()
        return None if row is None else str(row[0])

    async def promote_model(self, version: str, *, expected: str | None, action: str, by: str,
                            reason: str) -> Promotion:
        async with self._writing() as db:
            if db.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchone() is None:
                raise UnknownModel(f"no model {version!r} is registered")
            live = await self.live_model()
            if live != expected:
                raise StoreConflict(f"the live model changed meanwhile: {live} now, not {expected}")
            at = _now()
            cursor = db.execute("INSERT INTO promotions (version, previous, action, by, at, reason) "
                                "VALUES (?, ?, ?, ?, ?, ?)", (version, live, action, by, at, reason))
            db.execute("INSERT INTO meta (name, value) VALUES ('live_model', ?) "
                       "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (version,))
        return Promotion(cursor.lastrowid or 0, version, live, action, by, at, reason)

    async def promotions(self) -> list[Promotion]:
        rows = self.db.execute("SELECT seq, version, previous, action, by, at, reason FROM promotions ORDER BY seq")
        return [Promotion(*row) for row in rows]
