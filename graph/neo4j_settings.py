"""Where the Neo4j store connects and as whom: the store URL plus ``IDGRAPH_NEO4J_*`` settings.

The URL (``IDGRAPH_STORE``) names the server only; credentials come from their own settings
so they stay out of command lines, logs and ``docker compose config`` output.

=========================  ==========  ==========================================
Setting                    Default     Meaning
=========================  ==========  ==========================================
``IDGRAPH_NEO4J_USER``     ``neo4j``   user to authenticate as
``IDGRAPH_NEO4J_PASSWORD`` (required)  its password
``IDGRAPH_NEO4J_DATABASE`` ``neo4j``   database to use (Enterprise can host many)
=========================  ==========  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from graph.store import StoreError

#: The driver's schemes: ``neo4j`` routes across a cluster, ``bolt`` talks to one server;
#: ``+s`` adds TLS with certificate checks, ``+ssc`` TLS accepting self-signed certificates.
SCHEMES = ("neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc")

ENV_USER = "IDGRAPH_NEO4J_USER"
ENV_PASSWORD = "IDGRAPH_NEO4J_PASSWORD"
ENV_DATABASE = "IDGRAPH_NEO4J_DATABASE"
DEFAULT_USER = "neo4j"
DEFAULT_DATABASE = "neo4j"


def is_neo4j_url(url: str) -> bool:
    return url.partition("://")[0] in SCHEMES


@dataclass(frozen=True, slots=True)
class Neo4jSettings:
    url: str
    user: str
    password: str = field(repr=False)
    database: str = DEFAULT_DATABASE

    @classmethod
    def from_env(cls, url: str, env: Mapping[str, str]) -> "Neo4jSettings":
        """Settings for ``url``; a clear :class:`StoreError` when something needed is missing."""
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise StoreError(f"not a Neo4j URL: {url!r}; expected one of {', '.join(s + '://' for s in SCHEMES)}")
        if not parts.hostname:
            raise StoreError(f"the Neo4j URL {url!r} names no host; expected e.g. neo4j://localhost:7687")
        if parts.username or parts.password:
            raise StoreError(
                f"put Neo4j credentials in {ENV_USER} and {ENV_PASSWORD}, not in the store URL "
                "(URLs end up in logs and process lists)"
            )
        password = env.get(ENV_PASSWORD)
        if not password:
            raise StoreError(
                f"the Neo4j store at {url} needs credentials: set {ENV_PASSWORD} "
                f"(and {ENV_USER} if the user is not {DEFAULT_USER!r})"
            )
        return cls(
            url=url,
            user=env.get(ENV_USER) or DEFAULT_USER,
            password=password,
            database=env.get(ENV_DATABASE) or DEFAULT_DATABASE,
        )
