"""The in-memory shapes resolution reasons about: profiles, earlier records, decisions.

These are plain dataclasses rather than validated contracts because they never cross a
process boundary as-is; stores build them from rows or nodes and the engine reads them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, NotRequired, TypedDict

from identity.features import Features, split_key

Action = Literal["create", "link", "merge", "review"]
ProtectionKind = Literal["limit", "generic_value", "conflicting_id", "kept_apart"]


class ProtectionRecord(TypedDict):
    kind: ProtectionKind
    detail: str
    identifier_type: str | None


class ReviewProposalRecord(TypedDict):
    profile_ids: list[str]
    reason: str
    confidence: float


class _DecisionExtras(TypedDict, total=False):
    #: Masked keys not attached (see :attr:`Decision.withheld_keys`); absent when there were none.
    withheld_identifiers: list[str]
    #: Absent from refusals and from decisions recorded before digests existed.
    event_digest: str


class DecisionRecord(_DecisionExtras):
    """A decision as stored and shown (API, CLI, outcomes): the JSON shape of :meth:`Decision.as_dict`.

    A TypedDict rather than a class so that the stored JSON and what users see stay exactly this
    document; ``action`` is ``"refused"`` for an erased customer's event (:func:`identity.plan.plan_refusal`).
    """

    event_id: str
    action: Action | Literal["refused"]
    profile_id: str
    merged_from: list[str]
    confidence: float
    rule_version: str
    evidence: dict[str, Any]
    protections: list[ProtectionRecord]
    review: ReviewProposalRecord | None


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


@dataclass(frozen=True, slots=True)
class ConsentValue:
    """The customer's answer for one purpose, with where and when it was given.

    Absent means not granted: PIPL asks for separate, explicit consent (AI training above all),
    so silence never counts as yes.
    """

    granted: bool
    source: str
    event_id: str
    at: str

    def as_dict(self) -> dict[str, Any]:
        return {"granted": self.granted, "source": self.source, "event_id": self.event_id, "at": self.at}


def consent_from_json(raw: dict[str, Any] | None) -> dict[str, ConsentValue]:
    return {purpose: ConsentValue(**value) for purpose, value in (raw or {}).items()}


@dataclass(slots=True)
class ProfileState:
    """A live profile as the engine sees it; ``identifiers`` holds ``type:value`` keys."""

    id: str
    version: int
    created_at: str
    identifiers: set[str] = field(default_factory=set)
    traits: dict[str, TraitValue] = field(default_factory=dict)
    consent: dict[str, ConsentValue] = field(default_factory=dict)

    def copy(self) -> "ProfileState":
        return ProfileState(self.id, self.version, self.created_at, set(self.identifiers), dict(self.traits),
                            dict(self.consent))


@dataclass(frozen=True, slots=True)
class MatchRecord:
    """An earlier touchpoint's features, attached to the profile it resolved to."""

    event_id: str
    profile_id: str
    features: Features


@dataclass(frozen=True, slots=True)
class ErasedMatch:
    """An event that points at an erased customer: through its own id, a profile id it names,
    or one of its identifiers (a salted hash of each is all a tombstone keeps)."""

    profile_id: str
    erased_at: str
    via: Literal["event", "profile", "identifier"]


@dataclass(frozen=True, slots=True)
class FieldTerms:
    """A term-frequency field's totals over stored profiles: how many carry it, and the sum of
    each value's count squared (what makes the average frequency of an agreeing value)."""

    records: int = 0
    squares: int = 0


@dataclass(frozen=True, slots=True)
class TermCounts:
    """How many stored profiles carry each of an event's term keys (0 when none does), and the
    totals of their fields; :func:`identity.compare.term_weights` turns them into weights."""

    values: Mapping[str, int] = field(default_factory=dict)
    fields: Mapping[str, FieldTerms] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResolutionContext:
    """Everything a store found about one event's neighbourhood in the graph."""

    #: For each of the event's identifier keys, the live profiles that hold it.
    identifier_profiles: dict[str, tuple[str, ...]]
    records: tuple[MatchRecord, ...]
    profiles: dict[str, ProfileState]
    #: Pairs of live profiles a person decided are different customers (a rejected review, a split).
    kept_apart: frozenset[frozenset[str]] = frozenset()
    #: Tombstones the event points at; see :func:`identity.plan.plan_refusal`.
    erased: tuple[ErasedMatch, ...] = ()
    #: Counts of the event's term-frequency values among stored profiles.
    terms: TermCounts = TermCounts()

    def apart(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.kept_apart


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
    #: The event's keys held by a profile kept apart from the one it links to: not attached, so
    #: linking does not carry one customer's identifier over to the other.
    withheld_keys: tuple[str, ...] = ()
    #: The event's content fingerprint (:meth:`TouchpointEvent.digest`).
    event_digest: str = ""

    def as_dict(self) -> DecisionRecord:
        extras: _DecisionExtras = {}
        if self.withheld_keys:
            extras["withheld_identifiers"] = [mask_identifier(k) for k in self.withheld_keys]
        if self.event_digest:
            extras["event_digest"] = self.event_digest
        return {**extras,
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


def tombstone_hash(secret: bytes, value: str) -> str:
    """A keyed hash of an identifier key or event id, as a tombstone keeps it.

    Keyed (HMAC) rather than plainly salted: phone numbers are few enough to enumerate, so a
    hash anyone can recompute would keep the number itself. The key lives with the store.
    """
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()
