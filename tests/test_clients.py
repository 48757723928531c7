"""Standard Kafka clients with their default settings, and `idgraph send` / `tail`, on Apache Kafka.

One Kafka (from the project's jars) and one worker subscribed as ``service`` serve the whole
module, as they would a platform team: Debian's ``kcat`` and PyPI's ``confluent-kafka`` produce
touchpoints and read the scenario topic, plain and as consumer groups, with nothing tuned.
Every test uses its own event ids and customers, and looks only for its own records.
"""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from identity.events import parse_event
from identity.features import partition_key
from identity.rules import load_rules
from devstack.jvm import ApacheKafka
from devstack.stack import WorkerProcess
from tests.streaming_support import produce, read_topic, touchpoint

SERVICE = {"name": "service", "fields": ["traits.*"]}
TIMEOUT_S = 90


@dataclass
class Stack:
    bootstrap: str
    worker: WorkerProcess

    def env(self) -> dict[str, str]:
        """What a shell next to `idgraph up` has: the broker and the store."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("IDGRAPH_")}
        return {**clean, "IDGRAPH_BROKER": f"kafka://{self.bootstrap}",
                "IDGRAPH_STORE": f"sqlite:///{self.worker.store_path}", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("clients")
    with ApacheKafka(workdir / "kafka") as kafka:
        # Kafka refuses sessions shorter than its group.min.session.timeout.ms (6 s).
        worker = WorkerProcess(kafka.url, workdir / "worker", [SERVICE], {"IDGRAPH_SESSION_TIMEOUT_S": "6"}).start()
        try:
            asyncio.run(worker.ready())
            yield Stack(kafka.bootstrap, worker)
        finally:
            worker.stop()


def line_of(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def caused_by(delta: bytes, event_id: str) -> bool:
    return orjson.loads(delta)["cause"]["event_id"] == event_id


async def delta_for(stack: Stack, event_id: str) -> dict[str, Any]:
    """The scenario delta an event caused, read from the start of the topic until it is there."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        found = [r.json() for r in await read_topic(stack.bootstrap, "scenario.service", settle_s=1)
                 if caused_by(r.value, event_id)]
        if found:
            return found[0]
    raise AssertionError(f"no delta caused by {event_id} within {TIMEOUT_S} s")


class Lines:
    """A child process's output lines, read by a thread so that waiting for one can time out."""

    def __init__(self, proc: subprocess.Popen[bytes], stream: Any) -> None:
        self.proc, self._lines = proc, queue.Queue[bytes]()
        threading.Thread(target=lambda: [self._lines.put(line) for line in stream], daemon=True).start()

    def until(self, wanted: Callable[[bytes], bool], timeout_s: float = TIMEOUT_S) -> bytes:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=min(left, 1))
            except queue.Empty:
                assert self.proc.poll() is None, f"{self.proc.args} exited with {self.proc.poll()}"
                continue
            if wanted(line):
                return line
        raise AssertionError(f"{self.proc.args}: no wanted line within {timeout_s} s")


def kcat(stack: Stack, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(["kcat", "-b", stack.bootstrap, *args], input=stdin, capture_output=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr.decode()
    return done


def idgraph(stack: Stack, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], input=stdin.decode() if stdin else None,
                          env=stack.env(), capture_output=True, text=True, timeout=TIMEOUT_S)


# --- kcat (Debian's, librdkafka 2.0) ---------------------------------------------------------

async def test_kcat_produces_a_touchpoint_that_reaches_the_scenario(stack):
    kcat(stack, "-P", "-t", "touchpoints", stdin=line_of(touchpoint("kcat-p1", {"crm_id": "kc-1"}, {"name": "Wu Fang"})) + b"\n")
    assert (await delta_for(stack, "kcat-p1"))["profile"]["traits"] == {"name": "Wu Fang"}


async def test_kcat_reads_a_scenario_topic_from_the_beginning(stack):
    await produce(stack.bootstrap, [touchpoint("kcat-c1", {"crm_id": "kc-2"}, {"name": "Lin Tao"})])
    await delta_for(stack, "kcat-c1")
    read = kcat(stack, "-C", "-t", "scenario.service", "-o", "beginning", "-e")
    assert any(caused_by(line, "kcat-c1") for line in read.stdout.splitlines())


async def test_kcat_group_consumer_receives_a_scenario_delta(stack):
    group = subprocess.Popen(["kcat", "-b", stack.bootstrap, "-u", "-G", "kcat-group", "-o", "beginning",
                              "scenario.service"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert group.stderr is not None and group.stdout is not None
        Lines(group, group.stderr).until(lambda line: b"assigned:" in line)
        await produce(stack.bootstrap, [touchpoint("kcat-g1", {"crm_id": "kc-3"}, {"name": "He Jing"})])
        Lines(group, group.stdout).until(lambda line: caused_by(line, "kcat-g1"))
    finally:
        group.terminate()
        group.wait(10)


# --- confluent-kafka (PyPI, bundled librdkafka) ------------------------------------------------

async def test_confluent_kafka_producer_with_default_settings(stack):
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    producer.produce("touchpoints", line_of(touchpoint("ck-p1", {"crm_id": "ck-1"}, {"name": "Guo Lan"})))
    assert producer.flush(30) == 0, "every record acknowledged"
    assert (await delta_for(stack, "ck-p1"))["profile"]["traits"] == {"name": "Guo Lan"}


async def test_confluent_kafka_group_consumer_with_default_settings_receives_a_scenario_delta(stack):
    # Only what a group consumer must be told: where, which group, and to read the topic from its start.
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "ck-group", "auto.offset.reset": "earliest"})
    consumer.subscribe(["scenario.service"])
    try:
        await produce(stack.bootstrap, [touchpoint("ck-g1", {"crm_id": "ck-2"}, {"name": "Ma Rui"})])
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            message = await asyncio.to_thread(consumer.poll, 1.0)
            if message is not None and message.error() is None and caused_by(message.value(), "ck-g1"):
                break
        else:
            raise AssertionError("the group consumer never received the delta")
        assert consumer.assignment(), "it joined the group and was assigned the topic's partitions"
    finally:
        consumer.close()


# --- idgraph send -------------------------------------------------------------------------------

def events_file(path: Path, events: list[dict[str, Any] | bytes]) -> Path:
    path.write_bytes(b"".join((e if isinstance(e, bytes) else line_of(e)) + b"\n" for e in events))
    return path


async def sent_records(stack: Stack, event_ids: set[str]) -> list[Any]:
    records = await read_topic(stack.bootstrap, "touchpoints", settle_s=2)
    return [r for r in records if orjson.loads(r.value).get("event_id") in event_ids]


async def test_send_keys_each_event_by_its_customers_strongest_identifier(stack, tmp_path):
    events = [touchpoint("s-a1", {"phone": "13800138001"}, {"name": "Tang Wei"}),
              touchpoint("s-b1", {"email": "li.na@example.com"}),
              touchpoint("s-a2", {"phone": "+86 138 0013 8001", "device_id": "dev-9"}),
              touchpoint("s-a3", {"phone": "138-0013-8001"})]
    done = idgraph(stack, "send", str(events_file(tmp_path / "e.jsonl", list(events))))
    assert done.returncode == 0, done.stderr
    assert "sent 4 events to touchpoints" in done.stdout
    records = await sent_records(stack, {"s-a1", "s-b1", "s-a2", "s-a3"})
    rules = load_rules()
    assert len(records) == 4
    assert all(r.key == partition_key(parse_event(r.value), rules) for r in records)
    customer_a = [r for r in records if r.json()["event_id"].startswith("s-a")]
    assert len({r.key for r in customer_a}) == 1 and len({r.partition for r in customer_a}) == 1
    assert [r.json()["event_id"] for r in customer_a] == ["s-a1", "s-a2", "s-a3"], "in the file's order"


async def test_send_refuses_a_file_with_a_bad_line_naming_it_and_sends_nothing(stack, tmp_path):
    path = events_file(tmp_path / "e.jsonl", [touchpoint("r-ok", {"crm_id": "r-1"}), b"{not json",
                                              touchpoint("r-phone", {"phone": "12345"})])
    done = idgraph(stack, "send", str(path))
    assert done.returncode == 2
    assert "line 2 refused: not_json" in done.stderr
    assert "line 3 refused: invalid_identifier" in done.stderr and "identifiers.phone" in done.stderr
    assert "2 of 3 lines refused; nothing sent" in done.stderr
    assert await sent_records(stack, {"r-ok"}) == []


async def test_send_skip_invalid_sends_the_valid_lines_and_names_the_refused(stack, tmp_path):
    path = events_file(tmp_path / "e.jsonl", [b"[]", touchpoint("k-ok", {"crm_id": "k-1"})])
    done = idgraph(stack, "send", "--skip-invalid", str(path))
    assert done.returncode == 0, done.stderr
    assert "line 1 refused" in done.stderr
    assert "sent 1 events to touchpoints" in done.stdout and "1 refused lines skipped" in done.stdout
    assert [r.json()["event_id"] for r in await sent_records(stack, {"k-ok"})] == ["k-ok"]


async def test_send_skip_invalid_of_the_shipped_samples_names_their_one_bad_line(stack):
    # The README's quick start sends this file.
    done = idgraph(stack, "send", "--skip-invalid", "devstack/samples/touchpoints.jsonl")
    assert done.returncode == 0, done.stderr
    assert "line 10 refused: invalid_identifier" in done.stderr
    assert "sent 12 events to touchpoints" in done.stdout


async def test_send_reads_events_from_standard_input(stack):
    done = idgraph(stack, "send", "-", stdin=line_of(touchpoint("in-1", {"crm_id": "in-1"})) + b"\n\n")
    assert done.returncode == 0, done.stderr
    assert [r.json()["event_id"] for r in await sent_records(stack, {"in-1"})] == ["in-1"]


# --- idgraph tail -------------------------------------------------------------------------------

async def test_tail_prints_a_scenarios_deltas_as_they_arrive(stack):
    tail = subprocess.Popen([sys.executable, "-m", "cli.main", "tail", "service"], env=stack.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert tail.stderr is not None and tail.stdout is not None
        Lines(tail, tail.stderr).until(lambda line: b"following scenario.service" in line)
        await produce(stack.bootstrap, [touchpoint("t-1", {"crm_id": "t-1"}, {"name": "Deng Hui"})])
        delta = orjson.loads(Lines(tail, tail.stdout).until(lambda line: caused_by(line, "t-1")))
        assert delta["kind"] == "profile.created" and delta["profile"]["traits"] == {"name": "Deng Hui"}
    finally:
        tail.terminate()
        tail.wait(10)


async def test_tail_from_the_beginning_prints_earlier_deltas(stack):
    await produce(stack.bootstrap, [touchpoint("tb-1", {"crm_id": "tb-1"}, {"name": "Yan Bo"})])
    await delta_for(stack, "tb-1")
    tail = subprocess.Popen([sys.executable, "-m", "cli.main", "tail", "service", "--from-beginning"],
                            env=stack.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert tail.stdout is not None
        Lines(tail, tail.stdout).until(lambda line: caused_by(line, "tb-1"))
    finally:
        tail.terminate()
        tail.wait(10)


def test_tail_of_an_unknown_scenario_names_the_registered_ones(stack):
    done = idgraph(stack, "tail", "nosuch")
    assert done.returncode == 2
    assert "no subscription named 'nosuch'; registered: service" in done.stderr
