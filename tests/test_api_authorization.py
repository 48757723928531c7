"""The authorisation matrix: each scope against each endpoint. Another customer's profile answers
404, exactly like one that does not exist; a scope that does not fit the endpoint answers 403."""

from __future__ import annotations

import pytest

from tests.api_support import on_store, resolve, run_api
from tests.conftest import make_event

CALLERS = ("none", "bad", "mine", "other", "scenario", "purpose", "operator", "admin")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    path = tmp_path_factory.mktemp("authz") / "graph.db"
    me, other, maybe = resolve(
        path,
        make_event({"email": "me@example.com"}, {"name": "Me Myself", "city": "Shanghai", "tier": "gold"}),
        make_event({"email": "other@example.com"}, {"name": "Someone Else", "city": "Shenzhen"}),
        make_event(traits={"name": "Me Myself", "city": "Shanghai"}),
    )

    async def subscribe(store):
        await store.put_subscription("crm", {"name": "crm", "fields": ["traits.city", "identifiers.email"]})
        await store.put_subscription("models", {"name": "models", "fields": ["traits.*"], "purpose": "ai_training"})
    on_store(path, subscribe)
    callers = {
        "mine": {"scopes": ["customer"], "profile_id": me.profile_id},
        "other": {"scopes": ["customer"], "profile_id": other.profile_id},
        "scenario": {"scopes": ["scenario:crm"]}, "purpose": {"scopes": ["scenario:models"]},
        "operator": {"scopes": ["operator"]}, "admin": {"scopes": ["admin"]},
    }
    for running in run_api(path, callers):
        running.tokens["bad"] = "not-a-token"
        running.me, running.other = me.profile_id, other.profile_id
        yield running


def call(api, who, method, url, body=None):
    headers = {} if who == "none" else api.as_(who)
    return api.client.request(method, url, headers=headers, json=body).status_code


# (method, url template, body, expected status per caller: none bad mine other scenario purpose operator admin)
MATRIX = [
    ("GET", "/v1/profiles/{me}", None, (401, 401, 200, 404, 200, 404, 200, 200)),
    ("GET", "/v1/profiles/{me}/timeline", None, (401, 401, 200, 404, 403, 403, 200, 200)),
    ("GET", "/v1/profiles/{me}/export", None, (401, 401, 200, 404, 403, 403, 200, 200)),
    ("GET", "/v1/profiles/{me}/consent", None, (401, 401, 200, 404, 403, 403, 200, 200)),
    ("PUT", "/v1/profiles/{me}/consent", {"purposes": {"analytics": True}}, (401, 401, 200, 404, 403, 403, 403, 200)),
    ("PATCH", "/v1/profiles/{me}", {"traits": {"address": "2 Bund"}}, (401, 401, 200, 404, 403, 403, 403, 200)),
    ("GET", "/v1/resolve?email=me@example.com", None, (401, 401, 403, 403, 200, 403, 200, 200)),
    ("GET", "/v1/reviews", None, (401, 401, 403, 403, 403, 403, 200, 200)),
    ("POST", "/v1/reviews/999", {"verdict": "reject", "reason": "x"}, (401, 401, 403, 403, 403, 403, 404, 404)),
    ("POST", "/v1/profiles/merge", {"profile_ids": ["{me}", "{me}"], "reason": "x"}, (401, 401, 403, 403, 403, 403, 409, 409)),
    ("POST", "/v1/profiles/{me}/split", {"separate": "p_none", "reason": "x"}, (401, 401, 403, 403, 403, 403, 422, 422)),
    ("DELETE", "/v1/profiles/p_unknown", None, (401, 401, 404, 404, 403, 403, 403, 404)),
]


@pytest.mark.parametrize("method,url,body,expected", MATRIX, ids=[f"{m} {u}" for m, u, _, _ in MATRIX])
@pytest.mark.parametrize("who", CALLERS)
def test_scope_against_endpoint(api, who, method, url, body, expected):
    url = url.format(me=api.me)
    if body is not None:
        body = {k: ([x.format(me=api.me) for x in v] if isinstance(v, list) else v) for k, v in body.items()}
    assert call(api, who, method, url, body) == expected[CALLERS.index(who)]


def test_another_customers_profile_is_indistinguishable_from_a_missing_one(api):
    hidden = api.get("other", f"/v1/profiles/{api.me}")
    missing = api.get("other", "/v1/profiles/p_does_not_exist")
    assert (hidden.status_code, hidden.json()["detail"].split()[0:2]) == (missing.status_code, missing.json()["detail"].split()[0:2])


def test_scenario_token_reads_only_the_fields_its_subscription_projects(api):
    profile = api.get("scenario", f"/v1/profiles/{api.me}").json()
    assert profile["traits"].keys() == {"city"} and profile["identifiers"] == {"email": ["me@example.com"]}
    assert profile["consent"] == {}


def test_purpose_scenario_sees_the_profile_once_the_customer_consents(api):
    assert api.get("purpose", f"/v1/profiles/{api.me}").status_code == 404
    api.put("mine", f"/v1/profiles/{api.me}/consent", json={"purposes": {"ai_training": True}})
    profile = api.get("purpose", f"/v1/profiles/{api.me}").json()
    assert profile["identifiers"] == {} and profile["consent"]["ai_training"]["granted"] is True


def test_health_and_metrics_need_no_token_and_the_spec_needs_one(api):
    assert api.client.get("/v1/health").json() == {"status": "ok", "store": "sqlite"}
    assert b"idgraph_api_requests" in api.client.get("/metrics").content
    assert api.client.get("/v1/openapi.json").status_code == 401
    assert api.get("mine", "/v1/openapi.json").json()["info"]["title"] == "idgraph profile API"


def test_unauthenticated_answers_carry_a_bearer_challenge(api):
    response = api.client.get(f"/v1/profiles/{api.me}")
    assert response.headers["www-authenticate"].startswith("Bearer")
