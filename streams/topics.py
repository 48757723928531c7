"""How idgraph creates its topics, so that an erased customer does not outlive erasure there.

Topics keyed by profile id (``identity.deltas``, ``identity.touchpoints`` and every
subscription's topic) are compacted: each record carries the profile as it stands, so the
latest one per profile is the state a new consumer needs, and the tombstones written after a
``profile.erased`` (one per erased profile id) make compaction drop every earlier record of
that customer. Input and dead-letter topics carry platforms' raw events, keyed by something
else or nothing: they are deleted after ``IDGRAPH_RAW_RETENTION_HOURS``.

The configuration applies when idgraph creates a topic; a topic that already exists keeps its own.
"""

from __future__ import annotations

#: Topics keyed by profile id.
PROFILE_KEYED: dict[str, str] = {"cleanup.policy": "compact"}


def raw_events(retention_hours: int) -> dict[str, str]:
    """Topics of events as platforms sent them."""
    return {"cleanup.policy": "delete", "retention.ms": str(retention_hours * 3_600_000)}
