"""The Neo4j store's conversation with the server: schema at start, a batch in a fixed handful of
round trips, conflicts re-run, outages reported as such. Uses a recording stand-in for the driver
(tests/fake_neo4j.py); the Cypher's behaviour is covered by the contract suite on a live server.
"""

from __future__ import annotations

import pytest
from neo4j.exceptions import ServiceUnavailable

from graph import cypher
from graph.neo4j import Neo4jStore
from graph.neo4j_settings import Neo4jSettings
from graph.store import StoreConflict, StoreError, StoreUnavailable
from identity.features import prepare
from service.resolver import Resolver
from tests.conftest import make_event
from tests.fake_neo4j import EMPTY_NEIGHBOURHOOD, FakeServer, server_error

SETTINGS = Neo4jSettings("neo4j://graph.example:7687", "idgraph", "s3cret", "identity")
WRITE_OF_NEW_CUSTOMERS = ["upsert_profiles", "create_identifiers", "attach_identifiers", "record_events"]


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def store(server):
    async with Neo4jStore(SETTINGS, connect=server.connect) as opened:
        server.committed.clear()
        server.opened.clear()
        opened.stats.queries = opened.stats.transactions = opened.stats.round_trips = 0
        yield opened


def new_customers(rules, n):
    return [prepare(make_event({"crm_id": f"c-{i}"}, {"city": "Shanghai"}), rules) for i in range(n)]


async def test_open_connects_as_configured_and_creates_every_constraint_and_index(server):
    async with Neo4jStore(SETTINGS, connect=server.connect):
        pass
    assert (server.url, server.config["auth"]) == ("neo4j://graph.example:7687", ("idgraph", "s3cret"))
    assert server.names() == [[s.name] for s in cypher.SCHEMA]
    assert server.names()[-1] == ["await_indexes"]
    assert set(server.opened) == {("WRITE", "identity")}


async def test_schema_another_worker_created_at_the_same_moment_is_not_an_error(server):
    server.failures["constraint_profile_id"] = [server_error("Neo.ClientError.Schema.EquivalentSchemaRuleAlreadyExists")]
    async with Neo4jStore(SETTINGS, connect=server.connect):
        pass
    assert len(server.committed) == len(cypher.SCHEMA) - 1


async def test_refused_login_names_the_settings_to_check(server):
    server.unreachable = server_error("Neo.ClientError.Security.Unauthorized", "bad credentials")
    with pytest.raises(StoreError, match="IDGRAPH_NEO4J_PASSWORD"):
        await Neo4jStore(SETTINGS, connect=server.connect).open()


async def test_unreachable_server_is_named_at_open(server):
    server.unreachable = ServiceUnavailable("connection refused")
    with pytest.raises(StoreError, match="cannot reach Neo4j at neo4j://graph.example:7687"):
        await Neo4jStore(SETTINGS, connect=server.connect).open()


@pytest.mark.parametrize("size", [1, 100])
async def test_batch_costs_one_read_and_one_write_transaction_whatever_its_size(store, server, rules, size):
    outcomes = await Resolver(store, rules).resolve(new_customers(rules, size))
    assert {o.decision["action"] for o in outcomes} == {"create"}
    assert server.names() == [["load_neighbourhood"], WRITE_OF_NEW_CUSTOMERS]
    assert server.opened == [("READ", "identity"), ("WRITE", "identity")]
    assert (store.stats.queries, store.stats.transactions) == (5, 2)
    # The read: BEGIN with the query, COMMIT. The write: BEGIN, four statements, COMMIT.
    assert store.stats.round_trips == 2 + 6


async def test_batch_write_carries_one_row_per_event_and_per_new_identifier(store, server, rules):
    await Resolver(store, rules).resolve(new_customers(rules, 3))
    write = dict(server.committed[-1])
    assert [e["pos"] for e in write["record_events"]["events"]] == [0, 1, 2]
    created = [i["key"] for i in write["create_identifiers"]["identifiers"]]
    assert [k for k in created if k.startswith("crm_id:")] == ["crm_id:C-0", "crm_id:C-1", "crm_id:C-2"]


async def test_batch_reads_its_whole_neighbourhood_at_once(store, server, rules):
    batch = new_customers(rules, 3)
    await Resolver(store, rules).resolve(batch)
    ((_, read),) = server.committed[0]
    assert read["event_ids"] == [p.event_id for p in batch]
    assert read["identifier_keys"] == ["crm_id:C-0", "crm_id:C-1", "crm_id:C-2"]
    assert read["holder_limit"] == rules.identifiers.generic_after_profiles + 1


async def test_batch_of_redeliveries_reads_and_writes_nothing_more(store, server, rules):
    (event,) = new_customers(rules, 1)
    stored = {"event_id": event.event_id, "record": '{"event_id": "%s", "profile_id": "p_1"}' % event.event_id, "deltas": []}
    server.answers["load_neighbourhood"] = [{**EMPTY_NEIGHBOURHOOD, "outcomes": [stored]}]
    (outcome,) = await Resolver(store, rules).resolve([event])
    assert outcome.duplicate and outcome.profile_id == "p_1"
    assert server.names() == [["load_neighbourhood"]]


async def test_identifier_another_worker_created_meanwhile_re_runs_the_whole_batch(store, server, rules):
    server.failures["create_identifiers"] = [server_error("Neo.ClientError.Schema.ConstraintValidationFailed")]
    await Resolver(store, rules).resolve(new_customers(rules, 2))
    assert server.names() == [["load_neighbourhood"], ["load_neighbourhood"], WRITE_OF_NEW_CUSTOMERS]
    assert (server.rolled_back, store.stats.conflicts) == (1, 1)


async def test_profile_changed_by_another_worker_since_the_read_re_runs_the_whole_batch(store, server, rules):
    held = {"id": "p_x", "version": 3, "created_at": "2025-01-01T00:00:00+00:00", "traits": "{}",
            "identifiers": ["crm_id:C-0"]}
    server.answers["load_neighbourhood"] = [{**EMPTY_NEIGHBOURHOOD, "identifiers": [{"key": "crm_id:C-0", "holders": ["p_x"]}],
                                             "records": [{"profile_id": "p_x", "records": []}], "profiles": [held]}]
    stale = [[{"id": "p_x"}], []]
    server.answers["lock_profiles"] = lambda params: stale.pop(0)
    (outcome,) = await Resolver(store, rules).resolve(new_customers(rules, 1))
    assert outcome.decision["action"] == "link" and outcome.profile_id == "p_x"
    write = dict(server.committed[-1])
    assert write["lock_profiles"]["profiles"] == [{"id": "p_x", "version": 3}]
    assert [(p["id"], p["version"]) for p in write["upsert_profiles"]["profiles"]] == [("p_x", 4)]
    assert store.stats.conflicts == 1


async def test_conflict_that_outlasts_the_retries_reaches_the_caller_as_a_busy_store(store, server, rules):
    conflict = "Neo.ClientError.Schema.ConstraintValidationFailed"
    server.failures["create_identifiers"] = [server_error(conflict) for _ in range(3)]
    with pytest.raises(StoreConflict) as raised:
        await Resolver(store, rules, attempts=3).resolve(new_customers(rules, 1))
    assert isinstance(raised.value, StoreUnavailable)
    assert server.names() == [["load_neighbourhood"]] * 3


async def test_row_that_found_no_profile_stops_the_batch_instead_of_vanishing(store, server, rules):
    server.answers["record_events"] = [{"written": 1}]
    with pytest.raises(StoreError, match="record_events wrote 1 of 2 rows"):
        await Resolver(store, rules).resolve(new_customers(rules, 2))
    assert server.names() == [["load_neighbourhood"]] and server.rolled_back == 1


async def test_server_outage_mid_batch_is_reported_as_store_unavailable(store, server, rules):
    server.failures["load_neighbourhood"] = [ServiceUnavailable("leader lost")]
    with pytest.raises(StoreUnavailable, match="graph.example"):
        await Resolver(store, rules).resolve(new_customers(rules, 1))


async def test_reads_for_people_and_publishers_are_one_round_trip_each(store, server):
    server.answers["unpublished_deltas_of"] = []
    await store.unpublished_deltas(["e-1"], limit=10)
    await store.survivor("p_1")
    assert server.names() == [["unpublished_deltas_of"], ["survivor"]]
    assert server.committed[0][0][1] == {"event_ids": ["e-1"], "profile_ids": [], "limit": 10}
    assert server.opened == [("READ", "identity"), ("READ", "identity")]
    assert store.stats.round_trips == 4
