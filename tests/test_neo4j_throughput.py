"""The Neo4j benchmark is safe to run anywhere: without a server it says so and still ends in JSON."""

from __future__ import annotations

import orjson

from perf import neo4j_throughput


def test_without_neo4j_the_benchmark_says_so_and_exits_cleanly(capsys):
    assert neo4j_throughput.main([], env={}) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "NEO4J_URI is not set" in lines[0]
    assert orjson.loads(lines[-1]) == {"skipped": "NEO4J_URI not set"}


def test_benchmark_reads_the_same_connection_settings_as_the_contract_tests():
    settings = neo4j_throughput.settings_from_env(
        {"NEO4J_URI": "bolt://db:7687", "NEO4J_USER": "bench", "NEO4J_PASSWORD": "pw", "NEO4J_DATABASE": "scratch"})
    assert (settings.url, settings.user, settings.password, settings.database) == ("bolt://db:7687", "bench", "pw", "scratch")
