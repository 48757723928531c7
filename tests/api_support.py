"""A real profile API over a real SQLite file, with one token per kind of caller.

The API runs in FastAPI's TestClient (or behind a real uvicorn server, where how the bytes of a
request arrive matters); events reach the store the way the worker writes them,
through a second connection to the same file (tests/conftest.py's Engine on a SQLiteStore).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import uvicorn
from fastapi.testclient import TestClient

from api import create_app
from api.auth import TokenEntry, TokenRegistry, hash_token
from devstack.broker import free_port, terminate
from graph.sqlite import SQLiteStore
from graph.store import Outcome
from identity.deltas import IdentityDelta
from identity.events import TouchpointEvent
from identity.rules import load_rules
from tests.conftest import Engine

RULES = load_rules()


def resolve(path: Path, *events: TouchpointEvent) -> list[Outcome]:
    """Resolve events into the store file as the worker would (its own connection)."""
    async def run() -> list[Outcome]:
        async with SQLiteStore(path) as store:
            engine = Engine(store, RULES)
            return [await engine.resolve(e) for e in events]
    return asyncio.run(run())


def on_store(path: Path, action: Any) -> Any:
    """Run ``action(store)`` on a second connection to the file."""
    async def run() -> Any:
        async with SQLiteStore(path) as store:
            return await action(store)
    return asyncio.run(run())


def outbox(path: Path) -> list[IdentityDelta]:
    return on_store(path, lambda store: store.unpublished_deltas(limit=10_000))


@dataclass
class Api:
    """A running API and the tokens of its callers, by name."""

    client: TestClient
    path: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, who: str, url: str, **kw: Any) -> Any:
        return self.client.get(url, headers=self.as_(who), **kw)

    def post(self, who: str, url: str, **kw: Any) -> Any:
        return self.client.post(url, headers=self.as_(who), **kw)

    def patch(self, who: str, url: str, **kw: Any) -> Any:
        return self.client.patch(url, headers=self.as_(who), **kw)

    def put(self, who: str, url: str, **kw: Any) -> Any:
        return self.client.put(url, headers=self.as_(who), **kw)

    def delete(self, who: str, url: str, **kw: Any) -> Any:
        return self.client.delete(url, headers=self.as_(who), **kw)


def registry(callers: dict[str, dict[str, Any]]) -> tuple[TokenRegistry, dict[str, str]]:
    """Tokens named like their callers (``"tok-" + name``), configured by hash only."""
    tokens = {name: f"tok-{name}" for name in callers}
    entries = [TokenEntry(sha256=hash_token(tokens[name]), subject=name, **spec) for name, spec in callers.items()]
    return TokenRegistry(entries), tokens


def run_api(path: Path, callers: dict[str, dict[str, Any]], **options: Any) -> Iterator[Api]:
    """The API in-process (FastAPI's TestClient); ``options`` go to ``create_app``."""
    tokens, plain = registry(callers)
    app = create_app(store_url=f"sqlite:///{path}", tokens=tokens, rules=RULES, **options)
    with TestClient(app) as client:
        yield Api(client, path, plain)


def serve_api(path: Path, callers: dict[str, dict[str, Any]], **options: Any) -> Iterator[Api]:
    """The API behind a real uvicorn server on a free local port, for what only a real server
    shows: how a body arrives (TestClient reads a request's whole body before the app sees any)."""
    tokens, plain = registry(callers)
    app = create_app(store_url=f"sqlite:///{path}", tokens=tokens, rules=RULES, **options)
    listening = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.01)
    host, port = listening.getsockname()
    try:
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as client:
            yield Api(client, path, plain)  # type: ignore[arg-type]  # httpx.Client: TestClient's interface
    finally:
        server.should_exit = True
        thread.join(10)
        listening.close()


PROXIED_HTTPS = {"X-Forwarded-Proto": "https"}


@contextmanager
def idgraph_api(tmp_path: Path, token_entry: str, **env: str) -> Iterator[str]:
    """`idgraph api` as a child process on a port of its own; yields its base address."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--port", str(port)],
                            env={**os.environ, "IDGRAPH_STORE": f"sqlite:///{tmp_path / 'g.db'}",
                                 "IDGRAPH_API_TOKENS": token_entry, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/signin")
                break
            except httpx.ConnectError:
                assert proc.poll() is None and time.monotonic() < deadline, f"idgraph api did not start ({proc.poll()})"
                time.sleep(0.1)
        yield base
    finally:
        terminate(proc, 10)


def session_cookie_set_by_signing_in(base: str, token: str) -> str:
    """The Set-Cookie of the session, signing in through the proxy's headers as a browser would
    (the cookies named as the API names them for the scheme it believes)."""
    form = httpx.get(f"{base}/signin", headers=PROXIED_HTTPS)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None, form.text
    ((name, nonce),) = [c.split(";")[0].split("=", 1) for c in form.headers.get_list("set-cookie")]
    assert name.endswith("idgraph_signin"), name
    signed_in = httpx.post(f"{base}/signin", data={"token": token, "csrf": csrf[1]},
                           headers={**PROXIED_HTTPS, "Cookie": f"{name}={nonce}"})
    assert signed_in.status_code == 303, signed_in.text
    (session,) = [c for c in signed_in.headers.get_list("set-cookie") if c.split("=")[0].endswith("idgraph_session")]
    return session
