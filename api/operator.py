"""The operators' endpoints: the review queue, merging by hand, splitting a wrong merge."""

from __future__ import annotations

from typing import Annotated, Awaitable, Callable, Literal

from fastapi import APIRouter, Depends, Path, Query

from api.access import allow, api_state, caller, reach
from api.auth import Principal
from api.models import DeltaSummary, MergeIn, OperationOut, ReviewOut, SplitIn, VerdictIn
from api.problems import ProblemError, documented, operation_problem
from api.state import ApiState
from graph.store import StoreConflict
from service.operations import OperationError, OperationResult

router = APIRouter(prefix="/v1", tags=["review"])
Caller = Annotated[Principal, Depends(caller)]
State = Annotated[ApiState, Depends(api_state)]
WRITE = documented(400, 401, 403, 404, 409, 422)


def _out(result: OperationResult) -> OperationOut:
    return OperationOut(operation=dict(result.record), deltas=[
        DeltaSummary(delta_id=d.delta_id, profile_id=d.profile_id, profile_version=d.profile_version, kind=d.kind)
        for d in result.deltas])


async def _run(state: ApiState, action: Callable[[], Awaitable[OperationResult]]) -> OperationOut:
    async with state.write_lock:
        try:
            return _out(await action())
        except OperationError as exc:
            raise operation_problem(exc) from None
        except StoreConflict as exc:
            raise ProblemError(409, str(exc)) from None


@router.get("/reviews", response_model=list[ReviewOut], responses=documented(401, 403, 422))
async def reviews(who: Caller, state: State,
                  status: Annotated[Literal["open", "approved", "rejected"], Query()] = "open") -> list[ReviewOut]:
    """Matches between the link and new-profile thresholds, waiting for (or given) a person's verdict."""
    allow(who, "operator", "admin")
    return [ReviewOut(**r) for r in await state.store.reviews(status)]


@router.post("/reviews/{review_id}", response_model=OperationOut, responses=WRITE)
async def decide_review(review_id: Annotated[int, Path(ge=1, le=2**62)], body: VerdictIn, who: Caller,
                        state: State) -> OperationOut:
    """Approve (the profiles are merged) or reject (kept apart, and never proposed together again)."""
    allow(who, "operator", "admin")
    ops = state.operations
    return await _run(state, lambda: ops.decide_review(review_id, body.verdict == "approve", actor=who.subject,
                                                       reason=body.reason))


@router.post("/profiles/merge", response_model=OperationOut, responses=WRITE)
async def merge(body: MergeIn, who: Caller, state: State) -> OperationOut:
    """Merge profiles by hand into the oldest; lineage and the decision log record who and why."""
    allow(who, "operator", "admin")
    ops = state.operations
    return await _run(state, lambda: ops.merge(body.profile_ids, actor=who.subject, reason=body.reason))


@router.post("/profiles/{profile_id}/split", response_model=OperationOut, responses=WRITE)
async def split(profile_id: Annotated[str, Path(min_length=1, max_length=128)], body: SplitIn, who: Caller,
                state: State) -> OperationOut:
    """Undo a wrong merge: the touchpoints are re-resolved with the two profiles kept apart."""
    allow(who, "operator", "admin")
    live = await reach(state, who, profile_id)
    ops = state.operations
    return await _run(state, lambda: ops.split(live, body.separate, actor=who.subject, reason=body.reason))
