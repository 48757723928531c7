"""A batch's view of a remote graph: the snapshot read at its start, overlaid with its own changes.

A remote store cannot afford a round trip per question per event. It reads the batch's
neighbourhood once (graph/snapshot.py), then answers ``outcome`` and ``context`` for each
event from that read plus the changes of the events before it in the batch, which are not
written yet: merges (retired profiles and everything re-pointed to their survivor), new
identifier attachments, new touchpoints with their blocking keys, and new decisions.

The answers must equal what the embedded store gives after writing those earlier events one
by one, or the two stores would resolve the same input differently. So this module follows
graph/sqlite.py query by query (holders sorted by profile id and capped; the newest records
per blocking key; the newest records of every strongly-matched profile) and, where the read
cannot settle an answer exactly, says what is missing (:class:`Missing`) instead of guessing;
the store reads that and asks again. Pure: no I/O, no driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import orjson

from graph.snapshot import Holders, NeighbourhoodRequest, Snapshot, StoredOutcome, StoredRecord
from graph.sqlite import RECORDS_PER_PROFILE
from graph.store import Outcome
from identity.features import PreparedEvent, rarest_first, term_field
from identity.model import DecisionRecord, FieldTerms, MatchRecord, ProfileState, ResolutionContext, TermCounts
from identity.plan import ChangeSet
from identity.rules import Rules

#: Pending touchpoints arrive after everything stored, in batch order.
PENDING_SEQ_BASE = 1 << 62

_NO_HOLDERS = Holders((), truncated=False)


@dataclass(frozen=True, slots=True)
class Missing:
    """What the snapshot lacks to answer exactly; read it, :meth:`Snapshot.absorb` it, ask again."""

    event_ids: frozenset[str] = frozenset()
    identifier_keys: frozenset[str] = frozenset()
    blocking_keys: frozenset[str] = frozenset()
    #: Profiles to load in full: state and newest records.
    profile_ids: frozenset[str] = frozenset()
    term_keys: frozenset[str] = frozenset()

    def request(self, snapshot: Snapshot, rules: Rules | None, retired: int) -> NeighbourhoodRequest:
        """The follow-up read. Holder lists come back longer: twice what was read, plus one
        per profile the batch retired, since each retired holder may hide one live one.
        Without ``rules`` (an outcome asked before any context) only events can be missing."""
        base = NeighbourhoodRequest() if rules is None else NeighbourhoodRequest.for_batch((), rules)
        read_before = max((snapshot.read_keys.get(k, 0) for k in self.identifier_keys), default=0)
        return NeighbourhoodRequest(
            event_ids=tuple(sorted(self.event_ids)),
            identifier_keys=tuple(sorted(self.identifier_keys)),
            blocking_keys=tuple(sorted(self.blocking_keys)),
            profile_ids=tuple(sorted(self.profile_ids)),
            holder_limit=max(base.holder_limit, 2 * read_before + retired),
            generic_after=base.generic_after,
            per_key=base.per_key,
            term_keys=tuple(sorted(self.term_keys)),
            term_fields=base.term_fields,
        )


@dataclass(slots=True)
class _Gaps:
    events: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    blocking: set[str] = field(default_factory=set)
    profiles: set[str] = field(default_factory=set)
    terms: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.events or self.keys or self.blocking or self.profiles or self.terms)

    def missing(self) -> Missing:
        return Missing(frozenset(self.events), frozenset(self.keys), frozenset(self.blocking), frozenset(self.profiles),
                       frozenset(self.terms))


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event applied in this batch but not yet written, with when and where it was applied."""

    prepared: PreparedEvent
    changes: ChangeSet
    now: str
    pos: int


def _copy(state: ProfileState) -> ProfileState:
    # The engine copies before changing, but a shared set is one refactor away from a bug.
    return state.copy()


class BatchOverlay:
    """Answers a batch's per-event questions from one snapshot and the batch's pending changes."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.events: list[PendingEvent] = []
        self._outcomes: dict[str, StoredOutcome] = {}
        self._profiles: dict[str, ProfileState] = {}
        self._created: set[str] = set()
        #: Retired id -> live survivor, kept flat: a merge of a survivor re-points its retirees.
        self._survivor: dict[str, str] = {}
        #: Live id -> every profile retired into it during this batch.
        self._absorbed: dict[str, set[str]] = {}
        self._attached: dict[str, set[str]] = {}
        #: Pending records by the profile their decision named, and by blocking key.
        self._by_profile: dict[str, list[StoredRecord]] = {}
        self._by_blocking: dict[str, list[StoredRecord]] = {}
        #: Events refused in this batch (an erased customer's), with their records as JSON.
        self.refusals: list[tuple[str, str, str]] = []
        #: Touchpoints of this batch carrying each term key, and what they add to each field's totals.
        self._term_added: dict[str, int] = {}
        self._totals_added: dict[str, FieldTerms] = {}

    # --- what the batch changed ------------------------------------------------------------

    def live(self, profile_id: str) -> str:
        """The profile an id resolves to once this batch's merges are applied."""
        return self._survivor.get(profile_id, profile_id)

    @property
    def retired(self) -> Mapping[str, str]:
        return MappingProxyType(self._survivor)

    def apply(self, prepared: PreparedEvent, changes: ChangeSet, now: str) -> None:
        """Record one event's changes so later events in the batch see them."""
        decision = changes.decision
        for state in changes.profiles:
            if state.id not in self._profiles and state.id not in self.snapshot.profiles:
                self._created.add(state.id)
            self._profiles[state.id] = _copy(state)
        for retired, into in changes.retired.items():
            self._retire(retired, into)
        for key, profile_id in changes.attachments:
            self._attached.setdefault(key, set()).add(profile_id)
        record = StoredRecord(PENDING_SEQ_BASE + len(self.events), prepared.event_id, decision.profile_id, prepared.features)
        self._by_profile.setdefault(decision.profile_id, []).append(record)
        for key in prepared.blocking_keys:
            self._by_blocking.setdefault(key, []).append(record)
        self._count_terms(changes.terms)
        self._outcomes[prepared.event_id] = StoredOutcome(
            orjson.dumps(decision.as_dict()).decode(), tuple(d.to_json().decode() for d in changes.deltas)
        )
        self.events.append(PendingEvent(prepared, changes, now, len(self.events)))

    def _count_terms(self, keys: Iterable[str]) -> None:
        """As the embedded store counts on apply: the keys were read for this event's context."""
        for key in keys:
            before = self.snapshot.terms.get(key, 0) + self._term_added.get(key, 0)
            self._term_added[key] = self._term_added.get(key, 0) + 1
            field_ = term_field(key)
            had = self._totals_added.get(field_, FieldTerms())
            self._totals_added[field_] = FieldTerms(had.records + 1, had.squares + 2 * before + 1)

    def refuse(self, event_id: str, record: DecisionRecord, now: str) -> None:
        """Remember a refused event so a duplicate later in the batch gets the same answer."""
        text = orjson.dumps(record).decode()
        self._outcomes[event_id] = StoredOutcome(text, ())
        self.refusals.append((event_id, text, now))

    def _retire(self, retired: str, into: str) -> None:
        survivor = self.live(into)
        moved = {retired} | self._absorbed.pop(retired, set())
        for profile_id in moved:
            self._survivor[profile_id] = survivor
        self._absorbed.setdefault(survivor, set()).update(moved)

    # --- the per-event questions -----------------------------------------------------------

    def outcome(self, event_id: str) -> Outcome | None | Missing:
        """The first outcome of an event applied before, in this batch or earlier."""
        stored = self._outcomes.get(event_id) or self.snapshot.outcomes.get(event_id)
        if stored is not None:
            return stored.outcome(event_id)
        if event_id in self.snapshot.read_events:
            return None
        return Missing(event_ids=frozenset({event_id}))

    def context(self, prepared: PreparedEvent, rules: Rules) -> ResolutionContext | Missing:
        """The event's neighbourhood, exactly as the embedded store would find it."""
        gaps = _Gaps()
        holders = self._holders(prepared.identifier_keys, rules, gaps)
        records = self._blocking_records(prepared.blocking_keys, rules, gaps)
        generic_after = rules.identifiers.generic_after_profiles
        strong = {p for ps in holders.values() if len(ps) <= generic_after for p in ps}
        for profile_id in sorted(strong):
            for record in self._recent_records(profile_id, gaps):
                records.setdefault(record.event_id, record)
        profiles = self._states(strong | {r.profile_id for r in records.values()}, gaps)
        terms = self._terms(prepared.term_keys, rules, gaps)
        if gaps:
            return gaps.missing()
        return ResolutionContext(holders, tuple(records.values()), profiles, self._kept_apart(set(profiles)), terms=terms)

    def _terms(self, keys: Iterable[str], rules: Rules, gaps: _Gaps) -> TermCounts:
        """The counts of the event's term keys and the totals of the rules' fields, as stored
        plus this batch's touchpoints (the embedded store leaves out fields with no records)."""
        keys = tuple(keys)
        gaps.terms.update(k for k in keys if k not in self.snapshot.read_terms)
        if not keys:
            return TermCounts()
        values = {k: self.snapshot.terms.get(k, 0) + self._term_added.get(k, 0) for k in keys}
        totals: dict[str, FieldTerms] = {}
        for field_ in rules.term_frequency_fields:
            stored, added = self.snapshot.term_totals.get(field_, FieldTerms()), self._totals_added.get(field_, FieldTerms())
            if stored.records + added.records > 0:
                totals[field_] = FieldTerms(stored.records + added.records, stored.squares + added.squares)
        return TermCounts(values, totals)

    def _kept_apart(self, ids: set[str]) -> frozenset[frozenset[str]]:
        """Pairs kept apart among ``ids``, each side followed through this batch's merges."""
        pairs = (frozenset(self.live(p) for p in pair) for pair in self.snapshot.kept_apart)
        return frozenset(p for p in pairs if len(p) == 2 and p <= ids)

    def _holders(self, keys: Iterable[str], rules: Rules, gaps: _Gaps) -> dict[str, tuple[str, ...]]:
        limit = rules.identifiers.generic_after_profiles + 1
        found: dict[str, tuple[str, ...]] = {}
        for key in keys:
            if key not in self.snapshot.read_keys:
                gaps.keys.add(key)
                continue
            stored = self.snapshot.identifiers.get(key, _NO_HOLDERS)
            known = {self.live(p) for p in (*stored.holders, *self._attached.get(key, ()))}
            if stored.truncated:
                # A holder past the ones read may have been merged away in this batch: its
                # survivor holds the key now, and may sort before the holders read.
                known |= {self.live(r) for r in self._survivor if key in self._stored_identifiers(r, gaps)}
            first = tuple(sorted(known)[:limit])
            # Holders not read all sort after the last one read; past it, the list is a guess.
            if stored.truncated and (len(first) < limit or first[-1] > stored.holders[-1]):
                gaps.keys.add(key)
            elif first:
                found[key] = first
        return found

    def _stored_identifiers(self, profile_id: str, gaps: _Gaps) -> set[str]:
        if profile_id in self._created:
            return set()
        state = self.snapshot.profiles.get(profile_id)
        if state is None:
            gaps.profiles.add(profile_id)
            return set()
        return state.identifiers

    def _blocking_records(self, keys: Iterable[str], rules: Rules, gaps: _Gaps) -> dict[str, MatchRecord]:
        found: list[tuple[str, list[StoredRecord]]] = []
        for key in keys:
            if key not in self.snapshot.read_blocking:
                gaps.blocking.add(key)
                continue
            newest_first = [*reversed(self._by_blocking.get(key, ())), *self.snapshot.blocking.get(key, ())]
            found.append((key, newest_first[:rules.candidates_per_key]))
        chosen = rarest_first(found, rules.candidates_per_event, lambda r: r.event_id)
        return {r.event_id: MatchRecord(r.event_id, self.live(r.profile_id), r.features) for r in chosen}

    def _recent_records(self, profile_id: str, gaps: _Gaps) -> list[MatchRecord]:
        """The profile's newest records, counting those of every profile merged into it."""
        pool: list[StoredRecord] = []
        for member in (profile_id, *sorted(self._absorbed.get(profile_id, ()))):
            pool.extend(self._by_profile.get(member, ()))
            if member in self._created:
                continue
            stored = self.snapshot.records.get(member)
            if stored is None:
                gaps.profiles.add(member)
            else:
                pool.extend(stored)
        pool.sort(key=lambda r: r.seq, reverse=True)
        return [MatchRecord(r.event_id, profile_id, r.features) for r in pool[:RECORDS_PER_PROFILE]]

    def _states(self, ids: Iterable[str], gaps: _Gaps) -> dict[str, ProfileState]:
        states: dict[str, ProfileState] = {}
        for profile_id in ids:
            state = self._profiles.get(profile_id)
            if state is None:
                state = self.snapshot.profiles.get(profile_id)
            if state is None:
                gaps.profiles.add(profile_id)
            else:
                states[profile_id] = _copy(state)
        return states
