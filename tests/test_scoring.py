import math

import pytest

from identity.compare import match_probability, score_pair
from identity.events import parse_event
from identity.features import MAX_BLOCKING_KEY_BYTES, blocking_keys, extract_features
from identity.rules import RulesError, load_rules


def features(rules, **traits):
    event = parse_event({"event_id": "x", "scenario": "s", "type": "t", "occurred_at": "2026-01-01T00:00:00Z", "traits": traits})
    found, errors = extract_features(event, rules)
    assert not errors
    return found


def levels(score):
    return {f.field: f.level for f in score.fields}


def test_traditional_simplified_and_pinyin_names_compare_as_romanised_equal(rules):
    a = features(rules, name="张伟")
    assert levels(score_pair(a, features(rules, name="張偉"), rules))["name"] == "exact"
    assert levels(score_pair(a, features(rules, name="Zhang Wei"), rules))["name"] == "romanised"
    assert levels(score_pair(a, features(rules, name="Wei Zhang"), rules))["name"] == "romanised"


def test_one_letter_typo_in_a_name_is_close_not_exact(rules):
    score = score_pair(features(rules, family_name="neumann"), features(rules, family_name="neuman"), rules)
    assert levels(score)["family_name"] == "close"


def test_swapped_day_and_month_count_as_one_edit(rules):
    score = score_pair(features(rules, birth_date="1985-04-12"), features(rules, birth_date="1985-12-04"), rules)
    assert levels(score)["birth_date"] == "one_edit"


def test_code_levels_count_edits(rules):
    a = features(rules, postcode="4223")
    assert levels(score_pair(a, features(rules, postcode="4223"), rules))["postcode"] == "exact"
    assert levels(score_pair(a, features(rules, postcode="4232"), rules))["postcode"] == "one_edit"
    assert levels(score_pair(a, features(rules, postcode="4556"), rules))["postcode"] == "other"


def test_field_missing_on_either_side_contributes_nothing(rules):
    score = score_pair(features(rules, name="张伟"), features(rules, city="上海"), rules)
    assert score.fields == ()
    assert score.weight == pytest.approx(rules.prior_weight)


def test_full_name_is_not_compared_when_both_sides_have_given_and_family_names(rules):
    a = features(rules, name="anna smith", given_name="anna", family_name="smith")
    b = features(rules, name="anna smith", given_name="anna", family_name="smith")
    assert set(levels(score_pair(a, b, rules))) == {"given_name", "family_name"}


def test_weight_is_prior_plus_log2_m_over_u_of_each_level(rules):
    score = score_pair(features(rules, birth_date="1985-04-12"), features(rules, birth_date="1985-04-12"), rules)
    m, u = next(c for c in rules.comparisons if c.field == "birth_date").levels["exact"]
    assert score.weight == pytest.approx(math.log2(rules.prior / (1 - rules.prior)) + math.log2(m / u))


def test_agreement_raises_and_disagreement_lowers_the_probability(rules):
    base = features(rules, name="john smith", birth_date="1980-01-01", city="london")
    same = score_pair(base, features(rules, name="john smith", birth_date="1980-01-01", city="london"), rules)
    other = score_pair(base, features(rules, name="mary jones", birth_date="1961-07-30", city="leeds"), rules)
    assert same.probability > 0.99
    assert other.probability < 0.01


def test_match_probability_is_logistic_in_base_two():
    assert match_probability(0) == 0.5
    assert match_probability(1) == pytest.approx(2 / 3)
    assert match_probability(1000) == 1.0


def test_rule_file_with_missing_levels_is_refused_with_reason(tmp_path):
    path = tmp_path / "rules.yaml"
    text = load_rules().to_yaml().replace("one_edit:", "typo:", 1)
    path.write_text(text)
    with pytest.raises(RulesError, match="needs levels"):
        load_rules(path)


def test_rules_round_trip_through_yaml(tmp_path, rules):
    path = tmp_path / "rules.yaml"
    path.write_text(rules.to_yaml())
    assert load_rules(path) == rules


def test_blocking_key_longer_than_a_store_can_index_becomes_a_digest_of_itself(rules):
    long = {"company": "x" * 9000, "city": "shanghai"}
    (key,) = blocking_keys(long, rules)
    assert key.startswith("b6:#") and len(key.encode()) < MAX_BLOCKING_KEY_BYTES
    assert blocking_keys(dict(long), rules) == (key,)
    assert blocking_keys({**long, "company": "y" * 9000}, rules) != (key,)
    assert blocking_keys({"company": "acme", "city": "shanghai"}, rules) == ("b6:acme|shanghai",)
