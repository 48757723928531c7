"""What one API application holds: its store, rules, policy, tokens, sandboxes and metrics (no module globals)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

from api.auth import TokenRegistry
from api.sandboxes import SandboxDiffs
from graph.store import GraphStore
from identity.policy import Policy
from identity.rules import Rules
from service.operations import Operations


@dataclass
class ApiMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter("idgraph_api_requests", "API requests by route and status",
                                ("method", "route", "status"), registry=self.registry)


@dataclass
class ApiState:
    store: GraphStore
    rules: Rules
    policy: Policy
    tokens: TokenRegistry
    #: The sandboxes whose decision diffs the console shows; None when the API was given none.
    sandboxes: SandboxDiffs | None = None
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    #: One writer at a time: the embedded store shares one connection, and a second transaction
    #: begun on it while one is open would fail (or commit with the first).
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def operations(self) -> Operations:
        return Operations(self.store, self.rules, self.policy)
