"""End to end on the real embedded broker with real worker processes: events in, deltas out."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import orjson
import pytest

from devstack.broker import EmbeddedBroker, free_port
from devstack.jvm import ApacheKafka
from devstack.probe import TopicWatcher
from devstack.stack import WorkerProcess, wait_until
from devstack.workload import synthetic_events
from sinks.deadletter import DeadLetter
from tests.api_support import run_api
from tests.conftest import cn_national_id
from tests.streaming_support import produce, read_topic

SALES = {"name": "sales", "kinds": ["profile.created", "profile.merged"], "fields": ["traits.name", "identifiers.phone"]}
SERVICE = {"name": "service", "fields": ["traits.*"]}


@pytest.fixture(params=["tansu", "kafka"])
def broker(request: pytest.FixtureRequest, tmp_path) -> Iterator[EmbeddedBroker | ApacheKafka]:
    """Each test on the embedded broker and on Apache Kafka, both fresh."""
    with (EmbeddedBroker() if request.param == "tansu" else ApacheKafka(tmp_path / "kafka")) as running:
        yield running


@pytest.fixture
def worker_factory(broker, tmp_path):
    started: list[WorkerProcess] = []

    async def start(subscriptions: list[dict], name: str = "w", **env: str) -> WorkerProcess:
        if isinstance(broker, ApacheKafka):
            # Kafka refuses sessions shorter than its group.min.session.timeout.ms (6 s); the 2 s
            # that makes a group join quick on Tansu is not needed there.
            env = {"IDGRAPH_SESSION_TIMEOUT_S": "6", **env}
        worker = WorkerProcess(broker.url, tmp_path / name, subscriptions, env).start()
        started.append(worker)
        return await worker.ready()

    yield start
    for worker in started:
        worker.stop()


def event(event_id: str, identifiers: dict, traits: dict | None = None, minute: int = 0) -> dict:
    return {"event_id": event_id, "scenario": "sales.crm", "type": "lead_created",
            "occurred_at": f"2026-03-01T09:{minute:02d}:00+08:00", "identifiers": identifiers, "traits": traits or {}}


def decisions(worker: WorkerProcess) -> int:
    try:
        with sqlite3.connect(worker.store_path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


async def test_each_scenario_receives_only_its_delta_kinds_and_fields(broker, worker_factory):
    await worker_factory([SALES, SERVICE])
    await produce(broker.bootstrap, [
        event("e1", {"phone": "13800138000", "email": "zw@example.com"}, {"name": "张伟", "city": "上海"}, minute=1),
        event("e2", {"phone": "13800138000"}, {"city": "北京"}, minute=2),
    ], key=b"customer-1")
    sales = await read_topic(broker.bootstrap, "scenario.sales", expect=1)
    service = await read_topic(broker.bootstrap, "scenario.service", expect=2)
    assert [r.json()["kind"] for r in sales] == ["profile.created"]
    assert sales[0].json()["profile"] == {"traits": {"name": "张伟"}, "identifiers": {"phone": ["+8613800138000"]}}
    assert set(sales[0].json()["changes"]) == {"traits.name", "identifiers.phone"}
    assert [r.json()["kind"] for r in service] == ["profile.created", "profile.updated"]
    assert service[1].json()["changes"] == {"traits.city": {"old": "上海", "new": "北京"}}
    assert service[1].json()["profile"] == {"traits": {"name": "张伟", "city": "北京"}, "identifiers": {}}
    assert sales[0].key == service[0].key == sales[0].json()["profile_id"].encode()


async def test_bridging_event_produces_profile_merged_with_merged_from(broker, worker_factory):
    await worker_factory([SALES])
    await produce(broker.bootstrap, [
        event("m1", {"phone": "13800138000"}, minute=1),
        event("m2", {"email": "zw@example.com"}, minute=2),
        event("m3", {"phone": "13800138000", "email": "zw@example.com"}, minute=3),
    ], key=b"customer-1")
    records = [r.json() for r in await read_topic(broker.bootstrap, "scenario.sales", expect=3)]
    created = {r["cause"]["event_id"]: r["profile_id"] for r in records if r["kind"] == "profile.created"}
    (merged,) = [r for r in records if r["kind"] == "profile.merged"]
    assert merged["profile_id"] == created["m1"]
    assert merged["merged_from"] == [created["m2"]]


async def test_redelivered_event_yields_no_second_delta(broker, worker_factory):
    worker = await worker_factory([SERVICE])
    duplicate = event("d1", {"phone": "13800138000"}, {"name": "Li Na"})
    await produce(broker.bootstrap, [duplicate, duplicate, event("d2", {"crm_id": "c-1"}, {"name": "Wang Fang"})])
    await wait_until(lambda: decisions(worker) == 2, what="both distinct events resolved")
    deltas = await read_topic(broker.bootstrap, "identity.deltas", settle_s=2)
    assert sorted(r.json()["cause"]["event_id"] for r in deltas) == ["d1", "d2"]


async def test_bad_input_is_dead_lettered_with_its_reason_and_the_worker_keeps_going(broker, worker_factory):
    worker = await worker_factory([SERVICE], IDGRAPH_MAX_EVENT_BYTES="2048")
    bad = [b"{not json", orjson.dumps({"event_id": "x"}), orjson.dumps(event("p1", {"phone": "12345"})),
           orjson.dumps(event("big", {"crm_id": "c"}, {"note": "x" * 4000}))]
    await produce(broker.bootstrap, [*bad, event("ok", {"crm_id": "c-2"}, {"name": "Zhao Lei"})])
    letters = [DeadLetter.from_message(r.value, r.headers) for r in await read_topic(broker.bootstrap, "idgraph.dead-letter", expect=4)]
    by_value = {letter.value: letter for letter in letters}
    assert {value: by_value[value].reason_class for value in bad} == dict(
        zip(bad, ["not_json", "schema", "invalid_identifier", "oversized"]))
    assert by_value[bad[2]].errors == [{"path": "identifiers.phone", "reason": "not a valid number for region CN"}]
    assert {letter.source["topic"] for letter in letters} == {"touchpoints"}
    (delivered,) = await read_topic(broker.bootstrap, "scenario.service", expect=1)
    assert delivered.json()["cause"]["event_id"] == "ok"
    worker.assert_alive()


class _Endpoint(BaseHTTPRequestHandler):
    status = 200
    received: list

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append(orjson.loads(body))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_endpoint():
    """A real HTTP server on a loopback port; ``status`` sets what it answers."""
    servers = []

    def start(status: int) -> tuple[str, list]:
        received: list = []
        handler = type("Handler", (_Endpoint,), {"status": status, "received": received})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/deltas", received

    yield start
    for server in servers:
        server.shutdown()


async def test_failing_webhook_is_retried_then_dead_lettered_while_others_keep_receiving(broker, worker_factory, http_endpoint):
    failing_url, failing_seen = http_endpoint(503)
    healthy_url, healthy_seen = http_endpoint(200)
    sink = {"type": "webhook", "max_attempts": 3, "backoff_initial_s": 0.05, "backoff_max_s": 0.2}
    await worker_factory([
        {"name": "quotes", "fields": ["traits.name"], "sink": {**sink, "url": failing_url}},
        {"name": "inspection", "fields": ["traits.name"], "sink": {**sink, "url": healthy_url}},
        SERVICE,
    ])
    await produce(broker.bootstrap, [event(f"w{i}", {"crm_id": f"c-{i}"}, {"name": f"Customer {i}"}) for i in range(3)])
    letters = [DeadLetter.from_message(r.value, r.headers) for r in await read_topic(broker.bootstrap, "idgraph.dead-letter", expect=3)]
    assert {letter.reason_class for letter in letters} == {"delivery_failed"}
    assert {letter.source["subscription"] for letter in letters} == {"quotes"}
    assert all("HTTP 503" in letter.errors[0]["reason"] for letter in letters)
    assert len(failing_seen) == 9, "three attempts for each of three deltas"
    assert sorted(d["cause"]["event_id"] for d in healthy_seen) == ["w0", "w1", "w2"]
    assert all(set(d["profile"]["traits"]) == {"name"} for d in healthy_seen)
    assert len(await read_topic(broker.bootstrap, "scenario.service", expect=3)) == 3


async def test_merge_protection_holds_in_the_stream(broker, worker_factory):
    worker = await worker_factory([SERVICE])
    await produce(broker.bootstrap, [
        event("n1", {"phone": "13800138000", "national_id": cn_national_id(1)}),
        event("n2", {"phone": "13800138000", "national_id": cn_national_id(2)}),
    ])
    await wait_until(lambda: decisions(worker) == 2, what="both events resolved")
    kinds = Counter(r.json()["kind"] for r in await read_topic(broker.bootstrap, "identity.deltas", expect=2))
    assert kinds == {"profile.created": 2}


async def test_worker_killed_mid_stream_loses_nothing_and_applies_nothing_twice(broker, worker_factory, tmp_path):
    events = [e for _, e in synthetic_events(customers=150, events=1500, seed=5)]
    first = await worker_factory([SERVICE], name="crashing", IDGRAPH_PARTITIONS="1")
    producer_task = asyncio.ensure_future(produce(broker.bootstrap, events))
    await wait_until(lambda: decisions(first) >= 300, what="some events resolved before the crash")
    first.kill()
    crashed_at = decisions(first)
    await producer_task
    second = await WorkerProcess(broker.url, first.workdir, first.subscriptions, first.extra_env).start().ready()
    try:
        await wait_until(lambda: decisions(second) == len(events), timeout_s=120, what="every event resolved after restart")
        deltas = [r.json() for r in await read_topic(broker.bootstrap, "identity.deltas", settle_s=3)]
    finally:
        second.stop()
    assert crashed_at < len(events), "the crash must happen mid-stream for this test to mean anything"
    with sqlite3.connect(first.store_path) as db:
        assert db.execute("SELECT COUNT(*) FROM touchpoints").fetchone()[0] == len(events)
        stored = {row[0] for row in db.execute("SELECT delta_id FROM outbox")}
        assert db.execute("SELECT COUNT(*) FROM outbox WHERE published = 0").fetchone()[0] == 0
    published = Counter(d["delta_id"] for d in deltas)
    assert set(published) == stored, "every stored delta was published, and nothing else"
    versions = Counter((d["profile_id"], d["profile_version"]) for d in deltas)
    assert all(published[d["delta_id"]] == versions[(d["profile_id"], d["profile_version"])] for d in deltas), \
        "one delta per profile version: a re-sent delta keeps its id"


async def test_subscription_registered_while_running_starts_receiving(broker, worker_factory):
    worker = await worker_factory([SERVICE])
    env = {**os.environ, "IDGRAPH_STORE": f"sqlite:///{worker.store_path}"}
    registered = subprocess.run([sys.executable, "-m", "cli.main", "subscribe", "--name", "late", "--field", "traits.name"],
                                env=env, capture_output=True, text=True)
    assert registered.returncode == 0, registered.stderr
    await asyncio.sleep(1.5)  # workers re-read the registry every second
    await produce(broker.bootstrap, [event("late-1", {"crm_id": "c-9"}, {"name": "Sun Li", "city": "Xi'an"})])
    records = await read_topic(broker.bootstrap, "scenario.late", expect=1)
    # Delivery is at least once: a copy the outbox relay re-sent keeps the delta's id.
    assert len({r.json()["delta_id"] for r in records}) == 1
    assert records[0].json()["profile"]["traits"] == {"name": "Sun Li"}


async def test_up_runs_an_embedded_broker_and_a_worker_and_ctrl_c_stops_both(tmp_path):
    subscriptions = tmp_path / "subs.yaml"
    subscriptions.write_text("- {name: service, fields: ['traits.*']}\n")
    env = {k: v for k, v in os.environ.items() if k != "IDGRAPH_BROKER"}
    # Ports of its own (the defaults 8080 and 18100 may be taken on a shared machine).
    env.update(IDGRAPH_STORE=f"sqlite:///{tmp_path / 'g.db'}", IDGRAPH_SUBSCRIPTIONS=str(subscriptions),
               IDGRAPH_DATA_DIR=str(tmp_path), IDGRAPH_SESSION_TIMEOUT_S="2", PYTHONUNBUFFERED="1",
               IDGRAPH_API_PORT=str(free_port()), IDGRAPH_METRICS_PORT="0")
    up = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--broker", "embedded", "--loglevel", "info"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert up.stdout is not None
    first = up.stdout.readline().decode()
    # Keep reading: a full pipe would block the worker's logging, and with it the worker.
    output: list[bytes] = []
    threading.Thread(target=lambda: output.extend(up.stdout or []), daemon=True).start()
    try:
        url = first.split(" on ")[1].split(" ")[0]
        assert url.startswith("kafka://127.0.0.1:")
        bootstrap = url.removeprefix("kafka://")
        await produce(bootstrap, [event("up-1", {"crm_id": "c-1"}, {"name": "Qian Yu"})])
        (record,) = await read_topic(bootstrap, "scenario.service", expect=1)
        assert record.json()["cause"]["event_id"] == "up-1", b"".join(output).decode(errors="replace")[-3000:]
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(bootstrap.rsplit(":", 1)[1])), timeout=1)
    finally:
        if up.poll() is None:
            up.kill()


async def test_a_profile_api_write_reaches_subscribers_and_the_worker_keeps_running(worker_factory, broker):
    worker = await worker_factory([SERVICE])
    await produce(broker.bootstrap, [event("api-e1", {"phone": "13800138021"}, {"name": "Li Lei"})])
    await wait_until(lambda: decisions(worker) == 1, timeout_s=30, what="the event resolved")
    with sqlite3.connect(worker.store_path) as db:
        (profile_id,) = db.execute("SELECT profile_id FROM touchpoints WHERE event_id = 'api-e1'").fetchone()
    for api in run_api(worker.store_path, {"me": {"scopes": ["customer"], "profile_id": profile_id}}):
        corrected = api.patch("me", f"/v1/profiles/{profile_id}", json={"traits": {"name": "Li Leiming"}})
        assert corrected.status_code == 200
    service = [r.json() for r in await read_topic(broker.bootstrap, "scenario.service", expect=2, timeout_s=10)]
    assert [r["kind"] for r in service] == ["profile.created", "profile.updated"]
    assert service[-1]["profile"]["traits"]["name"] == "Li Leiming"
    await asyncio.sleep(1.0)  # a few relay passes: the worker crashed here before the relay was the pipeline's
    worker.assert_alive()



async def test_api_rectification_merge_and_erasure_reach_a_kafka_sink_and_a_webhook_within_2_s(
        broker, worker_factory, http_endpoint):
    hook_url, hook_seen = http_endpoint(200)
    worker = await worker_factory([SERVICE, {"name": "hook", "fields": ["traits.*"], "sink": {"type": "webhook", "url": hook_url}}])
    await produce(broker.bootstrap, [event("m1", {"phone": "13800138081"}, {"name": "Han Mei"}, minute=1),
                                     event("m2", {"email": "hm@example.com"}, {"name": "Mei Han"}, minute=2)])
    await wait_until(lambda: decisions(worker) == 2, timeout_s=30, what="both events resolved")
    with sqlite3.connect(worker.store_path) as db:
        first, second = (db.execute("SELECT profile_id FROM touchpoints WHERE event_id = ?", (e,)).fetchone()[0]
                         for e in ("m1", "m2"))
    on_kafka: list[str] = []
    writes = [("profile.updated", "patch", f"/v1/profiles/{first}", {"traits": {"name": "Han Meimei"}}),
              ("profile.merged", "post", "/v1/profiles/merge", {"profile_ids": [first, second], "reason": "same person"}),
              ("profile.erased", "delete", f"/v1/profiles/{first}", None)]
    async with TopicWatcher(broker.bootstrap, ["scenario.service"], lambda topic, delta, now: on_kafka.append(delta["kind"])):
        for api in run_api(worker.store_path, {"admin": {"scopes": ["admin"]}}):
            for kind, method, url, body in writes:
                started = time.monotonic()
                response = getattr(api, method)("admin", url, **({"json": body} if body else {}))
                assert response.status_code == 200, response.text
                await wait_until(lambda: kind in on_kafka and any(d["kind"] == kind for d in hook_seen),
                                 timeout_s=10, interval_s=0.01, what=f"{kind} on both sinks")
                assert time.monotonic() - started < 2.0, f"{kind} took {time.monotonic() - started:.2f} s"
    worker.assert_alive()


async def test_the_worker_creates_profile_keyed_topics_compacted_and_raw_topics_expiring(broker, worker_factory):
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    await worker_factory([SERVICE], IDGRAPH_RAW_RETENTION_HOURS="24")
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        topics = ["identity.deltas", "identity.touchpoints", "scenario.service", "touchpoints", "idgraph.dead-letter"]
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        await admin.close()
    configs = {name: {entry[0]: entry[1] for entry in entries} for _, _, _, name, entries in response.resources}
    for topic in topics[:3]:
        assert configs[topic]["cleanup.policy"] == "compact", topic
    for topic in topics[3:]:
        assert (configs[topic]["cleanup.policy"], configs[topic]["retention.ms"]) == ("delete", "86400000"), topic
