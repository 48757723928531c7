"""Unsupervised estimation: m, u and the prior learned from unlabelled records."""

from collections import Counter

import numpy
import pytest

from identity.compare import score_pair
from identity.estimate import _counted, estimate
from identity.events import parse_event
from identity.features import prepare
from perf.synthetic import generate


def sample_features(rules, profile="typos", people=600):
    records, _ = generate(profile, people=people)
    return [
        prepare(parse_event({"event_id": rec_id, "scenario": "s", "type": "t",
                             "occurred_at": "2026-01-01T00:00:00Z", "traits": traits}), rules).features
        for rec_id, traits in records
    ]


@pytest.fixture(scope="module")
def learned(rules):
    return estimate(sample_features(rules), rules, random_pairs=20_000)


def level(rules, field, name):
    return next(c for c in rules.comparisons if c.field == field).levels[name]


def test_u_is_the_chance_two_random_records_agree_so_a_birth_date_is_rarer_than_a_family_name(learned):
    _, u_birth = level(learned.rules, "birth_date", "exact")
    _, u_family = level(learned.rules, "family_name", "exact")
    assert u_birth < 1 / 1000 < 1 / 50 < u_family


def test_a_comparison_the_sample_never_exercises_keeps_its_cold_start_probabilities(learned, rules):
    assert level(learned.rules, "company", "exact") == level(rules, "company", "exact")


def test_m_of_an_exact_family_name_is_learned_high_without_labels(learned):
    m, _ = level(learned.rules, "family_name", "exact")
    assert m > 0.7  # one duplicate in six has its family name mistyped


def test_the_learned_prior_is_the_share_of_matching_pairs_among_all_pairs(learned):
    records, links = generate("typos", people=600)
    true_share = len(links) / (len(records) * (len(records) - 1) / 2)
    assert true_share / 3 < learned.rules.prior < true_share * 3


def test_the_learned_prior_counts_the_matches_of_every_rule_on_namesake_heavy_data(rules):
    # Each rule's pass sees only its own pairs; the prior taken from one pass fell a fifth short
    # of the truth here, and every link lost that much evidence.
    records, links = generate("namesakes", people=1000)
    true_share = len(links) / (len(records) * (len(records) - 1) / 2)
    learned = estimate(sample_features(rules, "namesakes", people=1000), rules, random_pairs=20_000)
    assert 0.85 < learned.rules.prior / true_share < 1.15


def test_namesakes_with_different_birth_dates_score_below_review_under_a_learned_model(rules):
    model = estimate(sample_features(rules, "namesakes"), rules, random_pairs=20_000).rules
    a = {"given_name": "anna", "family_name": "müller", "city": "berlin", "birth_date": "1970-03-14"}
    b = {**a, "birth_date": "1988-11-02"}
    features = [prepare(parse_event({"event_id": i, "scenario": "s", "type": "t", "occurred_at": "2026-01-01T00:00:00Z",
                                     "traits": t}), model).features for i, t in (("a", a), ("b", b))]
    assert score_pair(*features, model).probability < model.thresholds.review


def test_a_blocking_pass_that_leaves_one_comparison_to_learn_teaches_it_nothing(rules):
    # Mentions carry a name and a workplace only: the pass blocked on the name leaves the
    # workplace alone, and EM there called every pair at one employer a match and the rest not,
    # learning that one inventor never names two employers.
    learned = estimate(sample_features(rules, "mentions"), rules, random_pairs=20_000).rules
    assert [level(learned, "workplace", name)[0] for name in ("exact", "other")] == \
        [level(rules, "workplace", name)[0] for name in ("exact", "other")]


def test_inventors_who_moved_employer_stay_linkable_under_a_model_learned_from_mentions(rules):
    model = estimate(sample_features(rules, "mentions"), rules, random_pairs=20_000).rules
    a = {"given_name": "anna", "family_name": "müller", "city": "berlin", "company": "braun technik"}
    b = {**a, "city": "essen", "company": "koch gmbh"}
    features = [prepare(parse_event({"event_id": i, "scenario": "s", "type": "t", "occurred_at": "2026-01-01T00:00:00Z",
                                     "traits": t}), model).features for i, t in (("a", a), ("b", b))]
    assert score_pair(*features, model).probability >= model.thresholds.review


def test_an_estimated_model_names_a_new_version_by_its_content(learned, rules):
    assert learned.rules.model_version != rules.model_version
    assert learned.rules.fingerprint == learned.rules.model_copy().fingerprint


def test_a_sample_without_candidate_pairs_is_refused_with_the_reason(rules):
    with pytest.raises(ValueError, match="no candidate pairs"):
        estimate([{"city": "berlin"}], rules)


@pytest.mark.parametrize("comparisons", [3, 45], ids=["one number per pattern", "too many comparisons for one number"])
def test_pairs_differing_only_in_their_last_comparison_are_counted_apart(comparisons):
    # A pattern is read as one 64-bit number with a digit (base 4: levels -1 to 2) per
    # comparison where that fits; 45 comparisons do not (4**44 wraps to 0), so they are counted
    # row by row, and a number that wrapped would count these two patterns as one.
    agreeing = numpy.zeros((3, comparisons), dtype=numpy.int16)
    agreeing[:, 0] = 2
    agreeing[2, -1] = -1
    assert _counted(agreeing) == Counter({(2, *[0] * (comparisons - 1)): 2, (2, *[0] * (comparisons - 2), None): 1})
