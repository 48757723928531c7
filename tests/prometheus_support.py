"""A real Prometheus (and promtool) for tests: Debian's ``prometheus`` package, nothing mocked.

The binaries are required, not optional: a missing one fails the test with the command that
installs it, so observability tests cannot silently stop running.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import httpx
import pytest
import yaml

from devstack.broker import free_port

INSTALL_HINT = "apt-get install -y prometheus  (Debian's package ships both prometheus and promtool)"
#: The scrape job of the compose stack (deploy/prometheus/prometheus.yml); the alert rules select it.
WORKER_JOB = "idgraph-worker"


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; the observability tests need it: {INSTALL_HINT}", pytrace=False)
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=60)


class QueryError(AssertionError):
    """Prometheus refused a query (a parse error, usually), with its own message."""


@dataclass
class Prometheus:
    url: str
    workdir: Path
    proc: subprocess.Popen[bytes]
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def api(self, path: str, **params: Any) -> Any:
        response = self.client.get(f"{self.url}/api/v1/{path}", params=params)
        body = response.json()
        if body.get("status") != "success":
            raise QueryError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: a list of {metric, value} (a scalar comes back as one entry)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr``, or None when it has no result."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr} has {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {series["metric"].get(label, ""): float(series["value"][1]) for series in self.query(expr)}

    def wait_for(self, expr: str, predicate: Callable[[float | None], bool], timeout_s: float = 60,
                 what: str | None = None) -> float | None:
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.value(expr)
            if predicate(value):
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what or expr}; last value {value}; log tail:\n{self.log_tail()}")

    def settle(self, expr: str, quiet_s: float = 5, timeout_s: float = 60) -> float | None:
        """Wait until ``expr`` has kept one value for ``quiet_s`` (counters done moving)."""
        deadline = time.monotonic() + timeout_s
        last, since = self.value(expr), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            value = self.value(expr)
            if value != last:
                last, since = value, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return value
        raise AssertionError(f"{expr} still changing after {timeout_s}s (last {last})")

    def log_tail(self) -> str:
        log = self.workdir / "prometheus.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


def write_config(workdir: Path, targets: Sequence[str], rule_files: Sequence[Path] = (),
                 interval: str = "1s") -> Path:
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(path.resolve()) for path in rule_files],
        "scrape_configs": [{"job_name": WORKER_JOB, "static_configs": [{"targets": list(targets)}]}],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def running_prometheus(workdir: Path, targets: Sequence[str] = (), rule_files: Sequence[Path] = (),
                       timeout_s: float = 30) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port, scraping ``targets`` every second, stopped on exit."""
    binary = require_binary("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = write_config(workdir, targets, rule_files)
    with (workdir / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    prometheus = Prometheus(f"http://127.0.0.1:{port}", workdir, proc)
    try:
        _wait_ready(prometheus, timeout_s)
        yield prometheus
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        prometheus.client.close()


def _wait_ready(prometheus: Prometheus, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if prometheus.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited ({prometheus.proc.returncode}):\n{prometheus.log_tail()}")
        try:
            if prometheus.client.get(f"{prometheus.url}/-/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"prometheus not ready after {timeout_s}s:\n{prometheus.log_tail()}")


def metric_names(exposition: str) -> set[str]:
    """Every series name an exposition can produce, from its TYPE lines (histograms expanded)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return names
