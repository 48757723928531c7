"""The customer's page in a real browser: sign in with a token, see the profile with identifiers
masked, correct a name, withdraw consent, download everything, erase it and see it gone."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import pytest
from playwright.sync_api import expect

from tests.api_support import resolve, serve_api
from tests.conftest import make_event
from tests.pages_support import browser, off_the_browser_loop, open_page, screenshot, sign_in, signed_in_page  # noqa: F401  # browser: a fixture

LAST_YEAR = datetime.now(timezone.utc).year - 1


@pytest.fixture
def world(tmp_path):
    path = tmp_path / "graph.db"
    mine, _, other = off_the_browser_loop(
        resolve, path,
        make_event({"phone": "13800138000", "email": "zw@example.com"}, {"name": "Zhang Wei", "city": "Shanghai"},
                   consent={"marketing": True}, occurred_at=f"{LAST_YEAR}-03-01T09:00:00+08:00"),
        make_event({"phone": "13800138000"}, scenario="service.repair", type="work_order",
                   payload={"job": "更换CT球管", "site": "瑞金医院"}, occurred_at=f"{LAST_YEAR}-06-01T09:00:00+08:00"),
        make_event({"email": "li.na@example.com"}, {"name": "Li Na"}),
    )
    callers = {"me": {"scopes": ["customer"], "profile_id": mine.profile_id},
               "other": {"scopes": ["customer"], "profile_id": other.profile_id}}
    for api in serve_api(path, callers):
        yield api, mine.profile_id, other.profile_id


@pytest.fixture
def signed_in(browser, world):  # noqa: F811  # browser: the fixture imported above
    api, mine, other = world
    with signed_in_page(browser, api, api.tokens["me"]) as page:
        yield page, api, mine, other


def test_sign_in_lands_on_the_profile_with_identifiers_masked(signed_in):
    page, api, mine, _ = signed_in
    expect(page).to_have_url(f"{api.client.base_url}/profiles/{mine}")
    identifiers = page.locator("dl.identifiers")
    expect(identifiers).to_contain_text("z•••@example.com")
    expect(identifiers).to_contain_text("+86138••••8000")
    expect(identifiers).not_to_contain_text("13800138000")
    screenshot(page, "customer-profile")


def test_the_token_is_in_an_httponly_cookie_never_the_address_or_a_script(signed_in):
    page, api, *_ = signed_in
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert api.tokens["me"] not in page.url and page.evaluate("document.cookie") == ""


def test_a_wrong_token_is_refused_with_a_message_on_the_form(browser, world):  # noqa: F811
    api, *_ = world
    page = open_page(browser, api)
    sign_in(page, "not-a-token")
    expect(page.get_by_role("alert")).to_have_text("That token is not valid. Check it and try again.")
    screenshot(page, "signin")


def test_traits_show_their_source_and_time(signed_in):
    page, *_ = signed_in
    row = page.locator("tr[data-trait=city]")
    expect(row).to_contain_text("Shanghai")
    expect(row).to_contain_text("sales.crm")
    expect(row).to_contain_text(f"{LAST_YEAR}-03-01T09:00:00+08:00")


def test_correcting_the_name_makes_the_customer_its_source(signed_in):
    page, *_ = signed_in
    page.get_by_label("name", exact=True).fill("Zhang Weiming")
    page.get_by_role("button", name="Save corrections").click()
    expect(page.get_by_role("status")).to_have_text("Your correction was saved.")
    row = page.locator("tr[data-trait=name]")
    expect(row).to_contain_text("Zhang Weiming")
    expect(row).to_contain_text("customer")


def test_saving_without_a_change_says_so_on_the_page(signed_in):
    page, *_ = signed_in
    page.get_by_role("button", name="Save corrections").click()
    expect(page.get_by_role("alert")).to_have_text("Nothing to correct: change a value first.")


def test_withdrawing_consent_shows_it_not_granted_with_the_customer_as_source(signed_in):
    page, *_ = signed_in
    page.get_by_role("button", name="Withdraw: Marketing").click()
    expect(page.get_by_role("status")).to_have_text("Your consent was updated.")
    row = page.locator("#consent-marketing")
    expect(row).to_contain_text("Not granted")
    expect(row).to_contain_text("customer")
    expect(page.get_by_role("button", name="Grant: Marketing")).to_be_visible()


def test_export_downloads_everything_as_one_json_file(signed_in):
    page, _, mine, _ = signed_in
    with page.expect_download() as download:
        page.get_by_role("link", name="Download my data").click()
    document = json.loads(download.value.path().read_text(encoding="utf-8"))
    assert download.value.suggested_filename == f"idgraph-export-{mine}.json"
    assert document["format"] == "idgraph.export/1" and len(document["timeline"]) == 2


def test_erasure_needs_confirmation(signed_in):
    page, *_ = signed_in
    page.get_by_role("link", name="Erase my data").click()
    page.get_by_role("button", name="Erase now").click()
    expect(page.get_by_role("alert")).to_have_text("Tick the box to confirm the erasure.")
    screenshot(page, "customer-erase")


def test_after_erasure_the_profile_is_gone(signed_in):
    page, api, mine, _ = signed_in
    page.get_by_role("link", name="Erase my data").click()
    page.get_by_label("Yes, erase my data").check()
    page.get_by_role("button", name="Erase now").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your data was erased")
    response = page.goto(f"/profiles/{mine}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")


def test_another_customers_profile_answers_404_as_in_the_api(signed_in):
    page, api, _, other = signed_in
    response = page.goto(f"/profiles/{other}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_have_text(f"no profile {other}")
    assert api.get("me", f"/v1/profiles/{other}").status_code == 404


def test_an_overlong_search_is_a_message_not_a_stack_trace(signed_in):
    page, _, mine, _ = signed_in
    response = page.goto(f"/profiles/{mine}?q={'x' * 300}")
    assert response is not None and response.status == 422
    expect(page.get_by_role("alert")).to_contain_text("q: String should have at most 200 characters")


def test_a_form_without_its_csrf_value_is_refused(signed_in):
    page, _, mine, _ = signed_in
    response = page.request.post(f"/profiles/{mine}/consent", form={"set": "marketing=grant"})
    assert response.status == 403 and "This form has expired" in response.text()


def test_a_sign_in_posted_from_elsewhere_than_the_sign_in_form_is_refused(browser, world):  # noqa: F811
    # Another site's form posting a token of its own: it has neither the sign-in cookie nor its value.
    api, *_ = world
    page = open_page(browser, api)
    response = page.request.post("/signin", form={"token": api.tokens["me"]}, max_redirects=0)
    assert response.status == 403 and "This form has expired" in response.text()
    assert [c["name"] for c in page.context.cookies()] == []
    page.context.close()


def test_a_sign_out_posted_without_its_csrf_value_keeps_the_session(signed_in):
    page, *_ = signed_in
    response = page.request.post("/signout", max_redirects=0)
    assert response.status == 403 and "This form has expired" in response.text()
    assert [c["name"] for c in page.context.cookies()] == ["idgraph_session"]


def test_signing_out_ends_the_session(signed_in):
    page, api, *_ = signed_in
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{api.client.base_url}/signin")
    assert "idgraph_session" not in [c["name"] for c in page.context.cookies()]


def test_the_page_speaks_chinese_when_the_browser_asks(browser, world):  # noqa: F811
    api, mine, _ = world
    page = open_page(browser, api, locale="zh-CN")
    sign_in(page, api.tokens["me"])
    expect(page.get_by_role("heading", level=1)).to_contain_text("我的档案")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    screenshot(page, "customer-profile-zh")


def test_searching_the_timeline_in_chinese_finds_last_years_repair(browser, world):  # noqa: F811
    api, *_ = world
    page = open_page(browser, api, locale="zh-CN")
    sign_in(page, api.tokens["me"])
    page.get_by_label("搜索时间线").fill("去年 CT球管")
    page.get_by_label("搜索时间线").press("Enter")
    rows = page.locator("#timeline tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("更换CT球管")
    screenshot(page, "customer-search-zh")


def test_a_search_that_finds_nothing_says_so(signed_in):
    page, *_ = signed_in
    page.get_by_label("Search the timeline").fill("battery last month")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#timeline tbody")).to_have_text("Nothing in the timeline matches.")


def test_the_token_appears_in_no_address_requested_and_no_log_line(browser, world, caplog):  # noqa: F811
    api, mine, _ = world
    caplog.set_level(logging.DEBUG)
    page = open_page(browser, api)
    addresses: list[str] = []
    page.on("request", lambda request: addresses.append(request.url))
    sign_in(page, api.tokens["me"])
    page.goto(f"/profiles/{mine}?q=CT球管")
    page.goto("/profiles/not-mine")
    sign_in(page, api.tokens["me"] + "x")
    assert len(addresses) >= 5
    assert not [a for a in addresses if api.tokens["me"] in a]
    assert api.tokens["me"] not in caplog.text
    page.context.close()


def test_a_keyboard_reaches_the_skip_link_first_and_signs_in_with_enter(browser, world):  # noqa: F811
    api, mine, _ = world
    page = open_page(browser, api)
    page.goto("/signin")
    expect(page.get_by_label("Access token")).to_be_focused()  # autofocus, before any key is typed
    page.keyboard.type(api.tokens["me"])
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{api.client.base_url}/profiles/{mine}")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.context.close()
