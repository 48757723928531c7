"""Attribute sovereignty: who may set each trait, and which write wins when two disagree.

Scenarios are autonomous, so two of them will sometimes say different things about one
customer: the service scenario's lifetime-value model puts a customer in the ``high`` tier
while a marketing campaign labels them ``bronze``. The policy decides, per trait, whose
word counts; a write that loses is not applied but kept as a recorded conflict.

Scenario names in a policy match an event's ``scenario`` exactly or as a dotted prefix:
``service`` covers ``service.ltv`` and ``service.hotline``. ``customer`` is the customer
themself (rectification through the profile API), which outranks every scenario for the
traits it owns.

Defaults, so that nothing is decided silently: a trait the policy does not declare takes
``default.rule`` (``most_recent`` unless configured), and the decision notes that the
default applied; a scenario the policy never names is treated as a non-owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from identity.derived import DerivedModel
from identity.model import TraitValue

Rule = Literal["owner_wins", "most_recent", "highest_confidence"]
CUSTOMER = "customer"


class PolicyError(ValueError):
    """A policy file that cannot be used, with the reason."""


def covers(name: str, scenario: str) -> bool:
    """True when the policy name ``name`` designates ``scenario`` (exactly or as a dotted prefix)."""
    return scenario == name or scenario.startswith(name + ".")


class TraitPolicy(BaseModel):
    """One trait's governance: owners that may set it, readers that may only read it, and the rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    owners: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()
    #: A rule name, or a source priority list (highest first).
    rule: Rule | tuple[str, ...] = "most_recent"

    @model_validator(mode="after")
    def _owner_wins_needs_owners(self) -> "TraitPolicy":
        if self.rule == "owner_wins" and not self.owners:
            raise ValueError("rule owner_wins needs at least one owner")
        if isinstance(self.rule, tuple) and not self.rule:
            raise ValueError("a priority list needs at least one source")
        return self

    def may_write(self, scenario: str) -> bool:
        if any(covers(owner, scenario) for owner in self.owners):
            return True
        if any(covers(reader, scenario) for reader in self.readers):
            return False
        # With declared owners, writing is theirs alone; without, anyone may write.
        return not self.owners

    def may_read(self, scenario: str) -> bool:
        if not self.owners and not self.readers:
            return True
        return any(covers(name, scenario) for name in (*self.owners, *self.readers))


class DefaultPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: Rule = "most_recent"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a write applies, and why (recorded with the decision either way it matters)."""

    applies: bool
    reason: str
    declared: bool


class Policy(DerivedModel):
    """A versioned sovereignty policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    default: DefaultPolicy = DefaultPolicy()
    traits: dict[str, TraitPolicy] = Field(default_factory=dict)

    @cached_property
    def _undeclared(self) -> TraitPolicy:
        """How traits the policy does not name are governed (built once: arbitration is per trait, per event)."""
        return TraitPolicy(rule=self.default.rule)

    def for_trait(self, trait: str) -> TraitPolicy | None:
        return self.traits.get(trait)

    def arbitrate(self, trait: str, current: TraitValue | None, candidate: TraitValue) -> Verdict:
        """Decide whether ``candidate`` replaces ``current`` for ``trait``."""
        declared = self.traits.get(trait)
        policy = declared or self._undeclared
        if not policy.may_write(candidate.scenario):
            return Verdict(False, f"{candidate.scenario} may not set {trait}: owned by {', '.join(policy.owners)}", True)
        if current is None:
            return Verdict(True, "first value", declared is not None)
        applies, reason = _compare(policy.rule, current, candidate)
        return Verdict(applies, reason, declared is not None)


def _rank(priorities: tuple[str, ...], scenario: str) -> int:
    """Position in a priority list (0 is highest); sources not listed rank below all listed ones."""
    return next((i for i, name in enumerate(priorities) if covers(name, scenario)), len(priorities))


def _later(candidate: TraitValue, current: TraitValue) -> bool:
    """Whether ``candidate`` was observed after ``current``, by instant, not by arrival.

    Timestamps keep the producer's UTC offset, so they are compared as instants; two values
    observed at the same instant are ordered by event id, so that which one wins never depends
    on which arrived first (events of different customers' keys may arrive in either order).
    """
    mine, theirs = datetime.fromisoformat(candidate.observed_at), datetime.fromisoformat(current.observed_at)
    if mine != theirs:
        return mine > theirs
    return candidate.event_id >= current.event_id


def _compare(rule: Rule | tuple[str, ...], current: TraitValue, candidate: TraitValue) -> tuple[bool, str]:
    newer = _later(candidate, current)
    if rule == "highest_confidence":
        if candidate.confidence == current.confidence:
            return newer, "equal confidence, newer value" if newer else "equal confidence, older value"
        higher = candidate.confidence > current.confidence
        return higher, "higher confidence" if higher else f"lower confidence than {current.scenario}'s value"
    if isinstance(rule, str):  # most_recent, owner_wins
        return newer, "newer value" if newer else f"older than the value set by {current.scenario}"
    mine, theirs = _rank(rule, candidate.scenario), _rank(rule, current.scenario)
    if mine != theirs:
        return mine < theirs, "higher-priority source" if mine < theirs else f"{current.scenario} has priority"
    return newer, "same priority, newer value" if newer else "same priority, older value"


def load_policy(path: str | Path | None = None) -> Policy:
    """Load a policy file (the bundled permissive default when ``path`` is None)."""
    if path is None:
        text, source = resources.files("identity").joinpath("policy.yaml").read_text(encoding="utf-8"), "bundled policy.yaml"
    else:
        try:
            text, source = Path(path).read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from None
    try:
        return Policy.model_validate(yaml.safe_load(text))
    except (ValidationError, yaml.YAMLError) as exc:
        raise PolicyError(f"invalid policy in {source}: {exc}") from None
