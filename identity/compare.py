"""Field comparators and Fellegi–Sunter scoring of one event against one earlier record.

Each comparator maps a pair of feature values to a named level; the rule set gives each
level a log2(m/u) weight. A pair's match weight is the prior's log-odds plus the sum of
its level weights, and its probability follows from that, so every score decomposes into
per-field evidence that a person can read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler
from rapidfuzz.fuzz import token_sort_ratio

from identity.features import Features
from identity.rules import Comparison, Rules, SimilarityLevels


def _name_level(a: dict[str, str], b: dict[str, str], at: SimilarityLevels) -> str:
    if a["text"] == b["text"]:
        return "exact"
    if a["tokens"] == b["tokens"]:
        return "romanised"
    similarity = max(JaroWinkler.similarity(a["latin"], b["latin"]), JaroWinkler.similarity(a["tokens"], b["tokens"]))
    if similarity >= at.close:
        return "close"
    return "similar" if similarity >= at.similar else "other"


def _transposed(a: str, b: str) -> bool:
    """Two equal-length strings that differ by one swap of adjacent characters."""
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def _date_level(a: str, b: str) -> str:
    """Dates compared per part (year, month, day), as people mistype them one part at a time.

    ``transposed``: day and month swapped, or two adjacent digits swapped, all else equal (the
    commonest form-filling slips). ``one_part``: one part wrong in any other way. Two or more
    parts different is ``other``: most likely another person.
    """
    if a == b:
        return "exact"
    pa, pb = a.split("-"), b.split("-")
    if len(pa) != 3 or len(pb) != 3:
        return "other"
    if pa[0] == pb[0] and pa[1] == pb[2] and pa[2] == pb[1]:
        return "transposed"
    differing = [i for i in range(3) if pa[i] != pb[i]]
    if len(differing) != 1:
        return "other"
    part = differing[0]
    if len(pa[part]) == len(pb[part]) and _transposed(pa[part], pb[part]):
        return "transposed"
    return "one_part"


def _text_level(a: str, b: str, at: SimilarityLevels) -> str:
    if a == b:
        return "exact"
    ratio = token_sort_ratio(a, b) / 100
    if ratio >= at.close:
        return "close"
    return "similar" if ratio >= at.similar else "other"


def _code_level(a: str, b: str) -> str:
    if a == b:
        return "exact"
    distance = DamerauLevenshtein.distance(a, b, score_cutoff=2)
    if distance <= 1:
        return "one_edit"
    return "two_edits" if distance == 2 else "other"


def comparator_level(comparison: Comparison, a: Any, b: Any, rules: Rules) -> str:
    """The level ``comparison`` weighs the pair ``a``, ``b`` at, under the rule set's thresholds."""
    kind = comparison.kind
    if kind == "name":
        level = _name_level(a, b, rules.comparators.name)
    elif kind == "date":
        level = _date_level(a, b)
    elif kind == "code":
        level = _code_level(a, b)
    else:
        level = _text_level(a, b, rules.comparators.company if kind == "company" else rules.comparators.text)
    return comparison.fold[level]


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
        (comparison, comparator_level(comparison, a[comparison.field], b[comparison.field], rules))
        for comparison in rules.comparisons
        if _applies(comparison, a, b)
    ]


def score_pair(a: Features, b: Features, rules: Rules, extra: tuple[FieldEvidence, ...] = ()) -> PairScore:
    """Score two feature sets; ``extra`` carries identifier evidence computed elsewhere."""
    fields = [FieldEvidence(c.field, level, c.weights[level]) for c, level in compare_levels(a, b, rules)]
    fields.extend(extra)
    return PairScore(weight=rules.prior_weight + sum(f.weight for f in fields), fields=tuple(fields))
