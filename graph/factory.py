"""Choosing a store from a URL, so every command and worker selects it the same way."""

from __future__ import annotations

from pathlib import Path

from graph.store import GraphStore, StoreError

DEFAULT_STORE = "sqlite:///data/idgraph.db"


def store_from_url(url: str | None) -> GraphStore:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db``, a plain file path, or ``sqlite://:memory:``."""
    url = url or DEFAULT_STORE
    if url.startswith(("neo4j://", "neo4j+s://", "neo4j+ssc://", "bolt://", "bolt+s://", "bolt+ssc://")):
        raise StoreError("the Neo4j store is not part of this release yet; use a sqlite:/// store")
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = ":memory:" if path in (":memory:", "/:memory:") else path.removeprefix("/")
    elif "://" in url:
        raise StoreError(f"unknown store URL {url!r}: expected sqlite:///path.db")
    else:
        path = url
    from graph.sqlite import SQLiteStore

    return SQLiteStore(path if path == ":memory:" else Path(path))
