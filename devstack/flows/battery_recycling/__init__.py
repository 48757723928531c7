"""The battery-recycling reference flow: four scenarios, each autonomous, one customer identity.

1. ``battery-recycling.site-intake`` (a platform, not a scenario here) produces
   ``recycling_requested`` with the customer's phone and name, the battery serial, a photo
   reference and the site's measurements.
2. ``battery-recycling.assessment`` grades battery health (a deterministic stand-in for the
   edge model, with a configurable processing delay) and emits ``battery_assessed``.
3. ``battery-recycling.quoting`` prices a tiered quote from the metal price index and emits
   ``quote_issued``.
4. Grade and quote land on the customer's profile under the flow's sovereignty policy
   (``policy.yaml``: grade owned by assessment, quote by quoting, ``value_tier`` by service).
5. ``sales`` receives the quote as a delta only for customers whose ``value_tier`` is high,
   with only the fields it subscribed to, and records an action suggestion.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from devstack.flows.battery_recycling.grading import grade_battery
from devstack.flows.battery_recycling.pricing import MetalPrices, price_quote
from streams.scenario import Message, Scenario, ScenarioContext

HERE = Path(__file__).parent
POLICY_PATH = HERE / "policy.yaml"
PRICES_PATH = HERE / "metal_prices.csv"
SUGGESTION = "may accept a premium trade-in"


def assessment(delay_s: float = 1.0) -> Scenario:
    async def grade(message: Message, ctx: ScenarioContext) -> None:
        await asyncio.sleep(delay_s)  # the edge model's inference time
        result = grade_battery(message.payload["measurements"])
        battery = message.payload["battery"]
        await ctx.emit("battery_assessed", traits={"battery_grade": result.grade, "battery_soh": result.state_of_health},
                       payload={"battery": battery, "reasons": list(result.reasons), "processing_s": delay_s})

    # Requests are graded in parallel, as a site's edge devices do; one at a time, a 1 s
    # model would cap the flow at one customer per second.
    return Scenario("battery-recycling.assessment", grade, fields=("traits.battery_grade",),
                    event_types=("recycling_requested",), concurrency=64)


def quoting(prices_path: Path = PRICES_PATH) -> Scenario:
    prices = MetalPrices.load(prices_path)

    async def quote(message: Message, ctx: ScenarioContext) -> None:
        battery = message.payload["battery"]
        offer = price_quote(battery["chemistry"], battery["capacity_kwh"], message.traits["battery_grade"], prices)
        await ctx.emit("quote_issued", traits={"quote_amount_usd": offer.amount_usd, "quote_tier": offer.tier},
                       payload={"battery": battery, "metal_value_usd": offer.metal_value_usd, "prices_as_of": offer.prices_as_of})

    return Scenario("battery-recycling.quoting", quote, fields=("traits.battery_grade",), event_types=("battery_assessed",))


def sales() -> Scenario:
    async def suggest(message: Message, ctx: ScenarioContext) -> None:
        if "traits.quote_amount_usd" not in message.body["changes"]:
            return
        traits = message.traits
        await ctx.emit("action_suggested", payload={
            "suggestion": SUGGESTION, "quote_amount_usd": traits["quote_amount_usd"], "quote_tier": traits.get("quote_tier"),
        })

    return Scenario("sales", suggest, kinds=("profile.updated",),
                    fields=("traits.name", "traits.value_tier", "traits.quote_amount_usd", "traits.quote_tier"),
                    filters=({"trait": "value_tier", "any_of": ["high"]},))


def scenarios(assessment_delay_s: float = 1.0) -> list[Scenario]:
    return [assessment(assessment_delay_s), quoting(), sales()]


#: ``IDGRAPH_SCENARIOS=devstack.flows.battery_recycling:SCENARIOS`` runs them in a worker;
#: BATTERY_ASSESSMENT_DELAY_S sets the edge model's simulated processing time.
SCENARIOS = scenarios(assessment_delay_s=float(os.environ.get("BATTERY_ASSESSMENT_DELAY_S", "1.0")))
