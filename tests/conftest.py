"""Shared fixtures: a real store (SQLite in a temporary file, or Neo4j) and a small event builder.

A test module marked ``pytestmark = pytest.mark.every_store`` runs each of its tests against
every store: SQLite, and Neo4j (``NEO4J_URI``, or a local server; tests/neo4j_support.py). Other
modules get SQLite only.
"""

from __future__ import annotations

from itertools import count
from typing import Any, AsyncIterator

import pytest

from graph.sqlite import SQLiteStore
from graph.store import GraphStore, Outcome
from identity.events import TouchpointEvent, parse_event
from identity.features import prepare
from identity.rules import Rules, load_rules
from service.resolver import Resolver
from tests import neo4j_support

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


STORE_KINDS = ("sqlite", "neo4j")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "every_store: run against SQLite and Neo4j (NEO4J_URI, or a local server)")


def pytest_report_header(config: pytest.Config) -> str:
    if neo4j_support.configured():
        return f"graph stores under contract: sqlite, neo4j ({neo4j_support.describe()})"
    return f"graph stores under contract: sqlite only ({neo4j_support.SKIPPED})"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker("every_store"):
        metafunc.parametrize("store_kind", STORE_KINDS, indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    kind = getattr(request, "param", "sqlite")
    if kind == "neo4j" and not neo4j_support.configured():
        # Skipped here rather than by a mark, so the report sums every such test in one line.
        pytest.skip(neo4j_support.SKIPPED)
    return kind


@pytest.fixture
async def store(tmp_path, store_kind: str) -> AsyncIterator[GraphStore]:
    if store_kind == "neo4j":
        async with neo4j_support.empty_store() as opened:
            yield opened
    else:
        async with SQLiteStore(tmp_path / "graph.db") as opened:
            yield opened


class Engine:
    """Resolve events one at a time against a store, as the stream worker does."""

    def __init__(self, store: GraphStore, rules: Rules) -> None:
        self.store = store
        self.rules = rules
        self.resolver = Resolver(store, rules)

    async def resolve(self, event: TouchpointEvent) -> Outcome:
        (outcome,) = await self.resolver.resolve([prepare(event, self.rules)])
        return outcome


@pytest.fixture
def engine(store: GraphStore, rules: Rules) -> Engine:
    return Engine(store, rules)


def cn_national_id(serial: int) -> str:
    """A mainland resident id with a correct ISO 7064 MOD 11-2 check character."""
    body = f"11010119900307{serial:03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]
    return body + check
