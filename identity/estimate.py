"""Learning m, u and the prior from unlabelled events (Fellegi–Sunter, as Splink does it).

- ``u`` (how often two different customers agree at each level) is counted on random pairs:
  nearly all random pairs are different customers, so no labels are needed.
- ``m`` (how often one customer's records agree) comes from expectation–maximisation over
  the pairs each blocking rule finds, with ``u`` held fixed. A rule's own fields agree on all
  its pairs by construction, so they are left out of that rule's pass and learned from the
  others; each comparison's ``m`` is the mean over the passes that could learn it. A pass that
  leaves a single comparison to learn teaches nothing (see :data:`MIN_ACTIVE`).
- The prior is the share of matching pairs among all pairs of the sample: the matches expected
  among the pairs any rule finds, each judged on every field under that prior, over the number
  of pairs (a fixed point, started from the most matches any one pass finds).

Pairs are reduced to their comparison pattern first, so EM runs over a few hundred distinct
patterns rather than every pair. The result is a new rule set whose version names its content
hash, so every decision made under it says which model made it.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Iterable, Sequence

import numpy

from identity.compare import comparator_levels, compared_key
from identity.features import Features, blocking_keys, blocking_rule_id
from identity.rules import Comparison, Rules

#: Probabilities are kept inside this margin so no level gets an infinite weight.
_EPSILON = 1e-6
#: No level's m goes below this: a slip no sample showed (a nickname, a married name) should
#: cost a match some bits, not rule it out for ever.
_M_FLOOR = 1e-3
#: Records sharing a blocking key beyond this many are skipped, as the engine caps candidates too.
_MAX_BLOCK = 50
#: Random pairs counted for ``u``. At 30,000 every perf.accuracy F1 stayed within 0.0006 of
#: 100,000's (four sets higher, mentions lower); compared in bulk (:class:`_Patterns`), they take
#: 0.1-0.5 CPU-seconds per fit here.
RANDOM_PAIRS = 30_000
#: Comparisons a blocking rule's pass must leave to learn before it learns any. With one, the
#: mixture is not identified: any split of its levels between matches and non-matches fits the
#: pairs as well, and EM settles on calling the commonest level the match. Blocked on a full
#: name, the one comparison left was the workplace, and EM learned that one person's records
#: never name two employers (m 0.002 against ~0.26 in the data): every mention after a move
#: counted 9 bits against its person.
MIN_ACTIVE = 2

Pattern = tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class Estimate:
    rules: Rules
    pairs: int
    patterns: int
    iterations: int
    match_share: float


def _rule_blocks(keys: Iterable[Sequence[str]], rules: Rules) -> list[set[tuple[int, int]]]:
    """For each blocking rule, the pairs of samples it makes candidates of (``keys``: each sample's blocking keys)."""
    blocks: dict[str, list[int]] = {}
    for index, held in enumerate(keys):
        for key in held:
            blocks.setdefault(key, []).append(index)
    per_rule: list[set[tuple[int, int]]] = [set() for _ in rules.blocking]
    position = {blocking_rule_id(rule): index for index, rule in enumerate(rules.blocking)}
    for key, members in blocks.items():
        if 1 < len(members) <= _MAX_BLOCK:
            per_rule[position[key.partition(":")[0]]].update(combinations(members, 2))
    return per_rule


class _Patterns:
    """The comparison patterns of pairs of ``records``, a comparison at a time over all pairs.

    Each comparison's values are numbered, so a pair is two numbers and the distinct value pairs
    are found by numpy: a sample repeats its common names, cities and employers thousands of
    times, and each distinct pair is compared once (:func:`identity.compare.comparator_levels`,
    all in one call). A fit compares tens of thousands of pairs; one Python call per pair and
    comparison was most of what it cost.
    """

    def __init__(self, records: Sequence[Features], rules: Rules) -> None:
        self._rules = rules
        #: Per comparison: each record's value number (-1: the record lacks the field), the
        #: values by number, and which records hold every field it gives way to (``when_missing``:
        #: a pair of two such records skips it).
        self._codes: list[numpy.ndarray] = []
        self._values: list[list[Any]] = []
        self._covered: list[numpy.ndarray] = []
        for c in rules.comparisons:
            numbers: dict[Any, int] = {}
            values: list[Any] = []
            codes = numpy.full(len(records), -1, dtype=numpy.int64)
            for r, features in enumerate(records):
                if c.field in features:
                    value = features[c.field]
                    codes[r] = number = numbers.setdefault(compared_key(value), len(values))
                    if number == len(values):
                        values.append(value)
            self._codes.append(codes)
            self._values.append(values)
            self._covered.append(numpy.array([bool(c.when_missing) and all(w in f for w in c.when_missing)
                                              for f in records], dtype=bool))

    def of(self, a: numpy.ndarray, b: numpy.ndarray) -> numpy.ndarray:
        """The pattern of each pair ``a[k]``, ``b[k]``: one row per pair, one column per comparison,
        holding the level's index, or -1 where the comparison takes no part."""
        rules = self._rules
        patterns = numpy.full((len(a), len(rules.comparisons)), -1, dtype=numpy.int16)
        for i, c in enumerate(rules.comparisons):
            codes, covered, values = self._codes[i], self._covered[i], self._values[i]
            left, right = codes[a], codes[b]
            taking = (left >= 0) & (right >= 0) & ~(covered[a] & covered[b])
            if not taking.any():
                continue
            distinct, inverse = numpy.unique(left[taking] * len(values) + right[taking], return_inverse=True)
            levels = comparator_levels(c, [values[v] for v in (distinct // len(values)).tolist()],
                                       [values[v] for v in (distinct % len(values)).tolist()], rules)
            index = {name: position for position, name in enumerate(c.level_names)}
            patterns[taking, i] = numpy.array([index[level] for level in levels], dtype=numpy.int16)[inverse]
        return patterns


def _counted(patterns: numpy.ndarray) -> Counter[Pattern]:
    """How many pairs have each pattern (-1 read as None: the comparison took no part)."""
    base = int(patterns.max(initial=-1)) + 2
    if base ** patterns.shape[1] < 2 ** 62:
        # Each row read as one number, a digit per comparison: numpy finds the distinct numbers
        # of a column many times faster than the distinct rows of a table.
        digits = (patterns.astype(numpy.int64) + 1) * base ** numpy.arange(patterns.shape[1], dtype=numpy.int64)
        _, first, counts = numpy.unique(digits.sum(axis=1), return_index=True, return_counts=True)
        rows = patterns[first]
    else:
        rows, counts = numpy.unique(patterns, axis=0, return_counts=True)
    return Counter({tuple(None if level < 0 else level for level in row): count
                    for row, count in zip(rows.tolist(), counts.tolist())})


def _clamp(p: float) -> float:
    return min(1 - _EPSILON, max(_EPSILON, p))


def _figures(p: float) -> float:
    """Six significant figures: enough for any weight, and a short rule file."""
    return float(f"{p:.6g}")


def _normalise(row: list[float]) -> list[float]:
    total = sum(row)
    return [_clamp(x / total) for x in row]


def _distinct_pairs(rng: random.Random, n: int, count: int) -> list[tuple[int, int]]:
    """``count`` pairs of two different indexes below ``n``: those ``rng.sample(range(n), 2)``
    draws for any sample of over 21 records, at a third of its cost (30,000 pairs a fit)."""
    draw = rng.randrange
    drawn = []
    for _ in range(count):
        i, j = draw(n), draw(n)
        while j == i:
            j = draw(n)
        drawn.append((i, j))
    return drawn


def _random_u(samples: Sequence[Features], rules: Rules, pairs: int, seed: int,
              pattern: _Patterns) -> list[list[float] | None]:
    """u per comparison level, counted on random pairs (one count added to every level);
    None for a comparison the sample never lets two records take part in."""
    n = len(samples)
    drawn = numpy.array(_distinct_pairs(random.Random(seed), n, min(pairs, n * (n - 1) // 2)), dtype=numpy.int64)
    patterns = (pattern.of(drawn[:, 0], drawn[:, 1]) if len(drawn)
                else numpy.empty((0, len(rules.comparisons)), dtype=numpy.int16))
    rows: list[list[float] | None] = []
    for c, column in zip(rules.comparisons, patterns.T):
        taken = column[column >= 0]
        found = numpy.bincount(taken, minlength=len(c.level_names)).tolist()
        rows.append(_normalise([1.0 + x for x in found]) if len(taken) else None)
    return rows


def _without_matches(u: list[float], m: list[float], prior: float) -> list[float]:
    """u with the random pairs that were matches taken out: in a small sample they are many
    enough to make an exact birth date look ten times commoner than it is."""
    return _normalise([max(_EPSILON, (ui - prior * mi) / (1 - prior)) for ui, mi in zip(u, m)])


def _learns_from(rule: tuple[str, ...], comparison: Comparison, rules: Rules) -> bool:
    """Whether a blocking rule's pairs say anything about ``comparison``. They do not about the
    rule's own fields, nor about the parts of one (blocking on a full name fixes given and family)."""
    fields = {name.partition(".")[0] for name in rule}
    fields |= {part for c in rules.comparisons if c.field in fields for part in c.when_missing}
    return comparison.field not in fields and not fields & set(comparison.when_missing)


def _em_pass(patterns: Counter[Pattern], m: list[list[float]], u: list[list[float]], active: list[bool],
             iterations: int, tolerance: float) -> tuple[list[list[float]], float, int]:
    """EM with ``u`` fixed over one rule's patterns; returns m, the match share and the iterations run."""
    share, done = 0.1, 0
    total = sum(patterns.values())
    for done in range(1, iterations + 1):
        counts = [[0.0] * len(row) for row in m]
        matched = 0.0
        for pattern, count in patterns.items():
            log_m, log_u = math.log(share), math.log(1 - share)
            for i, level in enumerate(pattern):
                if level is not None and active[i]:
                    log_m += math.log(m[i][level])
                    log_u += math.log(u[i][level])
            g = 1 / (1 + math.exp(min(700.0, log_u - log_m)))
            matched += g * count
            for i, level in enumerate(pattern):
                if level is not None:
                    counts[i][level] += g * count
        m = [_floored(row) if active[i] else m[i] for i, row in enumerate(counts)]
        new_share = _clamp(matched / total)
        converged = abs(new_share - share) < tolerance
        share = new_share
        if converged:
            break
    return m, share, done


def _floored(row: list[float]) -> list[float]:
    total = sum(row)
    return _normalise([max(_M_FLOOR, x / total) for x in row])


def _prior(patterns: Counter[Pattern], m: list[list[float]], u: list[list[float]], start: float, all_pairs: float,
           iterations: int, tolerance: float) -> float:
    """The share of matches among all pairs: the expected matches among the pairs any rule finds
    (each judged on every field, under the global prior), over all pairs, iterated to a fixed
    point. One pass alone misses the matches only other rules find, and undercounted the prior
    by a quarter on namesake-heavy data, which cost recall."""
    log_ratio = {p: sum(math.log(m[i][level] / u[i][level]) for i, level in enumerate(p) if level is not None)
                 for p in patterns}
    prior = start
    for _ in range(iterations):
        odds = math.log(prior / (1 - prior))
        matched = sum(count / (1 + math.exp(min(700.0, -odds - log_ratio[p]))) for p, count in patterns.items())
        updated = _clamp(max(matched, 1.0) / all_pairs)
        if abs(updated - prior) < tolerance * prior:
            return updated
        prior = updated
    return prior


def estimate(samples: Iterable[Features], rules: Rules, *, keys: Sequence[Sequence[str]] | None = None,
             iterations: int = 50, tolerance: float = 1e-6, random_pairs: int = RANDOM_PAIRS, seed: int = 0) -> Estimate:
    """A copy of ``rules`` with m, u and the prior learned from ``samples`` (the features of events);
    ``keys``, when known, are each sample's blocking keys under ``rules`` (else worked out here)."""
    records = list(samples)
    if keys is not None and len(keys) != len(records):
        raise ValueError(f"{len(keys)} sets of blocking keys for {len(records)} samples")
    per_rule = _rule_blocks([blocking_keys(f, rules) for f in records] if keys is None else keys, rules)
    if not any(per_rule):
        raise ValueError("the sample yields no candidate pairs under the blocking rules; nothing to estimate from")
    pattern = _Patterns(records, rules)
    cold_u = [[c.levels[level][1] for level in c.level_names] for c in rules.comparisons]
    u = [row or cold_u[i] for i, row in enumerate(_random_u(records, rules, random_pairs, seed, pattern))]
    start = [[c.levels[level][0] for level in c.level_names] for c in rules.comparisons]
    learned: list[list[list[float]]] = [[] for _ in rules.comparisons]
    matches, done, distinct = 0.0, 0, 0
    union = sorted(set().union(*per_rule))  # a pair several rules find, compared once
    ends = numpy.array(union, dtype=numpy.int64).reshape(-1, 2)
    of_union = pattern.of(ends[:, 0], ends[:, 1])
    position = {pair: k for k, pair in enumerate(union)}
    for rule, pairs in zip(rules.blocking, per_rule):
        if not pairs:
            continue
        patterns = _counted(of_union[[position[pair] for pair in pairs]])
        distinct += len(patterns)
        observed = {i for p in patterns for i, level in enumerate(p) if level is not None}
        active = [_learns_from(rule, c, rules) and i in observed for i, c in enumerate(rules.comparisons)]
        if sum(active) < MIN_ACTIVE:
            continue
        m, share, runs = _em_pass(patterns, start, u, active, iterations, tolerance)
        done += runs
        matches = max(matches, share * len(pairs))
        for i, on in enumerate(active):
            if on:
                learned[i].append(m[i])
    m = [[sum(col) / len(col) for col in zip(*rows)] if rows else start[i] for i, rows in enumerate(learned)]
    all_pairs = len(records) * (len(records) - 1) / 2
    prior = _prior(_counted(of_union), m, u, _clamp(max(matches, 1.0) / all_pairs), all_pairs, iterations, tolerance)
    u = [_without_matches(u_row, m_row, prior) if learned[i] else u_row for i, (u_row, m_row) in enumerate(zip(u, m))]
    comparisons = [
        {**c.model_dump(), "levels": {level: (_figures(m[i][j]), _figures(u[i][j])) for j, level in enumerate(c.level_names)}}
        for i, c in enumerate(rules.comparisons)
    ]
    updated = rules.model_copy(update=dict(comparisons=comparisons, prior=_figures(prior)))
    return Estimate(updated, sum(len(p) for p in per_rule), distinct, done, prior)
