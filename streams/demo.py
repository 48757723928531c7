"""``idgraph demo``: the bundled sample resolved end to end, with each decision explained."""

from __future__ import annotations

import io
import tempfile
from importlib import resources
from pathlib import Path

import typer

from graph.factory import store_from_url
from identity.explain import render_decision
from identity.rules import load_rules
from streams.batch import read_lines, resolve_lines, write_assignments


def sample_events_path() -> Path:
    return Path(str(resources.files("streams").joinpath("samples", "touchpoints.jsonl")))


async def run_batch_demo(store_url: str | None = None) -> None:
    rules = load_rules()
    workdir = Path(tempfile.mkdtemp(prefix="idgraph-demo-"))
    store_url = store_url or f"sqlite:///{workdir / 'demo.db'}"
    rejects = io.BytesIO()
    async with store_from_url(store_url) as store:
        report = await resolve_lines(read_lines(sample_events_path()), store, rules, rejects=rejects)
        typer.secho(f"Resolved {report.events} sample events into {store_url}", bold=True)
        for event_id in dict.fromkeys(report.event_ids):
            typer.echo("")
            typer.echo(render_decision(await store.decision(event_id)))
        assignments = io.StringIO()
        await write_assignments(store, report.event_ids, assignments)
    typer.secho("\nAssignments (event_id,profile_id):", bold=True)
    typer.echo(assignments.getvalue().strip())
    typer.secho(f"\nRefused {report.rejected} event(s):", bold=True)
    typer.echo(rejects.getvalue().decode().strip() or "none")
    typer.echo(f"Duplicates ignored: {report.duplicates}. Actions: {report.actions}. Deltas: {report.deltas}.")
