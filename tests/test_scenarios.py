"""Autonomous scenarios on the real broker: the battery flow, sovereignty, hop limits, failures."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter

import orjson
import pytest

from devstack.broker import EmbeddedBroker
from devstack.flows.battery_recycling import SUGGESTION
from devstack.flows.battery_recycling.driver import flow_env, make_customers, run_flows
from devstack.stack import WorkerProcess, wait_until
from sinks.deadletter import DeadLetter
from tests.streaming_support import produce, read_topic


@pytest.fixture
def broker():
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
async def battery_flow(broker, tmp_path):
    worker = await WorkerProcess(broker.url, tmp_path / "w", [], flow_env(assessment_delay_s=0.2)).start().ready()
    customers = make_customers(6)
    flows = await run_flows(broker.bootstrap, customers, rate_per_s=10, timeout_s=60)
    yield worker, customers, flows
    worker.stop()


def event(event_id: str, type_: str, **fields) -> dict:
    return {"event_id": event_id, "scenario": "tests.platform", "type": type_,
            "occurred_at": "2026-03-01T09:00:00+08:00", "identifiers": {"crm_id": f"c-{event_id}"}, **fields}


async def test_four_hops_happen_in_order_for_every_request(battery_flow):
    _, _, flows = battery_flow
    assert all(flow.complete for flow in flows)
    for flow in flows:
        # The observer reads several topics at once, so two records written milliseconds apart on
        # different topics may reach it in either order; assert only what causality spaces widely.
        assert flow.produced < flow.assessment_notified < flow.assessed_emitted
        assert flow.assessed_emitted - flow.assessment_notified >= 0.15, "the assessment's 0.2 s delay"
        assert flow.assessed_id is not None and flow.quote_id is not None, "each hop caused the next"
        if flow.sales_notified is not None:
            assert flow.sales_notified > flow.assessed_emitted


async def test_sales_gets_exactly_one_suggestion_per_high_value_quote_with_only_its_fields(battery_flow, broker):
    worker, customers, flows = battery_flow
    assert {f.customer.key for f in flows if f.sales_notified} == {c.key for c in customers if c.high_value}
    records = [r.json() for r in await read_topic(broker.bootstrap, "scenario.sales", settle_s=1)]
    assert all(set(r["profile"]["traits"]) <= {"name", "value_tier", "quote_amount_usd", "quote_tier"} for r in records)
    assert all(r["profile"]["identifiers"] == {} for r in records)
    with sqlite3.connect(worker.store_path) as db:
        suggestions = [orjson.loads(e) for (e,) in db.execute("SELECT event FROM touchpoints WHERE type = 'action_suggested'")]
    assert len(suggestions) == sum(c.high_value for c in customers)
    assert {s["payload"]["suggestion"] for s in suggestions} == {SUGGESTION}


async def test_marketing_cannot_overwrite_the_service_value_tier_and_the_conflict_is_recorded(battery_flow):
    # The driver keys both events by the customer's phone, and events with one key are resolved in
    # the order produced: the prediction is kept when the relabel arrives (tests/test_sovereignty.py
    # covers the other order, for events with different keys).
    worker, customers, _ = battery_flow
    with sqlite3.connect(worker.store_path) as db:
        tiers = {json: tier for json, tier in db.execute(
            "SELECT t.event_id, json_extract(p.traits, '$.value_tier.value') FROM touchpoints t "
            "JOIN profiles p ON p.id = t.profile_id WHERE t.type = 'ltv_predicted'")}
        records = [orjson.loads(r) for (r,) in db.execute(
            "SELECT d.record FROM decisions d JOIN touchpoints t ON t.event_id = d.event_id WHERE t.type = 'campaign_labelled'")]
    assert {event_id: tier for event_id, tier in tiers.items()} == {
        f"ltv-{c.key:06d}": "high" if c.high_value else "standard" for c in customers}
    relabelled = [c for c in customers if c.relabelled]
    assert len(records) == len(relabelled) > 0
    for record in records:
        (conflict,) = record["evidence"]["sovereignty"]["conflicts"]
        assert (conflict["trait"], conflict["scenario"], conflict["attempted"]) == ("value_tier", "marketing.campaign", "bronze")
        assert conflict["kept_from"] == "service.ltv"


async def test_loop_between_two_scenarios_stops_at_the_hop_limit(broker, tmp_path):
    worker = await WorkerProcess(broker.url, tmp_path / "w", [], {
        "IDGRAPH_SCENARIOS": "tests.scenarios_for_tests:LOOP", "IDGRAPH_MAX_HOPS": "5"}).start().ready()
    try:
        await produce(broker.bootstrap, [event("start", "ping")])
        letters = [DeadLetter.from_message(r.value, r.headers)
                   for r in await read_topic(broker.bootstrap, "idgraph.dead-letter", expect=1)]
    finally:
        worker.stop()
    (refused,) = letters
    assert refused.reason_class == "hop_limit"
    assert refused.errors == [{"path": "causation.hops", "reason": "caused through 6 scenario hops; the limit is 5"}]
    with sqlite3.connect(worker.store_path) as db:
        types = Counter(t for (t,) in db.execute("SELECT type FROM touchpoints"))
    assert types == {"ping": 3, "pong": 3}, "the original ping plus five hops, then the sixth is refused"


async def test_a_scenario_failing_on_one_event_does_not_stop_the_others(broker, tmp_path):
    worker = await WorkerProcess(broker.url, tmp_path / "w", [], {
        "IDGRAPH_SCENARIOS": "tests.scenarios_for_tests:FRAGILE"}).start().ready()
    try:
        await produce(broker.bootstrap, [event("r1", "request", payload={"poison": True}), event("r2", "request")])
        letters = [DeadLetter.from_message(r.value, r.headers)
                   for r in await read_topic(broker.bootstrap, "idgraph.dead-letter", expect=1)]
        await wait_until(lambda: _count(worker, "steady_handled") == 2 and _count(worker, "handled") == 1,
                         timeout_s=30, what="both scenarios handled what they could")
    finally:
        worker.stop()
    (failure,) = letters
    assert failure.reason_class == "scenario_failed" and failure.source == {"scenario": "fragile"}
    assert failure.errors[0]["reason"] == "ValueError: cannot handle this request"
    assert orjson.loads(failure.value)["event_id"] == "r1"


def _registered(worker: WorkerProcess) -> list[str]:
    with sqlite3.connect(worker.store_path, timeout=5) as db:
        return [name for (name,) in db.execute("SELECT name FROM subscriptions ORDER BY name")]


def _count(worker: WorkerProcess, type_: str) -> int:
    try:
        with sqlite3.connect(worker.store_path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM touchpoints WHERE type = ?", (type_,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


async def test_scenario_in_its_own_process_declares_its_subscription_and_acts(broker, tmp_path):
    worker = await WorkerProcess(broker.url, tmp_path / "w", []).start().ready()
    env = {**worker.env(), "IDGRAPH_DATA_DIR": str(tmp_path / "s")}
    log = (tmp_path / "scenario.log").open("wb")
    scenario = subprocess.Popen([sys.executable, "-m", "cli.main", "scenario", "run", "tests.scenarios_for_tests:ECHO"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        await wait_until(lambda: _registered(worker) == ["echo"], timeout_s=30, what="the echo subscription in the registry")
        await produce(broker.bootstrap, [event("s1", "shout", traits={"name": "Li Lei"})])
        await wait_until(lambda: _count(worker, "echoed") == 1, timeout_s=30, what="the echo scenario's answer")
    finally:
        scenario.terminate()
        scenario.wait(20)
        worker.stop()
    with sqlite3.connect(worker.store_path) as db:
        (echoed,) = db.execute("SELECT profile_id FROM touchpoints WHERE type = 'echoed'").fetchone()
        (shouted,) = db.execute("SELECT profile_id FROM touchpoints WHERE event_id = 's1'").fetchone()
    assert echoed == shouted, "the scenario's event lands on the profile it acted on"
