"""A worker switching to a newly promoted model while events stream in: a real worker process on
the embedded broker, the promotion made on its store file as an operator's command makes it."""

from __future__ import annotations

import asyncio
import sqlite3

from devstack.broker import EmbeddedBroker
from devstack.stack import WorkerProcess, wait_until
from graph.sqlite import SQLiteStore
from identity.rules import load_rules
from service.models import promote, register
from tests.streaming_support import produce, read_topic, touchpoint

EVENTS = 240


def decided_versions(worker: WorkerProcess) -> list[tuple[str, str]]:
    """(event id, rule version) of every decision, in the order the worker applied them."""
    try:
        with sqlite3.connect(worker.store_path, timeout=5) as db:
            return db.execute("SELECT d.event_id, d.rule_version FROM decisions d "
                              "JOIN touchpoints t ON t.event_id = d.event_id ORDER BY t.seq").fetchall()
    except sqlite3.OperationalError:
        return []


async def test_events_before_a_promotion_are_decided_under_the_old_model_after_it_under_the_new_none_lost_or_twice(tmp_path):
    v1 = load_rules()
    v2 = v1.model_copy(update=dict(version="stricter", thresholds={"link": 0.99, "review": 0.5}))
    events = [touchpoint(f"e{i:03d}", {"crm_id": f"c-{i}"}, {"name": f"Customer {i}"}, minute=i % 60)
              for i in range(EVENTS)]
    with EmbeddedBroker() as broker:
        worker = await WorkerProcess(broker.url, tmp_path / "w").start().ready()
        try:
            sending = asyncio.create_task(produce(broker.bootstrap, events, rate_per_s=200))
            await wait_until(lambda: len(decided_versions(worker)) >= EVENTS // 4, what="a quarter decided")
            async with SQLiteStore(worker.store_path) as store:
                await register(store, v2, "test")
                await promote(store, v2.model_version, by="test", reason="stricter links")
            await sending
            await wait_until(lambda: len(decided_versions(worker)) == EVENTS, what="every event decided")
            deltas = await read_topic(broker.bootstrap, "identity.deltas", expect=EVENTS)
            worker.assert_alive()
        finally:
            worker.stop()
    decided = decided_versions(worker)
    versions = [version for _, version in decided]
    switch = versions.index(v2.model_version)
    assert 0 < switch < EVENTS - 1
    assert versions == [v1.model_version] * switch + [v2.model_version] * (EVENTS - switch)
    assert sorted(event_id for event_id, _ in decided) == [e["event_id"] for e in events]
    assert sorted(r.json()["cause"]["event_id"] for r in deltas) == [e["event_id"] for e in events]
