"""Observability for real: a worker on the embedded broker, scraped by a real Prometheus, and the dashboard.

The end-to-end tests produce a known workload (merges, merge protections, a duplicate, bad
events, a failing webhook), then ask Prometheus's HTTP API and compare with what happened,
as recorded independently: the topics' records, the webhook endpoints' requests, the
worker's store.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from devstack.broker import EmbeddedBroker, free_port
from devstack.stack import WorkerProcess
from streams.metrics import WorkerMetrics
from tests.conftest import cn_national_id
from tests.prometheus_support import WORKER_JOB, Prometheus, QueryError, metric_names, running_prometheus
from tests.streaming_support import read_topic

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "idgraph.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
#: Grafana's built-in variables, as Prometheus should see them when a panel is drawn.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


# --- the dashboard ---------------------------------------------------------------------------

def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables filled in) for every query of every panel."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[Prometheus]:
    with running_prometheus(tmp_path_factory.mktemp("prometheus")) as running:
        yield running


def test_dashboard_is_a_grafana_dashboard_on_the_provisioned_prometheus():
    board = dashboard()
    assert board["schemaVersion"] >= 39 and board["uid"] and board["title"] == "idgraph"
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus" and variable["current"]["value"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]


def test_dashboard_has_the_panels_operators_need():
    titles = " | ".join(p["title"] for p in dashboard()["panels"]).lower()
    for needed in ("throughput", "propagation", "decisions", "merge", "lag", "dead letters", "delivered",
                   "failures", "backlog", "review", "build", "largest profile"):
        assert needed in titles, needed


def test_propagation_panel_draws_p50_p95_p99_against_a_200_ms_line():
    (panel,) = [p for p in dashboard()["panels"] if p["title"].startswith("Propagation (")]
    exprs = [t["expr"] for t in panel["targets"]]
    assert [re.search(r"histogram_quantile\((0\.\d+)", e).group(1) for e in exprs] == ["0.5", "0.95", "0.99"]
    assert all("idgraph_propagation_seconds_bucket" in e for e in exprs)
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s" and defaults["custom"]["thresholdsStyle"]["mode"] == "line"
    assert [s["value"] for s in defaults["thresholds"]["steps"]][1:] == [0.2]


@pytest.mark.parametrize("title,expr", panel_queries())
def test_every_dashboard_query_parses_in_prometheus(prometheus, title, expr):
    prometheus.query(expr)  # raises QueryError with Prometheus's message on a parse error


def test_the_parse_check_would_catch_a_broken_query(prometheus):
    with pytest.raises(QueryError, match="bad_data"):
        prometheus.query("sum by (le (rate(idgraph_propagation_seconds_bucket[1m]))")


def test_every_metric_a_dashboard_query_names_is_exposed_by_a_worker():
    exposed = metric_names(WorkerMetrics().exposition().decode()) | {"up"}
    for title, expr in panel_queries():
        named = set(re.findall(r"\b((?:idgraph|process|python)_[a-z0-9_]+|up)\b(?=\s*[{\[)])", expr))
        assert named, f"{title}: names no metric"
        assert named <= exposed, f"{title}: {sorted(named - exposed)} not exposed"


# --- end to end: a worker, a workload, Prometheus -------------------------------------------

class _Endpoint(BaseHTTPRequestHandler):
    status = 200
    received: list

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.received.append(orjson.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_endpoint(status: int) -> Iterator[tuple[str, list]]:
    """A real HTTP server on a loopback port answering every POST with ``status``."""
    received: list = []
    handler = type("Handler", (_Endpoint,), {"status": status, "received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/deltas", received
    finally:
        server.shutdown()
        server.server_close()


def ev(event_id: str, identifiers: dict, scenario: str = "sales.crm", **traits: Any) -> dict:
    return {"event_id": event_id, "scenario": scenario, "type": "touchpoint",
            "occurred_at": "2026-03-01T09:00:00+08:00", "identifiers": identifiers, "traits": traits}


def workload() -> list[tuple[bytes, bytes]]:
    """(key, value) records. Events of one customer share a key, so they stay in order on one partition."""
    records: list[tuple[bytes, dict | bytes]] = []
    for k in range(1, MERGES + 1):  # phone only, email only, then both: two profiles merge
        phone, email = f"1390000000{k}", f"customer{k}@example.com"
        records += [(b"m%d" % k, ev(f"m{k}a", {"phone": phone}, name=f"Zhang Wei {k}")),
                    (b"m%d" % k, ev(f"m{k}b", {"email": email}, "service.hotline", city="上海")),
                    (b"m%d" % k, ev(f"m{k}c", {"phone": phone, "email": email}, "service.hotline"))]
    # Five people behind one phone, kept apart by national ids: 1 + 2 + 3 conflicts, then the
    # phone is on four profiles and the fifth event finds it generic.
    records += [(b"shared", ev(f"s{k}", {"phone": "13700137000", "national_id": cn_national_id(k)}, name=f"Li Na {k}"))
                for k in range(1, 6)]
    plain = [(b"p%d" % i, ev(f"p{i}", {"crm_id": f"c-{i}"}, "battery-recycling.site-intake", name=f"Customer {i}"))
             for i in range(PLAIN)]
    records += plain + [plain[0]]  # the last one is a redelivery
    records += [(b"bad", b"{not json"), (b"bad", orjson.dumps({"event_id": "x"})),
                (b"bad", orjson.dumps(ev("bad-phone", {"phone": "12345"})))]
    return [(key, value if isinstance(value, bytes) else orjson.dumps(value)) for key, value in records]


MERGES, PLAIN = 3, 20
WORKLOAD = workload()
BAD_EVENTS = {"not_json": 1, "schema": 1, "invalid_identifier": 1}
WEBHOOK_ATTEMPTS = 2


def subscriptions(ok_url: str, failing_url: str) -> list[dict[str, Any]]:
    webhook = {"type": "webhook", "max_attempts": WEBHOOK_ATTEMPTS, "backoff_initial_s": 0.05, "backoff_max_s": 0.1}
    return [{"name": "service", "fields": ["traits.*"]},
            {"name": "sales", "kinds": ["profile.created", "profile.merged"], "fields": ["traits.name", "identifiers.phone"]},
            {"name": "quotes", "fields": ["traits.name"], "sink": {**webhook, "url": ok_url}},
            {"name": "broken", "fields": ["traits.name"], "sink": {**webhook, "url": failing_url}}]


async def produce_keyed(bootstrap: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait("touchpoints", value, key=key)
    finally:
        await producer.stop()


@dataclass
class Observed:
    """What Prometheus saw, and the independent record of what happened."""

    prometheus: Prometheus
    store: Path
    deltas: list[dict[str, Any]]
    received: dict[str, int]
    failing_posts: int
    dead_letters: Counter = field(default_factory=Counter)

    def store_rows(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.store, timeout=5) as db:
            return db.execute(sql).fetchall()


def started_worker(broker: EmbeddedBroker, workdir: Path, subs: list[dict[str, Any]], metrics_port: int) -> WorkerProcess:
    worker = WorkerProcess(broker.url, workdir, subs, {"IDGRAPH_METRICS_PORT": str(metrics_port)}).start()
    try:
        asyncio.run(worker.ready())
    except BaseException:
        worker.stop()
        raise
    return worker


@pytest.fixture(scope="module")
def observed(tmp_path_factory) -> Iterator[Observed]:
    workdir = tmp_path_factory.mktemp("e2e")
    port = free_port()
    with http_endpoint(200) as (ok_url, ok_seen), http_endpoint(503) as (failing_url, failing_seen), \
            EmbeddedBroker(log_path=workdir / "broker.log") as broker, \
            running_prometheus(workdir / "prometheus", [f"127.0.0.1:{port}"], [ALERTS]) as prometheus:
        worker = started_worker(broker, workdir / "worker", subscriptions(ok_url, failing_url), port)
        try:
            asyncio.run(produce_keyed(broker.bootstrap, WORKLOAD))
            prometheus.wait_for("sum(idgraph_events_consumed_total)", lambda v: v == len(WORKLOAD), 90,
                                "every produced event counted")
            prometheus.settle('sum({__name__=~"idgraph_.+_total"})', quiet_s=5)
            yield Observed(prometheus, worker.store_path,
                           deltas=[r.json() for r in asyncio.run(read_topic(broker.bootstrap, "identity.deltas", settle_s=1))],
                           received={"service": len(asyncio.run(read_topic(broker.bootstrap, "scenario.service", settle_s=1))),
                                     "sales": len(asyncio.run(read_topic(broker.bootstrap, "scenario.sales", settle_s=1))),
                                     "quotes": len(ok_seen)},
                           failing_posts=len(failing_seen),
                           dead_letters=Counter(dict(r.headers)["idgraph.reason_class"].decode() for r in
                                                asyncio.run(read_topic(broker.bootstrap, "idgraph.dead-letter", settle_s=1))))
        finally:
            worker.stop()


def test_events_consumed_equal_events_produced(observed):
    assert observed.prometheus.value("sum(idgraph_events_consumed_total)") == len(WORKLOAD) == 3 * MERGES + 5 + PLAIN + 1 + 3


def test_events_are_counted_by_outcome(observed):
    assert observed.prometheus.by("sum by (outcome) (idgraph_events_consumed_total)", "outcome") == {
        "resolved": 3 * MERGES + 5 + PLAIN, "duplicate": 1, "dead_lettered": sum(BAD_EVENTS.values())}


def test_refused_events_are_counted_by_reason_class(observed):
    assert observed.prometheus.by('sum by (reason_class) (idgraph_events_consumed_total{outcome="dead_lettered"})',
                                  "reason_class") == BAD_EVENTS


def test_events_are_counted_by_producing_scenario(observed):
    by_scenario = observed.prometheus.by('sum by (scenario) (idgraph_events_consumed_total{outcome="resolved"})', "scenario")
    assert by_scenario == {"sales.crm": MERGES + 5, "service.hotline": 2 * MERGES, "battery-recycling.site-intake": PLAIN}


def test_merges_seen_equal_merges_expected(observed):
    assert observed.prometheus.value('idgraph_decisions_total{action="merge"}') == MERGES
    assert observed.prometheus.value('idgraph_deltas_emitted_total{kind="profile.merged"}') == MERGES


def test_decisions_by_action_match_the_store(observed):
    stored = dict(observed.store_rows("SELECT action, COUNT(*) FROM decisions GROUP BY action"))
    seen = observed.prometheus.by("sum by (action) (idgraph_decisions_total)", "action")
    assert {a: n for a, n in seen.items() if n} == stored


def test_merge_protections_are_counted_by_kind(observed):
    assert observed.prometheus.by("sum by (kind) (idgraph_merge_protections_total)", "kind") == {
        "conflicting_id": 6, "generic_value": 1}


def test_deltas_emitted_by_kind_match_the_deltas_topic(observed):
    on_topic = Counter(d["kind"] for d in observed.deltas)
    seen = observed.prometheus.by("sum by (kind) (idgraph_deltas_emitted_total)", "kind")
    assert {k: n for k, n in seen.items() if n} == on_topic


def test_deltas_delivered_per_scenario_match_what_each_sink_received(observed):
    delivered = observed.prometheus.by("sum by (scenario) (idgraph_deltas_delivered_total)", "scenario")
    assert delivered == {**observed.received, "broken": 0}
    assert all(observed.received.values())


def test_propagation_histogram_count_equals_deltas_delivered(observed):
    prometheus = observed.prometheus
    delivered = prometheus.by("sum by (scenario) (idgraph_deltas_delivered_total)", "scenario")
    propagation = prometheus.by("sum by (scenario) (idgraph_propagation_seconds_count)", "scenario")
    delivery = prometheus.by("sum by (scenario) (idgraph_delivery_seconds_count)", "scenario")
    assert propagation == delivery == {s: n for s, n in delivered.items() if n}


def test_propagation_quantiles_come_out_of_the_histogram(observed):
    p99 = observed.prometheus.value("histogram_quantile(0.99, sum by (le) (idgraph_propagation_seconds_bucket))")
    assert p99 is not None and 0 < p99 < 10


def test_failing_webhook_counts_failures_retries_and_dead_letters(observed):
    prometheus = observed.prometheus
    given_up = observed.failing_posts // WEBHOOK_ATTEMPTS
    assert given_up > 0
    labels = '{scenario="broken",sink_type="webhook"}'
    assert prometheus.value(f"idgraph_delivery_failures_total{labels}") == given_up
    assert prometheus.value(f"idgraph_delivery_retries_total{labels}") == given_up * (WEBHOOK_ATTEMPTS - 1)
    assert prometheus.value(f"idgraph_deltas_routed_total{labels}") == given_up


def test_dead_letters_by_reason_match_the_dead_letter_topic(observed):
    seen = observed.prometheus.by("sum by (reason_class) (idgraph_dead_letters_total)", "reason_class")
    assert {r: n for r, n in seen.items() if n} == dict(observed.dead_letters)


def test_consumer_lag_is_reported_per_partition_and_drains_to_zero(observed):
    prometheus = observed.prometheus
    partitions = {(s["metric"]["topic"], s["metric"]["partition"]) for s in prometheus.query("idgraph_consumer_lag_messages")}
    # The worker routes deltas where it resolves them: it never reads identity.deltas back.
    consumed = {("touchpoints", p) for p in ("0", "1")}
    assert partitions == consumed | {("idgraph.subscriptions", "0")}
    prometheus.wait_for("sum(idgraph_consumer_lag_messages)", lambda v: v == 0, 30, "lag back to zero")


def test_review_queue_matches_the_store(observed):
    (open_reviews,), = observed.store_rows("SELECT COUNT(*) FROM reviews WHERE status = 'open'")
    assert open_reviews > 0, "the shared phone makes review proposals"
    observed.prometheus.wait_for("idgraph_open_reviews", lambda v: v == open_reviews, 30, "the sampled review queue")


def test_in_flight_is_zero_when_idle(observed):
    assert observed.prometheus.value("idgraph_in_flight_events") == 0


def test_build_info_names_version_store_and_broker(observed):
    (series,) = observed.prometheus.query("idgraph_build_info")
    labels = series["metric"]
    assert (labels["store"], labels["broker"], labels["job"]) == ("sqlite", "embedded", WORKER_JOB)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", labels["version"])


def test_alert_rules_load_and_evaluate_on_live_data(observed):
    rules = [r for g in observed.prometheus.api("rules")["groups"] for r in g["rules"]]
    assert len(rules) == 7
    assert all(r["health"] == "ok" and not r.get("lastError") for r in rules), rules


def test_every_dashboard_query_returns_data_after_the_workload(observed):
    not_exercised = ("idgraph_sovereignty_conflicts_total",)  # the sovereignty feature has not arrived
    empty = [title for title, expr in panel_queries()
             if not any(name in expr for name in not_exercised) and not observed.prometheus.query(expr)]
    assert not empty, f"panels with no data: {empty}"


def test_worker_down_alert_clears_while_the_worker_runs_and_goes_pending_when_it_stops(tmp_path):
    port = free_port()
    pending = 'count(ALERTS{alertname="IdgraphWorkerDown", alertstate="pending"})'
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker, \
            running_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"], [ALERTS]) as prometheus:
        worker = started_worker(broker, tmp_path / "worker", [{"name": "service", "fields": ["traits.*"]}], port)
        try:
            prometheus.wait_for(f'up{{job="{WORKER_JOB}"}}', lambda v: v == 1, 30, "the worker scraped")
            prometheus.wait_for(pending, lambda v: v is None, 30, "no IdgraphWorkerDown while the worker is up")
        finally:
            worker.stop()
        prometheus.wait_for(pending, lambda v: v == 1, 30, "IdgraphWorkerDown pending once the worker is gone")
