"""Every Cypher statement the Neo4j store runs, by name, with the parameters each one takes.

Keeping the text in one place lets a test hand all of it to Neo4j's own parser and semantic
analyser (``tests/test_cypher_statements.py``) and check that each statement's declared
parameters are exactly the ``$names`` it uses, so the Python side and the Cypher side cannot
drift apart silently.

Two rules shape the text:

* No ``CALL { ... }`` subqueries. Without a scope clause they are deprecated, and the scoped
  form ``CALL (x) { ... }`` needs Neo4j 5.23; ``COLLECT { ... }`` expressions (5.6+) and
  plain ``UNWIND`` pipelines do the same work on every 5.x server an operator may already run.
* Writes take rows: each statement ``UNWIND``s a whole batch of one kind of row, so a batch of
  events costs a handful of statements, not a handful per event.

The graph model these statements share is drawn in ``docs/neo4j.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True, slots=True)
class Statement:
    """One named Cypher statement and the parameter names it expects, no more and no fewer."""

    name: str
    text: str
    params: tuple[str, ...] = ()


# The live profile behind ``$profile_id``: itself, or the end of its MERGED_INTO chain.
# Lineage is kept as history (each retired profile points at the profile it was merged
# into at the time), so the survivor is found by following the chain, not stored.
_LIVE_PROFILE = """
MATCH (given:Profile {id: $profile_id})
OPTIONAL MATCH (given)-[:MERGED_INTO*]->(chain_end:Profile)
WHERE NOT EXISTS { (chain_end)-[:MERGED_INTO]->(:Profile) }
WITH coalesce(chain_end, given) AS live
"""

# --- schema: idempotent, run by every worker at start ------------------------------------

@dataclass(frozen=True, slots=True)
class SchemaRule:
    """A uniqueness constraint (``unique``) or a range index the store relies on.

    Creating one is idempotent, but ``IF NOT EXISTS`` also passes silently when something else
    already holds the name or the property (a plain index where a constraint belongs), so the
    store checks afterwards that each rule is in force (:data:`SHOW_CONSTRAINTS`, :data:`SHOW_INDEXES`).
    """

    name: str
    label: str
    property_name: str
    unique: bool = True

    @property
    def statement(self) -> Statement:
        if self.unique:
            text = (f"CREATE CONSTRAINT {self.name} IF NOT EXISTS "
                    f"FOR (n:{self.label}) REQUIRE n.{self.property_name} IS UNIQUE")
        else:
            text = f"CREATE INDEX {self.name} IF NOT EXISTS FOR (n:{self.label}) ON (n.{self.property_name})"
        return Statement(f"{'constraint' if self.unique else 'index'}_{self.name}", text)


SCHEMA_RULES: tuple[SchemaRule, ...] = (
    SchemaRule("profile_id", "Profile", "id"),
    SchemaRule("identifier_key", "Identifier", "key"),
    SchemaRule("touchpoint_event_id", "Touchpoint", "event_id"),
    # The blocking-key index: candidate lookup starts from one BlockingKey node per key.
    SchemaRule("blocking_key", "BlockingKey", "key"),
    SchemaRule("delta_id", "Delta", "delta_id"),
    SchemaRule("subscription_name", "Subscription", "name"),
    SchemaRule("operation_id", "Operation", "id"),
    SchemaRule("tombstone_profile_id", "Tombstone", "profile_id"),
    SchemaRule("tombstone_key_hash", "TombstoneKey", "hash"),
    SchemaRule("secret_name", "Secret", "name"),
    # A batch looks up its events' refusals; a review verdict finds its review by id. Unique
    # too: two workers refusing one event, or numbering two reviews alike, conflict and re-run.
    SchemaRule("refusal_event_id", "Refusal", "event_id"),
    SchemaRule("review_id", "Review", "id"),
    SchemaRule("touchpoint_seq", "Touchpoint", "seq", unique=False),
    SchemaRule("unpublished_seq", "Unpublished", "seq", unique=False),
    SchemaRule("review_status", "Review", "status", unique=False),
    SchemaRule("delta_profile", "Delta", "profile_id", unique=False),
    # Reviews and operations name the profiles they concern through ProfileRef nodes: Neo4j
    # indexes no list elements, so a list property would be a scan of every review.
    SchemaRule("profile_ref_id", "ProfileRef", "profile_id", unique=False),
    # Term frequencies: per value and per field, one counter node per writer (COUNT_TERMS).
    SchemaRule("term_count_key", "TermCount", "key", unique=False),
    # A closing writer folds its own counters into the shared ones (FOLD_TERM_COUNTS).
    SchemaRule("term_count_writer", "TermCount", "writer", unique=False),
    SchemaRule("term_total_field", "TermTotal", "field", unique=False),
    # Each profile's record count (COUNT_RECORDS), so watching profile growth is an index read.
    SchemaRule("profile_records", "Profile", "records", unique=False),
    # The store's own bookkeeping: which one-off upgrades ran (UPGRADE_RECORD_COUNTS).
    SchemaRule("meta_name", "Meta", "name"),
    # The model registry: rule sets by version, and the promotion log numbered without gaps, so
    # two promotions racing for the same number conflict and one of them re-reads the live version.
    SchemaRule("model_version", "Model", "version"),
    SchemaRule("promotion_seq", "Promotion", "seq"),
)

# Relationship indexes that bound the two lookups whose cost would grow with a node's degree: an
# identifier held by thousands of profiles (a shop's phone) and a blocking key shared by thousands
# of touchpoints. Each relationship carries its key and what it is sorted by, so the first few
# holders by id and the newest touchpoints by seq come from the index in order, whatever the degree.
RELATIONSHIP_INDEXES: tuple[Statement, ...] = (
    Statement("index_held_identifier",
              "CREATE INDEX held_identifier IF NOT EXISTS FOR ()-[h:HAS_IDENTIFIER]-() ON (h.key, h.holder)"),
    Statement("index_blocked_by",
              "CREATE INDEX blocked_by IF NOT EXISTS FOR ()-[r:BLOCKED_BY]-() ON (r.key, r.seq)"),
)

SCHEMA: tuple[Statement, ...] = (
    *(rule.statement for rule in SCHEMA_RULES),
    *RELATIONSHIP_INDEXES,
    # The key of tombstone hashes: made by whichever worker starts first, read by all.
    Statement("erasure_key",
              "MERGE (s:Secret {name: 'erasure_key'}) ON CREATE SET s.value = $value RETURN s.value AS value",
              ("value",)),
    # The Lucene index earlier releases searched the timeline with: a search now ranks the profile's
    # own touchpoints (graph/fulltext.py says why), and the index would only cost every write.
    Statement("drop_touchpoint_text", "DROP INDEX touchpoint_text IF EXISTS"),
    Statement("await_indexes", "CALL db.awaitIndexes($timeout_s)", ("timeout_s",)),
)

# What is in force, to check SCHEMA_RULES against after creating them.
SHOW_CONSTRAINTS = Statement(
    "show_constraints",
    "SHOW CONSTRAINTS YIELD name, type, labelsOrTypes, properties RETURN name, type, labelsOrTypes, properties",
)
SHOW_INDEXES = Statement(
    "show_indexes",
    "SHOW INDEXES YIELD name, type, labelsOrTypes, properties, owningConstraint "
    "RETURN name, type, labelsOrTypes, properties, owningConstraint",
)

# --- resolution: one read per batch -------------------------------------------------------

# Everything a batch of events can need, in one round trip: prior outcomes (idempotency),
# identifier holders (sorted by id, like the embedded store, and capped: one holder past the
# generic limit is enough to know a value is generic), the newest touchpoints per blocking
# key, the newest touchpoints of every strongly-matched profile, and the state of every
# profile any of those lead to. ``$profile_ids`` adds profiles to load in full on a follow-up
# read (rare: see graph/overlay.py).
LOAD_NEIGHBOURHOOD = Statement(
    "load_neighbourhood",
    """
WITH
  COLLECT {
    UNWIND $event_ids AS event_id
    MATCH (:Touchpoint {event_id: event_id})-[:DECIDED_BY]->(d:Decision)
    RETURN {
      event_id: event_id,
      record: d.record,
      deltas: COLLECT { MATCH (d)-[:EMITTED]->(x:Delta) RETURN x.delta ORDER BY x.index }
    }
  } AS outcomes,
  COLLECT {
    UNWIND $identifier_keys AS key
    MATCH (:Identifier {key: key})
    RETURN {
      key: key,
      holders: COLLECT {
        MATCH (:Profile)-[h:HAS_IDENTIFIER]->(:Identifier)
        WHERE h.key = key AND h.holder IS NOT NULL
        RETURN h.holder ORDER BY h.holder LIMIT $holder_limit
      }
    }
  } AS identifiers,
  COLLECT {
    UNWIND $blocking_keys AS key
    MATCH (:BlockingKey {key: key})
    RETURN {
      key: key,
      records: COLLECT {
        MATCH (t:Touchpoint)-[r:BLOCKED_BY]->(:BlockingKey)
        WHERE r.key = key AND r.seq IS NOT NULL
        WITH t ORDER BY r.seq DESC LIMIT $per_key
        MATCH (t)<-[:HAS_TOUCHPOINT]-(p:Profile)
        RETURN {seq: t.seq, event_id: t.event_id, profile_id: p.id, features: t.features}
        ORDER BY t.seq DESC
      }
    }
  } AS blocking,
  COLLECT {
    UNWIND $event_ids AS event_id
    MATCH (r:Refusal {event_id: event_id})
    RETURN {event_id: event_id, record: r.record}
  } AS refusals,
  COLLECT {
    UNWIND $tombstone_hashes AS hash
    MATCH (k:TombstoneKey {hash: hash})
    MATCH (t:Tombstone {profile_id: k.profile_id})
    RETURN {hash: hash, profile_id: k.profile_id, via: k.via, erased_at: t.erased_at}
  } AS erased,
  COLLECT {
    UNWIND $term_keys AS key
    MATCH (c:TermCount {key: key})
    WITH key, sum(c.n) AS n
    RETURN {key: key, n: n}
  } AS terms,
  COLLECT {
    UNWIND $term_fields AS field
    MATCH (t:TermTotal {field: field})
    WITH field, sum(t.records) AS records, sum(t.squares) AS squares
    RETURN {field: field, records: records, squares: squares}
  } AS term_totals
WITH outcomes, identifiers, blocking, refusals, erased, terms, term_totals,
  reduce(owners = $profile_ids, x IN identifiers |
    CASE WHEN size(x.holders) <= $generic_after THEN owners + x.holders ELSE owners END) AS owners
WITH outcomes, identifiers, blocking, refusals, erased, terms, term_totals, owners,
  reduce(ids = owners, x IN blocking | ids + [r IN x.records | r.profile_id]) AS involved
RETURN outcomes, identifiers, blocking, refusals, erased, terms, term_totals,
  COLLECT {
    UNWIND owners AS owner
    WITH DISTINCT owner
    MATCH (p:Profile {id: owner})
    RETURN {
      profile_id: owner,
      records: COLLECT {
        MATCH (p)-[:HAS_TOUCHPOINT]->(t:Touchpoint)
        RETURN {seq: t.seq, event_id: t.event_id, profile_id: owner, features: t.features}
        ORDER BY t.seq DESC LIMIT $records_per_profile
      }
    }
  } AS records,
  COLLECT {
    UNWIND involved AS profile_id
    WITH DISTINCT profile_id
    MATCH (p:Profile {id: profile_id})
    RETURN {
      id: p.id, version: p.version, created_at: p.created_at, traits: p.traits, consent: p.consent,
      identifiers: COLLECT { MATCH (p)-[:HAS_IDENTIFIER]->(i:Identifier) RETURN i.key },
      kept_apart: COLLECT {
        MATCH (p)<-[:MERGED_INTO*0..]-(:Profile)-[:KEPT_APART]-(:Profile)-[:MERGED_INTO*0..]->(other:Profile)
        WHERE NOT EXISTS { (other)-[:MERGED_INTO]->(:Profile) }
        RETURN DISTINCT other.id
      }
    }
  } AS profiles
""",
    ("event_ids", "identifier_keys", "holder_limit", "blocking_keys", "per_key", "generic_after",
     "profile_ids", "records_per_profile", "tombstone_hashes", "term_keys", "term_fields"),
)

# --- resolution: one write transaction per batch, statements in this order ----------------

# Optimistic concurrency. Each profile the batch changes or retires must still be live and at
# the version the batch read. The dummy property write takes the node's write lock *before*
# the version is read, so the check cannot pass on a value another transaction is about to
# replace (Neo4j reads committed data; a lock taken first makes that read the latest).
# Returns the ids that fail; the store turns any into a retryable conflict.
LOCK_PROFILES = Statement(
    "lock_profiles",
    """
UNWIND $profiles AS row
OPTIONAL MATCH (p:Profile {id: row.id})
SET p._lock = true
WITH row, p, p.version AS version, EXISTS { (p)-[:MERGED_INTO]->(:Profile) } AS retired
REMOVE p._lock
WITH row, p, version, retired
WHERE p IS NULL OR version <> row.version OR retired
RETURN row.id AS id
""",
    ("profiles",),
)

# MERGE is safe here: existing profiles were locked and checked above, and a new profile's id
# derives from its event id, so two workers creating it would collide on the touchpoint first.
UPSERT_PROFILES = Statement(
    "upsert_profiles",
    """
UNWIND $profiles AS row
MERGE (p:Profile {id: row.id})
  ON CREATE SET p.created_at = row.created_at
SET p.version = row.version, p.updated_at = row.updated_at, p.traits = row.traits, p.consent = row.consent
""",
    ("profiles",),
)

# Statements whose rows must all find their nodes return ``written``: a row whose MATCH found
# nothing would otherwise vanish without a trace, so the store compares it with the rows sent.

# Lineage as history: the retired profile points at the profile it was merged into.
RECORD_MERGES = Statement(
    "record_merges",
    """
UNWIND $merges AS row
MATCH (retired:Profile {id: row.retired})
MATCH (into:Profile {id: row.into})
CREATE (retired)-[:MERGED_INTO {event_id: row.event_id, merged_at: row.merged_at}]->(into)
SET retired.updated_at = row.merged_at
RETURN count(*) AS written
""",
    ("merges",),
)

# A retired profile's identifiers move to the batch's final survivor; where the survivor
# already holds one, the two sightings fold into one relationship.
MOVE_IDENTIFIERS = Statement(
    "move_identifiers",
    """
UNWIND $merges AS row
MATCH (retired:Profile {id: row.retired})-[old:HAS_IDENTIFIER]->(i:Identifier)
MATCH (survivor:Profile {id: row.survivor})
MERGE (survivor)-[held:HAS_IDENTIFIER]->(i)
  ON CREATE SET held = properties(old), held.holder = survivor.id
  ON MATCH SET
    held.first_seen = CASE WHEN old.first_seen < held.first_seen THEN old.first_seen ELSE held.first_seen END,
    held.last_seen = CASE WHEN old.last_seen > held.last_seen THEN old.last_seen ELSE held.last_seen END
DELETE old
""",
    ("merges",),
)

# Touchpoints move too, so timelines and candidate records read one hop from a live profile.
MOVE_TOUCHPOINTS = Statement(
    "move_touchpoints",
    """
UNWIND $merges AS row
MATCH (retired:Profile {id: row.retired})-[old:HAS_TOUCHPOINT]->(t:Touchpoint)
MATCH (survivor:Profile {id: row.survivor})
CREATE (survivor)-[:HAS_TOUCHPOINT]->(t)
DELETE old
""",
    ("merges",),
)

# CREATE, not MERGE: an identifier the batch read as new must still be new. If another
# worker created it meanwhile, the uniqueness constraint fails this statement and the batch
# is re-run, so the two workers end with one profile instead of two.
CREATE_IDENTIFIERS = Statement(
    "create_identifiers",
    """
UNWIND $identifiers AS row
CREATE (:Identifier {key: row.key, type: row.type})
""",
    ("identifiers",),
)

ATTACH_IDENTIFIERS = Statement(
    "attach_identifiers",
    """
UNWIND $attachments AS row
MATCH (p:Profile {id: row.profile_id})
MATCH (i:Identifier {key: row.key})
MERGE (p)-[held:HAS_IDENTIFIER]->(i)
  ON CREATE SET held.first_seen = row.first_seen, held.source = row.source, held.confidence = row.confidence,
    held.key = row.key, held.holder = row.profile_id
SET held.last_seen = row.last_seen
RETURN count(*) AS written
""",
    ("attachments",),
)

# Touchpoints, their blocking keys, decisions, reviews and deltas, one row per event, numbered
# by ``seq`` without a shared counter (a counter node would make every write of every worker
# wait for the one before it). ``seq`` is a logical clock: the server's clock in milliseconds
# times 1000 (room for a batch's events), but always above ``$floor`` (the last seq this worker wrote)
# and above the ``seq`` stamped on every profile the batch locked (``$after``). A batch that
# changes a profile holds its lock from LOCK_PROFILES to commit, so the next batch to change it
# reads the stamp after this one committed: each profile's deltas are numbered in version order,
# which is the order the outbox gives them in. Batches with no profile in common may share
# numbers; ties are broken by event id, which is all the order unrelated changes need.
RECORD_EVENTS = Statement(
    "record_events",
    """
OPTIONAL MATCH (seen:Profile) WHERE seen.id IN $after
WITH timestamp() * 1000 AS clock, max(seen.seq) AS stamped, collect(seen) AS seen
WITH seen, reduce(base = clock, s IN [$floor, stamped] |
  CASE WHEN s IS NOT NULL AND s + 1 > base THEN s + 1 ELSE base END) AS base
WITH seen, base, base + size($events) - 1 AS last
FOREACH (p IN seen | SET p.seq = last)
WITH base, last
UNWIND $events AS row
MATCH (p:Profile {id: row.profile_id})
SET p.seq = last
CREATE (p)-[:HAS_TOUCHPOINT]->(t:Touchpoint {
  event_id: row.event_id, seq: base + row.pos, scenario: row.scenario, type: row.type,
  occurred_at: row.occurred_at, occurred: datetime(row.occurred_at), ingested_at: row.ingested_at,
  event: row.event, features: row.features, terms: row.terms
})
CREATE (t)-[:DECIDED_BY]->(d:Decision {
  event_id: row.event_id, profile_id: row.decided_profile_id, action: row.action,
  confidence: row.confidence, rule_version: row.rule_version, decided_at: row.decided_at,
  record: row.record
})
FOREACH (key IN row.blocking_keys |
  MERGE (b:BlockingKey {key: key})
  CREATE (t)-[:BLOCKED_BY {key: key, seq: base + row.pos}]->(b))
FOREACH (review IN row.reviews |
  CREATE (d)-[:RAISED]->(r:Review {
    id: base + row.pos, event_id: row.event_id, profile_ids: review.profile_ids,
    reason: review.reason, confidence: review.confidence, status: 'open', created_at: row.decided_at
  })
  FOREACH (profile_id IN review.profile_ids | CREATE (r)-[:CONCERNS]->(:ProfileRef {profile_id: profile_id})))
FOREACH (delta IN row.deltas |
  CREATE (d)-[:EMITTED]->(:Delta:Unpublished {
    delta_id: delta.delta_id, seq: base + row.pos, index: delta.index, event_id: row.event_id,
    profile_id: delta.profile_id, delta: delta.json, published: false, claimed_until: timestamp() + $claim_ms
  }))
RETURN count(*) AS written, max(last) AS last
""",
    ("events", "after", "floor", "claim_ms"),
)

# Term frequencies (identity/compare.py term_weights), counted in the batch's own transaction:
# each value's count, and per field the records counted and the sum of squared counts. Counters
# are sharded by writer (a G-counter): each store handle adds only to its own nodes
# ({key, writer}, {field, shard: writer}) and reads sum every shard, so a worker's batch never
# waits on a counter another worker's open transaction holds (a common city is in nearly every
# batch). A value's count before the write is read from the other writers' committed shards
# unlocked, so two writers counting one value at the same instant can each miss the other's
# addition to the sum of squares; the drift is a few squares per collision, in a normaliser.
def _add_to_totals(shard: str) -> str:
    return f"""
WITH field, sum(after - before) AS records, sum(after * after - before * before) AS squares
MERGE (t:TermTotal {{field: field, shard: {shard}}})
  ON CREATE SET t.records = 0, t.squares = 0
SET t.records = t.records + records, t.squares = t.squares + squares
"""


# Counts ``row`` (key, field, add) into this writer's shard and the field's totals.
_COUNT_TERM_ROW = """
OPTIONAL MATCH (other:TermCount {key: row.key}) WHERE other.writer <> $writer
WITH row, coalesce(sum(other.n), 0) AS elsewhere
MERGE (c:TermCount {key: row.key, writer: $writer})
  ON CREATE SET c.n = 0
WITH row, c, elsewhere + c.n AS before
SET c.n = c.n + row.add
WITH row.field AS field, before, before + row.add AS after
""" + _add_to_totals("$writer")

COUNT_TERMS = Statement("count_terms", "UNWIND $terms AS row" + _COUNT_TERM_ROW, ("terms", "writer"))

# --- term counts of touchpoints stored before counting began (Neo4jStore.backfill_term_counts) --

# The next page of touchpoints that count no term: stored before counting, with no counted
# field, or bringing their profile no value it lacked.
UNCOUNTED_TOUCHPOINTS = Statement(
    "uncounted_touchpoints",
    """
MATCH (t:Touchpoint) WHERE t.seq >= $seq AND (t.seq > $seq OR t.event_id > $event_id)
  AND size(coalesce(t.terms, [])) = 0
MATCH (p:Profile)-[:HAS_TOUCHPOINT]->(t)
RETURN t.seq AS seq, t.event_id AS event_id, p.id AS profile_id, t.features AS features
ORDER BY t.seq, t.event_id
LIMIT $chunk
""",
    ("seq", "event_id", "chunk"),
)

# The term keys each profile counts, through the touchpoints that brought them.
COUNTED_TERMS = Statement(
    "counted_terms",
    """
UNWIND $ids AS id
MATCH (:Profile {id: id})-[:HAS_TOUCHPOINT]->(t:Touchpoint) WHERE size(coalesce(t.terms, [])) > 0
UNWIND t.terms AS key
RETURN id, collect(DISTINCT key) AS keys
""",
    ("ids",),
)

# Each touchpoint given the keys it now counts, and the counts added, in one transaction; a
# touchpoint another backfill counted meanwhile is skipped, so no touchpoint is counted twice.
BACKFILL_TERMS = Statement(
    "backfill_terms",
    """
UNWIND $rows AS touchpoint
MATCH (t:Touchpoint {event_id: touchpoint.event_id}) WHERE size(coalesce(t.terms, [])) = 0
SET t.terms = touchpoint.keys
WITH touchpoint UNWIND touchpoint.keys AS key
WITH key, count(*) AS add
WITH {key: key, field: split(key, ':')[0], add: add} AS row""" + _COUNT_TERM_ROW,
    ("rows", "writer"),
)

# Graphs whose term counts counted touchpoints, not profiles (before identity/plan.py
# terms_brought): a page of profiles at a time, each with its counting touchpoints in stored
# order (Neo4jStore._upgrade_terms_per_profile keeps each key on its profile's first).
PROFILE_TERMS = Statement(
    "profile_terms",
    """
MATCH (p:Profile) WHERE p.id > $after
WITH p ORDER BY p.id LIMIT $chunk
OPTIONAL MATCH (p)-[:HAS_TOUCHPOINT]->(t:Touchpoint) WHERE size(coalesce(t.terms, [])) > 0
WITH p, t ORDER BY t.seq, t.event_id
RETURN p.id AS profile_id, collect(CASE WHEN t IS NULL THEN null ELSE {event_id: t.event_id, terms: t.terms} END) AS touchpoints
ORDER BY profile_id
""",
    ("after", "chunk"),
)

# Each touchpoint left with the keys it alone brings its profile, and the others taken off this
# writer's counters. A touchpoint is locked, then changed only if it still holds what was read,
# so two workers upgrading at once take nothing off twice.
RECOUNT_TERMS = Statement(
    "recount_terms",
    """
UNWIND $touchpoints AS touchpoint
MATCH (t:Touchpoint {event_id: touchpoint.event_id})
SET t._lock = true
REMOVE t._lock
WITH t, touchpoint WHERE t.terms = touchpoint.old
SET t.terms = touchpoint.keys
WITH touchpoint UNWIND [key IN touchpoint.old WHERE NOT key IN touchpoint.keys] AS key
WITH key, count(*) AS removed
WITH {key: key, field: split(key, ':')[0], add: -removed} AS row""" + _COUNT_TERM_ROW,
    ("touchpoints", "writer"),
)

# A writer's counters folded, as its store closes, into one shared node per key and per field
# (``writer``/``shard`` 'folded', where erasure leaves what it keeps). Without this every writer
# run (a worker restart, a CLI command) left one more node per term it counted, and every read
# summed them all. A chunk per transaction; the writer's nodes are indexed, so each is a seek.
# Each counter is locked before it is read: a batch still committing may add to it meanwhile.
# A writer that crashed leaves its shard as it was: still counted, only not compacted.
FOLD_TERM_COUNTS = Statement(
    "fold_term_counts",
    """
MATCH (c:TermCount {writer: $writer})
WITH c LIMIT $chunk
SET c._lock = true
REMOVE c._lock
WITH c
OPTIONAL MATCH (f:TermCount {key: c.key, writer: 'folded'})
WITH c, head(collect(f)) AS f
FOREACH (_ IN CASE WHEN f IS NULL THEN [1] ELSE [] END | CREATE (:TermCount {key: c.key, writer: 'folded', n: c.n}))
FOREACH (x IN CASE WHEN f IS NULL THEN [] ELSE [f] END | SET x.n = x.n + c.n)
DELETE c
RETURN count(*) AS folded
""",
    ("writer", "chunk"),
)

FOLD_TERM_TOTALS = Statement(
    "fold_term_totals",
    """
MATCH (t:TermTotal {shard: $writer})
OPTIONAL MATCH (f:TermTotal {field: t.field, shard: 'folded'})
WITH t, head(collect(f)) AS f
FOREACH (_ IN CASE WHEN f IS NULL THEN [1] ELSE [] END |
  CREATE (:TermTotal {field: t.field, shard: 'folded', records: t.records, squares: t.squares}))
FOREACH (x IN CASE WHEN f IS NULL THEN [] ELSE [f] END |
  SET x.records = x.records + t.records, x.squares = x.squares + t.squares)
DELETE t
RETURN count(*) AS folded
""",
    ("writer",),
)

# Each profile a write gave, moved or took touchpoints from holds its record count, read from
# the node's degree (no touchpoint is visited). Recounted rather than added to, so the count is
# right whatever path changed it, and a retired profile drops to zero.
COUNT_RECORDS = Statement(
    "count_records",
    """
UNWIND $ids AS id
MATCH (p:Profile {id: id})
SET p.records = COUNT { (p)-[:HAS_TOUCHPOINT]->() }
""",
    ("ids",),
)

# Graphs written before record counts existed: counted once, a chunk per transaction, then
# marked done (docs/neo4j.md, upgrades). Profiles written since count themselves. Paged by id
# on its constraint, so each chunk seeks where the last ended instead of scanning past every
# profile already counted (no index holds a missing property).
UPGRADE_RECORD_COUNTS = Statement(
    "upgrade_record_counts",
    """
MATCH (p:Profile) WHERE p.id > $after
WITH p ORDER BY p.id LIMIT $chunk
WITH collect(p) AS page, max(p.id) AS last
CALL (page) {
  UNWIND page AS p
  WITH p WHERE p.records IS NULL
  SET p.records = COUNT { (p)-[:HAS_TOUCHPOINT]->() }
}
RETURN size(page) AS read, last
""",
    ("after", "chunk"),
)

META = Statement("meta", "MATCH (m:Meta {name: $name}) RETURN m.value AS value", ("name",))

PUT_META = Statement("put_meta", "MERGE (m:Meta {name: $name}) SET m.value = $value", ("name", "value"))

# A value recorded only where none is yet: the first worker's rules are the index's.
ADD_META = Statement("add_meta", "MERGE (m:Meta {name: $name}) ON CREATE SET m.value = $value", ("name", "value"))

# --- the blocking index rebuilt under another rule set (Neo4jStore.reindex_blocking) ---------

# Keys named by rule position (``b<N>:``), from before rule ids (``b.<digest>:``): a range seek
# on the BlockingKey constraint, since ``0``-``9`` sort right before ``:``.
POSITIONAL_KEYS = Statement(
    "positional_keys",
    "RETURN EXISTS { MATCH (b:BlockingKey) WHERE b.key >= 'b0' AND b.key < 'b:' } AS found",
)


def _touchpoint_page(column: str) -> str:
    """The next page of touchpoints after ($seq, $event_id), in that order, with one column of
    each: the Touchpoint.seq index seeks, and the event id orders touchpoints of two workers'
    batches that share a seq."""
    return f"""
MATCH (t:Touchpoint) WHERE t.seq >= $seq AND (t.seq > $seq OR t.event_id > $event_id)
RETURN t.seq AS seq, t.event_id AS event_id, t.{column} AS {column}
ORDER BY t.seq, t.event_id
LIMIT $chunk
"""


TOUCHPOINT_FEATURES = Statement("touchpoint_features", _touchpoint_page("features"), ("seq", "event_id", "chunk"))

# Each touchpoint's event as received: history for a replay.
ACCEPTED_EVENTS = Statement("accepted_events", _touchpoint_page("event"), ("seq", "event_id", "chunk"))

# Each touchpoint's blocking relationships replaced by those of its new keys.
REBLOCK_TOUCHPOINTS = Statement(
    "reblock_touchpoints",
    """
UNWIND $rows AS row
MATCH (t:Touchpoint {event_id: row.event_id})
OPTIONAL MATCH (t)-[old:BLOCKED_BY]->(:BlockingKey)
DELETE old
WITH DISTINCT t, row
FOREACH (key IN row.keys |
  MERGE (b:BlockingKey {key: key})
  CREATE (t)-[:BLOCKED_BY {key: key, seq: t.seq}]->(b))
RETURN count(*) AS written
""",
    ("rows",),
)

# Keys no touchpoint is blocked by any more (they hold personal values: none may linger),
# paged by key on its constraint, so each chunk starts where the last ended.
DROP_UNUSED_KEYS = Statement(
    "drop_unused_keys",
    """
MATCH (b:BlockingKey) WHERE b.key > $after
WITH b ORDER BY b.key LIMIT $chunk
WITH collect(b) AS page, max(b.key) AS last
CALL (page) {
  UNWIND page AS b
  WITH b WHERE NOT EXISTS { (b)<-[:BLOCKED_BY]-(:Touchpoint) }
  DETACH DELETE b
}
RETURN size(page) AS read, last
""",
    ("after", "chunk"),
)

# Events refused because they belong to an erased customer: their id and the reason, no more.
RECORD_REFUSALS = Statement(
    "record_refusals",
    """
UNWIND $refusals AS row
CREATE (:Refusal {event_id: row.event_id, record: row.record, refused_at: row.refused_at})
""",
    ("refusals",),
)

# --- people, APIs and publishers ----------------------------------------------------------

SURVIVOR = Statement("survivor", _LIVE_PROFILE + "RETURN live.id AS id", ("profile_id",))

PROFILE = Statement(
    "profile",
    _LIVE_PROFILE
    + """
RETURN live.id AS id, live.version AS version, live.created_at AS created_at,
  live.updated_at AS updated_at, live.traits AS traits, live.consent AS consent,
  COLLECT { MATCH (live)-[:HAS_IDENTIFIER]->(i:Identifier) RETURN i.key ORDER BY i.key } AS identifiers,
  COLLECT {
    MATCH (retired:Profile)-[:MERGED_INTO*]->(live)
    MATCH (retired)-[lineage:MERGED_INTO]->(:Profile)
    RETURN retired.id ORDER BY lineage.merged_at, retired.id
  } AS merged_from
""",
    ("profile_id",),
)

DECISIONS = Statement(
    "decisions",
    """
UNWIND $event_ids AS event_id
MATCH (:Touchpoint {event_id: event_id})-[:DECIDED_BY]->(d:Decision)
RETURN event_id, d.record AS record
""",
    ("event_ids",),
)

DECISIONS_FOR = Statement(
    "decisions_for",
    _LIVE_PROFILE
    + """
MATCH (live)-[:HAS_TOUCHPOINT]->(t:Touchpoint)-[:DECIDED_BY]->(d:Decision)
RETURN d.record AS record
ORDER BY t.seq, t.event_id
""",
    ("profile_id",),
)

# Ordered by the instant each touchpoint occurred, then by event id, as the embedded store
# orders them. Not by the datetime itself: Neo4j orders equal instants by their time zone.
TIMELINE = Statement(
    "timeline",
    _LIVE_PROFILE
    + """
MATCH (live)-[:HAS_TOUCHPOINT]->(t:Touchpoint)
RETURN t.event_id AS event_id, t.scenario AS scenario, t.type AS type,
  t.occurred_at AS occurred_at, t.event AS event
ORDER BY t.occurred.epochSeconds, t.occurred.nanosecond, t.event_id
""",
    ("profile_id",),
)

# The profile's touchpoints a search ranks (graph/fulltext.py): only that profile's, through its
# own edges, so the cost grows with the profile and not with all of them; only those that occurred
# in [$start, $end) when given (compared as instants).
SEARCH_TIMELINE = Statement(
    "search_timeline",
    _LIVE_PROFILE
    + """
MATCH (live)-[:HAS_TOUCHPOINT]->(t:Touchpoint)
WHERE ($start IS NULL OR t.occurred >= $start) AND ($end IS NULL OR t.occurred < $end)
RETURN t.event_id AS event_id, t.scenario AS scenario, t.type AS type,
  t.occurred_at AS occurred_at, t.event AS event
ORDER BY t.seq
""",
    ("profile_id", "start", "end"),
)

ASSIGNMENTS = Statement(
    "assignments",
    """
MATCH (p:Profile)-[:HAS_TOUCHPOINT]->(t:Touchpoint)
RETURN t.event_id AS event_id, p.id AS profile_id
ORDER BY t.seq, t.event_id
""",
)

# A uniform sample for learning: every touchpoint gets a random key, the lowest ``limit`` win.
SAMPLE_FEATURES = Statement(
    "sample_features",
    """
MATCH (t:Touchpoint)
WITH t ORDER BY rand()
LIMIT $limit
RETURN t.features AS features
""",
    ("limit",),
)

# Deltas no writer is sending (graph/store.py, Outbox.orphaned_deltas): the server's clock is
# every worker's. Deltas written before claims existed have none.
ORPHANED_DELTAS = Statement(
    "orphaned_deltas",
    """
MATCH (d:Delta:Unpublished)
WHERE coalesce(d.claimed_until, 0) <= timestamp()
RETURN d.delta_id AS delta_id, d.delta AS delta
ORDER BY d.seq, d.event_id, d.index
LIMIT $limit
""",
    ("limit",),
)

UNPUBLISHED_DELTAS = Statement(
    "unpublished_deltas",
    """
MATCH (d:Delta:Unpublished)
RETURN d.delta_id AS delta_id, d.delta AS delta
ORDER BY d.seq, d.event_id, d.index
LIMIT $limit
""",
    ("limit",),
)

# The outbox of a few events, found from their touchpoints (a unique-index lookup each), and
# of a few profiles (the delta_profile index).
UNPUBLISHED_DELTAS_OF = Statement(
    "unpublished_deltas_of",
    """
CALL () {
  UNWIND $event_ids AS event_id
  MATCH (:Touchpoint {event_id: event_id})-[:DECIDED_BY]->(:Decision)-[:EMITTED]->(d:Delta:Unpublished)
  RETURN d
  UNION
  UNWIND $profile_ids AS profile_id
  MATCH (d:Delta:Unpublished {profile_id: profile_id})
  RETURN d
}
RETURN d.delta_id AS delta_id, d.delta AS delta
ORDER BY d.seq, d.event_id, d.index
LIMIT $limit
""",
    ("event_ids", "profile_ids", "limit"),
)

MARK_PUBLISHED = Statement(
    "mark_published",
    """
UNWIND $delta_ids AS delta_id
MATCH (d:Delta {delta_id: delta_id})
SET d.published = true
REMOVE d:Unpublished
""",
    ("delta_ids",),
)

OPEN_REVIEWS = Statement(
    "open_reviews",
    """
MATCH (r:Review {status: 'open'})
RETURN r.id AS id, r.event_id AS event_id, r.profile_ids AS profile_ids, r.reason AS reason,
  r.confidence AS confidence, r.created_at AS created_at
ORDER BY r.id
""",
)

# Every touchpoint hangs off its profile, so counting the label (from Neo4j's count store) is
# counting ASSIGNMENTS' rows without reading them.
APPLIED_COUNT = Statement(
    "applied_count",
    """
MATCH (t:Touchpoint)
RETURN count(t) AS applied
""",
)

OPEN_REVIEW_COUNT = Statement(
    "open_review_count",
    """
MATCH (r:Review {status: 'open'})
RETURN count(r) AS open
""",
)

# Both read the profile_records index; a retired profile holds no records.
PROFILES_OVER = Statement(
    "profiles_over",
    "MATCH (p:Profile) WHERE p.records > $threshold RETURN count(p) AS over",
    ("threshold",),
)

LARGEST_PROFILES = Statement(
    "largest_profiles",
    """
MATCH (p:Profile) WHERE p.records > 0 AND NOT EXISTS { (p)-[:MERGED_INTO]->(:Profile) }
RETURN p.id AS id, p.records AS records
ORDER BY p.records DESC, p.id
LIMIT $limit
""",
    ("limit",),
)

GENERIC_IDENTIFIERS = Statement(
    "generic_identifiers",
    """
MATCH (i:Identifier)
WITH i, COUNT { (i)<-[:HAS_IDENTIFIER]-(:Profile) } AS holders
WHERE holders > $generic_after
RETURN i.key AS key, holders
ORDER BY holders DESC, key
""",
    ("generic_after",),
)

# --- the subscription registry, kept with the graph so every worker sees the same one ------

SUBSCRIPTIONS = Statement(
    "subscriptions",
    """
MATCH (s:Subscription)
RETURN s.name AS name, s.document AS document
ORDER BY name
""",
)

PUT_SUBSCRIPTION = Statement(
    "put_subscription",
    """
MERGE (s:Subscription {name: $name})
SET s.document = $document, s.updated_at = $updated_at
""",
    ("name", "document", "updated_at"),
)

DELETE_SUBSCRIPTION = Statement(
    "delete_subscription",
    """
OPTIONAL MATCH (s:Subscription {name: $name})
DELETE s
RETURN count(s) AS deleted
""",
    ("name",),
)

# --- the model registry: versioned rule sets and which one is live (Neo4jStore.promote_model) ---

REGISTER_MODEL = Statement(
    "register_model",
    """
MERGE (m:Model {version: $version})
ON CREATE SET m.rules = $rules, m.registered_at = $registered_at, m.registered_by = $registered_by, m.fresh = true
WITH m, coalesce(m.fresh, false) AS created
REMOVE m.fresh
RETURN created
""",
    ("version", "rules", "registered_at", "registered_by"),
)

_MODEL_FIELDS = ("m.version AS version, m.rules AS rules_yaml, m.registered_at AS registered_at, "
                 "m.registered_by AS registered_by")

MODEL = Statement("model", f"MATCH (m:Model {{version: $version}}) RETURN {_MODEL_FIELDS}", ("version",))

MODELS = Statement("models", f"MATCH (m:Model) RETURN {_MODEL_FIELDS} ORDER BY m.registered_at, m.version")

MODEL_KNOWN = Statement(
    "model_known", "OPTIONAL MATCH (m:Model {version: $version}) RETURN m IS NOT NULL AS known", ("version",))

# The log entry, written only while the live version is still the one the promoter read (no row
# back means it changed). The live-model node is write-locked (the SET) before it is read, so two
# promotions take turns: the second reads what the first committed and conflicts, where under
# read-committed isolation both could have read the same live version. Its seq is the next
# number; the promotion_seq constraint stays as a backstop.
RECORD_PROMOTION = Statement(
    "record_promotion",
    """
MATCH (m:Model {version: $version})
MERGE (live:Meta {name: 'live_model'})
SET live.locked = true
WITH live, live.value AS previous, COUNT { (:Promotion) } + 1 AS seq
WHERE previous = $expected OR (previous IS NULL AND $expected IS NULL)
CREATE (p:Promotion {seq: seq, version: $version, action: $action, by: $by, at: $at, reason: $reason})
SET p.previous = previous
REMOVE live.locked
RETURN p.seq AS seq
""",
    ("version", "expected", "action", "by", "at", "reason"),
)

SET_LIVE_MODEL = Statement("set_live_model", "MERGE (m:Meta {name: 'live_model'}) SET m.value = $version", ("version",))

PROMOTIONS = Statement(
    "promotions",
    """
MATCH (p:Promotion)
RETURN p.seq AS seq, p.version AS version, p.previous AS previous, p.action AS action, p.by AS by, p.at AS at,
       p.reason AS reason
ORDER BY seq
""",
)

# --- operations by people: merge, split, review verdicts (one write transaction each) -------

# The family an operation rewrites: the live profile, everything merged into it (with the last
# version each had), its touchpoints in arrival order and its identifiers' provenance.
FAMILY = Statement(
    "family",
    _LIVE_PROFILE
    + """
RETURN live.id AS id, live.version AS version, live.created_at AS created_at, live.traits AS traits,
  live.consent AS consent,
  COLLECT {
    MATCH (live)-[held:HAS_IDENTIFIER]->(i:Identifier)
    RETURN {key: i.key, first_seen: held.first_seen, source: held.source}
  } AS identifiers,
  COLLECT {
    MATCH (retired:Profile)-[:MERGED_INTO*]->(live)
    RETURN {id: retired.id, version: retired.version}
  } AS retired,
  COLLECT {
    MATCH (live)-[:HAS_TOUCHPOINT]->(t:Touchpoint)
    RETURN {event_id: t.event_id, event: t.event} ORDER BY t.seq, t.event_id
  } AS touchpoints
""",
    ("profile_id",),
)

# Profiles live after the operation stop pointing anywhere; retired ones point at their survivor.
REVIVE_PROFILES = Statement(
    "revive_profiles",
    """
UNWIND $ids AS id
MATCH (:Profile {id: id})-[lineage:MERGED_INTO]->(:Profile)
DELETE lineage
""",
    ("ids",),
)

RETIRE_PROFILES = Statement(
    "retire_profiles",
    """
UNWIND $retired AS row
MATCH (retired:Profile {id: row.retired})
MATCH (survivor:Profile {id: row.survivor})
OPTIONAL MATCH (retired)-[old:MERGED_INTO]->(:Profile)
DELETE old
WITH DISTINCT retired, survivor, row
CREATE (retired)-[:MERGED_INTO {event_id: row.operation_id, merged_at: row.at}]->(survivor)
RETURN count(*) AS written
""",
    ("retired",),
)

REASSIGN_TOUCHPOINTS = Statement(
    "reassign_touchpoints",
    """
UNWIND $touchpoints AS row
MATCH (:Profile)-[old:HAS_TOUCHPOINT]->(t:Touchpoint {event_id: row.event_id})
MATCH (p:Profile {id: row.profile_id})
DELETE old
CREATE (p)-[:HAS_TOUCHPOINT]->(t)
RETURN count(*) AS written
""",
    ("touchpoints",),
)

DROP_IDENTIFIERS = Statement(
    "drop_identifiers",
    """
UNWIND $ids AS id
MATCH (:Profile {id: id})-[held:HAS_IDENTIFIER]->(:Identifier)
DELETE held
""",
    ("ids",),
)

SET_IDENTIFIERS = Statement(
    "set_identifiers",
    """
UNWIND $identifiers AS row
MATCH (p:Profile {id: row.profile_id})
MERGE (i:Identifier {key: row.key})
  ON CREATE SET i.type = row.type
MERGE (p)-[held:HAS_IDENTIFIER]->(i)
SET held.first_seen = row.first_seen, held.last_seen = row.at, held.source = row.source, held.confidence = 1.0,
  held.key = row.key, held.holder = row.profile_id
RETURN count(*) AS written
""",
    ("identifiers",),
)

KEEP_APART = Statement(
    "keep_apart",
    """
UNWIND $pairs AS pair
MATCH (a:Profile {id: pair[0]})
MATCH (b:Profile {id: pair[1]})
MERGE (a)-[kept:KEPT_APART]->(b)
  ON CREATE SET kept.operation_id = $operation_id
""",
    ("pairs", "operation_id"),
)

# The hint: on a graph of few reviews the planner may start from the status index instead.
DECIDE_REVIEW = Statement(
    "decide_review",
    """
MATCH (r:Review {id: $review_id})
USING INDEX r:Review(id)
WHERE r.status = 'open'
SET r.status = $status, r.decided_at = $at, r.decided_by = $actor, r.operation_id = $operation_id
RETURN count(r) AS decided
""",
    ("review_id", "status", "at", "actor", "operation_id"),
)

# The operation's record and its deltas, numbered on the clock of RECORD_EVENTS: after every
# delta of the profiles it concerns (the operation locked those it changes).
RECORD_OPERATION = Statement(
    "record_operation",
    """
OPTIONAL MATCH (seen:Profile) WHERE seen.id IN $profile_ids
WITH timestamp() * 1000 AS clock, max(seen.seq) AS stamped, collect(seen) AS seen
WITH seen, CASE WHEN stamped IS NOT NULL AND stamped + 1 > clock THEN stamped + 1 ELSE clock END AS seq
FOREACH (p IN seen | SET p.seq = seq)
CREATE (o:Operation {id: $id, seq: seq, kind: $kind, actor: $actor, at: $at, record: $record,
                     profile_ids: $profile_ids})
FOREACH (profile_id IN $profile_ids | CREATE (o)-[:CONCERNS]->(:ProfileRef {profile_id: profile_id}))
FOREACH (delta IN $deltas |
  CREATE (o)-[:EMITTED]->(:Delta:Unpublished {
    delta_id: delta.delta_id, seq: seq, index: delta.index, event_id: $id,
    profile_id: delta.profile_id, delta: delta.json, published: false
  }))
""",
    ("id", "kind", "actor", "at", "record", "profile_ids", "deltas"),
)

# --- erasure: everything of the family goes, in one write transaction ----------------------

# Blocking-key and identifier nodes hold personal values in their keys: those the family alone
# used go with it; those other customers share stay, for them.
ERASE_BLOCKING_KEYS = Statement(
    "erase_blocking_keys",
    """
UNWIND $family AS id
MATCH (:Profile {id: id})-[:HAS_TOUCHPOINT]->(:Touchpoint)-[:BLOCKED_BY]->(b:BlockingKey)
WITH DISTINCT b
WHERE NOT EXISTS {
  MATCH (b)<-[:BLOCKED_BY]-(:Touchpoint)<-[:HAS_TOUCHPOINT]-(other:Profile)
  WHERE NOT other.id IN $family
}
DETACH DELETE b
""",
    ("family",),
)

# The family's touchpoints take back what they counted; a value only they had leaves no node.
# Erasure folds a value's shards into one node holding what the other customers still count,
# or none: a value only the erased customer had leaves no node behind. Every shard is locked
# (the dummy write) before the sum is read, so a worker's increment in flight is waited for and
# counted, not overwritten.
ERASE_TERMS = Statement(
    "erase_terms",
    """
UNWIND $family AS id
MATCH (:Profile {id: id})-[:HAS_TOUCHPOINT]->(t:Touchpoint)
UNWIND coalesce(t.terms, []) AS key
WITH key, count(*) AS removed
MATCH (c:TermCount {key: key})
SET c._lock = true
REMOVE c._lock
WITH key, removed, collect(c) AS shards, sum(c.n) AS before
WITH key, shards, before, CASE WHEN before > removed THEN before - removed ELSE 0 END AS after
FOREACH (c IN shards | DELETE c)
FOREACH (_ IN CASE WHEN after > 0 THEN [1] ELSE [] END | CREATE (:TermCount {key: key, writer: 'folded', n: after}))
WITH split(key, ':')[0] AS field, before, after
""" + _add_to_totals("'erasure'"),
    ("family",),
)

ERASE_IDENTIFIERS = Statement(
    "erase_identifiers",
    """
UNWIND $family AS id
MATCH (:Profile {id: id})-[:HAS_IDENTIFIER]->(i:Identifier)
WITH DISTINCT i
WHERE NOT EXISTS { MATCH (i)<-[:HAS_IDENTIFIER]-(other:Profile) WHERE NOT other.id IN $family }
DETACH DELETE i
""",
    ("family",),
)

ERASE_TOUCHPOINTS = Statement(
    "erase_touchpoints",
    """
UNWIND $family AS id
MATCH (:Profile {id: id})-[:HAS_TOUCHPOINT]->(t:Touchpoint)
OPTIONAL MATCH (t)-[:DECIDED_BY]->(d:Decision)
OPTIONAL MATCH (d)-[:EMITTED|RAISED]->(x)
OPTIONAL MATCH (x)-[:CONCERNS]->(ref:ProfileRef)
DETACH DELETE t, d, x, ref
""",
    ("family",),
)

ERASE_RECORDS = Statement(
    "erase_records",
    """
UNWIND $family AS id
OPTIONAL MATCH (delta:Delta {profile_id: id})
DETACH DELETE delta
WITH DISTINCT id
MATCH (:ProfileRef {profile_id: id})<-[:CONCERNS]-(r:Review)
WITH DISTINCT r
MATCH (r)-[:CONCERNS]->(ref:ProfileRef)
DETACH DELETE r, ref
""",
    ("family",),
)

# Earlier operations on the family may carry an operator's free-text reason about the person.
ERASE_OPERATIONS = Statement(
    "erase_operations",
    """
UNWIND $family AS id
MATCH (:ProfileRef {profile_id: id})<-[:CONCERNS]-(o:Operation)
WITH DISTINCT o
MATCH (o)-[:CONCERNS]->(ref:ProfileRef)
DETACH DELETE o, ref
""",
    ("family",),
)

ERASE_PROFILES = Statement(
    "erase_profiles",
    """
UNWIND $family AS id
MATCH (p:Profile {id: id})
DETACH DELETE p
""",
    ("family",),
)

RECORD_TOMBSTONE = Statement(
    "record_tombstone",
    """
UNWIND $family AS id
MERGE (t:Tombstone {profile_id: id})
SET t.erased_at = $erased_at, t.operation_id = $operation_id
WITH count(*) AS marked
UNWIND $hashes AS row
MERGE (k:TombstoneKey {hash: row.hash})
  ON CREATE SET k.profile_id = $profile_id, k.via = row.via
""",
    ("family", "erased_at", "operation_id", "hashes", "profile_id"),
)

TOMBSTONE = Statement(
    "tombstone",
    """
MATCH (t:Tombstone {profile_id: $profile_id})
RETURN t.profile_id AS profile_id, t.erased_at AS erased_at, t.operation_id AS operation_id
""",
    ("profile_id",),
)

OPERATIONS_FOR = Statement(
    "operations_for",
    _LIVE_PROFILE
    + """
UNWIND [live.id] + COLLECT { MATCH (retired:Profile)-[:MERGED_INTO*]->(live) RETURN retired.id } AS id
MATCH (:ProfileRef {profile_id: id})<-[:CONCERNS]-(o:Operation)
WITH DISTINCT o
RETURN o.record AS record
ORDER BY o.seq
""",
    ("profile_id",),
)

REVIEWS = Statement(
    "reviews",
    """
MATCH (r:Review)
WHERE $status IS NULL OR r.status = $status
RETURN r.id AS id, r.event_id AS event_id, r.profile_ids AS profile_ids, r.reason AS reason,
  r.confidence AS confidence, r.created_at AS created_at, r.status AS status, r.decided_at AS decided_at,
  r.decided_by AS decided_by, r.operation_id AS operation_id
ORDER BY r.id
""",
    ("status",),
)

IDENTIFIER_HOLDERS = Statement(
    "identifier_holders",
    """
UNWIND $keys AS key
MATCH (:Identifier {key: key})<-[:HAS_IDENTIFIER]-(p:Profile)
RETURN key, p.id AS profile_id
ORDER BY key, profile_id
""",
    ("keys",),
)

# For tests and throwaway demo databases only: the store itself never deletes anything.
DELETE_EVERYTHING = Statement("delete_everything", "MATCH (n) DETACH DELETE n")

STATEMENTS: Mapping[str, Statement] = MappingProxyType({
    s.name: s
    for s in (
        *SCHEMA, SHOW_CONSTRAINTS, SHOW_INDEXES,
        LOAD_NEIGHBOURHOOD,
        LOCK_PROFILES, UPSERT_PROFILES, RECORD_MERGES, MOVE_IDENTIFIERS, MOVE_TOUCHPOINTS,
        CREATE_IDENTIFIERS, ATTACH_IDENTIFIERS, COUNT_TERMS, FOLD_TERM_COUNTS, FOLD_TERM_TOTALS, RECORD_EVENTS, COUNT_RECORDS, RECORD_REFUSALS,
        UPGRADE_RECORD_COUNTS, META, PUT_META, ADD_META, PROFILES_OVER, LARGEST_PROFILES,
        POSITIONAL_KEYS, TOUCHPOINT_FEATURES, ACCEPTED_EVENTS, REBLOCK_TOUCHPOINTS, DROP_UNUSED_KEYS,
        UNCOUNTED_TOUCHPOINTS, COUNTED_TERMS, BACKFILL_TERMS, PROFILE_TERMS, RECOUNT_TERMS,
        FAMILY, REVIVE_PROFILES, RETIRE_PROFILES, REASSIGN_TOUCHPOINTS, DROP_IDENTIFIERS, SET_IDENTIFIERS,
        KEEP_APART, DECIDE_REVIEW, RECORD_OPERATION,
        ERASE_BLOCKING_KEYS, ERASE_TERMS, ERASE_IDENTIFIERS, ERASE_TOUCHPOINTS, ERASE_RECORDS, ERASE_OPERATIONS, ERASE_PROFILES,
        RECORD_TOMBSTONE, TOMBSTONE, OPERATIONS_FOR, REVIEWS, IDENTIFIER_HOLDERS,
        SURVIVOR, PROFILE, DECISIONS, DECISIONS_FOR, TIMELINE, SEARCH_TIMELINE, ASSIGNMENTS, APPLIED_COUNT, SAMPLE_FEATURES,
        UNPUBLISHED_DELTAS, UNPUBLISHED_DELTAS_OF, ORPHANED_DELTAS, MARK_PUBLISHED, OPEN_REVIEWS, OPEN_REVIEW_COUNT, GENERIC_IDENTIFIERS,
        SUBSCRIPTIONS, PUT_SUBSCRIPTION, DELETE_SUBSCRIPTION,
        REGISTER_MODEL, MODEL, MODELS, MODEL_KNOWN, RECORD_PROMOTION, SET_LIVE_MODEL, PROMOTIONS,
        DELETE_EVERYTHING,
    )
})
