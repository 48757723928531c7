"""A worker in a topic namespace (IDGRAPH_TOPIC_NAMESPACE) reads and writes only its own topics.

The default namespace is the live one: exactly the names platforms and scenarios rely on.
The end-to-end test runs on Apache Kafka, whose ListOffsets answers are right (the embedded
broker's are not: devstack/broker.py), next to a live worker holding live records.
"""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from devstack.jvm import ApacheKafka
from devstack.stack import WorkerProcess
from identity.topics import LIVE, TopicNames
from sinks.deadletter import DeadLetter
from sinks.subscriptions import parse_subscriptions
from streams.app import topic_plan
from streams.settings import Settings, SettingsError
from streams.admin import end_offsets
from tests.streaming_support import produce, read_topic, touchpoint

NAMESPACE = "sandbox.t."
SERVICE = {"name": "service", "fields": ["traits.*"]}
#: Kafka refuses sessions shorter than its group.min.session.timeout.ms (6 s).
KAFKA_ENV = {"IDGRAPH_SESSION_TIMEOUT_S": "6"}


def test_the_default_namespace_names_the_live_topics():
    assert TopicNames() == LIVE == Settings.from_env({}).topics
    assert LIVE.fixed() == ("touchpoints", "identity.deltas", "identity.touchpoints",
                            "idgraph.dead-letter", "idgraph.subscriptions")
    assert LIVE.scoped("scenario.sales") == "scenario.sales"


def test_a_namespace_prefixes_every_topic_the_worker_creates():
    settings = Settings.from_env({"IDGRAPH_TOPIC_NAMESPACE": NAMESPACE})
    plan = topic_plan(settings, parse_subscriptions([SERVICE], "test"))
    assert sorted(plan) == sorted(NAMESPACE + t for t in [*LIVE.fixed(), "scenario.service"])


def test_a_namespaced_worker_joins_a_consumer_group_of_its_own():
    live, sandbox = Settings.from_env({}), Settings.from_env({"IDGRAPH_TOPIC_NAMESPACE": NAMESPACE})
    assert (live.group_id, sandbox.group_id) == ("idgraph", "sandbox.t.idgraph")


@pytest.mark.parametrize("namespace", ["sandbox", "sand box.", "sandbox/x.", "x" * 120 + "."])
def test_a_namespace_that_cannot_prefix_topic_names_is_refused_naming_the_variable(namespace):
    with pytest.raises(SettingsError, match=r"IDGRAPH_TOPIC_NAMESPACE: .*must be empty or topic-name characters"):
        Settings.from_env({"IDGRAPH_TOPIC_NAMESPACE": namespace})


@pytest.fixture
async def kafka(tmp_path) -> AsyncIterator[ApacheKafka]:
    with ApacheKafka(tmp_path / "kafka") as running:
        yield running


async def test_a_namespaced_worker_resolves_in_its_own_topics_and_leaves_every_live_topic_untouched(kafka, tmp_path):
    live = await WorkerProcess(kafka.url, tmp_path / "live", [SERVICE], KAFKA_ENV).start().ready()
    sandbox = WorkerProcess(kafka.url, tmp_path / "sandbox", [SERVICE], {**KAFKA_ENV, "IDGRAPH_TOPIC_NAMESPACE": NAMESPACE})
    try:
        await produce(kafka.bootstrap, [touchpoint("live-1", {"crm_id": "L-1"}, {"name": "Wang Fang"})])
        (delivered,) = await read_topic(kafka.bootstrap, "scenario.service", expect=1)
        before = await end_offsets(kafka.bootstrap, NAMESPACE)
        await sandbox.start().ready()
        await produce(kafka.bootstrap, [touchpoint("sandbox-1", {"crm_id": "S-1"}, {"name": "张伟"}), b"{not json"],
                      topic=NAMESPACE + "touchpoints")
        (sandboxed,) = await read_topic(kafka.bootstrap, NAMESPACE + "scenario.service", expect=1)
        (letter,) = await read_topic(kafka.bootstrap, NAMESPACE + "idgraph.dead-letter", expect=1)
        after = await end_offsets(kafka.bootstrap, NAMESPACE)
    finally:
        sandbox.stop()
        live.stop()
    assert delivered.json()["cause"]["event_id"] == "live-1"
    assert sandboxed.json()["cause"]["event_id"] == "sandbox-1"
    assert DeadLetter.from_message(letter.value, letter.headers).source["topic"] == NAMESPACE + "touchpoints"
    assert set(LIVE.fixed()) | {"scenario.service"} <= set(before)
    assert after == before
