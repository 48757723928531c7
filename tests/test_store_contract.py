"""What every GraphStore promises beyond resolution itself: snapshots, lineage, timelines,
decisions, assignments, the outbox, reviews, subscriptions, idempotency and atomic batches.

Runs against SQLite always and against Neo4j when NEO4J_URI is set (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import identity.decide
from graph import cypher
from graph.neo4j import Neo4jStore
from graph.sqlite import SQLiteStore
from graph.store import StoreConflict, UnknownModel
from identity.events import PROFILE_ID_TYPE, parse_event
from identity.features import blocking_signature, prepare
from service.blocking import check_blocking_index
from service.resolver import Resolver
from tests.conftest import Engine, cn_national_id, make_event

pytestmark = pytest.mark.every_store


@pytest.fixture
async def second_worker(store):
    """Another handle on the same graph, as a second worker process holds one."""
    other = SQLiteStore(store.path) if isinstance(store, SQLiteStore) else Neo4jStore(store.settings)
    async with other:
        yield other


async def merged_pair(engine):
    """Two profiles, then an event that merges the newer into the older."""
    older = await engine.resolve(make_event({"phone": "13800138000"}, {"city": "Shanghai"}))
    newer = await engine.resolve(make_event({"email": "zw@example.com"}, {"name": "Zhang Wei"}))
    bridge = await engine.resolve(make_event({"phone": "13800138000", "email": "zw@example.com"}))
    return older, newer, bridge


# --- profiles and lineage -----------------------------------------------------------------

async def test_profile_snapshot_shows_identifiers_by_type_and_traits_with_provenance(engine, store):
    event = make_event({"phone": "13800138000", "email": "zw@example.com"}, {"city": "Shanghai"}, scenario="service.hotline")
    outcome = await engine.resolve(event)
    profile = await store.profile(outcome.profile_id)
    assert (profile.id, profile.version, profile.merged_from) == (outcome.profile_id, 1, [])
    customer = {t: values for t, values in profile.identifiers.items() if t != PROFILE_ID_TYPE}
    assert customer == {"email": ["zw@example.com"], "phone": ["+8613800138000"]}
    city = profile.traits["city"]
    assert (city["value"], city["scenario"], city["event_id"]) == ("Shanghai", "service.hotline", event.event_id)
    assert profile.created_at == event.occurred_at.isoformat()


async def test_profile_snapshot_shows_the_customers_consent(engine, store):
    outcome = await engine.resolve(make_event({"email": "c@example.com"}, consent={"marketing": True}))
    consent = (await store.profile(outcome.profile_id)).consent
    assert set(consent) == {"marketing"} and consent["marketing"]["granted"] is True


async def test_unknown_profile_has_no_snapshot_and_no_survivor(store):
    assert await store.profile("p_unknown") is None
    assert await store.survivor("p_unknown") is None


async def test_live_profile_is_its_own_survivor(engine, store):
    outcome = await engine.resolve(make_event({"crm_id": "c-1"}))
    assert await store.survivor(outcome.profile_id) == outcome.profile_id


async def test_merged_profile_answers_with_its_survivor_and_lineage(engine, store):
    older, newer, bridge = await merged_pair(engine)
    assert await store.survivor(newer.profile_id) == older.profile_id
    survivor = await store.profile(newer.profile_id)
    assert survivor.id == older.profile_id and survivor.version == 2
    assert survivor.merged_from == [newer.profile_id]
    assert set(survivor.traits) == {"city", "name"}


async def test_lineage_follows_merges_of_merges(engine, store):
    a = await engine.resolve(make_event({"crm_id": "a"}))
    b = await engine.resolve(make_event({"crm_id": "b"}))
    c = await engine.resolve(make_event({"crm_id": "c"}))
    await engine.resolve(make_event({"crm_id": ["b", "c"]}))
    await engine.resolve(make_event({"crm_id": ["a", "b"]}))
    assert await store.survivor(c.profile_id) == a.profile_id
    assert sorted((await store.profile(c.profile_id)).merged_from) == sorted([b.profile_id, c.profile_id])


# --- candidates -------------------------------------------------------------------------

async def test_trait_longer_than_an_index_key_still_blocks_and_finds_its_candidate(engine, store):
    # About 10 kB: past Neo4j's range-index key limit, so the key is stored as a digest.
    company = "Shanghai Pudong Precision Instruments Trading Company " * 200
    first = await engine.resolve(make_event({"crm_id": "c-1"}, {"company": company, "city": "Shanghai"}))
    second = await engine.resolve(make_event({"crm_id": "c-2"}, {"company": company, "city": "Shanghai"}))
    assert first.profile_id in [c["profile_id"] for c in second.decision["evidence"]["candidates"]]


# --- timelines, decisions, assignments ----------------------------------------------------

async def test_timeline_orders_touchpoints_by_when_they_occurred_not_when_they_arrived(engine, store):
    late = await engine.resolve(make_event({"crm_id": "c-1"}, occurred_at="2026-03-01T00:00:00Z"))
    early = await engine.resolve(make_event({"crm_id": "c-1"}, occurred_at="2026-01-01T00:00:00Z"))
    timeline = await store.timeline(late.profile_id)
    assert [e.event_id for e in timeline] == [early.event_id, late.event_id]


async def test_timeline_compares_instants_across_utc_offsets(engine, store):
    # 09:00 in Shanghai is 01:00 UTC: earlier than 02:00 UTC, though it sorts later as text.
    utc = await engine.resolve(make_event({"crm_id": "c-1"}, occurred_at="2026-01-01T02:00:00+00:00"))
    shanghai = await engine.resolve(make_event({"crm_id": "c-1"}, occurred_at="2026-01-01T09:00:00+08:00"))
    timeline = await store.timeline(utc.profile_id)
    assert [e.event_id for e in timeline] == [shanghai.event_id, utc.event_id]
    assert timeline[0].occurred_at == "2026-01-01T09:00:00+08:00"


async def test_touchpoints_that_occurred_at_the_same_instant_are_ordered_by_event_id_not_arrival(engine, store):
    first = await engine.resolve(make_event({"crm_id": "c-1"}, event_id="evt-b", occurred_at="2026-01-01T00:00:00Z"))
    second = await engine.resolve(make_event({"crm_id": "c-1"}, event_id="evt-a", occurred_at="2026-01-01T00:00:00Z",
                                             scenario="service.hotline"))
    timeline = await store.timeline(first.profile_id)
    assert [(e.event_id, e.scenario) for e in timeline] == [(second.event_id, "service.hotline"), (first.event_id, "sales.crm")]
    assert timeline[0].event["event_id"] == "evt-a"


async def test_touchpoints_at_the_same_instant_in_different_offsets_are_ordered_by_event_id_not_offset(engine, store):
    # The same instant three ways; neither the offset nor its text decides the order.
    events = [("evt-c", "2026-01-01T08:00:00+08:00"), ("evt-a", "2026-01-01T00:00:00Z"),
              ("evt-b", "2025-12-31T19:00:00-05:00")]
    for event_id, at in events:
        outcome = await engine.resolve(make_event({"crm_id": "c-1"}, event_id=event_id, occurred_at=at))
    assert [e.event_id for e in await store.timeline(outcome.profile_id)] == ["evt-a", "evt-b", "evt-c"]


async def test_merged_profiles_share_one_timeline(engine, store):
    older, newer, bridge = await merged_pair(engine)
    events = [e.event_id for e in await store.timeline(newer.profile_id)]
    assert events == [older.event_id, newer.event_id, bridge.event_id]


async def test_decisions_for_a_profile_include_those_of_profiles_merged_into_it_oldest_first(engine, store):
    older, newer, bridge = await merged_pair(engine)
    decisions = await store.decisions_for(older.profile_id)
    assert [(d["event_id"], d["action"]) for d in decisions] == [
        (older.event_id, "create"), (newer.event_id, "create"), (bridge.event_id, "merge")]
    assert decisions[2] == bridge.decision


async def test_decision_of_an_event_is_its_full_record(engine, store):
    outcome = await engine.resolve(make_event({"crm_id": "c-1"}))
    assert await store.decision(outcome.event_id) == outcome.decision
    assert await store.decision("never-seen") is None


async def test_decisions_of_many_events_are_read_at_once_leaving_out_those_without_one(engine, store):
    outcomes = [await engine.resolve(make_event({"crm_id": f"c-{n}"})) for n in range(3)]
    found = await store.decisions([o.event_id for o in outcomes] + ["never-seen"])
    assert found == {o.event_id: o.decision for o in outcomes}


async def test_decisions_of_more_events_than_one_in_list_holds_are_all_read(engine, store):
    outcome = await engine.resolve(make_event({"crm_id": "c-1"}))
    unknown = [f"unknown-{n}" for n in range(1_200)]
    assert await store.decisions([*unknown, outcome.event_id]) == {outcome.event_id: outcome.decision}


async def test_assignments_give_each_event_its_live_profile_in_arrival_order(engine, store):
    older, newer, bridge = await merged_pair(engine)
    assert await store.assignments() == [
        (older.event_id, older.profile_id), (newer.event_id, older.profile_id), (bridge.event_id, older.profile_id)]


async def test_the_applied_count_is_the_number_of_assignments_redeliveries_apart(engine, store):
    assert await store.applied_count() == 0
    older, _, _ = await merged_pair(engine)
    await engine.resolve(make_event({"phone": "13800138000"}, event_id=older.event_id))  # a redelivery
    assert await store.applied_count() == len(await store.assignments()) == 3


async def test_accepted_events_page_through_history_in_acceptance_order_as_received(engine, store):
    older, newer, bridge = await merged_pair(engine)
    await engine.resolve(make_event({"phone": "13800138000"}, event_id=older.event_id))  # a redelivery
    first = await store.accepted_events(limit=2)
    rest = await store.accepted_events(first[-1].cursor, limit=2)
    assert [e.event_id for e in first + rest] == [older.event_id, newer.event_id, bridge.event_id]
    assert await store.accepted_events(rest[-1].cursor) == []
    assert parse_event(rest[0].event).identifiers == {"phone": "13800138000", "email": "zw@example.com"}


async def test_a_feature_sample_draws_distinct_stored_touchpoints_up_to_its_limit(engine, store):
    names = ["Zhang Wei", "Li Na", "Wang Fang", "Liu Yang", "Chen Jie"]
    for i, name in enumerate(names):
        await engine.resolve(make_event({"crm_id": f"s-{i}"}, {"name": name}))
    stored = [prepare(make_event(traits={"name": n}), engine.rules).features for n in names]
    three = await store.sample_features(3)
    assert len(three) == 3 and all(f in stored for f in three)
    assert sorted(map(str, await store.sample_features(100))) == sorted(map(str, stored))


# --- the outbox ---------------------------------------------------------------------------

async def test_deltas_wait_in_the_outbox_oldest_first_until_published(engine, store):
    outcomes = [await engine.resolve(make_event({"crm_id": f"c-{n}"})) for n in range(3)]
    pending = await store.unpublished_deltas()
    assert [d.delta_id for d in pending] == [o.deltas[0].delta_id for o in outcomes]
    await store.mark_published([pending[0].delta_id])
    assert [d.delta_id for d in await store.unpublished_deltas()] == [d.delta_id for d in pending[1:]]


async def test_outbox_can_be_read_for_some_events_and_in_pages(engine, store):
    outcomes = [await engine.resolve(make_event({"crm_id": f"c-{n}"})) for n in range(3)]
    mine = await store.unpublished_deltas([outcomes[2].event_id, outcomes[0].event_id])
    assert [d.cause.event_id for d in mine] == [
        outcomes[0].event_id, outcomes[2].event_id]
    assert len(await store.unpublished_deltas(limit=2)) == 2


async def test_outbox_can_be_read_for_some_profiles_with_some_events_oldest_first(engine, store):
    first = await engine.resolve(make_event({"crm_id": "c-1"}))
    other = await engine.resolve(make_event({"crm_id": "c-2"}))
    again = await engine.resolve(make_event({"crm_id": "c-1"}, {"city": "Shanghai"}))
    third = await engine.resolve(make_event({"crm_id": "c-3"}))
    mine = await store.unpublished_deltas([third.event_id], profile_ids=[first.profile_id])
    assert [(d.profile_id, d.profile_version) for d in mine] == [
        (first.profile_id, 1), (first.profile_id, 2), (third.profile_id, 1)]
    assert other.profile_id not in {d.profile_id for d in mine} and again.profile_id == first.profile_id


async def test_outbox_leaves_out_the_deltas_the_reader_already_holds(engine, store):
    outcomes = [await engine.resolve(make_event({"crm_id": f"c-{n}"})) for n in range(3)]
    held = {outcomes[0].deltas[0].delta_id, outcomes[2].deltas[0].delta_id}
    assert [d.delta_id for d in await store.unpublished_deltas(known=held)] == [outcomes[1].deltas[0].delta_id]
    of_events = await store.unpublished_deltas([o.event_id for o in outcomes], known=held)
    assert [d.delta_id for d in of_events] == [outcomes[1].deltas[0].delta_id]


async def test_a_claimed_batchs_deltas_are_no_orphans_while_its_writer_sends_them(engine, store, rules):
    unclaimed = await engine.resolve(make_event({"crm_id": "c-1"}))
    await Resolver(store, rules, claim_s=60).resolve([prepare(make_event({"crm_id": "c-2"}), rules)])
    assert [d.delta_id for d in await store.orphaned_deltas()] == [unclaimed.deltas[0].delta_id]
    assert len(await store.unpublished_deltas()) == 2, "still unpublished: its writer sends it"


async def test_a_claimed_delta_left_unsent_past_its_claim_is_an_orphan(store, rules):
    (outcome,) = await Resolver(store, rules, claim_s=0.3).resolve([prepare(make_event({"crm_id": "c-1"}), rules)])
    assert await store.orphaned_deltas() == []
    await asyncio.sleep(0.5)
    assert [d.delta_id for d in await store.orphaned_deltas()] == [outcome.deltas[0].delta_id]


async def test_orphans_leave_out_published_deltas_and_those_the_reader_holds(engine, store):
    outcomes = [await engine.resolve(make_event({"crm_id": f"c-{n}"})) for n in range(3)]
    await store.mark_published([outcomes[0].deltas[0].delta_id])
    held = {outcomes[1].deltas[0].delta_id}
    assert [d.delta_id for d in await store.orphaned_deltas(known=held)] == [outcomes[2].deltas[0].delta_id]


async def test_published_delta_is_the_one_that_was_written(engine, store):
    outcome = await engine.resolve(make_event({"phone": "13800138000"}, {"name": "张伟"}))
    (pending,) = await store.unpublished_deltas()
    assert pending == outcome.deltas[0]


async def test_marking_unknown_deltas_published_changes_nothing(engine, store):
    await engine.resolve(make_event({"crm_id": "c-1"}))
    await store.mark_published(["d_unknown"])
    await store.mark_published([])
    assert len(await store.unpublished_deltas()) == 1


# --- reviews and generic values -----------------------------------------------------------

async def test_open_reviews_name_the_profiles_reason_and_confidence_in_creation_order(engine, store):
    first = await engine.resolve(make_event({"phone": "13800138000", "national_id": cn_national_id(451)}))
    one = await engine.resolve(make_event({"phone": "13800138000", "national_id": cn_national_id(671)}))
    two = await engine.resolve(make_event({"phone": "13800138000", "national_id": cn_national_id(672)}))
    reviews = await store.open_reviews()
    assert [r["event_id"] for r in reviews] == [one.event_id, two.event_id]
    assert reviews[0]["profile_ids"] == one.decision["review"]["profile_ids"]
    assert first.profile_id in reviews[0]["profile_ids"]
    assert reviews[0]["reason"] == one.decision["review"]["reason"]
    assert reviews[0]["confidence"] == pytest.approx(one.decision["review"]["confidence"])
    assert reviews[0]["id"] < reviews[1]["id"] and reviews[0]["created_at"]


async def test_no_reviews_without_doubt(engine, store):
    await engine.resolve(make_event({"crm_id": "c-1"}))
    assert await store.open_reviews() == []
    assert await store.open_review_count() == 0


async def test_the_open_review_count_leaves_out_decided_reviews(engine, store, rules):
    from service.operations import Operations
    await engine.resolve(make_event({"phone": "13800138000", "national_id": cn_national_id(451)}))
    for n in (671, 672):
        await engine.resolve(make_event({"phone": "13800138000", "national_id": cn_national_id(n)}))
    assert await store.open_review_count() == 2
    first = (await store.open_reviews())[0]
    await Operations(store, rules).decide_review(first["id"], False, actor="op", reason="different")
    assert await store.open_review_count() == 1


async def test_generic_identifier_report_counts_holders_most_shared_first(engine, store, rules):
    for n in range(5):
        await engine.resolve(make_event({"phone": "02150501234", "national_id": cn_national_id(n)}))
    for n in range(5, 9):
        await engine.resolve(make_event({"phone": "02150509999", "national_id": cn_national_id(n)}))
    assert await store.generic_identifiers(rules) == [("phone:+862150501234", 5), ("phone:+862150509999", 4)]


async def test_identifier_held_by_many_profiles_is_generic_evidence_naming_its_first_holders_by_id(engine, store):
    held = [await engine.resolve(make_event({"phone": "02150501234", "national_id": cn_national_id(n)}))
            for n in range(12)]
    later = await engine.resolve(make_event({"phone": "02150501234", "national_id": cn_national_id(99)}))
    (phone,) = [e for e in later.decision["evidence"]["identifiers"] if e["type"] == "phone"]
    assert phone["status"] == "generic"
    assert phone["profiles"] == sorted(o.profile_id for o in held)[:4]


# --- profile growth (chaining shows as profiles far larger than any customer) -------------

async def test_profile_growth_lists_the_largest_live_profiles_by_records_and_counts_those_over_the_threshold(engine, store):
    big = [await engine.resolve(make_event({"crm_id": "c-1"})) for _ in range(3)][0]
    small = await engine.resolve(make_event({"crm_id": "c-2"}))
    growth = await store.profile_growth(threshold=2)
    assert (growth.threshold, growth.over_threshold) == (2, 1)
    assert growth.largest == [(big.profile_id, 3), (small.profile_id, 1)]


async def test_profile_growth_lists_at_most_the_limit_ties_by_id(engine, store):
    ids = sorted([(await engine.resolve(make_event({"crm_id": f"c-{n}"}))).profile_id for n in range(3)])
    assert (await store.profile_growth(threshold=0, limit=2)).largest == [(ids[0], 1), (ids[1], 1)]


async def test_profile_growth_of_an_empty_graph_is_nothing(store):
    growth = await store.profile_growth(threshold=0)
    assert (growth.over_threshold, growth.largest) == (0, [])


async def test_merge_moves_the_retired_profiles_records_to_its_survivor(engine, store):
    older, newer, bridge = await merged_pair(engine)
    growth = await store.profile_growth(threshold=0)
    assert (growth.over_threshold, growth.largest) == (1, [(older.profile_id, 3)])


async def test_merge_inside_one_batch_counts_every_record_of_the_batch_on_the_survivor(store, rules):
    events = [prepare(e, rules) for e in (
        make_event({"phone": "13800138000"}),
        make_event({"email": "zw@example.com"}),
        make_event({"phone": "13800138000", "email": "zw@example.com"}),
    )]
    older, _, merged = await Resolver(store, rules).resolve(events)
    assert merged.decision["action"] == "merge"
    assert (await store.profile_growth(threshold=0)).largest == [(older.profile_id, 3)]


async def test_operator_merge_and_split_move_record_counts_with_the_touchpoints(engine, store, rules):
    from service.operations import Operations
    ann, bob = await wrongly_merged(engine)
    assert (await store.profile_growth(threshold=0)).largest == [(ann.profile_id, 3)]
    await Operations(store, rules).split(ann.profile_id, bob.profile_id, actor="op", reason="shared tablet")
    split = dict((await store.profile_growth(threshold=0)).largest)
    assert split == Counter(p for _, p in await store.assignments()) and set(split) == {ann.profile_id, bob.profile_id}
    await Operations(store, rules).merge([bob.profile_id, ann.profile_id], actor="op", reason="same after all")
    assert (await store.profile_growth(threshold=0)).largest == [(ann.profile_id, 3)]


async def test_erased_profile_leaves_profile_growth(engine, store, rules):
    from service.operations import Operations
    gone = await engine.resolve(make_event({"email": "gone@example.com"}))
    kept = await engine.resolve(make_event({"email": "kept@example.com"}))
    await Operations(store, rules).erase(gone.profile_id, actor="me", requested_by="customer")
    assert (await store.profile_growth(threshold=0)).largest == [(kept.profile_id, 1)]


# --- the blocking index under a changed rule set -------------------------------------------

def candidates(outcome) -> set[str]:
    return {c["profile_id"] for c in outcome.decision["evidence"]["candidates"]}


def namesakes(rules):
    """Rules blocking only on company and city, then the same with name and city added."""
    before = rules.model_copy(update=dict(blocking=[("company", "city")]))
    return before, before.model_copy(update=dict(blocking=[("company", "city"), ("name.phonetic", "city")]))


def colleague(company: str):
    return make_event(traits={"name": "Zhang Wei", "city": "Shanghai", "company": company})


async def test_new_store_takes_the_first_blocking_signature_recorded_and_keeps_it(store):
    assert await store.blocking_signature() is None
    await store.record_blocking_signature("b.00000001")
    await store.record_blocking_signature("b.00000002")
    assert await store.blocking_signature() == "b.00000001"


async def test_reindex_finds_records_written_before_their_blocking_rule_was_added(store, rules):
    before, after = namesakes(rules)
    first = await Engine(store, before).resolve(colleague("Acme"))
    assert first.profile_id not in candidates(await Engine(store, after).resolve(colleague("Globex")))
    assert await store.reindex_blocking(after) == 2
    assert first.profile_id in candidates(await Engine(store, after).resolve(colleague("Initech")))


async def test_reindex_drops_the_keys_of_a_rule_no_longer_in_force(store, rules):
    before, after = namesakes(rules)
    first = await Engine(store, after).resolve(colleague("Acme"))
    await store.reindex_blocking(before)
    assert first.profile_id not in candidates(await Engine(store, after).resolve(colleague("Globex")))


async def test_reindex_records_the_signature_of_its_rules(store, rules):
    await store.record_blocking_signature("b.00000001")
    await store.reindex_blocking(rules)
    assert await store.blocking_signature() == blocking_signature(rules)


async def test_changed_blocking_rules_are_told_apart_from_the_stored_index(store, rules):
    before, after = namesakes(rules)
    assert await check_blocking_index(store, before) is None
    mismatch = await check_blocking_index(store, after)
    assert (mismatch.stored, mismatch.running) == (blocking_signature(before), blocking_signature(after))
    assert "1 added, 0 removed" in mismatch.describe()
    await store.reindex_blocking(after)
    assert await check_blocking_index(store, after) is None


# --- idempotency and atomicity ------------------------------------------------------------

async def test_redelivery_in_a_later_batch_returns_the_original_outcome_with_the_same_deltas(engine, store):
    event = make_event({"phone": "13800138000"}, {"name": "张伟"})
    first = await engine.resolve(event)
    again = await engine.resolve(event)
    assert again.duplicate and not first.duplicate
    assert (again.decision, again.deltas) == (first.decision, first.deltas)
    assert len(await store.assignments()) == 1
    assert (await store.profile(first.profile_id)).version == 1


async def test_redelivery_in_the_same_batch_is_applied_once(store, rules):
    event = prepare(make_event({"phone": "13800138000"}), rules)
    first, again = await Resolver(store, rules).resolve([event, event])
    assert again.duplicate and (again.decision, again.deltas) == (first.decision, first.deltas)
    assert len(await store.unpublished_deltas()) == 1


async def test_later_event_in_a_batch_sees_the_merge_an_earlier_one_made(store, rules):
    events = [prepare(e, rules) for e in (
        make_event({"phone": "13800138000"}),
        make_event({"email": "zw@example.com"}),
        make_event({"phone": "13800138000", "email": "zw@example.com"}),
        make_event({"email": "zw@example.com"}, {"city": "Shanghai"}),
    )]
    older, _, merged, later = await Resolver(store, rules).resolve(events)
    assert merged.decision["action"] == "merge"
    assert later.profile_id == older.profile_id and later.deltas[0].profile_version == 3
    assert {p for _, p in await store.assignments()} == {older.profile_id}


async def test_failure_mid_batch_writes_nothing_of_the_batch(store, rules, monkeypatch):
    batch = [prepare(make_event({"crm_id": f"c-{i}"}), rules) for i in range(3)]
    real = identity.decide.decide

    def failing_third(prepared, ctx, r):
        if prepared.event_id == batch[2].event_id:
            raise RuntimeError("disk on fire")
        return real(prepared, ctx, r)

    monkeypatch.setattr("service.resolver.decide", failing_third)
    with pytest.raises(RuntimeError):
        await Resolver(store, rules).resolve(batch)
    assert await store.assignments() == []
    assert await store.unpublished_deltas() == []


async def test_two_workers_resolving_the_same_new_identifier_at_once_end_with_one_profile(store, second_worker, rules):
    mine = [prepare(make_event({"email": "new@example.com"}, {"city": "Shanghai"}), rules)]
    theirs = [prepare(make_event({"email": "new@example.com"}, {"city": "Beijing"}), rules)]
    (first,), (second,) = await asyncio.gather(
        Resolver(store, rules).resolve(mine), Resolver(second_worker, rules).resolve(theirs))
    assert first.profile_id == second.profile_id
    assert sorted(o.decision["action"] for o in (first, second)) == ["create", "link"]
    assert len({profile for _, profile in await store.assignments()}) == 1


# --- the subscription registry ------------------------------------------------------------

async def test_subscriptions_are_registered_replaced_listed_and_removed(store):
    await store.put_subscription("crm", {"filter": {"scenario": "sales.crm"}})
    await store.put_subscription("audit", {"filter": {}})
    await store.put_subscription("crm", {"filter": {"scenario": "service.hotline"}})
    assert await store.subscription_documents() == {
        "audit": {"filter": {}}, "crm": {"filter": {"scenario": "service.hotline"}}}
    assert await store.delete_subscription("crm") is True
    assert await store.delete_subscription("crm") is False
    assert list(await store.subscription_documents()) == ["audit"]


# --- operations by people: merge, review verdicts, erasure, refusals ----------------------

async def test_operator_merge_rewrites_lineage_touchpoints_and_outbox(engine, store, rules):
    from service.operations import Operations
    older = await engine.resolve(make_event({"crm_id": "a"}))
    newer = await engine.resolve(make_event({"email": "n@example.com"}))
    result = await Operations(store, rules).merge([newer.profile_id, older.profile_id], actor="op", reason="same")
    assert await store.survivor(newer.profile_id) == older.profile_id
    assert {p for _, p in await store.assignments()} == {older.profile_id}
    assert [d.delta_id for d in await store.unpublished_deltas()][-1] == result.deltas[0].delta_id
    assert [r["kind"] for r in await store.operations_for(newer.profile_id)] == ["merge"]


async def test_rejected_review_is_recorded_and_its_pair_kept_apart(engine, store, rules):
    from service.operations import Operations
    await engine.resolve(make_event(traits={"name": "Zhang Wei", "city": "Shanghai", "birth_date": "1985-04-12"}))
    await engine.resolve(make_event(traits={"name": "Zhang Wei", "city": "Shanghai"}))
    (review,) = await store.reviews("open")
    await Operations(store, rules).decide_review(review["id"], False, actor="op", reason="different")
    (decided,) = await store.reviews("rejected")
    assert (decided["decided_by"], await store.reviews("open")) == ("op", [])


async def test_erasure_leaves_a_tombstone_and_refuses_the_old_events(engine, store, rules):
    from service.operations import Operations
    event = make_event({"email": "gone@example.com"}, {"name": "Gone Person"})
    outcome = await engine.resolve(event)
    await Operations(store, rules).erase(outcome.profile_id, actor="me", requested_by="customer")
    assert await store.profile(outcome.profile_id) is None
    assert (await store.tombstone(outcome.profile_id))["profile_id"] == outcome.profile_id
    again = await engine.resolve(event)
    assert again.decision["action"] == "refused" and await store.assignments() == []
    assert [d.kind for d in await store.unpublished_deltas()] == ["profile.erased"]


async def wrongly_merged(engine):
    """Two people merged through a shared family tablet's device id."""
    ann = await engine.resolve(make_event({"email": "ann@example.com", "device_id": "tablet-1"}, {"name": "Ann Lee"},
                                          occurred_at="2026-01-01T00:00:00Z"))
    bob = await engine.resolve(make_event({"email": "bob@example.com"}, {"name": "Bob Wu"},
                                          occurred_at="2026-01-02T00:00:00Z"))
    bridge = await engine.resolve(make_event({"email": "bob@example.com", "device_id": "tablet-1"},
                                             occurred_at="2026-01-03T00:00:00Z"))
    assert bridge.decision["action"] == "merge"
    return ann, bob


async def test_split_leaves_both_profiles_live_each_with_its_own_identifiers(engine, store, rules):
    from service.operations import Operations
    ann, bob = await wrongly_merged(engine)
    await Operations(store, rules).split(ann.profile_id, bob.profile_id, actor="op", reason="shared tablet")
    assert await store.survivor(bob.profile_id) == bob.profile_id
    assert (await store.profile(ann.profile_id)).identifiers["email"] == ["ann@example.com"]
    assert (await store.profile(bob.profile_id)).identifiers["email"] == ["bob@example.com"]


async def test_split_moves_the_separated_profiles_touchpoints_and_tells_both_sides(engine, store, rules):
    from service.operations import Operations
    ann, bob = await wrongly_merged(engine)
    result = await Operations(store, rules).split(ann.profile_id, bob.profile_id, actor="op", reason="shared tablet")
    assert dict(await store.assignments())[bob.event_id] == bob.profile_id
    split = [(d.profile_id, d.kind) for d in await store.unpublished_deltas() if d.kind == "profile.split"]
    assert sorted(split) == sorted((d.profile_id, d.kind) for d in result.deltas) == sorted(
        [(ann.profile_id, "profile.split"), (bob.profile_id, "profile.split")])


async def test_split_pair_stays_apart_when_the_next_event_links_them_again(engine, store, rules):
    from service.operations import Operations
    ann, bob = await wrongly_merged(engine)
    await Operations(store, rules).split(ann.profile_id, bob.profile_id, actor="op", reason="shared tablet")
    await engine.resolve(make_event({"email": "bob@example.com", "device_id": "tablet-1"}))
    assert await store.survivor(bob.profile_id) == bob.profile_id
    assert await store.survivor(ann.profile_id) == ann.profile_id


async def test_a_profile_read_for_one_event_is_that_readers_own_to_change(engine, store, rules):
    """The planner changes the profile states it is given; another reader must not see that."""
    await engine.resolve(make_event({"phone": "13800138000"}, {"name": "张伟"}))
    prepared = prepare(make_event({"phone": "13800138000"}), rules)
    async with store.transaction() as tx:
        await tx.prefetch([prepared], rules)
        (first,) = (await tx.context(prepared, rules)).profiles.values()
        first.traits.clear()
        first.consent.clear()
        (second,) = (await tx.context(prepared, rules)).profiles.values()
    assert second.traits["name"].value == "张伟"


# --- term frequencies ---------------------------------------------------------------------

async def stored_terms(store, rules, traits):
    """The counts a new event with ``traits`` would be weighed with, as the store reads them."""
    prepared = prepare(make_event({}, traits), rules)
    async with store.transaction() as tx:
        await tx.prefetch([prepared], rules)
        return (await tx.context(prepared, rules)).terms


async def test_term_counts_grow_with_each_event_carrying_the_value(engine, store, rules):
    for n in range(3):
        await engine.resolve(make_event({"crm_id": f"c-{n}"}, {"family_name": "Smith", "city": "Leeds"}))
    await engine.resolve(make_event({"crm_id": "c-9"}, {"family_name": "Okonkwo", "city": "Leeds"}))
    terms = await stored_terms(store, rules, {"family_name": "Smith", "city": "Leeds"})
    assert (terms.values["family_name:smith"], terms.values["city:leeds"]) == (3, 4)
    assert (terms.fields["family_name"].records, terms.fields["family_name"].squares) == (4, 3 * 3 + 1)
    assert (terms.fields["city"].records, terms.fields["city"].squares) == (4, 4 * 4)


async def test_a_customer_seen_again_counts_each_value_once(engine, store, rules):
    """Frequencies say how many customers share a value: one seen twice must not make it look common."""
    first = await engine.resolve(make_event({"crm_id": "c-1"}, {"family_name": "Smith", "city": "Leeds"}))
    again = await engine.resolve(make_event({"crm_id": "c-1"}, {"family_name": "Smith", "city": "York"}))
    assert again.profile_id == first.profile_id
    terms = await stored_terms(store, rules, {"family_name": "Smith", "city": "York"})
    assert (terms.values["family_name:smith"], terms.values["city:york"]) == (1, 1)
    assert (terms.fields["family_name"].records, terms.fields["city"].records) == (1, 2)


@pytest.mark.parametrize("city", ["Leeds", "York"])  # one is the survivor's, the other the merged profile's
async def test_an_event_merging_two_profiles_counts_no_value_either_carried(engine, store, rules, city):
    for crm_id, lived in (("c-1", "Leeds"), ("c-2", "York")):
        await engine.resolve(make_event({"crm_id": crm_id}, {"family_name": "Smith", "city": lived}))
    merging = await engine.resolve(make_event({"crm_id": ["c-1", "c-2"]}, {"family_name": "Smith", "city": city}))
    assert merging.decision["action"] == "merge"
    terms = await stored_terms(store, rules, {"family_name": "Smith", "city": city})
    # Smith stays counted by both merged profiles' first records (README: a merge keeps both
    # sides' counts); the merging event adds nothing.
    assert (terms.values["family_name:smith"], terms.values[f"city:{city.lower()}"]) == (2, 1)


async def test_erasing_a_customer_seen_again_leaves_no_count_of_their_values(engine, store, rules):
    from service.operations import Operations
    for city in ("Leeds", "York"):
        gone = await engine.resolve(make_event({"crm_id": "c-1"}, {"family_name": "Rareson", "city": city}))
    await Operations(store, rules).erase(gone.profile_id, actor="me", requested_by="customer")
    terms = await stored_terms(store, rules, {"family_name": "Rareson", "city": "York"})
    assert terms.values == {"family_name:rareson": 0, "city:york": 0} and terms.fields == {}


async def test_term_counts_of_one_batch_count_its_earlier_events(store, rules):
    events = [prepare(make_event({"crm_id": f"b-{n}"}, {"family_name": "Smith"}), rules) for n in range(2)]
    await Resolver(store, rules).resolve(events)
    assert (await stored_terms(store, rules, {"family_name": "Smith"})).values["family_name:smith"] == 2


async def test_a_value_no_record_carries_counts_zero(store, rules):
    terms = await stored_terms(store, rules, {"family_name": "Nobody"})
    assert terms.values == {"family_name:nobody": 0} and terms.fields == {}


async def test_erasure_takes_back_the_erased_records_counts(engine, store, rules):
    from service.operations import Operations
    kept = await engine.resolve(make_event({"crm_id": "kept"}, {"family_name": "Smith", "city": "Leeds"}))
    gone = await engine.resolve(make_event({"crm_id": "gone"}, {"family_name": "Rareson", "city": "Leeds"}))
    assert kept.profile_id != gone.profile_id
    await Operations(store, rules).erase(gone.profile_id, actor="me", requested_by="customer")
    terms = await stored_terms(store, rules, {"family_name": "Rareson", "city": "Leeds"})
    assert (terms.values["family_name:rareson"], terms.values["city:leeds"]) == (0, 1)
    assert (terms.fields["family_name"].records, terms.fields["family_name"].squares) == (1, 1)


def uncounted(rules):
    """The same rules weighing no value by its frequency: what a store counted before counting began."""
    return rules.model_copy(update=dict(comparisons=[{**c.model_dump(), "term_frequency": False} for c in rules.comparisons]))


async def test_the_backfill_counts_the_records_stored_before_counting_began(store, rules):
    for n in range(2):
        await Engine(store, uncounted(rules)).resolve(make_event({"crm_id": f"old-{n}"}, {"family_name": "Smith", "city": "Leeds"}))
    await Engine(store, rules).resolve(make_event({"crm_id": "new"}, {"family_name": "Smith"}))
    assert await store.backfill_term_counts(rules) == 2
    terms = await stored_terms(store, rules, {"family_name": "Smith", "city": "Leeds"})
    assert (terms.values["family_name:smith"], terms.values["city:leeds"]) == (3, 2)
    assert (terms.fields["family_name"].records, terms.fields["family_name"].squares) == (3, 3 * 3)


async def test_the_backfill_counts_a_value_once_per_profile(store, rules):
    for city in ("Leeds", "York"):
        await Engine(store, uncounted(rules)).resolve(make_event({"crm_id": "old"}, {"family_name": "Smith", "city": city}))
    assert await store.backfill_term_counts(rules) == 2
    assert await store.backfill_term_counts(rules) == 0
    terms = await stored_terms(store, rules, {"family_name": "Smith", "city": "York"})
    assert (terms.values["family_name:smith"], terms.values["city:york"]) == (1, 1)
    assert (terms.fields["family_name"].records, terms.fields["city"].records) == (1, 2)


async def test_the_backfill_counts_each_record_once(store, rules):
    await Engine(store, uncounted(rules)).resolve(make_event({"crm_id": "old"}, {"family_name": "Smith"}))
    await store.backfill_term_counts(rules)
    assert await store.backfill_term_counts(rules) == 0
    assert (await stored_terms(store, rules, {"family_name": "Smith"})).values["family_name:smith"] == 1


async def test_erasure_takes_back_what_the_backfill_counted(engine, store, rules):
    from service.operations import Operations
    kept = await engine.resolve(make_event({"crm_id": "kept"}, {"family_name": "Smith"}))
    gone = await Engine(store, uncounted(rules)).resolve(make_event({"crm_id": "gone"}, {"family_name": "Smith"}))
    assert kept.profile_id != gone.profile_id
    await store.backfill_term_counts(rules)
    await Operations(store, rules).erase(gone.profile_id, actor="me", requested_by="customer")
    assert (await stored_terms(store, rules, {"family_name": "Smith"})).values["family_name:smith"] == 1


# --- the model registry -------------------------------------------------------------------

def stricter(rules):
    """The same rules with a higher link threshold: another model, blocking alike."""
    return rules.model_copy(update=dict(version="stricter", thresholds={"link": 0.99, "review": 0.5}))


@pytest.fixture
def promotion_fails_part_way(store, monkeypatch):
    """Arms the store so that the next promotion fails after its log entry, as the live version is set."""
    def arm():
        if isinstance(store, SQLiteStore):
            store.db.execute("CREATE TEMP TRIGGER fail_live_model BEFORE UPDATE ON meta WHEN new.name = 'live_model' "
                             "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
        else:
            monkeypatch.setattr(cypher, "SET_LIVE_MODEL", cypher.Statement(
                "set_live_model", "RETURN 1 / (size($version) - size($version)) AS injected_failure", ("version",)))
    return arm


async def test_a_registered_model_is_kept_by_version_and_registering_it_again_changes_nothing(store, rules):
    assert await store.register_model(rules.model_version, rules.to_yaml(), "ana") is True
    assert await store.register_model(rules.model_version, "other text", "bo") is False
    model = await store.model(rules.model_version)
    assert (model.version, model.rules_yaml, model.registered_by) == (rules.model_version, rules.to_yaml(), "ana")
    assert await store.model("missing@000000") is None


async def test_models_are_listed_in_registration_order(store, rules):
    for r in (stricter(rules), rules):
        await store.register_model(r.model_version, r.to_yaml(), "ana")
    assert [m.version for m in await store.models()] == [stricter(rules).model_version, rules.model_version]


async def test_no_model_is_live_before_the_first_promotion(store, rules):
    await store.register_model(rules.model_version, rules.to_yaml(), "ana")
    assert await store.live_model() is None
    assert await store.promotions() == []


async def test_each_promotion_makes_its_model_live_and_logs_who_what_when_and_why(store, rules):
    first, second = rules.model_version, stricter(rules).model_version
    for r in (rules, stricter(rules)):
        await store.register_model(r.model_version, r.to_yaml(), "ana")
    await store.promote_model(first, expected=None, action="promote", by="worker", reason="first start")
    done = await store.promote_model(second, expected=first, action="promote", by="ana", reason="fewer false merges")
    assert await store.live_model() == second
    log = await store.promotions()
    assert log[-1] == done
    assert [(p.seq, p.version, p.previous, p.action, p.by, p.reason) for p in log] == [
        (1, first, None, "promote", "worker", "first start"), (2, second, first, "promote", "ana", "fewer false merges")]


async def test_promoting_an_unregistered_model_is_refused_and_changes_nothing(store, rules):
    await store.register_model(rules.model_version, rules.to_yaml(), "ana")
    await store.promote_model(rules.model_version, expected=None, action="promote", by="ana", reason="")
    with pytest.raises(UnknownModel, match="missing@000000"):
        await store.promote_model("missing@000000", expected=rules.model_version, action="promote", by="ana", reason="")
    assert await store.live_model() == rules.model_version and len(await store.promotions()) == 1


async def test_a_promotion_from_a_live_version_that_changed_meanwhile_conflicts_and_changes_nothing(store, second_worker, rules):
    first, second = rules.model_version, stricter(rules).model_version
    for r in (rules, stricter(rules)):
        await store.register_model(r.model_version, r.to_yaml(), "ana")
    await store.promote_model(first, expected=None, action="promote", by="ana", reason="")
    await second_worker.promote_model(second, expected=first, action="promote", by="bo", reason="")
    with pytest.raises(StoreConflict):
        await store.promote_model(second, expected=None, action="promote", by="ana", reason="")
    assert await store.live_model() == second and len(await store.promotions()) == 2


async def test_of_two_promotions_racing_from_one_live_version_one_wins_and_the_other_conflicts(store, second_worker, rules):
    racers = [rules.model_copy(update={"version": f"racer-{n}"}) for n in range(6)]
    for r in (rules, *racers):
        await store.register_model(r.model_version, r.to_yaml(), "ana")
    live = rules.model_version
    await store.promote_model(live, expected=None, action="promote", by="ana", reason="")
    for a, b in zip(racers[::2], racers[1::2]):
        results = await asyncio.gather(
            store.promote_model(a.model_version, expected=live, action="promote", by="ana", reason=""),
            second_worker.promote_model(b.model_version, expected=live, action="promote", by="bo", reason=""),
            return_exceptions=True)
        (winner,) = [r for r in results if not isinstance(r, BaseException)]
        assert [type(r) for r in results if isinstance(r, BaseException)] == [StoreConflict]
        assert (await store.live_model(), winner.previous) == (winner.version, live)
        live = winner.version
    assert [p.seq for p in await store.promotions()] == [1, 2, 3, 4]


async def test_a_promotion_failing_part_way_leaves_the_live_model_and_its_log_as_they_were(store, rules,
                                                                                          promotion_fails_part_way):
    first, second = rules.model_version, stricter(rules).model_version
    for r in (rules, stricter(rules)):
        await store.register_model(r.model_version, r.to_yaml(), "ana")
    await store.promote_model(first, expected=None, action="promote", by="ana", reason="")
    promotion_fails_part_way()
    with pytest.raises(Exception, match="injected failure|by zero"):
        await store.promote_model(second, expected=first, action="promote", by="ana", reason="")
    assert await store.live_model() == first
    assert [p.version for p in await store.promotions()] == [first]


async def test_another_worker_sees_the_promoted_model_live(store, second_worker, rules):
    await store.register_model(rules.model_version, rules.to_yaml(), "ana")
    await store.promote_model(rules.model_version, expected=None, action="promote", by="ana", reason="")
    assert await second_worker.live_model() == rules.model_version
    assert (await second_worker.model(rules.model_version)).rules_yaml == rules.to_yaml()
