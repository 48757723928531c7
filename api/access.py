"""Who may do what: scope checks per endpoint, and which profiles a token can reach.

A token whose scopes do not fit the endpoint gets 403: that says nothing about any profile. A
profile the token may not reach answers 404, exactly as one that does not exist, so ids cannot
be probed.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import Principal
from api.problems import ProblemError
from api.state import ApiState
from sinks.subscriptions import Subscription, parse_subscriptions

bearer = HTTPBearer(auto_error=False, description="A token issued with `idgraph api token`")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="idgraph"'}


def api_state(request: Request) -> ApiState:
    return request.app.state.idgraph


async def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    if credentials is None:
        raise ProblemError(401, "a bearer token is required", headers=_CHALLENGE)
    principal = api_state(request).tokens.authenticate(credentials.credentials)
    if principal is None:
        raise ProblemError(401, "the token is not valid", headers={**_CHALLENGE, "WWW-Authenticate": 'Bearer error="invalid_token"'})
    return principal


def allow(principal: Principal, *roles: str) -> None:
    """Roles: ``customer``, ``scenario``, ``operator``, ``admin``."""
    held = {"scenario" if s.startswith("scenario:") else s for s in principal.scopes}
    if not held & set(roles):
        raise ProblemError(403, f"this needs one of the scopes: {', '.join(roles)}")


def not_found(profile_id: str) -> ProblemError:
    return ProblemError(404, f"no profile {profile_id}")


async def reach(state: ApiState, principal: Principal, profile_id: str) -> str:
    """The live profile behind ``profile_id`` if this caller may reach it; 404 otherwise."""
    live = await state.store.survivor(profile_id)
    if live is None:
        raise not_found(profile_id)
    if principal.staff:
        return live
    if principal.profile_id is not None and await state.store.survivor(principal.profile_id) == live:
        return live
    if principal.scenarios:
        return live  # the caller cuts the answer down to the subscription (api/views.py)
    raise not_found(profile_id)


async def subscription_of(state: ApiState, principal: Principal) -> Subscription | None:
    """The subscription behind a scenario token: what the scenario may read."""
    documents = await state.store.subscription_documents()
    wanted = [documents[n] for n in principal.scenarios if n in documents]
    return parse_subscriptions(wanted, "store")[0] if wanted else None
