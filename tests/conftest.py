"""Shared fixtures: a real SQLite store in a temporary file and a small event builder."""

from __future__ import annotations

from itertools import count
from typing import Any, AsyncIterator

import pytest

from graph.resolver import Resolver
from graph.sqlite import SQLiteStore
from graph.store import Outcome
from identity.events import TouchpointEvent, parse_event
from identity.features import prepare
from identity.rules import Rules, load_rules

_sequence = count(1)


def make_event(identifiers: dict[str, Any] | None = None, traits: dict[str, Any] | None = None, **fields: Any) -> TouchpointEvent:
    n = next(_sequence)
    raw = {
        "event_id": fields.pop("event_id", f"evt-{n:06d}"),
        "scenario": fields.pop("scenario", "sales.crm"),
        "type": fields.pop("type", "lead_created"),
        "occurred_at": fields.pop("occurred_at", f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}+00:00"),
        "identifiers": identifiers or {},
        "traits": traits or {},
        **fields,
    }
    return parse_event(raw)


@pytest.fixture(scope="session")
def rules() -> Rules:
    return load_rules()


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "graph.db") as opened:
        yield opened


class Engine:
    """Resolve events one at a time against a store, as the stream worker does."""

    def __init__(self, store: SQLiteStore, rules: Rules) -> None:
        self.store = store
        self.rules = rules
        self.resolver = Resolver(store, rules)

    async def resolve(self, event: TouchpointEvent) -> Outcome:
        (outcome,) = await self.resolver.resolve([prepare(event, self.rules)])
        return outcome


@pytest.fixture
def engine(store: SQLiteStore, rules: Rules) -> Engine:
    return Engine(store, rules)


def cn_national_id(serial: int) -> str:
    """A mainland resident id with a correct ISO 7064 MOD 11-2 check character."""
    body = f"11010119900307{serial:03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]
    return body + check
