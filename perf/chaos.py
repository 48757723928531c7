"""Chaos: touchpoints at a steady rate while the worker is SIGKILLed again and again.

A fresh stack (Apache Kafka with a data directory, ``--workers`` workers in one consumer group
sharing a new store) receives ``--events`` synthetic touchpoints, keyed as the product's touchpoint
producers key them (``partition_key``), at a steady rate. Meanwhile a chaos task SIGKILLs a
worker (one drawn at random) ``--kills`` times at random (seeded) moments spread over the whole
processing of the stream (see :class:`Chaos`), each time once the previous replacement is up,
and starts a new one on the same store.

The store is a SQLite file (``--store sqlite``) or Neo4j (``--store neo4j``). Several workers
share either: on SQLite each batch is one ``BEGIN IMMEDIATE`` transaction, so their writes take
turns; on Neo4j they race on the same customers, and a third failure is counted. Neo4j is the server ``NEO4J_URI`` names
(``NEO4J_USER``, ``NEO4J_PASSWORD``, ``NEO4J_DATABASE``; THAT DATABASE IS EMPTIED first), else
a Neo4j Community of its own from the jars `make jars` built.
A subscriber reads ``identity.deltas`` from the start throughout, without a consumer group.

When every event is resolved in the store and every stored delta has been seen on the topic
(or a timeout passed), it counts:

* ``lost``: events sent with neither a decision nor a refusal in the store;
* ``applied_twice``: events applied more than once — more than one delta for one event (in
  the outbox or, by distinct delta_id, on the topic), two different deltas claiming one
  profile version, or an event both decided and refused;
* ``deltas_missing``: deltas in the outbox never seen on the topic, or left unpublished;
* ``identifiers_shared``: identifiers held by more than one live (not merged) profile;
* ``out_of_order_per_profile``: profiles whose versions, in the order each delta_id was first
  seen on the topic, are not non-decreasing (a repeated delta_id, which at-least-once permits,
  is not out of order: repeats are counted as ``redelivered_deltas``).

Once half the events are resolved, Kafka is stopped and started again on its data (the
``--broker embedded`` run skips that: Tansu keeps topics in memory only, so a restart would lose
every topic by design, and the JSON says so). A readable summary comes first, then ONE JSON
object on the last line. Exits non-zero if any count is non-zero.

    python -m perf.chaos                                  # 10,000 events, 15 kills, one broker restart
    python -m perf.chaos --events 2000 --kills 3 --seed 1 --broker embedded
    python -m perf.chaos --store neo4j --workers 2 --events 2000 --kills 3
    python -m perf.chaos --workers 2 --events 2000 --kills 3 --broker embedded   # two workers, one SQLite file
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from devstack.jvm import ApacheKafka, Neo4jServer
from devstack.probe import TopicWatcher
from devstack.stack import LocalStack, WorkerProcess, wait_until
from devstack.workload import synthetic_events
from identity.events import parse_event
from identity.features import partition_key
from identity.rules import load_rules
from identity.topics import LIVE
from graph import cypher
from graph.neo4j_settings import Neo4jSettings
from perf.neo4j_throughput import SHARED_IDENTIFIERS, settings_from_env
from perf.propagation import KAFKA_WORKER_ENV, query_store

SUBSCRIPTION = {"name": "chaos", "fields": ["traits.*", "identifiers.*"]}
BROKER_RESTART_SKIPPED = "skipped: the embedded broker keeps topics in memory only"
#: Longest wait, after the last event was sent and the last kill, for the store and the topic to catch up.
COMPLETE_TIMEOUT_S = 300.0
#: How long a restarted worker may take to say "worker ready".
READY_TIMEOUT_S = 90.0


# --- pure counting ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SeenDelta:
    """One record read from identity.deltas, in the order read (per partition, the log order)."""

    delta_id: str
    profile_id: str
    profile_version: int
    event_id: str


@dataclass(frozen=True, slots=True)
class StoredDelta:
    """One row of the store's outbox."""

    delta_id: str
    event_id: str
    profile_id: str
    profile_version: int
    published: bool


@dataclass(slots=True)
class Counts:
    lost: list[str] = field(default_factory=list)
    applied_twice: list[str] = field(default_factory=list)
    deltas_missing: list[str] = field(default_factory=list)
    unpublished: list[str] = field(default_factory=list)
    unknown_deltas: list[str] = field(default_factory=list)
    out_of_order: dict[str, list[int]] = field(default_factory=dict)
    redelivered: int = 0


def lost_events(sent: Iterable[str], decided: Iterable[str], refused: Iterable[str]) -> list[str]:
    """Events sent with neither a decision nor a refusal."""
    resolved = set(decided) | set(refused)
    return sorted(set(sent) - resolved)


def applied_twice(stored: Sequence[StoredDelta], seen: Sequence[SeenDelta],
                  decided: Iterable[str] = (), refused: Iterable[str] = ()) -> list[str]:
    """Events applied more than once.

    An event yields at most one delta (``identity.plan``), whose id is stable in (event, profile,
    version): a re-sent delta keeps its id. So an event with two distinct delta ids — in the
    outbox, or on the topic — was applied twice; so were the events behind two distinct deltas
    claiming one (profile, version); and an event decided twice, refused twice, or both decided
    and refused was resolved twice.
    """
    decided, refused = list(decided), list(refused)
    twice: set[str] = set(decided) & set(refused)
    twice.update(event for event, n in Counter([*decided, *refused]).items() if n > 1)
    by_event: dict[str, set[str]] = defaultdict(set)
    by_version: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    both: list[StoredDelta | SeenDelta] = [*stored, *seen]
    for d in both:
        by_event[d.event_id].add(d.delta_id)
        by_version[(d.profile_id, d.profile_version)][d.delta_id] = d.event_id
    twice.update(event for event, ids in by_event.items() if len(ids) > 1)
    for claims in by_version.values():
        if len(claims) > 1:
            twice.update(claims.values())
    return sorted(twice)


def missing_deltas(stored: Sequence[StoredDelta], seen: Sequence[SeenDelta]) -> tuple[list[str], list[str], list[str]]:
    """(missing, unpublished, unknown) delta ids.

    Missing: in the outbox and never seen on the topic, or left unpublished there (each counted
    once). Unpublished: the outbox still has them to send. Unknown: seen on the topic, not stored.
    """
    seen_ids = {d.delta_id for d in seen}
    stored_ids = {d.delta_id for d in stored}
    unpublished = {d.delta_id for d in stored if not d.published}
    missing = (stored_ids - seen_ids) | unpublished
    return sorted(missing), sorted(unpublished), sorted(seen_ids - stored_ids)


def out_of_order(seen: Sequence[SeenDelta]) -> tuple[dict[str, list[int]], int]:
    """Profiles whose first-seen versions go backwards (profile -> its first-seen versions), and repeats.

    Only the first sighting of a delta_id counts for order; later ones are redeliveries.
    """
    first_seen: set[str] = set()
    versions: dict[str, list[int]] = defaultdict(list)
    redelivered = 0
    for d in seen:
        if d.delta_id in first_seen:
            redelivered += 1
            continue
        first_seen.add(d.delta_id)
        versions[d.profile_id].append(d.profile_version)
    backwards = {p: v for p, v in versions.items() if any(b < a for a, b in zip(v, v[1:]))}
    return backwards, redelivered


def count(sent: Sequence[str], decided: Iterable[str], refused: Iterable[str],
          stored: Sequence[StoredDelta], seen: Sequence[SeenDelta]) -> Counts:
    decided, refused = list(decided), list(refused)
    missing, unpublished, unknown = missing_deltas(stored, seen)
    backwards, redelivered = out_of_order(seen)
    return Counts(lost=lost_events(sent, decided, refused), applied_twice=applied_twice(stored, seen, decided, refused),
                  deltas_missing=missing, unpublished=unpublished, unknown_deltas=unknown,
                  out_of_order=backwards, redelivered=redelivered)


# --- the run ----------------------------------------------------------------------------------

def keyed_events(events: int, seed: int) -> list[tuple[bytes | None, dict[str, Any]]]:
    """Synthetic touchpoints with the record key the product's producers give them."""
    rules = load_rules()
    out = []
    for _, body in synthetic_events(customers=max(1, events // 5), events=events, seed=seed):
        out.append((partition_key(parse_event(body), rules), body))
    return out


class DeltaRecorder:
    """Everything read from identity.deltas, in read order."""

    def __init__(self) -> None:
        self.seen: list[SeenDelta] = []
        self.ids: set[str] = set()

    def __call__(self, topic: str, delta: dict[str, Any], now: float) -> None:
        self.seen.append(SeenDelta(delta["delta_id"], delta["profile_id"], int(delta["profile_version"]),
                                   delta["cause"]["event_id"]))
        self.ids.add(delta["delta_id"])


class SQLiteReadout:
    """What the run needs to read from the workers' SQLite file, opened read-only beside them."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def worker_env(self) -> dict[str, str]:
        return {}  # the worker's own default: graph.db in its directory

    def resolved(self) -> int:
        if not self.path.exists():
            return 0
        return query_store(self.path, "SELECT (SELECT COUNT(*) FROM decisions) + (SELECT COUNT(*) FROM refusals)")[0][0]

    def decided(self) -> list[str]:
        return [e for (e,) in query_store(self.path, "SELECT event_id FROM decisions")]

    def refused(self) -> list[str]:
        return [e for (e,) in query_store(self.path, "SELECT event_id FROM refusals")]

    def stored_deltas(self) -> list[StoredDelta]:
        rows = query_store(self.path, "SELECT delta_id, event_id, profile_id, delta, published FROM outbox ORDER BY seq")
        return [StoredDelta(d, e, p, int(orjson.loads(raw)["profile_version"]), bool(pub))
                for d, e, p, raw, pub in rows]

    def identifiers_shared(self) -> int:
        return query_store(self.path, """
            SELECT COUNT(*) FROM (SELECT i.key FROM identifiers i JOIN profiles p ON p.id = i.profile_id
                                  WHERE p.merged_into IS NULL GROUP BY i.key HAVING COUNT(DISTINCT i.profile_id) > 1)
        """)[0][0]

    def close(self) -> None:
        pass


class Neo4jReadout:
    """The same reads on the Neo4j database every worker shares (emptied when this is made)."""

    name = "neo4j"

    def __init__(self, settings: Neo4jSettings) -> None:
        from neo4j import GraphDatabase

        # An emptied database makes the server warn of every label a read names before the first
        # write creates it: noise between the figures.
        logging.getLogger("neo4j.notifications").setLevel(logging.ERROR)
        self.settings = settings
        self.driver = GraphDatabase.driver(settings.url, auth=(settings.user, settings.password))
        self.query(cypher.DELETE_EVERYTHING.text)

    def query(self, text: str) -> list[Any]:
        """The records of one Cypher query on the shared database."""
        return list(self.driver.execute_query(text, database_=self.settings.database).records)

    def worker_env(self) -> dict[str, str]:
        return {"IDGRAPH_STORE": self.settings.url, "IDGRAPH_NEO4J_USER": self.settings.user,
                "IDGRAPH_NEO4J_PASSWORD": self.settings.password, "IDGRAPH_NEO4J_DATABASE": self.settings.database}

    def resolved(self) -> int:
        return int(self.query("RETURN COUNT { (:Touchpoint)-[:DECIDED_BY]->(:Decision) } "
                              "+ COUNT { (:Refusal) } AS n")[0]["n"])

    def decided(self) -> list[str]:
        return [r["e"] for r in self.query("MATCH (t:Touchpoint)-[:DECIDED_BY]->(:Decision) RETURN t.event_id AS e")]

    def refused(self) -> list[str]:
        return [r["e"] for r in self.query("MATCH (r:Refusal) RETURN r.event_id AS e")]

    def stored_deltas(self) -> list[StoredDelta]:
        rows = self.query("MATCH (d:Delta) RETURN d.delta_id AS id, d.event_id AS event, d.profile_id AS profile, "
                          "d.delta AS delta, d.published AS published ORDER BY d.seq, d.index")
        return [StoredDelta(r["id"], r["event"], r["profile"], int(orjson.loads(r["delta"])["profile_version"]),
                            bool(r["published"])) for r in rows]

    def identifiers_shared(self) -> int:
        return int(self.query(SHARED_IDENTIFIERS)[0]["shared"])

    def close(self) -> None:
        self.driver.close()


Readout = SQLiteReadout | Neo4jReadout


def _outbox_drained(store: Readout, seen: set[str]) -> bool:
    return all(d.published and d.delta_id in seen for d in store.stored_deltas())


class Chaos:
    """Kills a worker ``kills`` times at seeded random moments, restarting it each time.

    A moment is a point in the stream's processing, not on the clock: a number of events
    resolved in the store, drawn uniformly over the whole run, plus a random fraction of a
    second. So kills land while the workers are busy from the first events to the last, however
    slowly a restarted worker comes back (on a loaded machine, restarts take seconds, and
    kills spread over the clock would all land early in the run). With several workers, the
    one killed is drawn at random too; ``workers`` always holds the live ones.

    A kill and its restart hold ``turn``, which the broker restart holds too: a worker started
    while Kafka is down gives up bootstrapping, which is not the crash this measures.
    """

    def __init__(self, workers: list[WorkerProcess], store: Readout, kills: int, events: int, seed: int,
                 turn: asyncio.Lock) -> None:
        self.workers, self.store, self.kills, self.turn = workers, store, kills, turn
        self.rng = random.Random(seed)
        self.moments = sorted(self.rng.randrange(1, max(2, events)) for _ in range(kills))
        self.done = 0
        self.log: list[str] = []
        self.resolved_at_kills: list[int] = []  # whether each kill landed mid-stream

    @staticmethod
    def _readies(worker: WorkerProcess) -> int:
        return worker.log_path.read_bytes().count(b"worker ready") if worker.log_path.exists() else 0

    async def run(self, started: float) -> None:
        for n, moment in enumerate(self.moments, 1):
            await wait_until(lambda: self.store.resolved() >= moment and _alive(self.workers),
                             COMPLETE_TIMEOUT_S, 0.05, f"{moment} events resolved before kill {n}")
            await asyncio.sleep(self.rng.uniform(0.0, 0.5))
            async with self.turn:
                await self._kill(n, started)

    async def _kill(self, n: int, started: float) -> None:
        # One worker draws nothing, so a seed kills at the same moments as before workers were counted.
        victim = self.rng.randrange(len(self.workers)) if len(self.workers) > 1 else 0
        worker = self.workers[victim]
        _alive(self.workers)  # a worker that died by itself is a finding, not a kill
        readies = self._readies(worker)
        worker.kill()
        self.done = n
        self.resolved_at_kills.append(self.store.resolved())
        self.log.append(f"kill {n} at {time.monotonic() - started:6.1f}s (worker {victim + 1}, pid {worker.pid}, "
                        f"{self.resolved_at_kills[-1]} events resolved)")
        self.workers[victim] = WorkerProcess(worker.broker_url, worker.workdir, worker.subscriptions,
                                             worker.extra_env, store=worker.store).start()
        await wait_until(lambda: self._readies(self.workers[victim]) > readies and _alive(self.workers),
                         READY_TIMEOUT_S, 0.1, f"worker ready after kill {n}")


def _alive(workers: list[WorkerProcess]) -> bool:
    for worker in workers:
        worker.assert_alive()
    return True


async def send(bootstrap: str, events: Sequence[tuple[bytes | None, dict[str, Any]]], rate: float) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    acks = []
    started = time.perf_counter()
    try:
        for i, (key, body) in enumerate(events):
            if (delay := started + i / rate - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            acks.append(await producer.send(LIVE.touchpoints, orjson.dumps(body), key=key))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def restart_broker(kafka: ApacheKafka, store: Readout, moment: int, log: list[str], started: float,
                         turn: asyncio.Lock) -> None:
    """Stop Kafka once ``moment`` events are resolved and start it again on its data: the topics stay."""
    await wait_until(lambda: store.resolved() >= moment, COMPLETE_TIMEOUT_S, 0.05, f"{moment} events before the restart")
    async with turn:  # not while a killed worker's replacement is starting (see Chaos)
        await asyncio.to_thread(kafka.stop)
        down = time.monotonic()
        await asyncio.to_thread(kafka.start)
    log.append(f"broker restart at {down - started:6.1f}s ({moment}+ events resolved), "
               f"down {time.monotonic() - down:.1f}s")


async def run(events: int, kills: int, seed: int, rate: float, workdir: Path, broker: str,
              neo4j: Neo4jSettings | None = None, workers: int = 1) -> dict[str, Any]:
    """One chaos run: on SQLite (``neo4j`` None) or on the Neo4j ``neo4j`` names, which it empties."""
    keyed = keyed_events(events, seed)
    sent_ids = [body["event_id"] for _, body in keyed]
    store: Readout = Neo4jReadout(neo4j) if neo4j else SQLiteReadout(workdir / "graph.db")
    kafka = ApacheKafka(workdir / "kafka").start() if broker == "kafka" else None
    try:
        return await _run(keyed, sent_ids, DeltaRecorder(), kills, seed, rate, workdir, kafka, store, workers)
    finally:
        if kafka is not None:
            kafka.stop()
        store.close()


async def _run(keyed: list[tuple[bytes | None, dict[str, Any]]], sent_ids: list[str], recorder: "DeltaRecorder",
               kills: int, seed: int, rate: float, workdir: Path, kafka: ApacheKafka | None, store: Readout,
               worker_count: int) -> dict[str, Any]:
    events = len(sent_ids)
    restarts: list[str] = []
    worker_env = {**(KAFKA_WORKER_ENV if kafka else {}), **store.worker_env()}
    async with LocalStack(workdir, [SUBSCRIPTION], broker_url=kafka.url if kafka else None,
                          worker_env=worker_env, workers=worker_count) as stack:
        workers = stack.workers  # the chaos replaces the killed ones here, so the stack stops those
        try:
            async with TopicWatcher(stack.bootstrap, [LIVE.deltas], recorder):
                turn = asyncio.Lock()
                chaos = Chaos(workers, store, kills, events, seed, turn)
                started = time.monotonic()
                chaos_task = asyncio.ensure_future(chaos.run(started))
                restart = asyncio.ensure_future(restart_broker(kafka, store, events // 2, restarts, started, turn)) \
                    if kafka else None
                send_seconds = await send(stack.bootstrap, keyed, rate)
                print(f"sent {events} events in {send_seconds:.1f}s; {chaos.done} kills so far", flush=True)
                await chaos_task
                if restart is not None:
                    await restart
                try:
                    await wait_until(lambda: store.resolved() >= len(sent_ids) and _alive(workers),
                                     COMPLETE_TIMEOUT_S, 0.5, "every event resolved")
                    await wait_until(lambda: _outbox_drained(store, recorder.ids), COMPLETE_TIMEOUT_S, 0.5,
                                     "every delta published and seen")
                except TimeoutError as exc:
                    print(f"gave up waiting: {exc}", flush=True)
                await asyncio.sleep(1.0)  # a moment longer, so late repeats are read too
                decided, refused, stored = store.decided(), store.refused(), store.stored_deltas()
                shared = store.identifiers_shared()
                seen = list(recorder.seen)
            seconds = time.monotonic() - started
        finally:
            for worker in workers:
                worker.stop()
    counts = count(sent_ids, decided, refused, stored, seen)
    return {
        "events": events, "kills": chaos.done, "broker": "kafka" if kafka else "embedded",
        "store": store.name, "workers": worker_count,
        "broker_restarts": len(restarts), "broker_restart": restarts[0] if restarts else BROKER_RESTART_SKIPPED,
        "lost": len(counts.lost), "applied_twice": len(counts.applied_twice),
        "deltas_missing": len(counts.deltas_missing), "out_of_order_per_profile": len(counts.out_of_order),
        "identifiers_shared": shared,
        "redelivered_deltas": counts.redelivered, "deltas_unpublished": len(counts.unpublished),
        "deltas_unknown": len(counts.unknown_deltas), "deltas_stored": len(stored),
        "deltas_seen": len(seen), "seconds": round(seconds, 1), "send_seconds": round(send_seconds, 1),
        "events_per_s": round(events / send_seconds, 1), "events_per_s_end_to_end": round(events / seconds, 1),
        "seed": seed,
        "examples": {
            "lost": counts.lost[:10], "applied_twice": counts.applied_twice[:10],
            "deltas_missing": counts.deltas_missing[:10], "deltas_unknown": counts.unknown_deltas[:10],
            "out_of_order": dict(list(counts.out_of_order.items())[:5]),
        },
        "resolved_at_kills": chaos.resolved_at_kills, "kill_log": chaos.log,
    }


FAILURE_KEYS = ("lost", "applied_twice", "deltas_missing", "out_of_order_per_profile", "deltas_unknown",
                "identifiers_shared")


def summary(r: dict[str, Any]) -> str:
    lines = [*r["kill_log"],
             f"{r['events']} events, {r['workers']} worker(s) on {r['store']}, {r['kills']} worker SIGKILLs, broker restarts: {r['broker_restarts']} "
             f"({r['broker_restart']})",
             f"offered {r['events_per_s']} events/s, {r['events_per_s_end_to_end']} events/s end to end, "
             f"{r['seconds']}s in all",
             f"lost {r['lost']}  applied twice {r['applied_twice']}  deltas missing {r['deltas_missing']} "
             f"(unpublished {r['deltas_unpublished']})  profiles out of order {r['out_of_order_per_profile']}  "
             f"unknown deltas {r['deltas_unknown']}  identifiers shared by live profiles {r['identifiers_shared']}  "
             f"redelivered deltas {r['redelivered_deltas']}  "
             f"({r['deltas_stored']} stored, {r['deltas_seen']} read)"]
    bad = [k for k in FAILURE_KEYS if r[k]]
    lines.append(f"FAILED: {', '.join(bad)}; examples: {orjson.dumps(r['examples']).decode()}" if bad else "OK")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s offered")
    parser.add_argument("--broker", choices=("kafka", "embedded"), default="kafka",
                        help="Apache Kafka (make jars), restarted once mid-run on its data; or the embedded "
                             "broker, which keeps topics in memory only and so is not restarted")
    parser.add_argument("--store", choices=("sqlite", "neo4j"), default="sqlite",
                        help="the workers' store: a SQLite file, or Neo4j (NEO4J_URI, else one of "
                             "its own from the jars)")
    parser.add_argument("--workers", type=int, default=1, help="workers in the consumer group, sharing the store")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idgraph-chaos-") as tmp, ExitStack() as servers:
        settings = None
        if args.store == "neo4j" and os.environ.get("NEO4J_URI"):
            settings = settings_from_env(os.environ)
        elif args.store == "neo4j":
            server = servers.enter_context(Neo4jServer(Path(tmp) / "neo4j"))
            settings = Neo4jSettings(server.uri, server.user, server.password)
        result = asyncio.run(run(args.events, args.kills, args.seed, args.rate, Path(tmp), args.broker,
                                 settings, args.workers))
    print(summary(result), flush=True)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.exit(1 if any(result[k] for k in FAILURE_KEYS) or result["kills"] < args.kills else 0)


if __name__ == "__main__":
    main()
