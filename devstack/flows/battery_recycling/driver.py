"""Driving the battery-recycling flow and timing every hop, for the demo, the benchmark and the tests.

The driver plays the platforms: the service scenario's lifetime-value predictions (which set
``value_tier``), a marketing campaign that tries to relabel some customers (and must lose),
and the site-intake requests that start each flow. It watches every topic the flow crosses
without joining any consumer group, and follows the causation chain of each request:

  intake produced -> assessment notified -> battery_assessed emitted -> quoting notified
  -> quote_issued emitted -> sales notified (high-value customers only)

Scenario processing is notified -> emitted inside a scenario; everything else is pipeline.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from functools import cache
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import orjson
from aiokafka import AIOKafkaProducer

from devstack.flows.battery_recycling import POLICY_PATH
from devstack.probe import TopicWatcher
from identity.events import parse_event
from identity.features import partition_key
from identity.rules import Rules, load_rules
from identity.topics import LIVE

ASSESSMENT_TOPIC = "scenario.battery-recycling.assessment"
QUOTING_TOPIC = "scenario.battery-recycling.quoting"
SALES_TOPIC = "scenario.sales"
WATCHED = (LIVE.touchpoints, ASSESSMENT_TOPIC, QUOTING_TOPIC, SALES_TOPIC)
HOPS = ("intake -> assessment", "assessment -> quoting", "quoting -> profile -> sales")


@dataclass(frozen=True, slots=True)
class FlowCustomer:
    key: int
    phone: str
    name: str
    high_value: bool
    relabelled: bool  # marketing tries to overwrite value_tier


@dataclass(slots=True)
class Flow:
    """Observed times (time.time()) along one request's chain."""

    customer: FlowCustomer
    intake_id: str
    produced: float
    assessment_notified: float | None = None
    assessed_id: str | None = None
    assessed_emitted: float | None = None
    quoting_notified: float | None = None
    quote_id: str | None = None
    quote_emitted: float | None = None
    sales_notified: float | None = None
    sales_body: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        last = self.sales_notified if self.customer.high_value else self.quote_emitted
        return last is not None

    def hop_ms(self) -> dict[str, float]:
        """Pipeline time per hop and scenario time, in milliseconds."""
        hops = {
            HOPS[0]: _elapsed(self.produced, self.assessment_notified),
            HOPS[1]: _elapsed(self.assessed_emitted, self.quoting_notified),
        }
        if self.sales_notified is not None:
            hops[HOPS[2]] = _elapsed(self.quote_emitted, self.sales_notified)
        return {k: v * 1000 for k, v in hops.items()}

    def processing_ms(self) -> float:
        return (_elapsed(self.assessment_notified, self.assessed_emitted)
                + _elapsed(self.quoting_notified, self.quote_emitted)) * 1000

    def total_ms(self) -> float:
        end = self.sales_notified if self.sales_notified is not None else self.quote_emitted
        return _elapsed(self.produced, end) * 1000


def _elapsed(start: float | None, end: float | None) -> float:
    """Seconds from one observed step of a flow to a later one."""
    if start is None or end is None:
        raise ValueError("the flow was not observed this far")
    return end - start


def make_customers(count: int, seed: int = 11) -> list[FlowCustomer]:
    rng = random.Random(seed)
    surnames, given = "王李张刘陈杨赵黄周吴", "伟芳娜敏静丽强磊军洋"
    return [FlowCustomer(i, f"139{i:08d}", rng.choice(surnames) + rng.choice(given), i % 2 == 0, i % 5 == 0)
            for i in range(count)]


#: (record key, value) of a touchpoint the driver produces.
Keyed = tuple[bytes | None, bytes]


def _event(event_id: str, scenario: str, type_: str, customer: FlowCustomer, traits: dict[str, Any],
           payload: dict[str, Any] | None = None, at: datetime | None = None) -> Keyed:
    """A platform's touchpoint, keyed as platforms should: one customer's events keep their order."""
    body = {
        "event_id": event_id, "scenario": scenario, "type": type_,
        "occurred_at": (at or datetime.now(timezone.utc)).isoformat(),
        "identifiers": {"phone": customer.phone}, "traits": traits, "payload": payload or {},
    }
    return partition_key(parse_event(body), _bundled_rules()), orjson.dumps(body)


@cache
def _bundled_rules() -> Rules:
    """For record keys only: the bundled rules normalise phones as the flow's worker does."""
    return load_rules()


def intake_event(customer: FlowCustomer, rng: random.Random) -> tuple[str, Keyed]:
    event_id = f"intake-{customer.key:06d}"
    capacity = rng.choice([40, 60, 75, 100])
    measurements = {"nominal_capacity_kwh": capacity, "measured_capacity_kwh": round(capacity * rng.uniform(0.45, 0.98), 1),
                    "internal_resistance_mohm": round(rng.uniform(0.8, 3.2), 2), "swelling": rng.random() < 0.05}
    battery = {"serial": f"BT-{customer.key:06d}", "chemistry": rng.choice(["NMC811", "NMC622", "LFP"]), "capacity_kwh": capacity}
    payload = {"battery": battery, "measurements": measurements, "photo_ref": f"s3://intake/{customer.key:06d}.jpg"}
    return event_id, _event(event_id, "battery-recycling.site-intake", "recycling_requested", customer,
                            {"name": customer.name}, payload)


def setup_events(customers: list[FlowCustomer]) -> list[Keyed]:
    """Lifetime-value predictions by the service scenario, then the marketing relabels that must lose.

    Both carry the customer's phone, so they share a record key and the relabel is resolved
    after the prediction; arrival order changes only what the conflict record says it kept.
    """
    earlier = datetime.now(timezone.utc) - timedelta(minutes=5)
    events = [_event(f"ltv-{c.key:06d}", "service.ltv", "ltv_predicted", c,
                     {"name": c.name, "value_tier": "high" if c.high_value else "standard"}, at=earlier) for c in customers]
    events += [_event(f"campaign-{c.key:06d}", "marketing.campaign", "campaign_labelled", c, {"value_tier": "bronze"})
               for c in customers if c.relabelled]
    return events


class FlowObserver:
    """Follows every request's causation chain on the flow's topics."""

    def __init__(self, bootstrap: str) -> None:
        self.flows: dict[str, Flow] = {}
        self._by_assessed: dict[str, Flow] = {}
        self._by_quote: dict[str, Flow] = {}
        #: Notices read before the touchpoint that caused them, by (topic, cause event id). The
        #: worker routes a notice as soon as it resolves the touchpoint, so the notice can reach
        #: this observer first: it reads several topics at once, in no order across them.
        self._early: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._watcher = TopicWatcher(bootstrap, WATCHED, self._observe)

    async def __aenter__(self) -> "FlowObserver":
        await self._watcher.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._watcher.__aexit__(*exc)

    def _observe(self, topic: str, body: dict[str, Any], now: float) -> None:
        if topic == LIVE.touchpoints:
            cause: str = (body.get("causation") or {}).get("event_id") or ""
            if body.get("type") == "battery_assessed" and (flow := self.flows.get(cause)) and flow.assessed_emitted is None:
                flow.assessed_id, flow.assessed_emitted = body["event_id"], now
                self._by_assessed[body["event_id"]] = flow
                self._replay(QUOTING_TOPIC, body["event_id"])
            elif body.get("type") == "quote_issued" and (flow := self._by_assessed.get(cause)) and flow.quote_emitted is None:
                flow.quote_id, flow.quote_emitted = body["event_id"], now
                self._by_quote[body["event_id"]] = flow
                self._replay(SALES_TOPIC, body["event_id"])
        elif topic == ASSESSMENT_TOPIC and (flow := self.flows.get(body["event_id"])):
            flow.assessment_notified = flow.assessment_notified or now
        elif topic == QUOTING_TOPIC:
            if (flow := self._by_assessed.get(body["event_id"])) is None:
                self._early.setdefault((topic, body["event_id"]), (now, body))
            else:
                flow.quoting_notified = flow.quoting_notified or now
        elif topic == SALES_TOPIC:
            if (flow := self._by_quote.get(body["cause"]["event_id"])) is None:
                self._early.setdefault((topic, body["cause"]["event_id"]), (now, body))
            elif flow.sales_notified is None:
                flow.sales_notified, flow.sales_body = now, body

    def _replay(self, topic: str, cause: str) -> None:
        """Count a notice that arrived before its cause, now that the cause is known, at the time it arrived."""
        if (early := self._early.pop((topic, cause), None)) is not None:
            self._observe(topic, early[1], early[0])

    def completed(self) -> int:
        return sum(flow.complete for flow in self.flows.values())


async def run_flows(bootstrap: str, customers: list[FlowCustomer], rate_per_s: float, *, timeout_s: float = 60,
                    on_progress: Callable[[int, int], None] | None = None) -> list[Flow]:
    """Set up the customers, start one flow per customer at ``rate_per_s``, wait for them to finish."""
    rng = random.Random(7)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        async with FlowObserver(bootstrap) as observer:
            for key, value in setup_events(customers):
                await producer.send(LIVE.touchpoints, value, key=key)
            await producer.flush()
            await asyncio.sleep(1.0)  # predictions land before requests arrive
            started = time.perf_counter()
            for i, customer in enumerate(customers):
                if (delay := started + i / rate_per_s - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                event_id, (key, value) = intake_event(customer, rng)
                observer.flows[event_id] = Flow(customer, event_id, time.time())
                await producer.send(LIVE.touchpoints, value, key=key)
                if on_progress:
                    on_progress(i + 1, observer.completed())
            deadline = time.monotonic() + timeout_s
            while observer.completed() < len(customers) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                if on_progress:
                    on_progress(len(customers), observer.completed())
            await asyncio.sleep(0.5)  # a suggestion sent twice would arrive now
            return list(observer.flows.values())
    finally:
        await producer.stop()


#: Every flow must finish within this, scenario delays included.
FLOW_BUDGET_MS = 11_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


def flow_env(assessment_delay_s: float) -> dict[str, str]:
    return {"IDGRAPH_SCENARIOS": "devstack.flows.battery_recycling:SCENARIOS", "IDGRAPH_POLICY": str(POLICY_PATH),
            "BATTERY_ASSESSMENT_DELAY_S": str(assessment_delay_s)}


def summarise(flows: list[Flow]) -> dict[str, Any]:
    done = [f for f in flows if f.complete]
    totals = [f.total_ms() for f in done]
    summary: dict[str, Any] = {
        "flows": len(flows),
        "completed": len(done),
        "within_budget": sum(t <= FLOW_BUDGET_MS for t in totals),
        "e2e_p50_ms": round(percentile(totals, 50), 1),
        "e2e_p99_ms": round(percentile(totals, 99), 1),
        "e2e_max_ms": round(max(totals), 1) if totals else None,
        "processing_p50_ms": round(percentile([f.processing_ms() for f in done], 50), 1),
        "overhead_p99_ms": round(percentile([f.total_ms() - f.processing_ms() for f in done], 99), 1),
        "sales_suggestions": sum(f.sales_notified is not None for f in flows),
    }
    for hop in HOPS:
        summary[f"hop_p99_ms[{hop}]"] = round(percentile([f.hop_ms()[hop] for f in done if hop in f.hop_ms()], 99), 1)
    return summary
