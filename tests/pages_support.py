"""Pages in a real browser: Debian's Chromium driven by Playwright, against the API behind a real
uvicorn server (tests/api_support.py). Screenshots go to docs/screenshots/, shown in the README."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.api_support import Api

T = TypeVar("T")

#: Playwright cannot download its own browsers here: it drives the system's (Makefile APT_PACKAGES).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Where screenshots go: the README's pictures when IDGRAPH_SCREENSHOTS=1 (they change with every
#: run's random ids, so an ordinary run keeps them out of the work tree).
SCREENSHOTS = (Path(__file__).resolve().parent.parent / "docs" / "screenshots" if os.environ.get("IDGRAPH_SCREENSHOTS")
               else Path(os.environ.get("TMPDIR", "/tmp")) / "idgraph-screenshots")


def off_the_browser_loop(action: Callable[..., T], *args: Any) -> T:
    """Run ``action`` in another thread: Playwright's sync API keeps an event loop running in this
    one, so ``asyncio.run`` (tests/api_support.py's ``resolve``, ``on_store``) cannot run here."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(action, *args).result()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser per test module: modules import this fixture each for themselves, and while a
    browser runs, Playwright's event loop occupies the thread (a second would refuse to start)."""
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def open_page(browser: Browser, api: Api, locale: str = "en-US") -> Page:
    """A fresh browser context (no cookies) on the API's server; ``locale`` sets Accept-Language."""
    context = browser.new_context(base_url=str(api.client.base_url), locale=locale, accept_downloads=True,
                                  viewport={"width": 1000, "height": 700})
    context.set_default_timeout(10_000)
    return context.new_page()


def sign_in(page: Page, token: str) -> None:
    page.goto("/signin")
    page.get_by_label("Access token").or_(page.get_by_label("访问令牌")).fill(token)
    page.locator("form[action='/signin'] button[type=submit]").click()


@contextmanager
def signed_in_page(browser: Browser, api: Api, token: str) -> Iterator[Page]:
    """A fresh page signed in with ``token``; its browser context is closed afterwards."""
    page = open_page(browser, api)
    sign_in(page, token)
    try:
        yield page
    finally:
        page.context.close()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
