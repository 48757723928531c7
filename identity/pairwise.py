"""Pairwise precision, recall and F1 of a clustering against true links: the accuracy measure
shared by the benchmarks (perf/accuracy.py) and sandbox diffs (labelled data)."""

from __future__ import annotations

from itertools import combinations
from typing import Mapping


def true_links(labels: Mapping[str, str]) -> set[frozenset[str]]:
    """Every pair of events carrying the same label (an entity or cluster id)."""
    entities: dict[str, list[str]] = {}
    for event_id, label in labels.items():
        entities.setdefault(label, []).append(event_id)
    return {frozenset(p) for members in entities.values() for p in combinations(sorted(members), 2)}


def pairwise_scores(assignments: Mapping[str, str], links: set[frozenset[str]]) -> dict[str, float]:
    """Scores of ``assignments`` (event id → profile id) against ``links`` (pairs that belong together)."""
    clusters: dict[str, list[str]] = {}
    for event_id, profile_id in assignments.items():
        clusters.setdefault(profile_id, []).append(event_id)
    predicted = {frozenset(p) for members in clusters.values() for p in combinations(sorted(members), 2)}
    tp = len(predicted & links)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(links) if links else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": len(links),
            "predicted_pairs": len(predicted), "true_positives": tp}
