"""The names of idgraph's topics: part of its contract with platforms and scenarios, declared once.

How each topic is configured on a broker (compaction, retention) is the runtime's business
(streams/topics.py); each subscription's own topic is named by its sink (sinks/subscriptions.py).

A worker may run in a namespace (``IDGRAPH_TOPIC_NAMESPACE``, e.g. a sandbox's ``sandbox.x.``):
every topic it reads or writes then carries that prefix, so it never touches the live topics.
The default namespace, ``""``, gives the live names platforms and scenarios rely on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Empty, or topic-name characters ending in a dot: ``sandbox.x.``.
NAMESPACE = re.compile(r"^([A-Za-z0-9._-]{0,99}\.)?$")


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Every topic name of one namespace."""

    namespace: str = ""

    def __post_init__(self) -> None:
        if not NAMESPACE.match(self.namespace):
            raise ValueError(f"topic namespace {self.namespace!r} must be empty or topic-name characters "
                             "(letters, digits, '.', '_', '-') ending in '.', at most 100")

    @property
    def touchpoints(self) -> str:
        """Input events, any key (platforms may key by a customer hint)."""
        return self.namespace + "touchpoints"

    @property
    def deltas(self) -> str:
        """Every identity change, keyed by profile id (per-profile order)."""
        return self.namespace + "identity.deltas"

    @property
    def notices(self) -> str:
        """Every resolved touchpoint (identity/notices.py), keyed by profile id, for scenarios subscribed to event types."""
        return self.namespace + "identity.touchpoints"

    @property
    def dead_letter(self) -> str:
        """Refused events and failed deliveries: the original bytes plus reason headers (sinks/deadletter.py)."""
        return self.namespace + "idgraph.dead-letter"

    @property
    def subscriptions(self) -> str:
        """Subscription declarations from scenario processes."""
        return self.namespace + "idgraph.subscriptions"

    def scoped(self, topic: str) -> str:
        """Another topic (a subscription's own, as its sink names it) in this namespace."""
        return self.namespace + topic

    def fixed(self) -> tuple[str, ...]:
        """The topics every worker uses whatever its subscriptions."""
        return (self.touchpoints, self.deltas, self.notices, self.dead_letter, self.subscriptions)


#: Every sandbox's namespace is ``sandbox.NAME.``, and dropping a sandbox deletes its topics by
#: that prefix; so no live topic may start with it (sinks/subscriptions.py refuses one).
SANDBOX_PREFIX = "sandbox."


def sandbox_namespace(name: str) -> str:
    return f"{SANDBOX_PREFIX}{name}."


#: The live topics: what platforms and scenarios produce to and consume from.
LIVE = TopicNames()
