"""The compose stack and the image are defined as documented, and Docker Compose accepts them.

Validation uses Debian's ``docker-compose`` (1.29, package ``docker-compose``): its ``config``
command checks a file against the Compose schema offline, with no Docker engine. The Prometheus
config is checked by ``promtool`` (package ``prometheus``). Both are required tools, not optional
ones: without them these tests fail and say what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BASE = "docker-compose.yml"
KAFKA_CLUSTER = "deploy/compose.kafka-cluster.yml"
INSTALL = "apt-get install -y --no-install-recommends docker-compose"
LONG_RUNNING = ("kafka", "neo4j", "worker", "prometheus", "grafana")


@pytest.fixture(scope="module")
def compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail(f"`docker-compose` is not installed, so the compose files cannot be validated. Install Debian's "
                    f"package ({INSTALL}); it validates offline and needs no Docker engine.")
    return found


def run_config(compose: str, *files: str, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    args = [compose, "--project-directory", str(REPO)]
    for name in files:
        args += ["-f", str(REPO / name)]
    env = {k: v for k, v in os.environ.items() if k not in ("NEO4J_PASSWORD", "GRAFANA_PASSWORD")}
    return subprocess.run([*args, "config", *(["-q"] if quiet else [])], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO)


def resolved(compose: str, *files: str) -> dict[str, Any]:
    done = run_config(compose, *files)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def stack(compose) -> dict[str, Any]:
    return resolved(compose, BASE)


@pytest.mark.parametrize("files", [(BASE,), (BASE, KAFKA_CLUSTER)], ids=["single-broker", "three-brokers"])
def test_compose_files_are_valid(compose, files):
    done = run_config(compose, *files, quiet=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_two_workers_run_the_worker_command_against_kafka_and_neo4j(stack):
    worker = stack["services"]["worker"]
    assert worker["command"] == ["worker"] and worker["deploy"]["replicas"] == 2
    env = worker["environment"]
    assert (env["IDGRAPH_BROKER"], env["IDGRAPH_STORE"], env["IDGRAPH_METRICS_PORT"]) == (
        "kafka://kafka:9092", "neo4j://neo4j:7687", "18100")
    assert env["IDGRAPH_NEO4J_PASSWORD"] and env["IDGRAPH_NEO4J_USER"] == "neo4j"


def test_workers_start_once_kafka_and_neo4j_are_healthy(stack):
    assert stack["services"]["worker"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"}, "neo4j": {"condition": "service_healthy"}}


def test_grafana_waits_for_a_healthy_prometheus(stack):
    assert stack["services"]["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_every_service_has_a_health_check(stack, service):
    assert stack["services"][service]["healthcheck"]["test"]


def test_neo4j_is_version_5_and_the_workers_share_its_password(stack):
    neo4j, worker = stack["services"]["neo4j"], stack["services"]["worker"]
    assert neo4j["image"] == "neo4j:5"
    assert neo4j["environment"]["NEO4J_AUTH"] == "neo4j/" + worker["environment"]["IDGRAPH_NEO4J_PASSWORD"]


def test_neo4j_keeps_no_transaction_log_past_the_newest_so_erased_values_go_with_it(stack):
    env = stack["services"]["neo4j"]["environment"]
    assert (env["NEO4J_db_tx__log_rotation_retention__policy"], env["NEO4J_db_tx__log_rotation_size"],
            env["NEO4J_db_checkpoint_interval_time"]) == ("keep_none", "1M", "1m")


def test_kafka_runs_in_kraft_mode_without_zookeeper(stack):
    kafka = stack["services"]["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in " ".join(stack["services"])


def test_three_broker_override_points_the_workers_at_every_broker(compose):
    stack = resolved(compose, BASE, KAFKA_CLUSTER)
    assert {"kafka", "kafka-2", "kafka-3"} <= set(stack["services"])
    assert stack["services"]["worker"]["environment"]["IDGRAPH_BROKER"] == "kafka://kafka:9092,kafka-2:9092,kafka-3:9092"
    voters = {s["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for n, s in stack["services"].items() if n.startswith("kafka")}
    assert voters == {"1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"}


def test_every_file_the_stack_mounts_is_in_the_repository(stack):
    sources = [v.split(":")[0] for s in stack["services"].values() for v in s.get("volumes", []) if v.startswith("/")]
    assert sources, "expected bind mounts for Prometheus and Grafana"
    assert [s for s in sources if not Path(s).exists()] == []


def test_prometheus_sees_its_config_and_every_rule_file_it_loads(stack):
    prometheus = stack["services"]["prometheus"]
    mounts = {dst: src for src, dst, *_ in (v.split(":") for v in prometheus["volumes"]) if src.startswith("/")}
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    folder = Path(mounts["/etc/prometheus"])
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    assert [rules for rules in config.get("rule_files", []) if not (folder / rules).is_file()] == []


def test_promtool_accepts_the_prometheus_config_and_its_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("`promtool` is not installed, so the Prometheus config cannot be checked. Install Debian's "
                    "package (apt-get install -y --no-install-recommends prometheus).")
    done = subprocess.run([promtool, "check", "config", str(REPO / "deploy/prometheus/prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_every_worker_on_its_metrics_port():
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "idgraph-worker"]
    assert job["dns_sd_configs"] == [{"names": ["worker"], "type": "A", "port": 18100, "refresh_interval": "15s"}]


def test_grafana_provisions_prometheus_and_the_dashboards_folder():
    provisioning = REPO / "deploy/grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards/idgraph.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert (REPO / "deploy/grafana/dashboards").is_dir()


def test_image_is_built_in_stages_and_runs_idgraph_as_a_non_root_user():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2
    assert "COPY --from=build" in dockerfile
    (user,) = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user.split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["idgraph"\]', dockerfile, re.M)


def test_build_context_leaves_out_what_the_image_does_not_need():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "**/node_modules"} <= set(ignored)
    assert "README.md" not in ignored  # pyproject.toml names it; the build needs it
