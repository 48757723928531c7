"""Faults a real Neo4j server cannot produce on demand, injected in front of a real driver.

Everything goes to the real server except the one statement named in ``failures``, which
raises the given exception instead of running, once per exception listed. Kept only for what
a test cannot make the server do at a chosen moment without stopping the session's shared
server: a connection lost mid-transaction (``ServiceUnavailable``), a transient server error
(``TransientError``, which the driver retries), another worker's identical schema statement
winning the race by a millisecond, and a writer holding its transaction open after a named
statement (``pauses``) while a test watches what other writers can do meanwhile. Anything the server can do itself (conflicts,
constraint violations, refused logins, indexes) is tested against the server.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from neo4j import AsyncDriver, AsyncGraphDatabase
from neo4j.exceptions import Neo4jError

from graph.cypher import STATEMENTS

_BY_TEXT = {s.text: s.name for s in STATEMENTS.values()}


def server_error(code: str, message: str = "injected by tests/neo4j_faults.py") -> Neo4jError:
    """The exception the real driver raises for a server status ``code``, code included.

    Only for a fault whose code the store reads (a schema race: ``Neo.ClientError.Schema.*``).
    The driver (5.x) has no public way to give an error a server code: ``Neo4jError(...)`` and its
    subclasses leave it ``Neo.DatabaseError.General.UnknownError`` and ``code`` has no setter, so
    this uses the driver's own hydration, as it does for a server's FAILURE message. A fault known
    by its class alone is built with the public class (``TransientError("...")``)."""
    return Neo4jError._hydrate_neo4j(code=code, message=message)


class Faults:
    """Statement name -> exceptions to raise, one per run of that statement, before it runs for real."""

    def __init__(self, **driver_config: Any) -> None:
        """``driver_config`` adds to the store's driver settings (e.g. ``max_transaction_retry_time``)."""
        self.failures: dict[str, list[Exception]] = {}
        self.raised: list[str] = []
        #: Statement name -> (reached, release): after the statement runs, ``reached`` is set and
        #: the transaction waits, still open, until the test sets ``release``.
        self.pauses: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}
        self._config = driver_config

    def check(self, query: str) -> None:
        name = _BY_TEXT.get(query, "")
        pending = self.failures.get(name)
        if pending:
            self.raised.append(name)
            raise pending.pop(0)

    def connect(self, url: str, **config: Any) -> "_FaultyDriver":
        """For ``Neo4jStore(settings, connect=faults.connect)``."""
        return _FaultyDriver(AsyncGraphDatabase.driver(url, **config, **self._config), self)


class _FaultyTransaction:
    def __init__(self, tx: Any, faults: Faults) -> None:
        self._tx, self._faults = tx, faults

    async def run(self, query: str, parameters: dict[str, Any]) -> Any:
        self._faults.check(query)
        result = await self._tx.run(query, parameters)
        pause = self._faults.pauses.get(_BY_TEXT.get(query, ""))
        if pause is not None:
            reached, release = pause
            reached.set()
            await release.wait()
        return result


class _FaultySession:
    def __init__(self, session: Any, faults: Faults) -> None:
        self._session, self._faults = session, faults

    async def __aenter__(self) -> "_FaultySession":
        await self._session.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._session.__aexit__(*exc)

    async def execute_write(self, work: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        async def faulty(tx: Any, *more: Any) -> Any:
            return await work(_FaultyTransaction(tx, self._faults), *more)
        return await self._session.execute_write(faulty, *args)


class _FaultyDriver:
    def __init__(self, driver: AsyncDriver, faults: Faults) -> None:
        self._driver, self._faults = driver, faults

    async def verify_connectivity(self) -> None:
        await self._driver.verify_connectivity()

    def session(self, **config: Any) -> _FaultySession:
        return _FaultySession(self._driver.session(**config), self._faults)

    async def execute_query(self, query: str, parameters: dict[str, Any], **config: Any) -> Any:
        self._faults.check(query)
        return await self._driver.execute_query(query, parameters, **config)

    async def close(self) -> None:
        await self._driver.close()
