"""The customer's endpoints: view, resolve, timeline, export, rectify, erase, consent."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query

from api.access import allow, api_state, caller, not_found, reach, subscription_of
from api.auth import Principal
from identity.features import identifier_key
from identity.model import DecisionRecord
from identity.normalize import InvalidIdentifier, normalize_identifier
from service.operations import OperationError, customer_traits
from sinks.subscriptions import Subscription
from api.models import (
    ConsentDocument, ConsentIn, ErasureOut, ExportOut, ProfileOut, RectifyIn, RectifyOut, ResolveCandidate, ResolveOut,
    TimelineOut,
)
from api.problems import ProblemError, documented, operation_problem
from api.search import parse_query, search
from api.state import ApiState
from api.views import consent_view, profile_view, redact_for_customer, scenario_view, timeline_view

router = APIRouter(prefix="/v1", tags=["profiles"])
ProfileId = Annotated[str, Path(min_length=1, max_length=128, description="A profile id (a merged id answers with its survivor)")]
Caller = Annotated[Principal, Depends(caller)]
State = Annotated[ApiState, Depends(api_state)]
IdempotencyKey = Annotated[str | None, Header(max_length=200, description="Repeat a request safely: the same key applies once")]
READ = documented(401, 403, 404, 422)
WRITE = documented(400, 401, 403, 404, 409, 422)


async def _view(state: ApiState, live: str, requested: str) -> ProfileOut:
    snapshot = await state.store.profile(live)
    if snapshot is None:
        raise not_found(requested)
    return profile_view(snapshot, requested)


@router.get("/profiles/{profile_id}", response_model=ProfileOut, responses=READ)
async def get_profile(profile_id: ProfileId, who: Caller, state: State) -> ProfileOut:
    """The profile with the provenance of each trait; a merged id answers with its survivor."""
    allow(who, "customer", "scenario", "operator", "admin")
    live = await reach(state, who, profile_id)
    view = await _view(state, live, profile_id)
    if who.staff or who.profile_id is not None:
        return view
    subscription = await subscription_of(state, who)
    projected = None if subscription is None else scenario_view(view, subscription)
    if projected is None:
        raise not_found(profile_id)
    return projected


@router.get("/resolve", response_model=ResolveOut, responses=READ)
async def resolve(who: Caller, state: State,
                  email: Annotated[str | None, Query(max_length=512)] = None,
                  phone: Annotated[str | None, Query(max_length=512)] = None,
                  wechat_openid: Annotated[str | None, Query(max_length=512)] = None,
                  device_id: Annotated[str | None, Query(max_length=512)] = None,
                  crm_id: Annotated[str | None, Query(max_length=512)] = None,
                  national_id: Annotated[str | None, Query(max_length=512)] = None) -> ResolveOut:
    """The profile holding the given identifiers, with how sure that answer is."""
    allow(who, "scenario", "operator", "admin")
    given = {t: v for t, v in (("email", email), ("phone", phone), ("wechat_openid", wechat_openid),
                               ("device_id", device_id), ("crm_id", crm_id), ("national_id", national_id)) if v}
    if not given:
        raise ProblemError(422, "give at least one identifier, e.g. ?phone=...")
    subscription = None if who.staff else await subscription_of(state, who)
    if not who.staff and (subscription is None or not all(subscription.allows(f"identifiers.{t}") for t in given)):
        raise ProblemError(403, "this scenario's subscription does not project these identifier types")
    keys: dict[str, str] = {}
    for type_, raw in given.items():
        try:
            keys[identifier_key(type_, normalize_identifier(type_, raw, state.rules.normalization_rules))] = type_
        except InvalidIdentifier as exc:
            raise ProblemError(422, f"{type_}: {exc}") from None
    holders = await state.store.identifier_holders(list(keys))
    if subscription is not None:
        holders = await _readable_holders(state, subscription, holders)
    answer = _best(holders, keys)
    if answer is None:
        raise ProblemError(404, "no profile holds these identifiers")
    return answer


async def _readable_holders(state: ApiState, subscription: Subscription,
                            holders: dict[str, list[str]]) -> dict[str, list[str]]:
    """The holders a scenario may read. The others are left out of the answer, its candidates and
    its confidence alike: naming them, or counting them, would tell the scenario they exist."""
    readable: dict[str, bool] = {}
    for profile_id in sorted({p for profiles in holders.values() for p in profiles}):
        snapshot = await state.store.profile(profile_id)
        readable[profile_id] = snapshot is not None and scenario_view(profile_view(snapshot, profile_id),
                                                                      subscription) is not None
    cut = {key: [p for p in profiles if readable[p]] for key, profiles in holders.items()}
    return {key: profiles for key, profiles in cut.items() if profiles}


def _best(holders: dict[str, list[str]], keys: dict[str, str]) -> ResolveOut | None:
    matched: dict[str, list[str]] = {}
    for key, profiles in holders.items():
        for profile_id in profiles:
            matched.setdefault(profile_id, []).append(keys[key])
    if not matched:
        return None
    ranked = sorted(matched, key=lambda p: (-len(matched[p]), p))
    best = ranked[0]
    alone = sum(1 for key, profiles in holders.items() if profiles == [best])
    return ResolveOut(profile_id=best, confidence=round(alone / len(keys), 6), matched=sorted(matched[best]),
                      candidates=[ResolveCandidate(profile_id=p, matched=sorted(matched[p])) for p in ranked[1:]])


@router.get("/profiles/{profile_id}/timeline", response_model=TimelineOut, responses=READ)
async def timeline(profile_id: ProfileId, who: Caller, state: State,
                   q: Annotated[str | None, Query(max_length=200, description='e.g. "battery quote last year", "去年 更换CT球管"')] = None,
                   ) -> TimelineOut:
    """Every touchpoint across scenarios in the order it happened; ``q`` searches the customer's own
    history in the store's full-text index, best match first."""
    allow(who, "customer", "operator", "admin")
    live = await reach(state, who, profile_id)
    found = await search(state.store, live, parse_query(q)) if q else await state.store.timeline(live)
    return TimelineOut(profile_id=live, query=q, entries=timeline_view(found))


@router.get("/profiles/{profile_id}/export", response_model=ExportOut, responses=READ)
async def export(profile_id: ProfileId, who: Caller, state: State) -> ExportOut:
    """Everything held about the customer, as one portable document."""
    allow(who, "customer", "operator", "admin")
    live = await reach(state, who, profile_id)
    view = await _view(state, live, profile_id)
    decisions: list[dict[str, Any]] = [dict(d) for d in await state.store.decisions_for(live)]
    operations: list[dict[str, Any]] = [dict(o) for o in await state.store.operations_for(live)]
    if not who.staff:
        own = {live, *view.merged_from}
        decisions = [redact_for_customer(d, own) for d in decisions]
        operations = [{k: o.get(k) for k in ("operation_id", "kind", "at", "reason")} for o in operations]
    return ExportOut(exported_at=datetime.now(timezone.utc).isoformat(), profile=view,
                     timeline=timeline_view(await state.store.timeline(live)), decisions=decisions, operations=operations)


def _refused(decision: DecisionRecord) -> list[dict[str, Any]]:
    conflicts = (decision.get("evidence") or {}).get("sovereignty", {}).get("conflicts", [])
    return [{"trait": c["trait"], "reason": c["reason"]} for c in conflicts]


@router.patch("/profiles/{profile_id}", response_model=RectifyOut, responses=WRITE)
async def rectify(profile_id: ProfileId, body: RectifyIn, who: Caller, state: State,
                  idempotency_key: IdempotencyKey = None) -> RectifyOut:
    """Correct customer-owned traits: a ``customer`` touchpoint that the policy ranks above scenario writes."""
    allow(who, "customer", "admin")
    live = await reach(state, who, profile_id)
    allowed = customer_traits(state.policy)
    foreign = sorted(set(body.traits) - set(allowed))
    if foreign:
        raise ProblemError(422, f"not customer-owned under policy {state.policy.version}: {', '.join(foreign)}; "
                                f"correctable: {', '.join(allowed)}")
    async with state.write_lock:
        try:
            outcome = await state.operations.customer_event(live, type_="profile.rectified", actor=who.subject,
                                                            idempotency_key=idempotency_key, traits=body.traits)
        except OperationError as exc:
            raise operation_problem(exc) from None
    return RectifyOut(event_id=outcome.event_id, action=outcome.decision["action"], refused=_refused(outcome.decision),
                      profile=await _view(state, outcome.profile_id, profile_id))


@router.delete("/profiles/{profile_id}", response_model=ErasureOut, responses=WRITE)
async def erase(profile_id: ProfileId, who: Caller, state: State) -> ErasureOut:
    """Erase the customer: personal data removed everywhere, a tombstone of hashes kept, ``profile.erased`` sent."""
    allow(who, "customer", "admin")
    live = await reach(state, who, profile_id)
    requested_by = "operator" if who.staff else "customer"
    async with state.write_lock:
        try:
            result = await state.operations.erase(live, actor=who.subject, requested_by=requested_by)
        except OperationError as exc:
            raise operation_problem(exc) from None
    record = result.record
    erased_at = record.get("erased_at") or record["at"]
    return ErasureOut(profile_id=live, erased_at=erased_at, operation_id=record["operation_id"],
                      already_erased=bool(record.get("already_erased")))


@router.get("/profiles/{profile_id}/consent", response_model=ConsentDocument, responses=READ)
async def get_consent(profile_id: ProfileId, who: Caller, state: State) -> ConsentDocument:
    """The customer's answer per purpose, with when and where it was given."""
    allow(who, "customer", "operator", "admin")
    live = await reach(state, who, profile_id)
    snapshot = await state.store.profile(live)
    if snapshot is None:
        raise not_found(profile_id)
    return ConsentDocument(profile_id=live, purposes=consent_view(snapshot))


@router.put("/profiles/{profile_id}/consent", response_model=ConsentDocument, responses=WRITE)
async def put_consent(profile_id: ProfileId, body: ConsentIn, who: Caller, state: State,
                      idempotency_key: IdempotencyKey = None) -> ConsentDocument:
    """Grant or withdraw consent per purpose; the change is a delta like any other."""
    allow(who, "customer", "admin")
    live = await reach(state, who, profile_id)
    async with state.write_lock:
        try:
            outcome = await state.operations.customer_event(live, type_="consent.updated", actor=who.subject,
                                                            idempotency_key=idempotency_key, consent={purpose: given for purpose, given in body.purposes.items()})
        except OperationError as exc:
            raise operation_problem(exc) from None
    snapshot = await state.store.profile(outcome.profile_id)
    if snapshot is None:
        raise not_found(profile_id)
    return ConsentDocument(profile_id=snapshot.id, purposes=consent_view(snapshot))
