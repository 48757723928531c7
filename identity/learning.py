"""Learning the model from the stream itself, without labels, as the data grows.

A fixed model tuned on one data set is wrong on the next: how often two records of one
customer agree on a birth date, or two strangers on a surname, is a property of the data. The
learner keeps a uniform sample of the events it has seen (reservoir sampling, so the sample
stays a fair picture of the whole stream whatever its length) and fits m, u and the prior on it
by EM (:func:`identity.estimate.estimate`): first once ``warmup`` events have been seen, then
each time the number seen doubles. Fits grow rarer as the stream grows, so their cost per event
falls, and each one is a new model version (``<base>+em<seen>``) that every later decision names.

Pure: the caller decides when to switch its resolver to a new model (at a batch boundary).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from identity.estimate import estimate
from identity.features import Features, blocking_keys
from identity.rules import Rules

#: Events seen before the first fit: enough for EM to find pairs under most blocking rules.
DEFAULT_WARMUP = 1_000
#: Largest sample a fit runs on; past this the estimates no longer move, only the cost does.
DEFAULT_SAMPLE = 20_000
#: Matching pairs EM must find in the sample before its m and prior are trusted. A stream that
#: opens with one source of distinct customers (a CRM export before the web forms that repeat
#: them) holds almost no duplicates yet; a model fitted there has learned nothing about what a
#: duplicate looks like and would miss the ones that follow, where the cold-start model would not.
DEFAULT_MIN_MATCHES = 50


@dataclass(frozen=True, slots=True)
class Fit:
    """One model the learner produced: the rule set and what it was learned from."""

    rules: Rules
    seen: int
    sample: int
    pairs: int
    match_share: float


class StreamLearner:
    def __init__(self, base: Rules, *, warmup: int = DEFAULT_WARMUP, sample_size: int = DEFAULT_SAMPLE,
                 min_matches: int = DEFAULT_MIN_MATCHES, seed: int = 0) -> None:
        if warmup < 2 or sample_size < warmup:
            raise ValueError(f"warmup must be at least 2 and at most sample_size; got {warmup} and {sample_size}")
        self._base = base
        self._sample_size = sample_size
        self._min_matches = min_matches
        self._random = random.Random(seed)
        self._sample: list[Features] = []
        #: Each sampled event's blocking keys, beside its features: every fit blocks the sample.
        self._keys: list[tuple[str, ...]] = []
        self._seen = 0
        self._next_fit = warmup

    @property
    def sample_size(self) -> int:
        return self._sample_size

    @property
    def seen(self) -> int:
        return self._seen

    @property
    def due(self) -> bool:
        """Whether enough new events arrived since the last fit to fit again."""
        return self._seen >= self._next_fit

    def observe(self, features: Features, keys: tuple[str, ...] | None = None) -> None:
        """One more event seen; ``keys`` are its blocking keys under the base rules' blocking
        (a prepared event's), worked out here when not given."""
        self._seen += 1
        if len(self._sample) < self._sample_size:
            slot = len(self._sample)
            self._sample.append(features)
            self._keys.append(())
        else:
            slot = self._random.randrange(self._seen)  # each event seen stays in the sample with equal odds
            if slot >= self._sample_size:
                return
        self._sample[slot] = features
        self._keys[slot] = blocking_keys(features, self._base) if keys is None else keys

    def fit(self) -> Fit | None:
        """A model learned from the sample, or None when the sample shows too few duplicates to
        learn from (then the current model stays, and the next fit is tried at twice as many events)."""
        self._next_fit = max(2 * self._seen, self._next_fit + 1)
        try:
            result = estimate(self._sample, self._base, keys=self._keys)
        except ValueError:
            return None
        size = len(self._sample)
        if result.match_share * size * (size - 1) / 2 < self._min_matches:
            return None
        rules = result.rules.model_copy(update=dict(version=f"{self._base.version}+em{self._seen}"))
        return Fit(rules, self._seen, len(self._sample), result.pairs, result.match_share)
