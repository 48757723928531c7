"""The operators' console: the review queue with each proposal's evidence as a waterfall and a
verdict form, any event's decision trace (what ``idgraph explain`` shows), and a profile's
records and merge lineage as a graph.

Verdicts go through the JSON API's own endpoint function; reads check the same scopes with the
same ``allow`` as the API.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from identity.explain import render_decision
from api import operator, profiles
from api.access import allow, api_state, reach
from api.auth import Principal
from api.models import VerdictIn
from api.pages.customer import NOTICES, profile_page_context
from api.pages.evidence import waterfalls
from api.pages.lineage import lineage
from api.pages.web import PageRoute, checked_form, render, see_other, visitor
from api.problems import ProblemError

router = APIRouter(prefix="/console", route_class=PageRoute, include_in_schema=False)
Visitor = Annotated[Principal, Depends(visitor)]
ReviewId = Annotated[int, Path(ge=1, le=2**62)]


async def _queue(request: Request, who: Principal, *, status: int = 200, notice: str | None = None,
                 error: tuple[int, str] | None = None) -> Response:
    state = api_state(request)
    open_reviews = await operator.reviews(who, state, "open")
    proposals = [(review, waterfalls(await state.store.decision(review.event_id), review.profile_ids))
                 for review in open_reviews]
    counters = await request.app.state.idgraph_counters.read(len(open_reviews))
    return render(request, "console.html", status, proposals=proposals, counters=counters,
                  notice=notice if notice in NOTICES else None, error=error)


@router.get("")
async def console(request: Request, who: Visitor, done: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    return await _queue(request, who, notice=done)


@router.post("/reviews/{review_id}")
async def verdict(request: Request, review_id: ReviewId, who: Visitor) -> Response:
    form = await checked_form(request)
    state = api_state(request)
    try:
        body = VerdictIn(verdict=form.get("verdict", ""), reason=form.get("reason", "").strip())  # type: ignore[arg-type]
    except ValidationError as exc:
        key = "review.reason.missing" if any(e["loc"] == ("reason",) for e in exc.errors()) else "error.422"
        return await _queue(request, who, status=422, error=(review_id, key))
    review = await state.store.review(review_id)
    try:
        await operator.decide_review(review_id, body, who, state)
    except ProblemError as exc:
        if exc.status in (401, 403):
            raise
        return await _queue(request, who, status=exc.status, error=(review_id, exc.detail))
    if body.verdict == "approve" and review is not None:
        return see_other(f"/console/profiles/{review['profile_ids'][0]}?done=verdict.approved")
    return see_other("/console?done=verdict.rejected")


@router.get("/decisions")
async def decision_trace(request: Request, who: Visitor,
                         event_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None) -> Response:
    allow(who, "operator", "admin")
    record = await api_state(request).store.decision(event_id) if event_id else None
    status = 404 if event_id and record is None else 200
    return render(request, "trace.html", status, event_id=event_id or "", record=record,
                  text=render_decision(record) if record else None, charts=waterfalls(record))


@router.get("/profiles")
async def open_profile(who: Visitor, profile_id: Annotated[str, Query(min_length=1, max_length=128)]) -> Response:
    allow(who, "operator", "admin")
    return see_other(f"/console/profiles/{profile_id}")


@router.get("/profiles/{profile_id}")
async def profile(request: Request, profile_id: profiles.ProfileId, who: Visitor,
                  q: Annotated[str | None, Query(max_length=200)] = None,
                  done: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    allow(who, "operator", "admin")
    state = api_state(request)
    live = await reach(state, who, profile_id)
    context = await profile_page_context(request, who, profile_id, q=q, notice=done)
    graph = lineage(live, context["view"].merged_from, await state.store.decisions_for(live),
                    await state.store.operations_for(live))
    return render(request, "profile.html", graph=graph, **context)




@router.get("/counters")
async def counters(request: Request, who: Visitor) -> Response:
    """The counters alone, for the console's script to refresh in place."""
    open_reviews = await operator.reviews(who, api_state(request), "open")
    reading = await request.app.state.idgraph_counters.read(len(open_reviews))
    return render(request, "_counters.html", counters=reading)
