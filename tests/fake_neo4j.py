"""A stand-in for the Neo4j driver that records what the store sends, for tests without a server.

It knows nothing of Cypher: each statement is recognised by its text in graph/cypher.py, its
parameters are checked against the ones it declares, and reads are answered from canned rows
(by default an empty graph). Transactions buffer their statements and keep them only if the
transaction function returns, as a managed transaction commits or rolls back. What it checks
is the store's side of the conversation: which statements, in what order, with what rows, how
many round trips, and what the store makes of the server's errors. Whether the Cypher does what
it should is for the contract suite against a live Neo4j.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from neo4j.exceptions import Neo4jError

from graph.cypher import STATEMENTS, Statement

BY_TEXT = {s.text: s for s in STATEMENTS.values()}
EMPTY_NEIGHBOURHOOD = {"outcomes": [], "identifiers": [], "blocking": [], "records": [], "profiles": []}


def server_error(code: str, message: str = "from the fake server") -> Neo4jError:
    """The exception class the real driver raises for a server status ``code``."""
    return Neo4jError._hydrate_neo4j(code=code, message=message)


def _all_written(rows: str) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    return lambda params: [{"written": len(params[rows])}]


def _default_answers() -> dict[str, Any]:
    return {
        "load_neighbourhood": [EMPTY_NEIGHBOURHOOD],
        "record_merges": _all_written("merges"),
        "attach_identifiers": _all_written("attachments"),
        "record_events": _all_written("events"),
    }


@dataclass
class FakeServer:
    #: Statement name -> rows, or a function of the parameters giving rows.
    answers: dict[str, Any] = field(default_factory=_default_answers)
    #: Statement name -> exceptions to raise, one per run, before answering normally again.
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    #: Raised by verify_connectivity, if set.
    unreachable: Exception | None = None
    #: Committed transactions, each a list of (statement name, parameters).
    committed: list[list[tuple[str, dict[str, Any]]]] = field(default_factory=list)
    rolled_back: int = 0
    #: How each transaction was opened: (access, database), access "READ" or "WRITE".
    opened: list[tuple[str, str | None]] = field(default_factory=list)

    def connect(self, url: str, **config: Any) -> "FakeDriver":
        self.url, self.config = url, config
        return FakeDriver(self)

    def names(self) -> list[list[str]]:
        return [[name for name, _ in tx] for tx in self.committed]

    def run(self, statement: Statement, params: dict[str, Any]) -> list[dict[str, Any]]:
        assert set(params) == set(statement.params), (statement.name, sorted(params))
        pending = self.failures.get(statement.name)
        if pending:
            raise pending.pop(0)
        answer = self.answers.get(statement.name, [])
        return answer(params) if callable(answer) else answer


class FakeResult:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    async def data(self) -> list[dict[str, Any]]:
        return self._rows


class FakeTransaction:
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.log: list[tuple[str, dict[str, Any]]] = []

    async def run(self, text: str, params: dict[str, Any]) -> FakeResult:
        statement = BY_TEXT[text]
        rows = self.server.run(statement, params)
        self.log.append((statement.name, params))
        return FakeResult(rows)


@dataclass
class FakeRecord:
    values: dict[str, Any]

    def data(self) -> dict[str, Any]:
        return self.values


@dataclass
class FakeEagerResult:
    records: list[FakeRecord]


class FakeSession:
    def __init__(self, server: FakeServer, database: str | None) -> None:
        self.server = server
        self.database = database

    async def __aenter__(self) -> "FakeSession":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def _managed(self, access: str, work: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        self.server.opened.append((access, self.database))
        tx = FakeTransaction(self.server)
        try:
            result = await work(tx, *args)
        except BaseException:
            self.server.rolled_back += 1
            raise
        self.server.committed.append(tx.log)
        return result

    async def execute_read(self, work: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await self._managed("READ", work, *args)

    async def execute_write(self, work: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await self._managed("WRITE", work, *args)


class FakeDriver:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    async def verify_connectivity(self) -> None:
        if self.server.unreachable is not None:
            raise self.server.unreachable

    def session(self, **config: Any) -> FakeSession:
        return FakeSession(self.server, config.get("database"))

    async def execute_query(self, query: str, parameters: dict[str, Any], *, routing_: Any, database_: str | None,
                            bookmark_manager_: Any) -> FakeEagerResult:
        async def one_statement(tx: FakeTransaction) -> list[dict[str, Any]]:
            return await (await tx.run(query, parameters)).data()

        session = FakeSession(self.server, database_)
        rows = await session._managed(str(routing_.name), one_statement)
        return FakeEagerResult([FakeRecord(row) for row in rows])

    async def close(self) -> None:
        return None
