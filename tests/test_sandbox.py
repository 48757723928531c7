"""``idgraph sandbox``: a copy of the live graph to try candidate rules on, run as a user runs it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from typer.testing import Result

from graph.factory import store_from_url
from graph.sqlite import SQLiteStore
from graph.store import GraphStore
from identity.events import parse_event
from identity.features import prepare
from identity.rules import load_rules
from sandbox.replay import copy_history
from sandbox.workspace import create
from service.resolver import Resolver
from tests.sandbox_support import CSV, HISTORY, MAP, Idgraph, with_live_history


@pytest.fixture
def idgraph(tmp_path: Path) -> Idgraph:
    return with_live_history(tmp_path)


def accepted(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT event_id FROM touchpoints ORDER BY seq")]


def test_a_sandbox_starts_as_a_copy_of_the_live_store(idgraph):
    result = idgraph("sandbox", "create", "trial")
    assert result.exit_code == 0, result.output
    assert accepted(idgraph.sandbox("trial") / "baseline.db") == ["a1", "a2", "a3"]
    assert "sandbox.trial.*" in result.output and "idg_" in result.output


def test_an_empty_sandbox_holds_no_live_data(idgraph):
    assert idgraph("sandbox", "create", "blank", "--empty").exit_code == 0
    assert accepted(idgraph.sandbox("blank") / "baseline.db") == []


def test_a_sandbox_has_its_own_api_token_kept_hashed(idgraph):
    result = idgraph("sandbox", "create", "trial")
    token = result.output.split("(shown once): ")[1].strip()
    (entry,) = orjson.loads((idgraph.sandbox("trial") / "tokens.json").read_bytes())
    assert token not in str(entry) and entry["scopes"] == ["admin"] and len(entry["sha256"]) == 64


def test_a_name_that_cannot_name_topics_is_refused(idgraph):
    result = idgraph("sandbox", "create", "Bad Name")
    assert result.exit_code == 2 and "bad sandbox name 'Bad Name'" in result.output


def test_creating_a_sandbox_that_exists_is_refused(idgraph):
    idgraph("sandbox", "create", "trial")
    result = idgraph("sandbox", "create", "trial")
    assert result.exit_code == 2 and "already exists" in result.output


def test_sandboxes_are_listed_with_their_source(idgraph):
    idgraph("sandbox", "create", "trial")
    idgraph("sandbox", "create", "blank", "--empty")
    lines = idgraph("sandbox", "list").output.splitlines()
    assert [line.split()[0] for line in lines] == ["blank", "trial"]
    assert "live snapshot" in lines[1] and "empty" in lines[0]


def load_csv(idgraph: Idgraph, name: str = "trial") -> Result:
    path = idgraph.tmp / "own.csv"
    path.write_text(CSV)
    return idgraph("sandbox", "load", name, str(path), *MAP)


def test_loading_reports_each_unusable_row_by_line_and_resolves_the_rest(idgraph):
    idgraph("sandbox", "create", "trial", "--empty")
    result = load_csv(idgraph)
    assert result.exit_code == 0, result.output
    assert "line 3: occurred_at: Value error, must be an RFC 3339 timestamp" in result.output
    assert "line 4: 8 cells where the header has 7" in result.output
    assert accepted(idgraph.sandbox("trial") / "baseline.db") == ["u1", "u4"]


def test_loaded_columns_go_to_the_mapped_fields_and_the_rest_to_the_payload(idgraph):
    idgraph("sandbox", "create", "trial", "--empty")
    load_csv(idgraph)
    with sqlite3.connect(idgraph.sandbox("trial") / "baseline.db") as connection:
        (stored,) = connection.execute("SELECT event FROM touchpoints WHERE event_id = 'u1'").fetchone()
    loaded = orjson.loads(stored)
    assert (loaded["scenario"], loaded["type"], loaded["traits"], loaded["payload"]) == (
        "sandbox.load", "signup", {"name": "Wang Fang"}, {"note": "first"})


def test_a_bad_mapping_is_refused_naming_it(idgraph):
    idgraph("sandbox", "create", "trial", "--empty")
    path = idgraph.tmp / "own.csv"
    path.write_text(CSV)
    result = idgraph("sandbox", "load", "trial", str(path), "--map", "nickname=full_name")
    assert result.exit_code == 2 and "'nickname' is no event field" in result.output


def test_replay_resolves_every_accepted_event_in_order_under_the_candidate_rules(idgraph):
    idgraph("sandbox", "create", "trial")
    result = idgraph("sandbox", "replay", "trial", "--rules", str(idgraph.strict_rules()))
    assert result.exit_code == 0, result.output
    candidate = idgraph.sandbox("trial") / "candidate.db"
    assert accepted(candidate) == ["a1", "a2", "a3"]
    with sqlite3.connect(candidate) as connection:
        versions = {v for (v,) in connection.execute("SELECT json_extract(record, '$.rule_version') FROM decisions")}
    assert versions == {load_rules(idgraph.strict_rules()).model_version}


def replayed_diff(idgraph: Idgraph) -> dict[str, object]:
    idgraph("sandbox", "create", "trial")
    idgraph("sandbox", "replay", "trial", "--rules", str(idgraph.strict_rules()))
    result = idgraph("sandbox", "diff", "trial", "--json")
    assert result.exit_code == 0, result.output
    diff: dict[str, object] = orjson.loads(result.output)
    return diff


def test_the_diff_shows_the_profile_the_candidate_would_split_and_the_events_that_move(idgraph):
    diff = replayed_diff(idgraph)
    assert diff["profiles"] == {"merge": 0, "split": 1, "stay": 1}
    assert diff["moved"] == ["a1", "a2"]
    assert diff["baseline"]["actions"] == {"create": 2, "link": 1}  # type: ignore[index]
    assert diff["candidate"]["actions"] == {"create": 3}  # type: ignore[index]


def test_the_diff_scores_both_versions_where_loaded_data_carries_labels(idgraph):
    idgraph("sandbox", "create", "trial", "--empty")
    load_csv(idgraph)
    idgraph("sandbox", "replay", "trial", "--rules", str(idgraph.strict_rules()))
    accuracy = orjson.loads(idgraph("sandbox", "diff", "trial", "--json").output)["accuracy"]
    assert accuracy["baseline"]["recall"] == 1.0 and accuracy["candidate"]["recall"] == 0.0


def test_diff_before_any_replay_says_to_replay_first(idgraph):
    idgraph("sandbox", "create", "trial")
    result = idgraph("sandbox", "diff", "trial")
    assert result.exit_code == 2 and "run 'idgraph sandbox replay trial --rules FILE' first" in result.output


def test_explain_shows_both_versions_decisions_side_by_side(idgraph):
    replayed_diff(idgraph)
    header, first = idgraph("sandbox", "explain", "trial", "a2").output.splitlines()[:2]
    assert header.split() == ["baseline", "|", "candidate"]
    assert "linked to an existing profile" in first.split("|")[0] and "created a new profile" in first.split("|")[1]


def test_drop_leaves_nothing_of_the_sandbox(idgraph):
    replayed_diff(idgraph)
    result = idgraph("sandbox", "drop", "trial")
    assert result.exit_code == 0, result.output
    assert not idgraph.sandbox("trial").exists() and idgraph("sandbox", "list").output.strip() == "no sandboxes"


def test_dropping_an_unknown_sandbox_is_refused(idgraph):
    result = idgraph("sandbox", "drop", "nothing")
    assert result.exit_code == 2 and "no sandbox named 'nothing'" in result.output


def dump(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return list(connection.iterdump())


def test_a_full_sandbox_session_leaves_the_live_store_as_it_was(idgraph):
    before = dump(idgraph.live)
    assert idgraph("sandbox", "create", "trial").exit_code == 0
    assert load_csv(idgraph).exit_code == 0
    assert idgraph("sandbox", "replay", "trial", "--rules", str(idgraph.strict_rules())).exit_code == 0
    assert idgraph("sandbox", "diff", "trial").exit_code == 0
    assert idgraph("sandbox", "drop", "trial").exit_code == 0
    assert dump(idgraph.live) == before


def live_url(store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> str:
    if isinstance(store, SQLiteStore):
        return f"sqlite:///{store.path}"
    monkeypatch.setenv("IDGRAPH_NEO4J_USER", store.settings.user)
    monkeypatch.setenv("IDGRAPH_NEO4J_PASSWORD", store.settings.password)
    monkeypatch.setenv("IDGRAPH_NEO4J_DATABASE", store.settings.database)
    return store.settings.url


@pytest.mark.every_store
async def test_a_snapshot_holds_the_live_history_in_acceptance_order_with_its_profiles(store, rules, tmp_path, monkeypatch):
    await Resolver(store, rules).resolve([prepare(parse_event(e), rules) for e in HISTORY])
    sandbox, _ = await create(tmp_path / "sandboxes", "trial", live_url(store, monkeypatch), rules,
                              copy_history=copy_history)
    assert accepted(sandbox.path / "baseline.db") == ["a1", "a2", "a3"]
    async with store_from_url(sandbox.store_url) as copy:
        profiles = dict(await copy.assignments())
    assert profiles["a1"] == profiles["a2"] != profiles["a3"]


def test_a_sandbox_takes_the_live_model_its_snapshot_holds(idgraph):
    strict = load_rules(idgraph.strict_rules()).model_version
    assert idgraph("rules", "register", str(idgraph.strict_rules())).exit_code == 0
    assert idgraph("rules", "promote", strict, "--by", "ana").exit_code == 0
    assert idgraph("sandbox", "create", "trial").exit_code == 0
    assert f"live rules {strict}" in idgraph("sandbox", "list").output


def subscriptions(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return sorted(name for (name,) in connection.execute("SELECT name FROM subscriptions"))


def test_a_snapshot_keeps_no_live_webhook_so_a_sandbox_worker_posts_nothing_live(idgraph):
    assert idgraph("subscribe", "--name", "crm", "--field", "traits.*", "--webhook", "http://crm.example/hook").exit_code == 0
    assert idgraph("subscribe", "--name", "service", "--field", "traits.*").exit_code == 0
    assert idgraph("sandbox", "create", "trial").exit_code == 0
    assert subscriptions(idgraph.sandbox("trial") / "baseline.db") == ["service"]
    assert subscriptions(idgraph.live) == ["crm", "service"]


def test_a_replayed_candidate_store_has_the_candidate_rules_live_for_its_worker(idgraph):
    replayed_diff(idgraph)
    with sqlite3.connect(idgraph.sandbox("trial") / "candidate.db") as connection:
        (live,) = connection.execute("SELECT value FROM meta WHERE name = 'live_model'").fetchone()
    assert live == load_rules(idgraph.strict_rules()).model_version
