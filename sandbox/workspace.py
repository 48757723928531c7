"""A sandbox's workspace: ``DATA_DIR/sandboxes/NAME/`` holding its stores, tokens and manifest.

Nothing here writes to the live store: a snapshot reads it (SQLite's online backup API, which
stays consistent while a worker writes; Neo4j's accepted touchpoints, replayed in order).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import orjson

from api.auth import issue
from graph.factory import store_from_url
from graph.sqlite import SQLiteStore
from graph.store import SubscriptionRegistry
from identity.rules import Rules
from identity.topics import sandbox_namespace
from service.models import live_rules

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


class SandboxError(ValueError):
    """A sandbox request that cannot be carried out, with the reason."""


@dataclass(frozen=True, slots=True)
class Sandbox:
    root: Path
    name: str

    @classmethod
    def at(cls, root: Path, name: str) -> "Sandbox":
        if not _NAME.match(name):
            raise SandboxError(f"bad sandbox name {name!r}: use 1-48 lowercase letters, digits, '-' or '_', "
                               "starting with a letter or digit (it names topics and a consumer group)")
        return cls(root.resolve(), name)

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def exists(self) -> bool:
        return (self.path / "manifest.json").is_file()

    @property
    def store_url(self) -> str:
        """The baseline: the live snapshot plus loaded data, resolved under the live rules."""
        return f"sqlite:///{self.path / 'baseline.db'}"

    @property
    def candidate_file(self) -> Path:
        """The candidate: the baseline's history replayed under the rules being tried."""
        return self.path / "candidate.db"

    @property
    def candidate_url(self) -> str:
        return f"sqlite:///{self.candidate_file}"

    def discard_candidate(self) -> None:
        """Remove the last replay's store, so the next replay starts from nothing."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.candidate_file}{suffix}").unlink(missing_ok=True)

    @property
    def topic_namespace(self) -> str:
        return sandbox_namespace(self.name)

    def worker_env(self, store_url: str) -> dict[str, str]:
        """What makes ``idgraph worker`` this sandbox's: its topics, consumer group (the
        namespace prefixes the app id), store and local files; no metrics port beside live's.
        Its rules are its store's live model (``idgraph rules``, or ``sandbox worker --rules``)."""
        return {"IDGRAPH_TOPIC_NAMESPACE": self.topic_namespace, "IDGRAPH_STORE": store_url,
                "IDGRAPH_DATA_DIR": str(self.path / "worker"), "IDGRAPH_METRICS_PORT": "0"}

    @property
    def tokens(self) -> Path:
        """An API tokens file (IDGRAPH_API_TOKENS_FILE) for this sandbox's API only."""
        return self.path / "tokens.json"

    @property
    def labels(self) -> Path:
        """``{"event_id", "label"}`` lines from loaded data's label column."""
        return self.path / "labels.jsonl"

    @property
    def rejects(self) -> Path:
        return self.path / "rejects.jsonl"

    def manifest(self) -> dict[str, Any]:
        if not self.exists:
            raise SandboxError(f"no sandbox named {self.name!r} (under {self.root})")
        document: dict[str, Any] = orjson.loads((self.path / "manifest.json").read_bytes())
        return document


def sandboxes(root: Path) -> list[Sandbox]:
    if not root.is_dir():
        return []
    return [Sandbox(root.resolve(), p.name) for p in sorted(root.iterdir()) if (p / "manifest.json").is_file()]


async def create(root: Path, name: str, live_url: str | None, rules: Rules, *, empty: bool = False,
                 copy_history: Callable[[str, str, Rules], Any] | None = None) -> tuple[Sandbox, str]:
    """Make the sandbox and return it with a fresh admin token for its API (shown once, kept hashed).

    ``copy_history(live_url, sandbox_url, rules)`` snapshots a live store that is not a SQLite
    file (Neo4j) by replaying its accepted touchpoints. A failure leaves no sandbox behind."""
    sandbox = Sandbox.at(root, name)
    if sandbox.path.exists():
        raise SandboxError(f"sandbox {name!r} already exists at {sandbox.path}: drop it first or choose another name")
    live = store_from_url(live_url)
    if not empty and isinstance(live, SQLiteStore) and not Path(live.path).is_file():
        raise SandboxError(f"the live store {live.path} does not exist: nothing to snapshot (use --empty)")
    sandbox.path.mkdir(parents=True)
    try:
        if empty:
            async with store_from_url(sandbox.store_url):
                pass  # the schema, nothing in it
        elif isinstance(live, SQLiteStore):
            backup_sqlite(Path(live.path), sandbox.path / "baseline.db")
        elif copy_history is not None:
            await copy_history(live_url or "", sandbox.store_url, rules)
        else:
            raise SandboxError(f"cannot snapshot {live_url!r}: no way to copy its history")
        async with store_from_url(sandbox.store_url) as baseline:  # a snapshot holds the live registry
            live_version = (await live_rules(baseline, rules)).model_version
            dropped = await drop_live_webhooks(baseline)
        token, entry = issue(["admin"], f"sandbox:{name}")
        sandbox.tokens.write_bytes(orjson.dumps([entry.model_dump(exclude_none=True)], option=orjson.OPT_INDENT_2))
        manifest = {"name": name, "created_at": datetime.now(timezone.utc).isoformat(),
                    "source": "empty" if empty else "live snapshot", "live_store": live_url,
                    "live_rules_version": live_version, "webhooks_dropped": dropped, "topic_namespace": sandbox.topic_namespace}
        (sandbox.path / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    except BaseException:
        shutil.rmtree(sandbox.path, ignore_errors=True)
        raise
    return sandbox, token


async def drop_live_webhooks(store: SubscriptionRegistry) -> list[str]:
    """Remove the snapshot's webhook subscriptions: their URLs are live endpoints, and a sandbox
    worker would POST the sandbox's deltas (and the copied outbox) to them. Kafka subscriptions
    stay; a sandbox worker delivers them to its own namespaced topics. A scenario team registers
    its sandbox webhook in the sandbox (``idgraph subscribe`` with the sandbox's IDGRAPH_STORE)."""
    dropped = []
    for name, document in (await store.subscription_documents()).items():
        if document.get("sink", {}).get("type") == "webhook":
            await store.delete_subscription(name)
            dropped.append(name)
    return sorted(dropped)


def backup_sqlite(live: Path, target: Path) -> None:
    """Copy a live SQLite store with the online backup API, opened read-only: consistent even
    while a worker writes, and no write to the live file."""
    source = sqlite3.connect(f"file:{live}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()


def drop(root: Path, name: str) -> Sandbox:
    """Delete the sandbox's files: its stores, tokens, labels and manifest. Its topics are the
    broker's (streams.admin.delete_topics_with_prefix over :attr:`Sandbox.topic_namespace`)."""
    sandbox = Sandbox.at(root, name)
    sandbox.manifest()  # refuses an unknown name
    shutil.rmtree(sandbox.path)
    return sandbox
