"""``idgraph rules ...`` as an operator runs it: a real process on a real store file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from identity.rules import load_rules, parse_rules

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rules_cli(tmp_path):
    store = f"sqlite:///{tmp_path / 'graph.db'}"

    def run(*args: str, user: str = "ana") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "IDGRAPH_STORE": store, "USER": user}
        return subprocess.run([sys.executable, "-m", "cli.main", "rules", *args], cwd=REPO, capture_output=True,
                              text=True, env=env)
    return run


def rule_file(tmp_path: Path, name: str, **changes: object) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(load_rules().model_copy(update=dict(version=name, **changes)).to_yaml(), encoding="utf-8")
    return path


def registered(run, path: Path) -> str:
    result = run("register", str(path))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_register_prints_the_model_version_and_registering_it_again_changes_nothing(tmp_path, rules_cli):
    path = rule_file(tmp_path, "v1")
    version = registered(rules_cli, path)
    assert version == load_rules(path).model_version
    again = rules_cli("register", str(path))
    assert (again.returncode, again.stdout.strip()) == (0, version) and "already registered" in again.stderr
    (listed,) = rules_cli("list").stdout.splitlines()
    assert listed.startswith("  ") and (listed.split()[0], listed.split()[2]) == (version, "ana")


def test_an_invalid_rule_file_is_refused_with_its_reason_in_one_line(tmp_path, rules_cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\nprior: 2\n", encoding="utf-8")
    result = rules_cli("register", str(bad))
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "invalid rules in" in result.stderr
    assert rules_cli("list").stdout.strip() == "no models registered"


def test_show_gives_the_registered_rules(tmp_path, rules_cli):
    version = registered(rules_cli, rule_file(tmp_path, "v1"))
    assert parse_rules(rules_cli("show", version).stdout, "shown").model_version == version


def test_show_of_an_unknown_version_is_refused_in_one_line(rules_cli):
    result = rules_cli("show", "nope@000000000000")
    assert result.returncode == 2 and result.stderr.strip() == "error: no model 'nope@000000000000' is registered"


def test_promoting_an_unknown_version_is_refused_with_the_reason_in_one_line(rules_cli):
    result = rules_cli("promote", "nope@000000000000")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: no model 'nope@000000000000' is registered "
                                                  "(idgraph rules list shows those that are)"]


def test_promote_makes_a_model_live_and_history_says_who_and_why(tmp_path, rules_cli):
    v1 = registered(rules_cli, rule_file(tmp_path, "v1"))
    v2 = registered(rules_cli, rule_file(tmp_path, "v2", prior=0.02))
    assert rules_cli("promote", v1).returncode == 0
    result = rules_cli("promote", v2, "--reason", "re-estimated", user="bo")
    assert result.stdout.strip() == f"{v2} is live (was {v1})"
    assert [line.startswith("* ") for line in rules_cli("list").stdout.splitlines()] == [False, True]
    last = rules_cli("history").stdout.splitlines()[-1].split()
    assert (last[0], last[2:], ) == ("2", ["promote", v1, "->", v2, "by", "bo", "(re-estimated)"])


def test_by_names_who_promoted_instead_of_the_user(tmp_path, rules_cli):
    v1 = registered(rules_cli, rule_file(tmp_path, "v1"))
    rules_cli("promote", v1, "--by", "release-bot")
    assert rules_cli("history").stdout.split()[6:8] == ["by", "release-bot"]


def test_rollback_returns_to_each_earlier_live_version_in_turn_then_refuses(tmp_path, rules_cli):
    versions = [registered(rules_cli, rule_file(tmp_path, f"v{n}", prior=0.01 * n)) for n in (1, 2, 3)]
    for version in versions:
        rules_cli("promote", version)
    assert rules_cli("rollback").stdout.strip() == f"{versions[1]} is live again (was {versions[2]})"
    assert rules_cli("rollback").stdout.strip() == f"{versions[0]} is live again (was {versions[1]})"
    refused = rules_cli("rollback")
    assert refused.returncode == 2 and "nothing to roll back to" in refused.stderr
    assert [line.split()[2] for line in rules_cli("history").stdout.splitlines()] == [
        "promote", "promote", "promote", "rollback", "rollback"]


def test_a_model_blocking_otherwise_than_the_index_is_refused_naming_the_reindex_to_run(tmp_path, rules_cli):
    v1 = registered(rules_cli, rule_file(tmp_path, "v1"))
    rules_cli("promote", v1)
    subprocess.run([sys.executable, "-m", "cli.main", "reindex", "--rules", str(tmp_path / "v1.yaml")], cwd=REPO,
                   env={**os.environ, "IDGRAPH_STORE": f"sqlite:///{tmp_path / 'graph.db'}"}, check=True,
                   capture_output=True)
    wider = rule_file(tmp_path, "wide", blocking=[*load_rules().blocking, ("company", "city")])
    v2 = registered(rules_cli, wider)
    result = rules_cli("promote", v2)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"idgraph rules show {v2} > rules.yaml && idgraph reindex --rules rules.yaml" in result.stderr
    assert rules_cli("list").stdout.splitlines()[0].startswith(f"* {v1}")
