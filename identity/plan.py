"""From a decision to the exact changes a store must write, and the deltas they cause.

Planning is pure so that every store applies the same changes and emits the same deltas;
a store only decides how to write them atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Iterable, Sequence

from identity.deltas import Cause, DeltaKind, DeltaTimes, FieldChange, IdentityDelta
from identity.events import PROFILE_ID_TYPE
from identity.features import PreparedEvent, identifier_key, identifiers_by_type, term_field, term_key
from identity.model import ConsentValue, Decision, DecisionRecord, ErasedMatch, MatchRecord, ProfileState, TraitValue, stable_id
from identity.policy import Policy


@dataclass(slots=True)
class ChangeSet:
    """Everything one event changes, to be written in one transaction."""

    decision: Decision
    #: Profiles created or changed, with their new versions.
    profiles: list[ProfileState]
    #: Retired profile id -> the survivor it was merged into.
    retired: dict[str, str] = field(default_factory=dict)
    #: (identifier key, profile id) attachments that did not exist before.
    attachments: list[tuple[str, str]] = field(default_factory=list)
    record: MatchRecord | None = None
    deltas: list[IdentityDelta] = field(default_factory=list)
    #: The event's term keys its profile did not carry yet: what the store counts (see :func:`terms_brought`).
    terms: tuple[str, ...] = ()


def profile_view(profile: ProfileState) -> dict[str, dict[str, Any]]:
    """The profile as deltas carry it: trait values, identifier values by type, consent by purpose."""
    traits = {name: t.value for name, t in sorted(profile.traits.items())}
    consent = {purpose: c.granted for purpose, c in sorted(profile.consent.items())}
    return {"traits": traits, "identifiers": identifiers_by_type(profile.identifiers), "consent": consent}


def _flat(view: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{section}.{name}": value for section, fields in view.items() for name, value in fields.items()}


def diff_views(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, FieldChange]:
    old, new = _flat(before), _flat(after)
    return {
        name: FieldChange(old=old.get(name), new=new.get(name))
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    }


def _absorb_traits(profile: ProfileState, prepared: PreparedEvent, confidence: float, policy: Policy) -> dict[str, Any]:
    """Take the event's traits where the policy lets them win; report what it refused and why."""
    event = prepared.event
    observed = event.occurred_at.isoformat()
    conflicts: list[dict[str, Any]] = []
    defaulted: list[str] = []
    for name, value in sorted(event.traits.items()):
        current = profile.traits.get(name)
        if value is None or (current is not None and current.value == value):
            continue
        candidate = TraitValue(value, event.scenario, event.event_id, observed, round(confidence, 6))
        verdict = policy.arbitrate(name, current, candidate)
        if verdict.applies:
            profile.traits[name] = candidate
        elif verdict.declared:
            conflicts.append({
                "trait": name, "scenario": event.scenario, "attempted": value, "reason": verdict.reason,
                "kept": None if current is None else current.value,
                "kept_from": None if current is None else current.scenario, "at": observed,
            })
        if not verdict.declared:
            defaulted.append(name)
    return {"policy_version": policy.version, "conflicts": conflicts, "default_rule_traits": defaulted}


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _take_consent(profile: ProfileState, purpose: str, candidate: ConsentValue) -> bool:
    """The most recent answer for a purpose wins: a customer may withdraw and grant again."""
    current = profile.consent.get(purpose)
    # Same instant: the event id decides, so the outcome never depends on arrival order.
    if current is not None and (current.granted == candidate.granted
                                or (_instant(candidate.at), candidate.event_id) < (_instant(current.at), current.event_id)):
        return False
    profile.consent[purpose] = candidate
    return True


def _absorb_consent(profile: ProfileState, prepared: PreparedEvent) -> None:
    event = prepared.event
    for purpose, granted in sorted((event.consent or {}).items()):
        _take_consent(profile, purpose, ConsentValue(granted, event.scenario, event.event_id, event.occurred_at.isoformat()))


def _merge_into(survivor: ProfileState, losers: list[ProfileState], policy: Policy) -> None:
    """Fold retired profiles into the survivor: identifiers unite, traits by the policy's rules,
    consent by recency."""
    for loser in losers:
        survivor.identifiers |= loser.identifiers
        for name, trait in loser.traits.items():
            if policy.arbitrate(name, survivor.traits.get(name), trait).applies:
                survivor.traits[name] = trait
        for purpose, consent in loser.consent.items():
            _take_consent(survivor, purpose, consent)


def plan_changes(
    prepared: PreparedEvent,
    decision: Decision,
    profiles: dict[str, ProfileState],
    *,
    policy: Policy,
    records: Sequence[MatchRecord],
    resolved_at: str,
    ingested_at: str | None = None,
) -> ChangeSet:
    """Apply ``decision`` to copies of ``profiles`` under ``policy`` and describe the result.
    ``records`` are the earlier records the event was compared with (its context's).

    The returned change set's decision carries the sovereignty outcome in its evidence.
    """
    before = profiles.get(decision.profile_id)
    keys = prepared.identifier_keys
    if before is None:
        target = ProfileState(decision.profile_id, 0, prepared.event.occurred_at.isoformat())
        before_view: dict[str, dict[str, Any]] = {}
        keys = (*keys, identifier_key(PROFILE_ID_TYPE, decision.profile_id))
    else:
        target = before.copy()
        before_view = profile_view(before)
    if decision.withheld_keys:
        keys = tuple(k for k in keys if k not in decision.withheld_keys)
    losers = [profiles[pid] for pid in decision.merged_from]
    _merge_into(target, losers, policy)
    new_keys = [k for k in keys if k not in target.identifiers]
    target.identifiers.update(keys)
    sovereignty = _absorb_traits(target, prepared, decision.confidence, policy)
    _absorb_consent(target, prepared)
    decision = replace(decision, evidence={**decision.evidence, "sovereignty": sovereignty})

    changes = ChangeSet(
        decision=decision,
        profiles=[],
        retired={loser.id: target.id for loser in losers},
        attachments=[(key, target.id) for key in new_keys],
        record=MatchRecord(prepared.event_id, target.id, prepared.features),
        terms=prepared.term_keys if before is None else terms_brought(prepared, {target.id, *decision.merged_from}, records),
    )
    after_view = profile_view(target)
    field_changes = diff_views(before_view, after_view)
    if before is None or field_changes or losers:
        target.version += 1
        kind: DeltaKind = "profile.created" if before is None else ("profile.merged" if losers else "profile.updated")
        changes.deltas.append(_delta(prepared, decision, target, kind, field_changes, after_view, resolved_at, ingested_at))
    changes.profiles.append(target)
    return changes


def terms_brought(prepared: PreparedEvent, profile_ids: set[str], records: Sequence[MatchRecord]) -> tuple[str, ...]:
    """The event's term keys that none of ``records`` of ``profile_ids`` carries.

    Term frequencies say how many customers share a value, so a value is counted once per
    profile that brings it: a customer seen 500 times must not make their own name look common
    (it would weigh their next record's exact name down, and every other name up against an
    average inflated by theirs). The records at hand are those the event was compared with, which
    for a profile it links to include its records sharing the event's name or place; a value its
    older records hold but none of these (or one both sides of a merge brought) is counted again.
    """
    mine = [r.features for r in records if r.profile_id in profile_ids]
    brought = []
    for key in prepared.term_keys:
        name = term_field(key)
        if not any(name in features and term_key(name, features[name]) == key for features in mine):
            brought.append(key)
    return tuple(brought)


def _delta(prepared: PreparedEvent, decision: Decision, target: ProfileState, kind: DeltaKind,
           field_changes: dict[str, FieldChange], view: dict[str, dict[str, Any]], resolved_at: str,
           ingested_at: str | None) -> IdentityDelta:
    event = prepared.event
    return IdentityDelta(
        delta_id=stable_id("d", event.event_id, target.id, str(target.version)),
        profile_id=target.id,
        profile_version=target.version,
        kind=kind,
        changes=field_changes,
        merged_from=list(decision.merged_from),
        profile=view,
        cause=Cause(
            event_id=event.event_id,
            scenario=event.scenario,
            event_type=event.type,
            action=decision.action,
            confidence=round(decision.confidence, 6),
            hops=event.causation.hops if event.causation else 0,
        ),
        times=DeltaTimes(occurred_at=event.occurred_at.isoformat(), ingested_at=ingested_at, resolved_at=resolved_at),
    )


# --- refusals: events of erased customers ------------------------------------------------

def plan_refusal(prepared: PreparedEvent, erased: Iterable[ErasedMatch], rule_version: str) -> DecisionRecord | None:
    """The decision record refusing an event that would bring an erased customer back, or None.

    An event is refused when it is a redelivery of one of the erased touchpoints, when it names
    an erased profile (a scenario acting on a stale delta), or when it carries an erased
    customer's identifier and happened before the erasure: an old event replayed. The same
    identifier on an event that happened afterwards is a customer coming back, who starts a
    new profile.
    """
    occurred = prepared.event.occurred_at
    for match in erased:
        if match.via == "identifier" and occurred > _instant(match.erased_at):
            continue
        return {
            "event_id": prepared.event_id,
            "action": "refused",
            "profile_id": match.profile_id,
            "merged_from": [],
            "confidence": 1.0,
            "rule_version": rule_version,
            "evidence": {"refused": {"reason": "the event belongs to an erased customer", "via": match.via,
                                     "erased_at": match.erased_at}},
            "protections": [],
            "review": None,
        }
    return None


# --- operations by people: merge, split, erasure --------------------------------------------

@dataclass(frozen=True, slots=True)
class OperationCause:
    """Who did what, for the deltas an operation emits (an operation has no touchpoint)."""

    operation_id: str
    kind: str
    action: str
    actor_scenario: str
    at: str


def survivor_of(states: Iterable[ProfileState]) -> ProfileState:
    """The oldest profile survives a merge, as in automatic merges (identity/decide.py)."""
    return min(states, key=lambda s: (s.created_at, s.id))


def plan_merge(states: list[ProfileState], policy: Policy) -> tuple[ProfileState, list[str]]:
    """Several live profiles folded into the oldest: its new state (version not yet bumped)
    and the retired ids."""
    survivor = survivor_of(states)
    target = survivor.copy()
    losers = sorted((s for s in states if s.id != survivor.id), key=lambda s: (s.created_at, s.id))
    _merge_into(target, losers, policy)
    return target, [s.id for s in losers]


def operation_delta(cause: OperationCause, kind: DeltaKind, state: ProfileState, before: dict[str, dict[str, Any]],
                    merged_from: Iterable[str] = ()) -> IdentityDelta:
    """A delta for one profile an operation changed; ``state.version`` is already the new one."""
    view = profile_view(state)
    return IdentityDelta(
        delta_id=stable_id("d", cause.operation_id, state.id, str(state.version)),
        profile_id=state.id,
        profile_version=state.version,
        kind=kind,
        changes=diff_views(before, view),
        merged_from=list(merged_from),
        profile=view,
        cause=Cause(event_id=cause.operation_id, scenario=cause.actor_scenario, event_type=cause.kind,
                    action=cause.action, confidence=1.0),
        times=DeltaTimes(occurred_at=cause.at, ingested_at=cause.at, resolved_at=cause.at),
    )


def erased_delta(cause: OperationCause, profile_id: str, version: int, merged_from: Iterable[str]) -> IdentityDelta:
    """``profile.erased``: ids and a version only. Old values would put the person back in the outbox."""
    return IdentityDelta(
        delta_id=stable_id("d", cause.operation_id, profile_id, str(version)),
        profile_id=profile_id,
        profile_version=version,
        kind="profile.erased",
        changes={},
        merged_from=list(merged_from),
        profile={},
        cause=Cause(event_id=cause.operation_id, scenario=cause.actor_scenario, event_type=cause.kind,
                    action=cause.action, confidence=1.0),
        times=DeltaTimes(occurred_at=cause.at, ingested_at=cause.at, resolved_at=cause.at),
    )
