"""The embedded store's own guarantees: schema, atomic batches, idempotency, crash consistency."""

import asyncio
import inspect
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
from structlog.testing import capture_logs

import graph.sqlite
from devstack.workload import synthetic_events
from graph.sqlite import SQLiteStore
from graph.sqlite_schema import MIGRATIONS, migrate
from graph.store import POSITIONAL, StoreError, StoreUnavailable
from identity.events import parse_event
from identity.features import blocking_signature, prepare
from service.blocking import start_with_blocking_index
from service.resolver import Resolver
from tests.conftest import make_event

REPO = Path(__file__).resolve().parents[1]


async def test_schema_is_created_and_versioned_on_open(tmp_path):
    async with SQLiteStore(tmp_path / "g.db"):
        pass
    db = sqlite3.connect(tmp_path / "g.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_the_store_keeps_the_pages_it_reads_in_a_cache_sized_for_its_indexes(tmp_path):
    """SQLite's 2 MiB default misses most index pages once a graph holds a few thousand records."""
    async with SQLiteStore(tmp_path / "g.db") as store:
        kib = -store.db.execute("PRAGMA cache_size").fetchone()[0]  # negative: KiB, not pages
    assert kib >= 64 * 1024


async def test_file_from_a_newer_release_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "g.db")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this release"):
        await SQLiteStore(tmp_path / "g.db").open()


def test_a_file_migrated_by_another_process_while_this_one_waited_opens(tmp_path):
    path = tmp_path / "g.db"

    class OvertakenWhileWaiting(sqlite3.Connection):
        """Another process takes the write lock first and migrates the whole file."""

        overtaken = False

        def execute(self, sql, *args):
            if sql == "BEGIN IMMEDIATE" and not self.overtaken:
                self.overtaken = True
                other = sqlite3.connect(path, isolation_level=None)
                migrate(other)
                other.close()
            return super().execute(sql, *args)

    db = sqlite3.connect(path, isolation_level=None, factory=OvertakenWhileWaiting)
    migrate(db)
    assert db.overtaken
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_file_from_before_record_counts_has_its_profiles_counted_when_opened(tmp_path, rules):
    async with SQLiteStore(tmp_path / "g.db") as store:
        first = await Resolver(store, rules).resolve([prepare(make_event({"crm_id": "c-1"}), rules)])
        await Resolver(store, rules).resolve([prepare(make_event({"crm_id": "c-1"}), rules)])
    before = next(v for v, m in enumerate(MIGRATIONS) if "profile_records_insert" in str(m))
    db = sqlite3.connect(tmp_path / "g.db")
    # The record-count migration undone: the file as the release before it left it.
    db.executescript("DROP TRIGGER profile_records_insert; DROP TRIGGER profile_records_delete; "
                     "DROP TRIGGER profile_records_move; DROP TRIGGER profile_records_erase; "
                     f"DROP TABLE profile_records; PRAGMA user_version = {before};")
    db.close()
    async with SQLiteStore(tmp_path / "g.db") as store:
        assert (await store.profile_growth(threshold=1)).largest == [(first[0].profile_id, 2)]


def _before_migration(name: str) -> int:
    """The schema version a file had before the migration done by the function ``name``."""
    return next(v for v, m in enumerate(MIGRATIONS) if getattr(m, "__name__", None) == name)


async def test_file_counting_terms_per_record_counts_them_per_profile_when_opened(tmp_path, rules):
    async with SQLiteStore(tmp_path / "g.db") as store:
        for crm_id, city in (("c-1", "Leeds"), ("c-1", "York"), ("c-2", "York")):
            await Resolver(store, rules).resolve([prepare(make_event({"crm_id": crm_id}, {"family_name": "Smith", "city": city}), rules)])
    db = sqlite3.connect(tmp_path / "g.db")
    # As the release before it counted: every touchpoint all its keys.
    db.executescript("UPDATE touchpoints SET terms = json_array('family_name:smith', 'city:' || lower(json_extract(features, '$.city'))); "
                     "DELETE FROM term_counts; INSERT INTO term_counts VALUES ('family_name:smith', 3), ('city:leeds', 1), ('city:york', 2); "
                     "DELETE FROM term_totals; INSERT INTO term_totals VALUES ('family_name', 3, 9), ('city', 3, 5); "
                     f"PRAGMA user_version = {_before_migration('_count_terms_per_profile')};")
    db.close()
    async with SQLiteStore(tmp_path / "g.db") as store:
        kept = [orjson.loads(t) for (t,) in store.db.execute("SELECT terms FROM touchpoints ORDER BY seq")]
        counts = dict(store.db.execute("SELECT key, n FROM term_counts"))
        totals = {f: (r, s) for f, r, s in store.db.execute("SELECT field, records, squares FROM term_totals")}
    assert [sorted(k) for k in kept] == [["city:leeds", "family_name:smith"], ["city:york"], ["city:york", "family_name:smith"]]
    assert counts == {"family_name:smith": 2, "city:leeds": 1, "city:york": 2}
    assert totals == {"family_name": (2, 4), "city": (3, 5)}


async def positional_file(path, rules):
    """A file as the release before rule ids left it: keys named ``b<position>:``, no signature."""
    async with SQLiteStore(path) as store:
        first = await Resolver(store, rules).resolve([prepare(make_event(traits={"name": "Zhang Wei", "city": "Shanghai"}), rules)])
    marked = next(v for v, m in enumerate(MIGRATIONS) if "blocking_signature" in str(m))
    db = sqlite3.connect(path)
    db.executescript("UPDATE blocking SET key = 'b3:' || substr(key, instr(key, ':') + 1); "
                     f"DELETE FROM meta WHERE name = 'blocking_signature'; PRAGMA user_version = {marked};")
    db.close()
    return first[0]


async def test_file_with_keys_named_by_rule_position_is_marked_so_when_opened(tmp_path, rules):
    await positional_file(tmp_path / "g.db", rules)
    async with SQLiteStore(tmp_path / "g.db") as store:
        assert await store.blocking_signature() == POSITIONAL


async def test_worker_start_rebuilds_a_file_keyed_by_rule_position_and_says_so(tmp_path, rules):
    first = await positional_file(tmp_path / "g.db", rules)
    async with SQLiteStore(tmp_path / "g.db") as store:
        with capture_logs() as logs:
            await start_with_blocking_index(store, rules)
        again = await Resolver(store, rules).resolve([prepare(make_event(traits={"name": "Zhang Wei", "city": "Shanghai"}), rules)])
        assert await store.blocking_signature() == blocking_signature(rules)
    assert [(e["event"], e["log_level"], e["records"]) for e in logs] == [("blocking index rebuilt at start", "warning", 1)]
    assert first.profile_id in {c["profile_id"] for c in again[0].decision["evidence"]["candidates"]}


async def test_worker_start_warns_of_changed_blocking_rules_naming_the_command(tmp_path, rules):
    async with SQLiteStore(tmp_path / "g.db") as store:
        await start_with_blocking_index(store, rules.model_copy(update=dict(blocking=rules.blocking[1:])))
        with capture_logs() as logs:
            await start_with_blocking_index(store, rules)
    (warning,) = logs
    assert warning["log_level"] == "warning" and "idgraph reindex" in warning["event"]
    assert "1 added, 0 removed" in warning["problem"]


async def test_redelivered_event_changes_nothing_and_returns_the_original_outcome(engine, store):
    event = make_event({"phone": "13800138000"}, {"name": "张伟"})
    first = await engine.resolve(event)
    again = await engine.resolve(event)
    assert again.duplicate and not first.duplicate
    assert again.decision == first.decision
    assert [d.delta_id for d in again.deltas] == [d.delta_id for d in first.deltas]
    assert len(await store.assignments()) == 1
    assert (await store.profile(first.profile_id)).version == 1


async def test_duplicate_inside_one_batch_is_applied_once(store, rules):
    event = prepare(make_event({"phone": "13800138000"}), rules)
    first, second = await Resolver(store, rules).resolve([event, event])
    assert second.duplicate and second.profile_id == first.profile_id
    assert len(await store.unpublished_deltas()) == 1


async def test_published_deltas_leave_the_outbox(engine, store):
    await engine.resolve(make_event({"phone": "13800138000"}))
    (pending,) = await store.unpublished_deltas()
    await store.mark_published([pending.delta_id])
    assert await store.unpublished_deltas() == []


def _write_workload(path: Path, events: int) -> None:
    with path.open("wb") as out:
        for _, event in synthetic_events(customers=events // 10, events=events, seed=11):
            out.write(orjson.dumps(event) + b"\n")


def _resolve_cmd(tmp: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", "resolve", "--input", str(tmp / "events.jsonl"),
            "--output", str(tmp / f"{name}.csv"), "--store", f"sqlite:///{tmp / name}.db", "--batch-size", "25"]


def _applied(db_path: Path) -> int:
    try:
        with sqlite3.connect(db_path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_store_killed_mid_batch_reopens_consistent_and_resumes_to_the_same_result(tmp_path):
    _write_workload(tmp_path / "events.jsonl", 4000)
    subprocess.run(_resolve_cmd(tmp_path, "clean"), check=True, cwd=REPO, capture_output=True)

    victim = subprocess.Popen(_resolve_cmd(tmp_path, "crashed"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _applied(tmp_path / "crashed.db") < 1000 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()

    db = sqlite3.connect(tmp_path / "crashed.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    applied = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    assert 1000 <= applied < 4000, "the kill must land mid-run for this test to mean anything"
    assert applied % 25 == 0, "batches are atomic: never part of one"
    assert db.execute("SELECT COUNT(*) FROM touchpoints").fetchone()[0] == applied
    orphans = db.execute("SELECT COUNT(*) FROM outbox WHERE event_id NOT IN (SELECT event_id FROM decisions)")
    assert orphans.fetchone()[0] == 0
    stale = db.execute(
        "SELECT COUNT(*) FROM profiles p WHERE p.merged_into IS NULL AND p.version != "
        "(SELECT MAX(json_extract(delta, '$.profile_version')) FROM outbox o WHERE o.profile_id = p.id)"
    )
    assert stale.fetchone()[0] == 0, "every live profile's version is its latest delta's"
    db.close()

    subprocess.run(_resolve_cmd(tmp_path, "crashed"), check=True, cwd=REPO, capture_output=True)
    assert (tmp_path / "crashed.csv").read_text() == (tmp_path / "clean.csv").read_text()


def _held_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's open write transaction on the same file."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_a_batch_waiting_for_a_write_lock_another_process_holds_leaves_the_event_loop_running(engine, store, rules):
    other = _held_write_lock(Path(store.path))
    resolving = asyncio.ensure_future(engine.resolve(make_event({"crm_id": "c-1"})))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(20):
        await asyncio.sleep(0.005)
    # A loop blocked in SQLite's busy handler would have stalled for its 30 s timeout.
    assert loop.time() - started < 5 and not resolving.done(), "the loop ran while the batch waited for the lock"
    other.execute("COMMIT")
    outcome = await asyncio.wait_for(resolving, 5)
    assert await store.decision(outcome.event_id) is not None


async def test_a_write_lock_held_past_the_busy_timeout_makes_the_store_unavailable(store, monkeypatch):
    monkeypatch.setattr(graph.sqlite, "BUSY_TIMEOUT_S", 0.2)
    other = _held_write_lock(Path(store.path))
    with pytest.raises(StoreUnavailable, match="another process held its write lock"):
        async with store.transaction():
            pass
    other.execute("ROLLBACK")
    async with store.transaction():
        pass  # the lock is free again: the store is usable, nothing was left half-open


def _touchpoints_in_the_database_file_alone(path: Path, tmp_path: Path) -> int:
    """What the database file holds without its write-ahead log: what checkpoints copied back."""
    copy = tmp_path / "file-alone.db"
    copy.write_bytes(path.read_bytes())
    db = sqlite3.connect(copy)
    try:
        return db.execute("SELECT COUNT(*) FROM touchpoints").fetchone()[0]
    finally:
        db.close()


async def test_writes_reach_the_database_file_within_a_second_without_a_commit_copying_them(engine, store, tmp_path):
    await engine.resolve(make_event({"crm_id": "c-1"}))  # a commit far short of a 1,000-page log
    await asyncio.sleep(1.2)  # two checkpoint intervals
    assert _touchpoints_in_the_database_file_alone(Path(store.path), tmp_path) == 1


async def test_closing_the_store_stops_its_checkpoint_thread(tmp_path):
    before = set(threading.enumerate())  # other tests' stores may still hold threads of their own
    async with SQLiteStore(tmp_path / "g.db"):
        (mine,) = [t for t in threading.enumerate() if t not in before and t.name == "idgraph-sqlite-checkpoints"]
    assert not mine.is_alive()


async def test_a_batch_writes_its_term_counts_once_per_key_at_its_end(store, rules):
    """Counted in memory, the batch's term counts reach the file in one write per key, before its commit."""
    events = [prepare(make_event({"phone": f"1380013801{i}"}, {"name": "Zhang Wei", "city": "上海"}), rules)
              for i in range(3)]
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    await Resolver(store, rules).resolve(events)
    store.db.set_trace_callback(None)
    writes = [s for s in statements if s.startswith("INSERT INTO term_counts")]
    assert len(writes) == len(set(events[0].term_keys))
    key = next(k for k in events[0].term_keys if "上海" in k)
    assert store.db.execute("SELECT n FROM term_counts WHERE key = ?", (key,)).fetchone() == (3,)


def _profiles_kept_apart(db: sqlite3.Connection, pairs: list[tuple[str, str]], merged: dict[str, str] | None = None) -> None:
    """Profiles and the pairs people kept apart, written as operations leave them."""
    merged = merged or {}
    ids = {p for pair in pairs for p in pair} | set(merged.values())
    db.executemany("INSERT INTO profiles (id, version, created_at, updated_at, traits) VALUES (?, 1, '', '', '{}')",
                   [(p,) for p in sorted(ids)])
    db.executemany("UPDATE profiles SET merged_into = ? WHERE id = ?", [(live, p) for p, live in merged.items()])
    db.executemany("INSERT INTO kept_apart (a, b, operation_id) VALUES (?, ?, 'op')", [tuple(sorted(p)) for p in pairs])


async def test_a_pair_kept_apart_holds_for_the_profile_one_side_was_merged_into(store):
    _profiles_kept_apart(store.db, [("p_a", "p_b")], merged={"p_a": "p_c"})
    assert graph.sqlite.kept_apart(store.db, {"p_c", "p_b"}) == {frozenset({"p_c", "p_b"})}
    assert graph.sqlite.kept_apart(store.db, {"p_c", "p_d"}) == frozenset()


async def _vm_steps(db: sqlite3.Connection, read: Callable[[], Any]) -> int:
    """How many virtual-machine instructions SQLite ran for ``read`` (awaited if it is a
    coroutine): its work, unmoved by the machine's load."""
    counted = [0]

    def count() -> int:
        counted[0] += 1
        return 0
    db.set_progress_handler(count, 1)
    try:
        if inspect.isawaitable(result := read()):
            await result
    finally:
        db.set_progress_handler(None, 1)
    return counted[0]


async def test_finding_the_pairs_kept_apart_among_candidates_reads_as_much_however_many_pairs_exist(store):
    """Every event with two candidates asks; the pairs of other customers must not be read for it."""
    _profiles_kept_apart(store.db, [("p_a", "p_b")] + [(f"q_{i}", f"r_{i}") for i in range(10)])
    few = await _vm_steps(store.db, lambda: graph.sqlite.kept_apart(store.db, {"p_a", "p_b"}))
    _profiles_kept_apart(store.db, [(f"q_{i}", f"r_{i}") for i in range(10, 2_000)])
    assert await _vm_steps(store.db, lambda: graph.sqlite.kept_apart(store.db, {"p_a", "p_b"})) < 2 * few


async def test_reading_back_a_batchs_unsent_deltas_reads_as_much_however_many_others_wait_unsent(engine, store):
    """After each batch the worker reads back its profiles' unsent deltas; a backlog of others'
    (a broker refusing produces for a while) must not be read for it."""
    def unsent(n: int) -> None:
        store.db.executemany("INSERT INTO outbox (delta_id, event_id, profile_id, delta) VALUES (?, ?, ?, '{}')",
                             [(f"d_{n}_{i}", f"e_{n}_{i}", f"p_{n}_{i}") for i in range(n)])
    mine = await engine.resolve(make_event({"email": "me@example.com"}))
    unsent(10)
    few = await _vm_steps(store.db, lambda: store.unpublished_deltas([mine.event_id], profile_ids=[mine.profile_id]))
    unsent(2_000)
    many = await _vm_steps(store.db, lambda: store.unpublished_deltas([mine.event_id], profile_ids=[mine.profile_id]))
    assert many < 2 * few


def _whole_table_reads(db: sqlite3.Connection, statements: set[str]) -> dict[str, list[str]]:
    """The statements among ``statements`` whose plan reads a whole table or index, with those reads."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    found = {}
    for sql in statements:
        if sql.startswith(("PRAGMA", "BEGIN", "COMMIT", "ROLLBACK", "--", "SELECT EXISTS")):  # EXISTS stops at a row
            continue
        plan = [detail for *_, detail in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
        if whole := [d for d in plan if d.startswith("SCAN ") and d.split()[1] in tables]:
            found[sql[:120]] = whole
    return found


async def _resolved(store: SQLiteStore, rules: Any, events: int = 200) -> list[Any]:
    prepared = [prepare(parse_event(e), rules) for _, e in synthetic_events(customers=events // 5, events=events, seed=7)]
    outcomes = []
    for start in range(0, len(prepared), 50):
        batch = await Resolver(store, rules).resolve(prepared[start:start + 50])
        fresh = [d for o in batch for d in o.deltas]
        await store.unpublished_deltas([o.event_id for o in batch], profile_ids=[d.profile_id for d in fresh])
        await store.mark_published([d.delta_id for d in fresh])
        outcomes += batch
    return outcomes


async def test_every_statement_resolving_and_relaying_a_batch_runs_finds_its_rows_through_a_key(store, rules):
    """A statement that reads a whole table for each event or batch costs more with every event
    stored (two did: the kept-apart pairs and the outbox read-back), so none may."""
    statements: set[str] = set()
    store.db.set_trace_callback(statements.add)
    await _resolved(store, rules)
    store.db.set_trace_callback(None)
    assert len(statements) > 10 and _whole_table_reads(store.db, statements) == {}


async def test_every_statement_of_a_persons_operations_finds_its_rows_through_a_key(store, rules):
    """Review verdicts, merges, splits and erasures hold the write lock every worker waits on:
    one reading a whole table (erasure read every record's blocking keys per touchpoint erased)
    stalls resolution for as long as the graph is large."""
    from service.operations import Operations
    profiles = sorted({o.profile_id for o in await _resolved(store, rules)})
    for traits in ({"name": "Zhang Wei", "city": "Shanghai", "birth_date": "1985-04-12"}, {"name": "Zhang Wei", "city": "Shanghai"},
                   {"name": "Li Na", "city": "Beijing", "birth_date": "1990-01-02"}, {"name": "Li Na", "city": "Beijing"}):
        await Resolver(store, rules).resolve([prepare(make_event(traits=traits), rules)])
    *_, rejected, approved = await store.reviews("open")  # the last two: the pairs above
    operations = Operations(store, rules)
    statements: set[str] = set()
    store.db.set_trace_callback(statements.add)
    await operations.decide_review(rejected["id"], False, actor="op", reason="different people")
    await operations.decide_review(approved["id"], True, actor="op", reason="same person")
    survivor = (await operations.merge(profiles[:2], actor="op", reason="same person")).deltas[0].profile_id
    retired = next(p for p in profiles[:2] if p != survivor)
    await operations.split(survivor, retired, actor="op", reason="not the same")
    await operations.erase(survivor, actor="me", requested_by="customer")
    store.db.set_trace_callback(None)
    assert len(statements) > 10 and _whole_table_reads(store.db, statements) == {}


async def test_file_from_before_review_profiles_lists_each_reviews_profiles_when_opened(tmp_path, rules):
    async with SQLiteStore(tmp_path / "g.db") as store:
        await Resolver(store, rules).resolve([prepare(make_event(traits={"name": "Zhang Wei", "city": "Shanghai",
                                                                         "birth_date": "1985-04-12"}), rules)])
        await Resolver(store, rules).resolve([prepare(make_event(traits={"name": "Zhang Wei", "city": "Shanghai"}), rules)])
        (review,) = await store.reviews("open")
    db = sqlite3.connect(tmp_path / "g.db")
    db.executescript("DROP TRIGGER review_profiles_insert; DROP TRIGGER review_profiles_delete; DROP TABLE review_profiles; "
                     f"PRAGMA user_version = {next(v for v, m in enumerate(MIGRATIONS) if 'review_profiles' in str(m))};")
    db.close()
    async with SQLiteStore(tmp_path / "g.db") as store:
        listed = sorted(p for (p,) in store.db.execute("SELECT profile_id FROM review_profiles WHERE review_id = ?",
                                                       (review["id"],)))
    assert listed == sorted(review["profile_ids"])
