import orjson
import pytest

from identity.events import MAX_EVENT_BYTES, MAX_NESTING, EventRejected, parse_event
from identity.features import prepare

VALID = {
    "event_id": "e-1",
    "scenario": "battery-recycling.site-intake",
    "type": "recycling_requested",
    "occurred_at": "2026-03-01T09:12:00+08:00",
    "identifiers": {"phone": "13800138000", "loyalty:card": "A-1"},
    "traits": {"name": "张伟"},
    "consent": {"marketing": True},
    "payload": {"battery_serial": "BT-1"},
}


def rejection(raw) -> EventRejected:
    with pytest.raises(EventRejected) as caught:
        parse_event(raw)
    return caught.value


def test_valid_event_round_trips_through_json():
    event = parse_event(orjson.dumps(VALID))
    assert parse_event(event.to_json()) == event
    assert event.schema_version == 1


def test_not_json_is_refused_as_not_json():
    error = rejection(b"{not json")
    assert error.reason_class == "not_json"
    assert "not valid JSON" in str(error)


def test_oversized_event_is_refused_before_parsing():
    error = rejection(b"{" + b" " * MAX_EVENT_BYTES + b"}")
    assert error.reason_class == "oversized"


def test_missing_field_is_named_by_path():
    raw = {k: v for k, v in VALID.items() if k != "scenario"}
    error = rejection(raw)
    assert error.reason_class == "schema"
    assert [e.path for e in error.errors] == ["scenario"]


def test_epoch_number_is_not_a_timestamp():
    error = rejection({**VALID, "occurred_at": "13800138000"})
    assert error.errors[0].path == "occurred_at" and "RFC 3339" in error.errors[0].reason


def test_timestamp_without_offset_is_refused():
    error = rejection({**VALID, "occurred_at": "2026-03-01T09:12:00"})
    assert error.errors[0].path == "occurred_at"
    assert "UTC offset" in error.errors[0].reason


def test_unknown_identifier_type_is_refused_but_namespaced_custom_types_are_accepted():
    error = rejection({**VALID, "identifiers": {"fax": "123"}})
    assert error.errors[0].path == "identifiers"
    assert "identifier #1 has an unknown type" in error.errors[0].reason
    assert parse_event({**VALID, "identifiers": {"shopify:customer_id": "42"}}).identifiers


def test_unknown_top_level_field_is_refused():
    error = rejection({**VALID, "colour": "blue"})
    assert error.errors[0].path == "colour"


def test_invalid_phone_is_refused_naming_field_and_region(rules):
    event = parse_event({**VALID, "identifiers": {"phone": "12345"}})
    with pytest.raises(EventRejected) as caught:
        prepare(event, rules)
    assert caught.value.reason_class == "invalid_identifier"
    assert str(caught.value) == "identifiers.phone: not a valid number for region CN"


def test_every_bad_identifier_is_reported_not_only_the_first(rules):
    event = parse_event({**VALID, "identifiers": {"phone": "12345", "email": "nobody"}})
    with pytest.raises(EventRejected) as caught:
        prepare(event, rules)
    assert sorted(e.path for e in caught.value.errors) == ["identifiers.email", "identifiers.phone"]


def test_unparseable_weak_trait_is_kept_out_of_matching_not_refused(rules):
    event = parse_event({**VALID, "traits": {"name": "张伟", "birth_date": "19851399"}})
    prepared = prepare(event, rules)
    assert "birth_date" not in prepared.features
    assert [e.path for e in prepared.unmatchable] == ["traits.birth_date"]


def test_identifiers_are_normalised_into_typed_keys(rules):
    prepared = prepare(parse_event(VALID), rules)
    assert prepared.identifier_keys == ("loyalty:card:A-1", "phone:+8613800138000")


def test_an_event_nesting_deeper_than_the_limit_is_refused_naming_the_field():
    deep: dict = {}
    for _ in range(MAX_NESTING + 1):
        deep = {"x": deep}
    with pytest.raises(EventRejected) as refused:
        parse_event({"event_id": "e", "scenario": "s", "type": "t", "occurred_at": "2026-01-01T00:00:00Z", "payload": deep})
    assert refused.value.as_dict()["errors"] == [{"path": "payload", "reason": f"nested more than {MAX_NESTING} levels deep"}]


def test_an_event_nesting_up_to_the_limit_is_accepted():
    deep: dict = {}
    for _ in range(MAX_NESTING - 1):
        deep = {"x": deep}
    assert parse_event({"event_id": "e", "scenario": "s", "type": "t", "occurred_at": "2026-01-01T00:00:00Z", "payload": deep})


@pytest.mark.parametrize("containers, accepted", [(MAX_NESTING - 1, True), (MAX_NESTING, False)])
def test_a_scalar_counts_as_one_level_below_its_container(containers, accepted):
    deep: object = "leaf"
    for _ in range(containers):
        deep = {"x": deep}
    event = {"event_id": "e", "scenario": "s", "type": "t", "occurred_at": "2026-01-01T00:00:00Z", "payload": deep}
    if accepted:
        assert parse_event(event)
    else:
        with pytest.raises(EventRejected, match="nested more than"):
            parse_event(event)


def test_the_same_event_stamped_at_another_time_has_the_same_digest_but_other_content_does_not():
    """A scenario acting again on a redelivered delta emits its event (same id) with a new time."""
    first = dict(VALID)
    again = first | {"occurred_at": "2030-01-01T00:00:00+00:00"}
    other = first | {"traits": {"city": "Elsewhere"}}
    assert parse_event(first).digest() == parse_event(again).digest()
    assert parse_event(first).digest() != parse_event(other).digest()
