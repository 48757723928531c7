"""Field comparators and Fellegi–Sunter scoring of one event against its candidate records.

Each comparator maps a pair of feature values to a named level; the rule set gives each
level a log2(m/u) weight. A pair's match weight is the prior's log-odds plus the sum of
its level weights, and its probability follows from that, so every score decomposes into
per-field evidence that a person can read. Pairs are compared one at a time when an event is
scored (:class:`EventScorer`: a handful of candidates, each value once) and many at once when a
model is learned (:func:`comparator_levels`: tens of thousands of pairs per fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler
from rapidfuzz.fuzz import token_sort_ratio
from rapidfuzz.process import cpdist

from identity.features import Features, term_key
from identity.model import TermCounts
from identity.rules import Comparison, Rules, SimilarityLevels


#: One typo in a name this long or longer is ``close`` whatever Jaro-Winkler says: it scores a
#: wrong first letter (Meyer, Neyer: 0.87) far below a wrong last one. Shorter names are left to
#: Jaro-Winkler, where one letter is often another name (Wei, Wen).
_ONE_TYPO_MIN_CHARS = 5


def _name_level(a: dict[str, str], b: dict[str, str], at: SimilarityLevels, shortens: bool) -> str:
    if a["text"] == b["text"]:
        return "exact"
    if a["tokens"] == b["tokens"]:
        return "romanised"
    return _unequal_name_level(
        a, b, at, shortens, lambda: DamerauLevenshtein.distance(a["latin"], b["latin"], score_cutoff=1),
        lambda: max(JaroWinkler.similarity(a["latin"], b["latin"]), JaroWinkler.similarity(a["tokens"], b["tokens"])))


def _unequal_name_level(a: dict[str, str], b: dict[str, str], at: SimilarityLevels, shortens: bool,
                        typos: Callable[[], int], similarity: Callable[[], float]) -> str:
    """The level of two names neither exact nor romanised, in the one order of rules that one pair
    (distances worked out only when needed) and many pairs (distances worked out in bulk) share."""
    shortened = _shortened(a["latin"], b["latin"]) if shortens else None
    if shortened == "close" or _typo_checked(a, b) and typos() <= 1:
        return "close"
    return _at_least(shortened, _similarity_level(similarity(), at))


def _shortened(a: str, b: str) -> str | None:
    """Whether one name is the other shortened, token by token in order from the first: ``close``
    when each token of the shorter is a token of the longer, or an initial of one, and one is
    whole (John A. and John Alan; J. Alan and John Alan), ``similar`` when only initials agree
    (J. and John). For comparisons marked ``shortened`` (given names): records name one person
    with and without a middle name or initial (inventors on patents, customers on forms), which
    Jaro-Winkler rates as different names (John, John Alan: similar). Not for full names, where
    a word dropped may be the family name (John, John Smith)."""
    if " " not in a and " " not in b and len(a) > 1 and len(b) > 1:
        return None  # one whole word each: not a shortening (the common case, decided at once)
    short, long = sorted((a.split(), b.split()), key=len)
    if not _abbreviates(short[0], long[0]):
        return None  # a name goes by its first word: Maria is not Anna Maria
    whole, at = False, 0
    for token in short:
        while at < len(long) and not _abbreviates(token, long[at]):
            at += 1
        if at == len(long):
            return None
        whole = whole or token == long[at]
        at += 1
    return "close" if whole else "similar"


def _abbreviates(x: str, y: str) -> bool:
    return x == y or (len(x) == 1 or len(y) == 1) and x[0] == y[0]


def _at_least(floor: str | None, level: str) -> str:
    return "similar" if floor == "similar" and level == "other" else level


def _typo_checked(a: dict[str, str], b: dict[str, str]) -> bool:
    """Whether the pair is long enough for one typo to make it ``close`` whatever Jaro-Winkler says."""
    return min(len(a["latin"]), len(b["latin"])) >= _ONE_TYPO_MIN_CHARS


def _similarity_level(similarity: float, at: SimilarityLevels) -> str:
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
    year, month, day = pa[0] != pb[0], pa[1] != pb[1], pa[2] != pb[2]
    if year + month + day != 1:
        return "other"
    part = 0 if year else 1 if month else 2
    if len(pa[part]) == len(pb[part]) and _transposed(pa[part], pb[part]):
        return "transposed"
    return "one_part"


def _text_level(a: str, b: str, at: SimilarityLevels) -> str:
    if a == b:
        return "exact"
    return _similarity_level(token_sort_ratio(a, b) / 100, at)


def _code_level(a: str, b: str) -> str:
    if a == b:
        return "exact"
    return _edits_level(DamerauLevenshtein.distance(a, b, score_cutoff=2))


def _edits_level(distance: int) -> str:
    if distance <= 1:
        return "one_edit"
    return "two_edits" if distance == 2 else "other"


def _similarity(comparison: Comparison, rules: Rules) -> SimilarityLevels:
    return rules.comparators.company if comparison.kind == "company" else rules.comparators.text


def comparator_level(comparison: Comparison, a: Any, b: Any, rules: Rules) -> str:
    """The level ``comparison`` weighs the pair ``a``, ``b`` at, under the rule set's thresholds."""
    return _level_against(comparison, a, rules)(b)


def _level_against(comparison: Comparison, mine: Any, rules: Rules) -> Callable[[Any], str]:
    """The level of ``mine`` against any other value of the comparison's field, with the
    comparator and its thresholds chosen once for all the values it meets."""
    fold = comparison.fold
    kind = comparison.kind
    if kind == "name":
        at, shortens = rules.comparators.name, comparison.shortened
        return lambda theirs: fold[_name_level(mine, theirs, at, shortens)]
    if kind == "date":
        return lambda theirs: fold[_date_level(mine, theirs)]
    if kind == "code":
        return lambda theirs: fold[_code_level(mine, theirs)]
    similar = _similarity(comparison, rules)
    return lambda theirs: fold[_text_level(mine, theirs, similar)]


def comparator_levels(comparison: Comparison, left: Sequence[Any], right: Sequence[Any], rules: Rules) -> list[str]:
    """The level of each pair ``left[i]``, ``right[i]``, as :func:`comparator_level` gives it one
    pair at a time, for many pairs at once: rapidfuzz computes the string distances of all
    pairs that need one in a single C loop (``cpdist``). Learning compares tens of thousands of
    random pairs per fit, and one call per pair and distance was most of what a fit cost."""
    kind = comparison.kind
    if kind == "name":
        levels = _name_levels(left, right, rules.comparators.name, comparison.shortened)
    elif kind == "date":
        levels = list(map(_date_level, left, right))
    else:
        levels = ["exact" if a == b else "" for a, b in zip(left, right)]
        rest = [i for i, level in enumerate(levels) if not level]
        pairs = [left[i] for i in rest], [right[i] for i in rest]
        if kind == "code":
            found = [_edits_level(d) for d in _pairwise(DamerauLevenshtein.distance, *pairs, score_cutoff=2)]
        else:
            at = _similarity(comparison, rules)
            found = [_similarity_level(r / 100, at) for r in _pairwise(token_sort_ratio, *pairs)]
        for i, level in zip(rest, found):
            levels[i] = level
    fold = comparison.fold
    return [fold[level] for level in levels]


def _name_levels(left: Sequence[dict[str, str]], right: Sequence[dict[str, str]], at: SimilarityLevels,
                 shortens: bool) -> list[str]:
    levels = ["exact" if a["text"] == b["text"] else "romanised" if a["tokens"] == b["tokens"] else ""
              for a, b in zip(left, right)]
    rest = [i for i, level in enumerate(levels) if not level]
    latin = [left[i]["latin"] for i in rest], [right[i]["latin"] for i in rest]
    tokens = [left[i]["tokens"] for i in rest], [right[i]["tokens"] for i in rest]
    typos = _pairwise(DamerauLevenshtein.distance, *latin, score_cutoff=1)
    similarities = map(max, _pairwise(JaroWinkler.similarity, *latin), _pairwise(JaroWinkler.similarity, *tokens))
    for i, typo, similarity in zip(rest, typos, similarities):
        # Each is called, if at all, before the loop moves on, so binding late reads this pair's.
        levels[i] = _unequal_name_level(left[i], right[i], at, shortens, lambda: typo, lambda: similarity)
    return levels


def _pairwise(scorer: Callable[..., float], left: list[str], right: list[str], **options: Any) -> list[Any]:
    """``scorer(left[i], right[i])`` for every i, in rapidfuzz's C loop (float64: the thresholds
    must see the same figure a single call returns)."""
    if not left:
        return []
    dtype = numpy.int64 if scorer is DamerauLevenshtein.distance else numpy.float64
    result: list[Any] = cpdist(left, right, scorer=scorer, dtype=dtype, **options).tolist()
    return result


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
    common its value is among stored profiles (Splink's term-frequency adjustment, counting
    customers rather than records).

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


class _Side(NamedTuple):
    """One comparison from the event's side (:class:`EventScorer`)."""

    comparison: Comparison
    #: Whether it applies whatever the other side holds. A comparison with ``when_missing``
    #: stands in for finer ones, so it is skipped only when both sides hold every one of them.
    always: bool
    level_of: Callable[[Any], str]
    #: The evidence of each value compared so far, by :func:`compared_key`: an event's candidates
    #: repeat names, cities and employers, each compared once.
    known: dict[Any, FieldEvidence]


class EventScorer:
    """One side of many pairs, worked out once: an event is scored against every candidate
    record, and which comparisons its features take part in, with what comparator, does not
    change between them."""

    __slots__ = ("_prior", "_terms", "_sides")

    def __init__(self, features: Features, rules: Rules, terms: Mapping[str, FieldEvidence] = _NO_TERMS) -> None:
        self._prior = rules.prior_weight
        self._terms = terms
        self._sides = [
            _Side(c, not c.when_missing or not all(f in features for f in c.when_missing),
                  _level_against(c, features[c.field], rules), {})
            for c in rules.comparisons if c.field in features
        ]

    def evidence(self, other: Features) -> list[FieldEvidence]:
        """The evidence of every comparison both sides can take part in; missing fields are neutral."""
        found: list[FieldEvidence] = []
        for c, always, level_of, known in self._sides:
            if c.field in other and (always or not all(f in other for f in c.when_missing)):
                theirs = other[c.field]
                key = compared_key(theirs)
                evidence = known.get(key)
                if evidence is None:
                    evidence = known[key] = self._weighed(c, level_of(theirs))
                found.append(evidence)
        return found

    def _weighed(self, c: Comparison, level: str) -> FieldEvidence:
        if level == "exact" and c.field in self._terms:
            return self._terms[c.field]
        return FieldEvidence(c.field, level, c.weights[level])

    def score(self, other: Features, extra: tuple[FieldEvidence, ...] = ()) -> PairScore:
        """The pair's score; ``extra`` carries identifier evidence computed elsewhere."""
        fields = self.evidence(other)
        fields.extend(extra)
        return PairScore(weight=self._prior + sum(f.weight for f in fields), fields=tuple(fields))


def compared_key(value: Any) -> Any:
    """A feature value as a dictionary key made of what its comparator reads: the value itself,
    or a name's text, Latin and token forms. Equal keys, equal levels against any other value."""
    return value if type(value) is str else (value["text"], value["latin"], value["tokens"])


def score_pair(a: Features, b: Features, rules: Rules, extra: tuple[FieldEvidence, ...] = (),
               terms: Mapping[str, FieldEvidence] = _NO_TERMS) -> PairScore:
    """Score two feature sets; ``extra`` carries identifier evidence computed elsewhere, ``terms``
    the exact levels of ``a``'s values adjusted for their frequency (:func:`term_weights`)."""
    return EventScorer(a, rules, terms).score(b, extra)
