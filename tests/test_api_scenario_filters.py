"""A scenario token reads through the API only the profiles its subscription's ``filters`` would
deliver to it: any other answers 404, exactly like a profile that does not exist, on every
endpoint a scenario token can reach (the profile, resolve)."""

from __future__ import annotations

import pytest

from tests.api_support import on_store, resolve, run_api
from tests.conftest import make_event

ENDPOINTS_A_SCENARIO_CANNOT_USE = ("timeline", "export", "consent")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    path = tmp_path_factory.mktemp("filters") / "graph.db"
    shanghai, london = resolve(
        path,
        make_event({"email": "wei@example.com", "phone": "13800138000"}, {"name": "Zhang Wei", "city": "上海"}),
        make_event({"email": "ann@example.co.uk", "phone": "+447911123456"}, {"name": "Ann Lee", "city": "London"}),
    )

    async def subscribe(store):
        await store.put_subscription("shanghai", {"name": "shanghai", "fields": ["traits.city", "identifiers.*"],
                                                  "filters": [{"trait": "city", "any_of": ["上海"]}]})
    on_store(path, subscribe)
    for running in run_api(path, {"shanghai": {"scopes": ["scenario:shanghai"]}}):
        running.shanghai, running.london = shanghai.profile_id, london.profile_id
        yield running


def test_profile_outside_the_filters_answers_404_like_a_missing_one(api):
    hidden = api.get("shanghai", f"/v1/profiles/{api.london}")
    missing = api.get("shanghai", "/v1/profiles/p_does_not_exist")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"].replace(api.london, "ID") == missing.json()["detail"].replace("p_does_not_exist", "ID")


def test_profile_inside_the_filters_is_read(api):
    response = api.get("shanghai", f"/v1/profiles/{api.shanghai}")
    assert response.status_code == 200 and response.json()["traits"]["city"]["value"] == "上海"


def test_resolve_does_not_find_a_profile_outside_the_filters(api):
    hidden = api.get("shanghai", "/v1/resolve", params={"email": "ann@example.co.uk"})
    missing = api.get("shanghai", "/v1/resolve", params={"email": "nobody@example.com"})
    assert (hidden.status_code, hidden.json()["detail"]) == (missing.status_code, missing.json()["detail"])
    assert hidden.status_code == 404


def test_resolve_finds_a_profile_inside_the_filters(api):
    answer = api.get("shanghai", "/v1/resolve", params={"email": "wei@example.com"})
    assert answer.status_code == 200 and answer.json()["profile_id"] == api.shanghai


def test_resolve_neither_names_nor_counts_a_holder_outside_the_filters(api):
    # The London customer holds the phone given: as an answer, a candidate or a share of the
    # confidence it would tell the scenario that customer exists.
    answer = api.get("shanghai", "/v1/resolve", params={"email": "wei@example.com", "phone": "+447911123456"}).json()
    assert answer == {"profile_id": api.shanghai, "confidence": 0.5, "matched": ["email"], "candidates": []}
    assert api.london not in str(answer)


@pytest.mark.parametrize("endpoint", ENDPOINTS_A_SCENARIO_CANNOT_USE)
def test_other_profile_endpoints_refuse_a_scenario_token_whatever_the_profile(api, endpoint):
    # 403 says nothing about the profile, so these cannot be used to probe filtered-out ids either.
    statuses = {api.get("shanghai", f"/v1/profiles/{p}/{endpoint}").status_code for p in (api.shanghai, api.london)}
    assert statuses == {403}
