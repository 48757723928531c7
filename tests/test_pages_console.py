"""The operators' console in a real browser: the review queue with each proposal's evidence as a
waterfall, approve and reject, a decision trace as `idgraph explain` prints it, a profile's merge
lineage, and live counters read from a worker's metrics endpoint."""

from __future__ import annotations

import socket

import pytest
from playwright.sync_api import expect

from identity.explain import render_decision
from streams.metrics import WorkerMetrics, start_metrics_server
from tests.api_support import resolve, serve_api
from tests.conftest import make_event
from tests.pages_support import browser, off_the_browser_loop, open_page, screenshot, sign_in, signed_in_page  # noqa: F401


@pytest.fixture
def doubt(tmp_path):
    """Same common name in the same city and nothing else: a review proposal."""
    path = tmp_path / "graph.db"
    first, maybe = off_the_browser_loop(
        resolve, path, make_event(traits={"name": "Zhang Wei", "city": "Shanghai", "birth_date": "1985-04-12"}),
        make_event(traits={"name": "Zhang Wei", "city": "Shanghai"}))
    assert maybe.decision["action"] == "review"
    callers = {"op": {"scopes": ["operator"]}, "me": {"scopes": ["customer"], "profile_id": first.profile_id}}
    for api in serve_api(path, callers):
        yield api, first, maybe


@pytest.fixture
def console(browser, doubt):  # noqa: F811  # browser: the fixture imported above
    api, first, maybe = doubt
    with signed_in_page(browser, api, api.tokens["op"]) as page:
        yield page, api, first, maybe


def test_an_operator_signs_in_to_the_review_queue(console):
    page, api, _, maybe = console
    expect(page).to_have_url(f"{api.client.base_url}/console")
    expect(page.get_by_role("heading", level=3)).to_contain_text("Proposal #1 · 0.6299")
    screenshot(page, "console-queue")


def test_a_profile_id_typed_to_open_stays_one_segment_of_the_address(console):
    # Typed text holding ? / # must not add a query ("done" shows a notice) or path to the redirect.
    page, _, first, _ = console
    response = page.request.get("/console/profiles", params={"profile_id": f"{first.profile_id}?done=merge.done#x/y"},
                                max_redirects=0)
    assert response.status == 303
    assert response.headers["location"] == f"/console/profiles/{first.profile_id}%3Fdone%3Dmerge.done%23x%2Fy"


def test_a_proposals_evidence_is_a_waterfall_from_prior_to_probability(console):
    page, *_ = console
    rows = page.locator("#review-1 table tbody tr").all()
    assert [" ".join(c for c in r.locator("th, td").all_text_contents() if c) for r in rows] == [
        "Prior -9.964", "name exact +8.644", "city exact +2.087", "Match weight +0.767", "Probability 0.6299"]
    expect(page.locator("#review-1 svg rect")).to_have_count(4)


def test_approving_a_review_shows_the_merged_profile(console):
    page, api, first, maybe = console
    page.get_by_label("Reason for your verdict").fill("same person, confirmed by phone")
    page.get_by_role("button", name="Approve: same person").click()
    expect(page.get_by_role("status")).to_have_text("Approved: the profiles were merged.")
    expect(page.get_by_role("heading", level=1)).to_contain_text(first.profile_id)
    expect(page.get_by_text(f"This id was merged into {first.profile_id}")).to_be_visible()
    expect(page.locator("svg.lineage")).to_contain_text("merged into (review.approve)")
    assert api.get("op", f"/v1/profiles/{maybe.profile_id}").json()["merged_into"] == first.profile_id
    screenshot(page, "console-profile")


def test_a_verdict_without_a_reason_is_a_message_on_the_queue(console):
    page, *_ = console
    page.get_by_role("button", name="Approve: same person").click()
    expect(page.get_by_role("alert")).to_have_text("Give a reason for the verdict.")
    expect(page.get_by_label("Reason for your verdict")).to_have_attribute("aria-invalid", "true")


def test_rejecting_keeps_the_profiles_apart_and_empties_the_queue(console):
    page, api, _, maybe = console
    page.get_by_label("Reason for your verdict").fill("different people")
    page.get_by_role("button", name="Reject: keep apart").click()
    expect(page.get_by_role("status")).to_have_text("Rejected: the profiles stay apart.")
    expect(page.get_by_text("No proposals are waiting.")).to_be_visible()
    assert api.get("op", f"/v1/profiles/{maybe.profile_id}").json()["merged_into"] is None


def test_a_decision_trace_shows_what_idgraph_explain_prints(console):
    page, _, _, maybe = console
    page.get_by_label("Decision trace: Event id").fill(maybe.event_id)
    page.get_by_label("Decision trace: Event id").press("Enter")
    expect(page.locator("pre.trace")).to_have_text(render_decision(maybe.decision))
    screenshot(page, "console-trace")


def test_an_unknown_event_has_no_trace_and_says_so(console):
    page, *_ = console
    response = page.goto("/console/decisions?event_id=evt-nobody")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_have_text("No decision is recorded for that event.")


def test_a_customer_token_cannot_open_the_console(browser, doubt):  # noqa: F811
    api, *_ = doubt
    page = open_page(browser, api)
    sign_in(page, api.tokens["me"])
    response = page.goto("/console")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")


@pytest.fixture
def worker_metrics():
    metrics = WorkerMetrics(process_collectors=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_metrics_server(metrics, port, "127.0.0.1")
    assert server is not None
    yield metrics, f"http://127.0.0.1:{port}/metrics"
    server.shutdown()


def test_counters_show_the_workers_rate_lag_and_dead_letters(browser, tmp_path, worker_metrics, monkeypatch):  # noqa: F811
    metrics, url = worker_metrics
    monkeypatch.setenv("IDGRAPH_WORKER_METRICS_URL", url)
    metrics.events_consumed("sales.crm", "resolved", "").inc(100)
    metrics.dead_letters("invalid").inc(3)
    metrics.consumer_lag("touchpoints", "0").set(42)
    for api in serve_api(tmp_path / "graph.db", {"op": {"scopes": ["operator"]}}):
        page = open_page(browser, api)
        sign_in(page, api.tokens["op"])
        expect(page.locator("[data-counter=lag]")).to_have_text("42")
        expect(page.locator("[data-counter=dead_letters]")).to_have_text("3")
        expect(page.locator("[data-counter=open_reviews]")).to_have_text("0")
        metrics.events_consumed("sales.crm", "resolved", "").inc(500)
        page.reload()
        assert float(page.locator("[data-counter=events_per_second]").inner_text()) > 0
        page.context.close()
