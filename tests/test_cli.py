"""The idgraph command line, run as a user runs it: a real process on real files."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson

from devstack.demo import sample_events_path
from devstack.workload import synthetic_events
from identity.rules import load_rules, parse_rules

REPO = Path(__file__).resolve().parents[1]


def idgraph(*args: str, store: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``store`` is given as IDGRAPH_STORE, for commands that take the worker's settings."""
    env = {**os.environ, "IDGRAPH_STORE": f"sqlite:///{store}"} if store else None
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True, env=env)


def resolve(tmp: Path, name: str, events: Path) -> subprocess.CompletedProcess[str]:
    return idgraph("resolve", "--input", str(events), "--output", str(tmp / f"{name}.csv"), "--store", f"sqlite:///{tmp / name}.db")


def test_resolve_writes_one_assignment_per_event_and_refused_lines_with_reasons(tmp_path):
    result = resolve(tmp_path, "run", sample_events_path())
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "run.csv").read_text().splitlines()
    assert rows[0] == "event_id,profile_id"
    assert len(rows) == 1 + 11  # 13 lines: one refused, one duplicate
    (refused,) = (tmp_path / "run.csv.rejects.jsonl").read_bytes().splitlines()
    record = orjson.loads(refused)
    assert record["line"] == 10 and record["errors"] == [{"path": "identifiers.phone", "reason": "not a valid number for region CN"}]
    assert "1 events refused" in result.stderr


def test_resolve_is_deterministic_for_the_same_input_and_rules(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for _, e in synthetic_events(50, 400)))
    assert resolve(tmp_path, "one", events).returncode == 0
    assert resolve(tmp_path, "two", events).returncode == 0
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "two.csv").read_text()


def test_explain_prints_the_decision_of_an_event(tmp_path):
    resolve(tmp_path, "run", sample_events_path())
    result = idgraph("explain", "evt-0012", "--store", f"sqlite:///{tmp_path / 'run'}.db")
    assert result.returncode == 0, result.stderr
    assert "evt-0012: merged profiles" in result.stdout


def test_explain_of_an_unknown_event_fails_with_a_clear_message(tmp_path):
    resolve(tmp_path, "run", sample_events_path())
    result = idgraph("explain", "nope", "--store", f"sqlite:///{tmp_path / 'run'}.db")
    assert result.returncode == 2
    assert "no decision recorded for event 'nope'" in result.stderr


def test_growth_lists_the_largest_profiles_and_counts_those_over_the_threshold(tmp_path):
    resolve(tmp_path, "run", sample_events_path())
    result = idgraph("growth", "--threshold", "2", "--limit", "2", store=tmp_path / "run.db")
    assert result.returncode == 0, result.stderr
    # The sample resolves to profiles of 5, 3, 2 and 1 records (the assignments say so).
    sizes = Counter(row.split(",")[1] for row in (tmp_path / "run.csv").read_text().splitlines()[1:])
    lines = result.stdout.splitlines()
    assert lines[0] == "2 profiles hold more than 2 records"
    assert [tuple(line.split()) for line in lines[1:]] == [(str(n), p) for p, n in sizes.most_common(2)]


def test_reindex_rebuilds_the_blocking_index_under_the_rules_given_and_says_what_changed(tmp_path):
    resolve(tmp_path, "run", sample_events_path())
    rules = load_rules()
    fewer = tmp_path / "fewer.yaml"
    fewer.write_text(rules.model_copy(update=dict(blocking=rules.blocking[1:])).to_yaml())
    result = idgraph("reindex", "--rules", str(fewer), store=tmp_path / "run.db")
    assert result.returncode == 0, result.stderr
    records = len((tmp_path / "run.csv").read_text().splitlines()) - 1
    assert result.stdout.startswith(f"reindexed {records} records under {len(rules.blocking) - 1} blocking rules")
    assert "0 added, 1 removed" in result.stdout
    again = idgraph("reindex", "--rules", str(fewer), store=tmp_path / "run.db")
    assert "(before: it already matched them)" in again.stdout


def test_estimate_writes_a_loadable_rule_file_with_new_weights(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for _, e in synthetic_events(200, 1500)))
    result = idgraph("estimate", "--input", str(events), "--output", str(tmp_path / "rules.yaml"), "--version", "em-test")
    assert result.returncode == 0, result.stderr
    estimated, default = load_rules(tmp_path / "rules.yaml"), load_rules()
    assert estimated.version == "em-test"
    assert estimated.comparisons != default.comparisons
    assert f"wrote model {estimated.model_version}" in result.stdout


def test_bad_rules_file_is_refused_with_the_reason(tmp_path):
    (tmp_path / "rules.yaml").write_text("version: x\n")
    result = idgraph("resolve", "--input", str(sample_events_path()), "--output", str(tmp_path / "o.csv"),
                     "--rules", str(tmp_path / "rules.yaml"))
    assert result.returncode == 2
    assert "invalid rules" in result.stderr


def test_resolve_refuses_a_reused_event_id_naming_its_line_and_keeps_the_first(tmp_path):
    first = {"event_id": "same", "scenario": "sales.crm", "type": "lead_created", "occurred_at": "2026-03-01T09:00:00+08:00",
             "identifiers": {"phone": "13800138071"}}
    other = first | {"identifiers": {"phone": "13800138072"}}
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(first) + b"\n" + orjson.dumps(first) + b"\n" + orjson.dumps(other) + b"\n")
    result = resolve(tmp_path, "run", events)
    assert result.returncode == 0, result.stderr
    (refused,) = (tmp_path / "run.csv.rejects.jsonl").read_bytes().splitlines()
    record = orjson.loads(refused)
    assert (record["line"], record["reason_class"], record["errors"][0]["path"]) == (3, "id_conflict", "event_id")
    assert [r.split(",")[0] for r in (tmp_path / "run.csv").read_text().splitlines()] == ["event_id", "same"]
    assert "1 duplicates" in result.stdout


def typos_file(tmp: Path, people: int = 800) -> Path:
    from perf.synthetic import generate

    records, _ = generate("typos", people=people)
    path = tmp / "typos.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"event_id": rec_id, "scenario": "s", "type": "t",
                                            "occurred_at": "2026-01-01T00:00:00Z", "traits": traits}) + b"\n"
                              for rec_id, traits in records))
    return path


def test_resolve_learns_the_model_from_the_events_and_every_decision_names_it(tmp_path):
    events = typos_file(tmp_path)
    result = resolve(tmp_path, "run", events)
    assert result.returncode == 0, result.stderr
    version = result.stdout.split("learned model ")[1].split()[0]
    assert version.startswith(f"{load_rules().version}+em1000@")
    first = orjson.loads(events.read_bytes().splitlines()[0])["event_id"]
    explained = idgraph("explain", first, "--json", "--store", f"sqlite:///{tmp_path / 'run'}.db")
    assert orjson.loads(explained.stdout)["rule_version"] == version


def test_each_model_resolve_learns_is_registered_in_the_store_for_promotion(tmp_path):
    result = resolve(tmp_path, "run", typos_file(tmp_path))
    version = result.stdout.split("learned model ")[1].split()[0]
    shown = idgraph("rules", "show", version, store=tmp_path / "run.db")
    assert shown.returncode == 0, shown.stderr
    assert parse_rules(shown.stdout, "shown").model_version == version


def test_resolve_without_learning_keeps_the_rules_model_throughout(tmp_path):
    events = typos_file(tmp_path)
    result = idgraph("resolve", "--input", str(events), "--output", str(tmp_path / "o.csv"),
                     "--store", f"sqlite:///{tmp_path / 'run'}.db", "--no-learn")
    assert result.returncode == 0, result.stderr
    assert "learned model" not in result.stdout
    first = orjson.loads(events.read_bytes().splitlines()[0])["event_id"]
    explained = idgraph("explain", first, "--json", "--store", f"sqlite:///{tmp_path / 'run'}.db")
    assert orjson.loads(explained.stdout)["rule_version"] == load_rules().model_version


def test_resolve_shows_its_progress_on_standard_error(tmp_path):
    result = resolve(tmp_path, "run", typos_file(tmp_path, people=100))
    assert result.returncode == 0, result.stderr
    assert "resolving" in result.stderr and "events/s" in result.stderr


def test_estimate_without_an_input_learns_from_the_stores_own_touchpoints(tmp_path):
    assert idgraph("resolve", "--input", str(typos_file(tmp_path)), "--output", str(tmp_path / "o.csv"),
                   "--store", f"sqlite:///{tmp_path / 'run'}.db", "--no-learn").returncode == 0
    result = idgraph("estimate", "--output", str(tmp_path / "rules.yaml"), "--store", f"sqlite:///{tmp_path / 'run'}.db")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1427 stored touchpoints")
    assert load_rules(tmp_path / "rules.yaml").comparisons != load_rules().comparisons
