"""Sovereignty in resolution: refused writes keep the stored value and are recorded and explained."""

import pytest

from identity.explain import render_decision
from identity.features import prepare
from identity.policy import Policy
from service.resolver import Resolver
from tests.conftest import make_event

POLICY = Policy.model_validate({
    "version": "tiers-1",
    "traits": {
        "value_tier": {"owners": ["service"], "readers": ["sales", "marketing"], "rule": "owner_wins"},
        "preferred_name": {"rule": ["customer", "sales"]},
    },
})


@pytest.fixture
def resolve(store, rules):
    resolver = Resolver(store, rules, policy=POLICY)

    async def run(event):
        (outcome,) = await resolver.resolve([prepare(event, rules)])
        return outcome

    return run


async def test_owner_sets_an_owned_trait(resolve, store):
    outcome = await resolve(make_event({"crm_id": "c-1"}, {"value_tier": "high"}, scenario="service.ltv"))
    assert (await store.profile(outcome.profile_id)).traits["value_tier"]["value"] == "high"
    assert outcome.decision["evidence"]["sovereignty"]["conflicts"] == []


async def test_other_scenario_cannot_overwrite_it_and_the_conflict_is_recorded(resolve, store):
    owner = await resolve(make_event({"crm_id": "c-1"}, {"value_tier": "high"}, scenario="service.ltv"))
    campaign = await resolve(make_event({"crm_id": "c-1"}, {"value_tier": "bronze", "city": "上海"}, scenario="marketing.campaign"))
    profile = await store.profile(owner.profile_id)
    assert profile.traits["value_tier"]["value"] == "high"
    assert profile.traits["city"]["value"] == "上海", "the rest of the write still applies"
    (conflict,) = (await store.decision(campaign.event_id))["evidence"]["sovereignty"]["conflicts"]
    assert conflict == {"trait": "value_tier", "scenario": "marketing.campaign", "attempted": "bronze",
                        "kept": "high", "kept_from": "service.ltv",
                        "reason": "marketing.campaign may not set value_tier: owned by service",
                        "at": campaign.deltas[0].times.occurred_at}
    assert [c for c in campaign.deltas[0].changes] == ["traits.city"]


async def test_refused_write_is_explained(resolve, store):
    await resolve(make_event({"crm_id": "c-1"}, {"value_tier": "high"}, scenario="service.ltv"))
    campaign = await resolve(make_event({"crm_id": "c-1"}, {"value_tier": "bronze"}, scenario="marketing.campaign"))
    text = render_decision(await store.decision(campaign.event_id))
    assert "Sovereignty conflict on value_tier: marketing.campaign wrote 'bronze', kept 'high'" in text


async def test_undeclared_traits_follow_the_default_rule_and_are_noted(resolve):
    outcome = await resolve(make_event({"crm_id": "c-1"}, {"city": "上海"}, scenario="unknown.app"))
    assert outcome.decision["evidence"]["sovereignty"]["default_rule_traits"] == ["city"]


async def test_merge_arbitrates_traits_by_policy_not_by_recency(resolve, store):
    corrected = await resolve(make_event({"phone": "13800138000"}, {"preferred_name": "Wei"}, scenario="customer",
                                         occurred_at="2026-01-01T00:00:00Z"))
    await resolve(make_event({"email": "zw@example.com"}, {"preferred_name": "Mr Zhang"}, scenario="sales.crm",
                             occurred_at="2026-02-01T00:00:00Z"))
    await resolve(make_event({"phone": "13800138000", "email": "zw@example.com"}, occurred_at="2026-03-01T00:00:00Z"))
    assert (await store.profile(corrected.profile_id)).traits["preferred_name"]["value"] == "Wei"


# Events with different record keys are causally independent (identity/features.py
# partition_key), so whichever of two such writes arrives first, the outcome is the same.
OWNER = {"crm_id": "c-1"}, {"value_tier": "high"}, "service.ltv", "2026-03-01T09:00:00+08:00"
CAMPAIGN = {"crm_id": "c-1"}, {"value_tier": "bronze"}, "marketing.campaign", "2026-03-01T09:05:00+08:00"


async def _arrive(resolve, *writes):
    return [await resolve(make_event(ids, traits, scenario=scenario, occurred_at=at)) for ids, traits, scenario, at in writes]


@pytest.mark.parametrize("order", [(OWNER, CAMPAIGN), (CAMPAIGN, OWNER)], ids=["owner-first", "campaign-first"])
async def test_the_owner_value_wins_whichever_write_arrives_first(resolve, store, order):
    outcomes = await _arrive(resolve, *order)
    profile = await store.profile(outcomes[-1].profile_id)
    assert profile.traits["value_tier"]["value"] == "high"
    assert profile.traits["value_tier"]["scenario"] == "service.ltv"


async def test_a_refusal_that_arrives_before_the_owner_records_that_nothing_was_kept_yet(resolve, store):
    campaign, _ = await _arrive(resolve, CAMPAIGN, OWNER)
    (conflict,) = (await store.decision(campaign.event_id))["evidence"]["sovereignty"]["conflicts"]
    assert {k: v for k, v in conflict.items() if k != "at"} == {
        "trait": "value_tier", "scenario": "marketing.campaign", "attempted": "bronze",
        "kept": None, "kept_from": None, "reason": "marketing.campaign may not set value_tier: owned by service"}


async def test_a_refusal_that_arrives_after_the_owner_records_the_value_it_kept(resolve, store):
    _, campaign = await _arrive(resolve, OWNER, CAMPAIGN)
    (conflict,) = (await store.decision(campaign.event_id))["evidence"]["sovereignty"]["conflicts"]
    assert (conflict["kept"], conflict["kept_from"]) == ("high", "service.ltv")


MORNING_IN_SHANGHAI = {"crm_id": "c-2"}, {"city": "上海"}, "sales.crm", "2026-03-01T09:00:00+08:00"  # 01:00 UTC
LATER_IN_LONDON = {"crm_id": "c-2"}, {"city": "London"}, "service.desk", "2026-03-01T02:00:00+00:00"


@pytest.mark.parametrize("order", [(MORNING_IN_SHANGHAI, LATER_IN_LONDON), (LATER_IN_LONDON, MORNING_IN_SHANGHAI)],
                         ids=["shanghai-first", "london-first"])
async def test_most_recent_compares_instants_not_the_text_of_their_utc_offsets(resolve, store, order):
    outcomes = await _arrive(resolve, *order)
    assert (await store.profile(outcomes[-1].profile_id)).traits["city"]["value"] == "London"


TIED_A = {"crm_id": "c-3"}, {"city": "Hangzhou"}, "sales.crm", "2026-03-01T09:00:00+08:00", "tie-1"
TIED_B = {"crm_id": "c-3"}, {"city": "Suzhou"}, "service.desk", "2026-03-01T01:00:00Z", "tie-2"


@pytest.mark.parametrize("order", [(TIED_A, TIED_B), (TIED_B, TIED_A)], ids=["a-first", "b-first"])
async def test_writes_observed_at_the_same_instant_settle_the_same_way_in_either_order(resolve, store, order):
    outcomes = [await resolve(make_event(ids, traits, scenario=scenario, occurred_at=at, event_id=event_id))
                for ids, traits, scenario, at, event_id in order]
    assert (await store.profile(outcomes[-1].profile_id)).traits["city"]["value"] == "Suzhou", "the higher event id wins"
