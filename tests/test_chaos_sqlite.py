"""Two worker processes on one SQLite file, one SIGKILLed mid-stream (perf.chaos, run small).

Each batch is one ``BEGIN IMMEDIATE`` transaction that reads what it resolves against inside
it, so the second worker's writes are seen, never overwritten. Nothing may be lost or applied
twice, no delta may go unseen on identity.deltas, and no identifier may end up held by two live
profiles. The embedded broker keeps this quick; the Kafka restart is tests/test_chaos_neo4j.py's.
"""

from __future__ import annotations

from perf.chaos import FAILURE_KEYS, run, summary

EVENTS = 800


async def test_two_workers_on_one_sqlite_file_lose_nothing_and_apply_nothing_twice_when_one_is_killed(tmp_path):
    # Seed 2 draws the kill at 58 events resolved, early in the stream.
    result = await run(EVENTS, kills=1, seed=2, rate=100.0, workdir=tmp_path, broker="embedded", workers=2)
    print(summary(result))
    assert (result["workers"], result["store"], result["kills"]) == (2, "sqlite", 1)
    assert result["resolved_at_kills"][0] < EVENTS, "the kill must land mid-stream"
    assert {k: result[k] for k in FAILURE_KEYS} == dict.fromkeys(FAILURE_KEYS, 0), summary(result)
    assert result["deltas_stored"] > 0 and result["deltas_seen"] >= result["deltas_stored"]
