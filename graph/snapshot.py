"""What one read of a remote graph knew about a batch's neighbourhood. Pure: no driver here.

A remote store reads a batch's whole neighbourhood in one query (``load_neighbourhood`` in
graph/cypher.py) and answers every per-event question from it (graph/overlay.py). This
module is the shape of that answer: a :class:`NeighbourhoodRequest` says what to read, and
:func:`snapshot_from_row` turns the query's one result row into a :class:`Snapshot`. The
snapshot also records what was *asked*, so "not found" can be told apart from "not read".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import orjson

from graph.sqlite import RECORDS_PER_PROFILE
from graph.store import Outcome
from identity.deltas import IdentityDelta
from identity.features import Features, PreparedEvent
from identity.model import ErasedMatch, FieldTerms, ProfileState, TraitValue, consent_from_json
from identity.rules import Rules

@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A touchpoint's features with its arrival order and the profile it belonged to when read."""

    seq: int
    event_id: str
    profile_id: str
    features: Features


@dataclass(frozen=True, slots=True)
class Holders:
    """The first holders of an identifier by profile id; ``truncated`` when more exist."""

    holders: tuple[str, ...]
    truncated: bool


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """An applied event's decision and deltas as stored (JSON), so replays return equal objects."""

    record: str
    deltas: tuple[str, ...]

    def outcome(self, event_id: str) -> Outcome:
        deltas = [IdentityDelta.from_json(d) for d in self.deltas]
        return Outcome(event_id, orjson.loads(self.record), deltas, duplicate=True)


@dataclass(frozen=True, slots=True)
class NeighbourhoodRequest:
    """What to read: the parameters of ``load_neighbourhood``."""

    event_ids: tuple[str, ...] = ()
    identifier_keys: tuple[str, ...] = ()
    blocking_keys: tuple[str, ...] = ()
    profile_ids: tuple[str, ...] = ()
    holder_limit: int = 1
    generic_after: int = 1
    per_key: int = 1
    term_keys: tuple[str, ...] = ()
    #: Fields whose term-frequency totals to read (every read takes all of the rules').
    term_fields: tuple[str, ...] = ()

    @classmethod
    def for_batch(cls, batch: Sequence[PreparedEvent], rules: Rules) -> "NeighbourhoodRequest":
        return cls(
            event_ids=_unique(p.event_id for p in batch),
            identifier_keys=_unique(k for p in batch for k in p.identifier_keys),
            blocking_keys=_unique(k for p in batch for k in p.blocking_keys),
            holder_limit=rules.identifiers.generic_after_profiles + 1,
            generic_after=rules.identifiers.generic_after_profiles,
            per_key=rules.candidates_per_key,
            term_keys=_unique(k for p in batch for k in p.term_keys),
            term_fields=rules.term_frequency_fields,
        )

    def params(self) -> dict[str, Any]:
        return {
            "event_ids": list(self.event_ids),
            "identifier_keys": list(self.identifier_keys),
            "holder_limit": self.holder_limit,
            "blocking_keys": list(self.blocking_keys),
            "per_key": self.per_key,
            "generic_after": self.generic_after,
            "profile_ids": list(self.profile_ids),
            "records_per_profile": RECORDS_PER_PROFILE,
            "term_keys": list(self.term_keys),
            "term_fields": list(self.term_fields),
        }


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


@dataclass(slots=True)
class Snapshot:
    """The graph as read, plus which questions the reads covered."""

    outcomes: dict[str, StoredOutcome] = field(default_factory=dict)
    #: Identifier key -> its holders; a key read but absent has no Identifier node.
    identifiers: dict[str, Holders] = field(default_factory=dict)
    blocking: dict[str, tuple[StoredRecord, ...]] = field(default_factory=dict)
    #: Profile id -> its newest records (up to RECORDS_PER_PROFILE), newest first.
    records: dict[str, tuple[StoredRecord, ...]] = field(default_factory=dict)
    profiles: dict[str, ProfileState] = field(default_factory=dict)
    read_events: set[str] = field(default_factory=set)
    #: Identifier key -> the holder limit it was read with.
    read_keys: dict[str, int] = field(default_factory=dict)
    read_blocking: set[str] = field(default_factory=set)
    #: Pairs of profiles (as read) a person kept apart.
    kept_apart: set[frozenset[str]] = field(default_factory=set)
    #: Tombstone hash -> the erased customer it points at (hashes of the batch's events and keys).
    erased: dict[str, ErasedMatch] = field(default_factory=dict)
    #: Term key -> how many stored profiles count it; a key read but absent counts 0.
    terms: dict[str, int] = field(default_factory=dict)
    read_terms: set[str] = field(default_factory=set)
    #: Field -> its term-frequency totals (summed over shards); a field read but absent has none.
    term_totals: dict[str, FieldTerms] = field(default_factory=dict)

    def absorb(self, later: "Snapshot") -> None:
        """Add a follow-up read. What was already known wins, so one batch sees one state of
        each profile; if the graph moved meanwhile, the write's version check will say so."""
        self.outcomes = {**later.outcomes, **self.outcomes}
        self.blocking = {**later.blocking, **self.blocking}
        self.records = {**later.records, **self.records}
        self.profiles = {**later.profiles, **self.profiles}
        # Holder lists are the exception: a follow-up asks for a longer list on purpose.
        self.identifiers.update(later.identifiers)
        self.read_keys.update(later.read_keys)
        self.read_events |= later.read_events
        self.read_blocking |= later.read_blocking
        self.kept_apart |= later.kept_apart
        self.erased = {**later.erased, **self.erased}
        self.terms = {**later.terms, **self.terms}
        self.read_terms |= later.read_terms
        self.term_totals = {**later.term_totals, **self.term_totals}


def _record(raw: Mapping[str, Any]) -> StoredRecord:
    return StoredRecord(int(raw["seq"]), raw["event_id"], raw["profile_id"], orjson.loads(raw["features"]))


def _profile(raw: Mapping[str, Any]) -> ProfileState:
    traits = {name: TraitValue(**t) for name, t in orjson.loads(raw["traits"]).items()}
    consent = consent_from_json(orjson.loads(raw["consent"])) if raw.get("consent") else {}
    return ProfileState(raw["id"], int(raw["version"]), raw["created_at"], set(raw["identifiers"]), traits, consent)


def snapshot_from_row(row: Mapping[str, Any], request: NeighbourhoodRequest) -> Snapshot:
    """Turn ``load_neighbourhood``'s single result row into a snapshot of ``request``."""
    limit = request.holder_limit
    refusals = {r["event_id"]: StoredOutcome(r["record"], ()) for r in row.get("refusals", [])}
    return Snapshot(
        outcomes={**refusals, **{o["event_id"]: StoredOutcome(o["record"], tuple(o["deltas"])) for o in row["outcomes"]}},
        identifiers={
            i["key"]: Holders(tuple(i["holders"]), truncated=len(i["holders"]) >= limit) for i in row["identifiers"]
        },
        blocking={b["key"]: tuple(_record(r) for r in b["records"]) for b in row["blocking"]},
        records={r["profile_id"]: tuple(_record(x) for x in r["records"]) for r in row["records"]},
        profiles={p["id"]: _profile(p) for p in row["profiles"]},
        read_events=set(request.event_ids),
        read_keys=dict.fromkeys(request.identifier_keys, limit),
        read_blocking=set(request.blocking_keys),
        kept_apart={frozenset((p["id"], other)) for p in row["profiles"] for other in p.get("kept_apart", ())
                    if other != p["id"]},
        erased={e["hash"]: ErasedMatch(e["profile_id"], e["erased_at"], e["via"]) for e in row.get("erased", [])},
        terms={t["key"]: int(t["n"]) for t in row.get("terms", [])},
        read_terms=set(request.term_keys),
        term_totals={t["field"]: FieldTerms(int(t["records"]), int(t["squares"])) for t in row.get("term_totals", [])},
    )
