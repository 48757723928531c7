"""Every decision is explainable: the record and its rendering for a person."""

from identity.explain import render_decision
from tests.conftest import make_event


async def test_decision_record_carries_action_confidence_evidence_and_model_version(engine, store, rules):
    await engine.resolve(make_event({"email": "ann@example.com"}, {"name": "Ann Lee", "city": "Leeds", "birth_date": "1980-02-03"}))
    outcome = await engine.resolve(make_event({"crm_id": "c-1"}, {"name": "Anne Lee", "city": "Leeds", "birth_date": "1980-02-03"}))
    record = await store.decision(outcome.event_id)
    assert record["action"] == "link"
    assert record["rule_version"] == rules.model_version
    assert 0.95 <= record["confidence"] <= 1
    (best, *_) = record["evidence"]["candidates"]
    assert {f["field"]: f["level"] for f in best["fields"]} == {"name": "close", "city": "exact", "birth_date": "exact"}
    assert best["probability"] == round(record["confidence"], 6)


async def test_rendered_explanation_names_the_action_the_fields_and_their_weights(engine, store):
    first = await engine.resolve(make_event({"phone": "13800138000"}))
    await engine.resolve(make_event({"email": "zw@example.com"}))
    bridge = await engine.resolve(make_event({"phone": "13800138000", "email": "zw@example.com"}))
    text = render_decision(await store.decision(bridge.event_id))
    assert f"merged profiles -> {first.profile_id}" in text
    assert "Merged into it:" in text
    assert "identifiers      match       +19.86" in text


async def test_explanation_masks_identifier_values(engine, store):
    outcome = await engine.resolve(make_event({"phone": "13800138000", "email": "secret.person@example.com"}))
    text = render_decision(await store.decision(outcome.event_id))
    assert "13800138000" not in text and "secret.person" not in text
    assert "phone:+8***00" in text


async def test_unmatchable_trait_is_named_in_the_explanation(engine, store):
    outcome = await engine.resolve(make_event({"crm_id": "c-2"}, {"birth_date": "1985-13-45"}))
    text = render_decision(await store.decision(outcome.event_id))
    assert "Not used for matching: traits.birth_date: not a date" in text


async def test_explanation_shows_how_common_an_agreed_value_is_and_its_adjusted_weight(engine, store):
    namesakes = [await engine.resolve(make_event({}, {"given_name": "John", "family_name": "Smith", "birth_date": born}))
                 for born in ("1950-01-01", "1961-05-09", "1972-11-23")]
    assert len({o.profile_id for o in namesakes}) == 3  # born on other days: three customers
    await engine.resolve(make_event({}, {"given_name": "Mary", "family_name": "Jones"}))
    outcome = await engine.resolve(make_event({}, {"given_name": "John", "family_name": "Smith"}))
    text = render_decision(await store.decision(outcome.event_id))
    # Three of four customers' family names are Smith: u = 0.002 * 3 * 4 / (3² + 1²), below the level's 8.64 bits.
    assert "family_name      exact        +8.38  (value frequency 75.0000%; level alone +8.64)" in text
