"""`idgraph up` on this machine: Apache Kafka by default, durable, and outliving a worker crash.

Each test runs the real command as a child process on ports of its own, with its state
(store, Kafka data) in the test's directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx

from api.auth import issue
from devstack.broker import free_port
from tests.streaming_support import produce, read_topic, touchpoint


def up_env(tmp_path: Path) -> dict[str, str]:
    subscriptions = tmp_path / "subs.yaml"
    subscriptions.write_text("- {name: service, fields: ['traits.*']}\n")
    env = {k: v for k, v in os.environ.items() if k != "IDGRAPH_BROKER"}
    env.update(IDGRAPH_STORE=f"sqlite:///{tmp_path / 'g.db'}", IDGRAPH_SUBSCRIPTIONS=str(subscriptions),
               IDGRAPH_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1",
               IDGRAPH_API_PORT=str(free_port()), IDGRAPH_METRICS_PORT="0")
    return env


class Up:
    """``idgraph up`` as a child process whose output is read as it comes (a full pipe would block it)."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--loglevel", "info", *args],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace"))

    def wait_for(self, text: str, *, after: int = 0, timeout_s: float = 240) -> str:
        """The first line from index ``after`` on that contains ``text``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = next((line for line in self.lines[after:] if text in line), None)
            if found is not None:
                return found
            assert self.proc.poll() is None, f"up exited with {self.proc.poll()}:\n{self.output()}"
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} from up within {timeout_s} s:\n{self.output()}")

    def output(self) -> str:
        return "".join(self.lines)[-4000:]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(90)

    def __enter__(self) -> "Up":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc.poll() is None:
            try:
                self.stop()
            finally:  # a failed stop must not leave the stack running: its children die with it
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


async def test_up_runs_apache_kafka_whose_topics_survive_a_restart(tmp_path):
    env, port = up_env(tmp_path), free_port()
    bootstrap = f"127.0.0.1:{port}"
    with Up(env, "--kafka-port", str(port)) as up:
        assert f"Apache Kafka on kafka://{bootstrap}" in up.wait_for("Apache Kafka on")
        up.wait_for("worker ready")
        await produce(bootstrap, [touchpoint("kept-1", {"crm_id": "c-1"}, {"name": "Qian Yu"})])
        (delta,) = await read_topic(bootstrap, "scenario.service", expect=1)
        assert up.stop() == 0, up.output()
    assert not listening(port), "stopping up stops its Kafka"
    assert (tmp_path / "data" / "kafka" / "data" / "meta.properties").is_file()
    with Up(env, "--kafka-port", str(port)) as again:
        again.wait_for("Apache Kafka on")
        (touchpoint_record,) = await read_topic(bootstrap, "touchpoints", expect=1)
        (delta_again,) = await read_topic(bootstrap, "scenario.service", expect=1)
    assert touchpoint_record.json()["event_id"] == "kept-1"
    assert delta_again.value == delta.value


async def test_a_killed_worker_is_restarted_while_the_broker_keeps_serving(tmp_path):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    with Up(up_env(tmp_path), "--kafka-port", str(port)) as up:
        pid = int(re.findall(r"Worker \(pid (\d+)\)", up.wait_for("Worker (pid"))[0])
        up.wait_for("worker ready")
        os.kill(pid, signal.SIGKILL)
        crashed = len(up.lines)
        up.wait_for("Worker exited with code -9")
        # The broker took no part in the crash: it accepts this record while no worker runs.
        await produce(bootstrap, [touchpoint("after-crash", {"crm_id": "c-2"}, {"name": "Zhou Min"})])
        up.wait_for("worker ready", after=crashed)
        (delta,) = await read_topic(bootstrap, "scenario.service", expect=1)
    assert delta.json()["cause"]["event_id"] == "after-crash"


async def test_up_runs_two_workers_and_restarts_the_one_killed_while_the_stream_goes_on(tmp_path):
    with Up(up_env(tmp_path), "--broker", "embedded", "--workers", "2") as up:
        bootstrap = re.findall(r"kafka://(\S+)", up.wait_for("Embedded broker on"))[0]
        up.wait_for("Worker 1 (pid")
        second = int(re.findall(r"Worker 2 \(pid (\d+)\)", up.wait_for("Worker 2 (pid"))[0])
        assert "Worker (pid" not in up.output()
        os.kill(second, signal.SIGKILL)
        crashed = len(up.lines)
        up.wait_for("Worker 2 exited with code -9; the broker, the API and the other workers keep running")
        # Sent while worker 2 is down or rejoining: the group hands its partitions on, nothing waits for it.
        await produce(bootstrap, [touchpoint("during-restart", {"crm_id": "c-3"}, {"name": "Lin Tao"})])
        (delta,) = await read_topic(bootstrap, "scenario.service", expect=1)
        up.wait_for("Worker 2 (pid", after=crashed)
    assert delta.json()["cause"]["event_id"] == "during-restart"


def test_a_killed_api_is_restarted_and_takes_the_same_token(tmp_path):
    env = up_env(tmp_path)
    api = f"http://127.0.0.1:{env['IDGRAPH_API_PORT']}/v1"
    with Up(env, "--broker", "embedded") as up:
        pid = int(re.findall(r"Profile API \(pid (\d+)\)", up.wait_for("Profile API (pid"))[0])
        token = up.wait_for(" idg_").strip()
        os.kill(pid, signal.SIGKILL)
        crashed = len(up.lines)
        up.wait_for("Profile API exited with code -9; the broker and worker keep running")
        up.wait_for("again, with the same token", after=crashed)
        answer = httpx.get(f"{api}/profiles/no-such-profile", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 404, answer.text


def test_up_keeps_the_api_tokens_set_inline_beside_its_own(tmp_path):
    theirs, entry = issue(["operator"], "ops")
    env = {**up_env(tmp_path), "IDGRAPH_API_TOKENS": json.dumps([entry.model_dump(exclude_none=True)])}
    api = f"http://127.0.0.1:{env['IDGRAPH_API_PORT']}/v1"
    with Up(env, "--broker", "embedded") as up:
        up.wait_for("Profile API (pid")
        printed = up.wait_for(" idg_").strip()
        answers = [httpx.get(f"{api}/profiles/no-such-profile", headers={"Authorization": f"Bearer {token}"}).status_code
                   for token in (theirs, printed)]
    assert answers == [404, 404]


def test_up_refuses_a_taken_port_naming_it_and_starts_nothing(tmp_path):
    env = up_env(tmp_path)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "cli.main", "up", "--api-port", str(taken),
                               "--kafka-port", str(free_port())], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {taken} (profile API) is already in use" in done.stderr
    assert "--api-port" in done.stderr
    assert done.stdout == "", "nothing started, no address or token printed"
    assert not (tmp_path / "data" / "kafka").exists()


def test_worker_refuses_a_taken_metrics_port_naming_it(tmp_path):
    env = {**up_env(tmp_path), "IDGRAPH_BROKER": f"kafka://127.0.0.1:{free_port()}"}
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        taken = held.getsockname()[1]
        env["IDGRAPH_METRICS_PORT"] = str(taken)
        done = subprocess.run([sys.executable, "-m", "cli.main", "worker"], env=env, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {taken} (worker metrics) is already in use" in done.stderr
    assert "IDGRAPH_METRICS_PORT" in done.stderr


def test_a_worker_whose_broker_does_not_answer_exits_naming_it(tmp_path):
    closed = free_port()
    env = {**up_env(tmp_path), "IDGRAPH_BROKER": f"kafka://127.0.0.1:{closed}", "IDGRAPH_BROKER_WAIT_S": "1"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "worker"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, "not 2: a supervisor restarts it, the broker may come back"
    assert f"no Kafka broker accepted a connection at 127.0.0.1:{closed} within 1 s" in done.stderr
    assert "IDGRAPH_BROKER_WAIT_S" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
