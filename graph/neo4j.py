"""The Neo4j store: the identity graph on a Neo4j 5 server, through the official async driver.

A batch costs a fixed handful of round trips, whatever its size (docs/neo4j.md has the
numbers): one read of the batch's whole neighbourhood, per-event answers from memory
(graph/overlay.py), and one managed write transaction of at most eight ``UNWIND`` statements
(graph/write_plan.py, graph/cypher.py).

Reading and writing in separate transactions keeps locks short, so concurrency is optimistic:
the write asserts that every profile it changes is still at the version it read, and creates
each new identifier with ``CREATE`` under a uniqueness constraint. If another worker got there
first, nothing is written and :class:`StoreConflict` asks the resolver to re-run the batch.
Transient server errors (deadlocks, leader changes) are retried by the driver itself.

Single statements go through ``driver.execute_query``, which sends BEGIN together with the
query; a session's ``execute_write`` sends BEGIN on its own, which only the multi-statement
batch write needs. Both are managed transactions that the driver retries.
"""

from __future__ import annotations

import secrets
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable, Collection, Iterator, Sequence, TypeVar

import orjson
import structlog
from neo4j import AsyncDriver, AsyncGraphDatabase, AsyncManagedTransaction, RoutingControl
from neo4j.exceptions import (
    AuthError,
    ClientError,
    ConstraintError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)

from graph import cypher, fulltext
from graph.cypher import Statement
from graph.neo4j_settings import Neo4jSettings
from graph.overlay import BatchOverlay, Missing
from graph.snapshot import NeighbourhoodRequest, Snapshot, snapshot_from_row
from graph import neo4j_operations as operations
from graph.store import (
    FIRST_EVENT,
    AcceptedEvent,
    ErasureWrite,
    Family,
    GraphStore,
    OpenReview,
    OperationDocument,
    POSITIONAL,
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
from graph.write_plan import WritePlan, plan_writes
from identity.deltas import IdentityDelta
from graph.tombstones import event_hashes
from identity.features import (Features, PreparedEvent, blocking_keys, blocking_signature, brought_by_each, identifiers_by_type,
                               split_key, term_keys)
from identity.model import DecisionRecord, ResolutionContext, tombstone_hash
from identity.plan import ChangeSet
from identity.rules import Rules

T = TypeVar("T")
Rows = list[dict[str, Any]]

#: Follow-up reads one question may need (each strictly widens what is known; one is typical).
FOLLOW_UP_READS = 4
#: How long a worker waits at start for the indexes it created to come online.
INDEX_WAIT_S = 300
#: Schema statements fail with these when another worker's identical statement won the race,
#: and also when an index or constraint of an operator's stands in the way: which of the two is
#: told apart afterwards, by checking that every rule is in force (:func:`schema_problems`).
_SCHEMA_ERRORS = "Neo.ClientError.Schema."
#: Profiles counted per transaction when a graph from before record counts is upgraded.
UPGRADE_CHUNK = 10_000
#: The Meta node that marks the record-count upgrade done.
RECORD_COUNTS_DONE = "profile_records_counted"
#: The Meta node that marks term counts made per profile (:meth:`Neo4jStore._upgrade_terms_per_profile`).
TERMS_PER_PROFILE_DONE = "terms_counted_per_profile"
#: Touchpoints reindexed per transaction by :meth:`Neo4jStore.reindex_blocking`.
REINDEX_CHUNK = 2_000
#: A closing writer's term counters folded per transaction (:meth:`Neo4jStore.close`).
FOLD_CHUNK = 5_000
#: The Meta node holding the blocking index's rule signature.
BLOCKING_SIGNATURE = "blocking_signature"
#: The Meta node naming the live model (cypher.SET_LIVE_MODEL writes it).
LIVE_MODEL = "live_model"
log = structlog.get_logger("idgraph.neo4j")
#: ``SHOW CONSTRAINTS`` types that make a single property unique (the name changed in 5.x).
_UNIQUENESS = {"UNIQUENESS", "NODE_PROPERTY_UNIQUENESS", "NODE_KEY"}


@dataclass(slots=True)
class QueryStats:
    """What this store cost the server, counted as the driver talks to it."""

    queries: int = 0
    transactions: int = 0
    #: Network round trips: a single statement costs two (BEGIN with the query, then COMMIT);
    #: the batch write one per statement plus BEGIN and COMMIT. Driver-side retries of a
    #: single statement are not seen here; retried batch writes are.
    round_trips: int = 0
    conflicts: int = 0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _check_params(statement: Statement, params: dict[str, Any]) -> None:
    if set(params) != set(statement.params):
        raise TypeError(f"{statement.name} takes {sorted(statement.params)}, got {sorted(params)}")


@contextmanager
def _outages_as_unavailable(url: str) -> Iterator[None]:
    """Server down, leader lost or transient errors past the driver's own retries: the work is
    fine and may succeed later, which workers handle differently from a bad event."""
    try:
        yield
    except (ServiceUnavailable, SessionExpired, TransientError) as exc:
        raise StoreUnavailable(f"Neo4j at {url} is unavailable: {exc}") from exc


async def _run(tx: AsyncManagedTransaction, statement: Statement, stats: QueryStats, rows: str, value: Sequence[Any],
               **more: Any) -> Rows:
    params = {rows: value, **more}
    _check_params(statement, params)
    stats.queries += 1
    stats.round_trips += 1
    result = await tx.run(statement.text, params)
    return await result.data()


@dataclass(slots=True)
class _Clock:
    """The highest ``seq`` this store wrote: its next batch is numbered above it, so one worker's
    batches keep their order even within one millisecond of the server's clock (graph/cypher.py
    RECORD_EVENTS says how ``seq`` is made without a shared counter)."""

    last: int = 0


def schema_problems(rules: Sequence[cypher.SchemaRule], constraints: Rows, indexes: Rows) -> list[str]:
    """What keeps each rule from being in force, from ``SHOW CONSTRAINTS`` and ``SHOW INDEXES`` rows."""
    def on(row: dict[str, Any], rule: cypher.SchemaRule) -> bool:
        return list(row["labelsOrTypes"] or []) == [rule.label] and list(row["properties"] or []) == [rule.property_name]

    problems = []
    for rule in rules:
        where = f":{rule.label}({rule.property_name})"
        if rule.unique and any(on(c, rule) and c["type"] in _UNIQUENESS for c in constraints):
            continue
        if not rule.unique and any(on(i, rule) and i["type"] == "RANGE" for i in indexes):
            continue
        needed = f"the uniqueness constraint {rule.name!r}" if rule.unique else f"the range index {rule.name!r}"
        plain = [i["name"] for i in indexes if on(i, rule) and not i["owningConstraint"]]
        named = [r["name"] for r in [*constraints, *indexes] if r["name"] == rule.name]
        if plain:
            problems.append(f"index {plain[0]!r} on {where} stands where idgraph needs {needed}: drop it "
                            f"(DROP INDEX `{plain[0]}`) and start the worker again, which creates the constraint")
        elif named:
            problems.append(f"{needed} on {where} is missing: the name {rule.name!r} is taken by another "
                            f"index or constraint; drop that one and start the worker again")
        else:
            problems.append(f"{needed} on {where} is missing and could not be created")
    return problems


def _check_written(statement: Statement, result: Rows, sent: int) -> None:
    """Rows that found no node vanish silently in Cypher; here that stops the batch instead.
    Not a conflict to retry: the nodes were locked or created by this very transaction."""
    if result and "written" in result[0] and result[0]["written"] != sent:
        raise StoreError(f"{statement.name} wrote {result[0]['written']} of {sent} rows: "
                         "a profile or identifier the batch relied on is missing from the graph")


async def _write_batch(tx: AsyncManagedTransaction, plan: WritePlan, stats: QueryStats, clock: _Clock,
                       writer: str, claim_ms: int) -> None:
    """The batch's write, in statement order; raising here rolls all of it back."""
    stats.transactions += 1
    stats.round_trips += 2  # BEGIN, COMMIT
    if plan.locks:
        stale = await _run(tx, cypher.LOCK_PROFILES, stats, "profiles", plan.locks)
        if stale:
            ids = ", ".join(sorted(r["id"] for r in stale))
            raise StoreConflict(f"profiles changed by another writer since this batch read them: {ids}")
    steps: tuple[tuple[Statement, str, Sequence[Any]], ...] = (
        (cypher.UPSERT_PROFILES, "profiles", plan.profiles),
        (cypher.RECORD_MERGES, "merges", plan.merges),
        (cypher.MOVE_IDENTIFIERS, "merges", plan.merges),
        (cypher.MOVE_TOUCHPOINTS, "merges", plan.merges),
        (cypher.CREATE_IDENTIFIERS, "identifiers", plan.identifiers),
        (cypher.ATTACH_IDENTIFIERS, "attachments", plan.attachments),
    )
    for statement, name, rows in steps:
        if rows:
            _check_written(statement, await _run(tx, statement, stats, name, rows), len(rows))
    if plan.terms:
        await _run(tx, cypher.COUNT_TERMS, stats, "terms", plan.terms, writer=writer)
    if plan.events:
        written = await _run(tx, cypher.RECORD_EVENTS, stats, "events", plan.events,
                             after=[lock["id"] for lock in plan.locks], floor=clock.last, claim_ms=claim_ms)
        _check_written(cypher.RECORD_EVENTS, written, len(plan.events))
        clock.last = max(clock.last, int(written[0]["last"]))
    if plan.events or plan.merges:
        await _run(tx, cypher.COUNT_RECORDS, stats, "ids", plan.recounted)
    if plan.refusals:
        await _run(tx, cypher.RECORD_REFUSALS, stats, "refusals", plan.refusals)


class Neo4jTransaction(StoreTransaction):
    """One batch: reads go to the server only when the overlay cannot answer; writes wait for commit."""

    def __init__(self, read: Callable[[NeighbourhoodRequest], Any], erasure_key: bytes = b"") -> None:
        self._read = read
        self._overlay = BatchOverlay(Snapshot())
        self._rules: Rules | None = None
        self._erasure_key = erasure_key

    async def prefetch(self, batch: Sequence[PreparedEvent], rules: Rules) -> None:
        self._rules = rules
        self._overlay.snapshot.absorb(await self._read(NeighbourhoodRequest.for_batch(batch, rules)))

    async def outcome(self, event_id: str) -> Outcome | None:
        return await self._settle(lambda: self._overlay.outcome(event_id))

    async def context(self, prepared: PreparedEvent, rules: Rules) -> ResolutionContext:
        self._rules = rules
        context = await self._settle(lambda: self._overlay.context(prepared, rules))
        # The read looked up the tombstone hashes of every event id and key of the batch.
        erased = self._overlay.snapshot.erased
        found = [erased[h] for h in event_hashes(self._erasure_key, prepared) if h in erased]
        return replace(context, erased=tuple(found)) if found else context

    async def apply(self, prepared: PreparedEvent, changes: ChangeSet) -> None:
        self._overlay.apply(prepared, changes, _now())

    async def refuse(self, prepared: PreparedEvent, record: DecisionRecord) -> None:
        self._overlay.refuse(prepared.event_id, record, _now())

    def write_plan(self) -> WritePlan:
        return plan_writes(self._overlay)

    async def _settle(self, ask: Callable[[], T | Missing]) -> T:
        """Ask the overlay; while it names something missing, read that and ask again."""
        for _ in range(FOLLOW_UP_READS):
            answer = ask()
            if not isinstance(answer, Missing):
                return answer
            request = answer.request(self._overlay.snapshot, self._rules, len(self._overlay.retired))
            self._overlay.snapshot.absorb(await self._read(request))
        raise StoreError(f"the batch's neighbourhood could not be read completely in {FOLLOW_UP_READS} reads")


class Neo4jStore(GraphStore):
    """The identity graph on Neo4j; see the module docstring and docs/neo4j.md."""

    kind = "neo4j"

    def __init__(self, settings: Neo4jSettings, *, connect: Callable[..., AsyncDriver] = AsyncGraphDatabase.driver) -> None:
        """``connect`` makes the driver (``AsyncGraphDatabase.driver``; tests pass a stand-in)."""
        self.settings = settings
        self.stats = QueryStats()
        self._clock = _Clock()
        self._connect = connect
        self._driver: AsyncDriver | None = None
        self._erasure_key = b""
        #: This handle's shard of the term counters (cypher.COUNT_TERMS): no other writer adds to it.
        self._writer = secrets.token_hex(8)
        # One causal chain per store: a batch's read sees every batch this store committed,
        # even when a cluster routes the read to a follower.
        self._bookmarks = AsyncGraphDatabase.bookmark_manager()

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        s = self.settings
        driver = self._connect(s.url, auth=(s.user, s.password))
        try:
            await driver.verify_connectivity()
            self._driver = driver
            await self._create_schema()
        except AuthError as exc:
            await self._abandon(driver)
            raise StoreError(f"Neo4j at {s.url} refused user {s.user!r}: {exc.message}; check IDGRAPH_NEO4J_USER "
                             "and IDGRAPH_NEO4J_PASSWORD") from None
        except (ServiceUnavailable, OSError) as exc:
            await self._abandon(driver)
            raise StoreError(f"cannot reach Neo4j at {s.url}: {exc}") from None
        except Neo4jError as exc:
            await self._abandon(driver)
            raise StoreError(f"cannot open database {s.database!r} on Neo4j at {s.url}: {exc.message}") from None
        except StoreError:
            await self._abandon(driver)
            raise

    async def _abandon(self, driver: AsyncDriver) -> None:
        self._driver = None
        await driver.close()

    async def _create_schema(self) -> None:
        """Constraints and indexes, idempotently: every worker runs this at start."""
        for statement in cypher.SCHEMA:
            if statement.name == "erasure_key":
                mine = secrets.token_hex(32)
                rows = await self._query(statement, RoutingControl.WRITE, value=mine)
                self._erasure_key = bytes.fromhex(rows[0]["value"] if rows else mine)
                continue
            params = {"timeout_s": INDEX_WAIT_S} if statement.params else {}
            try:
                await self._query(statement, RoutingControl.WRITE, **params)
            except ClientError as exc:
                if not (exc.code or "").startswith(_SCHEMA_ERRORS):
                    raise
        await self._upgrade_record_counts()
        await self._upgrade_terms_per_profile()
        constraints = await self._query(cypher.SHOW_CONSTRAINTS, RoutingControl.READ)
        indexes = await self._query(cypher.SHOW_INDEXES, RoutingControl.READ)
        problems = schema_problems(cypher.SCHEMA_RULES, constraints, indexes)
        if problems:
            raise StoreError(f"the schema of database {self.settings.database!r} on Neo4j at {self.settings.url} "
                             "conflicts with idgraph's: " + "; ".join(problems))

    async def _upgrade_record_counts(self) -> None:
        """Count the records of profiles written before counts were kept, once per graph."""
        if await self._query(cypher.META, RoutingControl.READ, name=RECORD_COUNTS_DONE):
            return
        after: str | None = ""
        while after is not None:
            (page,) = await self._query(cypher.UPGRADE_RECORD_COUNTS, RoutingControl.WRITE, after=after, chunk=UPGRADE_CHUNK)
            after = page["last"]
        try:
            await self._query(cypher.PUT_META, RoutingControl.WRITE, name=RECORD_COUNTS_DONE, value=_now())
        except ConstraintError:  # another worker starting at once marked it first
            pass

    async def _upgrade_terms_per_profile(self) -> None:
        """Count term frequencies once per profile where they were counted per touchpoint, once
        per graph: each key stays counted by its profile's first touchpoint holding it."""
        if await self._query(cypher.META, RoutingControl.READ, name=TERMS_PER_PROFILE_DONE):
            return
        after = ""
        while page := await self._query(cypher.PROFILE_TERMS, RoutingControl.READ, after=after, chunk=UPGRADE_CHUNK):
            after = page[-1]["profile_id"]
            counting = [(row["profile_id"], t) for row in page for t in row["touchpoints"]]
            kept = brought_by_each([(p, t["terms"]) for p, t in counting], {})
            changed = [{"event_id": t["event_id"], "old": t["terms"], "keys": list(keys)}
                       for (_, t), keys in zip(counting, kept) if len(keys) < len(t["terms"])]
            if changed:
                await self._query(cypher.RECOUNT_TERMS, RoutingControl.WRITE, touchpoints=changed, writer=self._writer)
        try:
            await self._query(cypher.PUT_META, RoutingControl.WRITE, name=TERMS_PER_PROFILE_DONE, value=_now())
        except ConstraintError:  # another worker starting at once marked it first
            pass

    async def close(self) -> None:
        if self._driver is not None:
            try:
                await self._fold_term_counts()
            finally:
                await self._driver.close()
                self._driver = None

    async def _fold_term_counts(self) -> None:
        """Hand this writer's term counters over to the shared ones (cypher.FOLD_TERM_COUNTS).
        Failing leaves them where they are, still counted: a close never fails on it."""
        try:
            while (await self._write(cypher.FOLD_TERM_COUNTS, writer=self._writer, chunk=FOLD_CHUNK))[0]["folded"]:
                pass
            await self._write(cypher.FOLD_TERM_TOTALS, writer=self._writer)
        except (StoreError, Neo4jError) as exc:
            log.warning("term counters not folded at close; they stay counted in this writer's shard",
                        writer=self._writer, reason=str(exc))

    @property
    def driver(self) -> AsyncDriver:
        if self._driver is None:
            raise StoreError("the Neo4j store is not open; call open() or use 'async with'")
        return self._driver

    # --- talking to the server -------------------------------------------------------------

    async def _query(self, statement: Statement, routing: RoutingControl, **params: Any) -> Rows:
        """One statement in its own managed transaction (retried by the driver)."""
        _check_params(statement, params)
        self.stats.queries += 1
        self.stats.transactions += 1
        self.stats.round_trips += 2
        result = await self.driver.execute_query(
            statement.text, params, routing_=routing, database_=self.settings.database,
            bookmark_manager_=self._bookmarks,
        )
        return [record.data() for record in result.records]

    async def _read(self, statement: Statement, **params: Any) -> Rows:
        with _outages_as_unavailable(self.settings.url):
            return await self._query(statement, RoutingControl.READ, **params)

    async def _write(self, statement: Statement, **params: Any) -> Rows:
        with _outages_as_unavailable(self.settings.url):
            return await self._query(statement, RoutingControl.WRITE, **params)

    async def _read_neighbourhood(self, request: NeighbourhoodRequest) -> Snapshot:
        hashes = [tombstone_hash(self._erasure_key, k) for k in request.identifier_keys]
        hashes += [h for e in request.event_ids for h in operations.event_hash(self._erasure_key, e)]
        (row,) = await self._read(cypher.LOAD_NEIGHBOURHOOD, **request.params(), tombstone_hashes=hashes)
        return snapshot_from_row(row, request)

    @asynccontextmanager
    async def transaction(self, *, claim_s: float = 0.0) -> AsyncIterator[StoreTransaction]:
        tx = Neo4jTransaction(self._read_neighbourhood, self._erasure_key)
        yield tx
        plan = tx.write_plan()
        if not plan.empty:
            await self._commit(plan, int(claim_s * 1000))

    async def _commit(self, plan: WritePlan, claim_ms: int) -> None:
        with _outages_as_unavailable(self.settings.url):
            try:
                async with self.driver.session(database=self.settings.database, bookmark_manager=self._bookmarks) as session:
                    await session.execute_write(_write_batch, plan, self.stats, self._clock, self._writer, claim_ms)
            except StoreConflict:
                self.stats.conflicts += 1
                raise
            except ConstraintError as exc:
                self.stats.conflicts += 1
                raise StoreConflict(f"another writer created the same node first: {exc.message}") from exc

    # --- people, APIs and publishers -------------------------------------------------------

    async def survivor(self, profile_id: str) -> str | None:
        rows = await self._read(cypher.SURVIVOR, profile_id=profile_id)
        return rows[0]["id"] if rows else None

    async def profile(self, profile_id: str) -> ProfileSnapshot | None:
        rows = await self._read(cypher.PROFILE, profile_id=profile_id)
        if not rows:
            return None
        row = rows[0]
        # Grouped and sorted in Python, as the embedded store does: the same order, no internal ids.
        identifiers = identifiers_by_type(row["identifiers"])
        return ProfileSnapshot(row["id"], row["version"], row["created_at"], row["updated_at"], identifiers,
                               orjson.loads(row["traits"]), list(row["merged_from"]),
                               orjson.loads(row["consent"]) if row.get("consent") else {})

    async def decisions(self, event_ids: Sequence[str]) -> dict[str, DecisionRecord]:
        rows = await self._read(cypher.DECISIONS, event_ids=list(event_ids))
        return {r["event_id"]: orjson.loads(r["record"]) for r in rows}

    async def decisions_for(self, profile_id: str) -> list[DecisionRecord]:
        rows = await self._read(cypher.DECISIONS_FOR, profile_id=profile_id)
        return [orjson.loads(r["record"]) for r in rows]

    async def timeline(self, profile_id: str) -> list[TimelineEntry]:
        rows = await self._read(cypher.TIMELINE, profile_id=profile_id)
        return [TimelineEntry(r["event_id"], r["scenario"], r["type"], r["occurred_at"], orjson.loads(r["event"])) for r in rows]

    async def search_timeline(self, profile_id: str, terms: Sequence[str], limit: int = 200, *,
                              start: datetime | None = None, end: datetime | None = None) -> list[TimelineEntry]:
        rows = await self._read(cypher.SEARCH_TIMELINE, profile_id=profile_id, start=start, end=end)
        entries = [TimelineEntry(r["event_id"], r["scenario"], r["type"], r["occurred_at"], orjson.loads(r["event"]))
                   for r in rows]
        found = fulltext.rank([fulltext.body(e.scenario, e.type, e.event) for e in entries], terms, limit)
        return [entries[i] for i in found]

    async def assignments(self) -> list[tuple[str, str]]:
        return [(r["event_id"], r["profile_id"]) for r in await self._read(cypher.ASSIGNMENTS)]

    async def applied_count(self) -> int:
        (row,) = await self._read(cypher.APPLIED_COUNT)
        return int(row["applied"])

    async def accepted_events(self, after: tuple[int, str] = FIRST_EVENT, limit: int = 1000) -> list[AcceptedEvent]:
        rows = await self._read(cypher.ACCEPTED_EVENTS, seq=after[0], event_id=after[1], chunk=limit)
        return [AcceptedEvent(int(r["seq"]), r["event_id"], r["event"].encode()) for r in rows]

    async def sample_features(self, limit: int) -> list[Features]:
        return [orjson.loads(r["features"]) for r in await self._read(cypher.SAMPLE_FEATURES, limit=limit)]

    async def unpublished_deltas(self, event_ids: Sequence[str] | None = None, limit: int = 1000, *,
                                 profile_ids: Sequence[str] = (), known: Collection[str] = ()) -> list[IdentityDelta]:
        if event_ids is None and not profile_ids:
            rows = await self._read(cypher.UNPUBLISHED_DELTAS, limit=limit)
        else:
            rows = await self._read(cypher.UNPUBLISHED_DELTAS_OF, event_ids=list(event_ids or ()),
                                    profile_ids=list(profile_ids), limit=limit)
        return decode_deltas(((r["delta_id"], r["delta"]) for r in rows), known)

    async def orphaned_deltas(self, limit: int = 1000, *, known: Collection[str] = ()) -> list[IdentityDelta]:
        rows = await self._read(cypher.ORPHANED_DELTAS, limit=limit)
        return decode_deltas(((r["delta_id"], r["delta"]) for r in rows), known)

    async def mark_published(self, delta_ids: list[str]) -> None:
        if delta_ids:
            await self._write(cypher.MARK_PUBLISHED, delta_ids=list(delta_ids))

    async def open_reviews(self) -> list[OpenReview]:
        rows = await self._read(cypher.OPEN_REVIEWS)
        return [OpenReview(id=r["id"], event_id=r["event_id"], profile_ids=list(r["profile_ids"]), reason=r["reason"],
                           confidence=r["confidence"], created_at=r["created_at"]) for r in rows]

    async def open_review_count(self) -> int:
        (row,) = await self._read(cypher.OPEN_REVIEW_COUNT)
        return int(row["open"])

    async def profile_growth(self, threshold: int, limit: int = 10) -> ProfileGrowth:
        (over,) = await self._read(cypher.PROFILES_OVER, threshold=threshold)
        largest = await self._read(cypher.LARGEST_PROFILES, limit=limit)
        return ProfileGrowth(threshold, int(over["over"]), [(r["id"], int(r["records"])) for r in largest])

    async def blocking_signature(self) -> str | None:
        rows = await self._read(cypher.META, name=BLOCKING_SIGNATURE)
        if rows:
            return str(rows[0]["value"])
        (row,) = await self._read(cypher.POSITIONAL_KEYS)
        return POSITIONAL if row["found"] else None

    async def record_blocking_signature(self, signature: str) -> None:
        await self._write(cypher.ADD_META, name=BLOCKING_SIGNATURE, value=signature)

    async def reindex_blocking(self, rules: Rules) -> int:
        """Chunk by chunk, each its own transaction: workers may keep running meanwhile, finding
        fewer candidates among records not yet reindexed (docs/neo4j.md, upgrades)."""
        seq, event_id, records = -1, "", 0
        while rows := await self._read(cypher.TOUCHPOINT_FEATURES, seq=seq, event_id=event_id, chunk=REINDEX_CHUNK):
            keyed = [{"event_id": r["event_id"], "keys": list(blocking_keys(orjson.loads(r["features"]), rules))}
                     for r in rows]
            await self._write(cypher.REBLOCK_TOUCHPOINTS, rows=keyed)
            records += len(rows)
            seq, event_id = int(rows[-1]["seq"]), rows[-1]["event_id"]
        after: str | None = ""
        while after is not None:
            (page,) = await self._write(cypher.DROP_UNUSED_KEYS, after=after, chunk=REINDEX_CHUNK)
            after = page["last"]
        await self._write(cypher.PUT_META, name=BLOCKING_SIGNATURE, value=blocking_signature(rules))
        return records

    async def backfill_term_counts(self, rules: Rules) -> int:
        """Chunk by chunk, each its own transaction, into this writer's shard (folded at close);
        each touchpoint counts the keys it brings its profile (identity.features.brought_by_each)."""
        seq, event_id, counted, held = -1, "", 0, dict[str, set[str]]()
        while rows := await self._read(cypher.UNCOUNTED_TOUCHPOINTS, seq=seq, event_id=event_id, chunk=REINDEX_CHUNK):
            found = [(r["event_id"], r["profile_id"], keys) for r in rows if (keys := term_keys(orjson.loads(r["features"]), rules))]
            missing = list({p for _, p, _ in found} - held.keys())
            held.update({p: set() for p in missing})
            if missing:
                held.update((r["id"], set(r["keys"])) for r in await self._read(cypher.COUNTED_TERMS, ids=missing))
            brought = brought_by_each([(p, keys) for _, p, keys in found], held)
            keyed = [{"event_id": e, "keys": list(keys)} for (e, _, _), keys in zip(found, brought) if keys]
            if keyed:
                await self._write(cypher.BACKFILL_TERMS, rows=keyed, writer=self._writer)
            counted += len(keyed)
            seq, event_id = int(rows[-1]["seq"]), rows[-1]["event_id"]
        return counted

    async def generic_identifiers(self, rules: Rules) -> list[tuple[str, int]]:
        rows = await self._read(cypher.GENERIC_IDENTIFIERS, generic_after=rules.identifiers.generic_after_profiles)
        return sorted(((r["key"], r["holders"]) for r in rows), key=lambda kn: (-kn[1], kn[0]))

    async def subscription_documents(self) -> dict[str, dict[str, Any]]:
        rows = await self._read(cypher.SUBSCRIPTIONS)
        return {r["name"]: orjson.loads(r["document"]) for r in rows}

    async def put_subscription(self, name: str, document: dict[str, Any]) -> None:
        await self._write(cypher.PUT_SUBSCRIPTION, name=name, document=orjson.dumps(document).decode(), updated_at=_now())

    async def delete_subscription(self, name: str) -> bool:
        (row,) = await self._write(cypher.DELETE_SUBSCRIPTION, name=name)
        return int(row["deleted"]) > 0

    # --- operations by people (graph/neo4j_operations.py) ----------------------------------

    @property
    def erasure_key(self) -> bytes:
        self.driver  # noqa: B018 - raises when not open
        return self._erasure_key

    async def family(self, profile_id: str) -> Family | None:
        rows = await self._read(cypher.FAMILY, profile_id=profile_id)
        return operations.family_from_row(rows[0]) if rows else None

    async def apply_operation(self, write: OperationWrite) -> None:
        await self._commit_steps(operations.operation_steps(write, _now()))

    async def erase(self, write: ErasureWrite) -> None:
        await self._commit_steps(operations.erasure_steps(write))

    async def _commit_steps(self, steps: list[operations.Step]) -> None:
        """One managed write transaction of named statements; a step's check raising rolls it back."""
        async def work(tx: AsyncManagedTransaction) -> None:
            self.stats.transactions += 1
            self.stats.round_trips += 2
            for step in steps:
                _check_params(step.statement, step.params)
                self.stats.queries += 1
                self.stats.round_trips += 1
                result = await tx.run(step.statement.text, step.params)
                step.check(await result.data())

        with _outages_as_unavailable(self.settings.url):
            try:
                async with self.driver.session(database=self.settings.database, bookmark_manager=self._bookmarks) as session:
                    await session.execute_write(work)
            except ConstraintError as exc:
                raise StoreConflict(f"another writer got there first: {exc.message}") from exc

    async def tombstone(self, profile_id: str) -> TombstoneRecord | None:
        rows = await self._read(cypher.TOMBSTONE, profile_id=profile_id)
        return TombstoneRecord(profile_id=rows[0]["profile_id"], erased_at=rows[0]["erased_at"],
                               operation_id=rows[0]["operation_id"]) if rows else None

    async def operations_for(self, profile_id: str) -> list[OperationDocument]:
        return [orjson.loads(r["record"]) for r in await self._read(cypher.OPERATIONS_FOR, profile_id=profile_id)]

    async def reviews(self, status: str | None = None) -> list[ReviewRecord]:
        rows = await self._read(cypher.REVIEWS, status=status)
        return [ReviewRecord(id=r["id"], event_id=r["event_id"], profile_ids=list(r["profile_ids"]), reason=r["reason"],
                             confidence=r["confidence"], created_at=r["created_at"], status=r["status"],
                             decided_at=r["decided_at"], decided_by=r["decided_by"], operation_id=r["operation_id"])
                for r in rows]

    async def identifier_holders(self, keys: Sequence[str]) -> dict[str, list[str]]:
        holders: dict[str, list[str]] = {}
        for row in await self._read(cypher.IDENTIFIER_HOLDERS, keys=list(keys)):
            holders.setdefault(row["key"], []).append(row["profile_id"])
        return holders

    # --- the model registry ----------------------------------------------------------------

    async def register_model(self, version: str, rules_yaml: str, by: str) -> bool:
        try:
            (row,) = await self._write(cypher.REGISTER_MODEL, version=version, rules=rules_yaml,
                                       registered_at=_now(), registered_by=by)
        except ConstraintError:  # another process registered the same version at the same moment
            return False
        return bool(row["created"])

    async def model(self, version: str) -> RegisteredModel | None:
        rows = await self._read(cypher.MODEL, version=version)
        return RegisteredModel(**rows[0]) if rows else None

    async def models(self) -> list[RegisteredModel]:
        return [RegisteredModel(**row) for row in await self._read(cypher.MODELS)]

    async def live_model(self) -> str | None:
        rows = await self._read(cypher.META, name=LIVE_MODEL)
        return str(rows[0]["value"]) if rows else None

    async def promote_model(self, version: str, *, expected: str | None, action: str, by: str,
                            reason: str) -> Promotion:
        at = _now()
        written: list[int] = []

        def known(rows: Rows) -> None:
            if not rows[0]["known"]:
                raise UnknownModel(f"no model {version!r} is registered")

        def recorded(rows: Rows) -> None:
            if not rows:
                raise StoreConflict(f"the live model changed meanwhile: it is no longer {expected}")
            written.append(int(rows[0]["seq"]))

        await self._commit_steps([
            operations.Step(cypher.MODEL_KNOWN, {"version": version}, known),
            operations.Step(cypher.RECORD_PROMOTION, {"version": version, "expected": expected, "action": action,
                                                      "by": by, "at": at, "reason": reason}, recorded),
            operations.Step(cypher.SET_LIVE_MODEL, {"version": version}),
        ])
        return Promotion(written[-1], version, expected, action, by, at, reason)

    async def promotions(self) -> list[Promotion]:
        return [Promotion(**row) for row in await self._read(cypher.PROMOTIONS)]
