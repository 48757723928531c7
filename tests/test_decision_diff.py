"""The decision diff compares two resolutions of the same events by their members, not their ids."""

from identity.decision_diff import DecisionSummary, diff_decisions
from identity.model import DecisionRecord


def record(event_id: str, action: str, profile_id: str) -> DecisionRecord:
    return {"event_id": event_id, "action": action, "profile_id": profile_id, "merged_from": [], "confidence": 1.0,
            "rule_version": "v", "evidence": {}, "protections": [], "review": None}


def records(assignments: dict[str, str], actions: dict[str, str]) -> dict[str, DecisionSummary]:
    return {e: DecisionSummary.of(record(e, actions.get(e, "create"), p)) for e, p in assignments.items()}


def test_profiles_the_candidate_joins_are_a_merge_and_their_events_move():
    before = {"e1": "p1", "e2": "p2", "e3": "p3"}
    after = {"e1": "q1", "e2": "q1", "e3": "q3"}
    diff = diff_decisions(before, after, records(before, {}), records(after, {"e2": "link"}))
    assert (diff.merges, diff.splits, diff.stays) == ([["p1", "p2"]], [], 1)
    assert diff.moved == ["e1", "e2"] and diff.changed == ["e1", "e2"]


def test_the_same_clusters_under_other_profile_ids_are_no_change():
    before = {"e1": "p1", "e2": "p1"}
    after = {"e1": "q9", "e2": "q9"}
    diff = diff_decisions(before, after, records(before, {"e2": "link"}), records(after, {"e2": "link"}))
    assert (diff.merges, diff.splits, diff.stays, diff.moved, diff.changed) == ([], [], 1, [], [])


def test_an_event_decided_by_another_action_in_the_same_cluster_is_a_changed_decision():
    before = {"e1": "p1"}
    diff = diff_decisions(before, before, records(before, {}), records(before, {"e1": "review"}))
    assert diff.moved == [] and diff.changed == ["e1"]


def test_accuracy_counts_only_the_labelled_events():
    before = {"e1": "p1", "e2": "p1", "x": "p1"}
    after = {"e1": "p1", "e2": "p2", "x": "p1"}
    diff = diff_decisions(before, after, records(before, {}), records(after, {}), {"e1": "a", "e2": "a"})
    assert diff.accuracy["baseline"]["precision"] == 1.0 and diff.accuracy["baseline"]["recall"] == 1.0
    assert diff.accuracy["candidate"]["recall"] == 0.0


def test_a_decision_counts_its_protection_rules_and_its_best_candidates_field_levels_only():
    best = {"fields": [{"field": "name", "level": "exact"}, {"field": "city", "level": "other"}]}
    second = {"fields": [{"field": "name", "level": "close"}]}
    kept = {**record("e1", "review", "p1"), "evidence": {"candidates": [best, second]},
            "protections": [{"kind": "generic_value"}, {"kind": "kept_apart"}]}
    diff = diff_decisions({"e1": "p1"}, {"e1": "q1"}, {"e1": DecisionSummary.of(kept)},  # type: ignore[arg-type]
                          records({"e1": "q1"}, {}))
    assert diff.baseline.rules == {"generic_value": 1, "kept_apart": 1}
    assert diff.baseline.field_levels == {"city:other": 1, "name:exact": 1}
    assert diff.candidate.as_dict() == {"actions": {"create": 1}, "rules": {}, "field_levels": {}}
