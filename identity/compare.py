"""Field comparators and Fellegi–Sunter scoring of one event against one earlier record.

Each comparator maps a pair of feature values to a named level; the rule set gives each
level a log2(m/u) weight. A pair's match weight is the prior's log-odds plus the sum of
its level weights, and its probability follows from that, so every score decomposes into
per-field evidence that a person can read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler
from rapidfuzz.fuzz import token_sort_ratio

from identity.features import Features, term_key
from identity.model import TermCounts
from identity.rules import Comparison, Rules, SimilarityLevels


#: One typo in a name this long or longer is ``close`` whatever Jaro-Winkler says: it scores a
#: wrong first letter (Meyer, Neyer: 0.87) far below a wrong last one. Shorter names are left to
#: Jaro-Winkler, where one letter is often another name (Wei, Wen).
_ONE_TYPO_MIN_CHARS = 5


def _name_level(a: dict[str, str], b: dict[str, str], at: SimilarityLevels) -> str:
    if a["text"] == b["text"]:
        return "exact"
    if a["tokens"] == b["tokens"]:
        return "romanised"
    if (min(len(a["latin"]), len(b["latin"])) >= _ONE_TYPO_MIN_CHARS
            and DamerauLevenshtein.distance(a["latin"], b["latin"], score_cutoff=1) <= 1):
        return "close"
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
    """One comparison's outcome: its level and that level's weight (log2 m/u).

    An exact level adjusted for term frequency also carries the agreed value's share of stored
    records (``frequency``) and the level's unadjusted weight (``level_weight``)."""

    field: str
    level: str
    weight: float
    frequency: float | None = None
    level_weight: float | None = None


def term_weights(features: Features, counts: TermCounts, rules: Rules) -> dict[str, FieldEvidence]:
    """The exact level's evidence for each term-frequency field of ``features``, adjusted for how
    common its value is among stored records (Splink's term-frequency adjustment).

    Splink adds log2(u / tf(value)) to the exact level's weight, u being the level's u and tf the
    value's share of records; that u is, for exact agreement, the sum of every value's tf squared.
    Here both come from the same counts, and the level's (learned) u is scaled by their ratio:
    u_value = u * tf(value) / sum(tf^2), weight = log2(m / max(u_value, min_u)). A value of average
    commonness keeps the learned weight; a store whose values are all distinct adjusts nothing,
    so a young store is not misled by its first few records. The record it agrees with carries
    the value, so a count of 0 (a record stored before counting began) counts as 1. Agreeing is
    never evidence against: u_value stays at most m.
    """
    adjusted: dict[str, FieldEvidence] = {}
    for comparison in rules.comparisons:
        if not comparison.term_frequency or comparison.field not in features:
            continue
        count = counts.values.get(term_key(comparison.field, features[comparison.field]))
        totals = counts.fields.get(comparison.field)
        if count is None or totals is None or totals.records <= 0 or totals.squares <= 0:
            continue
        count = max(count, 1)
        m, u = comparison.levels["exact"]
        u_value = min(m, max(u * count * totals.records / totals.squares, rules.term_frequency.min_u))
        adjusted[comparison.field] = FieldEvidence(comparison.field, "exact", math.log2(m / u_value),
                                                   frequency=count / totals.records,
                                                   level_weight=comparison.weights["exact"])
    return adjusted


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


_NO_TERMS: Mapping[str, FieldEvidence] = {}


class EventScorer:
    """One side of many pairs, worked out once: an event is scored against every candidate
    record, and which comparisons its features take part in does not change between them."""

    __slots__ = ("_rules", "_terms", "_sides")

    def __init__(self, features: Features, rules: Rules, terms: Mapping[str, FieldEvidence] = _NO_TERMS) -> None:
        self._rules = rules
        self._terms = terms
        #: (comparison, the event's value, whether it applies whatever the other side holds).
        #: A comparison with ``when_missing`` stands in for finer ones, so it is skipped only
        #: when both sides hold every one of them.
        self._sides = [
            (c, features[c.field], not c.when_missing or not all(f in features for f in c.when_missing))
            for c in rules.comparisons if c.field in features
        ]

    def levels(self, other: Features) -> list[tuple[Comparison, str]]:
        """The level of every comparison both sides can take part in; missing fields are neutral."""
        rules = self._rules
        return [
            (c, comparator_level(c, value, other[c.field], rules))
            for c, value, always in self._sides
            if c.field in other and (always or not all(f in other for f in c.when_missing))
        ]

    def score(self, other: Features, extra: tuple[FieldEvidence, ...] = ()) -> PairScore:
        """The pair's score; ``extra`` carries identifier evidence computed elsewhere."""
        terms = self._terms
        fields = [terms[c.field] if level == "exact" and c.field in terms else FieldEvidence(c.field, level, c.weights[level])
                  for c, level in self.levels(other)]
        fields.extend(extra)
        return PairScore(weight=self._rules.prior_weight + sum(f.weight for f in fields), fields=tuple(fields))


def score_pair(a: Features, b: Features, rules: Rules, extra: tuple[FieldEvidence, ...] = (),
               terms: Mapping[str, FieldEvidence] = _NO_TERMS) -> PairScore:
    """Score two feature sets; ``extra`` carries identifier evidence computed elsewhere, ``terms``
    the exact levels of ``a``'s values adjusted for their frequency (:func:`term_weights`)."""
    return EventScorer(a, rules, terms).score(b, extra)
