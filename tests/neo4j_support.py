"""A live Neo4j for the store contract tests: the one the environment names, else a local one.

``NEO4J_URI`` (e.g. ``neo4j://localhost:7687``) names a server; ``NEO4J_USER`` (default
``neo4j``), ``NEO4J_PASSWORD`` and ``NEO4J_DATABASE`` (default ``neo4j``) say how to log in.
Without it, the first test that needs Neo4j starts Neo4j Community from the jars `make jars`
built (devstack/jvm.py) for the rest of the session. Every test gets an empty database: the
tests delete everything in it, so never point these at a database whose data you want to keep.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Mapping

from devstack.broker import BrokerError
from devstack.jvm import Neo4jServer, classpath
from graph import cypher
from graph.neo4j import Neo4jStore
from graph.neo4j_settings import Neo4jSettings

ENV_URI = "NEO4J_URI"
SKIPPED = f"Neo4j contract tests skipped: {ENV_URI} is not set and the Neo4j jars are not built (make jars)"
_local: list[Neo4jServer] = []  # the session's server, started on first use
_failed: list[BrokerError] = []  # or why it could not start: said once, not waited for by every test


def configured(env: Mapping[str, str] = os.environ) -> bool:
    if env.get(ENV_URI):
        return True
    try:
        classpath("neo4j")
    except BrokerError:
        return False
    return True


def describe(env: Mapping[str, str] = os.environ) -> str:
    return env[ENV_URI] if env.get(ENV_URI) else "a local Neo4j Community started on first use"


def _local_server() -> Neo4jServer:
    if _failed:
        raise _failed[0]
    if not _local:
        workdir = Path(tempfile.mkdtemp(prefix="idgraph-test-neo4j-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        server = Neo4jServer(workdir)
        try:
            server.start()
        except BrokerError as exc:
            _failed.append(exc)
            raise
        atexit.register(server.stop)  # runs before the removal above: atexit calls run in reverse
        _local.append(server)
    return _local[0]


def settings_from_env(env: Mapping[str, str] = os.environ) -> Neo4jSettings:
    """The test server's settings, in the store's own terms (its error names the store's
    variables, so say which test variables feed them)."""
    if not env.get(ENV_URI):
        server = _local_server()
        return Neo4jSettings.from_env(server.uri, {"IDGRAPH_NEO4J_USER": server.user,
                                                   "IDGRAPH_NEO4J_PASSWORD": server.password})
    if not env.get("NEO4J_PASSWORD"):
        raise RuntimeError(f"{ENV_URI} is set but NEO4J_PASSWORD is not: set both to run the Neo4j contract tests")
    return Neo4jSettings.from_env(env[ENV_URI], {
        "IDGRAPH_NEO4J_USER": env.get("NEO4J_USER", ""),
        "IDGRAPH_NEO4J_PASSWORD": env["NEO4J_PASSWORD"],
        "IDGRAPH_NEO4J_DATABASE": env.get("NEO4J_DATABASE", ""),
    })


@asynccontextmanager
async def empty_store(env: Mapping[str, str] = os.environ) -> AsyncIterator[Neo4jStore]:
    """An open store on a database emptied first (constraints and indexes stay: they are idempotent)."""
    from neo4j import AsyncGraphDatabase

    settings = settings_from_env(env)
    async with AsyncGraphDatabase.driver(settings.url, auth=(settings.user, settings.password)) as driver:
        await driver.execute_query(cypher.DELETE_EVERYTHING.text, database_=settings.database)
    async with Neo4jStore(settings) as store:
        yield store
