"""Worker settings come from IDGRAPH_* variables and are checked at start."""

import pytest

from streams.settings import Settings, SettingsError


def test_defaults_need_no_environment():
    settings = Settings.from_env({})
    assert settings.broker is None and settings.store == "sqlite:///data/idgraph.db"
    assert settings.fetch_wait_ms == 10 and settings.partitions == 4


def test_values_are_read_from_prefixed_variables():
    settings = Settings.from_env({"IDGRAPH_BROKER": "kafka://k1:9092,k2:9092", "IDGRAPH_PARTITIONS": "8"})
    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.partitions == 8


def test_profile_growth_threshold_defaults_to_200_and_is_read_from_its_variable():
    assert Settings.from_env({}).profile_growth_threshold == 200
    assert Settings.from_env({"IDGRAPH_PROFILE_GROWTH_THRESHOLD": "50"}).profile_growth_threshold == 50


@pytest.mark.parametrize("variable, value, message", [
    ("IDGRAPH_PROFILE_GROWTH_THRESHOLD", "0", "IDGRAPH_PROFILE_GROWTH_THRESHOLD"),
    ("IDGRAPH_BROKER", "localhost:9092", "kafka://host:9092"),
    ("IDGRAPH_BROKER", "kafka://host", "is not host:port"),
    ("IDGRAPH_PARTITIONS", "zero", "IDGRAPH_PARTITIONS"),
    ("IDGRAPH_FETCH_WAIT_MS", "0", "IDGRAPH_FETCH_WAIT_MS"),
    ("IDGRAPH_RULES", "/nonexistent/rules.yaml", "no such file"),
])
def test_bad_values_are_refused_naming_the_variable(variable, value, message):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert variable in str(caught.value) and message in str(caught.value)


def test_misspelt_variables_are_reported_as_unknown():
    environ = {"IDGRAPH_PARTITONS": "8", "IDGRAPH_PARTITIONS": "2", "IDGRAPH_NEO4J_USER": "neo4j", "HOME": "/root"}
    assert Settings.unknown_variables(environ) == ["IDGRAPH_PARTITONS"]


def test_scenarios_must_name_module_and_object():
    with pytest.raises(SettingsError, match="IDGRAPH_SCENARIOS: .*expected module:object"):
        Settings.from_env({"IDGRAPH_SCENARIOS": "battery_recycling"})
    assert Settings.from_env({"IDGRAPH_SCENARIOS": "a.b:C, d:E"}).scenarios == "a.b:C, d:E"
