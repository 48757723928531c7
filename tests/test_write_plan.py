"""What a batch writes to Neo4j at commit: its end state, one row per thing, locks on what it read.

Batches are resolved with the real engine (through :class:`DifferentialRun`, which also checks
the overlay against the embedded store); the plan is then taken from the batch's overlay.
"""

from __future__ import annotations

import pytest

from graph.write_plan import plan_writes
from identity.events import PROFILE_ID_TYPE
from identity.features import prepare
from identity.model import stable_id
from tests.conftest import cn_national_id, make_event
from tests.overlay_harness import DifferentialRun


@pytest.fixture
async def run(tmp_path, rules):
    async with DifferentialRun(tmp_path, rules) as differential:
        yield differential


async def resolve(run, rules, *events):
    outcomes = await run.resolve([prepare(e, rules) for e in events])
    return outcomes, plan_writes(run.overlays[-1])


def profile_of(event):
    return stable_id("p", event.event_id)


def customer_identifiers(rows):
    """Identifier rows of the customer's own identifiers (each profile also holds its id as one)."""
    return [r for r in rows if not r["key"].startswith(PROFILE_ID_TYPE + ":")]


async def test_stored_profile_the_batch_changes_is_locked_at_the_version_it_read(run, rules):
    first = make_event({"crm_id": "c-1"}, {"city": "Shanghai"})
    await resolve(run, rules, first)
    _, plan = await resolve(run, rules, make_event({"crm_id": "c-1"}, {"city": "Beijing"}))
    assert plan.locks == [{"id": profile_of(first), "version": 1}]
    assert [(p["id"], p["version"]) for p in plan.profiles] == [(profile_of(first), 2)]


async def test_profiles_created_in_the_batch_are_written_but_not_locked(run, rules):
    events = [make_event({"crm_id": f"c-{n}"}) for n in range(3)]
    _, plan = await resolve(run, rules, *events)
    assert plan.locks == []
    assert sorted(p["id"] for p in plan.profiles) == sorted(profile_of(e) for e in events)


async def test_profile_changed_by_several_events_is_written_once_at_its_last_version(run, rules):
    events = [make_event({"crm_id": "same"}, {"city": c}, occurred_at=f"2026-01-0{i + 1}T00:00:00Z")
              for i, c in enumerate(["A", "B", "C"])]
    _, plan = await resolve(run, rules, *events)
    (row,) = plan.profiles
    assert row["version"] == 3 and '"value":"C"' in row["traits"]
    assert row["updated_at"] == run.overlays[-1].events[-1].now


async def test_identifier_read_as_absent_is_created_once_and_a_stored_one_never(run, rules):
    await resolve(run, rules, make_event({"phone": "13800138000"}))
    _, plan = await resolve(run, rules, make_event({"phone": "13800138000", "email": "a@example.com"}),
                            make_event({"email": "a@example.com"}))
    assert customer_identifiers(plan.identifiers) == [{"key": "email:a@example.com", "type": "email"}]


async def test_custom_identifier_type_keeps_its_namespace(run, rules):
    _, plan = await resolve(run, rules, make_event({"loyalty:card": "A-17"}))
    assert customer_identifiers(plan.identifiers) == [{"key": "loyalty:card:A-17", "type": "loyalty:card"}]


async def test_what_a_batch_gave_a_profile_it_later_merged_lands_on_the_survivor(run, rules):
    old = make_event({"crm_id": "a"}, occurred_at="2025-06-01T00:00:00Z")
    await resolve(run, rules, old)
    new = make_event({"crm_id": "b"})
    bridge = make_event({"crm_id": ["a", "b"]})
    _, plan = await resolve(run, rules, new, bridge)
    survivor, retired = profile_of(old), profile_of(new)
    assert plan.merges == [{"retired": retired, "into": survivor, "survivor": survivor,
                            "event_id": bridge.event_id, "merged_at": run.overlays[-1].events[1].now}]
    assert {(a["key"], a["profile_id"]) for a in customer_identifiers(plan.attachments)} == {
        ("crm_id:B", survivor), ("crm_id:A", survivor)}
    assert [(e["decided_profile_id"], e["profile_id"]) for e in plan.events] == [(retired, survivor), (survivor, survivor)]
    assert [lock["id"] for lock in plan.locks] == [survivor]


async def test_merges_chained_in_a_batch_move_everything_to_the_last_survivor(run, rules):
    a, b, c = (make_event({"crm_id": x}, occurred_at=f"2026-01-0{i + 1}T00:00:00Z") for i, x in enumerate("abc"))
    await resolve(run, rules, a, b, c)
    _, plan = await resolve(run, rules, make_event({"crm_id": ["b", "c"]}), make_event({"crm_id": ["a", "b"]}))
    pa, pb, pc = map(profile_of, (a, b, c))
    assert [(m["retired"], m["into"], m["survivor"]) for m in plan.merges] == [(pc, pb, pa), (pb, pa, pa)]
    assert plan.locks == [{"id": p, "version": 1} for p in sorted((pa, pb, pc))]


async def test_first_sighting_sets_an_attachments_provenance_and_the_last_its_last_seen(run, rules):
    first = make_event({"phone": "13800138000"}, scenario="service.hotline")
    second = make_event({"phone": "13800138000"}, scenario="sales.crm")
    _, plan = await resolve(run, rules, first, second)
    (row,) = customer_identifiers(plan.attachments)
    events = run.overlays[-1].events
    assert (row["source"], row["first_seen"], row["last_seen"]) == ("service.hotline", events[0].now, events[1].now)


async def test_event_rows_carry_their_position_review_and_deltas(run, rules):
    await resolve(run, rules, make_event({"phone": "13800138000", "national_id": cn_national_id(451)}))
    created = make_event({"crm_id": "x"})
    conflicting = make_event({"phone": "13800138000", "national_id": cn_national_id(671)})
    (_, review), plan = await resolve(run, rules, created, conflicting)
    assert [e["pos"] for e in plan.events] == [0, 1]
    assert plan.events[0]["reviews"] == [] and len(plan.events[1]["reviews"]) == 1
    assert plan.events[1]["reviews"][0]["profile_ids"] == review.decision["review"]["profile_ids"]
    assert [d["index"] for d in plan.events[0]["deltas"]] == [0]


async def test_batch_of_redeliveries_writes_nothing(run, rules):
    event = make_event({"crm_id": "c-1"})
    await resolve(run, rules, event)
    _, plan = await resolve(run, rules, event, event)
    assert plan.empty


async def test_every_attachment_the_engine_planned_is_written_on_the_profile_it_ended_on(run, rules):
    events = [make_event({"crm_id": "a"}), make_event({"crm_id": "b", "email": "b@example.com"}),
              make_event({"crm_id": ["a", "b"]}), make_event({"email": "b@example.com", "phone": "13800138000"})]
    _, plan = await resolve(run, rules, *events)
    overlay = run.overlays[-1]
    planned = {(key, overlay.live(holder)) for e in overlay.events for key, holder in e.changes.attachments}
    assert planned <= {(a["key"], a["profile_id"]) for a in plan.attachments}
