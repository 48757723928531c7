"""``idgraph demo``: the whole product on one machine, end to end, in under a minute.

Starts Apache Kafka in its work directory (the in-memory embedded broker with ``--broker
embedded``, or uses ``IDGRAPH_BROKER``) and a worker on a fresh embedded
store, registers three scenario subscriptions, plays a few hundred synthetic customers
through five scenarios — Chinese and English names, typos, identifiers that force merges,
a few malformed events — and shows deltas arriving per scenario, then propagation latency,
throughput, what resolution decided, and one merge explained.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import typer

from devstack.probe import PropagationProbe, ProbeResult
from devstack.stack import LocalStack
from devstack.up import BrokerKind
from devstack.workload import synthetic_events
from identity.explain import render_decision

SUBSCRIPTIONS: list[dict[str, Any]] = [
    {"name": "sales", "kinds": ["profile.created", "profile.updated", "profile.merged"],
     "fields": ["traits.name", "identifiers.phone", "identifiers.email"]},
    {"name": "service", "fields": ["traits.*", "identifiers.phone"]},
    {"name": "marketing", "kinds": ["profile.created", "profile.merged"], "fields": ["traits.name", "traits.city"],
     "filters": [{"trait": "city", "any_of": ["上海", "北京", "深圳", "London"]}]},
]
TOPICS = [f"scenario.{s['name']}" for s in SUBSCRIPTIONS]


def sample_events_path() -> Path:
    """A handful of hand-written events (Chinese and English names), shipped with the package."""
    return Path(str(resources.files("devstack").joinpath("samples", "touchpoints.jsonl")))


def _malformed(count: int) -> list[dict[str, Any]]:
    return [{"event_id": f"bad-{i}", "scenario": "battery-recycling.site-intake", "type": "recycling_requested",
             "occurred_at": "2026-03-01T09:00:00+08:00", "identifiers": {"phone": "12345"}} for i in range(count)]


class _Progress:
    """Live counters: redrawn in place on a terminal, a line every few seconds in a log."""

    def __init__(self, probe: PropagationProbe, total: int) -> None:
        self.probe, self.total = probe, total
        self.tty = sys.stdout.isatty()
        self._last_line, self._last_at = "", 0.0

    def __call__(self, sent: int) -> None:
        counts = "  ".join(f"{t.removeprefix('scenario.')} {self.probe.delivered_to(t):>5}" for t in TOPICS)
        line = f"  events sent {sent:>5}/{self.total}   deltas delivered: {counts}"
        if line == self._last_line or (not self.tty and time.monotonic() - self._last_at < 2):
            return
        self._last_line, self._last_at = line, time.monotonic()
        typer.echo(f"\r{line}" if self.tty else line, nl=not self.tty)


def _broker_text(broker_url: str | None, broker: BrokerKind) -> str:
    if broker_url:
        return f"broker {broker_url}"
    return "Apache Kafka" if broker == "kafka" else "embedded in-memory broker"


def _store_summary(path: Path) -> tuple[Counter[str], int, str | None]:
    with sqlite3.connect(path) as db:
        actions = Counter(dict(db.execute("SELECT action, COUNT(*) FROM decisions GROUP BY action")))
        reviews = db.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]
        merge = db.execute("SELECT record FROM decisions WHERE action = 'merge' ORDER BY rowid LIMIT 1").fetchone()
    return actions, reviews, merge[0] if merge else None


def _report(result: ProbeResult, store: Path) -> None:
    typer.secho("\nPropagation (event produced -> delta consumed by the scenario)", bold=True)
    for topic in [None, *TOPICS]:
        label = "all scenarios" if topic is None else topic.removeprefix("scenario.")
        n = len(result.latencies(topic))
        typer.echo(f"  {label:<14} {n:>5} deltas   p50 {result.percentile(50, topic):7.1f} ms   "
                   f"p95 {result.percentile(95, topic):7.1f} ms   p99 {result.percentile(99, topic):7.1f} ms")
    typer.echo(f"  producer sent {result.sent} events in {result.send_seconds:.1f} s ({result.events_per_s:.0f} events/s)")
    actions, reviews, merge = _store_summary(store)
    typer.secho("\nResolution", bold=True)
    typer.echo("  " + ", ".join(f"{action} {count}" for action, count in sorted(actions.items()))
               + f"; {reviews} review proposals")
    kinds = Counter(d.delta["kind"] for d in result.deliveries if d.topic == "scenario.sales")
    typer.echo(f"  sales received {dict(kinds)}")
    for topic in TOPICS:
        example = next((d.delta for d in result.deliveries if d.topic == topic), None)
        if example:
            typer.echo(f"  {topic} sees only: {orjson.dumps(example['profile']).decode()}")
    if merge:
        typer.secho("\nOne merge, explained (idgraph explain):", bold=True)
        typer.echo(render_decision(orjson.loads(merge)))


async def run_demo(*, customers: int, events: int, rate: float, broker_url: str | None, workdir: Path | None,
                   broker: BrokerKind = "kafka") -> ProbeResult:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="idgraph-demo-"))
    workload = [e for _, e in synthetic_events(customers, events, seed=2026)] + _malformed(5)
    typer.secho(f"Starting the stack ({_broker_text(broker_url, broker)}) in {workdir} ...", bold=True)
    async with LocalStack(workdir, SUBSCRIPTIONS, broker_url=broker_url, broker=broker) as stack:
        assert stack.worker is not None
        typer.echo(f"  broker {stack.broker_url}, worker pid {stack.worker.pid}, store {stack.worker.store_path}")
        typer.echo(f"  subscriptions: {', '.join(s['name'] for s in SUBSCRIPTIONS)}")
        typer.secho(f"Playing {len(workload)} touchpoints of {customers} customers at {rate:.0f} events/s", bold=True)
        async with PropagationProbe(stack.bootstrap, TOPICS) as probe:
            progress = _Progress(probe, len(workload))
            seconds = await probe.send(workload, rate, on_progress=progress)
            await probe.settle(quiet_s=1.5, on_progress=lambda: progress(len(workload)))
            result = probe.result(seconds)
        if progress.tty:
            typer.echo("")
    _report(result, stack.worker.store_path)
    return result


async def run_flow_demo(*, flows: int, rate: float, assessment_delay_s: float, broker_url: str | None,
                        workdir: Path | None, broker: BrokerKind = "kafka") -> None:
    """The battery-recycling flow across four scenarios, with a per-hop timeline."""
    from devstack.flows.battery_recycling.driver import FLOW_BUDGET_MS, HOPS, flow_env, make_customers, run_flows, summarise

    workdir = workdir or Path(tempfile.mkdtemp(prefix="idgraph-flow-"))
    typer.secho(f"Starting the stack ({_broker_text(broker_url, broker)}) with the battery-recycling scenarios "
                f"in {workdir} ...", bold=True)
    async with LocalStack(workdir, [], broker_url=broker_url, broker=broker,
                          worker_env=flow_env(assessment_delay_s)) as stack:
        typer.echo(f"  scenarios: site-intake (this demo) -> assessment ({assessment_delay_s:.1f} s) -> quoting -> sales")
        customers = make_customers(flows)
        done = await run_flows(stack.bootstrap, customers, rate, timeout_s=60 + flows / rate,
                               on_progress=lambda sent, finished: typer.echo(
                                   f"\r  requests {sent:>4}/{flows}   flows finished {finished:>4}", nl=False))
    typer.echo("")
    first = next((f for f in done if f.sales_notified), None)
    if first is not None:
        typer.secho(f"\nOne flow, hop by hop (customer {first.customer.name}, value tier high):", bold=True)
        start = first.produced
        for label, at in [("intake request produced", first.produced), ("assessment notified", first.assessment_notified),
                          ("battery_assessed emitted", first.assessed_emitted), ("quoting notified", first.quoting_notified),
                          ("quote_issued emitted", first.quote_emitted), ("sales notified", first.sales_notified)]:
            if at is not None:
                typer.echo(f"  {(at - start) * 1000:8.1f} ms  {label}")
        if first.sales_body is not None:
            typer.echo(f"  sales sees only: {orjson.dumps(first.sales_body['profile']['traits']).decode()}")
    result = summarise(done)
    typer.secho("\nAll flows", bold=True)
    typer.echo(f"  {result['completed']}/{result['flows']} completed, {result['within_budget']} within "
               f"{FLOW_BUDGET_MS / 1000:.0f} s; end to end p50 {result['e2e_p50_ms']:.0f} ms, p99 {result['e2e_p99_ms']:.0f} ms")
    typer.echo(f"  scenario processing p50 {result['processing_p50_ms']:.0f} ms; pipeline overhead p99 "
               f"{result['overhead_p99_ms']:.0f} ms; {result['sales_suggestions']} sales suggestions")
    for hop in HOPS:
        typer.echo(f"  {hop:<30} p99 {result[f'hop_p99_ms[{hop}]']:.0f} ms")
