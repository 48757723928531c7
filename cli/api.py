"""Command-line wiring for the API: ``idgraph api`` (serve), ``idgraph api-token`` (issue a
token) and ``idgraph review ...`` (the review queue for operators without a browser).

cli/main.py mounts these (see docs/api.md, "Wiring")."""

from __future__ import annotations

import os
from typing import Optional

import orjson
import typer

from api.auth import AuthConfigError, TokenRegistry, issue
from api.limits import LimitConfigError, max_body_bytes_from_env
from cli.common import run_on_store
from identity.rules import load_rules
from service.operations import Operations

review_app = typer.Typer(help="The review queue: list, approve, reject.", no_args_is_help=True)
ENV_API_PORT = "IDGRAPH_API_PORT"
ENV_FORWARDED_ALLOW_IPS = "IDGRAPH_API_FORWARDED_ALLOW_IPS"


def _store_url() -> Optional[str]:
    return os.environ.get("IDGRAPH_STORE")


def api_command(host: str = typer.Option("127.0.0.1", help="Address to listen on"),
                port: int = typer.Option(8080, envvar=ENV_API_PORT, help="Port to listen on"),
                forwarded_allow_ips: Optional[str] = typer.Option(
                    None, envvar=ENV_FORWARDED_ALLOW_IPS,
                    help="Proxies whose X-Forwarded-Proto and -For are believed (IPs or CIDRs, comma-separated; "
                         "* for any), e.g. the TLS-terminating proxy in front, so session cookies are Secure; "
                         "unset believes none")) -> None:
    """Serve the profile API (tokens from IDGRAPH_API_TOKENS_FILE or IDGRAPH_API_TOKENS; body limit
    from IDGRAPH_API_MAX_BODY_BYTES; trusted proxies from IDGRAPH_API_FORWARDED_ALLOW_IPS)."""
    import uvicorn

    from api import create_app
    from cli.sandbox import sandbox_root
    from sandbox.diff import SandboxDiffs

    try:
        tokens = TokenRegistry.from_env()
        max_body_bytes = max_body_bytes_from_env()
    except (AuthConfigError, LimitConfigError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    if not len(tokens):
        typer.secho("warning: no API tokens configured; every request but health and metrics will be refused",
                    err=True, fg=typer.colors.YELLOW)
    # The pages mark the session cookie Secure when the request's scheme is https. Behind a proxy
    # that ends TLS, only the proxy knows it was: its X-Forwarded-Proto is taken from the proxies
    # named here and no one else (uvicorn otherwise believes 127.0.0.1 by default, named or not).
    app = create_app(store_url=_store_url(), tokens=tokens, max_body_bytes=max_body_bytes,
                     sandboxes=SandboxDiffs(sandbox_root()))
    uvicorn.run(app,
                host=host, port=port, log_level="warning",
                proxy_headers=bool(forwarded_allow_ips), forwarded_allow_ips=forwarded_allow_ips or "")


def token_command(scope: list[str] = typer.Option(..., "--scope", help="customer, operator, admin or scenario:<name>"),
                  subject: str = typer.Option(..., help="Who holds it (recorded with every change they make)"),
                  profile_id: Optional[str] = typer.Option(None, help="The profile a customer token is bound to")) -> None:
    """Issue a token: prints it once, and the entry (hash only) to add to the tokens file."""
    token, entry = issue(scope, subject, profile_id)
    typer.echo(f"token: {token}")
    typer.echo("add to IDGRAPH_API_TOKENS_FILE:")
    typer.echo(f"- {orjson.dumps(entry.model_dump(exclude_none=True)).decode()}")


@review_app.command("list")
def review_list(status: str = typer.Option("open", help="open, approved or rejected")) -> None:
    """Reviews waiting for (or given) a verdict."""
    reviews = run_on_store(lambda store: store.reviews(status))
    if not reviews:
        typer.echo(f"no {status} reviews")
    for r in reviews:
        typer.echo(f"{r['id']:>6}  {r['confidence']:.3f}  {' + '.join(r['profile_ids'])}  {r['reason']}")


def _verdict(review_id: int, approve: bool, actor: str, reason: str) -> None:
    result = run_on_store(lambda store: Operations(store, load_rules()).decide_review(review_id, approve, actor=actor, reason=reason))
    typer.echo(f"review {review_id} {'approved' if approve else 'rejected'} (operation {result.record['operation_id']})")


@review_app.command("approve")
def review_approve(review_id: int, reason: str = typer.Option(..., help="Why"),
                   actor: str = typer.Option(..., envvar="USER", help="Who decides")) -> None:
    """Approve: the profiles are merged into the oldest."""
    _verdict(review_id, True, actor, reason)


@review_app.command("reject")
def review_reject(review_id: int, reason: str = typer.Option(..., help="Why"),
                  actor: str = typer.Option(..., envvar="USER", help="Who decides")) -> None:
    """Reject: the profiles stay apart and are not proposed together again."""
    _verdict(review_id, False, actor, reason)


@review_app.command("merge")
def review_merge(profile_ids: list[str], reason: str = typer.Option(...),
                 actor: str = typer.Option(..., envvar="USER")) -> None:
    """Merge profiles by hand."""
    result = run_on_store(lambda store: Operations(store, load_rules()).merge(profile_ids, actor=actor, reason=reason))
    typer.echo(f"merged into {result.record['survivor']} (operation {result.record['operation_id']})")


@review_app.command("split")
def review_split(profile_id: str, separate: str, reason: str = typer.Option(...),
                 actor: str = typer.Option(..., envvar="USER")) -> None:
    """Split a wrongly merged profile off again."""
    result = run_on_store(lambda store: Operations(store, load_rules()).split(profile_id, separate, actor=actor, reason=reason))
    typer.echo(f"split into {', '.join(result.record['profiles'])} (operation {result.record['operation_id']})")
