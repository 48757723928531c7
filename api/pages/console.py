"""The operators' console: the review queue with each proposal's evidence as a waterfall and a
verdict form, merging two profiles by hand, any event's decision trace (what ``idgraph explain``
shows), and a profile's records, identifiers and merge lineage as a graph, with a split form.

Verdicts, merges and splits go through the JSON API's own endpoint functions; reads check the
same scopes with the same ``allow`` as the API.
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
from api.models import MergeIn, SplitIn, VerdictIn
from api.pages.customer import NOTICES, profile_page_context
from api.pages.evidence import waterfalls
from api.pages.lineage import lineage
from api.pages.web import PageRoute, checked_form, profile_url, render, see_other, visitor
from api.problems import ProblemError

router = APIRouter(prefix="/console", route_class=PageRoute, include_in_schema=False)
Visitor = Annotated[Principal, Depends(visitor)]
ReviewId = Annotated[int, Path(ge=1, le=2**62)]


#: Why the service refused a merge, by the status the API gives it: a translated lead before the
#: service's own words (which name the ids).
MERGE_REFUSED = {404: "merge.unknown", 409: "merge.same"}


async def _queue(request: Request, who: Principal, *, status: int = 200, notice: str | None = None,
                 error: tuple[int, str] | None = None, merge_error: tuple[str, str] | None = None,
                 merge_form: dict[str, str] | None = None) -> Response:
    state = api_state(request)
    open_reviews = await operator.reviews(who, state, "open")
    records = await state.store.decisions([review.event_id for review in open_reviews])
    proposals = [(review, waterfalls(records.get(review.event_id), review.profile_ids)) for review in open_reviews]
    counters = await request.app.state.idgraph_counters.read(len(open_reviews))
    return render(request, "console.html", status, proposals=proposals, counters=counters,
                  notice=notice if notice in NOTICES else None, error=error, merge_error=merge_error,
                  merge_form=merge_form or {})


@router.get("")
async def console(request: Request, who: Visitor, done: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    return await _queue(request, who, notice=done)


@router.post("/reviews/{review_id}")
async def verdict(request: Request, review_id: ReviewId, who: Visitor) -> Response:
    form = await checked_form(request)
    state = api_state(request)
    try:
        body = VerdictIn.model_validate({"verdict": form.get("verdict", ""), "reason": form.get("reason", "").strip()})
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
        return see_other(profile_url("/console/profiles", review["profile_ids"][0], "verdict.approved"))
    return see_other("/console?done=verdict.rejected")


@router.post("/merge")
async def merge(request: Request, who: Visitor) -> Response:
    form = await checked_form(request)
    shown = {name: form.get(name, "").strip() for name in ("first", "second", "reason")}
    if not shown["first"] or not shown["second"]:
        return await _queue(request, who, status=422, merge_error=("merge.ids.missing", ""), merge_form=shown)
    if not shown["reason"]:
        return await _queue(request, who, status=422, merge_error=("merge.reason.missing", ""), merge_form=shown)
    try:
        body = MergeIn(profile_ids=[shown["first"], shown["second"]], reason=shown["reason"])
        out = await operator.merge(body, who, api_state(request))
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return await _queue(request, who, status=422, merge_error=("error.422", detail), merge_form=shown)
    except ProblemError as exc:
        if exc.status in (401, 403):
            raise
        return await _queue(request, who, status=exc.status, merge_form=shown,
                            merge_error=(MERGE_REFUSED.get(exc.status, "error.422"), exc.detail or ""))
    return see_other(profile_url("/console/profiles", out.operation.get("survivor", shown["first"]), "merge.done"))


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
    return see_other(profile_url("/console/profiles", profile_id))


async def _profile(request: Request, who: Principal, profile_id: str, *, status: int = 200,
                   q: str | None = None, notice: str | None = None, error: str | None = None) -> Response:
    allow(who, "operator", "admin")
    state = api_state(request)
    live = await reach(state, who, profile_id)
    context = await profile_page_context(request, who, profile_id, q=q, notice=notice, error=error)
    events = {entry.event_id: entry.event for entry in await state.store.timeline(live)}
    graph = lineage(live, context["view"].merged_from, await state.store.decisions_for(live),
                    await state.store.operations_for(live), context["identifiers"], events)
    return render(request, "profile.html", status, graph=graph, **context)


@router.get("/profiles/{profile_id}")
async def profile(request: Request, profile_id: profiles.ProfileId, who: Visitor,
                  q: Annotated[str | None, Query(max_length=200)] = None,
                  done: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    return await _profile(request, who, profile_id, q=q, notice=done)


@router.post("/profiles/{profile_id}/split")
async def split(request: Request, profile_id: profiles.ProfileId, who: Visitor) -> Response:
    """Two steps: the form asks, a confirmation page says what will happen, and only its ``confirm``
    splits (re-resolving the touchpoints cannot be undone except by merging again)."""
    form = await checked_form(request)
    allow(who, "operator", "admin")
    live = await reach(api_state(request), who, profile_id)
    separate, reason = form.get("separate", "").strip(), form.get("reason", "").strip()
    if not separate or not reason:
        key = "split.separate.missing" if not separate else "split.reason.missing"
        return await _profile(request, who, profile_id, status=422, error=key)
    try:
        body = SplitIn(separate=separate, reason=reason)
    except ValidationError as exc:
        return await _profile(request, who, profile_id, status=422, error="; ".join(e["msg"] for e in exc.errors()))
    if form.get("confirm") != "yes":
        return render(request, "split.html", live=live, separate=body.separate, reason=body.reason)
    try:
        await operator.split(live, body, who, api_state(request))
    except ProblemError as exc:
        if exc.status in (401, 403):
            raise
        return await _profile(request, who, profile_id, status=exc.status, error=exc.detail)
    return see_other(profile_url("/console/profiles", live, "split.done"))




@router.get("/counters")
async def counters(request: Request, who: Visitor) -> Response:
    """The counters alone, for the console's script to refresh in place."""
    open_reviews = await operator.reviews(who, api_state(request), "open")
    reading = await request.app.state.idgraph_counters.read(len(open_reviews))
    return render(request, "_counters.html", counters=reading)
