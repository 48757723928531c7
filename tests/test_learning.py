"""Learning the model from the stream itself: when the learner fits, what it fits on, and what
a file resolved with it records."""

import asyncio
import io

import orjson
import pytest

from graph.sqlite import SQLiteStore
from identity.events import parse_event
from identity.features import prepare
from identity.learning import StreamLearner
from perf.synthetic import generate
from streams.batch import resolve_lines


def event(rec_id: str, traits: dict) -> dict:
    return {"event_id": rec_id, "scenario": "s", "type": "t", "occurred_at": "2026-01-01T00:00:00Z", "traits": traits}


@pytest.fixture(scope="module")
def typos():
    """~1,100 records of 600 people, a third of them with a one-field-wrong duplicate."""
    records, _ = generate("typos", people=600)
    return [event(rec_id, traits) for rec_id, traits in records]


def features(rules, events):
    return [prepare(parse_event(e), rules).features for e in events]


def distinct_people(count: int) -> list[dict]:
    """Records that are all different people: no two share a name, a birth date or a postcode."""
    return [event(f"p{i}", {"given_name": f"given{i}", "family_name": f"family{i}",
                            "birth_date": f"19{i // 365 % 100:02d}-{i // 28 % 12 + 1:02d}-{i % 28 + 1:02d}",
                            "postcode": f"{10000 + i}"}) for i in range(count)]


def test_no_fit_is_due_before_the_warm_up(rules, typos):
    learner = StreamLearner(rules, warmup=500)
    for f in features(rules, typos[:499]):
        learner.observe(f)
    assert not learner.due
    learner.observe(features(rules, typos[499:500])[0])
    assert learner.due


def test_after_a_fit_the_next_is_due_when_the_events_seen_have_doubled(rules, typos):
    learner = StreamLearner(rules, warmup=300, min_matches=5)
    prepared = features(rules, typos[:600])
    for f in prepared[:300]:
        learner.observe(f)
    assert learner.fit() is not None
    for f in prepared[300:599]:
        learner.observe(f)
    assert not learner.due
    learner.observe(prepared[599])
    assert learner.due


def test_each_fit_is_a_new_model_version_named_by_the_events_it_was_learned_from(rules, typos):
    learner = StreamLearner(rules, warmup=300, min_matches=5)
    for f in features(rules, typos[:300]):
        learner.observe(f)
    fit = learner.fit()
    assert fit is not None and fit.seen == 300
    assert fit.rules.version == f"{rules.version}+em300"
    assert fit.rules.model_version != rules.model_version


def test_the_sample_a_fit_runs_on_never_exceeds_its_size(rules, typos):
    learner = StreamLearner(rules, warmup=200, sample_size=250, min_matches=5)
    for f in features(rules, typos[:900]):
        learner.observe(f)
    fit = learner.fit()
    assert fit is not None and fit.sample == 250 and fit.seen == 900


def test_a_learner_told_each_events_blocking_keys_learns_the_model_it_learns_working_them_out(rules, typos):
    """The stream learner keeps what prepare worked out; its sample stays aligned as it is replaced."""
    told, untold = (StreamLearner(rules, warmup=200, sample_size=250, min_matches=5) for _ in range(2))
    for prepared in (prepare(parse_event(e), rules) for e in typos[:900]):
        told.observe(prepared.features, prepared.blocking_keys)
        untold.observe(prepared.features)
    fits = told.fit(), untold.fit()
    assert None not in fits and fits[0].rules.model_version == fits[1].rules.model_version


def test_a_stream_of_distinct_people_teaches_nothing_and_keeps_the_current_model(rules):
    learner = StreamLearner(rules, warmup=400)
    for f in features(rules, distinct_people(400)):
        learner.observe(f)
    assert learner.fit() is None
    assert not learner.due  # tried again only once the stream has doubled


def test_a_sample_with_fewer_duplicates_than_the_minimum_keeps_the_current_model(rules, typos):
    learner = StreamLearner(rules, warmup=300, min_matches=10_000)
    for f in features(rules, typos[:300]):
        learner.observe(f)
    assert learner.fit() is None


def test_a_warm_up_larger_than_the_sample_is_refused(rules):
    with pytest.raises(ValueError, match="warmup"):
        StreamLearner(rules, warmup=5000, sample_size=1000)


def resolve_file(tmp_path, rules, events, learner):
    lines = [(n, orjson.dumps(e)) for n, e in enumerate(events, 1)]

    async def run():
        async with SQLiteStore(tmp_path / "graph.db") as store:
            report = await resolve_lines(lines, store, rules, learner=learner)
            return report, [await store.decision(e["event_id"]) for e in events]

    return asyncio.run(run())


def test_every_decision_of_a_learning_run_names_a_learned_model_none_the_cold_start(tmp_path, rules, typos):
    report, decisions = resolve_file(tmp_path, rules, typos, StreamLearner(rules, warmup=300, min_matches=5))
    learned = {fit.rules.model_version for fit in report.models}
    assert report.models and {d["rule_version"] for d in decisions} <= learned


def test_a_later_fit_takes_over_for_the_events_after_it(tmp_path, rules, typos):
    report, decisions = resolve_file(tmp_path, rules, typos, StreamLearner(rules, warmup=300, min_matches=5))
    first, second = (fit.seen for fit in report.models[:2])
    assert first == 300 and 600 <= second < 600 + 200  # at the first batch boundary (200 events) past double
    assert decisions[0]["rule_version"] == report.models[0].rules.model_version
    assert decisions[-1]["rule_version"] == report.models[-1].rules.model_version


def test_a_file_shorter_than_the_warm_up_is_learned_from_as_a_whole(tmp_path, rules, typos):
    report, decisions = resolve_file(tmp_path, rules, typos[:400], StreamLearner(rules, warmup=1000, min_matches=5))
    (fit,) = report.models
    assert fit.seen == 400 and {d["rule_version"] for d in decisions} == {fit.rules.model_version}


def test_an_event_id_reused_before_the_first_fit_is_refused_naming_its_line(tmp_path, rules):
    events = distinct_people(30)
    events[20] = {**events[20], "event_id": events[3]["event_id"]}  # same id, other content
    rejects = io.BytesIO()

    async def run():
        async with SQLiteStore(tmp_path / "graph.db") as store:
            lines = [(n, orjson.dumps(e)) for n, e in enumerate(events, 1)]
            return await resolve_lines(lines, store, rules, batch_size=5, rejects=rejects,
                                       learner=StreamLearner(rules, warmup=100))

    report = asyncio.run(run())
    (refused,) = [orjson.loads(r) for r in rejects.getvalue().splitlines()]
    assert refused["line"] == 21 and report.rejected == 1 and len(report.event_ids) == 29


def test_a_stream_too_poor_in_duplicates_to_learn_from_is_held_no_longer_than_the_sample_then_goes_on_under_the_rules(tmp_path, rules):
    read, first_settled = [0], []

    def lines():
        for n, e in enumerate(distinct_people(1000), 1):
            read[0] = n
            yield n, orjson.dumps(e)

    async def run():
        async with SQLiteStore(tmp_path / "graph.db") as store:
            report = await resolve_lines(lines(), store, rules, batch_size=50,
                                         learner=StreamLearner(rules, warmup=200, sample_size=300),
                                         progress=lambda _: first_settled or first_settled.append(read[0]))
            return report, await store.decision("p999")

    report, last = asyncio.run(run())
    assert not report.models and last["rule_version"] == rules.model_version
    assert first_settled == [300]  # held no longer than the learner's sample, not to the end
