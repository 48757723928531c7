"""The touchpoint notice contract (``schema_version`` 1): a resolved touchpoint, for scenarios.

Scenarios that act on what happened (a recycling request, an assessment) rather than on how
a profile changed subscribe to event types; they receive each such touchpoint once it is
resolved, with the profile it belongs to and only the traits they are entitled to.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from msgspec import Struct

from identity.deltas import DeltaTimes
from identity.features import PreparedEvent, identifiers_by_type
from identity.model import DecisionRecord

NOTICE_KIND: Final = "touchpoint"


class NoticeDecision(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    action: str
    confidence: float


class TouchpointNotice(Struct, kw_only=True, forbid_unknown_fields=True):
    """Built by the worker from a checked event, never decoded: a Struct, like the deltas beside it."""

    schema_version: Literal[1] = 1
    kind: Literal["touchpoint"] = NOTICE_KIND
    event_id: str
    event_type: str
    scenario: str
    profile_id: str
    traits: dict[str, Any]
    identifiers: dict[str, list[str]]
    payload: dict[str, Any]
    #: The event's ``causation`` (identity/events.py ``Causation``) as JSON values.
    causation: dict[str, Any] | None = None
    decision: NoticeDecision
    times: DeltaTimes

    def as_json(self) -> dict[str, Any]:
        """The notice as JSON values, leaving out its fields (and its parts' fields) that are None;
        None inside the payload or traits stays, as sent."""
        form: dict[str, Any] = msgspec.to_builtins(self)
        for part in ("times", "causation"):
            if form.get(part) is not None:
                form[part] = _without_nones(form[part])
        return _without_nones(form)

    def to_json(self) -> bytes:
        return msgspec.json.encode(self.as_json())


def _without_nones(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


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
        causation=None if event.causation is None else event.causation.model_dump(mode="json"),
        decision=NoticeDecision(action=decision["action"], confidence=float(decision["confidence"])),
        times=DeltaTimes(occurred_at=event.occurred_at.isoformat(), ingested_at=ingested_at, resolved_at=resolved_at),
    )
