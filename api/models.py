"""The API's request and response documents; their JSON Schemas are the OpenAPI spec's."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Purpose = Literal["marketing", "ai_training", "analytics", "third_party_sharing"]
Scalar = str | int | float | bool


class TraitOut(BaseModel):
    value: Any = None
    scenario: str = Field(description="The scenario whose write this is (``customer`` for the customer's own)")
    event_id: str
    observed_at: str
    confidence: float


class ConsentOut(BaseModel):
    granted: bool
    source: str | None = Field(default=None, description="Scenario (or ``customer``) that recorded the answer")
    at: str | None = None
    event_id: str | None = None


class ProfileOut(BaseModel):
    id: str = Field(description="The live profile")
    requested_id: str
    merged_into: str | None = Field(default=None, description="Set when the requested id was merged into ``id``")
    version: int
    created_at: str
    updated_at: str
    identifiers: dict[str, list[str]]
    traits: dict[str, TraitOut]
    consent: dict[str, ConsentOut]
    merged_from: list[str]


class RectifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    traits: dict[str, Scalar] = Field(min_length=1, max_length=32,
                                      description="Customer-owned traits to correct (see the policy)")


class RectifyOut(BaseModel):
    event_id: str
    action: str
    refused: list[dict[str, Any]] = Field(description="Corrections the policy did not apply, with the reason")
    profile: ProfileOut


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purposes: dict[Purpose, bool] = Field(min_length=1)


class ConsentDocument(BaseModel):
    profile_id: str
    purposes: dict[str, ConsentOut]


class TimelineEntryOut(BaseModel):
    event_id: str
    scenario: str
    type: str
    occurred_at: str
    event: dict[str, Any]


class TimelineOut(BaseModel):
    profile_id: str
    query: str | None = None
    entries: list[TimelineEntryOut]


class ExportOut(BaseModel):
    format: Literal["idgraph.export/1"] = "idgraph.export/1"
    exported_at: str
    profile: ProfileOut
    timeline: list[TimelineEntryOut]
    decisions: list[dict[str, Any]] = Field(description="Automatic decisions about the customer's touchpoints")
    operations: list[dict[str, Any]] = Field(description="Operations by people: merges, splits, review verdicts")


class ErasureOut(BaseModel):
    profile_id: str
    erased_at: str
    operation_id: str
    already_erased: bool = False


class DeltaSummary(BaseModel):
    delta_id: str
    profile_id: str
    profile_version: int
    kind: str


class OperationOut(BaseModel):
    operation: dict[str, Any]
    deltas: list[DeltaSummary]


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile_ids: list[str] = Field(min_length=2, max_length=20)
    reason: str = Field(min_length=1, max_length=1000)


class SplitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    separate: str = Field(min_length=1, max_length=128, description="A profile merged into this one by mistake")
    reason: str = Field(min_length=1, max_length=1000)


class VerdictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verdict: Literal["approve", "reject"]
    reason: str = Field(min_length=1, max_length=1000)


class ReviewOut(BaseModel):
    id: int
    event_id: str
    profile_ids: list[str]
    reason: str
    confidence: float
    created_at: str
    status: str
    decided_at: str | None = None
    decided_by: str | None = None
    operation_id: str | None = None


class ResolveCandidate(BaseModel):
    profile_id: str
    matched: list[str] = Field(description="Identifier types of the query this profile holds")


class ResolveOut(BaseModel):
    profile_id: str
    confidence: float = Field(ge=0, le=1, description="Share of the given identifiers held by this profile alone")
    matched: list[str]
    candidates: list[ResolveCandidate]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    store: str
