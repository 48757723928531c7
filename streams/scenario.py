"""The scenario runtime: a business scenario as a subscription plus a handler.

A scenario declares its name, what it wants (delta kinds, touchpoint types, the fields it
is entitled to) and an async handler. The handler receives each projected delta or
touchpoint notice from the scenario's own topic and may emit touchpoint events back into
``touchpoints``; every emitted event carries its causation (the event and delta behind it,
the profile it is about, and one more hop), so a flow across scenarios can be traced and a
runaway loop stopped at the worker's hop limit.

Scenarios run as Faust agents: inside the worker (``IDGRAPH_SCENARIOS=module:object``) or
in a process of their own (``idgraph scenario run module:object``) — the same code either
way, talking to idgraph only through Kafka topics. A scenario in another language does the
same by following the documented topics: declare its subscription on
``idgraph.subscriptions``, consume ``scenario.<name>``, produce to ``touchpoints`` (each with
the worker's topic namespace in front, empty when live).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Sequence

import faust
import orjson
import structlog

from identity.events import TouchpointEvent, parse_event
from identity.model import stable_id
from identity.topics import TopicNames
from sinks.deadletter import DeadLetter, write_dead_letters
from sinks.publisher import Publisher
from sinks.subscriptions import Subscription

log = structlog.get_logger("idgraph.scenario")

Handler = Callable[["Message", "ScenarioContext"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Message:
    """One delivery to a scenario: a projected delta, or a touchpoint notice (``kind == "touchpoint"``)."""

    body: dict[str, Any]
    received_at: float

    @property
    def kind(self) -> str:
        return self.body["kind"]

    @property
    def is_touchpoint(self) -> bool:
        return self.kind == "touchpoint"

    @property
    def profile_id(self) -> str:
        return self.body["profile_id"]

    @property
    def traits(self) -> dict[str, Any]:
        return self.body["traits"] if self.is_touchpoint else self.body["profile"].get("traits", {})

    @property
    def payload(self) -> dict[str, Any]:
        return self.body.get("payload", {}) if self.is_touchpoint else {}

    @property
    def event_id(self) -> str:
        """The touchpoint behind this message (a delta's cause)."""
        return self.body["event_id"] if self.is_touchpoint else self.body["cause"]["event_id"]

    @property
    def delta_id(self) -> str | None:
        return None if self.is_touchpoint else self.body["delta_id"]

    @property
    def hops(self) -> int:
        if self.is_touchpoint:
            return (self.body.get("causation") or {}).get("hops", 0)
        return self.body["cause"].get("hops", 0)


@dataclass(frozen=True)
class Scenario:
    name: str
    handler: Handler
    fields: tuple[str, ...]
    kinds: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    filters: tuple[dict[str, Any], ...] = ()
    #: Messages handled at once. 1 keeps each profile's messages in order; a scenario that
    #: waits on something slow (an edge model) needs more, or it falls behind its input.
    concurrency: int = 1

    def subscription(self) -> Subscription:
        return Subscription.model_validate({
            "name": self.name, "kinds": list(self.kinds), "event_types": list(self.event_types),
            "fields": list(self.fields), "filters": list(self.filters),
        })


@dataclass
class ScenarioContext:
    """What a handler may do besides reading its message: emit touchpoints caused by it."""

    scenario: str
    message: Message
    publish: Publisher
    topics: TopicNames
    emitted: list[TouchpointEvent] = field(default_factory=list)

    async def emit(self, type: str, *, traits: dict[str, Any] | None = None, payload: dict[str, Any] | None = None,
                   identifiers: dict[str, Any] | None = None) -> TouchpointEvent:
        """Emit a touchpoint about the message's profile; its id is derived, so a redelivery re-emits the same event."""
        message = self.message
        event = parse_event({
            "event_id": stable_id("s", self.scenario, message.delta_id or message.event_id, type),
            "scenario": self.scenario,
            "type": type,
            "occurred_at": datetime.now(timezone.utc).isoformat(),
            "identifiers": identifiers or {},
            "traits": traits or {},
            "payload": payload or {},
            "causation": {"event_id": message.event_id, "delta_id": message.delta_id,
                          "hops": message.hops + 1, "profile_id": message.profile_id},
        })
        ack = await self.publish(self.topics.touchpoints, message.profile_id.encode(), event.to_json())
        await ack
        self.emitted.append(event)
        return event


async def deliver(scenario: Scenario, raw: bytes, publish: Publisher, topics: TopicNames) -> ScenarioContext | None:
    """Run the handler on one record; a failure is dead-lettered and logged, never raised."""
    try:
        message = Message(orjson.loads(raw), time.time())
        context = ScenarioContext(scenario.name, message, publish, topics)
        await scenario.handler(message, context)
        return context
    except Exception as exc:  # noqa: BLE001 - one bad message must not stop the scenario
        reason = f"{type(exc).__name__}: {exc}"
        log.error("scenario failed on a message", scenario=scenario.name, error=reason)
        letter = DeadLetter.build(raw, "scenario_failed", [{"path": "", "reason": reason}], {"scenario": scenario.name})
        await write_dead_letters(publish, topics.dead_letter, [letter])
        return None


def register(app: faust.App, scenario: Scenario, publish: Publisher, topics: TopicNames,
             on_delivered: Callable[[Scenario, ScenarioContext | None], None] | None = None) -> None:
    """Run ``scenario`` as an agent of ``app`` on its own topic (in ``topics``' namespace)."""
    topic = app.topic(topics.scoped(scenario.subscription().topic), value_serializer="raw", key_serializer="raw")

    async def run(stream: faust.StreamT) -> None:
        async for event in stream.events():
            if event.value is None:  # an erased profile's tombstone, for compaction: no message
                continue
            context = await deliver(scenario, event.value, publish, topics)
            if on_delivered is not None:
                on_delivered(scenario, context)

    app.agent(topic, name=f"scenario.{scenario.name}", concurrency=scenario.concurrency)(run)


def load_scenarios(spec: str) -> list[Scenario]:
    """``module:object[,module:object]``; each object a :class:`Scenario` or a sequence of them."""
    found: list[Scenario] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        module_name, _, attribute = item.partition(":")
        if not attribute:
            raise ValueError(f"{item!r}: expected module:object")
        target = getattr(importlib.import_module(module_name), attribute)
        scenarios: Sequence[Any] = target if isinstance(target, (list, tuple)) else [target]
        for scenario in scenarios:
            if not isinstance(scenario, Scenario):
                raise ValueError(f"{item}: {scenario!r} is not a Scenario")
            found.append(scenario)
    return found
