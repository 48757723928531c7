"""The subscription contract: what a scenario receives, and the projection that enforces it.

A scenario is entitled to the fields it declared and nothing else (the connector principle):
every delta is cut down to those fields before it leaves idgraph, whichever sink carries it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator, model_validator

from identity.deltas import DELTA_KINDS, DeltaKind, FieldChange, IdentityDelta
from identity.notices import TouchpointNotice
from identity.topics import SANDBOX_PREFIX

_NAME = r"^[a-z0-9][a-z0-9._-]{0,127}$"
_FIELD = re.compile(r"^(traits|identifiers)\.([a-z][a-z0-9_]*(:[a-z0-9_.-]+)?|\*)$")


class SubscriptionError(ValueError):
    """A subscription declaration that cannot be used, with the reason."""


class KafkaSink(BaseModel):
    """Deliver to a Kafka topic of the scenario's own (default ``scenario.<name>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["kafka"] = "kafka"
    topic: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,200}$")

    @field_validator("topic")
    @classmethod
    def _not_a_sandbox_topic(cls, topic: str | None) -> str | None:
        if topic is not None and topic.startswith(SANDBOX_PREFIX):
            raise ValueError(f"topic {topic!r}: names starting with {SANDBOX_PREFIX!r} belong to sandboxes, and "
                             "'idgraph sandbox drop' deletes them; choose another name")
        return topic


class WebhookSink(BaseModel):
    """POST each delta as JSON; retried with exponential backoff, then dead-lettered."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["webhook"]
    url: HttpUrl
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_initial_s: float = Field(default=0.2, gt=0, le=60)
    backoff_max_s: float = Field(default=10.0, gt=0, le=600)
    headers: dict[str, str] = Field(default_factory=dict)


class TraitFilter(BaseModel):
    """Deliver only deltas whose profile's trait equals one of ``any_of`` (or merely has it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trait: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    any_of: tuple[Any, ...] | None = None

    def accepts(self, traits: dict[str, Any]) -> bool:
        if self.trait not in traits:
            return False
        return self.any_of is None or traits[self.trait] in self.any_of


class Subscription(BaseModel):
    """One scenario's declaration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME, description="the subscribing scenario")
    kinds: tuple[DeltaKind, ...] = DELTA_KINDS
    #: Touchpoint types to be notified of once resolved (see identity/notices.py).
    event_types: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = ()
    #: ``traits.<name>``, ``identifiers.<type>``, or ``traits.*`` / ``identifiers.*``.
    fields: tuple[str, ...] = Field(min_length=1)
    filters: tuple[TraitFilter, ...] = ()
    sink: Annotated[KafkaSink | WebhookSink, Field(discriminator="type")] = KafkaSink()
    #: What the scenario uses the data for; it then receives a profile's data only while the
    #: customer consents to that purpose (see :func:`project`).
    purpose: Literal["marketing", "ai_training", "analytics", "third_party_sharing"] | None = None

    @field_validator("fields")
    @classmethod
    def _field_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _FIELD.match(name):
                raise ValueError(f"field {name!r} must be traits.<name>, identifiers.<type> or a section's '*'")
        return value

    @model_validator(mode="after")
    def _receives_something(self) -> "Subscription":
        if not self.kinds and not self.event_types:
            raise ValueError("a subscription needs at least one delta kind or event type")
        return self

    @property
    def topic(self) -> str:
        """The Kafka topic of a Kafka sink (also where a webhook's queue lives)."""
        return self.sink.topic if isinstance(self.sink, KafkaSink) and self.sink.topic else f"scenario.{self.name}"

    def allows(self, field: str) -> bool:
        section = field.split(".", 1)[0]
        return field in self.fields or f"{section}.*" in self.fields

    def accepts(self, traits: dict[str, Any]) -> bool:
        """Whether a profile with these traits (name -> value) is this scenario's at all: the one
        test of ``filters``, shared by the sinks and the API so the two cannot disagree."""
        return all(f.accepts(traits) for f in self.filters)


def _minimum(delta: IdentityDelta, subscription: Subscription, consent: dict[str, Any]) -> dict[str, Any]:
    """Ids, version and cause only (and the subscription's own consent): enough to delete a copy."""
    kept = {n: c for n, c in delta.changes.items() if subscription.purpose is not None and n == f"consent.{subscription.purpose}"}
    return _body(delta, subscription, kept, {"consent": consent} if consent else {})


def _body(delta: IdentityDelta, subscription: Subscription, changes: dict[str, FieldChange],
          profile: dict[str, Any]) -> dict[str, Any]:
    """The delta as JSON for ``subscription``, carrying ``changes`` and ``profile`` in place of its
    own: what the subscription may not see is never converted."""
    body: dict[str, Any] = msgspec.to_builtins(msgspec.structs.replace(delta, changes=changes, profile=profile))
    body["subscription"] = subscription.name
    return body


def _purpose_consent(delta: IdentityDelta, subscription: Subscription) -> dict[str, Any]:
    if subscription.purpose is None:
        return {}
    return {subscription.purpose: bool(delta.profile.get("consent", {}).get(subscription.purpose, False))}


def project(delta: IdentityDelta, subscription: Subscription) -> dict[str, Any] | None:
    """The delta as this subscription may see it, or None when it is not for this subscription.

    An update none of whose visible fields changed is not delivered: the scenario has no
    right to learn that something it cannot see has changed.

    Erasure reaches every subscription, whatever its kinds and filters: each must delete its
    copy. A subscription with a ``purpose`` sees a profile only while the customer consents to
    that purpose; without consent it gets the documented minimum — ids, version and cause, no
    traits or identifiers — and only when that consent was just withdrawn, so it stops and
    deletes; otherwise nothing.
    """
    consent = _purpose_consent(delta, subscription)
    if delta.kind == "profile.erased":
        return _minimum(delta, subscription, {})
    if subscription.purpose is not None and not consent[subscription.purpose]:
        withdrawn = delta.changes.get(f"consent.{subscription.purpose}")
        return _minimum(delta, subscription, consent) if withdrawn is not None and withdrawn.old else None
    if delta.kind not in subscription.kinds:
        return None
    if not subscription.accepts(delta.profile.get("traits", {})):
        return None
    visible = {f"consent.{p}" for p in consent}
    changes = {name: change for name, change in delta.changes.items() if subscription.allows(name) or name in visible}
    if delta.kind == "profile.updated" and not changes:
        return None
    profile = {
        section: {name: value for name, value in values.items() if subscription.allows(f"{section}.{name}")}
        for section, values in delta.profile.items() if section != "consent"
    }
    if consent:
        profile["consent"] = consent
    return _body(delta, subscription, changes, profile)


def project_notice(notice: TouchpointNotice, subscription: Subscription) -> dict[str, Any] | None:
    """A resolved touchpoint as this subscription may see it, or None when it did not ask for its type."""
    if notice.event_type not in subscription.event_types:
        return None
    if not subscription.accepts(notice.traits):
        return None
    body = notice.as_json()
    body["traits"] = {name: value for name, value in notice.traits.items() if subscription.allows(f"traits.{name}")}
    body["identifiers"] = {t: v for t, v in notice.identifiers.items() if subscription.allows(f"identifiers.{t}")}
    body["subscription"] = subscription.name
    return body


def parse_subscriptions(data: Any, source: str) -> list[Subscription]:
    """Subscriptions from a YAML document: a list, or a mapping with a ``subscriptions`` list."""
    if isinstance(data, dict):
        data = data.get("subscriptions")
    if not isinstance(data, list):
        raise SubscriptionError(f"{source}: expected a list of subscriptions (or 'subscriptions:' holding one)")
    subscriptions: list[Subscription] = []
    for index, item in enumerate(data):
        try:
            subscriptions.append(Subscription.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SubscriptionError(f"{source}: subscription #{index + 1}: {problems}") from None
    names = [s.name for s in subscriptions]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SubscriptionError(f"{source}: subscriptions declared twice: {', '.join(duplicated)}")
    return subscriptions


def load_subscriptions(path: str | Path) -> list[Subscription]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SubscriptionError(f"cannot read subscriptions file {path}: {exc.strerror}") from None
    try:
        return parse_subscriptions(yaml.safe_load(text), str(path))
    except yaml.YAMLError as exc:
        raise SubscriptionError(f"{path}: not valid YAML: {exc}") from None
