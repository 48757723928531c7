"""What a candidate rule set would change: two resolutions of the same events compared. Pure.

Both sides are given as event id → profile id (the stores' assignments) and event id → decision
summary. Profile ids differ between two stores, so profiles are compared by their members:
a candidate profile holding events of several baseline profiles is a merge, a baseline profile
whose events land in several candidate profiles is a split, and one whose events form exactly
one candidate profile stays.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from identity.model import DecisionRecord
from identity.pairwise import pairwise_scores, true_links


@dataclass(frozen=True, slots=True)
class SideCounts:
    """One version's decisions counted by action, by protection rule and by (field, level) of its best candidate."""

    actions: dict[str, int]
    rules: dict[str, int]
    field_levels: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"actions": self.actions, "rules": self.rules, "field_levels": self.field_levels}


@dataclass(frozen=True, slots=True)
class DecisionDiff:
    events: int
    #: Candidate profiles formed from several baseline profiles: each as the baseline ids it joins.
    merges: list[list[str]]
    #: Baseline profiles whose events several candidate profiles share.
    splits: list[str]
    stays: int
    #: Events whose fellow members differ between the versions.
    moved: list[str]
    #: Events decided differently (another action, or moved), in the baseline's order.
    changed: list[str]
    baseline: SideCounts
    candidate: SideCounts
    #: Pairwise precision / recall / F1 of each version, where the events carry labels.
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "profiles": {"merge": len(self.merges), "split": len(self.splits),
                                                    "stay": self.stays},
                "merges": self.merges, "splits": self.splits, "moved_events": len(self.moved), "moved": self.moved,
                "changed_decisions": len(self.changed), "changed": self.changed,
                "baseline": self.baseline.as_dict(), "candidate": self.candidate.as_dict(), "accuracy": self.accuracy}


def _members(assignments: Mapping[str, str]) -> dict[str, frozenset[str]]:
    clusters: dict[str, set[str]] = {}
    for event_id, profile_id in assignments.items():
        clusters.setdefault(profile_id, set()).add(event_id)
    return {profile_id: frozenset(events) for profile_id, events in clusters.items()}


@dataclass(frozen=True, slots=True)
class DecisionSummary:
    """What the diff keeps of one decision: its action, the protection rules it met and the
    (field, level)s of its best candidate. A whole record (its evidence) is kilobytes, and a
    sandbox's diff holds one per event on both sides."""

    action: str
    rules: tuple[str, ...]
    levels: tuple[str, ...]

    @classmethod
    def of(cls, record: DecisionRecord) -> "DecisionSummary":
        candidates = record.get("evidence", {}).get("candidates", [])
        # The best candidate's fields are what the decision rested on.
        levels = tuple(f"{f['field']}:{f['level']}" for f in candidates[0]["fields"]) if candidates else ()
        return cls(record["action"], tuple(p["kind"] for p in record.get("protections", [])), levels)


def count_decisions(summaries: Iterable[DecisionSummary]) -> SideCounts:
    actions: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    for summary in summaries:
        actions[summary.action] += 1
        rules.update(summary.rules)
        levels.update(summary.levels)
    return SideCounts(dict(sorted(actions.items())), dict(sorted(rules.items())), dict(sorted(levels.items())))


def diff_decisions(baseline: Mapping[str, str], candidate: Mapping[str, str],
                   baseline_decisions: Mapping[str, DecisionSummary], candidate_decisions: Mapping[str, DecisionSummary],
                   labels: Mapping[str, str] | None = None) -> DecisionDiff:
    """Compare the versions over the events both resolved (an event only one side holds is left out)."""
    events = [e for e in baseline if e in candidate]
    shared = set(events)
    before = _members({e: baseline[e] for e in events})
    after = _members({e: candidate[e] for e in events})
    merges = sorted(sorted({baseline[e] for e in members}) for members in after.values()
                    if len({baseline[e] for e in members}) > 1)
    splits = sorted(p for p, members in before.items() if len({candidate[e] for e in members}) > 1)
    stays = sum(1 for members in before.values() if after[candidate[next(iter(members))]] == members)
    moved = [e for e in events if before[baseline[e]] != after[candidate[e]]]
    moved_set = set(moved)
    changed = [e for e in events if e in moved_set or _action(baseline_decisions, e) != _action(candidate_decisions, e)]
    accuracy: dict[str, dict[str, float]] = {}
    labelled = [e for e in events if e in (labels or {})]
    if labels and labelled:  # scored over the labelled events only: the others' truth is unknown
        links = true_links({e: labels[e] for e in labelled})
        accuracy = {"baseline": pairwise_scores({e: baseline[e] for e in labelled}, links),
                    "candidate": pairwise_scores({e: candidate[e] for e in labelled}, links)}
    return DecisionDiff(len(events), merges, splits, stays, moved, changed,
                        count_decisions(d for e, d in baseline_decisions.items() if e in shared),
                        count_decisions(d for e, d in candidate_decisions.items() if e in shared), accuracy)


def _action(decisions: Mapping[str, DecisionSummary], event_id: str) -> str | None:
    decision = decisions.get(event_id)
    return None if decision is None else decision.action
