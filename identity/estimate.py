"""Estimating m/u probabilities and the prior from a sample by expectation–maximisation.

Candidate pairs come from the same blocking rules the engine uses, so the prior that EM
finds is the one the engine needs: the chance that a blocked candidate is a true match.
Pairs are reduced to their comparison pattern first; EM then runs over a few hundred
distinct patterns instead of every pair.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from typing import Iterable, Sequence

from identity.compare import COMPARATORS
from identity.features import Features, blocking_keys
from identity.rules import LEVELS, Rules

#: Probabilities are kept inside this margin so no level gets an infinite weight.
_EPSILON = 1e-6
#: Records sharing a blocking key beyond this many are skipped, as the engine caps candidates too.
_MAX_BLOCK = 50

Pattern = tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class Estimate:
    rules: Rules
    pairs: int
    patterns: int
    iterations: int
    match_share: float


def candidate_pairs(samples: Sequence[Features], rules: Rules) -> set[tuple[int, int]]:
    blocks: dict[str, list[int]] = {}
    for index, features in enumerate(samples):
        for key in blocking_keys(features, rules):
            blocks.setdefault(key, []).append(index)
    pairs: set[tuple[int, int]] = set()
    for members in blocks.values():
        if len(members) <= _MAX_BLOCK:
            pairs.update(combinations(members, 2))
    return pairs


def _pattern(a: Features, b: Features, rules: Rules) -> Pattern:
    pattern: list[int | None] = []
    for c in rules.comparisons:
        present = c.field in a and c.field in b
        skipped = c.when_missing and all(f in a and f in b for f in c.when_missing)
        if not present or skipped:
            pattern.append(None)
        else:
            pattern.append(LEVELS[c.kind].index(COMPARATORS[c.kind](a[c.field], b[c.field])))
    return tuple(pattern)


def _clamp(p: float) -> float:
    return min(1 - _EPSILON, max(_EPSILON, p))


def _expectation(patterns: Counter[Pattern], m: list[list[float]], u: list[list[float]], prior: float) -> dict[Pattern, float]:
    """Posterior match probability of each pattern under the current parameters."""
    posteriors: dict[Pattern, float] = {}
    for pattern in patterns:
        log_m, log_u = math.log(prior), math.log(1 - prior)
        for i, level in enumerate(pattern):
            if level is not None:
                log_m += math.log(m[i][level])
                log_u += math.log(u[i][level])
        posteriors[pattern] = 1 / (1 + math.exp(log_u - log_m))
    return posteriors


def _maximisation(patterns: Counter[Pattern], posteriors: dict[Pattern, float],
                  width: list[int]) -> tuple[list[list[float]], list[list[float]], float]:
    m = [[_EPSILON] * n for n in width]
    u = [[_EPSILON] * n for n in width]
    for pattern, count in patterns.items():
        g = posteriors[pattern]
        for i, level in enumerate(pattern):
            if level is not None:
                m[i][level] += g * count
                u[i][level] += (1 - g) * count
    def normalise(row: list[float]) -> list[float]:
        return [_clamp(x / sum(row)) for x in row]
    total = sum(patterns.values())
    prior = _clamp(sum(posteriors[p] * c for p, c in patterns.items()) / total)
    return [normalise(r) for r in m], [normalise(r) for r in u], prior


def estimate(samples: Iterable[Features], rules: Rules, *, iterations: int = 100, tolerance: float = 1e-7) -> Estimate:
    """A copy of ``rules`` with m, u and prior re-estimated from ``samples`` (the features of events)."""
    records = list(samples)
    pairs = candidate_pairs(records, rules)
    if not pairs:
        raise ValueError("the sample yields no candidate pairs under the blocking rules; nothing to estimate from")
    patterns = Counter(_pattern(records[a], records[b], rules) for a, b in pairs)
    width = [len(LEVELS[c.kind]) for c in rules.comparisons]
    m = [[c.levels[level][0] for level in LEVELS[c.kind]] for c in rules.comparisons]
    u = [[c.levels[level][1] for level in LEVELS[c.kind]] for c in rules.comparisons]
    prior, done = rules.prior, 0
    for done in range(1, iterations + 1):
        posteriors = _expectation(patterns, m, u, prior)
        m, u, new_prior = _maximisation(patterns, posteriors, width)
        converged = abs(new_prior - prior) < tolerance
        prior = new_prior
        if converged:
            break
    comparisons = [
        {**c.model_dump(), "levels": {level: (round(m[i][j], 6), round(u[i][j], 6)) for j, level in enumerate(LEVELS[c.kind])}}
        for i, c in enumerate(rules.comparisons)
    ]
    updated = rules.with_updates(comparisons=comparisons, prior=round(prior, 6))
    return Estimate(updated, len(pairs), len(patterns), done, prior)
