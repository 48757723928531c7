"""Human review: the queue, approve (merged, with lineage), reject (kept apart and never proposed
again), merging by hand; each an operator decision with deltas in the outbox."""

from __future__ import annotations

import pytest

from tests.api_support import on_store, outbox, resolve, run_api
from tests.conftest import make_event

OPERATOR = {"op": {"scopes": ["operator"]}}


@pytest.fixture
def doubt(tmp_path):
    """Same common name in the same city and nothing else: a review proposal."""
    path = tmp_path / "graph.db"
    first, maybe = resolve(path, make_event(traits={"name": "Zhang Wei", "city": "Shanghai", "birth_date": "1985-04-12"}),
                           make_event(traits={"name": "Zhang Wei", "city": "Shanghai"}))
    assert maybe.decision["action"] == "review"
    for api in run_api(path, OPERATOR):
        (review,) = api.get("op", "/v1/reviews").json()
        yield api, review, first, maybe


def test_open_reviews_list_the_proposed_pair(doubt):
    api, review, first, maybe = doubt
    assert review["profile_ids"] == [maybe.profile_id, first.profile_id] and review["status"] == "open"


def test_approving_merges_the_pair_into_the_older_with_lineage_and_a_merged_delta(doubt):
    api, review, first, maybe = doubt
    response = api.post("op", f"/v1/reviews/{review['id']}", json={"verdict": "approve", "reason": "same person"})
    assert response.status_code == 200, response.text
    (delta,) = response.json()["deltas"]
    assert (delta["kind"], delta["profile_id"]) == ("profile.merged", first.profile_id)
    profile = api.get("op", f"/v1/profiles/{maybe.profile_id}").json()
    assert (profile["id"], profile["merged_into"], profile["merged_from"]) == (first.profile_id, first.profile_id, [maybe.profile_id])
    assert [d.delta_id for d in outbox(api.path) if d.kind == "profile.merged"] == [delta["delta_id"]]


def test_verdict_is_recorded_with_who_and_why(doubt):
    api, review, first, _ = doubt
    api.post("op", f"/v1/reviews/{review['id']}", json={"verdict": "approve", "reason": "same person"})
    (decided,) = api.get("op", "/v1/reviews", params={"status": "approved"}).json()
    assert (decided["decided_by"], decided["status"]) == ("op", "approved")
    (record,) = on_store(api.path, lambda s: s.operations_for(first.profile_id))
    assert (record["kind"], record["actor"], record["reason"], record["review_id"]) == ("review.approve", "op", "same person", review["id"])
    assert record["rule_version"] and record["policy_version"]


def test_rejecting_keeps_both_profiles(doubt):
    api, review, first, maybe = doubt
    response = api.post("op", f"/v1/reviews/{review['id']}", json={"verdict": "reject", "reason": "different people"})
    assert response.status_code == 200 and response.json()["deltas"] == []
    assert api.get("op", f"/v1/profiles/{maybe.profile_id}").json()["id"] == maybe.profile_id
    assert api.get("op", "/v1/reviews").json() == []


def test_a_rejected_pair_is_not_proposed_again(doubt):
    api, review, first, maybe = doubt
    api.post("op", f"/v1/reviews/{review['id']}", json={"verdict": "reject", "reason": "different people"})
    (bridge,) = resolve(api.path, make_event(traits={"name": "Zhang Wei", "city": "Shanghai"},
                                             causation={"profile_id": maybe.profile_id}))
    (again,) = resolve(api.path, make_event(traits={"name": "Zhang Wei", "city": "Shanghai"},
                                            causation={"profile_id": first.profile_id}))
    assert api.get("op", "/v1/reviews").json() == []
    assert {bridge.profile_id, again.profile_id} == {maybe.profile_id, first.profile_id}


def test_an_event_naming_both_kept_apart_profiles_links_to_one_instead_of_merging(doubt):
    api, review, first, maybe = doubt
    api.post("op", f"/v1/reviews/{review['id']}", json={"verdict": "reject", "reason": "different people"})
    resolve(api.path, make_event({"crm_id": "c-77"}, causation={"profile_id": maybe.profile_id}))
    (both,) = resolve(api.path, make_event({"crm_id": "c-77"}, causation={"profile_id": first.profile_id}))
    assert both.decision["action"] == "link"
    assert "kept_apart" in {p["kind"] for p in both.decision["protections"]}
    assert api.get("op", "/v1/reviews").json() == []


def test_a_review_decided_once_cannot_be_decided_again(doubt):
    api, review, *_ = doubt
    api.post("op", f"/v1/reviews/{review['id']}", json={"verdict": "reject", "reason": "different"})
    again = api.post("op", f"/v1/reviews/{review['id']}", json={"verdict": "approve", "reason": "changed my mind"})
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"


def test_unknown_review_is_404(doubt):
    api, *_ = doubt
    assert api.post("op", "/v1/reviews/999", json={"verdict": "reject", "reason": "x"}).status_code == 404


def test_operator_merges_two_profiles_by_hand(tmp_path):
    path = tmp_path / "graph.db"
    older, newer = resolve(path, make_event({"crm_id": "a"}, {"city": "Shanghai"}), make_event({"email": "b@example.com"}))
    for api in run_api(path, OPERATOR):
        response = api.post("op", "/v1/profiles/merge", json={"profile_ids": [newer.profile_id, older.profile_id],
                                                              "reason": "customer called"})
        assert response.status_code == 200, response.text
        merged = api.get("op", f"/v1/profiles/{older.profile_id}").json()
        assert merged["identifiers"] == {"crm_id": ["A"], "email": ["b@example.com"]}
        assert [e["event_id"] for e in api.get("op", f"/v1/profiles/{newer.profile_id}/timeline").json()["entries"]] == [
            older.event_id, newer.event_id]
        assert api.post("op", "/v1/profiles/merge", json={"profile_ids": [newer.profile_id, older.profile_id],
                                                          "reason": "again"}).status_code == 409
