"""Timeline search, the same in both stores (graph/fulltext.py): Chinese without spaces and English words,
every word required, the best match first, one profile's touchpoints only; and the time phrases
a query may hold, in English and Chinese."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest

from service.operations import Operations
from graph.sqlite import SQLiteStore
from graph.sqlite_schema import MIGRATIONS
from api.search import parse_query, search
from identity.features import prepare
from tests.conftest import Engine, make_event

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
async def history(engine):
    """One customer's repairs and quotes, and another customer's repair."""
    phone = {"phone": "13800138000"}
    tube = await engine.resolve(make_event(phone, scenario="service.repair", type="work_order",
                                           payload={"job": "更换CT球管", "site": "瑞金医院"}))
    quote = await engine.resolve(make_event(phone, scenario="battery-recycling.quote", type="quote_issued",
                                            payload={"battery": "LFP 60Ah", "note": "电池回收报价"}))
    await engine.resolve(make_event({"phone": "13900139000"}, scenario="service.repair", type="work_order",
                                    payload={"job": "更换CT球管"}))
    return tube.profile_id, tube.event_id, quote.event_id


async def found(store, profile_id, *terms):
    return [e.event_id for e in await store.search_timeline(profile_id, terms)]


@pytest.mark.every_store
async def test_a_chinese_word_is_found_inside_a_longer_run_without_spaces(store, history):
    mine, tube, _ = history
    assert await found(store, mine, "ct球管") == [tube]


@pytest.mark.every_store
async def test_a_two_character_chinese_word_is_found(store, history):
    mine, tube, quote = history
    assert await found(store, mine, "球管") == [tube]
    assert await found(store, mine, "报价") == [quote]


@pytest.mark.every_store
async def test_an_english_word_finds_longer_words_it_begins(store, history):
    mine, _, quote = history
    assert await found(store, mine, "quote") == [quote]
    assert await found(store, mine, "battery") == [quote]


@pytest.mark.every_store
async def test_every_word_must_match(store, history):
    mine, tube, _ = history
    assert await found(store, mine, "瑞金医院", "球管") == [tube]
    assert await found(store, mine, "瑞金医院", "battery") == []


@pytest.mark.every_store
async def test_identifiers_are_not_searched_as_history(store, history):
    # The timeline shows no identifiers (the customer's page masks them), so a search finds none.
    mine, *_ = history
    assert await found(store, mine, "13800138000") == []


@pytest.mark.every_store
async def test_touchpoints_written_after_a_search_are_found_by_the_next(store, engine):
    first = await engine.resolve(make_event({"phone": "13300133000"}, payload={"job": "更换CT球管"}))
    assert await found(store, first.profile_id, "球管") == [first.event_id]
    second = await engine.resolve(make_event({"phone": "13300133000"}, payload={"job": "球管复检"}))
    assert await found(store, first.profile_id, "球管") == [first.event_id, second.event_id]


@pytest.mark.every_store
async def test_the_best_match_comes_first(store, engine):
    phone = {"phone": "13700137000"}
    passing = await engine.resolve(make_event(phone, type="visit", payload={
        "note": "asked about opening hours, parking, the new showroom, delivery times and a battery"}))
    focused = await engine.resolve(make_event(phone, type="battery_check", payload={"battery": "battery swap"}))
    assert await found(store, passing.profile_id, "battery") == [focused.event_id, passing.event_id]


@pytest.mark.every_store
async def test_a_merged_profiles_touchpoints_are_searched_under_the_survivor(store, engine):
    older = await engine.resolve(make_event({"phone": "13600136000"}, payload={"job": "更换CT球管"}))
    newer = await engine.resolve(make_event({"email": "m@example.com"}, payload={"job": "球管复检"}))
    await engine.resolve(make_event({"phone": "13600136000", "email": "m@example.com"}))
    assert sorted(await found(store, older.profile_id, "球管")) == sorted([older.event_id, newer.event_id])


@pytest.mark.every_store
async def test_erased_touchpoints_leave_the_index(store, engine, rules, store_kind):
    outcome = await engine.resolve(make_event({"phone": "13500135000"}, payload={"job": "更换CT球管"}))
    assert await found(store, outcome.profile_id, "ct球管") == [outcome.event_id]
    await Operations(store, rules).erase(outcome.profile_id, actor="test", requested_by="customer")
    assert await found(store, outcome.profile_id, "ct球管") == []


@pytest.mark.every_store
async def test_a_time_phrase_narrows_the_search_before_the_result_limit(store, engine, rules):
    # More older matches than one page holds, all alike, then one in the range asked for: the
    # store must drop the older ones before it takes its first 200, or the one is cut off.
    phone = {"phone": "13200132000"}
    older = [make_event(phone, payload={"job": "更换CT球管"}, occurred_at=f"2024-03-{1 + n % 28:02d}T08:00:{n % 60:02d}+08:00")
             for n in range(201)]
    for start in range(0, len(older), 50):
        await engine.resolver.resolve([prepare(event, rules) for event in older[start:start + 50]])
    last_year = await engine.resolve(make_event(phone, payload={"job": "更换CT球管"}, occurred_at="2025-05-04T10:00:00+08:00"))
    hits = await search(store, last_year.profile_id, parse_query("去年 更换CT球管", now=NOW))
    assert [entry.event_id for entry in hits] == [last_year.event_id]


@pytest.mark.parametrize(("text", "terms", "start", "end"), [
    ("去年 更换CT球管", ("更换ct球管",), "2025-01-01", "2026-01-01"),
    ("去年更换CT球管", ("更换ct球管",), "2025-01-01", "2026-01-01"),
    ("上个月的电池报价", ("电池报价",), "2026-05-01", "2026-06-01"),
    ("battery quotes last month", ("battery", "quote"), "2026-05-01", "2026-06-01"),
    ("2024年 球管", ("球管",), "2024-01-01", "2025-01-01"),
    ("最近 维修", ("维修",), "2026-05-16", "2026-06-16"),
])
def test_time_phrases_in_english_and_chinese_narrow_the_range(text, terms, start, end):
    query = parse_query(text, now=NOW)
    assert query.terms == terms
    assert (query.start.date().isoformat(), query.end.date().isoformat()) == (start, end)


async def test_a_search_answers_while_another_process_holds_the_write_lock(store, engine):
    # The worker holds the file's write lock for each batch; the API's search only reads.
    outcome = await engine.resolve(make_event({"phone": "13400134000"}, payload={"job": "更换CT球管"}))
    worker = sqlite3.connect(store.path, isolation_level=None)
    worker.execute("BEGIN IMMEDIATE")
    try:
        assert await found(store, outcome.profile_id, "ct球管") == [outcome.event_id]
        assert await found(store, outcome.profile_id, "球管") == [outcome.event_id]
    finally:
        worker.execute("ROLLBACK")
        worker.close()


async def test_a_file_keeping_search_text_from_an_older_release_loses_it_on_upgrade(tmp_path, rules):
    path = tmp_path / "old.db"
    async with SQLiteStore(path) as store:
        outcome = await Engine(store, rules).resolve(make_event({"phone": "13400134000"}, payload={"job": "更换CT球管"}))
    db = sqlite3.connect(path)
    db.executescript("CREATE VIRTUAL TABLE touchpoint_text USING fts5(body, tokenize = 'trigram'); "
                     "CREATE TRIGGER touchpoint_text_delete AFTER DELETE ON touchpoints BEGIN "
                     "DELETE FROM touchpoint_text WHERE rowid = old.seq; END; "
                     "INSERT INTO touchpoint_text (rowid, body) SELECT seq, event FROM touchpoints; "
                     f"PRAGMA user_version = {next(v for v, m in enumerate(MIGRATIONS) if 'DROP TABLE touchpoint_text' in str(m))};")
    db.close()
    async with SQLiteStore(path) as store:
        assert store.db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'touchpoint_text%'").fetchall() == []
        assert await found(store, outcome.profile_id, "ct球管") == [outcome.event_id]
