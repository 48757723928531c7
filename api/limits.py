"""The request-body limit, enforced while the body streams in (issue 10 item 5).

Without one, a 100 MB PATCH was read and parsed whole (1.1 GB) and the next request on that
profile waited behind it for minutes. Checked twice, so an over-limit body is never held whole:
a declared ``Content-Length`` over the limit is refused before a byte of body is read, and a
body without one (chunked) is counted as each chunk arrives and refused as soon as it passes.

``IDGRAPH_API_MAX_BODY_BYTES`` sets the limit (default 1 MiB); ``idgraph api`` reads it at start.
"""

from __future__ import annotations

import os
from typing import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response

ENV_MAX_BODY_BYTES = "IDGRAPH_API_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: Below 1 KiB not even a rectification fits; above 64 MiB the limit no longer protects the API.
_BOUNDS = (1024, 64 * 1024 * 1024)
#: The rest of the body is never read, so the connection cannot carry another request.
_CLOSE = {"Connection": "close"}


class LimitConfigError(ValueError):
    """A limit setting that cannot be used, naming the variable."""


def max_body_bytes_from_env(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    raw = environ.get(ENV_MAX_BODY_BYTES, "").strip()
    if not raw:
        return DEFAULT_MAX_BODY_BYTES
    low, high = _BOUNDS
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise LimitConfigError(f"{ENV_MAX_BODY_BYTES}: must be a whole number of bytes from {low} to {high}, "
                               f"not {raw!r}")
    return int(raw)


def _too_large(limit: int) -> str:
    return f"the request body is larger than the limit of {limit} bytes"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the body passes the limit. An HTTPException because FastAPI
    turns any other error met while reading a body into a 400, but lets this one through to the
    app's problem handler (api/problems.py), which answers it as a 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit), headers=_CLOSE)


def _declared_length(scope: Scope) -> int:
    # Absent or malformed counts as 0: the server frames such a body itself, and it is counted below.
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


class BodyLimit:
    """Pure ASGI middleware: refuses bodies over ``max_bytes`` with a 413 problem."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        counted, started = 0, False

        async def counting_receive() -> Message:
            nonlocal counted
            message = await receive()
            if message["type"] == "http.request":
                counted += len(message.get("body", b""))
                if counted > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:
            # Read where the app's handlers do not reach (in a middleware, say): answer here if we still can.
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(Request(scope, receive), 413, _too_large(self.max_bytes), headers=_CLOSE)
        await response(scope, receive, send)
