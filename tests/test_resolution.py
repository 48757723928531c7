"""How events become profiles: create, link, merge with lineage, review, and merge protection."""

import pytest

from identity.deltas import FieldChange
from tests.conftest import cn_national_id, make_event

# Part of the store contract: every GraphStore must resolve these the same way.
pytestmark = pytest.mark.every_store


async def test_first_event_creates_a_profile_at_version_one(engine):
    outcome = await engine.resolve(make_event({"phone": "13800138000"}, {"name": "张伟"}))
    assert outcome.decision["action"] == "create"
    (delta,) = outcome.deltas
    assert (delta.kind, delta.profile_version, delta.profile_id) == ("profile.created", 1, outcome.profile_id)
    assert delta.changes["identifiers.phone"].new == ["+8613800138000"]
    assert delta.changes["traits.name"].new == "张伟"


async def test_same_phone_written_differently_links_to_the_same_profile(engine):
    first = await engine.resolve(make_event({"phone": "138 0013 8000"}))
    second = await engine.resolve(make_event({"phone": "+86-138-0013-8000"}, {"name": "Zhang Wei"}))
    assert second.decision["action"] == "link"
    assert second.profile_id == first.profile_id
    assert second.deltas[0].kind == "profile.updated"
    assert second.deltas[0].profile_version == 2


async def test_link_that_changes_nothing_emits_no_delta_and_keeps_the_version(engine, store):
    first = await engine.resolve(make_event({"email": "a@example.com"}, {"name": "Ann Lee"}))
    again = await engine.resolve(make_event({"email": "A@Example.com"}, {"name": "Ann Lee"}))
    assert again.decision["action"] == "link" and again.deltas == []
    assert (await store.profile(first.profile_id)).version == 1


async def test_event_carrying_identifiers_of_two_profiles_merges_them_into_the_oldest(engine, store):
    older = await engine.resolve(make_event({"phone": "13800138000"}))
    newer = await engine.resolve(make_event({"email": "zw@example.com"}))
    bridge = await engine.resolve(make_event({"phone": "13800138000", "email": "zw@example.com"}))
    assert bridge.decision["action"] == "merge"
    assert bridge.profile_id == older.profile_id
    assert bridge.decision["merged_from"] == [newer.profile_id]
    (delta,) = bridge.deltas
    assert delta.kind == "profile.merged" and delta.merged_from == [newer.profile_id]
    merged = await store.profile(newer.profile_id)
    assert merged.id == older.profile_id
    assert merged.identifiers == {"email": ["zw@example.com"], "phone": ["+8613800138000"]}


async def test_retired_id_still_resolves_after_its_survivor_is_merged_again(engine, store):
    a = await engine.resolve(make_event({"crm_id": "a"}))
    b = await engine.resolve(make_event({"crm_id": "b"}))
    await engine.resolve(make_event({"crm_id": ["a", "b"]}))
    await engine.resolve(make_event({"email": "c@example.com"}))
    c = (await store.assignments())[-1][1]
    await engine.resolve(make_event({"crm_id": "b", "email": "c@example.com"}))
    assert await store.survivor(b.profile_id) == a.profile_id
    assert await store.survivor(c) == a.profile_id
    assert {e.event_id for e in await store.timeline(b.profile_id)} == {e.event_id for e in await store.timeline(a.profile_id)}


async def test_conflicting_national_id_never_links_automatically(engine):
    first = await engine.resolve(make_event({"phone": "13800138000", "national_id": cn_national_id(451)}))
    other = await engine.resolve(make_event({"phone": "13800138000", "national_id": cn_national_id(671)}))
    assert other.profile_id != first.profile_id
    assert other.decision["action"] == "review"
    assert first.profile_id in other.decision["review"]["profile_ids"]
    assert "conflicting_id" in {p["kind"] for p in other.decision["protections"]}


async def test_merge_that_would_exceed_a_type_limit_goes_to_review(engine, store):
    p1 = await engine.resolve(make_event({"phone": "13800138000", "national_id": cn_national_id(451)}))
    p2 = await engine.resolve(make_event({"email": "x@example.com", "national_id": cn_national_id(671)}))
    bridge = await engine.resolve(make_event({"phone": "13800138000", "email": "x@example.com"}))
    assert bridge.decision["action"] == "review"
    assert bridge.decision["merged_from"] == []
    assert sorted(bridge.decision["review"]["profile_ids"]) == sorted([p1.profile_id, p2.profile_id])
    assert [p["kind"] for p in bridge.decision["protections"]] == ["limit"]
    assert await store.survivor(p2.profile_id) == p2.profile_id
    assert len(await store.open_reviews()) == 1


async def test_value_shared_by_too_many_profiles_stops_being_evidence_and_is_reported(engine, store, rules):
    shop_phone = "02150501234"
    ids = [cn_national_id(n) for n in (1, 2, 3, 4)]
    for national_id in ids:
        await engine.resolve(make_event({"phone": shop_phone, "national_id": national_id}))
    (generic,) = await store.generic_identifiers(rules)
    assert generic == ("phone:+862150501234", 4)
    walk_in = await engine.resolve(make_event({"phone": shop_phone}, {"name": "Li Na"}))
    assert walk_in.decision["action"] == "create"
    statuses = {i["type"]: i["status"] for i in walk_in.decision["evidence"]["identifiers"]}
    assert statuses == {"phone": "generic"}
    assert "generic_value" in {p["kind"] for p in walk_in.decision["protections"]}


async def test_identifier_match_contradicted_by_every_trait_goes_to_review(engine):
    known = await engine.resolve(make_event({"phone": "13800138000"}, {"name": "Zhang Wei", "birth_date": "1985-04-12", "address": "1 Nanjing Road", "city": "Shanghai"}))
    stranger = await engine.resolve(make_event({"phone": "13800138000"}, {"name": "Maria Gonzalez", "birth_date": "1961-11-30", "address": "12 Calle Mayor", "city": "Madrid"}))
    assert stranger.decision["action"] == "review"
    assert stranger.profile_id != known.profile_id


async def test_fuzzy_match_without_identifiers_links(engine):
    traits = {"name": "María González", "address": "12 Calle Mayor", "city": "Madrid", "birth_date": "1990-07-23"}
    first = await engine.resolve(make_event({"email": "maria@example.com"}, traits))
    typo = await engine.resolve(make_event({"crm_id": "c-1"}, {**traits, "name": "Maria Gonzales"}))
    assert typo.decision["action"] == "link"
    assert typo.profile_id == first.profile_id
    fields = {f["field"]: f["level"] for f in typo.decision["evidence"]["candidates"][0]["fields"]}
    assert fields == {"name": "close", "address": "exact", "city": "exact", "birth_date": "exact"}


async def test_weak_fuzzy_match_is_proposed_for_review_on_a_new_profile(engine, store):
    first = await engine.resolve(make_event(traits={"name": "Zhang Wei", "city": "Shanghai", "birth_date": "1985-04-12"}))
    # Same common name in the same city and nothing else to go on: a person should judge.
    maybe = await engine.resolve(make_event(traits={"name": "Zhang Wei", "city": "Shanghai"}))
    assert maybe.decision["action"] == "review"
    assert maybe.profile_id != first.profile_id
    assert (await store.open_reviews())[0]["profile_ids"] == [maybe.profile_id, first.profile_id]


async def test_a_profile_whose_other_record_contradicts_the_event_is_not_linked_automatically(engine):
    known = {"name": "Li Na", "city": "Chengdu", "address": "5 Renmin Road", "birth_date": "1980-01-01"}
    first = await engine.resolve(make_event({"email": "lina@example.com"}, known))
    # The same email brought a record of someone else in: another birth date, another address.
    await engine.resolve(make_event({"email": "lina@example.com"},
                                    {"name": "Li Na", "city": "Chengdu", "address": "77 Tianfu Avenue", "birth_date": "1995-06-30"}))
    event = await engine.resolve(make_event(traits=known))
    assert event.decision["action"] == "review"
    assert event.decision["review"]["profile_ids"] == [event.profile_id, first.profile_id]
    assert "contradicts the event" in event.decision["review"]["reason"]


async def test_an_event_matching_two_plausibly_same_profiles_merges_them(engine):
    older = await engine.resolve(make_event(traits={"name": "Zhang Wei", "city": "Shanghai", "birth_date": "1985-04-12"}))
    newer = await engine.resolve(make_event(traits={"name": "Zhang Wei", "city": "Shanghai", "address": "8 Nanjing Road"}))
    assert newer.decision["action"] == "review"
    bridge = await engine.resolve(make_event(traits={"name": "Zhang Wei", "city": "Shanghai", "birth_date": "1985-04-12",
                                                     "address": "8 Nanjing Road"}))
    assert bridge.decision["action"] == "merge"
    assert (bridge.profile_id, bridge.decision["merged_from"]) == (older.profile_id, [newer.profile_id])


async def test_an_event_alone_does_not_bridge_two_profiles_with_nothing_in_common(engine):
    by_name = await engine.resolve(make_event(traits={"name": "Maria Gonzalez", "city": "Madrid", "address": "12 Calle Mayor"}))
    by_birth = await engine.resolve(make_event(traits={"birth_date": "1990-07-23", "postcode": "28013"}))
    assert by_birth.profile_id != by_name.profile_id
    event = await engine.resolve(make_event(traits={"name": "Maria Gonzalez", "city": "Madrid", "address": "12 Calle Mayor",
                                                    "birth_date": "1990-07-23", "postcode": "28013"}))
    assert event.decision["action"] == "link"
    assert event.decision["merged_from"] == []


async def test_unrelated_customer_gets_a_new_profile(engine):
    first = await engine.resolve(make_event(traits={"name": "Zhang Wei", "city": "Shanghai", "birth_date": "1985-04-12"}))
    other = await engine.resolve(make_event(traits={"name": "Zhang Wei", "city": "Beijing", "birth_date": "1972-09-01"}))
    assert other.decision["action"] == "create"
    assert other.profile_id != first.profile_id


async def test_newer_trait_value_replaces_older_with_provenance(engine, store):
    await engine.resolve(make_event({"crm_id": "c-9"}, {"city": "Shanghai"}, scenario="sales.crm", occurred_at="2026-01-01T00:00:00Z"))
    late = await engine.resolve(make_event({"crm_id": "c-9"}, {"city": "Beijing"}, scenario="service.hotline", occurred_at="2026-02-01T00:00:00Z"))
    stale = await engine.resolve(make_event({"crm_id": "c-9"}, {"city": "Shenzhen"}, occurred_at="2025-12-01T00:00:00Z"))
    assert late.deltas[0].changes["traits.city"] == FieldChange(old="Shanghai", new="Beijing")
    assert stale.deltas == []
    city = (await store.profile(late.profile_id)).traits["city"]
    assert (city["value"], city["scenario"]) == ("Beijing", "service.hotline")


async def test_profile_versions_increase_by_one_with_every_delta(engine):
    versions = []
    for i, city in enumerate(["A", "B", "C"]):
        outcome = await engine.resolve(make_event({"crm_id": "same"}, {"city": city}, occurred_at=f"2026-01-0{i + 1}T00:00:00Z"))
        versions += [d.profile_version for d in outcome.deltas]
    assert versions == [1, 2, 3]


async def test_event_caused_by_a_profile_resolves_to_it_without_identifiers(engine, store):
    customer = await engine.resolve(make_event({"phone": "13800138000"}, {"name": "张伟"}))
    assessed = await engine.resolve(make_event(traits={"battery_grade": "A"}, scenario="battery-recycling.assessment",
                                               causation={"event_id": customer.event_id, "hops": 1, "profile_id": customer.profile_id}))
    assert assessed.decision["action"] == "link" and assessed.profile_id == customer.profile_id
    assert assessed.deltas[0].changes == {"traits.battery_grade": FieldChange(old=None, new="A")}
    assert "idgraph:profile" not in (await store.profile(customer.profile_id)).identifiers


async def test_profile_hint_with_a_retired_id_resolves_to_the_survivor(engine):
    older = await engine.resolve(make_event({"phone": "13800138000"}, occurred_at="2026-01-01T00:00:00Z"))
    newer = await engine.resolve(make_event({"email": "zw@example.com"}, occurred_at="2026-01-02T00:00:00Z"))
    await engine.resolve(make_event({"phone": "13800138000", "email": "zw@example.com"}, occurred_at="2026-01-03T00:00:00Z"))
    late = await engine.resolve(make_event(traits={"quote_tier": "premium"}, causation={"profile_id": newer.profile_id}))
    assert late.profile_id == older.profile_id


async def resolve_namesakes(engine):
    """Four John Smiths and one John Okonkwo, born on days apart in every part (five customers)."""
    smiths = [await engine.resolve(make_event({}, {"given_name": "John", "family_name": "Smith", "birth_date": born}))
              for born in ("1950-01-05", "1961-04-11", "1972-07-17", "1983-10-23")]
    assert len({o.profile_id for o in smiths}) == 4
    await engine.resolve(make_event({}, {"given_name": "John", "family_name": "Okonkwo", "birth_date": "1940-02-02"}))


def exact_weight(outcome, field):
    (best, *_) = outcome.decision["evidence"]["candidates"]
    (found,) = [f for f in best["fields"] if f["field"] == field]
    assert found["level"] == "exact"
    return found


async def test_agreeing_on_a_rare_name_weighs_more_than_on_a_common_one(engine):
    await resolve_namesakes(engine)
    common = exact_weight(await engine.resolve(make_event({}, {"given_name": "John", "family_name": "Smith"})), "family_name")
    rare = exact_weight(await engine.resolve(make_event({}, {"given_name": "John", "family_name": "Okonkwo"})), "family_name")
    assert rare["weight"] > rare["level_weight"] > common["weight"]
    # Four of five customers are Smiths; the John Smith just resolved joined one of them, so
    # still one of five is an Okonkwo.
    assert (common["frequency"], rare["frequency"]) == (0.8, 0.2)
