"""``idgraph sandbox``: try a rule change on a copy of the live graph before it goes live."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Coroutine, Optional, TypeVar

import orjson
import typer

from cli.common import fail, progress, rules_or_fail, run_on_store
from devstack.simulate import COST_MARK, sample_line, simulate_on_stack
from graph.store import StoreError
from identity.decision_diff import DecisionDiff
from identity.explain import render_decision
from identity.rules import Rules
from service.models import make_live
from sandbox.diff import both_decisions, sandbox_diff
from sandbox.load import Format, load, parse_mapping, read_rejects
from sandbox.replay import accepted_count, copy_history, replay
from sandbox.workspace import Sandbox, SandboxError, create, drop, sandboxes
from streams.admin import delete_topics_with_prefix
from streams.batch import BatchReport, read_lines
from streams.settings import Settings, SettingsError

T = TypeVar("T")
sandbox_app = typer.Typer(help="Isolated copies of the live graph: load data, replay candidate rules, diff.",
                          no_args_is_help=True)

StoreOption = typer.Option(None, "--store", envvar="IDGRAPH_STORE", help="The live store URL (only read)")
LiveRulesOption = typer.Option(None, "--live-rules", envvar="IDGRAPH_RULES",
                               help="The live rule file (YAML); the bundled default if unset")
NameArgument = typer.Argument(..., help="The sandbox's name")
SHOWN_REJECTS = 20


def sandbox_root() -> Path:
    """Where sandboxes live: DATA_DIR/sandboxes (the worker's data directory, IDGRAPH_DATA_DIR)."""
    try:
        return Settings.from_env().data_dir / "sandboxes"
    except SettingsError as exc:
        raise fail(str(exc)) from None


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except (SandboxError, StoreError) as exc:
        raise fail(str(exc)) from None


def _sandbox(name: str) -> Sandbox:
    try:
        sandbox = Sandbox.at(sandbox_root(), name)
        sandbox.manifest()
    except SandboxError as exc:
        raise fail(str(exc)) from None
    return sandbox


@sandbox_app.command("create")
def create_command(name: str = NameArgument, empty: bool = typer.Option(False, "--empty", help="Start with no data"),
                   store: Optional[str] = StoreOption, rules: Optional[Path] = LiveRulesOption) -> None:
    """Make a sandbox: a snapshot of the live store (or empty), its own topics and API token."""
    sandbox, token = _run(create(sandbox_root(), name, store, rules_or_fail(rules), empty=empty, copy_history=copy_history))
    typer.echo(f"sandbox {name} at {sandbox.path}")
    typer.echo(f"store: {sandbox.store_url}")
    typer.echo(f"topics: {sandbox.topic_namespace}* (its worker: idgraph sandbox worker {name})")
    typer.echo(f"API: IDGRAPH_API_TOKENS_FILE={sandbox.tokens}, admin token (shown once): {token}")


@sandbox_app.command("list")
def list_command() -> None:
    """The sandboxes, with where each came from."""
    found = sandboxes(sandbox_root())
    if not found:
        typer.echo("no sandboxes")
    for sandbox in found:
        m = sandbox.manifest()
        typer.echo(f"{sandbox.name:<24} {m['created_at']}  {m['source']}  live rules {m['live_rules_version']}")


@sandbox_app.command("load")
def load_command(
    name: str = NameArgument,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV (with a header) or JSON lines"),
    fmt: Optional[str] = typer.Option(None, "--format", help="csv or jsonl (default: from the file's suffix)"),
    maps: list[str] = typer.Option([], "--map", help="event_field=column, e.g. traits.name=full_name (repeatable)"),
    label: Optional[str] = typer.Option(None, "--label", help="Column with the true entity id (for precision/recall)"),
    scenario: str = typer.Option("sandbox.load", help="Scenario of rows that name none"),
    rules: Optional[Path] = LiveRulesOption,
) -> None:
    """Resolve your own rows into the sandbox under the live rules; unreadable rows are reported, never fatal."""
    sandbox = _sandbox(name)
    kind = fmt or ("csv" if file.suffix.lower() == ".csv" else "jsonl")
    if kind not in ("csv", "jsonl"):
        raise fail(f"unknown --format {kind!r}: csv or jsonl")
    try:
        mapping = parse_mapping(maps)
    except SandboxError as exc:
        raise fail(str(exc)) from None
    file_format: Format = "csv" if kind == "csv" else "jsonl"
    total = max(sum(1 for _ in read_lines(file)) - (kind == "csv"), 0)
    with progress("loading", total) as advance:
        report = _run(load(sandbox, file, rules_or_fail(rules), fmt=file_format, mapping=mapping, label_column=label,
                           scenario=scenario, progress=advance))
    _summary(report)
    for number, reason in read_rejects(sandbox)[:SHOWN_REJECTS]:
        typer.secho(f"line {number}: {reason}", err=True, fg=typer.colors.YELLOW)
    if report.rejected > SHOWN_REJECTS:
        typer.secho(f"... all {report.rejected} in {sandbox.rejects}", err=True, fg=typer.colors.YELLOW)


def _summary(report: BatchReport) -> None:
    actions = ", ".join(f"{k} {v}" for k, v in sorted(report.actions.items()))
    typer.echo(f"{report.events} events: {actions or 'none applied'}; {report.duplicates} duplicates; "
               f"{report.rejected} refused")


@sandbox_app.command("replay")
def replay_command(name: str = NameArgument,
                   rules: Path = typer.Option(..., "--rules", exists=True, dir_okay=False, help="The candidate rules"),
                   batch_size: int = typer.Option(200, min=1, help="Events per store transaction")) -> None:
    """Replay every event the sandbox accepted, in order, through candidate rules into a fresh store."""
    sandbox = _sandbox(name)
    candidate = rules_or_fail(rules)
    total = _run(accepted_count(sandbox.store_url))
    sandbox.discard_candidate()
    try:
        with progress("replaying", total) as advance:
            report = _run(replay(sandbox.store_url, sandbox.candidate_url, candidate,
                                 rejects=sandbox.path / "replay.rejects.jsonl", batch_size=batch_size, progress=advance))
    except BaseException:
        sandbox.discard_candidate()  # a half replay would diff as if the candidate dropped events
        raise
    typer.echo(f"replayed under {candidate.model_version}")
    _summary(report)


@sandbox_app.command("diff")
def diff_command(name: str = NameArgument, as_json: bool = typer.Option(False, "--json", help="One JSON document"),
                 shown: int = typer.Option(20, "--show", min=0, help="Changed decisions to list")) -> None:
    """What the candidate would change: merges, splits, moved events, counts, and accuracy where labelled."""
    diff = _run(sandbox_diff(_sandbox(name)))
    if as_json:
        typer.echo(orjson.dumps(diff.as_dict()).decode())
        return
    typer.echo(render_diff(diff, shown))
    if diff.changed:
        typer.echo(f"both versions' evidence: idgraph sandbox explain {name} EVENT_ID")


def render_diff(diff: DecisionDiff, shown: int) -> str:
    lines = [f"{diff.events} events compared",
             f"profiles: {len(diff.merges)} would merge, {len(diff.splits)} would split, {diff.stays} stay",
             f"events that would move: {len(diff.moved)}; decisions that change: {len(diff.changed)}"]
    for title, key in (("actions", "actions"), ("rules", "rules"), ("field levels", "field_levels")):
        before, after = diff.baseline.as_dict()[key], diff.candidate.as_dict()[key]
        lines.append(f"{title} (baseline -> candidate):")
        lines += [f"  {k:<28} {before.get(k, 0):>8} -> {after.get(k, 0):<8}" for k in sorted(before.keys() | after.keys())]
    for version, scores in diff.accuracy.items():
        lines.append(f"{version}: precision {scores['precision']:.4f} recall {scores['recall']:.4f} f1 {scores['f1']:.4f}")
    if diff.changed[:shown]:
        lines.append("changed decisions:")
        lines += [f"  {event_id}" for event_id in diff.changed[:shown]]
    return "\n".join(lines)


@sandbox_app.command("explain")
def explain_command(name: str = NameArgument, event_id: str = typer.Argument(..., help="The event to explain"),
                    as_json: bool = typer.Option(False, "--json", help="Both raw decision records")) -> None:
    """One event's decision in the baseline and under the candidate, evidence side by side."""
    before, after = _run(both_decisions(_sandbox(name), event_id))
    if before is None and after is None:
        raise fail(f"no decision recorded for event {event_id!r} in sandbox {name!r}")
    if as_json:
        typer.echo(orjson.dumps({"baseline": before, "candidate": after}, option=orjson.OPT_INDENT_2).decode())
        return
    typer.echo(_side_by_side(_text(before), _text(after)))


def _text(record: Any) -> list[str]:
    return ["(no decision)"] if record is None else render_decision(record).splitlines()


def _side_by_side(left: list[str], right: list[str]) -> str:
    width = max(len(line) for line in left + ["baseline"])
    rows = [f"{'baseline':<{width}}  | candidate"]
    rows += [f"{a:<{width}}  | {b}" for a, b in zip(left + [""] * (len(right) - len(left)),
                                                  right + [""] * (len(left) - len(right)))]
    return "\n".join(rows)


@sandbox_app.command("worker")
def worker_command(name: str = NameArgument,
                   candidate: bool = typer.Option(False, "--candidate",
                                                  help="Run on the last replay's store (default: the baseline)"),
                   rules: Optional[Path] = typer.Option(None, "--rules", exists=True, dir_okay=False,
                                                        help="Rules to resolve under (default: the live ones)"),
                   loglevel: str = typer.Option("warning", help="Faust/worker log level")) -> None:
    """Run a worker of the sandbox's own on IDGRAPH_BROKER: its topics (sandbox.NAME.*), consumer
    group and store. Scenarios subscribe to it as to live by setting the same IDGRAPH_TOPIC_NAMESPACE."""
    sandbox = _sandbox(name)
    if candidate and not sandbox.candidate_file.is_file():
        raise fail(f"sandbox {name} has no candidate store yet: run `idgraph sandbox replay {name} --rules FILE`")
    url = sandbox.candidate_url if candidate else sandbox.store_url
    if rules is not None:
        tried = rules_or_fail(rules)
        # Workers resolve under their store's live model: the sandbox's own registry takes the rules.
        run_on_store(lambda store: make_live(store, tried, by="sandbox", reason=f"idgraph sandbox worker {name}"), url)
        typer.echo(f"sandbox {name}: {tried.model_version} is live in its store")
    env = sandbox.worker_env(url)
    typer.echo(f"sandbox {name}: topics {sandbox.topic_namespace}*, store {url}")
    # The live worker's subscription file names live webhooks: a sandbox takes those registered in its own store.
    inherited = {k: v for k, v in os.environ.items() if k != "IDGRAPH_SUBSCRIPTIONS"}
    os.execve(sys.executable, [sys.executable, "-m", "cli.main", "worker", "--loglevel", loglevel], {**inherited, **env})


@sandbox_app.command("simulate")
def simulate_command(name: str = NameArgument,
                     events: int = typer.Option(100_000, min=1, help="Synthetic touchpoints to send"),
                     rate: float = typer.Option(500.0, min=1, help="Events per second offered"),
                     rules: Optional[Path] = typer.Option(None, "--rules", exists=True, dir_okay=False,
                                                          help="Rules the sandbox worker runs (default: the live ones)"),
                     every: float = typer.Option(10.0, min=1, help="Seconds between progress lines")) -> None:
    """Drive synthetic traffic through a worker of the sandbox's own (its topics, a fresh store in
    the sandbox) and report throughput, propagation p50/p99, memory and store size as it grows.
    On IDGRAPH_BROKER if set (sandbox topics only), else on an Apache Kafka started for the run."""
    sandbox = _sandbox(name)
    try:
        broker_url = Settings.from_env().broker
    except SettingsError as exc:
        raise fail(str(exc)) from None
    workdir = sandbox.path / "simulation"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    env = {"IDGRAPH_RULES": str(rules.resolve())} if rules is not None else {}
    result = _run(simulate_on_stack(workdir, sandbox.topic_namespace, events=events, rate=rate, broker_url=broker_url,
                                    worker_env=env, every_s=every, on_sample=lambda s: typer.echo(sample_line(s))))
    typer.echo(f"{result.events:,} events at {result.rate:.0f}/s offered: {result.events_per_s:,.0f} events/s "
               f"resolved in {result.seconds:.0f} s; propagation p50 {result.p50_ms} ms, p99 {result.p99_ms} ms; "
               f"worker RSS at most {result.rss_mb_max:.0f} MB; store {result.store_mb or 0:.0f} MB; "
               f"CPU per event {result.cost_ms_at_mark} ms from {COST_MARK:,} to {2 * COST_MARK:,} events, "
               f"{result.cost_ms_last_tenth} ms over the last tenth, {result.cost_ms_at_end} ms over the run")


@sandbox_app.command("drop")
def drop_command(name: str = NameArgument) -> None:
    """Delete the sandbox: its topics on IDGRAPH_BROKER, its stores and tokens."""
    sandbox = _sandbox(name)
    try:
        broker = Settings.from_env().broker
    except SettingsError as exc:
        raise fail(str(exc)) from None
    if broker is None:
        typer.secho(f"IDGRAPH_BROKER is not set: topics {sandbox.topic_namespace}* were not looked for", err=True,
                    fg=typer.colors.YELLOW)
    else:
        deleted = _run(delete_topics_with_prefix(broker.removeprefix("kafka://"), sandbox.topic_namespace))
        typer.echo(f"deleted {len(deleted)} topics named {sandbox.topic_namespace}*")
    try:
        drop(sandbox_root(), name)
    except SandboxError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"dropped sandbox {name} ({sandbox.path})")
