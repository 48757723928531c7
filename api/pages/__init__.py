"""Pages for customers and operators, served by the profile API process over the same endpoint
functions, tokens and scopes as the JSON API (docs/api.md, "Pages")."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.pages import console, customer, sandboxes
from api.pages.counters import Counters

__all__ = ["install"]


def install(app: FastAPI, worker_metrics_url: str | None = None) -> None:
    """Mount the pages and their local assets (no CDN: everything is served from here)."""
    app.state.idgraph_counters = Counters(worker_metrics_url)
    app.include_router(customer.router)
    app.include_router(console.router)
    app.include_router(sandboxes.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
