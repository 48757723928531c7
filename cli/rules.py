"""``idgraph rules ...``: the model registry kept in the store (service/models.py).

register a rule file, list and show what is held, promote one to live, roll back, and read the
promotion log. A refusal is one line on standard error and exit code 2; the live model is unchanged.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Optional

import typer

from cli.common import fail, run_on_store
from graph.store import GraphStore
from identity.rules import RulesError, load_rules
from service.models import promote, register, rollback

rules_app = typer.Typer(help="The model registry: register, list, show, promote, rollback, history.",
                        no_args_is_help=True)

StoreOption = typer.Option(None, "--store", envvar="IDGRAPH_STORE", help="Store URL, e.g. sqlite:///data/idgraph.db")
ByOption = typer.Option(None, "--by", help="Who does it (default: $USER)")
ReasonOption = typer.Option("", "--reason", help="Why, for the promotion log")


def _who(by: Optional[str]) -> str:
    return by or os.environ.get("USER") or getpass.getuser()


@rules_app.command("register")
def register_command(file: Path = typer.Argument(..., help="Rule file (YAML)"), store: Optional[str] = StoreOption,
                     by: Optional[str] = ByOption) -> None:
    """Validate a rule file and keep it in the store under its version; printed on standard output."""
    try:
        rules = load_rules(file)
    except RulesError as exc:
        raise fail(str(exc)) from None
    text = file.read_text(encoding="utf-8")
    created = run_on_store(lambda graph: register(graph, rules, _who(by), text), store)
    typer.echo(rules.model_version)
    if not created:
        typer.secho("already registered; nothing changed", err=True, fg=typer.colors.YELLOW)


@rules_app.command("list")
def list_command(store: Optional[str] = StoreOption) -> None:
    """Registered models, oldest first; the live one is marked *."""
    async def read(graph: GraphStore) -> tuple[list[tuple[str, str, str]], str | None]:
        return [(m.version, m.registered_at, m.registered_by) for m in await graph.models()], await graph.live_model()

    models, live = run_on_store(read, store)
    if not models:
        typer.echo("no models registered")
    for version, at, by in models:
        typer.echo(f"{'*' if version == live else ' '} {version}  {at}  {by}")


@rules_app.command("show")
def show_command(version: str = typer.Argument(..., help="A model version, as decisions name it"),
                 store: Optional[str] = StoreOption) -> None:
    """The rules of a registered model, as YAML."""
    model = run_on_store(lambda graph: graph.model(version), store)
    if model is None:
        raise fail(f"no model {version!r} is registered")
    typer.echo(model.rules_yaml, nl=not model.rules_yaml.endswith("\n"))


@rules_app.command("promote")
def promote_command(version: str = typer.Argument(..., help="The model version to make live"),
                    store: Optional[str] = StoreOption, by: Optional[str] = ByOption,
                    reason: str = ReasonOption) -> None:
    """Make a registered model live: every worker takes it up before its next batch."""
    done = run_on_store(lambda graph: promote(graph, version, by=_who(by), reason=reason), store)
    typer.echo(f"{done.version} is live (was {done.previous or 'none'})")


@rules_app.command("rollback")
def rollback_command(store: Optional[str] = StoreOption, by: Optional[str] = ByOption,
                     reason: str = ReasonOption) -> None:
    """Make the version live before the current one live again, as a promotion does."""
    done = run_on_store(lambda graph: rollback(graph, by=_who(by), reason=reason), store)
    typer.echo(f"{done.version} is live again (was {done.previous or 'none'})")


@rules_app.command("history")
def history_command(store: Optional[str] = StoreOption) -> None:
    """Every change of the live model, oldest first: who, when, what, why."""
    promotions = run_on_store(lambda graph: graph.promotions(), store)
    if not promotions:
        typer.echo("no model was ever promoted")
    for p in promotions:
        typer.echo(f"{p.seq:>4}  {p.at}  {p.action:<8}  {p.previous or '-'} -> {p.version}  by {p.by}"
                   + (f"  ({p.reason})" if p.reason else ""))
