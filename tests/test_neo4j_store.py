"""The Neo4j store against a real Neo4j server: schema at start, a batch in a fixed handful of
round trips, conflicts with a real second writer re-run and bounded, outages reported as such.

The server is the session's (tests/neo4j_support.py). Only faults a server cannot produce on
demand (a connection lost or a transient error mid-transaction) are injected, by
tests/neo4j_faults.py in front of the real driver.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
import pytest
from neo4j import AsyncGraphDatabase
from neo4j.exceptions import ServiceUnavailable, TransientError
from structlog.testing import capture_logs

from graph import cypher
from graph.neo4j import Neo4jStore
from graph.neo4j_settings import Neo4jSettings
from graph.store import POSITIONAL, StoreConflict, StoreError, StoreUnavailable
from identity.features import prepare, term_keys
from devstack.broker import free_port
from service.blocking import BlockingIndexUnusable, start_with_blocking_index
from service.resolver import Resolver
from tests import neo4j_support
from tests.conftest import make_event
from tests.neo4j_faults import Faults, server_error

pytestmark = pytest.mark.skipif(not neo4j_support.configured(), reason=neo4j_support.SKIPPED)


@pytest.fixture
async def store() -> AsyncIterator[Neo4jStore]:
    async with neo4j_support.empty_store() as opened:
        opened.stats.queries = opened.stats.transactions = opened.stats.round_trips = 0
        yield opened


@pytest.fixture
async def second_worker(store) -> AsyncIterator[Neo4jStore]:
    async with Neo4jStore(store.settings) as other:
        yield other


async def query(store: Neo4jStore, text: str, **params: Any) -> list[dict[str, Any]]:
    """A look at the graph from outside the store, as an operator's Cypher shell has."""
    result = await store.driver.execute_query(text, params, database_=store.settings.database)
    return [r.data() for r in result.records]


def new_customers(rules, n, prefix="c"):
    return [prepare(make_event({"crm_id": f"{prefix}-{i}"}, {"city": "Shanghai"}), rules) for i in range(n)]


class Rival:
    """The store as one worker sees it, with another writer committing between each batch's
    read and its write (``meanwhile``, for the first ``times`` batches)."""

    def __init__(self, store: Neo4jStore, meanwhile: Callable[[], Awaitable[Any]], times: int) -> None:
        self.store, self.meanwhile, self.times = store, meanwhile, times

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    @asynccontextmanager
    async def transaction(self, *, claim_s: float = 0.0) -> AsyncIterator[Any]:
        async with self.store.transaction(claim_s=claim_s) as tx:
            yield tx
            if self.times > 0:
                self.times -= 1
                await self.meanwhile()


# --- schema -------------------------------------------------------------------------------

async def test_open_creates_every_constraint_and_index_the_store_relies_on(store):
    constraints = {r["name"] for r in await query(store, "SHOW CONSTRAINTS YIELD name RETURN name")}
    indexes = {r["name"] for r in await query(store, "SHOW INDEXES YIELD name RETURN name")}
    assert {r.name for r in cypher.SCHEMA_RULES if r.unique} <= constraints
    assert {r.name for r in cypher.SCHEMA_RULES if not r.unique} <= indexes


async def test_schema_statement_another_worker_won_at_the_same_moment_is_not_an_error(store):
    faults = Faults()
    faults.failures["constraint_profile_id"] = [server_error("Neo.ClientError.Schema.EquivalentSchemaRuleAlreadyExists")]
    async with Neo4jStore(store.settings, connect=faults.connect) as again:
        assert await again.survivor("p_nobody") is None
    assert faults.raised == ["constraint_profile_id"]


async def test_plain_index_where_a_uniqueness_constraint_belongs_is_reported_by_name(store):
    await query(store, "DROP CONSTRAINT profile_id")
    await query(store, "CREATE INDEX operators_profile_index FOR (p:Profile) ON (p.id)")
    try:
        with pytest.raises(StoreError) as raised:
            await Neo4jStore(store.settings).open()
        message = str(raised.value)
        assert "index 'operators_profile_index' on :Profile(id)" in message
        assert "uniqueness constraint 'profile_id'" in message and "DROP INDEX `operators_profile_index`" in message
    finally:
        await query(store, "DROP INDEX operators_profile_index IF EXISTS")
        async with Neo4jStore(store.settings):  # puts the constraint back for the other tests
            pass
    assert "profile_id" in {r["name"] for r in await query(store, "SHOW CONSTRAINTS YIELD name RETURN name")}


async def test_other_index_holding_a_needed_name_is_reported(store):
    await query(store, "DROP INDEX review_status")
    await query(store, "CREATE INDEX review_status FOR (r:Review) ON (r.reason)")
    try:
        with pytest.raises(StoreError, match="range index 'review_status' on :Review\\(status\\) is missing: "
                                             "the name 'review_status' is taken"):
            await Neo4jStore(store.settings).open()
    finally:
        await query(store, "DROP INDEX review_status")
        async with Neo4jStore(store.settings):
            pass


# --- erasure and the transaction logs ----------------------------------------------------

@pytest.mark.skipif(bool(os.environ.get(neo4j_support.ENV_URI)), reason="a server of the environment's: its settings are its own")
async def test_local_server_keeps_no_transaction_log_past_the_newest_so_erased_values_go_with_it(store):
    rows = await query(store, "SHOW SETTINGS YIELD name, value WHERE name IN $names RETURN name, value",
                       names=["db.tx_log.rotation.retention_policy", "db.tx_log.rotation.size",
                              "db.checkpoint.interval.time"])
    assert {r["name"]: r["value"] for r in rows} == {
        "db.tx_log.rotation.retention_policy": "keep_none", "db.tx_log.rotation.size": "1.00MiB",
        "db.checkpoint.interval.time": "1m"}


# --- logging in ---------------------------------------------------------------------------

async def test_refused_login_names_the_settings_to_check(store):
    wrong = Neo4jSettings(store.settings.url, store.settings.user, "not-the-password", store.settings.database)
    with pytest.raises(StoreError, match="IDGRAPH_NEO4J_PASSWORD"):
        await Neo4jStore(wrong).open()


async def test_unreachable_server_is_named_at_open():
    url = f"bolt://127.0.0.1:{free_port()}"
    with pytest.raises(StoreError, match=f"cannot reach Neo4j at {url}"):
        await Neo4jStore(Neo4jSettings(url, "neo4j", "s3cret", "neo4j")).open()


async def test_graph_from_before_record_counts_is_counted_once_at_open(store, rules):
    outcomes = await Resolver(store, rules).resolve(new_customers(rules, 2) + new_customers(rules, 1))
    await query(store, "MATCH (p:Profile) REMOVE p.records")
    await query(store, "MATCH (m:Meta) DELETE m")
    async with Neo4jStore(store.settings) as reopened:
        growth = await reopened.profile_growth(threshold=1)
    assert (growth.over_threshold, growth.largest[0]) == (1, (outcomes[0].profile_id, 2))
    assert await query(store, "MATCH (p:Profile) WHERE p.records IS NULL RETURN p.id") == []


async def counting_per_record(store, rules):
    """A graph as the release before per-profile counting left it: every touchpoint all its keys."""
    for crm_id, city in (("c-1", "Leeds"), ("c-1", "York"), ("c-2", "York")):
        await Resolver(store, rules).resolve([prepare(make_event({"crm_id": crm_id}, {"family_name": "Smith", "city": city}), rules)])
    for t in await query(store, "MATCH (t:Touchpoint) RETURN t.event_id AS event_id, t.features AS features"):
        await query(store, "MATCH (t:Touchpoint {event_id: $e}) SET t.terms = $keys",
                    e=t["event_id"], keys=list(term_keys(orjson.loads(t["features"]), rules)))
    await query(store, "MATCH (n) WHERE n:TermCount OR n:TermTotal OR (n:Meta AND n.name = 'terms_counted_per_profile') DELETE n")
    await query(store, "UNWIND [['family_name:smith', 3], ['city:leeds', 1], ['city:york', 2]] AS c "
                       "CREATE (:TermCount {key: c[0], writer: 'folded', n: c[1]})")
    await query(store, "UNWIND [['family_name', 3, 9], ['city', 3, 5]] AS t "
                       "CREATE (:TermTotal {field: t[0], shard: 'folded', records: t[1], squares: t[2]})")


async def test_two_workers_starting_at_once_on_a_graph_counting_per_record_take_nothing_off_twice(store, rules, monkeypatch):
    monkeypatch.setattr("graph.neo4j.UPGRADE_CHUNK", 1)
    await counting_per_record(store, rules)

    async def start_one() -> None:
        async with Neo4jStore(store.settings):
            pass

    await asyncio.gather(start_one(), start_one())
    counts = await query(store, "MATCH (c:TermCount) RETURN c.key AS key, sum(c.n) AS n")
    assert {c["key"]: c["n"] for c in counts} == {"family_name:smith": 2, "city:leeds": 1, "city:york": 2}


async def test_graph_counting_terms_per_record_counts_them_per_profile_at_open(store, rules, monkeypatch):
    monkeypatch.setattr("graph.neo4j.UPGRADE_CHUNK", 1)  # a profile per page
    await counting_per_record(store, rules)
    async with Neo4jStore(store.settings):
        pass
    counts = await query(store, "MATCH (c:TermCount) RETURN c.key AS key, sum(c.n) AS n")
    totals = await query(store, "MATCH (t:TermTotal) RETURN t.field AS field, sum(t.records) AS records, sum(t.squares) AS squares")
    assert {c["key"]: c["n"] for c in counts} == {"family_name:smith": 2, "city:leeds": 1, "city:york": 2}
    assert {t["field"]: (t["records"], t["squares"]) for t in totals} == {"family_name": (2, 4), "city": (3, 5)}
    kept = await query(store, "MATCH (t:Touchpoint) RETURN t.terms AS terms ORDER BY t.seq, t.event_id")
    assert [sorted(t["terms"]) for t in kept] == [["city:leeds", "family_name:smith"], ["city:york"], ["city:york", "family_name:smith"]]


async def test_record_count_upgrade_pages_through_profiles_chunk_by_chunk(store, rules, monkeypatch):
    monkeypatch.setattr("graph.neo4j.UPGRADE_CHUNK", 2)
    await Resolver(store, rules).resolve(new_customers(rules, 5))
    await query(store, "MATCH (p:Profile) REMOVE p.records")
    await query(store, "MATCH (m:Meta) DELETE m")
    async with Neo4jStore(store.settings):
        pass
    assert await query(store, "MATCH (p:Profile) RETURN p.records AS records") == [{"records": 1}] * 5


async def positional_graph(store, rules):
    """The graph as the release before rule ids left it: keys named ``b<position>:``, no signature."""
    (first,) = await Resolver(store, rules).resolve([prepare(make_event(traits={"name": "Zhang Wei", "city": "Shanghai"}), rules)])
    await query(store, "MATCH (m:Meta {name: 'blocking_signature'}) DELETE m")
    await query(store, "MATCH (b:BlockingKey)<-[r:BLOCKED_BY]-() WITH b, r, 'b3:' + split(b.key, ':')[1] AS old "
                       "SET b.key = old, r.key = old")
    return first


async def test_graph_keyed_by_rule_position_is_refused_at_worker_start_naming_reindex(store, rules):
    await positional_graph(store, rules)
    assert await store.blocking_signature() == POSITIONAL
    with pytest.raises(BlockingIndexUnusable, match="idgraph reindex"):
        await start_with_blocking_index(store, rules)
    assert await store.blocking_signature() == POSITIONAL


async def test_reindex_replaces_keys_named_by_rule_position_and_drops_them(store, rules):
    first = await positional_graph(store, rules)
    assert await store.reindex_blocking(rules) == 1
    assert await query(store, "MATCH (b:BlockingKey) WHERE NOT b.key STARTS WITH 'b.' RETURN b.key") == []
    (again,) = await Resolver(store, rules).resolve([prepare(make_event(traits={"name": "Zhang Wei", "city": "Shanghai"}), rules)])
    assert first.profile_id in {c["profile_id"] for c in again.decision["evidence"]["candidates"]}


async def test_reindex_pages_through_touchpoints_sharing_a_seq(store, rules, monkeypatch):
    monkeypatch.setattr("graph.neo4j.REINDEX_CHUNK", 2)
    await Resolver(store, rules).resolve(new_customers(rules, 5))
    await query(store, "MATCH (t:Touchpoint) SET t.seq = 7")
    assert await store.reindex_blocking(rules) == 5


async def test_closed_writers_fold_their_term_counters_into_one_node_per_value(store, rules):
    events = [prepare(make_event({"crm_id": f"c-{i}"}, {"city": "Shanghai"}), rules) for i in range(3)]
    for run in (events[:2], events[2:]):
        async with Neo4jStore(store.settings) as writer:
            await Resolver(writer, rules).resolve(run)
    counters = await query(store, "MATCH (c:TermCount) WHERE c.key STARTS WITH 'city:' RETURN c.writer AS writer, c.n AS n")
    totals = await query(store, "MATCH (t:TermTotal {field: 'city'}) RETURN t.shard AS shard, t.records AS records, "
                                "t.squares AS squares")
    assert counters == [{"writer": "folded", "n": 3}]
    assert totals == [{"shard": "folded", "records": 3, "squares": 9}]


async def test_reindex_drops_every_unused_key_chunk_by_chunk(store, rules, monkeypatch):
    monkeypatch.setattr("graph.neo4j.REINDEX_CHUNK", 2)
    await Resolver(store, rules).resolve([prepare(make_event(traits={"name": f"Zhang Wei{i}", "city": f"C{i}"}), rules)
                                          for i in range(4)])
    await query(store, "MATCH (b:BlockingKey)<-[r:BLOCKED_BY]-() WITH b, r, 'b3:' + split(b.key, ':')[1] AS old "
                       "SET b.key = old, r.key = old")
    await store.reindex_blocking(rules)
    assert await query(store, "MATCH (b:BlockingKey) WHERE NOT b.key STARTS WITH 'b.' RETURN b.key") == []


# --- a batch's conversation with the server -----------------------------------------------

@pytest.mark.parametrize("size", [1, 100])
async def test_batch_costs_one_read_and_one_write_transaction_whatever_its_size(store, rules, size):
    outcomes = await Resolver(store, rules).resolve(new_customers(rules, size))
    assert {o.decision["action"] for o in outcomes} == {"create"}
    assert (store.stats.queries, store.stats.transactions) == (7, 2)
    # The read: BEGIN with the query, COMMIT. The write: BEGIN, six statements, COMMIT.
    assert store.stats.round_trips == 2 + 8


async def test_batch_of_new_customers_writes_one_profile_identifier_and_touchpoint_each(store, rules):
    await Resolver(store, rules).resolve(new_customers(rules, 3))
    rows = await query(store, "MATCH (p:Profile)-[:HAS_IDENTIFIER]->(i:Identifier) WHERE i.key STARTS WITH 'crm_id:' "
                              "RETURN i.key AS key, COUNT { (p)-[:HAS_TOUCHPOINT]->() } AS touchpoints ORDER BY key")
    assert rows == [{"key": f"crm_id:C-{i}", "touchpoints": 1} for i in range(3)]


async def test_batch_of_redeliveries_reads_once_and_writes_nothing(store, rules):
    batch = new_customers(rules, 2)
    first = await Resolver(store, rules).resolve(batch)
    store.stats.queries = store.stats.transactions = 0
    again = await Resolver(store, rules).resolve(batch)
    assert all(o.duplicate for o in again) and [o.profile_id for o in again] == [o.profile_id for o in first]
    assert (store.stats.queries, store.stats.transactions) == (1, 1)


# --- other writers ------------------------------------------------------------------------

async def test_identifier_another_worker_created_meanwhile_re_runs_the_whole_batch(store, second_worker, rules):
    theirs = [prepare(make_event({"email": "new@example.com"}), rules)]
    rival = Rival(store, lambda: Resolver(second_worker, rules).resolve(theirs), times=1)
    (outcome,) = await Resolver(rival, rules).resolve([prepare(make_event({"email": "new@example.com"}), rules)])
    assert outcome.decision["action"] == "link" and store.stats.conflicts == 1
    assert len({p for _, p in await store.assignments()}) == 1


async def test_profile_changed_by_another_worker_since_the_read_re_runs_the_whole_batch(store, second_worker, rules):
    (held,) = await Resolver(store, rules).resolve(new_customers(rules, 1))
    theirs = [prepare(make_event({"crm_id": "c-0"}, {"city": "Beijing"}), rules)]
    rival = Rival(store, lambda: Resolver(second_worker, rules).resolve(theirs), times=1)
    (outcome,) = await Resolver(rival, rules).resolve(new_customers(rules, 1))
    assert outcome.decision["action"] == "link" and outcome.profile_id == held.profile_id
    assert (await store.profile(held.profile_id)).version == 3 and store.stats.conflicts == 1


async def test_conflict_that_outlasts_the_retries_reaches_the_caller_as_a_busy_store_with_one_log_line(store, rules):
    (held,) = await Resolver(store, rules).resolve(new_customers(rules, 1))
    bump = lambda: query(store, "MATCH (p:Profile {id: $id}) SET p.version = p.version + 1", id=held.profile_id)  # noqa: E731
    rival = Rival(store, bump, times=99)
    with capture_logs() as logs, pytest.raises(StoreUnavailable, match="conflicted with other writers 3 times") as raised:
        await Resolver(rival, rules, attempts=3).resolve(new_customers(rules, 1))
    assert not isinstance(raised.value, StoreConflict)
    assert [(e["event"], e["attempts"]) for e in logs] == [("batch gave up after store conflicts", 3)]
    assert store.stats.conflicts == 3 and len(await store.assignments()) == 1


# --- writers in parallel -----------------------------------------------------------------

async def test_batch_commits_while_another_workers_write_on_other_profiles_is_still_open(store, rules):
    faults = Faults()
    reached, release = faults.pauses["record_events"] = (asyncio.Event(), asyncio.Event())
    async with Neo4jStore(store.settings, connect=faults.connect) as held:
        holding = asyncio.create_task(Resolver(held, rules).resolve(new_customers(rules, 3)))
        await asyncio.wait_for(reached.wait(), 30)
        try:  # a counter node shared by every write would keep this waiting for the one above
            mine = await asyncio.wait_for(Resolver(store, rules).resolve(new_customers(rules, 2, prefix="other")), 30)
        finally:
            release.set()
        theirs = await holding
    assert len(await store.assignments()) == len(mine) + len(theirs) == 5


async def test_profiles_deltas_leave_the_outbox_in_version_order_though_the_servers_clock_is_behind(store, rules):
    (created,) = await Resolver(store, rules).resolve(new_customers(rules, 1))
    # As if the first write came from a server whose clock ran an hour ahead of this one's.
    ahead = 3600 * 1000 * 1000
    await query(store, "MATCH (p:Profile) SET p.seq = p.seq + $ahead", ahead=ahead)
    await query(store, "MATCH (n) WHERE n:Touchpoint OR n:Delta SET n.seq = n.seq + $ahead", ahead=ahead)
    (linked,) = await Resolver(store, rules).resolve([prepare(make_event({"crm_id": "c-0"}, {"name": "Zhang Wei"}), rules)])
    assert linked.profile_id == created.profile_id
    versions = [d.profile_version for d in await store.unpublished_deltas() if d.profile_id == created.profile_id]
    assert versions == sorted(versions) and len(versions) == 2
    assert [e for e, _ in await store.assignments()] == [created.event_id, linked.event_id]


# --- faults the server cannot produce on demand -------------------------------------------

async def test_transient_error_mid_write_is_retried_and_the_batch_lands_once(store, rules):
    faults = Faults()
    # The driver retries by the class (TransientError.is_retryable), whatever the code.
    faults.failures["record_events"] = [TransientError("deadlock detected (injected)")]
    async with Neo4jStore(store.settings, connect=faults.connect) as faulty:
        outcomes = await Resolver(faulty, rules).resolve(new_customers(rules, 2))
    assert faults.raised == ["record_events"]
    assert sorted(await store.assignments()) == sorted((o.event_id, o.profile_id) for o in outcomes)


async def test_server_outage_mid_write_is_reported_as_store_unavailable_and_writes_nothing(store, rules):
    # Past the driver's own retries (it retries a lost connection for up to 30 s; here not at all).
    faults = Faults(max_transaction_retry_time=0.0)
    faults.failures["record_events"] = [ServiceUnavailable("leader lost")]
    async with Neo4jStore(store.settings, connect=faults.connect) as faulty:
        with pytest.raises(StoreUnavailable, match=store.settings.url):
            await Resolver(faulty, rules).resolve(new_customers(rules, 1))
    assert await store.assignments() == [] and await query(store, "MATCH (p:Profile) RETURN p") == []


async def test_reads_for_people_and_publishers_are_one_round_trip_each(store):
    await store.unpublished_deltas(["e-1"], limit=10)
    await store.survivor("p_1")
    assert (store.stats.queries, store.stats.round_trips) == (2, 4)


# --- lookups start from an index ----------------------------------------------------------

def operators(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """Every operator of an EXPLAIN plan, with its details, depth first."""
    found = [(plan["operatorType"].split("@")[0], str(plan.get("args", {}).get("Details", "")))]
    return found + [op for child in plan.get("children", []) for op in operators(child)]


@pytest.mark.parametrize("statement, seek", [
    (cypher.DECIDE_REVIEW, ":Review(id)"),
    (cypher.OPERATIONS_FOR, ":ProfileRef(profile_id)"),
    (cypher.ERASE_OPERATIONS, ":ProfileRef(profile_id)"),
    (cypher.ERASE_RECORDS, ":ProfileRef(profile_id)"),
    (cypher.LOAD_NEIGHBOURHOOD, ":Refusal(event_id)"),
    # Supernodes: the first holders by id and the newest touchpoints of a key, read in index
    # order, so a shop phone on thousands of profiles costs what one on two does.
    (cypher.LOAD_NEIGHBOURHOOD, ":HAS_IDENTIFIER(key, holder)"),
    (cypher.LOAD_NEIGHBOURHOOD, ":BLOCKED_BY(key, seq)"),
    # Profile growth is polled by every worker: the largest profiles come from the index in order.
    (cypher.PROFILES_OVER, ":Profile(records)"),
    (cypher.LARGEST_PROFILES, ":Profile(records)"),
    # Reindexing pages through touchpoints in seq order; the start check seeks old-style keys.
    (cypher.TOUCHPOINT_FEATURES, ":Touchpoint(seq)"),
    (cypher.POSITIONAL_KEYS, ":BlockingKey(key)"),
], ids=lambda v: v.name if isinstance(v, cypher.Statement) else v)
async def test_lookup_seeks_an_index_instead_of_scanning_labels_or_expanding_supernodes(store, statement, seek):
    numbers = {"review_id", "limit", "holder_limit", "per_key", "generic_after", "records_per_profile", "threshold",
               "seq", "chunk"}
    params = {p: 1 if p in numbers else [] if p.endswith("s") and p != "status" else "x" for p in statement.params}
    result = await store.driver.execute_query("EXPLAIN " + statement.text, params, database_=store.settings.database)
    plan = operators(result.summary.plan)
    assert not [op for op in plan if op[0] in ("NodeByLabelScan", "AllNodesScan")], plan
    assert any("IndexSeek" in op and seek in details for op, details in plan), plan


async def test_a_timeline_search_reads_only_the_searched_profiles_touchpoints(store):
    # Not a full-text index over every profile's touchpoints filtered afterwards (graph/fulltext.py):
    # the profile is found by its index and its own touchpoints read through its edges.
    params = {"profile_id": "x", "start": None, "end": None}
    result = await store.driver.execute_query("EXPLAIN " + cypher.SEARCH_TIMELINE.text, params,
                                              database_=store.settings.database)
    plan = operators(result.summary.plan)
    assert not [op for op in plan if op[0] in ("ProcedureCall", "NodeByLabelScan", "AllNodesScan")], plan
    assert any("IndexSeek" in op and ":Profile(id)" in details for op, details in plan), plan
