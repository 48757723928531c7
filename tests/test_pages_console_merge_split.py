"""Merging and splitting by hand from the operators' console, in a real browser: the forms call the
JSON API's own endpoint functions, a split asks for confirmation first, and bad input is a message
on the page. The console's profile page draws the profile's identifiers as nodes of its lineage."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.api_support import resolve, serve_api
from tests.conftest import make_event
from tests.pages_support import browser, off_the_browser_loop, open_page, screenshot, sign_in, signed_in_page  # noqa: F401


@pytest.fixture
def strangers(tmp_path):
    """Two profiles with nothing in common: the engine never links them, only a person could."""
    path = tmp_path / "graph.db"
    older, newer = off_the_browser_loop(
        resolve, path, make_event(identifiers={"email": "li.na@example.com"}, traits={"name": "Li Na"}),
        make_event(identifiers={"phone": "+8613800138000"}, traits={"name": "Wang Fang", "city": "Beijing"}))
    assert older.profile_id != newer.profile_id
    for api in serve_api(path, {"op": {"scopes": ["operator"]}}):
        yield api, older, newer


@pytest.fixture
def console(browser, strangers):  # noqa: F811  # browser: the fixture imported above
    api, older, newer = strangers
    with signed_in_page(browser, api, api.tokens["op"]) as page:
        yield page, api, older, newer


def merge_by_hand(page: Page, first: str, second: str, reason: str = "same customer, confirmed by phone") -> None:
    page.goto("/console")
    page.get_by_label("First profile id").fill(first)
    page.get_by_label("Second profile id").fill(second)
    page.get_by_label("Reason for the merge").fill(reason)
    page.get_by_role("button", name="Merge", exact=True).click()


def test_merging_two_profiles_by_hand_shows_the_merged_profile_with_its_lineage(console):
    page, api, older, newer = console
    merge_by_hand(page, newer.profile_id, older.profile_id)
    expect(page.get_by_role("status")).to_have_text("Merged: the profiles are now one.")
    expect(page.get_by_role("heading", level=1)).to_contain_text(older.profile_id)
    expect(page.locator("svg.lineage")).to_contain_text("merged into (merge)")
    expect(page.locator(f"svg.lineage a[href='/console/profiles/{newer.profile_id}']")).to_be_visible()
    assert api.get("op", f"/v1/profiles/{newer.profile_id}").json()["merged_into"] == older.profile_id
    screenshot(page, "console-merge")


def test_the_lineage_draws_each_identifier_as_a_node_under_the_touchpoint_that_brought_it(console):
    page, _, older, newer = console
    merge_by_hand(page, older.profile_id, newer.profile_id)
    nodes = page.locator("svg.lineage [data-node=identifier]")
    expect(nodes.locator("title")).to_have_text(["email: li.na@example.com", "phone: +8613800138000"])
    expect(nodes.first).to_have_attribute("data-from", older.event_id)
    expect(nodes.last).to_have_attribute("data-from", newer.event_id)


def test_splitting_asks_for_confirmation_then_shows_two_profiles(console):
    page, api, older, newer = console
    merge_by_hand(page, older.profile_id, newer.profile_id)
    page.get_by_label("Profile to split off").select_option(newer.profile_id)
    page.get_by_label("Reason for the split").fill("different people after all")
    page.get_by_role("button", name="Split…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Split off a wrong merge")
    assert api.get("op", f"/v1/profiles/{newer.profile_id}").json()["merged_into"] == older.profile_id
    screenshot(page, "console-split-confirm")
    page.get_by_role("button", name="Yes, split them").click()
    expect(page.get_by_role("status")).to_have_text("Split: the profiles are apart again.")
    expect(page.get_by_role("heading", level=2, name="Split off a wrong merge")).to_have_count(0)
    page.goto(f"/console/profiles/{newer.profile_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(newer.profile_id)
    expect(page.get_by_text("This id was merged into")).to_have_count(0)
    assert api.get("op", f"/v1/profiles/{newer.profile_id}").json()["merged_into"] is None


def test_keeping_them_together_at_the_confirmation_splits_nothing(console):
    page, api, older, newer = console
    merge_by_hand(page, older.profile_id, newer.profile_id)
    page.get_by_label("Reason for the split").fill("not sure")
    page.get_by_role("button", name="Split…").click()
    page.get_by_role("link", name="Keep them together").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(older.profile_id)
    assert api.get("op", f"/v1/profiles/{newer.profile_id}").json()["merged_into"] == older.profile_id


def test_a_split_without_a_reason_is_a_message_on_the_profile(console):
    page, _, older, newer = console
    merge_by_hand(page, older.profile_id, newer.profile_id)
    page.get_by_label("Reason for the split").evaluate("input => input.removeAttribute('required')")
    page.get_by_role("button", name="Split…").click()
    expect(page.get_by_role("alert")).to_have_text("Give a reason for the split.")


def test_merging_a_profile_with_itself_is_a_message_not_a_stack_trace(console):
    page, _, older, _ = console
    merge_by_hand(page, older.profile_id, older.profile_id)
    expect(page.get_by_role("alert")).to_have_text(
        "Nothing to merge: these are already one profile. "
        f"{older.profile_id}, {older.profile_id} are already one profile")
    expect(page.get_by_label("First profile id")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_text("Traceback")).to_have_count(0)


def test_merging_with_an_unknown_id_names_it(console):
    page, _, older, _ = console
    merge_by_hand(page, older.profile_id, "p-nobody")
    expect(page.get_by_role("alert")).to_have_text("No such profile; check the ids. no profile p-nobody")
    expect(page.get_by_label("Second profile id")).to_have_value("p-nobody")


def test_a_merge_without_a_reason_is_a_message_in_chinese_for_a_chinese_browser(browser, strangers):  # noqa: F811
    api, older, newer = strangers
    page = open_page(browser, api, locale="zh-CN")
    sign_in(page, api.tokens["op"])
    page.get_by_label("第一个档案编号").fill(older.profile_id)
    page.get_by_label("第二个档案编号").fill(newer.profile_id)
    page.get_by_label("合并理由").evaluate("input => input.removeAttribute('required')")
    page.get_by_role("button", name="合并", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("请填写合并理由。")
    page.context.close()
