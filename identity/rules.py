"""The resolution rule set: comparisons with their m/u probabilities, blocking, limits, thresholds.

Rules are data, loaded from YAML and validated, so they can be re-estimated (``idgraph estimate``)
and versioned: every decision names the version it was made under.
"""

from __future__ import annotations

import math
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from identity.normalize import NormalizationRules

#: Validates a rule file's ``normalization`` section (lists become frozensets).
_NORMALIZATION = TypeAdapter(NormalizationRules)

ComparatorKind = Literal["name", "date", "text", "company", "code"]

#: The levels each comparator kind can report, strongest first; ``other`` is the catch-all.
LEVELS: dict[str, tuple[str, ...]] = {
    "name": ("exact", "romanised", "close", "similar", "other"),
    "date": ("exact", "one_edit", "same_year", "other"),
    "text": ("exact", "close", "similar", "other"),
    "company": ("exact", "close", "similar", "other"),
    "code": ("exact", "one_edit", "two_edits", "other"),
}


class RulesError(ValueError):
    """A rule file that cannot be used, with the reason."""


class MU(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    m: float = Field(gt=0, lt=1)
    u: float = Field(gt=0, lt=1)

    @property
    def weight(self) -> float:
        return math.log2(self.m / self.u)


class Comparison(BaseModel):
    """How one trait is compared: the comparator kind and the m/u of each of its levels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    kind: ComparatorKind
    levels: dict[str, tuple[float, float]]
    #: Skip this comparison when both sides carry all of these fields (avoids counting a name twice).
    when_missing: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _levels_complete(self) -> "Comparison":
        expected = set(LEVELS[self.kind])
        if set(self.levels) != expected:
            raise ValueError(f"comparison {self.field!r} ({self.kind}) needs levels {sorted(expected)}")
        for level, (m, u) in self.levels.items():
            if not (0 < m < 1 and 0 < u < 1):
                raise ValueError(f"comparison {self.field!r} level {level!r}: m and u must be in (0, 1)")
        return self

    @cached_property
    def weights(self) -> dict[str, float]:
        return {level: math.log2(m / u) for level, (m, u) in self.levels.items()}


class IdentifierRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    limits: dict[str, int] = Field(default_factory=dict)
    generic_after_profiles: int = Field(default=3, ge=1)
    match: MU
    conflict: MU

    def limit(self, type_: str) -> int | None:
        return self.limits.get(type_)


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    link: float = Field(gt=0, le=1)
    review: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "Thresholds":
        if self.review > self.link:
            raise ValueError("thresholds.review must not exceed thresholds.link")
        return self


class Rules(BaseModel):
    """A complete, versioned rule set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    normalization: dict[str, object] = Field(default_factory=dict)
    identifiers: IdentifierRules
    thresholds: Thresholds
    prior: float = Field(gt=0, lt=1)
    candidates_per_key: int = Field(default=40, ge=1, le=10_000)
    blocking: tuple[tuple[str, ...], ...]
    comparisons: tuple[Comparison, ...]

    @cached_property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1 - self.prior))

    @cached_property
    def normalization_rules(self) -> NormalizationRules:
        return _NORMALIZATION.validate_python(self.normalization)

    def with_updates(self, **changes: object) -> "Rules":
        """A copy with some top-level fields replaced, validated again."""
        return Rules.model_validate({**self.model_dump(), **changes})

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        data["comparisons"] = [
            {k: v for k, v in c.items() if k != "when_missing" or v} for c in data["comparisons"]
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
    try:
        return Rules.model_validate(yaml.safe_load(text))
    except (ValidationError, yaml.YAMLError, TypeError) as exc:
        raise RulesError(f"invalid rules in {source}: {exc}") from None
