"""The console's view of sandboxes (``idgraph sandbox``): which exist, what a candidate rule set
would change in one (``idgraph sandbox diff``), and one changed event's decision under both
versions with its evidence side by side (``idgraph sandbox explain``).

Read only, for operators and admins. The sandboxes come from the application's state
(api/sandboxes.py); an API given none shows that there are none to show.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from api.access import allow, api_state
from api.auth import Principal
from api.pages.evidence import waterfalls
from api.pages.web import PageRoute, render, visitor
from api.problems import ProblemError
from api.sandboxes import SandboxDiffs, SandboxUnavailable
from identity.explain import render_decision
from identity.model import DecisionRecord

router = APIRouter(prefix="/console/sandboxes", route_class=PageRoute, include_in_schema=False)
Visitor = Annotated[Principal, Depends(visitor)]
Name = Annotated[str, Path(min_length=1, max_length=48)]
EventId = Annotated[str, Path(min_length=1, max_length=200)]
#: Profiles and events listed on a diff page; the counts above them are always whole.
SHOWN = 200


def _sandboxes(request: Request, who: Principal) -> SandboxDiffs | None:
    allow(who, "operator", "admin")
    return api_state(request).sandboxes


def _named(request: Request, who: Principal, name: str) -> SandboxDiffs:
    found = _sandboxes(request, who)
    if found is None:
        raise ProblemError(404, f"no sandbox named {name!r}")
    return found


@router.get("")
async def sandbox_list(request: Request, who: Visitor) -> Response:
    found = _sandboxes(request, who)
    return render(request, "sandboxes.html", summaries=found.summaries() if found else [])


@router.get("/{name}")
async def sandbox_diff(request: Request, name: Name, who: Visitor) -> Response:
    try:
        diff = await _named(request, who, name).diff(name)
    except SandboxUnavailable as exc:
        raise ProblemError(404, str(exc)) from None
    keys = ("actions", "rules", "field_levels")
    tables = {key: _rows(getattr(diff.baseline, key), getattr(diff.candidate, key)) for key in keys}
    return render(request, "sandbox_diff.html", name=name, diff=diff, tables=tables, shown=SHOWN)


def _rows(before: dict[str, int], after: dict[str, int]) -> list[tuple[str, int, int]]:
    return [(key, before.get(key, 0), after.get(key, 0)) for key in sorted(before.keys() | after.keys())]


@router.get("/{name}/events/{event_id}")
async def sandbox_event(request: Request, name: Name, event_id: EventId, who: Visitor) -> Response:
    try:
        baseline, candidate = await _named(request, who, name).decisions(name, event_id)
    except SandboxUnavailable as exc:
        raise ProblemError(404, str(exc)) from None
    if baseline is None and candidate is None:
        raise ProblemError(404, f"no decision recorded for event {event_id!r} in sandbox {name!r}")
    sides = [("diff.baseline", _side(baseline)), ("diff.candidate", _side(candidate))]
    # Profile ids here are the sandbox's, so the waterfalls do not link them to live profiles.
    return render(request, "sandbox_event.html", name=name, event_id=event_id, sides=sides, plain_ids=True)


def _side(record: DecisionRecord | None) -> dict[str, object] | None:
    if record is None:
        return None
    return {"record": record, "text": render_decision(record), "charts": waterfalls(record)}
