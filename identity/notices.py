"""The touchpoint notice contract (``schema_version`` 1): a resolved touchpoint, for scenarios.

Scenarios that act on what happened (a recycling request, an assessment) rather than on how
a profile changed subscribe to event types; they receive each such touchpoint once it is
resolved, with the profile it belongs to and only the traits they are entitled to.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from identity.deltas import DeltaTimes
from identity.events import Causation
from identity.features import PreparedEvent, identifiers_by_type
from identity.model import DecisionRecord

NOTICE_KIND: Final = "touchpoint"


class NoticeDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    action: str
    confidence: float


class TouchpointNotice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    kind: Literal["touchpoint"] = NOTICE_KIND
    event_id: str
    event_type: str
    scenario: str
    profile_id: str
    traits: dict[str, Any]
    identifiers: dict[str, list[str]]
    payload: dict[str, Any]
    causation: Causation | None = None
    decision: NoticeDecision
    times: DeltaTimes

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


def notice_for(prepared: PreparedEvent, decision: DecisionRecord, *, ingested_at: str | None, resolved_at: str) -> TouchpointNotice:
    """The notice of one resolved touchpoint (a redelivered event gets the same notice again)."""
    event = prepared.event
    return TouchpointNotice(
        event_id=event.event_id,
        event_type=event.type,
        scenario=event.scenario,
        profile_id=decision["profile_id"],
        traits={k: v for k, v in event.traits.items() if v is not None},
        identifiers=identifiers_by_type(prepared.identifier_keys),
        payload=event.payload,
        causation=event.causation,
        decision=NoticeDecision(action=decision["action"], confidence=decision["confidence"]),
        times=DeltaTimes(occurred_at=event.occurred_at.isoformat(), ingested_at=ingested_at, resolved_at=resolved_at),
    )
