"""The graph store interface every backend implements (embedded SQLite, Neo4j).

Resolution needs three things from a store, all inside one transaction so that what was
read is still true when the result is written: the prior outcome of an event (idempotency),
the event's neighbourhood (profiles holding its identifiers, earlier records sharing its
blocking keys), and an atomic write of the planned changes. Everything else here serves
people and publishers: profiles, timelines, decisions, the delta outbox.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Collection, Iterable, NotRequired, Protocol, Self, Sequence, TypedDict

from graph.tombstones import Via
from identity.deltas import IdentityDelta
from identity.features import Features, PreparedEvent
from identity.plan import ChangeSet
from identity.model import DecisionRecord, ProfileState, ResolutionContext
from identity.rules import Rules


class StoreError(RuntimeError):
    """A store that cannot be opened or used, with what to do about it."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or is busy right now; the same work may succeed later.

    Workers retry on this instead of dead-lettering: the events are fine, the store is not.
    """


class StoreConflict(StoreUnavailable):
    """Another writer changed what a batch read before the batch could write; nothing was written.

    Raised when a transaction commits. The batch is still valid input: re-run it whole (read
    again, decide again), which :class:`service.resolver.Resolver` does a bounded number of times;
    past that it is contention, so callers treat it like any other busy store.
    """


@dataclass(frozen=True, slots=True)
class Outcome:
    """What resolving one event produced; a redelivered event returns its original outcome."""

    event_id: str
    decision: DecisionRecord
    deltas: list[IdentityDelta]
    duplicate: bool = False
    #: The event id was already applied to an event with other content: this one was not applied,
    #: and ``decision`` is the earlier event's.
    id_reused: bool = False

    @property
    def profile_id(self) -> str:
        return self.decision["profile_id"]


class OpenReview(TypedDict):
    """A review proposal waiting for a person, as the review queue lists it."""

    id: int
    event_id: str
    profile_ids: list[str]
    reason: str
    confidence: float
    created_at: str


class ReviewRecord(OpenReview):
    """A review proposal of any status, with its verdict once a person gave one."""

    status: str
    decided_at: str | None
    decided_by: str | None
    operation_id: str | None


class TombstoneRecord(TypedDict):
    """What is left of an erased customer's id: when, and by which operation."""

    profile_id: str
    erased_at: str
    operation_id: str


class OperationDocument(TypedDict):
    """The stored record of an operation by a person, as the API and the profile history show it.

    Every operation has the common fields; each kind adds its own (merge: ``survivor``, ``retired``;
    split: ``separated``, ``profiles``, ``assignments``; review verdicts: ``review_id``, and
    ``kept_apart`` on a rejection; erasure: ``identifiers``, ``touchpoints``).
    """

    operation_id: str
    kind: str
    actor: str
    reason: str
    at: str
    profile_ids: list[str]
    rule_version: str
    policy_version: str
    review_id: NotRequired[int | None]
    survivor: NotRequired[str]
    retired: NotRequired[list[str]]
    kept_apart: NotRequired[list[list[str]]]
    separated: NotRequired[str]
    profiles: NotRequired[list[str]]
    assignments: NotRequired[dict[str, str]]
    identifiers: NotRequired[int]
    touchpoints: NotRequired[int]


@dataclass(frozen=True, slots=True)
class ProfileSnapshot:
    """A profile as people and APIs see it, with provenance for each trait."""

    id: str
    version: int
    created_at: str
    updated_at: str
    identifiers: dict[str, list[str]]
    traits: dict[str, dict[str, Any]]
    merged_from: list[str] = field(default_factory=list)
    #: Purpose -> {granted, source, event_id, at}; a purpose never answered is absent.
    consent: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProfileGrowth:
    """How far the largest live profiles have grown, in records (touchpoints).

    Chained links show as a few profiles growing far past any real customer's record count
    (a held-out run once ended with one of 1,145), long before anyone reads them.
    """

    threshold: int
    #: Live profiles holding more records than ``threshold``.
    over_threshold: int
    #: (profile id, records) of the largest live profiles, largest first, ties by id.
    largest: list[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """An applied touchpoint as it was received, with its place in acceptance order."""

    seq: int
    event_id: str
    #: The event as the store kept it (JSON), ready to be resolved again.
    event: bytes

    @property
    def cursor(self) -> tuple[int, str]:
        return self.seq, self.event_id


#: Where a read of :meth:`ReadViews.accepted_events` starts: before every touchpoint.
FIRST_EVENT: tuple[int, str] = (-1, "")


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    event_id: str
    scenario: str
    type: str
    occurred_at: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Family:
    """A live profile with everything that went into it, as an operation by a person needs it."""

    profile: ProfileState
    #: Every profile merged into it, directly or through others, with its last version.
    retired: dict[str, int]
    #: (event_id, event document) of its touchpoints, in arrival order.
    touchpoints: list[tuple[str, dict[str, Any]]]
    #: Identifier key -> (first_seen, source), so regrouping keeps provenance.
    identifier_sources: dict[str, tuple[str, str]]


@dataclass(frozen=True, slots=True)
class OperationRecord:
    """The decision record of an operation by a person: who, what, why, under which versions."""

    id: str
    kind: str
    actor: str
    at: str
    #: Every profile the operation concerns; an erasure later removes records naming it.
    profile_ids: tuple[str, ...]
    record: OperationDocument


@dataclass(slots=True)
class OperationWrite:
    """Everything one merge, split or review verdict writes, in one transaction.

    The profiles concerned are rewritten whole (state, lineage, touchpoints, identifiers), so
    one write serves merging and splitting alike.
    """

    operation: OperationRecord
    #: Live profile id -> the version read; any other version now is a conflict.
    expected: dict[str, int]
    #: Profiles live after the operation, at their new versions.
    profiles: list[ProfileState] = field(default_factory=list)
    #: Retired id -> live survivor, for every profile retired after the operation.
    retired: dict[str, str] = field(default_factory=dict)
    #: event_id -> live profile, for touchpoints that move.
    touchpoints: dict[str, str] = field(default_factory=dict)
    #: Whether ``profiles``' identifiers replace those of every profile concerned.
    regroup_identifiers: bool = False
    identifier_sources: dict[str, tuple[str, str]] = field(default_factory=dict)
    deltas: list[IdentityDelta] = field(default_factory=list)
    kept_apart: list[tuple[str, str]] = field(default_factory=list)
    #: (review id, new status): the review must still be open.
    review: tuple[int, str] | None = None


@dataclass(slots=True)
class ErasureWrite:
    """A customer's erasure: everything of ``family`` goes, a tombstone of hashes stays."""

    operation: OperationRecord
    profile_id: str
    version: int
    #: The live profile and every profile merged into it.
    family: list[str]
    #: (keyed hash, via) for every identifier key, profile id and event id of the customer.
    hashes: list[tuple[str, Via]]
    delta: IdentityDelta


class StoreTransaction(ABC):
    """One atomic unit of resolution work; see :meth:`GraphStore.transaction`."""

    async def prefetch(self, batch: Sequence[PreparedEvent], rules: Rules) -> None:
        """Load the whole batch's neighbourhood up front.

        A remote store answers the per-event calls that follow from what this loaded plus its
        own pending writes, so a batch costs a few round trips instead of several per event.
        A local store has nothing to gain and keeps this no-op.
        """

    @abstractmethod
    async def outcome(self, event_id: str) -> Outcome | None:
        """The stored outcome of an already-applied event, or None."""

    @abstractmethod
    async def context(self, prepared: PreparedEvent, rules: Rules) -> ResolutionContext:
        """The event's neighbourhood, found by identifier keys and blocking keys only."""

    @abstractmethod
    async def apply(self, prepared: PreparedEvent, changes: ChangeSet) -> None:
        """Write one event's changes, its decision and its deltas (the outbox)."""

    @abstractmethod
    async def refuse(self, prepared: PreparedEvent, record: DecisionRecord) -> None:
        """Remember that an event was refused (it belongs to an erased customer), keeping none of it
        but its id and the reason, so a redelivery is answered with the same refusal."""


# The store's roles. Each consumer names the one it uses (the resolver resolves, the API reads,
# the relay drains the outbox), so what a module may do with the store shows in its signature,
# and a new role method cannot creep into code that had no business calling it. They are
# protocols so that a consumer needing two roles can compose them (``class X(A, B, Protocol)``);
# :class:`GraphStore` composes all of them and is what the stores implement.


class ResolutionStore(Protocol):
    """Resolving events: one transaction per batch (see :class:`StoreTransaction`)."""

    @abstractmethod
    def transaction(self, *, claim_s: float = 0.0) -> AbstractAsyncContextManager[StoreTransaction]:
        """A transaction: committed when the block exits normally, rolled back on error.

        With ``claim_s``, the caller sends the deltas it writes itself: for that long
        :meth:`Outbox.orphaned_deltas` leaves them to it.
        """


class ReadViews(Protocol):
    """What people and APIs read: profiles, timelines, decisions, reviews."""

    @abstractmethod
    async def survivor(self, profile_id: str) -> str | None:
        """The live profile an id resolves to, following merge lineage; None if unknown."""

    @abstractmethod
    async def profile(self, profile_id: str) -> ProfileSnapshot | None:
        """The live profile for an id (a merged id answers with its survivor)."""

    async def decision(self, event_id: str) -> DecisionRecord | None:
        return (await self.decisions([event_id])).get(event_id)

    @abstractmethod
    async def decisions(self, event_ids: Sequence[str]) -> dict[str, DecisionRecord]:
        """The decisions of ``event_ids`` by event id, read at once (a console page's reviews, a
        sandbox's history a page at a time); an event with none (unknown, or refused) is left out."""

    @abstractmethod
    async def decisions_for(self, profile_id: str) -> list[DecisionRecord]:
        """Every decision that touched the profile or a profile merged into it, oldest first."""

    @abstractmethod
    async def timeline(self, profile_id: str) -> list[TimelineEntry]:
        """The customer's touchpoints across scenarios, in the order they occurred."""

    @abstractmethod
    async def search_timeline(self, profile_id: str, terms: Sequence[str], limit: int = 200, *,
                              start: datetime | None = None, end: datetime | None = None) -> list[TimelineEntry]:
        """The profile's touchpoints holding every term, from its full-text index (graph/fulltext.py),
        best match first; only those that occurred in [start, end) when given, filtered before
        ``limit`` is applied, so older matches cannot crowd out the ones in the range."""

    @abstractmethod
    async def assignments(self) -> list[tuple[str, str]]:
        """(event_id, live profile id) for every applied event, in arrival order."""

    @abstractmethod
    async def applied_count(self) -> int:
        """How many applied events the store holds (as many as :meth:`assignments` lists), counted
        without reading them: what sizes a replay's progress."""

    @abstractmethod
    async def accepted_events(self, after: tuple[int, str] = FIRST_EVENT, limit: int = 1000) -> list[AcceptedEvent]:
        """At most ``limit`` applied events after the cursor ``after`` (the last one read's
        :attr:`AcceptedEvent.cursor`), in acceptance order: a replay pages through history with it.
        The cursor is (seq, event id) because two Neo4j workers' batches may share a seq."""

    @abstractmethod
    async def sample_features(self, limit: int) -> list[Features]:
        """The matching features of at most ``limit`` stored touchpoints drawn at random: what
        ``idgraph estimate`` learns a model from when it learns from the graph itself."""

    @abstractmethod
    async def open_reviews(self) -> list[OpenReview]: ...

    @abstractmethod
    async def open_review_count(self) -> int:
        """How many reviews are open, read from the status index: what the queue gauge samples,
        at a cost that does not grow with the queue."""

    @abstractmethod
    async def reviews(self, status: str | None = None) -> list[ReviewRecord]:
        """Reviews (of one status if given) by id, with their verdicts."""

    async def review(self, review_id: int) -> ReviewRecord | None:
        return next((r for r in await self.reviews() if r["id"] == review_id), None)

    @abstractmethod
    async def profile_growth(self, threshold: int, limit: int = 10) -> ProfileGrowth:
        """The ``limit`` largest live profiles and how many hold more than ``threshold`` records.

        Answered from a per-profile record count the store keeps with every write, through an
        index: polled by every worker, it must not scan the graph.
        """

    @abstractmethod
    async def generic_identifiers(self, rules: Rules) -> list[tuple[str, int]]:
        """Identifier keys held by more profiles than ``rules`` allow evidence from, with counts."""

    @abstractmethod
    async def identifier_holders(self, keys: Sequence[str]) -> dict[str, list[str]]:
        """For each key held by some profile, the live profiles holding it, sorted."""

    @abstractmethod
    async def operations_for(self, profile_id: str) -> list[OperationDocument]:
        """Records of operations by people that concern the profile or one merged into it, oldest first."""


def decode_deltas(rows: Iterable[tuple[str, str | bytes]], known: Collection[str]) -> list[IdentityDelta]:
    """Outbox rows (delta id, stored JSON) as deltas, leaving out undecoded those in ``known``."""
    return [IdentityDelta.from_json(delta) for delta_id, delta in rows if delta_id not in known]


class Outbox(Protocol):
    """The deltas written with each batch, until the relay has them on the broker."""

    @abstractmethod
    async def unpublished_deltas(self, event_ids: Sequence[str] | None = None, limit: int = 1000, *,
                                 profile_ids: Sequence[str] = (), known: Collection[str] = ()) -> list[IdentityDelta]:
        """Deltas written but not yet confirmed as published, oldest first.

        With ``event_ids`` or ``profile_ids``, only the deltas of those events or about those
        profiles; otherwise all of them. Deltas whose ids are in ``known`` (the caller holds them
        already) are left out without being decoded; they still count towards ``limit``.
        """

    @abstractmethod
    async def orphaned_deltas(self, limit: int = 1000, *, known: Collection[str] = ()) -> list[IdentityDelta]:
        """Unpublished deltas that no writer is sending, oldest first: those written without a
        claim (the profile API's, a batch CLI's) and those whose writer's claim ran out (a
        worker that died or cannot reach the broker). ``known`` as for :meth:`unpublished_deltas`.
        """

    @abstractmethod
    async def mark_published(self, delta_ids: list[str]) -> None: ...


class SubscriptionRegistry(Protocol):
    """Subscriptions as registered, shared by every worker and the API."""

    @abstractmethod
    async def subscription_documents(self) -> dict[str, dict[str, Any]]:
        """Registered subscriptions by name, as the documents they were saved as."""

    @abstractmethod
    async def put_subscription(self, name: str, document: dict[str, Any]) -> None:
        """Register or replace a subscription."""

    @abstractmethod
    async def delete_subscription(self, name: str) -> bool:
        """Remove a subscription; False when there was none of that name."""


class ProfileOperations(Protocol):
    """The store side of operations by people (service/operations.py): merge, split, review, erase."""

    @property
    @abstractmethod
    def erasure_key(self) -> bytes:
        """The secret that keys tombstone hashes; created with the store, the same for every worker."""

    @abstractmethod
    async def family(self, profile_id: str) -> Family | None:
        """The live profile behind an id with its lineage, touchpoints and identifier provenance."""

    @abstractmethod
    async def apply_operation(self, write: OperationWrite) -> None:
        """Write a merge, split or review verdict atomically; :class:`StoreConflict` if a profile it
        read has changed or its review was decided meanwhile."""

    @abstractmethod
    async def erase(self, write: ErasureWrite) -> None:
        """Remove a customer's personal data and leave a tombstone, atomically; afterwards no
        personal value of theirs may remain anywhere in the store's files."""

    @abstractmethod
    async def tombstone(self, profile_id: str) -> TombstoneRecord | None:
        """What is left of an erased customer's id, or None when it belonged to none."""


class BlockingIndex(Protocol):
    """The blocking index kept in step with the rule set (identity/features.py names each key by its rule).

    Records carry keys of the rules running when they were written: a rule added later has no
    keys on older records, one removed leaves keys nothing reads. The store records the
    signature of the rules its index was built with, so a worker can tell at start.
    """

    @abstractmethod
    async def blocking_signature(self) -> str | None:
        """The signature (identity.features.blocking_signature) the index was built with;
        ``POSITIONAL`` for keys named by rule position (before rule ids), None if none is known."""

    @abstractmethod
    async def record_blocking_signature(self, signature: str) -> None:
        """Record the signature of the rules writing to an index that had none recorded."""

    @abstractmethod
    async def reindex_blocking(self, rules: Rules) -> int:
        """Rebuild every record's blocking keys from its stored features under ``rules`` and record
        their signature; returns the records reindexed."""

    @abstractmethod
    async def backfill_term_counts(self, rules: Rules) -> int:
        """Count the term frequencies of the records that count none (stored before the store
        counted them) from their features under ``rules``, once per profile and value; returns
        the records counted. Safe while workers write: no record is counted twice (on Neo4j a
        value a worker counts for the same profile meanwhile may be, once)."""


#: The signature of an index whose keys were named ``b{position}:`` in the rule file.
POSITIONAL = "positional"


class UnknownModel(StoreError):
    """A model version the registry does not hold."""


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    """A rule set as registered: ``version`` is its ``Rules.model_version`` (name@fingerprint)."""

    version: str
    rules_yaml: str
    registered_at: str
    registered_by: str


@dataclass(frozen=True, slots=True)
class Promotion:
    """One change of the live model, as the promotion log keeps it."""

    seq: int
    version: str
    #: The version live before; None for the first promotion.
    previous: str | None
    #: ``promote`` or ``rollback``.
    action: str
    by: str
    at: str
    reason: str


class ModelRegistry(Protocol):
    """Versioned rule sets kept with the graph, and which one is live, so every worker agrees.

    Workers read :meth:`live_model` once per batch, so it is one indexed read.
    """

    @abstractmethod
    async def register_model(self, version: str, rules_yaml: str, by: str) -> bool:
        """Keep a rule set under its version; False (and nothing changed) when it is already held."""

    @abstractmethod
    async def model(self, version: str) -> RegisteredModel | None: ...

    @abstractmethod
    async def models(self) -> list[RegisteredModel]:
        """Every registered model, in registration order."""

    @abstractmethod
    async def live_model(self) -> str | None:
        """The live version; None before the first promotion."""

    @abstractmethod
    async def promote_model(self, version: str, *, expected: str | None, action: str, by: str,
                            reason: str) -> Promotion:
        """Make ``version`` live and log it, in one transaction: :class:`UnknownModel` when it is not
        registered, :class:`StoreConflict` when the live version is no longer ``expected``; either
        way, and on any failure part way, the live version stays as it was."""

    @abstractmethod
    async def promotions(self) -> list[Promotion]:
        """The promotion log, oldest first."""


class GraphStore(ResolutionStore, ReadViews, Outbox, SubscriptionRegistry, ProfileOperations, BlockingIndex, ModelRegistry,
                 ABC):
    """A durable identity graph in every role. Implementations must be safe to reopen after a crash."""

    #: Short name for metrics and logs ("sqlite", "neo4j").
    kind: str

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema."""

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
