"""Turn a touchpoint event into what matching works on: identifier keys, features, blocking keys.

Features are the normalised, comparable form of the traits a rule set compares. They are
plain JSON values so a store can keep them beside each touchpoint and compare later
events against them without normalising again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Sequence, TypeVar

from identity.events import KNOWN_IDENTIFIER_TYPES, PROFILE_ID_TYPE, EventRejected, FieldError, TouchpointEvent
from identity.normalize import (
    InvalidIdentifier,
    normalize_address,
    normalize_company,
    normalize_date,
    normalize_identifier,
    normalize_name,
    normalize_text,
)
from identity.rules import Comparison, Rules

Features = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An accepted event with everything resolution needs computed once."""

    event: TouchpointEvent
    #: Normalised ``type:value`` keys, deduplicated, in a stable order.
    identifier_keys: tuple[str, ...]
    features: Features
    blocking_keys: tuple[str, ...]
    #: Traits left out of matching because they could not be normalised (kept on the profile as given).
    unmatchable: tuple[FieldError, ...] = ()
    #: :meth:`TouchpointEvent.digest`, recorded with the decision to tell a redelivery from an id reused.
    digest: str = ""
    #: One :func:`term_key` per term-frequency field the event carries: the values the store counts.
    term_keys: tuple[str, ...] = ()

    @property
    def event_id(self) -> str:
        return self.event.event_id


def identifier_key(type_: str, value: str) -> str:
    return f"{type_}:{value}"


def split_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`identifier_key`: known types have no colon, custom ones exactly one."""
    type_, _, value = key.partition(":")
    if type_ in KNOWN_IDENTIFIER_TYPES:
        return type_, value
    name, _, value = value.partition(":")
    return f"{type_}:{name}", value


def key_type(key: str) -> str:
    """The type half of :func:`split_key`; the commonest keys' types are read without splitting."""
    head = key.partition(":")[0]
    return head if head in KNOWN_IDENTIFIER_TYPES else split_key(key)[0]


def identifiers_by_type(keys: Iterable[str]) -> dict[str, list[str]]:
    """Identifier values grouped by type, as people and scenarios see them.

    A profile's own ids (``idgraph:profile``) are how it is found, not data about the
    customer, so they are left out.
    """
    grouped: dict[str, list[str]] = {}
    for key in sorted(keys):
        type_, value = split_key(key)
        if type_ != PROFILE_ID_TYPE:
            grouped.setdefault(type_, []).append(value)
    return grouped


def _feature(comparison: Comparison, raw: Any) -> Any:
    """The comparable form of one trait value, or None when nothing usable remains."""
    text = str(raw).strip()
    if not text:
        return None
    if comparison.kind == "name":
        form = normalize_name(text)
        if form is None:
            return None
        return {"text": form.text, "latin": form.latin, "tokens": " ".join(form.tokens), "phonetic": " ".join(form.phonetic)}
    if comparison.kind == "date":
        return normalize_date(text)
    if comparison.kind == "company":
        return normalize_company(text)
    if comparison.kind == "code":
        return normalize_text(text).replace(" ", "") or None
    if comparison.field == "address":
        return normalize_address(text)
    return normalize_text(text) or None


def _full_name(traits: dict[str, Any]) -> str | None:
    """A full name made of given and family names, for comparing with a record that has only a
    full name; where both records have the parts, the rule's ``when_missing`` skips it."""
    given, family = traits.get("given_name"), traits.get("family_name")
    if isinstance(given, str) and isinstance(family, str) and given.strip() and family.strip():
        return f"{given.strip()} {family.strip()}"
    return None


def _workplace(traits: dict[str, Any]) -> str | None:
    """Employer and city as one value: colleagues share both, so agreeing on the two together
    is one piece of evidence, not two; where both records have it, ``when_missing`` skips the parts.
    The employer's legal form goes before the city is added: behind the city it would no longer
    be at the end of the name, where it is dropped ('Acme Ltd' and 'ACME Limited' agree)."""
    company, city = traits.get("company"), traits.get("city")
    if not (isinstance(company, str) and isinstance(city, str) and city.strip()):
        return None
    employer = normalize_company(company)
    return f"{employer} {city.strip()}" if employer else None


def extract_features(event: TouchpointEvent, rules: Rules) -> tuple[Features, list[FieldError]]:
    features: Features = {}
    errors: list[FieldError] = []
    for comparison in rules.comparisons:
        raw = event.traits.get(comparison.field)
        if raw is None and comparison.field == "name":
            raw = _full_name(event.traits)
        if raw is None and comparison.field == "workplace":
            raw = _workplace(event.traits)
        if raw is None or isinstance(raw, bool):
            continue
        try:
            value = _feature(comparison, raw)
        except ValueError as exc:
            errors.append(FieldError(path=f"traits.{comparison.field}", reason=str(exc)))
            continue
        if value is not None:
            features[comparison.field] = value
    return features, errors


def _normalise_identifiers(event: TouchpointEvent, rules: Rules) -> tuple[list[str], list[FieldError]]:
    keys: list[str] = []
    errors: list[FieldError] = []
    norm = rules.normalization_rules
    for type_, raw in event.identifier_pairs():
        try:
            key = identifier_key(type_, normalize_identifier(type_, raw, norm))
        except InvalidIdentifier as exc:
            errors.append(FieldError(path=f"identifiers.{type_}", reason=str(exc)))
            continue
        if key not in keys:
            keys.append(key)
    return keys, errors


#: Rank of identifier types by how stable they are for one customer, most stable first.
_PARTITION_KEY_RANK = {type_: rank for rank, type_ in enumerate(
    ("national_id", "crm_id", "phone", "email", "wechat_openid", "device_id"))}


def _precedence(pair: tuple[str, str]) -> tuple[int, str, str]:
    type_, raw = pair
    return _PARTITION_KEY_RANK.get(type_, len(_PARTITION_KEY_RANK)), type_, raw


def partition_key(event: TouchpointEvent, rules: Rules) -> bytes | None:
    """The record key a producer gives an event so that one customer's events stay in order.

    The order idgraph promises: events produced with the same key go to one partition and are
    resolved in the order they were produced; events with different keys (or none) are
    causally independent and may be resolved in either order. The key is the event's most
    stable valid identifier, normalised (``+86 139…`` and ``139…`` are one key), so two events
    that share it keep their order. Events without one are keyed by the profile that caused
    them, if any, else get no key. An identifier key is a digest: no personal identifier is
    written in clear into a record key.
    """
    norm = rules.normalization_rules
    for type_, raw in sorted(event.identifier_pairs(), key=_precedence):
        try:
            return _digest(identifier_key(type_, normalize_identifier(type_, raw, norm)))
        except InvalidIdentifier:
            continue
    if event.causation is not None and event.causation.profile_id:
        return event.causation.profile_id.encode()  # as the scenario runtime keys what it emits
    return None


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest().encode()


def blocking_value(features: Features, name: str) -> str | None:
    """One blocking component: ``field`` or ``field.phonetic`` / ``field.year`` of a feature."""
    field, part = _component(name)
    value = features.get(field)
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get(part or "tokens") or None
    if part == "year":
        return str(value)[:4]
    return str(value)


@lru_cache(maxsize=256)
def _component(name: str) -> tuple[str, str]:
    """``field.part`` split once per rule component, not once per event."""
    field, _, part = name.partition(".")
    return field, part


#: Longest blocking key kept as written, in UTF-8 bytes. Keys are only compared for equality
#: and every store indexes them, but an index refuses long keys (Neo4j's range index at about
#: 8 kB) and a free-text trait can be longer: a longer key is replaced by a digest of itself.
MAX_BLOCKING_KEY_BYTES = 512


@lru_cache(maxsize=256)
def blocking_rule_id(rule: tuple[str, ...]) -> str:
    """The name a blocking rule's keys carry: ``b.`` and 8 hex of a digest of its components.

    Named by content, not by position in the rule file, so reordering, inserting or deleting
    a rule leaves every other rule's stored keys meaning what they meant.
    """
    return "b." + hashlib.blake2b("|".join(rule).encode(), digest_size=4).hexdigest()


def blocking_signature(rules: Rules) -> str:
    """The blocking rule set as stores record it: its rule ids, sorted. Another signature means
    stored records lack some rule's keys, or carry keys of a rule no longer read."""
    return ",".join(sorted(blocking_rule_id(rule) for rule in rules.blocking))


def blocking_keys(features: Features, rules: Rules) -> tuple[str, ...]:
    keys: list[str] = []
    for rule in rules.blocking:
        parts: list[str] = []
        for name in rule:
            part = blocking_value(features, name)
            if not part:
                break  # a rule applies only when every component is there; the rest need not be read
            parts.append(part)
        else:
            keys.append(_bounded(f"{blocking_rule_id(rule)}:" + "|".join(parts)))
    return tuple(keys)


def _bounded(key: str) -> str:
    """The key, or its rule id, ``:#`` and a digest of it when it is longer than the stores can index."""
    raw = key.encode()
    if len(raw) <= MAX_BLOCKING_KEY_BYTES:
        return key
    rule, _, _ = key.partition(":")
    return f"{rule}:#{hashlib.blake2b(raw, digest_size=16).hexdigest()}"


def term_key(field: str, value: Any) -> str:
    """What the store counts for a field's value: ``field:value`` (a name by its exact form, the
    text its exact level compares), bounded like a blocking key. :func:`term_field` inverts it."""
    text = value["text"] if isinstance(value, dict) else str(value)
    return _bounded(f"{field}:{text}")


def term_field(key: str) -> str:
    return key.partition(":")[0]


def term_keys(features: Features, rules: Rules) -> tuple[str, ...]:
    return tuple(term_key(f, features[f]) for f in rules.term_frequency_fields if f in features)


def brought_by_each(touchpoints: Iterable[tuple[str, Sequence[str]]], held: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """For touchpoints given as (profile id, term keys) in the order they were stored, the keys
    each brings to its profile: neither in ``held`` (each profile's counted keys, which this
    updates) nor brought by an earlier one. A value is counted once per profile that carries it
    (:func:`identity.plan.terms_brought`); this is how a backfill does it for stored touchpoints."""
    brought = []
    for profile_id, keys in touchpoints:
        mine = held.setdefault(profile_id, set())
        new = tuple(k for k in keys if k not in mine)
        mine.update(new)
        brought.append(new)
    return brought


_Record = TypeVar("_Record")


def rarest_first(found: Sequence[tuple[str, Sequence[_Record]]], per_event: int, id_of: Callable[[_Record], str]) -> list[_Record]:
    """The candidate records of an event's blocking keys, the rarest key's first, at most
    ``per_event`` distinct ones: a key shared by few records says most about who this is, and
    a common one (a frequent name in a big city) must not crowd it out, however large the
    graph grows. ``found`` holds each key's records as read (already capped per key)."""
    chosen: dict[str, _Record] = {}
    for _, records in sorted(found, key=lambda item: len(item[1])):
        for record in records:
            if len(chosen) >= per_event:
                return list(chosen.values())
            chosen.setdefault(id_of(record), record)
    return list(chosen.values())


def prepare(event: TouchpointEvent, rules: Rules) -> PreparedEvent:
    """Normalise an event; raise :class:`EventRejected` naming every identifier that is bad.

    A bad identifier refuses the event, because identifiers link profiles exactly. A weak
    trait that cannot be normalised (a mistyped birth date on a form) does not: the touchpoint
    is still worth keeping, so the trait is left out of matching and named in the decision.
    """
    keys, id_errors = _normalise_identifiers(event, rules)
    if id_errors:
        raise EventRejected("invalid_identifier", id_errors)
    if event.causation is not None and event.causation.profile_id:
        hint = identifier_key(PROFILE_ID_TYPE, event.causation.profile_id)
        if hint not in keys:
            keys.append(hint)
    features, trait_errors = extract_features(event, rules)
    return PreparedEvent(
        event=event,
        identifier_keys=tuple(keys),
        features=features,
        blocking_keys=blocking_keys(features, rules),
        unmatchable=tuple(trait_errors),
        digest=event.digest(),
        term_keys=term_keys(features, rules),
    )
