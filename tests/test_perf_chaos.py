"""The chaos benchmark's counting, on small hand-made inputs (the benchmark itself is not run here)."""

from __future__ import annotations

from perf.chaos import SeenDelta, StoredDelta, applied_twice, count, lost_events, missing_deltas, out_of_order


def seen(delta_id: str, profile: str, version: int, event: str | None = None) -> SeenDelta:
    return SeenDelta(delta_id, profile, version, event or f"e-{delta_id}")


def stored(delta_id: str, profile: str, version: int, event: str | None = None, published: bool = True) -> StoredDelta:
    return StoredDelta(delta_id, event or f"e-{delta_id}", profile, version, published)


def test_a_profile_whose_versions_go_backwards_is_out_of_order():
    topic = [seen("a1", "A", 1), seen("b1", "B", 1), seen("a3", "A", 3), seen("a2", "A", 2), seen("b2", "B", 2)]
    backwards, redelivered = out_of_order(topic)
    assert backwards == {"A": [1, 3, 2]}
    assert redelivered == 0


def test_a_repeated_delta_is_a_redelivery_not_out_of_order():
    topic = [seen("a1", "A", 1), seen("a2", "A", 2), seen("a1", "A", 1), seen("a2", "A", 2), seen("a3", "A", 3)]
    backwards, redelivered = out_of_order(topic)
    assert backwards == {}
    assert redelivered == 2


def test_a_stored_delta_never_seen_or_left_unpublished_is_missing():
    outbox = [stored("a1", "A", 1), stored("a2", "A", 2), stored("b1", "B", 1, published=False)]
    topic = [seen("a1", "A", 1), seen("b1", "B", 1), seen("x1", "X", 1)]
    missing, unpublished, unknown = missing_deltas(outbox, topic)
    assert missing == ["a2", "b1"]
    assert unpublished == ["b1"]
    assert unknown == ["x1"]


def test_an_event_with_neither_decision_nor_refusal_is_lost():
    assert lost_events(["e1", "e2", "e3"], decided=["e1"], refused=["e3"]) == ["e2"]


def test_an_event_applied_twice_is_counted_and_a_redelivery_is_not():
    outbox = [stored("d1", "A", 1, event="e1"), stored("d2", "A", 2, event="e1"),  # e1 applied twice
              stored("d3", "B", 1, event="e3")]
    topic = [seen("d1", "A", 1, "e1"), seen("d3", "B", 1, "e3"), seen("d3", "B", 1, "e3"),  # d3 redelivered
             seen("d9", "C", 1, "e4"), seen("d8", "C", 1, "e5")]  # two deltas claiming C v1
    assert applied_twice(outbox, topic, decided=["e1", "e3", "e6"], refused=["e6"]) == ["e1", "e4", "e5", "e6"]


def test_a_clean_run_counts_nothing():
    outbox = [stored("a1", "A", 1), stored("a2", "A", 2), stored("b1", "B", 1)]
    topic = [seen("a1", "A", 1), seen("b1", "B", 1), seen("a1", "A", 1), seen("a2", "A", 2)]
    counts = count(["e-a1", "e-a2", "e-b1", "e-r"], ["e-a1", "e-a2", "e-b1"], ["e-r"], outbox, topic)
    assert (counts.lost, counts.applied_twice, counts.deltas_missing, counts.out_of_order) == ([], [], [], {})
    assert counts.redelivered == 1


def test_an_event_decided_twice_is_applied_twice():
    assert applied_twice([], [], decided=["e1", "e2", "e1"], refused=[]) == ["e1"]
