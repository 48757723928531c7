"""The identity delta contract (``schema_version`` 1): one change to one customer's identity.

Deltas are what scenarios consume. Each carries the changed fields with old and new
values, the profile's new version (strictly increasing per profile, so consumers can
drop stale or repeated deltas), what caused it, and timestamps along the way so any
consumer can measure propagation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta, Struct

DeltaKind = Literal["profile.created", "profile.updated", "profile.merged", "profile.split", "profile.erased"]
DELTA_KINDS: tuple[DeltaKind, ...] = get_args(DeltaKind)

# msgspec rather than pydantic: the engine builds a delta or two per event from values it has
# already checked, and pydantic validated each one again on construction (~40 µs an event in
# perf.hotpath's profile, with its dump). A Struct is built without checks; a delta read back
# from the outbox is checked once, as it is decoded (IdentityDelta.from_json).


class FieldChange(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    old: Any = None
    new: Any = None


class Cause(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The event and decision behind a delta."""

    event_id: str
    scenario: str
    event_type: str
    action: str
    confidence: Annotated[float, Meta(ge=0, le=1)]
    #: Scenario hops behind the causing event (its ``causation.hops``), so a scenario acting on
    #: this delta emits at ``hops + 1``.
    hops: Annotated[int, Meta(ge=0)] = 0


class DeltaTimes(Struct, kw_only=True, forbid_unknown_fields=True):
    """Wall-clock times (RFC 3339, UTC) along the event's path; ``emitted_at`` is set on publish."""

    occurred_at: str
    ingested_at: str | None = None
    resolved_at: str
    emitted_at: str | None = None


class IdentityDelta(Struct, kw_only=True, forbid_unknown_fields=True):
    schema_version: Literal[1] = 1
    delta_id: str
    profile_id: str
    profile_version: Annotated[int, Meta(ge=1)]
    kind: DeltaKind
    #: ``traits.<name>`` or ``identifiers.<type>`` -> old and new value.
    changes: dict[str, FieldChange] = {}
    merged_from: list[str] = []
    #: The profile after the change (``traits`` name -> value, ``identifiers`` type -> values);
    #: subscriptions filter on it and project it down to the fields they are entitled to.
    profile: dict[str, dict[str, Any]] = {}
    cause: Cause
    times: DeltaTimes

    def emit(self, at: str) -> None:
        """Stamp ``times.emitted_at`` as the delta is published."""
        self.times.emitted_at = at

    def to_json(self) -> bytes:
        return _ENCODER.encode(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "IdentityDelta":
        """A delta from its JSON form, checked against this contract (``msgspec.ValidationError`` if it breaks it)."""
        return _DECODER.decode(raw)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(IdentityDelta)
