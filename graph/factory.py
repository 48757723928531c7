"""Choosing a store from a URL, so every command and worker selects it the same way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from graph.neo4j_settings import SCHEMES as NEO4J_SCHEMES
from graph.neo4j_settings import Neo4jSettings, is_neo4j_url
from graph.store import GraphStore, StoreError

DEFAULT_STORE = "sqlite:///data/idgraph.db"


def store_from_url(url: str | None, env: Mapping[str, str] | None = None) -> GraphStore:
    """The store a URL names.

    * ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, a plain file path, or ``sqlite://:memory:``
    * ``neo4j://host:7687`` (and ``neo4j+s``, ``neo4j+ssc``, ``bolt``, ``bolt+s``, ``bolt+ssc``), with
      credentials and database from ``IDGRAPH_NEO4J_USER`` / ``_PASSWORD`` / ``_DATABASE`` in ``env``
      (the process environment by default); see graph/neo4j_settings.py.

    Nothing connects here: :meth:`GraphStore.open` does, so a bad URL fails before any I/O.
    """
    url = url or DEFAULT_STORE
    if is_neo4j_url(url):
        settings = Neo4jSettings.from_env(url, os.environ if env is None else env)
        from graph.neo4j import Neo4jStore

        return Neo4jStore(settings)
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = ":memory:" if path in (":memory:", "/:memory:") else path.removeprefix("/")
    elif "://" in url:
        schemes = ", ".join(f"{s}://" for s in NEO4J_SCHEMES)
        raise StoreError(f"unknown store URL {url!r}: expected sqlite:///path.db or a Neo4j URL ({schemes})")
    else:
        path = url
    from graph.sqlite import SQLiteStore

    return SQLiteStore(path if path == ":memory:" else Path(path))
