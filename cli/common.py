"""What every command module shares: one-line errors, loading a rule file, running on a store, and
the progress bar."""

from __future__ import annotations

import asyncio
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Awaitable, Callable, Iterator, TypeVar

import typer

from graph.factory import store_from_url
from graph.store import GraphStore, StoreError
from identity.rules import Rules, RulesError, load_rules
from service.operations import OperationError

T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def rules_or_fail(path: Path | None) -> Rules:
    """The rule file at ``path`` (the bundled one if None), or a one-line error naming what is wrong."""
    try:
        return load_rules(path)
    except RulesError as exc:
        raise fail(str(exc)) from None


@contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on standard error (events done, events/s, time); yields what advances it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} events/s"), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, rate="-")

        def advance(count: int) -> None:
            bar.advance(task, count)
            speed = bar.tasks[0].speed
            bar.update(task, rate=f"{speed:,.0f}" if speed else "-")

        yield advance


def run_on_store(action: Callable[[GraphStore], Awaitable[T]], url: str | None = None) -> T:
    """Run ``action(store)`` on the store ``url`` names (default: IDGRAPH_STORE); an operation
    refused or a store that cannot be used is a one-line error and exit code 2, not a traceback."""
    async def run() -> T:
        async with store_from_url(url if url is not None else os.environ.get("IDGRAPH_STORE")) as store:
            return await action(store)
    try:
        return asyncio.run(run())
    except (OperationError, StoreError) as exc:
        raise fail(str(exc)) from None
