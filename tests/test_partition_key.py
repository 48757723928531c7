"""Record keys that keep one customer's events in order (the order idgraph promises)."""

from identity.features import partition_key
from tests.conftest import make_event


def test_two_spellings_of_one_phone_give_one_key(rules):
    local = make_event({"phone": "139 0000 0001"})
    international = make_event({"phone": "+86 13900000001"})
    assert partition_key(local, rules) == partition_key(international, rules) is not None


def test_the_most_stable_identifier_decides_the_key(rules):
    with_phone = make_event({"crm_id": "c-7", "phone": "13900000001"})
    crm_only = make_event({"crm_id": "C-7"})
    assert partition_key(with_phone, rules) == partition_key(crm_only, rules)


def test_different_customers_get_different_keys(rules):
    assert partition_key(make_event({"phone": "13900000001"}), rules) != partition_key(make_event({"phone": "13900000002"}), rules)


def test_the_key_does_not_carry_the_identifier_in_clear(rules):
    key = partition_key(make_event({"email": "wei.zhang@example.com"}), rules)
    assert key is not None and b"example" not in key and b"zhang" not in key


def test_an_invalid_identifier_is_passed_over_for_the_next_valid_one(rules):
    bad_phone = make_event({"phone": "12", "email": "wei@example.com"})
    assert partition_key(bad_phone, rules) == partition_key(make_event({"email": "wei@example.com"}), rules)


def test_an_event_caused_by_a_scenario_is_keyed_by_its_profile(rules):
    caused = make_event(causation={"event_id": "e-1", "profile_id": "p-42"})
    assert partition_key(caused, rules) == b"p-42"


def test_an_event_with_nothing_to_key_by_gets_no_key(rules):
    assert partition_key(make_event(), rules) is None
