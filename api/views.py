"""Turning store snapshots into API documents, cut down to what the caller may see."""

from __future__ import annotations

from typing import Any

from api.models import ConsentOut, ProfileOut, TimelineEntryOut, TraitOut
from graph.store import ProfileSnapshot, TimelineEntry
from identity.events import CONSENT_PURPOSES
from sinks.subscriptions import Subscription


def consent_view(snapshot: ProfileSnapshot) -> dict[str, ConsentOut]:
    """Every purpose, answered or not: a purpose never answered reads as not granted."""
    return {p: ConsentOut(**snapshot.consent[p]) if p in snapshot.consent else ConsentOut(granted=False)
            for p in CONSENT_PURPOSES}


def profile_view(snapshot: ProfileSnapshot, requested_id: str) -> ProfileOut:
    return ProfileOut(
        id=snapshot.id, requested_id=requested_id, merged_into=None if requested_id == snapshot.id else snapshot.id,
        version=snapshot.version, created_at=snapshot.created_at, updated_at=snapshot.updated_at,
        identifiers=snapshot.identifiers, traits={k: TraitOut(**v) for k, v in sorted(snapshot.traits.items())},
        consent=consent_view(snapshot), merged_from=snapshot.merged_from,
    )


def scenario_view(view: ProfileOut, subscription: Subscription) -> ProfileOut | None:
    """What a scenario's token may read: its subscription's fields, under its purpose's consent, of a
    profile its filters accept; None (the caller answers 404, as for no profile) otherwise."""
    purpose = subscription.purpose
    if purpose is not None and not view.consent[purpose].granted:
        return None
    # The filters judge the whole profile, as they judge a delta's full profile before projection.
    if not subscription.accepts({name: trait.value for name, trait in view.traits.items()}):
        return None
    return view.model_copy(update={
        "identifiers": {t: v for t, v in view.identifiers.items() if subscription.allows(f"identifiers.{t}")},
        "traits": {n: t for n, t in view.traits.items() if subscription.allows(f"traits.{n}")},
        "consent": {} if purpose is None else {purpose: view.consent[purpose]},
    })


def timeline_view(entries: list[TimelineEntry]) -> list[TimelineEntryOut]:
    return [TimelineEntryOut(event_id=e.event_id, scenario=e.scenario, type=e.type, occurred_at=e.occurred_at,
                             event=e.event) for e in entries]


def _other(value: Any, own: set[str]) -> Any:
    return value if value in own else "another profile"


def redact_for_customer(record: dict[str, Any], own: set[str]) -> dict[str, Any]:
    """A decision as its customer may see it: other customers' profile ids replaced, so an export
    cannot be used to learn who else the graph holds."""
    evidence = dict(record.get("evidence") or {})
    evidence["candidates"] = [{**c, "profile_id": _other(c.get("profile_id"), own)} for c in evidence.get("candidates", [])]
    evidence["identifiers"] = [{**i, "profiles": [_other(p, own) for p in i.get("profiles", [])]}
                               for i in evidence.get("identifiers", [])]
    review = record.get("review")
    if review:
        review = {**review, "profile_ids": [_other(p, own) for p in review.get("profile_ids", [])]}
    return {**record, "evidence": evidence, "review": review,
            "merged_from": list(record.get("merged_from", [])),
            "profile_id": _other(record.get("profile_id"), own)}
