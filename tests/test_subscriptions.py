"""Subscriptions: declarations, projection to entitled fields, filters, webhook backoff."""

import random

import msgspec
import orjson
import pytest

from identity.deltas import Cause, DeltaTimes, FieldChange, IdentityDelta
from identity.features import prepare
from identity.notices import notice_for
from sinks.subscriptions import Subscription, SubscriptionError, load_subscriptions, parse_subscriptions, project
from sinks.webhook import backoff_delays
from tests.conftest import make_event


def delta(kind="profile.updated", changes=None, traits=None, identifiers=None) -> IdentityDelta:
    return IdentityDelta(
        delta_id="d_1", profile_id="p_1", profile_version=2, kind=kind,
        changes={k: FieldChange(old=o, new=n) for k, (o, n) in (changes or {}).items()},
        profile={"traits": traits or {}, "identifiers": identifiers or {}},
        cause=Cause(event_id="e1", scenario="s", event_type="t", action="link", confidence=0.99),
        times=DeltaTimes(occurred_at="2026-01-01T00:00:00+00:00", resolved_at="2026-01-01T00:00:01+00:00"),
    )


def subscription(**fields) -> Subscription:
    return Subscription.model_validate({"name": "sales", "fields": ["traits.name"], **fields})


def test_projection_strips_every_field_not_declared():
    body = project(delta(changes={"traits.name": (None, "张伟"), "traits.value_tier": (None, "high")},
                         traits={"name": "张伟", "value_tier": "high"}, identifiers={"phone": ["+86138"]}),
                   subscription(fields=["traits.name"]))
    assert body["changes"] == {"traits.name": {"old": None, "new": "张伟"}}
    assert body["profile"] == {"traits": {"name": "张伟"}, "identifiers": {}}
    assert body["subscription"] == "sales"


def test_section_wildcard_grants_the_whole_section_only():
    body = project(delta(changes={"traits.city": ("a", "b")}, traits={"city": "b"}, identifiers={"phone": ["x"]}),
                   subscription(fields=["traits.*"]))
    assert body["profile"] == {"traits": {"city": "b"}, "identifiers": {}}


def test_update_that_changes_nothing_visible_is_not_delivered():
    assert project(delta(changes={"traits.city": ("a", "b")}), subscription(fields=["traits.name"])) is None


def test_merge_is_delivered_even_without_visible_changes():
    assert project(delta(kind="profile.merged"), subscription(fields=["traits.name"])) is not None


def test_kinds_not_subscribed_are_not_delivered():
    sub = subscription(kinds=["profile.created"])
    assert project(delta(changes={"traits.name": ("a", "b")}), sub) is None


def test_trait_filter_delivers_only_matching_profiles():
    sub = subscription(filters=[{"trait": "city", "any_of": ["上海"]}])
    assert project(delta(kind="profile.merged", traits={"city": "上海"}), sub) is not None
    assert project(delta(kind="profile.merged", traits={"city": "北京"}), sub) is None
    assert project(delta(kind="profile.merged", traits={}), sub) is None


def test_a_projection_made_after_the_delta_is_emitted_carries_its_emitted_time():
    d = delta(changes={"traits.name": ("a", "b")}, traits={"name": "b"})
    d.emit("2026-01-01T00:00:02+00:00")
    assert project(d, subscription())["times"]["emitted_at"] == "2026-01-01T00:00:02+00:00"


def test_a_projection_made_before_the_delta_is_emitted_keeps_the_times_it_was_given():
    d = delta(changes={"traits.name": ("a", "b")}, traits={"name": "b"})
    before = project(d, subscription())
    d.emit("2026-01-01T00:00:02+00:00")
    assert before["times"]["emitted_at"] is None


def test_a_delta_reads_back_from_its_json_form_unchanged():
    d = delta(changes={"traits.name": (None, "张伟")}, traits={"name": "张伟"}, identifiers={"phone": ["+86138"]})
    assert IdentityDelta.from_json(d.to_json()) == d


@pytest.mark.parametrize("field, value, named", [
    ("profile_version", 0, "profile_version"),
    ("kind", "profile.renamed", "kind"),
    ("surprise", 1, "surprise"),
])
def test_a_delta_that_breaks_the_contract_is_refused_naming_the_field(field, value, named):
    form = {**msgspec.to_builtins(delta()), field: value}
    with pytest.raises(msgspec.ValidationError, match=named):
        IdentityDelta.from_json(orjson.dumps(form))


def test_a_notice_leaves_out_its_empty_fields_but_not_the_nulls_its_payload_was_sent_with(rules):
    event = make_event(identifiers={"phone": "+8613800138000"}, traits={"name": "张伟"}, payload={"note": None},
                       causation={"event_id": "e0", "hops": 1})
    decision = {"profile_id": "p_1", "action": "link", "confidence": 0.9}
    body = orjson.loads(notice_for(prepare(event, rules), decision, ingested_at=None, resolved_at="2026-01-01T00:00:01+00:00").to_json())
    assert body["payload"] == {"note": None}
    assert body["causation"] == {"event_id": "e0", "hops": 1}
    assert body["times"] == {"occurred_at": event.occurred_at.isoformat(), "resolved_at": "2026-01-01T00:00:01+00:00"}


def test_kafka_sink_is_the_default_with_a_topic_per_scenario():
    assert subscription().topic == "scenario.sales"
    assert subscription(sink={"type": "kafka", "topic": "sales-in"}).topic == "sales-in"


@pytest.mark.parametrize("bad, message", [
    ({"name": "Sales", "fields": ["traits.name"]}, "name"),
    ({"name": "sales", "fields": ["name"]}, "traits.<name>"),
    ({"name": "sales", "fields": []}, "fields"),
    ({"name": "sales", "fields": ["traits.name"], "kinds": ["profile.deleted"]}, "kinds"),
    ({"name": "sales", "fields": ["traits.name"], "sink": {"type": "webhook", "url": "not a url"}}, "url"),
    ({"name": "sales", "fields": ["traits.name"], "sink": {"type": "kafka", "topic": "sandbox.trial.sales"}},
     "names starting with 'sandbox.' belong to sandboxes"),
])
def test_bad_declarations_are_refused_naming_the_problem(bad, message):
    with pytest.raises(SubscriptionError) as caught:
        parse_subscriptions([bad], "subs.yaml")
    assert "subs.yaml: subscription #1" in str(caught.value) and message in str(caught.value)


def test_the_same_scenario_declared_twice_is_refused():
    with pytest.raises(SubscriptionError, match="declared twice: sales"):
        parse_subscriptions([{"name": "sales", "fields": ["traits.name"]}] * 2, "x")


def test_yaml_file_with_a_subscriptions_key_loads(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("subscriptions:\n  - name: service\n    fields: ['traits.*']\n")
    assert [s.name for s in load_subscriptions(path)] == ["service"]


def test_webhook_backoff_doubles_up_to_its_cap_with_jitter():
    sink = subscription(sink={"type": "webhook", "url": "http://x/", "max_attempts": 6,
                              "backoff_initial_s": 1, "backoff_max_s": 5}).sink
    delays = backoff_delays(sink, random.Random(1))
    assert len(delays) == 5
    for delay, ceiling in zip(delays, [1, 2, 4, 5, 5]):
        assert ceiling / 2 <= delay <= ceiling
