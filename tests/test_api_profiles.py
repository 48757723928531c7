"""The profile API for the customer: view with provenance, resolve, timeline search, export round
trip, and rectification that the sovereignty policy ranks above scenario writes."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from graph.sqlite import SQLiteStore
from identity.deltas import FieldChange
from identity.events import parse_event
from api.search import parse_query
from api.views import redact_for_customer
from tests.api_support import outbox, resolve, run_api, RULES
from tests.conftest import Engine
from tests.conftest import make_event

LAST_YEAR = datetime.now(timezone.utc).year - 1


@pytest.fixture
def world(tmp_path):
    path = tmp_path / "graph.db"
    older, newer, bridge, quote, visit = resolve(
        path,
        make_event({"phone": "13800138000"}, {"name": "Zhang Wei", "address": "1 Nanjing Road"}, scenario="sales.crm",
                   occurred_at=f"{LAST_YEAR}-02-01T09:00:00+08:00"),
        make_event({"email": "zw@example.com"}, {"city": "Shanghai"}, occurred_at=f"{LAST_YEAR}-03-01T09:00:00+08:00"),
        make_event({"phone": "13800138000", "email": "zw@example.com"}, occurred_at=f"{LAST_YEAR}-04-01T09:00:00+08:00"),
        make_event({"email": "zw@example.com"}, scenario="battery-recycling.quote", type="quote_issued",
                   payload={"battery": "LFP 60Ah", "price_cny": 420}, occurred_at=f"{LAST_YEAR}-05-01T09:00:00+08:00"),
        make_event({"email": "zw@example.com"}, scenario="retail.store", type="store_visit",
                   occurred_at=f"{LAST_YEAR + 1}-01-05T09:00:00+08:00"),
    )
    callers = {"me": {"scopes": ["customer"], "profile_id": newer.profile_id}, "admin": {"scopes": ["admin"]}}
    for api in run_api(path, callers):
        yield api, older, newer, quote, visit


def test_profile_shows_each_traits_source_time_and_confidence(world):
    api, older, *_ = world
    profile = api.get("me", f"/v1/profiles/{older.profile_id}").json()
    assert profile["traits"]["name"] == {"value": "Zhang Wei", "scenario": "sales.crm", "event_id": older.event_id,
                                         "observed_at": f"{LAST_YEAR}-02-01T09:00:00+08:00", "confidence": 1.0}
    assert profile["identifiers"] == {"email": ["zw@example.com"], "phone": ["+8613800138000"]}


def test_merged_id_answers_with_the_survivor_and_says_so(world):
    api, older, newer, *_ = world
    profile = api.get("me", f"/v1/profiles/{newer.profile_id}").json()
    assert (profile["id"], profile["requested_id"], profile["merged_into"]) == (older.profile_id, newer.profile_id, older.profile_id)


def test_resolve_finds_the_profile_by_any_identifier_with_confidence(world):
    api, older, *_ = world
    answer = api.get("admin", "/v1/resolve", params={"phone": "+86 138-0013-8000", "email": "ZW@example.com"}).json()
    assert answer == {"profile_id": older.profile_id, "confidence": 1.0, "matched": ["email", "phone"], "candidates": []}


def test_resolve_of_an_unknown_identifier_is_a_problem_404(world):
    api, *_ = world
    response = api.get("admin", "/v1/resolve", params={"email": "nobody@example.com"})
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_timeline_narrates_every_touchpoint_across_scenarios_in_time_order(world):
    api, older, newer, quote, visit = world
    entries = api.get("me", f"/v1/profiles/{older.profile_id}/timeline").json()["entries"]
    assert [e["scenario"] for e in entries] == ["sales.crm", "sales.crm", "sales.crm", "battery-recycling.quote", "retail.store"]
    assert entries[-1]["event_id"] == visit.event_id


def test_timeline_search_finds_last_years_battery_quote(world):
    api, older, _, quote, _ = world
    found = api.get("me", f"/v1/profiles/{older.profile_id}/timeline", params={"q": "battery quote last year"}).json()
    assert [e["event_id"] for e in found["entries"]] == [quote.event_id]


def test_timeline_search_by_year_excludes_other_years():
    query = parse_query("store visit 2024", now=datetime(2026, 6, 1, tzinfo=timezone.utc))
    assert query.terms == ("store", "visit")
    assert query.within("2024-03-01T00:00:00+00:00") and not query.within("2025-03-01T00:00:00+00:00")


def test_export_holds_identifiers_traits_timeline_decisions_and_consent(world):
    api, older, newer, quote, visit = world
    document = api.get("me", f"/v1/profiles/{newer.profile_id}/export").json()
    assert document["format"] == "idgraph.export/1"
    assert document["profile"]["identifiers"]["email"] == ["zw@example.com"]
    assert len(document["timeline"]) == len(document["decisions"]) == 5
    assert set(document["profile"]["consent"]) == {"marketing", "ai_training", "analytics", "third_party_sharing"}


def test_export_round_trip_rebuilds_the_same_profile_in_another_store(world, tmp_path):
    api, older, *_ = world
    document = api.get("me", f"/v1/profiles/{older.profile_id}/export").json()

    async def rebuild():
        async with SQLiteStore(tmp_path / "elsewhere.db") as other:
            engine = Engine(other, RULES)
            for entry in document["timeline"]:
                await engine.resolve(parse_event(entry["event"]))
            return await other.profile(older.profile_id)

    rebuilt = asyncio.run(rebuild())
    assert rebuilt.identifiers == document["profile"]["identifiers"]
    assert {k: v["value"] for k, v in rebuilt.traits.items()} == {k: v["value"] for k, v in document["profile"]["traits"].items()}


def test_export_for_a_customer_does_not_name_other_profiles():
    record = {"profile_id": "p_me", "merged_from": [], "review": {"profile_ids": ["p_me", "p_other"]},
              "evidence": {"candidates": [{"profile_id": "p_other"}, {"profile_id": "p_me"}],
                           "identifiers": [{"profiles": ["p_other"]}]}}
    shown = redact_for_customer(record, {"p_me"})
    assert "p_other" not in str(shown) and shown["evidence"]["candidates"][1]["profile_id"] == "p_me"


def test_customer_correction_wins_over_scenario_writes_and_is_propagated(world):
    api, older, *_ = world
    fixed = api.patch("me", f"/v1/profiles/{older.profile_id}", json={"traits": {"name": "Zhang Weiming"}})
    assert fixed.status_code == 200 and fixed.json()["profile"]["traits"]["name"]["scenario"] == "customer"
    (later,) = resolve(api.path, make_event({"phone": "13800138000"}, {"name": "Z. Wei"}, scenario="sales.crm",
                                            occurred_at="2099-01-01T00:00:00Z"))
    assert api.get("me", f"/v1/profiles/{older.profile_id}").json()["traits"]["name"]["value"] == "Zhang Weiming"
    assert later.decision["evidence"]["sovereignty"]["conflicts"][0]["reason"] == "customer has priority"
    (delta,) = [d for d in outbox(api.path) if d.cause.event_id == fixed.json()["event_id"]]
    assert delta.changes["traits.name"] == FieldChange(old="Zhang Wei", new="Zhang Weiming")


def test_only_customer_owned_traits_can_be_corrected(world):
    api, older, *_ = world
    response = api.patch("me", f"/v1/profiles/{older.profile_id}", json={"traits": {"tier": "gold"}})
    assert response.status_code == 422 and "tier" in response.json()["detail"]


def test_invalid_body_is_a_problem_naming_the_field_not_its_value(world):
    api, older, *_ = world
    response = api.patch("me", f"/v1/profiles/{older.profile_id}", json={"traits": {}, "secret": "13800138000"})
    body = response.json()
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert body["errors"] and "13800138000" not in response.text
