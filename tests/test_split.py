"""Splitting a wrong merge: touchpoints re-resolved without the wrong link, both sides get
``profile.split`` deltas, lineage and the decision log say what happened, and the pair stays apart."""

from __future__ import annotations

import pytest

from identity.deltas import FieldChange
from tests.api_support import on_store, outbox, resolve, run_api
from tests.conftest import make_event


@pytest.fixture
def wrong_merge(tmp_path):
    """A shared family tablet's device id merged two people."""
    path = tmp_path / "graph.db"
    ann, bob, bridge, later = resolve(
        path,
        make_event({"email": "ann@example.com", "device_id": "tablet-1"}, {"name": "Ann Lee"}, occurred_at="2026-01-01T00:00:00Z"),
        make_event({"email": "bob@example.com"}, {"name": "Bob Wu", "city": "Beijing"}, occurred_at="2026-01-02T00:00:00Z"),
        make_event({"email": "bob@example.com", "device_id": "tablet-1"}, occurred_at="2026-01-03T00:00:00Z"),
        make_event({"email": "bob@example.com"}, {"tier": "gold"}, occurred_at="2026-01-04T00:00:00Z"),
    )
    assert bridge.decision["action"] == "merge" and bridge.profile_id == ann.profile_id
    for api in run_api(path, {"op": {"scopes": ["operator"]}}):
        response = api.post("op", f"/v1/profiles/{ann.profile_id}/split",
                            json={"separate": bob.profile_id, "reason": "shared tablet"})
        assert response.status_code == 200, response.text
        yield api, response.json(), ann, bob, bridge, later


def test_both_sides_get_a_split_delta_at_a_new_version(wrong_merge):
    api, result, ann, bob, *_ = wrong_merge
    kinds = {(d["profile_id"], d["kind"]) for d in result["deltas"]}
    assert kinds == {(ann.profile_id, "profile.split"), (bob.profile_id, "profile.split")}
    stored = {d.profile_id: d for d in outbox(api.path) if d.kind == "profile.split"}
    assert stored[ann.profile_id].changes["identifiers.email"] == FieldChange(
        old=["ann@example.com", "bob@example.com"], new=["ann@example.com"])
    assert stored[bob.profile_id].profile_version > 1


def test_the_separated_profile_is_live_again_with_its_own_touchpoints_and_traits(wrong_merge):
    api, _, ann, bob, bridge, later = wrong_merge
    profile = api.get("op", f"/v1/profiles/{bob.profile_id}").json()
    assert (profile["id"], profile["merged_into"]) == (bob.profile_id, None)
    assert profile["identifiers"]["email"] == ["bob@example.com"]
    assert {profile["traits"]["name"]["value"], profile["traits"]["tier"]["value"]} == {"Bob Wu", "gold"}
    events = {e["event_id"] for e in api.get("op", f"/v1/profiles/{bob.profile_id}/timeline").json()["entries"]}
    assert {bob.event_id, later.event_id} <= events and ann.event_id not in events


def test_the_survivor_keeps_only_what_is_its_own(wrong_merge):
    api, _, ann, bob, *_ = wrong_merge
    profile = api.get("op", f"/v1/profiles/{ann.profile_id}").json()
    assert profile["merged_from"] == [] and "Bob Wu" not in str(profile["traits"])
    assert profile["identifiers"]["email"] == ["ann@example.com"]


def test_the_decision_log_explains_the_split(wrong_merge):
    api, result, ann, bob, bridge, _ = wrong_merge
    (record,) = on_store(api.path, lambda s: s.operations_for(bob.profile_id))
    assert (record["kind"], record["actor"], record["reason"], record["separated"]) == ("split", "op", "shared tablet", bob.profile_id)
    assert record["assignments"][bridge.event_id] in {ann.profile_id, bob.profile_id}


def test_the_split_pair_is_not_merged_again_by_the_next_event(wrong_merge):
    api, _, ann, bob, *_ = wrong_merge
    (again,) = resolve(api.path, make_event({"email": "bob@example.com", "device_id": "tablet-1"}))
    assert again.decision["action"] == "link"
    assert api.get("op", f"/v1/profiles/{bob.profile_id}").json()["id"] == bob.profile_id


def test_splitting_off_a_profile_that_was_never_merged_in_is_refused(wrong_merge):
    api, _, ann, bob, *_ = wrong_merge
    response = api.post("op", f"/v1/profiles/{ann.profile_id}/split", json={"separate": bob.profile_id, "reason": "again"})
    assert response.status_code == 422
