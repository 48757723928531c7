"""The Neo4j benchmark runs one and two writers on a real server and checks what they left."""

from __future__ import annotations

import orjson
import pytest

from perf import neo4j_throughput
from tests import neo4j_support

pytestmark = pytest.mark.skipif(not neo4j_support.configured(), reason=neo4j_support.SKIPPED)


def test_one_and_two_writers_land_every_event_once_and_the_figures_end_in_json(capsys, monkeypatch):
    monkeypatch.setattr(neo4j_throughput, "START_GRACE_S", 0.0)
    settings = neo4j_support.settings_from_env()  # the session's server: its database is emptied
    env = {"NEO4J_URI": settings.url, "NEO4J_USER": settings.user, "NEO4J_PASSWORD": settings.password}
    assert neo4j_throughput.main(["--events", "60", "--batch-sizes", "20", "--workers", "1", "2"], env=env) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    runs = orjson.loads(lines[-1])["runs"]
    assert [(r["workers"], r["batch_size"], r["events"]) for r in runs] == [(1, 20, 60), (2, 20, 60)]
    assert [(r["events_not_applied_once"], r["identifiers_shared_by_live_profiles"]) for r in runs] == [(0, 0), (0, 0)]
    assert runs[0]["same_as_sqlite"] is True and runs[0]["batch_p99_ms"] >= runs[0]["batch_p50_ms"] > 0
    assert "2 worker(s), batch   20" in lines[-2]


def test_benchmark_reads_the_same_connection_settings_as_the_contract_tests():
    settings = neo4j_throughput.settings_from_env(
        {"NEO4J_URI": "bolt://db:7687", "NEO4J_USER": "bench", "NEO4J_PASSWORD": "pw", "NEO4J_DATABASE": "scratch"})
    assert (settings.url, settings.user, settings.password, settings.database) == ("bolt://db:7687", "bench", "pw", "scratch")
