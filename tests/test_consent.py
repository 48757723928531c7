"""Consent per purpose: recorded from events and from the API with time and source, carried by
deltas, and gating what subscriptions with a purpose receive."""

from __future__ import annotations

import msgspec
import pytest

from identity.deltas import FieldChange, IdentityDelta
from sinks.subscriptions import Subscription, project
from tests.api_support import outbox, resolve, run_api
from tests.conftest import make_event

MODELS = Subscription(name="models", fields=("traits.*",), purpose="ai_training")
CRM = Subscription(name="crm", fields=("traits.*",))


@pytest.fixture
def customer(tmp_path):
    path = tmp_path / "graph.db"
    (outcome,) = resolve(path, make_event({"email": "c@example.com"}, {"city": "Shanghai"}, consent={"marketing": True},
                                          scenario="web.signup", occurred_at="2026-01-01T00:00:00Z"))
    for api in run_api(path, {"me": {"scopes": ["customer"], "profile_id": outcome.profile_id}}):
        yield api, outcome


def test_consent_from_an_event_is_recorded_with_its_source_and_time(customer):
    api, outcome = customer
    purposes = api.get("me", f"/v1/profiles/{outcome.profile_id}/consent").json()["purposes"]
    assert purposes["marketing"] == {"granted": True, "source": "web.signup", "at": "2026-01-01T00:00:00+00:00",
                                     "event_id": outcome.event_id}


def test_a_purpose_never_answered_is_not_granted(customer):
    api, outcome = customer
    assert api.get("me", f"/v1/profiles/{outcome.profile_id}/consent").json()["purposes"]["ai_training"]["granted"] is False


def test_the_customer_withdraws_consent_and_the_change_is_a_delta(customer):
    api, outcome = customer
    response = api.put("me", f"/v1/profiles/{outcome.profile_id}/consent", json={"purposes": {"marketing": False}})
    assert response.status_code == 200
    assert response.json()["purposes"]["marketing"]["source"] == "customer"
    (delta,) = [d for d in outbox(api.path) if "consent.marketing" in d.changes and d.profile_version == 2]
    assert delta.changes["consent.marketing"] == FieldChange(old=True, new=False)
    assert delta.profile["consent"] == {"marketing": False}


def test_the_same_consent_request_repeated_applies_once(customer):
    api, outcome = customer
    for _ in range(2):
        api.client.put(f"/v1/profiles/{outcome.profile_id}/consent", json={"purposes": {"ai_training": True}},
                       headers={**api.as_("me"), "Idempotency-Key": "k-1"})
    assert len([d for d in outbox(api.path) if "consent.ai_training" in d.changes]) == 1


def test_a_scenarios_older_consent_record_does_not_override_the_customers_newer_answer(customer):
    api, outcome = customer
    api.put("me", f"/v1/profiles/{outcome.profile_id}/consent", json={"purposes": {"marketing": False}})
    resolve(api.path, make_event({"email": "c@example.com"}, consent={"marketing": True}, occurred_at="2026-01-02T00:00:00Z"))
    assert api.get("me", f"/v1/profiles/{outcome.profile_id}/consent").json()["purposes"]["marketing"]["granted"] is False


def delta(kind="profile.updated", consent=None, changes=None) -> IdentityDelta:
    return msgspec.convert({
        "delta_id": "d1", "profile_id": "p1", "profile_version": 3, "kind": kind,
        "changes": changes or {"traits.city": {"old": "A", "new": "B"}},
        "profile": {"traits": {"city": "B"}, "identifiers": {"email": ["c@example.com"]}, "consent": consent or {}},
        "cause": {"event_id": "e1", "scenario": "s", "event_type": "t", "action": "link", "confidence": 1.0},
        "times": {"occurred_at": "2026-01-01T00:00:00Z", "resolved_at": "2026-01-01T00:00:00Z"},
    }, IdentityDelta)


def test_purpose_subscription_receives_nothing_without_consent():
    assert project(delta(consent={"marketing": True}), MODELS) is None


def test_purpose_subscription_receives_the_profile_with_its_own_consent_only():
    body = project(delta(consent={"ai_training": True, "marketing": True}), MODELS)
    assert body["profile"] == {"traits": {"city": "B"}, "identifiers": {}, "consent": {"ai_training": True}}


def test_withdrawal_reaches_the_purpose_subscription_as_the_documented_minimum():
    withdrawn = delta(consent={"ai_training": False}, changes={"consent.ai_training": {"old": True, "new": False},
                                                               "traits.city": {"old": "A", "new": "B"}})
    body = project(withdrawn, MODELS)
    assert body["profile"] == {"consent": {"ai_training": False}}
    assert body["changes"] == {"consent.ai_training": {"old": True, "new": False}}


def test_subscription_without_a_purpose_is_not_gated_and_does_not_see_consent():
    body = project(delta(consent={}), CRM)
    assert body["profile"] == {"traits": {"city": "B"}, "identifiers": {}}


def test_erasure_reaches_every_subscription_whatever_its_consent_kinds_or_filters():
    erased = msgspec.structs.replace(delta(kind="profile.erased", changes={}), profile={})
    narrow = Subscription(name="n", fields=("traits.city",), kinds=("profile.created",),
                          filters=({"trait": "tier", "any_of": ["gold"]},), purpose="marketing")
    assert project(erased, narrow)["kind"] == "profile.erased"
