"""A live Neo4j for the store contract tests, when the environment names one.

``NEO4J_URI`` (e.g. ``neo4j://localhost:7687``) turns the Neo4j half of the contract suite on;
``NEO4J_USER`` (default ``neo4j``), ``NEO4J_PASSWORD`` and ``NEO4J_DATABASE`` (default ``neo4j``)
say how to log in. Every test gets an empty database: the tests delete everything in it, so
never point these at a database whose data you want to keep.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import AsyncIterator, Mapping

from graph import cypher
from graph.neo4j import Neo4jStore
from graph.neo4j_settings import Neo4jSettings

ENV_URI = "NEO4J_URI"
SKIPPED = f"Neo4j contract tests skipped: {ENV_URI} is not set"


def configured(env: Mapping[str, str] = os.environ) -> bool:
    return bool(env.get(ENV_URI))


def settings_from_env(env: Mapping[str, str] = os.environ) -> Neo4jSettings:
    """The test server's settings, in the store's own terms (its error names the store's
    variables, so say which test variables feed them)."""
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
