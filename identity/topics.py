"""The names of idgraph's topics: part of its contract with platforms and scenarios, declared once.

How each topic is configured on a broker (compaction, retention) is the runtime's business
(streams/topics.py); each subscription's own topic is named by its sink (sinks/subscriptions.py).
"""

from __future__ import annotations

#: Input events, any key (platforms may key by a customer hint).
TOUCHPOINTS_TOPIC = "touchpoints"
#: Every identity change, keyed by profile id (per-profile order).
DELTAS_TOPIC = "identity.deltas"
#: Every resolved touchpoint (identity/notices.py), keyed by profile id, for scenarios subscribed to event types.
NOTICES_TOPIC = "identity.touchpoints"
#: Refused events and failed deliveries: the original bytes plus reason headers (sinks/deadletter.py).
DEAD_LETTER_TOPIC = "idgraph.dead-letter"
#: Subscription declarations from scenario processes.
SUBSCRIPTIONS_TOPIC = "idgraph.subscriptions"
