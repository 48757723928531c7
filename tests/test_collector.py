"""The collector settings the worker and ``idgraph resolve`` take once started (streams/collector.py)."""

import gc
import weakref

import pytest

from streams.collector import THRESHOLDS, tune_collector


@pytest.fixture
def collector():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tuning_freezes_what_start_up_built_and_raises_the_thresholds(collector):
    gc.unfreeze()
    kept = [{"start-up": i} for i in range(100)]
    tune_collector()
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() >= len(kept)


class Node:
    other: "Node"


def test_cycles_made_after_tuning_are_still_collected_unasked(collector):
    tune_collector()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    churn = [[] for _ in range(THRESHOLDS[0] * 2)]  # held: net allocations past the young threshold
    assert gone() is None
    del churn
