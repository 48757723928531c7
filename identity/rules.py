"""The resolution rule set: comparisons with their m/u probabilities, blocking, limits, thresholds.

Rules are data, loaded from YAML and validated, so they can be re-estimated (``idgraph estimate``)
and versioned: every decision names the version it was made under.
"""

from __future__ import annotations

import hashlib
import math
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from identity.derived import DerivedModel
from identity.normalize import NormalizationRules

#: Validates a rule file's ``normalization`` section (lists become frozensets).
_NORMALIZATION = TypeAdapter(NormalizationRules)

ComparatorKind = Literal["name", "date", "text", "company", "code"]

#: The levels each comparator kind can report, strongest first; ``other`` is the catch-all.
#: A comparison in the rule file picks the levels it weighs (``exact`` and ``other`` at least);
#: an outcome whose level it left out counts as the next weaker level it kept.
LEVELS: dict[str, tuple[str, ...]] = {
    "name": ("exact", "romanised", "close", "similar", "other"),
    "date": ("exact", "transposed", "one_part", "other"),
    "text": ("exact", "close", "similar", "other"),
    "company": ("exact", "close", "similar", "other"),
    "code": ("exact", "one_edit", "two_edits", "other"),
}

#: Comparator kinds whose ``close`` and ``similar`` levels start at a similarity in (0, 1].
SIMILARITY_KINDS = ("name", "text", "company")


class RulesError(ValueError):
    """A rule file that cannot be used, with the reason."""


class MU(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    m: float = Field(gt=0, lt=1)
    u: float = Field(gt=0, lt=1)

    @property
    def weight(self) -> float:
        return math.log2(self.m / self.u)


class Comparison(DerivedModel):
    """How one trait is compared: the comparator kind and the m/u of each of its levels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    kind: ComparatorKind
    levels: dict[str, tuple[float, float]]
    #: Skip this comparison when both sides carry all of these fields (avoids counting a name twice).
    when_missing: tuple[str, ...] = ()
    #: Weigh an exact agreement by how common the agreed value is among stored profiles (the store
    #: counts each value once per profile; see :func:`identity.compare.term_weights`): a rare name says more than 张伟.
    term_frequency: bool = False
    #: Names only: a name that is the other shortened (a word dropped or cut to its initial, the
    #: first kept) is ``close``, initials alone ``similar`` (:func:`identity.compare._shortened`).
    #: For given names, where a middle name comes and goes; a full name's dropped word may be the family name.
    shortened: bool = False

    @model_validator(mode="after")
    def _levels_known(self) -> "Comparison":
        if self.shortened and self.kind != "name":
            raise ValueError(f"comparison {self.field!r} ({self.kind}): shortened applies to names only")
        known = set(LEVELS[self.kind])
        if not {"exact", "other"} <= set(self.levels) <= known:
            raise ValueError(f"comparison {self.field!r} ({self.kind}) needs levels exact and other, "
                             f"and others only from {sorted(known)}")
        for level, (m, u) in self.levels.items():
            if not (0 < m < 1 and 0 < u < 1):
                raise ValueError(f"comparison {self.field!r} level {level!r}: m and u must be in (0, 1)")
        return self

    @cached_property
    def level_names(self) -> tuple[str, ...]:
        """This comparison's levels, strongest first."""
        return tuple(level for level in LEVELS[self.kind] if level in self.levels)

    @cached_property
    def fold(self) -> dict[str, str]:
        """Each level the comparator can report mapped to the level this comparison weighs it as."""
        mapping: dict[str, str] = {}
        for index, level in enumerate(LEVELS[self.kind]):
            mapping[level] = next(lvl for lvl in LEVELS[self.kind][index:] if lvl in self.levels)
        return mapping

    @cached_property
    def weights(self) -> dict[str, float]:
        return {level: math.log2(m / u) for level, (m, u) in self.levels.items()}


class SimilarityLevels(BaseModel):
    """Where the ``close`` and ``similar`` levels of a similarity comparator begin."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    close: float = Field(gt=0, le=1)
    similar: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "SimilarityLevels":
        if self.similar > self.close:
            raise ValueError("a comparator's similar threshold must not exceed its close threshold")
        return self


class Comparators(BaseModel):
    """Comparator thresholds: Jaro-Winkler for names, token-sort ratio (as a share) for text."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: SimilarityLevels
    text: SimilarityLevels
    company: SimilarityLevels


class IdentifierRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    limits: dict[str, int] = Field(default_factory=dict)
    generic_after_profiles: int = Field(default=3, ge=1)
    match: MU
    conflict: MU


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    link: float = Field(gt=0, le=1)
    review: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "Thresholds":
        if self.review > self.link:
            raise ValueError("thresholds.review must not exceed thresholds.link")
        return self


class TermFrequency(BaseModel):
    """Bounds of the term-frequency adjustment of exact levels."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: The adjusted u of an exact agreement never goes below this, so a value seen once in a
    #: large store cannot outweigh every other field.
    min_u: float = Field(default=1e-5, gt=0, lt=1)


class Rules(DerivedModel):
    """A complete, versioned rule set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    normalization: dict[str, object] = Field(default_factory=dict)
    identifiers: IdentifierRules
    thresholds: Thresholds
    prior: float = Field(gt=0, lt=1)
    candidates_per_key: int = Field(default=40, ge=1, le=10_000)
    #: Candidates examined per event over all blocking keys, rarest keys first.
    candidates_per_event: int = Field(default=200, ge=1, le=100_000)
    blocking: tuple[tuple[str, ...], ...]
    #: Fields on which one of a profile's records disagreeing outright (level ``other``) with an
    #: event, while scoring below review, keeps the event from linking to that profile.
    contradicting_fields: tuple[str, ...] = ()
    comparators: Comparators
    comparisons: tuple[Comparison, ...]
    term_frequency: TermFrequency = TermFrequency()

    @cached_property
    def term_frequency_fields(self) -> tuple[str, ...]:
        """Fields whose exact level is weighed by the agreed value's frequency."""
        return tuple(c.field for c in self.comparisons if c.term_frequency)

    @cached_property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1 - self.prior))

    @cached_property
    def normalization_rules(self) -> NormalizationRules:
        return _NORMALIZATION.validate_python(self.normalization)

    @cached_property
    def fingerprint(self) -> str:
        """A hash of everything that decides an outcome (all but the version name)."""
        content = self.model_dump(mode="json", exclude={"version"})
        return hashlib.blake2b(yaml.safe_dump(content, sort_keys=True).encode(), digest_size=6).hexdigest()

    @cached_property
    def model_version(self) -> str:
        """What every decision names: the version plus the content hash, so changing any level,
        threshold or probability changes it even if the version line was left alone."""
        return f"{self.version}@{self.fingerprint}"

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        data["comparisons"] = [
            {k: v for k, v in c.items() if k not in ("when_missing", "term_frequency", "shortened") or v} for c in data["comparisons"]
        ]
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def load_rules(path: str | Path | None = None) -> Rules:
    """Load a rule file (the bundled default when ``path`` is None)."""
    if path is None:
        text = resources.files("identity").joinpath("rules.yaml").read_text(encoding="utf-8")
        source = "bundled rules.yaml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from None
        source = str(path)
    return parse_rules(text, source)


def parse_rules(text: str, source: str) -> Rules:
    """Rules from YAML text (a file's, or a model registered in the store); ``source`` names it in errors."""
    try:
        return Rules.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        # One line, every problem named by where it is: the CLI refuses in one line.
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in exc.errors())
        raise RulesError(f"invalid rules in {source}: {problems}") from None
    except (yaml.YAMLError, TypeError) as exc:
        raise RulesError(f"invalid rules in {source}: {' '.join(str(exc).split())}") from None
