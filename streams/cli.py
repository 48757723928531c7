"""The ``idgraph`` command line: the single entry point for every command."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Optional

import orjson
import typer

from graph.factory import store_from_url
from graph.store import StoreError
from identity.estimate import estimate
from identity.events import EventRejected, parse_event
from identity.explain import render_decision
from identity.features import prepare
from identity.rules import Rules, RulesError, load_rules
from streams.batch import read_lines, resolve_lines, write_assignments
from streams.settings import Settings, SettingsError

app = typer.Typer(help="idgraph: a real-time customer identity graph.", no_args_is_help=True, add_completion=False)

StoreOption = typer.Option(None, "--store", envvar="IDGRAPH_STORE", help="Store URL, e.g. sqlite:///data/idgraph.db")
RulesOption = typer.Option(None, "--rules", envvar="IDGRAPH_RULES", help="Rule file (YAML); the bundled default if unset")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def _rules(path: Optional[Path]) -> Rules:
    try:
        return load_rules(path)
    except RulesError as exc:
        raise _fail(str(exc)) from None


@app.command()
def resolve(
    input: Path = typer.Option(..., "--input", "-i", exists=True, dir_okay=False, help="Events, one JSON per line"),
    output: Path = typer.Option(..., "--output", "-o", help="CSV of event_id,profile_id"),
    rejects: Optional[Path] = typer.Option(None, help="Where refused lines go (default: OUTPUT.rejects.jsonl)"),
    store: Optional[str] = StoreOption,
    rules: Optional[Path] = RulesOption,
    batch_size: int = typer.Option(200, min=1, help="Events per store transaction"),
) -> None:
    """Resolve a file of events in order and write each event's profile."""
    ruleset = _rules(rules)
    rejects = rejects or output.with_name(output.name + ".rejects.jsonl")

    async def run() -> None:
        async with store_from_url(store) as graph:
            with rejects.open("wb") as bad:
                report = await resolve_lines(read_lines(input), graph, ruleset, batch_size=batch_size, rejects=bad)
            with output.open("w", encoding="utf-8") as out:
                await write_assignments(graph, report.event_ids, out)
        actions = ", ".join(f"{k} {v}" for k, v in sorted(report.actions.items()))
        typer.echo(f"{report.events} events: {actions}; {report.duplicates} duplicates; {report.deltas} deltas")
        if report.rejected:
            typer.secho(f"{report.rejected} events refused, reasons in {rejects}", err=True, fg=typer.colors.YELLOW)

    try:
        asyncio.run(run())
    except StoreError as exc:
        raise _fail(str(exc)) from None


@app.command()
def explain(
    event_id: str = typer.Argument(..., help="The event whose decision to show"),
    store: Optional[str] = StoreOption,
    as_json: bool = typer.Option(False, "--json", help="Print the raw decision record"),
) -> None:
    """Show why an event was resolved the way it was."""

    async def fetch() -> dict | None:
        async with store_from_url(store) as graph:
            return await graph.decision(event_id)

    try:
        record = asyncio.run(fetch())
    except StoreError as exc:
        raise _fail(str(exc)) from None
    if record is None:
        raise _fail(f"no decision recorded for event {event_id!r}")
    typer.echo(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode() if as_json else render_decision(record))


@app.command("estimate")
def estimate_command(
    input: Path = typer.Option(..., "--input", "-i", exists=True, dir_okay=False, help="Sample events, JSON lines"),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the re-estimated rule file"),
    rules: Optional[Path] = RulesOption,
    version: Optional[str] = typer.Option(None, help="Version of the new rule set (default: <old>+em)"),
) -> None:
    """Re-estimate m/u probabilities and the prior from a sample by EM."""
    base = _rules(rules)
    features = []
    for number, line in read_lines(input):
        try:
            features.append(prepare(parse_event(line), base).features)
        except EventRejected as exc:
            typer.secho(f"line {number} skipped: {exc}", err=True, fg=typer.colors.YELLOW)
    try:
        result = estimate(features, base)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    updated = result.rules.with_updates(version=version or f"{base.version}+em")
    output.write_text(updated.to_yaml(), encoding="utf-8")
    typer.echo(
        f"{len(features)} events, {result.pairs} candidate pairs ({result.patterns} patterns), "
        f"{result.iterations} iterations, estimated prior {result.match_share:.4f}; wrote {output}"
    )


@app.command()
def demo(
    customers: int = typer.Option(300, min=1, help="Synthetic customers"),
    events: int = typer.Option(1500, min=1, help="Touchpoints to play"),
    rate: float = typer.Option(300.0, min=1, help="Events per second"),
    workdir: Optional[Path] = typer.Option(None, help="Where the store and logs go (default: a new temp dir)"),
) -> None:
    """Run the embedded stack with three scenarios and a realistic workload; report propagation."""
    from streams.demo import run_demo

    settings = _settings()
    asyncio.run(run_demo(customers=customers, events=events, rate=rate, broker_url=settings.broker, workdir=workdir))


def _settings(**overrides: object) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except SettingsError as exc:
        raise _fail(f"bad configuration: {exc}") from None


@app.command()
def worker(loglevel: str = typer.Option("warning", help="Faust/worker log level")) -> None:
    """Run a stream worker against IDGRAPH_BROKER (see streams/settings.py for every IDGRAPH_* variable)."""
    from streams.app import run_worker

    settings = _settings()
    if settings.broker is None:
        raise _fail("IDGRAPH_BROKER is not set; use 'idgraph up' to start an embedded broker with a worker")
    run_worker(settings, loglevel=loglevel)


def main() -> None:  # pragma: no cover - console script shim
    app(prog_name="idgraph")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
