"""The customer's pages: sign in, see the profile, correct it, set consent, search the timeline,
download everything and erase it.

Each action calls the JSON API's own endpoint function with the signed-in principal, so scopes,
reach (another customer's profile answers 404), policy and audit are the API's, not a copy.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from service.operations import customer_traits
from api import profiles
from api.access import api_state
from api.auth import Principal
from api.models import ConsentIn, RectifyIn
from api.pages.masking import mask_identifiers, summary
from api.pages.web import (
    COOKIE, SIGNIN_COOKIE, SIGNIN_PATH, FormError, PageRoute, checked_form, delete_cookie, profile_url, render, see_other,
    set_cookie, signin_page, visitor,
)
from api.problems import ProblemError

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Visitor = Annotated[Principal, Depends(visitor)]
ProfileId = profiles.ProfileId
#: Notices a redirect may ask the page to show: keys into the message table, never free text.
NOTICES = frozenset({"consent.saved", "correct.saved", "verdict.approved", "verdict.rejected",
                     "merge.done", "split.done"})


@router.get("/")
async def home() -> Response:
    return see_other("/me")


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    return signin_page(request)


@router.post("/signin")
async def signin(request: Request) -> Response:
    # Checked like every other form, so another site cannot sign the visitor in as someone else.
    form = await checked_form(request, signing_in=True)
    token = form.get("token", "").strip()
    if not token:
        return signin_page(request, 422, key="token.missing")
    principal = api_state(request).tokens.authenticate(token)
    if principal is None:
        return signin_page(request, 401, key="token.bad")
    response = see_other("/console" if principal.staff else "/me")
    set_cookie(response, request, COOKIE, token)
    delete_cookie(response, request, SIGNIN_COOKIE, SIGNIN_PATH)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    # Checked too: another site's form must not end the visitor's session.
    await checked_form(request)
    response = see_other("/signin")
    delete_cookie(response, request, COOKIE)
    return response


@router.get("/me")
async def me(who: Visitor) -> Response:
    if who.profile_id is None:
        return see_other("/console")
    return see_other(profile_url("/profiles", who.profile_id))


async def profile_page_context(request: Request, who: Principal, profile_id: str, *, q: str | None = None,
                               notice: str | None = None, error: str | None = None,
                               refused: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the profile page shows this visitor: masked identifiers unless staff."""
    state = api_state(request)
    view = await profiles.get_profile(profile_id, who, state)
    timeline = await profiles.timeline(profile_id, who, state, q or None)
    correctable = customer_traits(state.policy)
    return {"view": view, "q": q or "", "entries": timeline.entries,
            "identifiers": view.identifiers if who.staff else mask_identifiers(view.identifiers),
            "correctable": [(name, view.traits[name].value if name in view.traits else "") for name in correctable],
            "summary": summary, "notice": notice if notice in NOTICES else None, "error": error,
            "refused": refused or [], "form_key": uuid.uuid4().hex, "staff": who.staff}


async def _profile_page(request: Request, who: Principal, profile_id: str, *, status: int = 200,
                        **shown: Any) -> Response:
    return render(request, "profile.html", status, **await profile_page_context(request, who, profile_id, **shown))


@router.get("/profiles/{profile_id}")
async def profile_page(request: Request, profile_id: ProfileId, who: Visitor,
                       q: Annotated[str | None, Query(max_length=200)] = None,
                       done: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    return await _profile_page(request, who, profile_id, q=q, notice=done)


@router.post("/profiles/{profile_id}/traits")
async def correct(request: Request, profile_id: ProfileId, who: Visitor) -> Response:
    form = await checked_form(request)
    state = api_state(request)
    current = (await profiles.get_profile(profile_id, who, state)).traits
    changed = {name: form[f"trait.{name}"].strip() for name in customer_traits(state.policy)
               if form.get(f"trait.{name}", "").strip()
               and form[f"trait.{name}"].strip() != str(current[name].value if name in current else "")}
    if not changed:
        return await _profile_page(request, who, profile_id, status=422, error="correct.none")
    try:
        body = RectifyIn.model_validate({"traits": changed})
        outcome = await profiles.rectify(profile_id, body, who, state, form.get("key") or None)
    except (ValidationError, ProblemError) as exc:
        detail = exc.detail if isinstance(exc, ProblemError) else "; ".join(e["msg"] for e in exc.errors())
        return await _profile_page(request, who, profile_id, status=422, error=detail)
    if outcome.refused:
        return await _profile_page(request, who, profile_id, status=200, refused=outcome.refused)
    return see_other(profile_url("/profiles", profile_id, "correct.saved"))


@router.post("/profiles/{profile_id}/consent")
async def consent(request: Request, profile_id: ProfileId, who: Visitor) -> Response:
    form = await checked_form(request)
    purpose, _, answer = form.get("set", "").partition("=")
    try:
        body = ConsentIn.model_validate({"purposes": {purpose: answer == "grant"}})
    except ValidationError:
        raise FormError("error.422") from None
    await profiles.put_consent(profile_id, body, who, api_state(request), form.get("key") or None)
    return see_other(profile_url("/profiles", profile_id, "consent.saved"))


@router.get("/profiles/{profile_id}/export")
async def export(request: Request, profile_id: ProfileId, who: Visitor) -> Response:
    document = await profiles.export(profile_id, who, api_state(request))
    body = orjson.dumps(document.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
    filename = f"idgraph-export-{document.profile.id}.json"
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


@router.get("/profiles/{profile_id}/erase")
async def erase_confirmation(request: Request, profile_id: ProfileId, who: Visitor) -> Response:
    view = await profiles.get_profile(profile_id, who, api_state(request))
    return render(request, "erase.html", view=view)


@router.post("/profiles/{profile_id}/erase")
async def erase(request: Request, profile_id: ProfileId, who: Visitor) -> Response:
    form = await checked_form(request)
    state = api_state(request)
    if form.get("confirm") != "yes":
        view = await profiles.get_profile(profile_id, who, state)
        return render(request, "erase.html", 422, view=view, key="erase.confirm.missing")
    await profiles.erase(profile_id, who, state)
    return render(request, "erased.html")
