"""Errors as RFC 9457 problem details (``application/problem+json``), for every failure path.

One shape for every error, so a client handles 401, 404 and 422 alike; the OpenAPI spec
declares it on every operation, and schemathesis checks that the app keeps to that.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from graph.store import StoreConflict, StoreUnavailable
from service.operations import Conflict, NotFound, OperationError

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
           409: "Conflict", 410: "Gone", 413: "Content too large", 415: "Unsupported media type",
           422: "Unprocessable content", 500: "Internal server error", 503: "Service unavailable"}


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="What was wrong with each invalid field")


class ProblemError(Exception):
    """Raised anywhere in a request to answer with a problem."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers, self.errors = status, detail, headers or {}, errors


def operation_problem(exc: OperationError) -> ProblemError:
    """The HTTP status that says why an operation was refused: the service knows no HTTP."""
    status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 422
    return ProblemError(status, str(exc))


def problem_response(request: Request, status: int, detail: str | None, *, headers: dict[str, str] | None = None,
                     errors: list[dict[str, Any]] | None = None) -> Response:
    body = Problem(title=_TITLES.get(status, "Error"), status=status, detail=detail, instance=request.url.path, errors=errors)
    return Response(orjson.dumps(body.model_dump(exclude_none=True)), status_code=status,
                    media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only where and why: echoing the input would repeat a customer's data into logs and proxies.
    return [{"path": ".".join(str(p) for p in e.get("loc", ())), "reason": str(e.get("msg", ""))} for e in exc.errors()]


def install(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(request, exc.status, exc.detail, headers=exc.headers, errors=exc.errors)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(request, exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(request, 422, "the request is not valid", errors=_field_errors(exc))

    async def on_busy(request: Request, exc: Exception) -> Response:
        if isinstance(exc, StoreConflict):
            return problem_response(request, 409, str(exc))
        return problem_response(request, 503, str(exc), headers={"Retry-After": "1"})

    async def on_crash(request: Request, exc: Exception) -> Response:
        return problem_response(request, 500, "the server failed to handle the request; it has been logged")

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(StoreUnavailable, on_busy)
    app.add_exception_handler(Exception, on_crash)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries declaring problem bodies for these statuses."""
    return {
        status: {"model": Problem, "description": _TITLES.get(status, "Error"),
                 "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for status in statuses
    }
