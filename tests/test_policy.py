"""Attribute sovereignty: who may set a trait and which write wins."""

import pytest

from identity.model import TraitValue
from identity.policy import Policy, PolicyError, covers, load_policy

POLICY = Policy.model_validate({
    "version": "test",
    "traits": {
        "value_tier": {"owners": ["service"], "readers": ["sales", "marketing"], "rule": "owner_wins"},
        "credit_band": {"rule": "highest_confidence"},
        "phone_label": {"rule": ["customer", "service", "sales"]},
    },
})


def write(scenario: str, value: object, at: str = "2026-01-02T00:00:00+00:00", confidence: float = 0.9) -> TraitValue:
    return TraitValue(value, scenario, f"e-{scenario}-{at}", at, confidence)


def test_scenario_names_cover_their_dotted_children_only():
    assert covers("service", "service.ltv") and covers("service", "service")
    assert not covers("service", "services.ltv") and not covers("service.ltv", "service")


def test_non_owner_cannot_overwrite_an_owned_trait():
    verdict = POLICY.arbitrate("value_tier", write("service.ltv", "high"), write("marketing.campaign", "bronze", at="2026-02-01T00:00:00+00:00"))
    assert not verdict.applies
    assert verdict.reason == "marketing.campaign may not set value_tier: owned by service"


def test_non_owner_cannot_set_an_owned_trait_even_when_it_is_empty():
    assert not POLICY.arbitrate("value_tier", None, write("marketing.campaign", "bronze")).applies


def test_owner_write_applies_and_newer_owner_write_wins():
    assert POLICY.arbitrate("value_tier", None, write("service.ltv", "high")).applies
    older = POLICY.arbitrate("value_tier", write("service.ltv", "high", at="2026-03-01T00:00:00+00:00"), write("service.ltv", "low"))
    assert not older.applies


def test_highest_confidence_keeps_the_surer_value():
    current = write("sales.crm", "A", confidence=0.99)
    assert not POLICY.arbitrate("credit_band", current, write("service.hotline", "C", confidence=0.7, at="2026-05-01T00:00:00+00:00")).applies
    assert POLICY.arbitrate("credit_band", current, write("service.hotline", "C", confidence=0.995)).applies


def test_priority_list_ranks_sources_and_unlisted_sources_lowest():
    by_sales = write("sales.crm", "work")
    assert POLICY.arbitrate("phone_label", by_sales, write("customer", "home", at="2026-01-01T00:00:00+00:00")).applies
    assert not POLICY.arbitrate("phone_label", write("customer", "home"), write("service.hotline", "x", at="2027-01-01T00:00:00+00:00")).applies
    assert not POLICY.arbitrate("phone_label", by_sales, write("marketing.wechat", "x", at="2027-01-01T00:00:00+00:00")).applies


def test_undeclared_trait_takes_the_default_rule_and_says_so():
    verdict = POLICY.arbitrate("city", write("sales.crm", "上海"), write("unknown.app", "北京", at="2026-06-01T00:00:00+00:00"))
    assert verdict.applies and not verdict.declared


def test_readers_may_read_but_others_may_not():
    tier = POLICY.for_trait("value_tier")
    assert tier.may_read("sales.crm") and tier.may_read("service.ltv")
    assert not tier.may_read("battery-recycling.quoting")


def test_bundled_policy_lets_the_customer_correct_their_own_name():
    policy = load_policy()
    current = write("customer", "张伟", at="2026-01-01T00:00:00+00:00")
    assert not policy.arbitrate("name", current, write("sales.crm", "章伟", at="2026-09-01T00:00:00+00:00")).applies


def test_owner_wins_without_owners_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("version: x\ntraits:\n  tier: {rule: owner_wins}\n")
    with pytest.raises(PolicyError, match="owner_wins needs at least one owner"):
        load_policy(path)
