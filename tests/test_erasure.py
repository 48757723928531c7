"""Erasure: DELETE /v1/profiles/{id} leaves none of the customer's personal values in the SQLite
files, tells every subscribed scenario, and old events replayed afterwards cannot bring them back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import sqlite3
from pathlib import Path

import httpx
import pytest

from graph.sqlite import SQLiteStore
from graph.store import StoreConflict
from identity.deltas import IdentityDelta
from identity.rules import load_rules
from sinks.router import Router
from sinks.subscriptions import Subscription
from streams.app import topic_configs
from streams.pipeline import ResolutionPipeline
from streams.settings import Settings
from tests.api_support import on_store, outbox, resolve, run_api
from tests.conftest import make_event

EMAIL, PHONE, NAME, ADDRESS = "zhang.wei.erase@example.com", "13812345678", "Zhangwei Erasable", "88 Forgotten Lane"
PERSONAL = [EMAIL, "+8613812345678", "13812345678", NAME, NAME.lower(), ADDRESS, ADDRESS.lower(), "zhangwei", "forgotten"]


def the_customer():
    """Two profiles of one customer merged into one, a rectification, a refused write, a review."""
    first = make_event({"phone": PHONE}, {"name": NAME, "address": ADDRESS, "city": "Shanghai"},
                       occurred_at="2025-03-01T10:00:00+08:00", payload={"note": f"called about {ADDRESS}"})
    second = make_event({"email": EMAIL}, {"name": NAME, "birth_date": "1985-04-12"},
                        occurred_at="2025-03-02T10:00:00+08:00", scenario="battery-recycling.quote", type="quote_issued")
    bridge = make_event({"phone": PHONE, "email": EMAIL}, occurred_at="2025-03-03T10:00:00+08:00")
    return [first, second, bridge]


@pytest.fixture
def erased(tmp_path: Path):
    """The customer's events resolved, rectified, then erased through the API."""
    path = tmp_path / "graph.db"
    events = the_customer()
    outcomes = resolve(path, *events)
    profile_id = outcomes[0].profile_id
    for api in run_api(path, {"me": {"scopes": ["customer"], "profile_id": profile_id}, "admin": {"scopes": ["admin"]}}):
        assert api.patch("me", f"/v1/profiles/{profile_id}", json={"traits": {"address": ADDRESS + " Apt 2"}}).status_code == 200
        resolve(path, make_event({"phone": PHONE}, {"address": "Scenario Street 1"}, scenario="sales.crm"))
        # Into the main file, as a long-running store holds its data, not only in the WAL.
        on_store(path, _checkpoint)
        response = api.delete("me", f"/v1/profiles/{profile_id}")
        assert response.status_code == 200, response.text
        yield path, events, outcomes, profile_id, api


async def _checkpoint(store) -> None:
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _files(path: Path) -> list[Path]:
    return [p for p in path.parent.iterdir() if p.name.startswith(path.name)]


def test_no_personal_value_remains_in_any_byte_of_the_store_files(erased):
    path, *_ = erased
    raw = b"".join(p.read_bytes() for p in _files(path))
    assert raw, "the store file exists"
    for value in PERSONAL:
        assert value.encode() not in raw, f"{value!r} is still in the store files"


def test_the_scan_would_see_a_value_that_was_left_behind(tmp_path):
    path = tmp_path / "graph.db"
    resolve(path, make_event({"email": EMAIL}, {"name": NAME}))
    raw = b"".join(p.read_bytes() for p in _files(path))
    assert EMAIL.encode() in raw and NAME.encode() in raw


def test_the_scan_sees_values_a_plain_delete_leaves_in_free_space(tmp_path):
    """Why the store sets secure_delete itself: builds differ in its default (this one's is on)."""
    path = tmp_path / "graph.db"
    resolve(path, *the_customer())
    db = sqlite3.connect(path)
    db.execute("PRAGMA secure_delete = OFF")
    for table in ("blocking", "decisions", "outbox", "identifiers", "touchpoints", "lineage", "profiles"):
        db.execute(f"DELETE FROM {table}")
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert EMAIL.encode() in b"".join(p.read_bytes() for p in _files(path))


def test_erased_profile_and_its_merged_ids_answer_404(erased):
    _, _, outcomes, profile_id, api = erased
    for pid in {o.profile_id for o in outcomes} | {outcomes[1].profile_id}:
        assert api.get("admin", f"/v1/profiles/{pid}").status_code == 404


def test_erasure_emits_profile_erased_with_ids_only(erased):
    path, _, outcomes, profile_id, _ = erased
    (delta,) = [d for d in outbox(path) if d.kind == "profile.erased"]
    assert delta.profile_id == profile_id
    assert delta.merged_from == [outcomes[1].profile_id]
    assert (delta.changes, delta.profile) == ({}, {})
    assert all(d.kind == "profile.erased" for d in outbox(path) if d.profile_id == profile_id)


async def _relayed_and_routed(path: Path) -> list[tuple[str, bytes | None, bytes | None]]:
    """What the worker sends after the erasure: the outbox relayed, each delta routed to three scenarios."""
    sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def publish(topic, key, value, headers=None):
        sent.append((topic, key, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def route_too(topic, key, value, headers=None):
        if topic == "identity.deltas" and value is not None:
            await router.route(IdentityDelta.from_json(value), on_done=_nothing)
        return await publish(topic, key, value)

    async with httpx.AsyncClient() as http, SQLiteStore(path) as store:
        router = Router(publish, http)
        await router.update([
            Subscription(name="crm", fields=("traits.name",), kinds=("profile.updated",)),
            Subscription(name="gold", fields=("traits.*",), filters=({"trait": "tier", "any_of": ["gold"]},)),
            Subscription(name="models", fields=("traits.*",), purpose="ai_training"),
        ])
        assert await ResolutionPipeline(store, load_rules(), route_too, max_event_bytes=4096).relay_outbox() > 0
        assert await store.unpublished_deltas() == []
    return sent


async def test_every_subscribed_scenario_receives_profile_erased(erased):
    """Relayed from the outbox to identity.deltas and routed, whatever each subscription's kinds,
    filters or purpose: every scenario must delete its copy."""
    path, *_ = erased
    sent = await _relayed_and_routed(path)
    erased_to = {topic for topic, _, value in sent if value and b'"profile.erased"' in value and topic.startswith("scenario.")}
    assert erased_to == {"scenario.crm", "scenario.gold", "scenario.models"}


async def test_the_erasure_is_followed_by_a_tombstone_per_erased_id_on_every_profile_keyed_topic(erased):
    """Those topics are compacted: the tombstones let the broker drop the customer's earlier records."""
    path, _, outcomes, profile_id, _ = erased
    sent = await _relayed_and_routed(path)
    erased_ids = {profile_id.encode(), outcomes[1].profile_id.encode()}
    for topic in ("identity.deltas", "identity.touchpoints", "scenario.crm", "scenario.gold", "scenario.models"):
        tombstones = [i for i, (t, key, value) in enumerate(sent) if t == topic and value is None]
        assert {sent[i][1] for i in tombstones} == erased_ids, topic
        erasure = max(i for i, (t, _, value) in enumerate(sent) if t == topic and value and b'"profile.erased"' in value) \
            if topic != "identity.touchpoints" else -1
        assert min(tombstones) > erasure, f"{topic}: the erasure itself goes out before the tombstones"


def test_profile_keyed_topics_are_compacted_and_raw_events_expire():
    settings = Settings.from_env({"IDGRAPH_RAW_RETENTION_HOURS": "48"})
    configs = topic_configs(settings, [Subscription(name="crm", fields=("traits.name",))])
    for topic in ("identity.deltas", "identity.touchpoints", "scenario.crm"):
        assert configs[topic] == {"cleanup.policy": "compact"}, topic
    for topic in ("touchpoints", "idgraph.dead-letter"):
        assert configs[topic] == {"cleanup.policy": "delete", "retention.ms": str(48 * 3_600_000)}, topic


async def _nothing() -> None:
    return None


def test_replaying_the_customers_old_events_does_not_bring_them_back(erased):
    path, events, _, profile_id, api = erased
    replayed = resolve(path, *events, make_event({"email": EMAIL}, {"name": NAME}, occurred_at="2025-04-01T00:00:00Z"))
    assert {o.decision["action"] for o in replayed} == {"refused"}
    assert all(o.deltas == [] for o in replayed)
    assert on_store(path, lambda store: store.assignments()) == []
    raw = b"".join(p.read_bytes() for p in _files(path))
    assert EMAIL.encode() not in raw and NAME.encode() not in raw


def test_a_refused_event_is_refused_again_on_redelivery_with_the_recorded_reason(erased):
    path, events, _, profile_id, _ = erased
    (first,) = resolve(path, events[0])
    (again,) = resolve(path, events[0])
    assert again.duplicate and again.decision == first.decision
    assert first.decision["evidence"]["refused"]["via"] == "event"
    assert first.decision["profile_id"] == profile_id


def test_an_event_naming_the_erased_profile_is_refused_whenever_it_happened(erased):
    path, _, _, profile_id, _ = erased
    (late,) = resolve(path, make_event(traits={"tier": "gold"}, causation={"profile_id": profile_id},
                                       occurred_at="2099-01-01T00:00:00Z"))
    assert late.decision["action"] == "refused" and late.decision["evidence"]["refused"]["via"] == "profile"


def test_the_customer_coming_back_after_the_erasure_starts_a_new_profile(erased):
    path, _, _, profile_id, _ = erased
    (back,) = resolve(path, make_event({"email": EMAIL}, {"name": NAME}, occurred_at="2099-01-01T00:00:00Z"))
    assert back.decision["action"] == "create" and back.profile_id != profile_id


def test_the_erasure_is_recorded_without_free_text(erased):
    path, _, _, profile_id, _ = erased
    tombstone = on_store(path, lambda store: store.tombstone(profile_id))
    assert tombstone["operation_id"].startswith("op_")
    (record,) = on_store(path, lambda store: store.operations_for(profile_id))
    assert (record["kind"], record["actor"], record["reason"]) == ("erase", "me", "erasure requested by the customer")


def test_erasing_a_profile_changed_since_it_was_read_is_a_conflict(tmp_path):
    path = tmp_path / "graph.db"
    (outcome,) = resolve(path, make_event({"email": EMAIL}))

    async def stale(store):
        from service.operations import Operations
        from tests.api_support import RULES
        family = await store.family(outcome.profile_id)
        await Engine_(store).resolve(make_event({"email": EMAIL}, {"city": "Beijing"}))
        await Operations(store, RULES)._erase(family, actor="me", requested_by="customer")

    with pytest.raises(StoreConflict):
        on_store(path, stale)


def Engine_(store):
    from tests.api_support import RULES
    from tests.conftest import Engine
    return Engine(store, RULES)


def test_resolving_a_file_with_an_erased_customers_event_lists_it_with_no_profile(erased, tmp_path):
    path, events, *_ = erased
    replay = tmp_path / "replay.jsonl"
    replay.write_bytes(events[0].to_json() + b"\n")
    output = tmp_path / "replay.csv"
    done = subprocess.run([sys.executable, "-m", "cli.main", "resolve", "--input", str(replay), "--output", str(output),
                           "--store", f"sqlite:///{path}"], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert "refused 1" in done.stdout
    assert output.read_text().splitlines() == ["event_id,profile_id", f"{events[0].event_id},"]


async def test_a_review_another_customers_event_opened_about_the_erased_profile_goes_with_it(tmp_path, rules):
    """The review belongs to the other customer's event, so only the profiles it names tie it to the erased one."""
    from service.operations import Operations
    async with SQLiteStore(tmp_path / "graph.db") as store:
        engine = Engine_(store)
        erased = await engine.resolve(make_event(traits={"name": "Zhang Wei", "city": "Shanghai", "birth_date": "1985-04-12"}))
        other = await engine.resolve(make_event(traits={"name": "Zhang Wei", "city": "Shanghai"}))
        assert other.decision["action"] == "review" and other.profile_id != erased.profile_id
        await Operations(store, rules).erase(erased.profile_id, actor="me", requested_by="customer")
        assert await store.reviews("open") == []
