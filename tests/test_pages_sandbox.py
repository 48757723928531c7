"""The console's sandbox pages in a real browser, over a real sandbox: a live store resolved by
``idgraph resolve``, snapshotted and replayed under stricter rules by ``idgraph sandbox``, and the
API given that sandbox directory as ``idgraph api`` gives it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from api.auth import issue
from sandbox.diff import SandboxDiffs
from tests.api_support import idgraph_api, serve_api, session_cookie_set_by_signing_in
from tests.pages_support import browser, off_the_browser_loop, screenshot, signed_in_page  # noqa: F401
from tests.sandbox_support import Idgraph, with_live_history


def trial_and_blank(tmp_path: Path) -> Idgraph:
    """Sandbox ``trial`` replayed under strict rules (a1 and a2 split apart); ``blank`` not replayed."""
    idgraph = with_live_history(tmp_path)
    for args in (("create", "trial"), ("replay", "trial", "--rules", str(idgraph.strict_rules())),
                 ("create", "blank", "--empty")):
        result = idgraph("sandbox", *args)
        assert result.exit_code == 0, result.output
    return idgraph


@pytest.fixture
def sandboxes(tmp_path):
    # The commands run their own event loops, and the browser's sync API holds one on this thread.
    idgraph = off_the_browser_loop(trial_and_blank, tmp_path)
    callers = {"op": {"scopes": ["operator"]}, "me": {"scopes": ["customer"], "profile_id": "p_none"}}
    for api in serve_api(idgraph.live, callers, sandboxes=SandboxDiffs(idgraph.sandbox("trial").parent)):
        yield api


@pytest.fixture
def page(browser, sandboxes):  # noqa: F811  # browser: the fixture imported above
    with signed_in_page(browser, sandboxes, sandboxes.tokens["op"]) as signed_in:
        yield signed_in


def test_the_console_lists_each_sandbox_and_whether_it_has_a_candidate_to_diff(page):
    page.goto("/console")
    page.get_by_role("link", name="Sandboxes").click()
    expect(page.locator("tr[data-sandbox=trial]").get_by_role("link", name="Decision diff")).to_be_visible()
    expect(page.locator("tr[data-sandbox=blank]")).to_contain_text("No candidate replayed yet")


def test_a_sandboxs_diff_counts_the_split_and_the_events_that_move(page):
    page.goto("/console/sandboxes")
    page.locator("tr[data-sandbox=trial]").get_by_role("link", name="Decision diff").click()
    counts = {key: page.locator(f"dd[data-count={key}]").inner_text() for key in ("events", "split", "merge", "moved")}
    assert counts == {"events": "3", "split": "1", "merge": "0", "moved": "2"}
    link = page.locator("table[data-table=actions] tr[data-row=link] td")
    expect(link).to_have_text(["1", "0"])
    screenshot(page, "console-sandbox-diff")


def test_a_changed_event_shows_both_versions_evidence_side_by_side(page):
    page.goto("/console/sandboxes/trial")
    page.get_by_role("link", name="a2").click()
    expect(page.locator("[data-side=baseline] pre")).to_contain_text("linked to an existing profile")
    expect(page.locator("[data-side=candidate] pre")).to_contain_text("created a new profile")
    expect(page.locator("[data-side=baseline] figure.waterfall")).to_have_count(1)
    # The sandbox's profile ids are not live ones: nothing links them to live profile pages.
    expect(page.locator("a[href^='/console/profiles/']")).to_have_count(0)


def test_on_a_desktop_screen_the_two_versions_stand_side_by_side(page):
    page.goto("/console/sandboxes/trial/events/a2")
    baseline, candidate = (page.locator(f"[data-side={side}]").bounding_box() for side in ("baseline", "candidate"))
    assert baseline and candidate and candidate["y"] == baseline["y"] and candidate["x"] > baseline["x"] + baseline["width"]
    screenshot(page, "console-sandbox-event")


def test_a_sandbox_not_yet_replayed_says_to_replay_first(page):
    response = page.goto("/console/sandboxes/blank")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_contain_text("run 'idgraph sandbox replay blank --rules FILE' first")


def test_an_unknown_sandbox_is_not_found_by_name(page):
    response = page.goto("/console/sandboxes/nosuch")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_contain_text("no sandbox named 'nosuch'")


def test_a_customer_cannot_open_a_sandboxs_diff(browser, sandboxes):  # noqa: F811
    with signed_in_page(browser, sandboxes, sandboxes.tokens["me"]) as customer:
        response = customer.goto("/console/sandboxes/trial")
        assert response is not None and response.status == 403
        expect(customer.get_by_role("heading", level=1)).to_have_text("Not allowed")


def test_idgraph_api_shows_the_sandboxes_of_its_data_directory(tmp_path):
    idgraph = off_the_browser_loop(trial_and_blank, tmp_path)
    token, entry = issue(["operator"], "ops")
    with idgraph_api(tmp_path, json.dumps([entry.model_dump(exclude_none=True)]), **idgraph.env) as base:
        session = session_cookie_set_by_signing_in(base, token).split(";")[0]
        page = httpx.get(f"{base}/console/sandboxes", headers={"Cookie": session})
    assert page.status_code == 200 and 'data-sandbox="trial"' in page.text and 'data-sandbox="blank"' in page.text
