"""The in-memory shapes resolution reasons about: profiles, earlier records, decisions.

These are plain dataclasses rather than validated contracts because they never cross a
process boundary as-is; stores build them from rows or nodes and the engine reads them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from identity.features import Features, split_key

Action = Literal["create", "link", "merge", "review"]
ProtectionKind = Literal["limit", "generic_value", "conflicting_id"]


@dataclass(frozen=True, slots=True)
class TraitValue:
    """A trait's current value with its provenance: who said it, when, how sure we were."""

    value: Any
    scenario: str
    event_id: str
    observed_at: str
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "scenario": self.scenario,
            "event_id": self.event_id,
            "observed_at": self.observed_at,
            "confidence": self.confidence,
        }


@dataclass(slots=True)
class ProfileState:
    """A live profile as the engine sees it; ``identifiers`` holds ``type:value`` keys."""

    id: str
    version: int
    created_at: str
    identifiers: set[str] = field(default_factory=set)
    traits: dict[str, TraitValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MatchRecord:
    """An earlier touchpoint's features, attached to the profile it resolved to."""

    event_id: str
    profile_id: str
    features: Features


@dataclass(frozen=True, slots=True)
class ResolutionContext:
    """Everything a store found about one event's neighbourhood in the graph."""

    #: For each of the event's identifier keys, the live profiles that hold it.
    identifier_profiles: dict[str, tuple[str, ...]]
    records: tuple[MatchRecord, ...]
    profiles: dict[str, ProfileState]


@dataclass(frozen=True, slots=True)
class Protection:
    """A merge-protection rule that stopped or shaped an automatic decision."""

    kind: ProtectionKind
    detail: str
    identifier_type: str | None = None


@dataclass(frozen=True, slots=True)
class ReviewProposal:
    """A pair (or group) of profiles a person should look at, and why."""

    profile_ids: tuple[str, ...]
    reason: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The record of one automatic decision: what was done, how sure, on what evidence."""

    event_id: str
    action: Action
    profile_id: str
    confidence: float
    rule_version: str
    evidence: dict[str, Any]
    merged_from: tuple[str, ...] = ()
    protections: tuple[Protection, ...] = ()
    review: ReviewProposal | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "action": self.action,
            "profile_id": self.profile_id,
            "merged_from": list(self.merged_from),
            "confidence": round(self.confidence, 6),
            "rule_version": self.rule_version,
            "evidence": self.evidence,
            "protections": [
                {"kind": p.kind, "detail": p.detail, "identifier_type": p.identifier_type} for p in self.protections
            ],
            "review": None
            if self.review is None
            else {
                "profile_ids": list(self.review.profile_ids),
                "reason": self.review.reason,
                "confidence": round(self.review.confidence, 6),
            },
        }


def stable_id(prefix: str, *parts: str) -> str:
    """Deterministic ids, so replaying the same input yields the same profiles and deltas."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).hexdigest()
    return f"{prefix}_{digest}"


def mask_identifier(key: str) -> str:
    """A key safe to show in evidence and logs: type plus a hint of the value, never all of it."""
    type_, value = split_key(key)
    if len(value) <= 4:
        return f"{type_}:***"
    return f"{type_}:{value[:2]}***{value[-2:]}"
