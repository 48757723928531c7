"""The profile API: a FastAPI application over one graph store.

``create_app`` builds it; the store is opened and closed with the application (its lifespan)
unless one is handed in already open. Everything but health and metrics needs a bearer token.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import operator, pages, problems, profiles
from api.access import caller
from api.auth import TokenRegistry
from api.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
from api.models import Health
from api.sandboxes import SandboxDiffs
from api.state import ApiState
from graph.factory import store_from_url
from graph.store import GraphStore
from identity.policy import Policy, load_policy
from identity.rules import Rules, load_rules

API_VERSION = "1.0.0"


class OrjsonResponse(JSONResponse):
    """JSON via orjson, as everywhere else in idgraph."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def create_app(*, store: GraphStore | None = None, store_url: str | None = None, tokens: TokenRegistry,
               rules: Rules | None = None, policy: Policy | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, sandboxes: SandboxDiffs | None = None) -> FastAPI:
    """The API over ``store`` (kept open by the caller) or the store at ``store_url`` (opened here);
    request bodies over ``max_body_bytes`` are refused (api/limits.py); the console shows the
    decision diffs of ``sandboxes`` when given."""

    rules, policy = rules or load_rules(), policy or load_policy()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None:
            yield
            return
        graph = store_from_url(store_url)
        await graph.open()
        app.state.idgraph = ApiState(graph, rules, policy, tokens, sandboxes)
        try:
            yield
        finally:
            await graph.close()

    app = FastAPI(title="idgraph profile API", version=API_VERSION, lifespan=lifespan,
                  default_response_class=OrjsonResponse, openapi_url=None, docs_url=None, redoc_url=None,
                  description="Customer data sovereignty (view, export, rectify, erase, consent, timeline) "
                              "and human review of identity decisions. See docs/api.md.")
    if store is not None:
        app.state.idgraph = ApiState(store, rules, policy, tokens, sandboxes)
    problems.install(app)
    app.include_router(profiles.router)
    app.include_router(operator.router)
    pages.install(app)
    _add_service_routes(app)
    # Added before the counter, so the counter wraps it and counts the 413s it answers.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    _count_requests(app)
    return app


def _add_service_routes(app: FastAPI) -> None:
    @app.get("/v1/health", response_model=Health, tags=["service"])
    async def health(request: Request) -> Health:
        """Liveness; open without a token."""
        return Health(store=request.app.state.idgraph.store.kind)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(request.app.state.idgraph.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/openapi.json", include_in_schema=False, dependencies=[Depends(caller)])
    async def openapi() -> dict[str, Any]:
        return app.openapi()


def _count_requests(app: FastAPI) -> None:
    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        state = getattr(request.app.state, "idgraph", None)
        if state is not None:
            state.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        return response
