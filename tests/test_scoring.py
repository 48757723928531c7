import hashlib
import math

import pytest
from hypothesis import given, settings, strategies as st
from pydantic import ValidationError

from identity.compare import EventScorer, comparator_level, comparator_levels, match_probability, score_pair
from identity.events import parse_event
from identity.features import MAX_BLOCKING_KEY_BYTES, blocking_keys, blocking_rule_id, blocking_signature, extract_features
from identity.rules import Rules, RulesError, load_rules


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


def test_a_wrong_first_letter_in_a_name_is_as_close_as_any_other_typo(rules):
    score = score_pair(features(rules, family_name="Meyer"), features(rules, family_name="Neyer"), rules)
    assert levels(score)["family_name"] == "close"


def test_one_letter_of_a_short_name_is_not_a_typo_but_likely_another_name(rules):
    score = score_pair(features(rules, given_name="Wei"), features(rules, given_name="Wen"), rules)
    assert levels(score)["given_name"] != "close"


def given_level(rules, a, b):
    return levels(score_pair(features(rules, given_name=a), features(rules, given_name=b), rules))["given_name"]


@pytest.mark.parametrize("a, b", [("John Alan", "John"), ("John A.", "John Alan"), ("J. Alan", "John Alan")])
def test_a_name_with_or_without_a_middle_name_or_initial_is_close(rules, a, b):
    assert given_level(rules, a, b) == "close"


def test_an_initial_alone_is_similar_to_a_name_it_begins(rules):
    assert given_level(rules, "J.", "John") == "similar"


@pytest.mark.parametrize("a, b", [("K.", "John"), ("John Alan", "John Adam"), ("Alan John", "John A."), ("Anna Maria", "Maria")])
def test_initials_and_names_that_do_not_agree_in_order_are_no_shortening(rules, a, b):
    assert given_level(rules, a, b) not in ("exact", "romanised", "close")


@pytest.mark.parametrize("field, a, b", [("name", "John", "John Smith"), ("name", "张", "张伟"), ("family_name", "Smith", "Smith Jones")])
def test_only_given_names_count_a_word_dropped_as_a_shortening(rules, field, a, b):
    """A full name's dropped word may be the family name: John is not close to John Smith."""
    assert levels(score_pair(features(rules, **{field: a}), features(rules, **{field: b}), rules))[field] != "close"


def test_a_rule_file_marking_a_non_name_comparison_shortened_is_refused(rules):
    data = rules.model_dump(mode="json")
    data["comparisons"] = [{**c, "shortened": c["field"] == "city"} for c in data["comparisons"]]
    with pytest.raises(ValidationError, match="shortened applies to names only"):
        Rules.model_validate(data)


def date_level(rules, a, b):
    return levels(score_pair(features(rules, birth_date=a), features(rules, birth_date=b), rules))["birth_date"]


def test_swapped_day_and_month_count_as_a_transposition(rules):
    assert date_level(rules, "1985-04-12", "1985-12-04") == "transposed"


def test_two_adjacent_digits_swapped_in_one_date_part_count_as_a_transposition(rules):
    assert date_level(rules, "1985-04-12", "1958-04-12") == "transposed"
    assert date_level(rules, "1985-04-12", "1985-04-21") == "transposed"


def test_one_wrong_date_part_is_one_part(rules):
    assert date_level(rules, "1985-04-12", "1986-04-12") == "one_part"
    assert date_level(rules, "1985-04-12", "1985-07-12") == "one_part"
    assert date_level(rules, "1985-04-12", "1985-04-19") == "one_part"


def test_two_wrong_date_parts_are_another_date(rules):
    assert date_level(rules, "1985-04-12", "1985-09-30") == "other"


def test_a_different_birth_date_is_strong_evidence_against(rules):
    weights = next(c for c in rules.comparisons if c.field == "birth_date").weights
    assert weights["other"] < -5


def test_the_cold_start_model_does_not_link_namesakes_born_on_other_days(rules):
    # Before any model is learned: a shared name and city must not outweigh another birth date.
    anna = dict(given_name="Anna", family_name="Müller", city="Berlin")
    score = score_pair(features(rules, **anna, birth_date="1970-03-14"), features(rules, **anna, birth_date="1988-11-02"), rules)
    assert score.probability < rules.thresholds.link


def test_a_level_a_comparison_leaves_out_counts_as_the_next_weaker_it_keeps(rules):
    comparisons = [c.model_dump() for c in rules.comparisons]
    for c in comparisons:
        if c["field"] == "birth_date":
            del c["levels"]["transposed"]
    pruned = rules.model_copy(update=dict(comparisons=comparisons))
    assert date_level(pruned, "1985-04-12", "1985-12-04") == "one_part"


def test_comparator_thresholds_come_from_the_rule_file(rules):
    a, b = features(rules, family_name="hoffmann"), features(rules, family_name="hofman")  # two typos
    assert levels(score_pair(a, b, rules))["family_name"] == "close"
    strict = rules.model_copy(update=dict(comparators={**rules.comparators.model_dump(), "name": {"close": 0.99, "similar": 0.98}}))
    assert levels(score_pair(a, b, strict))["family_name"] == "other"


def test_changing_a_threshold_changes_the_model_version(rules):
    changed = rules.model_copy(update=dict(comparators={**rules.comparators.model_dump(), "text": {"close": 0.95, "similar": 0.75}}))
    assert changed.version == rules.version
    assert changed.model_version != rules.model_version


def test_a_copy_derives_its_model_version_afresh_after_the_original_cached_its_own(rules):
    cached = rules.model_version
    stricter = rules.model_copy(update={"thresholds": {**rules.thresholds.model_dump(), "link": 0.99}})
    assert stricter.model_version != cached
    assert stricter.model_version == Rules.model_validate(stricter.model_dump()).model_version


def test_a_copy_is_validated_like_a_loaded_rule_file(rules):
    with pytest.raises(ValidationError, match="prior"):
        rules.model_copy(update={"prior": 2.0})


def test_a_full_name_is_compared_with_given_and_family_names_when_one_side_has_only_the_full_name(rules):
    a = features(rules, given_name="anna", family_name="smith")
    score = score_pair(a, features(rules, name="Anna Smith"), rules)
    assert levels(score) == {"name": "exact"}


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


def test_employer_and_city_are_one_piece_of_evidence_when_both_sides_have_both(rules):
    a = features(rules, company="Acme GmbH", city="Köln")
    assert set(levels(score_pair(a, features(rules, company="Acme GmbH", city="Köln"), rules))) == {"workplace"}


def test_a_workplace_agrees_whatever_legal_form_the_employer_is_written_with(rules):
    a = features(rules, company="Acme Ltd", city="Köln")
    assert levels(score_pair(a, features(rules, company="ACME Limited", city="Köln"), rules)) == {"workplace": "exact"}
    zh = features(rules, company="腾讯科技有限公司", city="深圳")
    assert levels(score_pair(zh, features(rules, company="腾讯科技", city="深圳"), rules)) == {"workplace": "exact"}


def test_employer_and_city_are_compared_apart_when_one_side_lacks_one(rules):
    a = features(rules, company="Acme GmbH", city="Köln")
    assert set(levels(score_pair(a, features(rules, city="Köln"), rules))) == {"city"}


_TRAITS = {"name": "anna smith", "given_name": "anna", "family_name": "smith", "company": "Acme GmbH",
           "city": "Köln", "birth_date": "1980-01-02"}


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from(sorted(_TRAITS))), st.sets(st.sampled_from(sorted(_TRAITS))))
def test_which_comparisons_apply_does_not_depend_on_which_side_is_the_event(rules, a_traits, b_traits):
    """An event's side is worked out once for all its candidates; a record's missing fields still count."""
    a = features(rules, **{t: _TRAITS[t] for t in a_traits})
    b = features(rules, **{t: _TRAITS[t] for t in b_traits})
    applied = {f.field for f in EventScorer(a, rules).evidence(b)}
    assert applied == {f.field for f in EventScorer(b, rules).evidence(a)}
    assert applied <= a.keys() & b.keys()


_NAMES = st.text(alphabet="abeimnrsé张伟 -", min_size=1, max_size=9)
_CODES = st.text(alphabet="0123", min_size=1, max_size=5)
_TRAIT_VALUES = {"given_name": _NAMES, "family_name": _NAMES, "name": _NAMES, "company": _NAMES, "city": _NAMES,
                 "postcode": _CODES, "birth_date": st.dates().map(lambda d: d.isoformat()),
                 "address": st.text(alphabet="ab 12", min_size=1, max_size=12)}


@st.composite
def _near(draw, values):
    """Two values of one trait: the same, one edit apart (the levels between exact and other), one
    shortened (a word dropped or cut to its initial), or unrelated."""
    a = draw(values)
    how = draw(st.sampled_from(["same", "edit", "swap", "shorten", "other"]))
    if how == "same":
        return a, a
    if how == "shorten" and len(words := a.split()) > 1:
        i = draw(st.integers(0, len(words) - 1))
        return a, " ".join(words[:i] + draw(st.sampled_from([[], [words[i][0]]])) + words[i + 1:])
    if how == "other" or len(a) < 2:
        return a, draw(values)
    i = draw(st.integers(0, len(a) - 2))
    if how == "swap":
        return a, a[:i] + a[i + 1] + a[i] + a[i + 2:]
    return a, a[:i] + draw(st.sampled_from("aeé伟0")) + a[i + 1:]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries({}, optional={t: _near(v) for t, v in _TRAIT_VALUES.items()}), max_size=25))
def test_levels_of_many_pairs_at_once_are_those_of_each_pair_alone(rules, pairs):
    """Learning compares its pairs in bulk; it must see the levels that resolution sees."""
    held = [tuple(extract_features(parse_event(_event({t: v[side] for t, v in pair.items()})), rules)[0] for side in (0, 1))
            for pair in pairs]
    for c in rules.comparisons:
        both = [(a[c.field], b[c.field]) for a, b in held if c.field in a and c.field in b]
        alone = [comparator_level(c, x, y, rules) for x, y in both]
        assert comparator_levels(c, [x for x, _ in both], [y for _, y in both], rules) == alone


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({}, optional={t: _near(v) for t, v in _TRAIT_VALUES.items()}))
def test_a_pair_compares_at_the_same_level_whichever_side_is_the_event(rules, pair):
    """Whether a record arrived first or second must not change how alike it is to the other."""
    a, b = (extract_features(parse_event(_event({t: v[side] for t, v in pair.items()})), rules)[0] for side in (0, 1))
    for c in rules.comparisons:
        if c.field in a and c.field in b:
            assert comparator_level(c, a[c.field], b[c.field], rules) == comparator_level(c, b[c.field], a[c.field], rules)


_TRAITS_NEAR = st.fixed_dictionaries({}, optional={t: st.sampled_from(["anna", "anne", "anna maria", "张伟", "1980-01-02"])
                                                    for t in _TRAIT_VALUES})


@settings(max_examples=100, deadline=None)
@given(_TRAITS_NEAR, st.lists(_TRAITS_NEAR, max_size=12))
def test_a_candidate_scores_the_same_after_others_as_alone(rules, event, candidates):
    """An event's scorer keeps the evidence of values it compared; it must not carry over wrongly."""
    mine = extract_features(parse_event(_event(event)), rules)[0]
    theirs = [extract_features(parse_event(_event(c)), rules)[0] for c in candidates]
    scorer = EventScorer(mine, rules)
    assert [scorer.score(t) for t in theirs] == [score_pair(mine, t, rules) for t in theirs]


def _event(traits):
    return {"event_id": "x", "scenario": "s", "type": "t", "occurred_at": "2026-01-01T00:00:00Z", "traits": traits}


def test_colleagues_sharing_a_given_name_are_not_linked_on_their_workplace(rules):
    # Colleagues share employer and city; counted as two agreements, they outweighed another family name.
    anna = dict(given_name="Anna", company="Acme GmbH", city="Köln")
    score = score_pair(features(rules, **anna, family_name="Schmidt"), features(rules, **anna, family_name="Okafor"), rules)
    assert score.probability < rules.thresholds.link


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
    text = load_rules().to_yaml().replace("exact:", "identical:", 1)
    path.write_text(text)
    with pytest.raises(RulesError, match="needs levels"):
        load_rules(path)


def test_rules_round_trip_through_yaml(tmp_path, rules):
    path = tmp_path / "rules.yaml"
    path.write_text(rules.to_yaml())
    assert load_rules(path) == rules


def test_blocking_key_longer_than_a_store_can_index_becomes_a_digest_of_itself(rules):
    long = {"company": "x" * 9000, "city": "shanghai"}
    rule = blocking_rule_id(("company", "city"))
    (key,) = blocking_keys(long, rules)
    assert key.startswith(f"{rule}:#") and len(key.encode()) < MAX_BLOCKING_KEY_BYTES
    assert blocking_keys(dict(long), rules) == (key,)
    assert blocking_keys({**long, "company": "y" * 9000}, rules) != (key,)
    assert blocking_keys({"company": "acme", "city": "shanghai"}, rules) == (f"{rule}:acme|shanghai",)


def test_blocking_key_is_named_by_a_digest_of_its_rules_components():
    expected = "b." + hashlib.blake2b(b"company|city", digest_size=4).hexdigest()
    assert blocking_rule_id(("company", "city")) == expected and len(expected) == 10


def test_blocking_keys_keep_their_names_when_rules_are_reordered_inserted_or_deleted(rules):
    features = {"company": "acme", "city": "shanghai", "postcode": "200000",
                "family_name": {"phonetic": "ZN", "tokens": "zhang"}}
    reordered = rules.model_copy(update=dict(blocking=[("family_name.phonetic", "postcode"), *reversed(rules.blocking)]))
    fewer = rules.model_copy(update=dict(blocking=[("company", "city")]))
    assert set(blocking_keys(features, reordered)) == set(blocking_keys(features, rules))
    assert set(blocking_keys(features, fewer)) <= set(blocking_keys(features, rules))


def test_blocking_signature_is_the_rule_set_not_its_order(rules):
    assert blocking_signature(rules.model_copy(update=dict(blocking=list(reversed(rules.blocking))))) == blocking_signature(rules)
    assert blocking_signature(rules.model_copy(update=dict(blocking=rules.blocking[1:]))) != blocking_signature(rules)


def test_candidates_come_from_the_rarest_blocking_key_first_up_to_the_cap_per_event():
    from identity.features import rarest_first

    found = [("b0:common", ["c1", "c2", "c3", "c4"]), ("b1:rare", ["r1"]), ("b2:middling", ["m1", "c1"])]
    assert rarest_first(found, 3, str) == ["r1", "m1", "c1"]
    assert rarest_first(found, 10, str) == ["r1", "m1", "c1", "c2", "c3", "c4"]


def test_no_default_blocking_rule_only_finds_pairs_another_rule_finds(rules):
    # A rule over a superset of another's fields finds a subset of its pairs: it costs a read
    # per event and a row per record and adds no recall.
    for rule in rules.blocking:
        narrower = [other for other in rules.blocking if other != rule and set(other) <= set(rule)]
        assert not narrower, f"{rule} finds only pairs {narrower} already finds"


def family_counts(counts: dict[str, int]):
    from identity.model import FieldTerms, TermCounts
    records = sum(counts.values())
    return TermCounts({f"family_name:{v}": n for v, n in counts.items()},
                      {"family_name": FieldTerms(records, sum(n * n for n in counts.values()))})


def family_weight(rules, value, counts):
    from identity.compare import term_weights
    return term_weights(features(rules, family_name=value), family_counts(counts), rules).get("family_name")


def test_exact_agreement_on_a_rare_value_weighs_more_than_on_a_common_one(rules):
    counts = {"smith": 50, "jones": 30, "okonkwo": 1, "zielinski": 1}
    level = rules.comparisons[1].weights["exact"]
    assert family_weight(rules, "okonkwo", counts).weight > level > family_weight(rules, "smith", counts).weight


def test_values_all_equally_common_keep_the_levels_weight(rules):
    adjusted = family_weight(rules, "smith", {"smith": 1, "jones": 1, "okonkwo": 1})
    assert adjusted.weight == pytest.approx(rules.comparisons[1].weights["exact"])
    assert adjusted.frequency == pytest.approx(1 / 3)


def test_adjusted_u_never_falls_below_the_floor(rules):
    counts = {"okonkwo": 0, "smith": 10**9}
    m, _ = rules.comparisons[1].levels["exact"]
    assert family_weight(rules, "okonkwo", counts).weight == pytest.approx(math.log2(m / rules.term_frequency.min_u))


def test_a_field_without_term_frequency_or_counts_keeps_the_levels_weight(rules):
    from identity.compare import term_weights
    from identity.model import TermCounts
    assert term_weights(features(rules, family_name="smith", birth_date="1980-01-01"), TermCounts(), rules) == {}


def test_declaring_term_frequency_changes_the_model_version(rules):
    comparisons = [c.model_copy(update={"term_frequency": False}) for c in rules.comparisons]
    assert rules.model_copy(update=dict(comparisons=comparisons)).model_version != rules.model_version
