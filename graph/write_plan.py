"""From a batch's buffered changes to the rows its few ``UNWIND`` statements write. Pure.

The embedded store writes each event as it is applied; a remote store writes the whole batch
at commit, one statement per kind of row (graph/cypher.py). Rows describe the batch's *end*
state: a profile changed by three events is written once at its last version, and anything
attached to a profile that a later event merged away is written straight onto the survivor.
Row keys are the property names the statements read (``row.<name>``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypedDict

import orjson

from graph.overlay import BatchOverlay, PendingEvent
from identity.features import split_key, term_field
from identity.model import ProfileState


class LockRow(TypedDict):
    id: str
    version: int


class ProfileRow(TypedDict):
    id: str
    version: int
    created_at: str
    updated_at: str
    traits: str
    consent: str


class MergeRow(TypedDict):
    retired: str
    into: str
    survivor: str
    event_id: str
    merged_at: str


class IdentifierRow(TypedDict):
    key: str
    type: str


class AttachmentRow(TypedDict):
    key: str
    profile_id: str
    first_seen: str
    last_seen: str
    source: str
    confidence: float


class TermRow(TypedDict):
    key: str
    field: str
    add: int


@dataclass(frozen=True, slots=True)
class WritePlan:
    """Everything one batch writes, grouped by statement."""

    #: Stored profiles the batch changes or retires, with the version the batch read.
    locks: list[LockRow]
    profiles: list[ProfileRow]
    merges: list[MergeRow]
    #: Identifier nodes the batch read as absent and must create.
    identifiers: list[IdentifierRow]
    attachments: list[AttachmentRow]
    events: list[dict[str, Any]]
    refusals: list[dict[str, str]] = field(default_factory=list)
    #: How many of the batch's touchpoints count each term key (``ChangeSet.terms``), in key order (the lock order).
    terms: list[TermRow] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.events and not self.refusals

    @property
    def recounted(self) -> list[str]:
        """Profiles whose record count the batch changes: those given touchpoints, and both
        sides of each merge (the retired one's move to its survivor)."""
        ids = {row["profile_id"] for row in self.events}
        ids.update(p for row in self.merges for p in (row["retired"], row["survivor"]))
        return sorted(ids)


def plan_writes(overlay: BatchOverlay) -> WritePlan:
    events = overlay.events
    profiles = _profile_rows(events)
    retired = {r for e in events for r in e.changes.retired}
    stored = overlay.snapshot.profiles
    return WritePlan(
        locks=[LockRow(id=p, version=stored[p].version) for p in sorted((profiles.keys() | retired) & stored.keys())],
        profiles=[profiles[p] for p in sorted(profiles)],
        merges=[
            MergeRow(retired=r, into=into, survivor=overlay.live(r), event_id=e.prepared.event_id, merged_at=e.now)
            for e in events
            for r, into in e.changes.retired.items()
        ],
        identifiers=_new_identifiers(events, overlay.snapshot.identifiers.keys()),
        attachments=_attachment_rows(events, overlay),
        events=[_event_row(e, overlay.live(e.changes.decision.profile_id)) for e in events],
        refusals=[{"event_id": e, "record": r, "refused_at": at} for e, r, at in overlay.refusals],
        terms=[TermRow(key=k, field=term_field(k), add=n)
               for k, n in sorted(Counter(k for e in events for k in e.changes.terms).items())],
    )


def _traits(state: ProfileState) -> str:
    return orjson.dumps({name: t.as_dict() for name, t in state.traits.items()}).decode()


def consent_json(state: ProfileState) -> str:
    return orjson.dumps({purpose: c.as_dict() for purpose, c in state.consent.items()}).decode()


def _profile_rows(events: list[PendingEvent]) -> dict[str, ProfileRow]:
    rows: dict[str, ProfileRow] = {}
    for e in events:
        for state in e.changes.profiles:
            rows[state.id] = ProfileRow(
                id=state.id, version=state.version, created_at=state.created_at, updated_at=e.now, traits=_traits(state),
                consent=consent_json(state),
            )
    return rows


def _new_identifiers(events: list[PendingEvent], stored: Any) -> list[IdentifierRow]:
    keys = dict.fromkeys(k for e in events for k, _ in e.changes.attachments if k not in stored)
    return [IdentifierRow(key=k, type=split_key(k)[0]) for k in keys]


def _attachment_rows(events: list[PendingEvent], overlay: BatchOverlay) -> list[AttachmentRow]:
    """Every key each event attached or carried, on the profile it ended on.

    What the engine attached is taken as planned (it may attach keys the event did not carry,
    such as a new profile's own id); the event's other keys are sightings that move last_seen.
    The first sighting of a key on a profile sets its provenance.
    """
    rows: dict[tuple[str, str], AttachmentRow] = {}
    for e in events:
        decision = e.changes.decision
        seen = (k for k in e.prepared.identifier_keys if k not in decision.withheld_keys)
        sightings = [*e.changes.attachments, *((k, decision.profile_id) for k in seen)]
        for key, holder in sightings:
            profile_id = overlay.live(holder)
            row = rows.get((key, profile_id))
            if row is None:
                rows[(key, profile_id)] = AttachmentRow(
                    key=key, profile_id=profile_id, first_seen=e.now, last_seen=e.now,
                    source=e.prepared.event.scenario, confidence=decision.confidence,
                )
            else:
                row["last_seen"] = e.now
    return list(rows.values())


def _event_row(e: PendingEvent, profile_id: str) -> dict[str, Any]:
    """The touchpoint, its decision, review and deltas: one row of ``record_events``."""
    event, decision = e.prepared.event, e.changes.decision
    review = decision.review
    return {
        "pos": e.pos,
        "event_id": event.event_id,
        "profile_id": profile_id,
        "decided_profile_id": decision.profile_id,
        "scenario": event.scenario,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat(),
        "ingested_at": e.now,
        "event": event.to_json().decode(),
        "features": orjson.dumps(e.prepared.features).decode(),
        "blocking_keys": list(e.prepared.blocking_keys),
        "terms": list(e.changes.terms),
        "action": decision.action,
        "confidence": decision.confidence,
        "rule_version": decision.rule_version,
        "decided_at": e.now,
        "record": orjson.dumps(decision.as_dict()).decode(),
        "reviews": [] if review is None else [
            {"profile_ids": list(review.profile_ids), "reason": review.reason, "confidence": review.confidence}
        ],
        "deltas": [
            {"delta_id": d.delta_id, "index": i, "profile_id": d.profile_id, "json": d.to_json().decode()}
            for i, d in enumerate(e.changes.deltas)
        ],
    }
