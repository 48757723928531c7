"""Field comparators and Fellegi–Sunter scoring of one event against one earlier record.

Each comparator maps a pair of feature values to a named level; the rule set gives each
level a log2(m/u) weight. A pair's match weight is the prior's log-odds plus the sum of
its level weights, and its probability follows from that, so every score decomposes into
per-field evidence that a person can read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler
from rapidfuzz.fuzz import token_sort_ratio

from identity.features import Features
from identity.rules import Comparison, Rules


def _name_level(a: dict[str, str], b: dict[str, str]) -> str:
    if a["text"] == b["text"]:
        return "exact"
    if a["tokens"] == b["tokens"]:
        return "romanised"
    similarity = max(JaroWinkler.similarity(a["latin"], b["latin"]), JaroWinkler.similarity(a["tokens"], b["tokens"]))
    if similarity >= 0.92:
        return "close"
    return "similar" if similarity >= 0.80 else "other"


def _date_level(a: str, b: str) -> str:
    if a == b:
        return "exact"
    da, db = a.replace("-", ""), b.replace("-", "")
    # Month and day swapped is the commonest form-filling mistake after a single typo.
    swapped = len(da) == 8 and len(db) == 8 and da[:4] == db[:4] and da[4:6] == db[6:8] and da[6:8] == db[4:6]
    if swapped or DamerauLevenshtein.distance(da, db) <= 1:
        return "one_edit"
    return "same_year" if da[:4] == db[:4] else "other"


def _text_level(a: str, b: str) -> str:
    if a == b:
        return "exact"
    ratio = token_sort_ratio(a, b)
    if ratio >= 90:
        return "close"
    return "similar" if ratio >= 75 else "other"


def _code_level(a: str, b: str) -> str:
    if a == b:
        return "exact"
    distance = DamerauLevenshtein.distance(a, b, score_cutoff=2)
    if distance <= 1:
        return "one_edit"
    return "two_edits" if distance == 2 else "other"


COMPARATORS: dict[str, Callable[[Any, Any], str]] = {
    "name": _name_level,
    "date": _date_level,
    "text": _text_level,
    "company": _text_level,
    "code": _code_level,
}


@dataclass(frozen=True, slots=True)
class FieldEvidence:
    """One comparison's outcome: its level and that level's weight (log2 m/u)."""

    field: str
    level: str
    weight: float


@dataclass(frozen=True, slots=True)
class PairScore:
    weight: float
    fields: tuple[FieldEvidence, ...]

    @property
    def probability(self) -> float:
        return match_probability(self.weight)


def match_probability(weight: float) -> float:
    """Posterior probability from a total match weight in bits."""
    if weight > 60:
        return 1.0
    if weight < -60:
        return 0.0
    return 1.0 / (1.0 + math.pow(2.0, -weight))


def _applies(comparison: Comparison, a: Features, b: Features) -> bool:
    if comparison.field not in a or comparison.field not in b:
        return False
    return not comparison.when_missing or not all(f in a and f in b for f in comparison.when_missing)


def compare_levels(a: Features, b: Features, rules: Rules) -> list[tuple[Comparison, str]]:
    """The level of every comparison both sides can take part in; missing fields are neutral."""
    return [
        (comparison, COMPARATORS[comparison.kind](a[comparison.field], b[comparison.field]))
        for comparison in rules.comparisons
        if _applies(comparison, a, b)
    ]


def score_pair(a: Features, b: Features, rules: Rules, extra: tuple[FieldEvidence, ...] = ()) -> PairScore:
    """Score two feature sets; ``extra`` carries identifier evidence computed elsewhere."""
    fields = [FieldEvidence(c.field, level, c.weights[level]) for c, level in compare_levels(a, b, rules)]
    fields.extend(extra)
    return PairScore(weight=rules.prior_weight + sum(f.weight for f in fields), fields=tuple(fields))
