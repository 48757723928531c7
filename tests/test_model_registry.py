"""The model registry as workers and promotions use it (service/models.py), on a real SQLite store."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from graph.sqlite import SQLiteStore
from service.models import LiveRules, PromotionRefused, make_live, promote, register, start_with_registry


@pytest.fixture
async def store(tmp_path):
    async with SQLiteStore(tmp_path / "graph.db") as opened:
        yield opened


def stricter(rules):
    return rules.model_copy(update=dict(version="stricter", thresholds={"link": 0.99, "review": 0.5}))


async def test_first_worker_on_an_empty_registry_makes_its_rules_the_first_live_model(store, rules):
    assert await start_with_registry(store, rules, explicit=False) == rules
    (first,) = await store.promotions()
    assert (first.version, first.previous, first.by, first.reason) == (rules.model_version, None, "worker", "first start")


async def test_a_worker_starts_with_the_live_model_not_its_rule_file(store, rules):
    await start_with_registry(store, rules, explicit=False)
    await register(store, stricter(rules), "ana")
    await promote(store, stricter(rules).model_version, by="ana", reason="")
    assert await start_with_registry(store, rules, explicit=False) == stricter(rules)
    assert len(await store.promotions()) == 2


async def test_an_explicit_rule_file_other_than_the_live_model_is_warned_about_naming_both(store, rules):
    await start_with_registry(store, stricter(rules), explicit=False)
    with capture_logs() as logs:
        assert await start_with_registry(store, rules, explicit=True) == stricter(rules)
    (warning,) = [entry for entry in logs if entry["log_level"] == "warning"]
    assert (warning["configured"], warning["live"]) == (rules.model_version, stricter(rules).model_version)
    assert f"idgraph rules promote {rules.model_version}" in warning["to_use_the_file"]


async def test_live_rules_change_only_once_another_model_is_promoted(store, rules):
    await start_with_registry(store, rules, explicit=False)
    live = LiveRules(store, rules)
    assert await live.refresh() is None
    await register(store, stricter(rules), "ana")
    assert await live.refresh() is None
    await promote(store, stricter(rules).model_version, by="ana", reason="")
    assert await live.refresh() == stricter(rules) and live.rules == stricter(rules)
    assert await live.refresh() is None


async def test_a_model_whose_stored_rules_are_invalid_is_refused_and_nothing_changes(store, rules):
    await start_with_registry(store, rules, explicit=False)
    await store.register_model("broken@000000000000", "version: broken\nprior: 2\n", "ana")
    with pytest.raises(PromotionRefused, match="model broken@000000000000 cannot be used: invalid rules"):
        await promote(store, "broken@000000000000", by="ana", reason="")
    assert await store.live_model() == rules.model_version


async def test_rules_registered_under_another_version_than_theirs_are_refused(store, rules):
    await start_with_registry(store, rules, explicit=False)
    await store.register_model("stricter@000000000000", stricter(rules).to_yaml(), "ana")
    with pytest.raises(PromotionRefused, match="hash to stricter@"):
        await promote(store, "stricter@000000000000", by="ana", reason="")


async def test_promoting_the_live_model_again_is_refused(store, rules):
    await start_with_registry(store, rules, explicit=False)
    with pytest.raises(PromotionRefused, match="is live already"):
        await promote(store, rules.model_version, by="ana", reason="")


async def test_rules_a_sandbox_worker_tries_become_its_stores_live_model_once(store, rules):
    await start_with_registry(store, rules, explicit=False)
    assert await make_live(store, stricter(rules), by="sandbox", reason="try") is True
    assert await make_live(store, stricter(rules), by="sandbox", reason="try") is False
    assert await start_with_registry(store, rules, explicit=False) == stricter(rules)


async def test_a_rollback_is_refused_when_another_model_was_made_live_since_it_read_the_log(store, rules):
    await start_with_registry(store, rules, explicit=False)
    await register(store, stricter(rules), "ana")
    await promote(store, stricter(rules).model_version, by="ana", reason="")
    with pytest.raises(PromotionRefused, match="made live meanwhile"):
        await promote(store, rules.model_version, by="bo", reason="", action="rollback", replacing="someone-else@0")
    assert await store.live_model() == stricter(rules).model_version
