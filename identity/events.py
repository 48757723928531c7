"""The touchpoint event contract (``schema_version`` 1).

A touchpoint is one moment in which a business scenario saw a customer. Platforms
produce them as JSON; everything downstream (resolution, deltas, the timeline) is
derived from them, so this is the one place the shape is defined and checked.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from identity.jsonform import JsonOnce

SCHEMA_VERSION: Final = 1
MAX_EVENT_BYTES = 256 * 1024
#: How deeply objects and arrays may nest in an event: deeper than any real payload needs, and
#: far below what JSON encoders refuse (orjson stops at 255 levels when writing an event back).
MAX_NESTING = 32

#: Strong identifier types known to the product; any ``namespace:name`` type is accepted too.
KNOWN_IDENTIFIER_TYPES = frozenset(
    {"email", "phone", "wechat_openid", "device_id", "crm_id", "national_id"}
)
#: Every profile holds its own id under this identifier type, so a profile id resolves like
#: any identifier: exactly, and through merge lineage to the survivor.
PROFILE_ID_TYPE = "idgraph:profile"
CONSENT_PURPOSES = ("marketing", "ai_training", "analytics", "third_party_sharing")

_SCENARIO = r"^[a-z0-9][a-z0-9._-]{0,127}$"
_CUSTOM_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}:[a-z0-9][a-z0-9_.-]{0,63}$")
_TRAIT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")

Scalar = str | int | float | bool | None
IdentifierValue = Annotated[str, Field(min_length=1, max_length=512)]


class FieldError(BaseModel):
    """One reason an event was refused, with the path of the offending field."""

    model_config = ConfigDict(frozen=True)

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class EventRejected(ValueError):
    """An event that cannot be accepted; ``reason_class`` is a bounded label for metrics."""

    def __init__(self, reason_class: str, errors: list[FieldError]) -> None:
        self.reason_class = reason_class
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))

    def as_dict(self) -> dict[str, Any]:
        return {"reason_class": self.reason_class, "errors": [e.model_dump() for e in self.errors]}


class Causation(BaseModel):
    """What caused a scenario to emit this event, so flows across scenarios can be traced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str | None = None
    delta_id: str | None = None
    #: How many scenario hops led here; workers refuse events past their hop limit.
    hops: int = Field(default=0, ge=0)
    #: The profile the causing delta or touchpoint was about: the event resolves to it (or to
    #: whatever it was merged into) without needing identifiers of its own.
    profile_id: str | None = Field(default=None, min_length=1, max_length=64)


class TouchpointEvent(JsonOnce):
    """One touchpoint as produced by a platform."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(min_length=1, max_length=128)
    scenario: str = Field(pattern=_SCENARIO)
    type: str = Field(min_length=1, max_length=128)
    occurred_at: datetime
    identifiers: dict[str, IdentifierValue | list[IdentifierValue]] = Field(default_factory=dict)
    traits: dict[str, Scalar] = Field(default_factory=dict)
    consent: dict[Literal["marketing", "ai_training", "analytics", "third_party_sharing"], bool] | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    causation: Causation | None = None

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _rfc3339_text(cls, value: object) -> object:
        # pydantic would also take epoch numbers (even as strings); the contract says RFC 3339.
        if not isinstance(value, str) or not _RFC3339.match(value):
            raise ValueError("must be an RFC 3339 timestamp, e.g. 2026-01-31T09:30:00+08:00")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _needs_offset(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("RFC 3339 timestamps need a UTC offset, e.g. 2026-01-31T09:30:00+08:00")
        return value

    @field_validator("identifiers")
    @classmethod
    def _identifier_types(cls, value: dict[str, Any]) -> dict[str, Any]:
        for position, type_ in enumerate(value, start=1):
            if type_ not in KNOWN_IDENTIFIER_TYPES and not _CUSTOM_TYPE.match(type_):
                # Named by position, not echoed: a producer that puts a value where a key goes
                # would otherwise leak it into refusal reasons and logs.
                raise ValueError(
                    f"identifier #{position} has an unknown type: use one of {sorted(KNOWN_IDENTIFIER_TYPES)} "
                    "or a custom 'namespace:name' type"
                )
        return value

    @field_validator("traits")
    @classmethod
    def _trait_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for position, name in enumerate(value, start=1):
            if not _TRAIT_NAME.match(name):
                raise ValueError(f"trait #{position} has a name that is not lower_snake_case (a-z, 0-9, _)")
        return value

    def identifier_pairs(self) -> list[tuple[str, str]]:
        """(type, raw value) for every identifier, lists flattened, in a stable order."""
        pairs: list[tuple[str, str]] = []
        for type_, raw in sorted(self.identifiers.items()):
            for value in raw if isinstance(raw, list) else [raw]:
                pairs.append((type_, value))
        return pairs

    def digest(self) -> str:
        """A fingerprint of the event's content, equal for equal events however they were encoded.

        A redelivery carries the same content under the same id; the same id with another digest
        is a producer reusing ids, which must not pass for a redelivery. ``occurred_at`` is left
        out: a scenario acting again on a redelivered delta emits the same event (same id) with
        the time it acted, and that is a redelivery, not another event.
        """
        content = {name: value for name, value in self.as_json().items() if name != "occurred_at"}
        canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def id_reused() -> EventRejected:
    """The refusal of an event whose id an event with other content already used."""
    reason = "this event_id was already used by an event with other content; this one was not applied"
    return EventRejected("id_conflict", [FieldError(path="event_id", reason=reason)])


def _path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _too_deep(event: dict[str, Any]) -> str | None:
    """The top-level field under which the event nests deeper than :data:`MAX_NESTING`, if any.

    Walked with a stack, not recursion: the point is to refuse what would exhaust one.
    """
    for field, value in event.items():
        if not isinstance(value, (dict, list)):
            continue  # most top-level fields are scalars: nothing to walk
        # Only containers go on the stack: a scalar is as deep as its container's children.
        stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
        while stack:
            node, depth = stack.pop()
            children = node.values() if isinstance(node, dict) else node
            if depth > MAX_NESTING or (depth == MAX_NESTING and children):
                return str(field)
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return None


def parse_event(raw: bytes | str | dict[str, Any]) -> TouchpointEvent:
    """Decode and check one event; raise :class:`EventRejected` naming every bad field."""
    if isinstance(raw, (bytes, str)):
        size = len(raw.encode() if isinstance(raw, str) else raw)
        if size > MAX_EVENT_BYTES:
            raise EventRejected(
                "oversized", [FieldError(path="", reason=f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}")]
            )
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EventRejected("not_json", [FieldError(path="", reason=f"not valid JSON: {exc}")]) from None
    if not isinstance(raw, dict):
        raise EventRejected("schema", [FieldError(path="", reason="an event must be a JSON object")])
    if (path := _too_deep(raw)) is not None:
        raise EventRejected("schema", [FieldError(path=path, reason=f"nested more than {MAX_NESTING} levels deep")])
    try:
        return TouchpointEvent.model_validate(raw)
    except ValidationError as exc:
        errors = [FieldError(path=_path(e["loc"]), reason=e["msg"]) for e in exc.errors()]
        raise EventRejected("schema", errors) from None
