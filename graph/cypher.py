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

SCHEMA: tuple[Statement, ...] = (
    Statement("constraint_profile_id",
              "CREATE CONSTRAINT profile_id IF NOT EXISTS FOR (p:Profile) REQUIRE p.id IS UNIQUE"),
    Statement("constraint_identifier_key",
              "CREATE CONSTRAINT identifier_key IF NOT EXISTS FOR (i:Identifier) REQUIRE i.key IS UNIQUE"),
    Statement("constraint_touchpoint_event_id",
              "CREATE CONSTRAINT touchpoint_event_id IF NOT EXISTS FOR (t:Touchpoint) REQUIRE t.event_id IS UNIQUE"),
    # The blocking-key index: candidate lookup starts from one BlockingKey node per key.
    Statement("constraint_blocking_key",
              "CREATE CONSTRAINT blocking_key IF NOT EXISTS FOR (b:BlockingKey) REQUIRE b.key IS UNIQUE"),
    Statement("constraint_delta_id",
              "CREATE CONSTRAINT delta_id IF NOT EXISTS FOR (d:Delta) REQUIRE d.delta_id IS UNIQUE"),
    Statement("constraint_sequence_name",
              "CREATE CONSTRAINT sequence_name IF NOT EXISTS FOR (s:Sequence) REQUIRE s.name IS UNIQUE"),
    Statement("constraint_subscription_name",
              "CREATE CONSTRAINT subscription_name IF NOT EXISTS FOR (s:Subscription) REQUIRE s.name IS UNIQUE"),
    Statement("index_touchpoint_seq",
              "CREATE INDEX touchpoint_seq IF NOT EXISTS FOR (t:Touchpoint) ON (t.seq)"),
    Statement("index_unpublished_seq",
              "CREATE INDEX unpublished_seq IF NOT EXISTS FOR (d:Unpublished) ON (d.seq)"),
    Statement("index_review_status",
              "CREATE INDEX review_status IF NOT EXISTS FOR (r:Review) ON (r.status)"),
    Statement("constraint_operation_id",
              "CREATE CONSTRAINT operation_id IF NOT EXISTS FOR (o:Operation) REQUIRE o.id IS UNIQUE"),
    Statement("constraint_tombstone_profile_id",
              "CREATE CONSTRAINT tombstone_profile_id IF NOT EXISTS FOR (t:Tombstone) REQUIRE t.profile_id IS UNIQUE"),
    Statement("constraint_tombstone_key_hash",
              "CREATE CONSTRAINT tombstone_key_hash IF NOT EXISTS FOR (k:TombstoneKey) REQUIRE k.hash IS UNIQUE"),
    Statement("constraint_secret_name",
              "CREATE CONSTRAINT secret_name IF NOT EXISTS FOR (s:Secret) REQUIRE s.name IS UNIQUE"),
    Statement("index_delta_profile",
              "CREATE INDEX delta_profile IF NOT EXISTS FOR (d:Delta) ON (d.profile_id)"),
    # The key of tombstone hashes: made by whichever worker starts first, read by all.
    Statement("erasure_key",
              "MERGE (s:Secret {name: 'erasure_key'}) ON CREATE SET s.value = $value RETURN s.value AS value",
              ("value",)),
    # The timeline search's index (graph/fulltext.py): Lucene's CJK analyzer reads Chinese as
    # character bigrams, so a word needs no spaces around it. Eventually consistent, so indexing
    # is not part of the worker's commit; a search waits for it (SEARCH_INDEX_REFRESH).
    Statement("index_touchpoint_text",
              "CREATE FULLTEXT INDEX touchpoint_text IF NOT EXISTS FOR (t:Touchpoint) ON EACH [t.scenario, t.type, t.event] "
              "OPTIONS {indexConfig: {`fulltext.analyzer`: 'cjk', `fulltext.eventually_consistent`: true}}"),
    Statement("await_indexes", "CALL db.awaitIndexes($timeout_s)", ("timeout_s",)),
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
    MATCH (i:Identifier {key: key})
    RETURN {
      key: key,
      holders: COLLECT {
        MATCH (i)<-[:HAS_IDENTIFIER]-(p:Profile) RETURN p.id ORDER BY p.id LIMIT $holder_limit
      }
    }
  } AS identifiers,
  COLLECT {
    UNWIND $blocking_keys AS key
    MATCH (b:BlockingKey {key: key})
    RETURN {
      key: key,
      records: COLLECT {
        MATCH (b)<-[:BLOCKED_BY]-(t:Touchpoint)<-[:HAS_TOUCHPOINT]-(p:Profile)
        RETURN {seq: t.seq, event_id: t.event_id, profile_id: p.id, features: t.features}
        ORDER BY t.seq DESC LIMIT $per_key
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
  } AS erased
WITH outcomes, identifiers, blocking, refusals, erased,
  reduce(owners = $profile_ids, x IN identifiers |
    CASE WHEN size(x.holders) <= $generic_after THEN owners + x.holders ELSE owners END) AS owners
WITH outcomes, identifiers, blocking, refusals, erased, owners,
  reduce(ids = owners, x IN blocking | ids + [r IN x.records | r.profile_id]) AS involved
RETURN outcomes, identifiers, blocking, refusals, erased,
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
     "profile_ids", "records_per_profile", "tombstone_hashes"),
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
  ON CREATE SET held = properties(old)
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
  ON CREATE SET held.first_seen = row.first_seen, held.source = row.source, held.confidence = row.confidence
SET held.last_seen = row.last_seen
RETURN count(*) AS written
""",
    ("attachments",),
)

# Touchpoints, their blocking keys, decisions, reviews and deltas, one row per event. The
# sequence is taken last so its lock is held only from here to commit: arrival order (``seq``)
# is then commit order across workers, which keeps each profile's deltas in version order.
RECORD_EVENTS = Statement(
    "record_events",
    """
MERGE (sequence:Sequence {name: 'touchpoint'})
SET sequence.value = coalesce(sequence.value, 0) + size($events)
WITH sequence.value - size($events) AS base
UNWIND $events AS row
MATCH (p:Profile {id: row.profile_id})
CREATE (p)-[:HAS_TOUCHPOINT]->(t:Touchpoint {
  event_id: row.event_id, seq: base + row.pos, scenario: row.scenario, type: row.type,
  occurred_at: row.occurred_at, occurred: datetime(row.occurred_at), ingested_at: row.ingested_at,
  event: row.event, features: row.features
})
CREATE (t)-[:DECIDED_BY]->(d:Decision {
  event_id: row.event_id, profile_id: row.decided_profile_id, action: row.action,
  confidence: row.confidence, rule_version: row.rule_version, decided_at: row.decided_at,
  record: row.record
})
FOREACH (key IN row.blocking_keys |
  MERGE (b:BlockingKey {key: key})
  CREATE (t)-[:BLOCKED_BY]->(b))
FOREACH (review IN row.reviews |
  CREATE (d)-[:RAISED]->(:Review {
    id: base + row.pos, event_id: row.event_id, profile_ids: review.profile_ids,
    reason: review.reason, confidence: review.confidence, status: 'open', created_at: row.decided_at
  }))
FOREACH (delta IN row.deltas |
  CREATE (d)-[:EMITTED]->(:Delta:Unpublished {
    delta_id: delta.delta_id, seq: base + row.pos, index: delta.index, event_id: row.event_id,
    profile_id: delta.profile_id, delta: delta.json, published: false
  }))
RETURN count(*) AS written
""",
    ("events",),
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

DECISION = Statement(
    "decision",
    """
MATCH (:Touchpoint {event_id: $event_id})-[:DECIDED_BY]->(d:Decision)
RETURN d.record AS record
""",
    ("event_id",),
)

DECISIONS_FOR = Statement(
    "decisions_for",
    _LIVE_PROFILE
    + """
MATCH (live)-[:HAS_TOUCHPOINT]->(t:Touchpoint)-[:DECIDED_BY]->(d:Decision)
RETURN d.record AS record
ORDER BY t.seq
""",
    ("profile_id",),
)

# Ordered by the instant each touchpoint occurred (a native datetime, so offsets compare
# correctly), then by arrival.
TIMELINE = Statement(
    "timeline",
    _LIVE_PROFILE
    + """
MATCH (live)-[:HAS_TOUCHPOINT]->(t:Touchpoint)
RETURN t.event_id AS event_id, t.scenario AS scenario, t.type AS type,
  t.occurred_at AS occurred_at, t.event AS event
ORDER BY t.occurred, t.seq
""",
    ("profile_id",),
)

# Wait until the eventually consistent full-text indexes hold every committed write.
SEARCH_INDEX_REFRESH = Statement("search_index_refresh", "CALL db.index.fulltext.awaitEventuallyConsistentIndexRefresh()")

# The profile's touchpoints the full-text index finds for ``$query`` (Lucene syntax), best first.
SEARCH_TIMELINE = Statement(
    "search_timeline",
    _LIVE_PROFILE
    + """
CALL db.index.fulltext.queryNodes('touchpoint_text', $query) YIELD node AS t, score
WHERE EXISTS { (live)-[:HAS_TOUCHPOINT]->(t) }
RETURN t.event_id AS event_id, t.scenario AS scenario, t.type AS type,
  t.occurred_at AS occurred_at, t.event AS event
ORDER BY score DESC, t.seq
LIMIT $limit
""",
    ("profile_id", "query", "limit"),
)

ASSIGNMENTS = Statement(
    "assignments",
    """
MATCH (p:Profile)-[:HAS_TOUCHPOINT]->(t:Touchpoint)
RETURN t.event_id AS event_id, p.id AS profile_id
ORDER BY t.seq
""",
)

UNPUBLISHED_DELTAS = Statement(
    "unpublished_deltas",
    """
MATCH (d:Delta:Unpublished)
RETURN d.delta AS delta
ORDER BY d.seq, d.index
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
RETURN d.delta AS delta
ORDER BY d.seq, d.index
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
    RETURN {event_id: t.event_id, event: t.event} ORDER BY t.seq
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
SET held.first_seen = row.first_seen, held.last_seen = row.at, held.source = row.source, held.confidence = 1.0
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

DECIDE_REVIEW = Statement(
    "decide_review",
    """
MATCH (r:Review {id: $review_id})
WHERE r.status = 'open'
SET r.status = $status, r.decided_at = $at, r.decided_by = $actor, r.operation_id = $operation_id
RETURN count(r) AS decided
""",
    ("review_id", "status", "at", "actor", "operation_id"),
)

# The operation's record and its deltas, in arrival order with every touchpoint's.
RECORD_OPERATION = Statement(
    "record_operation",
    """
MERGE (sequence:Sequence {name: 'touchpoint'})
SET sequence.value = coalesce(sequence.value, 0) + 1
WITH sequence.value AS seq
CREATE (o:Operation {id: $id, seq: seq, kind: $kind, actor: $actor, at: $at, record: $record,
                     profile_ids: $profile_ids})
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
DETACH DELETE t, d, x
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
MATCH (r:Review)
WHERE id IN r.profile_ids
DETACH DELETE r
""",
    ("family",),
)

# Earlier operations on the family may carry an operator's free-text reason about the person.
ERASE_OPERATIONS = Statement(
    "erase_operations",
    """
MATCH (o:Operation)
WHERE any(id IN o.profile_ids WHERE id IN $family)
DETACH DELETE o
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
WITH [live.id] + COLLECT { MATCH (retired:Profile)-[:MERGED_INTO*]->(live) RETURN retired.id } AS ids
MATCH (o:Operation)
WHERE any(id IN o.profile_ids WHERE id IN ids)
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
        *SCHEMA,
        LOAD_NEIGHBOURHOOD,
        LOCK_PROFILES, UPSERT_PROFILES, RECORD_MERGES, MOVE_IDENTIFIERS, MOVE_TOUCHPOINTS,
        CREATE_IDENTIFIERS, ATTACH_IDENTIFIERS, RECORD_EVENTS, RECORD_REFUSALS,
        FAMILY, REVIVE_PROFILES, RETIRE_PROFILES, REASSIGN_TOUCHPOINTS, DROP_IDENTIFIERS, SET_IDENTIFIERS,
        KEEP_APART, DECIDE_REVIEW, RECORD_OPERATION,
        ERASE_BLOCKING_KEYS, ERASE_IDENTIFIERS, ERASE_TOUCHPOINTS, ERASE_RECORDS, ERASE_OPERATIONS, ERASE_PROFILES,
        RECORD_TOMBSTONE, TOMBSTONE, OPERATIONS_FOR, REVIEWS, IDENTIFIER_HOLDERS,
        SURVIVOR, PROFILE, DECISION, DECISIONS_FOR, TIMELINE, SEARCH_INDEX_REFRESH, SEARCH_TIMELINE, ASSIGNMENTS,
        UNPUBLISHED_DELTAS, UNPUBLISHED_DELTAS_OF, MARK_PUBLISHED, OPEN_REVIEWS, GENERIC_IDENTIFIERS,
        SUBSCRIPTIONS, PUT_SUBSCRIPTION, DELETE_SUBSCRIPTION,
        DELETE_EVERYTHING,
    )
})
