"""The garbage collector's settings for idgraph's long-running processes (the worker, ``idgraph resolve``).

Resolving makes no reference cycles: a run of 6,000 events in ``perf.hotpath`` left nothing for
a final ``gc.collect()`` to free. Yet under CPython's default thresholds (700, 10, 10) the
collector spent ~86 µs per event (9% of the worker's CPU there) tracing objects that were all
alive, and each full collection traced the whole heap (~280,000 objects once the parse caches
are warm), a ~70 ms stop of the event loop at a time, which lands straight on the latency tail.

So, once started: what start-up built (modules, rules, registries) is moved out of the
collector's sight for good (``gc.freeze``), and young objects are collected every 10,000 net
allocations instead of 700. Cycles that do arise (an exception's traceback, say) are still
collected, only less often.
"""

from __future__ import annotations

import gc

#: Net container allocations between young collections, then young and middle collections per
#: older one. The default's 700 ran a young collection every ~8 events and a middle one every ~80.
THRESHOLDS = (10_000, 10, 10)


def tune_collector() -> None:
    """Call once, when the process has started: start-up's garbage is collected, the rest frozen."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
