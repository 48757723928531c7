"""The identity delta contract (``schema_version`` 1): one change to one customer's identity.

Deltas are what scenarios consume. Each carries the changed fields with old and new
values, the profile's new version (strictly increasing per profile, so consumers can
drop stale or repeated deltas), what caused it, and timestamps along the way so any
consumer can measure propagation.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field

from identity.jsonform import JsonOnce

DeltaKind = Literal["profile.created", "profile.updated", "profile.merged", "profile.split", "profile.erased"]
DELTA_KINDS: tuple[DeltaKind, ...] = get_args(DeltaKind)


class FieldChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    old: Any = None
    new: Any = None


class Cause(BaseModel):
    """The event and decision behind a delta."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    event_id: str
    scenario: str
    event_type: str
    action: str
    confidence: float = Field(ge=0, le=1)
    #: Scenario hops behind the causing event (its ``causation.hops``), so a scenario acting on
    #: this delta emits at ``hops + 1``.
    hops: int = Field(default=0, ge=0)


class DeltaTimes(BaseModel):
    """Wall-clock times (RFC 3339, UTC) along the event's path; ``emitted_at`` is set on publish."""

    model_config = ConfigDict(extra="forbid")
    occurred_at: str
    ingested_at: str | None = None
    resolved_at: str
    emitted_at: str | None = None


class IdentityDelta(JsonOnce):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    delta_id: str
    profile_id: str
    profile_version: int = Field(ge=1)
    kind: DeltaKind
    #: ``traits.<name>`` or ``identifiers.<type>`` -> old and new value.
    changes: dict[str, FieldChange] = Field(default_factory=dict)
    merged_from: list[str] = Field(default_factory=list)
    #: The profile after the change (``traits`` name -> value, ``identifiers`` type -> values);
    #: subscriptions filter on it and project it down to the fields they are entitled to.
    profile: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cause: Cause
    times: DeltaTimes

    def emit(self, at: str) -> None:
        """Stamp ``times.emitted_at``: the one change a delta sees after its JSON form is read."""
        self.times.emitted_at = at
        if (found := self._kept()["_json"]) is not None:
            # A new dict, not an update: projections built before keep the times they were given.
            self.replace_json({**found, "times": {**found["times"], "emitted_at": at}})

    @classmethod
    def from_json(cls, raw: bytes | str) -> "IdentityDelta":
        return cls.model_validate(orjson.loads(raw))
