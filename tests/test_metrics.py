"""WorkerMetrics: what each observation counts, that the exposition lints clean, that labels stay bounded."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest

from faust.types import TP

from devstack.broker import free_port
from graph.store import ProfileGrowth
from identity.deltas import DeltaTimes
from streams.metrics import LATENCY_BUCKETS, MAX_SCENARIOS, LagSampler, WebhookRetryMirror, WorkerMetrics, start_metrics_server
from streams.pipeline import Incoming, ResolutionPipeline
from streams.results import BatchResult
from tests.conftest import cn_national_id
from tests.prometheus_support import metric_names, promtool


def event(event_id: str, identifiers: dict, scenario: str = "sales.crm", **traits: Any) -> dict:
    return {"event_id": event_id, "scenario": scenario, "type": "lead_created",
            "occurred_at": "2026-03-01T09:00:00+08:00", "identifiers": identifiers, "traits": traits}


async def _acknowledged(topic: str, key: bytes | None, value: bytes, headers: Any = None) -> "asyncio.Future[None]":
    ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ack.set_result(None)
    return ack


@pytest.fixture
def handle(store, rules):
    """Run raw events through the real pipeline on a real store; returns its BatchResult."""
    pipeline = ResolutionPipeline(store, rules, _acknowledged, max_event_bytes=4096)

    async def run(*events: dict | bytes) -> BatchResult:
        values = [e if isinstance(e, bytes) else orjson.dumps(e) for e in events]
        return await pipeline.handle([Incoming(v, "touchpoints", 0, i) for i, v in enumerate(values)])

    return run


def scenarios_of(*events: dict | bytes) -> dict[str, str]:
    return {e["event_id"]: e["scenario"] for e in events if isinstance(e, dict)}


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


MERGE_TRIPLE = [event("m1", {"phone": "13800138000"}), event("m2", {"email": "zw@example.com"}),
                event("m3", {"phone": "13800138000", "email": "zw@example.com"}, scenario="service.hotline")]
#: Five people sharing a phone, kept apart by their national ids: each later one conflicts with
#: every earlier profile (1 + 2 + 3 conflicts), and the fifth finds the phone on four profiles: generic.
SHARED_PHONE = [event(f"g{k}", {"phone": "13700137000", "national_id": cn_national_id(k)}) for k in range(1, 6)]
BAD = [b"{not json", orjson.dumps({"event_id": "x"}), orjson.dumps(event("p1", {"phone": "12345"}))]


async def test_batch_counts_each_event_once_by_scenario_and_outcome(handle):
    metrics = WorkerMetrics()
    events = [*MERGE_TRIPLE, MERGE_TRIPLE[0], *BAD]
    metrics.observe_batch(await handle(*events), resolve_seconds=0.01, scenarios=scenarios_of(*events))
    assert sample(metrics, "idgraph_events_consumed_total", scenario="sales.crm", outcome="resolved", reason_class="none") == 2
    assert sample(metrics, "idgraph_events_consumed_total", scenario="service.hotline", outcome="resolved", reason_class="none") == 1
    assert sample(metrics, "idgraph_events_consumed_total", scenario="sales.crm", outcome="duplicate", reason_class="none") == 1
    assert sample(metrics, "idgraph_events_consumed_total", scenario="unknown", outcome="dead_lettered", reason_class="not_json") == 1
    assert sample(metrics, "idgraph_events_consumed_total", scenario="unknown", outcome="dead_lettered", reason_class="schema") == 1
    assert sample(metrics, "idgraph_events_consumed_total", scenario="sales.crm", outcome="dead_lettered",
                  reason_class="invalid_identifier") == 1
    assert sample(metrics, "idgraph_event_resolution_seconds_count") == 4, "resolved and duplicate events were resolved"


async def test_dead_letters_are_counted_by_reason_class(handle):
    metrics = WorkerMetrics()
    metrics.observe_batch(await handle(*BAD), resolve_seconds=0.01)
    assert {r: sample(metrics, "idgraph_dead_letters_total", reason_class=r)
            for r in ("not_json", "schema", "invalid_identifier", "oversized")} == {
        "not_json": 1, "schema": 1, "invalid_identifier": 1, "oversized": 0}


async def test_decisions_are_counted_by_action_and_a_merge_is_one_merge(handle):
    metrics = WorkerMetrics()
    metrics.observe_batch(await handle(*MERGE_TRIPLE), resolve_seconds=0.01)
    assert {a: sample(metrics, "idgraph_decisions_total", action=a) for a in ("create", "link", "merge", "review")} == {
        "create": 2, "link": 0, "merge": 1, "review": 0}
    assert sample(metrics, "idgraph_deltas_emitted_total", kind="profile.merged") == 1


async def test_duplicates_count_no_second_decision(handle):
    metrics = WorkerMetrics()
    metrics.observe_batch(await handle(MERGE_TRIPLE[0], MERGE_TRIPLE[0]), resolve_seconds=0.01)
    assert sample(metrics, "idgraph_decisions_total", action="create") == 1


async def test_merge_protections_are_counted_by_kind_and_scenario(handle):
    metrics = WorkerMetrics()
    metrics.observe_batch(await handle(*SHARED_PHONE), resolve_seconds=0.01, scenarios=scenarios_of(*SHARED_PHONE))
    assert sample(metrics, "idgraph_merge_protections_total", scenario="sales.crm", kind="conflicting_id") == 6
    assert sample(metrics, "idgraph_merge_protections_total", scenario="sales.crm", kind="generic_value") == 1
    assert sample(metrics, "idgraph_merge_protections_total", scenario="sales.crm", kind="limit") == 0


async def test_emission_lag_is_measured_from_ingestion_and_from_occurrence(handle):
    metrics = WorkerMetrics()
    result = await handle(*MERGE_TRIPLE)
    metrics.observe_batch(result, resolve_seconds=0.01, store_seconds=0.004)
    assert sample(metrics, "idgraph_delta_emit_seconds_count", since="ingested") == len(result.published) == 3
    assert sample(metrics, "idgraph_delta_emit_seconds_sum", since="ingested") < 5
    assert sample(metrics, "idgraph_delta_emit_seconds_sum", since="occurred") > 3 * 86400, "the events occurred in the past"
    assert sample(metrics, "idgraph_store_write_seconds_count", operation="resolve") == 1


def times(ingested_ago_s: float, emitted_ago_s: float) -> DeltaTimes:
    now = datetime.now(timezone.utc)
    return DeltaTimes(occurred_at=(now - timedelta(hours=1)).isoformat(), resolved_at=now.isoformat(),
                      ingested_at=(now - timedelta(seconds=ingested_ago_s)).isoformat(),
                      emitted_at=(now - timedelta(seconds=emitted_ago_s)).isoformat())


def test_a_delivery_is_timed_from_emission_and_from_ingestion():
    metrics = WorkerMetrics()
    metrics.observe_routed("quotes", "webhook")
    metrics.observe_delivered("quotes", "webhook", times(ingested_ago_s=0.18, emitted_ago_s=0.06))
    labels = {"scenario": "quotes", "sink_type": "webhook"}
    assert sample(metrics, "idgraph_deltas_routed_total", **labels) == 1
    assert sample(metrics, "idgraph_deltas_delivered_total", **labels) == 1
    assert sample(metrics, "idgraph_delivery_seconds_bucket", le="0.05", **labels) == 0
    assert sample(metrics, "idgraph_delivery_seconds_bucket", le="0.075", **labels) == 1
    assert sample(metrics, "idgraph_propagation_seconds_bucket", le="0.175", **labels) == 0
    assert sample(metrics, "idgraph_propagation_seconds_bucket", le="0.2", **labels) == 1


def test_propagation_buckets_resolve_the_200_ms_target():
    assert 0.2 in LATENCY_BUCKETS
    assert sum(1 for b in LATENCY_BUCKETS if 0.1 <= b <= 0.3) >= 6, "enough bounds near the target to read p99 from"


def test_a_timestamp_from_a_clock_ahead_counts_as_zero_not_negative():
    metrics = WorkerMetrics()
    metrics.observe_delivered("service", "kafka", times(ingested_ago_s=-5, emitted_ago_s=-5))
    assert sample(metrics, "idgraph_propagation_seconds_sum", scenario="service", sink_type="kafka") == 0
    assert sample(metrics, "idgraph_propagation_seconds_count", scenario="service", sink_type="kafka") == 1


def test_routing_exposes_zero_failures_so_a_ratio_exists_before_the_first_failure():
    metrics = WorkerMetrics()
    metrics.observe_routed("quotes", "webhook")
    assert metrics.registry.get_sample_value("idgraph_delivery_failures_total", {"scenario": "quotes", "sink_type": "webhook"}) == 0
    assert metrics.registry.get_sample_value("idgraph_deltas_delivered_total", {"scenario": "quotes", "sink_type": "webhook"}) == 0


def test_a_given_up_delivery_is_a_failure_and_a_dead_letter():
    metrics = WorkerMetrics()
    metrics.observe_delivery_failure("quotes", "webhook")
    assert sample(metrics, "idgraph_delivery_failures_total", scenario="quotes", sink_type="webhook") == 1
    assert sample(metrics, "idgraph_dead_letters_total", reason_class="delivery_failed") == 1


def test_ten_thousand_distinct_scenarios_stay_within_the_label_cap():
    metrics = WorkerMetrics()
    for n in range(10_000):
        metrics.events_consumed(metrics.scenario(f"tenant-{n}.app"), "resolved", "none").inc()
    values = {s.labels["scenario"] for s in _samples(metrics, "idgraph_events_consumed_total")}
    assert len(values) == MAX_SCENARIOS + 1
    assert "other" in values
    assert sum(s.value for s in _samples(metrics, "idgraph_events_consumed_total")) == 10_000, "folded, not dropped"


def test_scenarios_off_the_contract_pattern_fold_into_invalid():
    metrics = WorkerMetrics()
    assert [metrics.scenario(v) for v in ("Sales CRM", "a" * 200, "sales.crm", 42, None)] == [
        "invalid", "invalid", "sales.crm", "invalid", "unknown"]


def test_subscription_and_trait_labels_are_bounded_too():
    metrics = WorkerMetrics()
    for n in range(1000):
        metrics.inc_sovereignty_conflict(f"trait_{n}")
    assert len({s.labels["trait"] for s in _samples(metrics, "idgraph_sovereignty_conflicts_total")}) <= 65


def test_unknown_fixed_set_values_fold_into_other():
    metrics = WorkerMetrics()
    metrics.observe_routed("service", "carrier-pigeon")
    metrics.observe_dead_letter("cosmic_ray")
    assert sample(metrics, "idgraph_deltas_routed_total", scenario="service", sink_type="other") == 1
    assert sample(metrics, "idgraph_dead_letters_total", reason_class="other") == 1


def _samples(metrics: WorkerMetrics, name: str) -> list:
    return [s for family in metrics.registry.collect() for s in family.samples if s.name == name]


async def _observe_everything(metrics: WorkerMetrics, handle) -> None:
    events = [*MERGE_TRIPLE, *SHARED_PHONE, MERGE_TRIPLE[0], *BAD]
    metrics.observe_batch(await handle(*events), resolve_seconds=0.02, store_seconds=0.01, scenarios=scenarios_of(*events))
    metrics.observe_store_write("mark_published", 0.002)
    for name, sink in (("service", "kafka"), ("quotes", "webhook")):
        metrics.observe_routed(name, sink)
        metrics.observe_delivered(name, sink, times(0.1, 0.05))
    metrics.observe_delivery_failure("quotes", "webhook")
    metrics.observe_delivery_retry("quotes", "webhook", 2)
    metrics.set_lag("touchpoints", 0, 12)
    metrics.set_review_queue(3)
    metrics.set_profile_growth(ProfileGrowth(200, 1, [("p_big", 1145)]))
    metrics.set_webhook_backlog({"quotes": 4})
    metrics.inc_sovereignty_conflict("name")
    metrics.set_build_info(store="sqlite", broker="embedded")
    with metrics.in_flight_events(5):
        pass


async def test_exposition_with_every_metric_observed_passes_promtool_check_metrics(handle):
    metrics = WorkerMetrics()
    await _observe_everything(metrics, handle)
    checked = promtool("check", "metrics", stdin=metrics.exposition().decode())
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), checked.stdout + checked.stderr


def test_promtool_check_metrics_would_catch_a_badly_named_metric():
    checked = promtool("check", "metrics", stdin="# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n")
    assert checked.returncode != 0 and "_total" in checked.stdout + checked.stderr


async def test_names_follow_prometheus_conventions(handle):
    metrics = WorkerMetrics()
    await _observe_everything(metrics, handle)
    families = {f.name: f for f in metrics.registry.collect() if f.name.startswith("idgraph_")}
    assert len(families) >= 19
    for name, family in families.items():
        assert re.fullmatch(r"idgraph_[a-z0-9_]+", name), name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), name
        if family.type == "histogram":
            assert name.endswith("_seconds"), f"{name}: histograms here are durations, in seconds"


async def test_no_label_carries_an_id(handle):
    metrics = WorkerMetrics()
    await _observe_everything(metrics, handle)
    exposition = metrics.exposition().decode()
    labels = set(re.findall(r"[{,]([a-z_]+)=", exposition))
    assert not {label for label in labels if label.endswith("_id") or label in ("event", "profile", "delta")}
    for forbidden in ("m1", "g1", "p_", "d_", "13800138000", "zw@example.com"):
        assert f'"{forbidden}' not in exposition, forbidden


def test_every_worker_metric_has_a_type_line_even_before_any_observation():
    names = metric_names(WorkerMetrics().exposition().decode())
    assert {"idgraph_events_consumed_total", "idgraph_propagation_seconds_bucket", "idgraph_consumer_lag_messages",
            "idgraph_build_info", "idgraph_open_reviews", "idgraph_sovereignty_conflicts_total"} <= names


def test_profile_growth_shows_the_largest_profile_those_over_the_threshold_and_the_threshold():
    metrics = WorkerMetrics()
    metrics.set_profile_growth(ProfileGrowth(200, 2, [("p_big", 1145), ("p_next", 300)]))
    assert (sample(metrics, "idgraph_largest_profile_records"), sample(metrics, "idgraph_profiles_over_growth_threshold"),
            sample(metrics, "idgraph_profile_growth_threshold_records")) == (1145, 2, 200)


def test_profile_growth_of_an_empty_graph_is_zero():
    metrics = WorkerMetrics()
    metrics.set_profile_growth(ProfileGrowth(200, 0, []))
    assert sample(metrics, "idgraph_largest_profile_records") == 0


def test_two_instances_share_nothing():
    first, second = WorkerMetrics(), WorkerMetrics()
    first.observe_dead_letter("schema")
    assert sample(second, "idgraph_dead_letters_total", reason_class="schema") == 0


def test_build_info_is_one_series_with_version_store_and_broker():
    metrics = WorkerMetrics()
    metrics.set_build_info(store="sqlite", broker="kafka", version="9.9")
    metrics.set_build_info(store="neo4j", broker="kafka", version="9.9")
    assert [s.labels for s in _samples(metrics, "idgraph_build_info")] == [
        {"version": "9.9", "store": "neo4j", "broker": "kafka"}]


def test_in_flight_events_rise_for_the_batch_and_fall_after_it_even_on_error():
    metrics = WorkerMetrics()
    with pytest.raises(RuntimeError):
        with metrics.in_flight_events(7):
            assert sample(metrics, "idgraph_in_flight_events") == 7
            raise RuntimeError("boom")
    assert sample(metrics, "idgraph_in_flight_events") == 0


def test_webhook_backlog_drops_subscriptions_that_went_away():
    metrics = WorkerMetrics()
    metrics.set_webhook_backlog({"quotes": 3, "inspection": 1})
    metrics.set_webhook_backlog({"quotes": 0})
    assert {s.labels["scenario"]: s.value for s in _samples(metrics, "idgraph_webhook_backlog")} == {"quotes": 0}


class FakeConsumer:
    """Faust's consumer as LagSampler uses it: assignment, fetch high watermark, position."""

    def __init__(self, highwaters: dict, positions: dict) -> None:
        self.highwaters, self.positions = highwaters, positions

    def assignment(self) -> set:
        return set(self.highwaters)

    def highwater(self, tp):
        return self.highwaters[tp]

    async def position(self, tp):
        return self.positions[tp]


def tp(topic: str, partition: int) -> TP:
    return TP(topic, partition)


async def test_lag_is_the_fetch_high_watermark_minus_the_committed_offset():
    metrics = WorkerMetrics()
    consumer = FakeConsumer({tp("touchpoints", 0): 120, tp("touchpoints", 1): 50}, {tp("touchpoints", 1): 45})
    lags = await LagSampler(consumer, {tp("touchpoints", 0): 100}, metrics).sample()
    assert lags == {("touchpoints", 0): 20, ("touchpoints", 1): 5}, "partition 1 committed nothing yet: its position stands in"
    assert sample(metrics, "idgraph_consumer_lag_messages", topic="touchpoints", partition="0") == 20


async def test_lag_is_not_reported_before_a_partition_was_first_fetched():
    metrics = WorkerMetrics()
    lags = await LagSampler(FakeConsumer({tp("touchpoints", 0): None}, {}), {}, metrics).sample()
    assert lags == {}
    assert not _samples(metrics, "idgraph_consumer_lag_messages")


async def test_lag_of_a_revoked_partition_is_removed():
    metrics = WorkerMetrics()
    consumer = FakeConsumer({tp("touchpoints", 0): 10, tp("touchpoints", 1): 10}, {})
    sampler = LagSampler(consumer, {tp("touchpoints", 0): 10, tp("touchpoints", 1): 4}, metrics)
    await sampler.sample()
    del consumer.highwaters[tp("touchpoints", 1)]
    await sampler.sample()
    assert [s.labels["partition"] for s in _samples(metrics, "idgraph_consumer_lag_messages")] == ["0"]


async def test_lag_leaves_out_fausts_leader_election_topic():
    consumer = FakeConsumer({tp("touchpoints", 0): 3, tp("idgraph-__assignor-__leader", 0): 9}, {})
    lags = await LagSampler(consumer, {tp("touchpoints", 0): 3, tp("idgraph-__assignor-__leader", 0): 0}, WorkerMetrics()).sample()
    assert lags == {("touchpoints", 0): 0}


async def test_lag_sampler_survives_a_consumer_that_has_not_started():
    class NotStarted(FakeConsumer):
        def assignment(self) -> set:
            raise RuntimeError("Consumer thread not yet started")

    assert await LagSampler(NotStarted({}, {}), {}, WorkerMetrics()).sample() == {}


def test_webhook_retries_are_mirrored_as_increments_and_a_new_sender_starts_from_zero():
    metrics = WorkerMetrics()
    mirror = WebhookRetryMirror(metrics)
    sender = SimpleNamespace(retries=2)
    mirror.sample({"quotes": sender})
    sender.retries = 5
    mirror.sample({"quotes": sender})
    mirror.sample({"quotes": SimpleNamespace(retries=1)})
    assert sample(metrics, "idgraph_delivery_retries_total", scenario="quotes", sink_type="webhook") == 6


def test_metrics_server_serves_the_instance_registry_on_its_port():
    metrics = WorkerMetrics()
    metrics.observe_dead_letter("schema")
    server = start_metrics_server(metrics, free_port(), addr="127.0.0.1")
    try:
        body = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics").text
    finally:
        server.shutdown()
    assert 'idgraph_dead_letters_total{reason_class="schema"} 1.0' in body


def test_metrics_port_zero_disables_the_server():
    assert start_metrics_server(WorkerMetrics(), 0) is None
