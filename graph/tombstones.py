"""What a tombstone keeps of an erased customer, and how an incoming event is checked against it.

A tombstone keeps keyed hashes only (:func:`identity.model.tombstone_hash`): of each identifier
key the customer held, of each of their profile ids (which are identifiers too, so a scenario
acting on a stale delta names one), and of each of their touchpoints' event ids. An event is
looked up by the same hashes of its own keys and id; nothing else about the person is needed.
"""

from __future__ import annotations

from typing import Iterable, Literal

from identity.events import PROFILE_ID_TYPE
from identity.features import PreparedEvent, identifier_key, split_key
from identity.model import tombstone_hash

Via = Literal["event", "profile", "identifier"]
#: Event ids are hashed with a prefix no identifier key can have (keys start with a type).
_EVENT_PREFIX = "\x1fevent\x1f"


def _via(key: str) -> Via:
    return "profile" if split_key(key)[0] == PROFILE_ID_TYPE else "identifier"


def erasure_hashes(secret: bytes, keys: Iterable[str], profile_ids: Iterable[str],
                   event_ids: Iterable[str]) -> list[tuple[str, Via]]:
    """(hash, via) for everything by which a replayed event could find the erased customer again."""
    found: dict[str, Via] = {}
    for key in [*keys, *(identifier_key(PROFILE_ID_TYPE, p) for p in profile_ids)]:
        found.setdefault(tombstone_hash(secret, key), _via(key))
    for event_id in event_ids:
        found.setdefault(tombstone_hash(secret, _EVENT_PREFIX + event_id), "event")
    return sorted(found.items())


def event_hashes(secret: bytes, prepared: PreparedEvent) -> list[str]:
    """The hashes to look an incoming event up by: its id and each of its identifier keys."""
    return [tombstone_hash(secret, _EVENT_PREFIX + prepared.event_id),
            *(tombstone_hash(secret, key) for key in prepared.identifier_keys)]
