"""Browser fixtures: one Chromium per test session, a fresh context (profile) per test.

    def test_something(page: Page, shot: Shot) -> None:
        page.goto(url)
        shot(page, "checkout-paid")   # test-artifacts/screenshots/checkout-paid.png

`phone_page` is the same with a phone-sized viewport and a touch screen.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.web.browser import CHROMIUM_FLAGS, DESKTOP, PHONE, chromium_or_skip, screenshot_path

Shot = Callable[[Page, str], None]


# Module scope, not session: a running Playwright driver holds an event loop in this thread,
# which would break the asyncio tests of any module that runs after it.
@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Playwright]:
    chromium_or_skip()
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    # Playwright gives every launch a fresh temporary profile (its own --user-data-dir) and
    # refuses one passed in the flags; HOME points at a scratch folder so nothing is read
    # from or written to the user's own.
    executable = chromium_or_skip()
    with tempfile.TemporaryDirectory(prefix="semops-chromium-") as home:
        launched = playwright_driver.chromium.launch(
            executable_path=executable, args=list(CHROMIUM_FLAGS), env={"HOME": home}
        )
        try:
            yield launched
        finally:
            launched.close()


def _context(browser: Browser, *, phone: bool) -> BrowserContext:
    if phone:
        return browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    return browser.new_context(viewport=DESKTOP)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = _context(browser, phone=False)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def phone_page(browser: Browser) -> Iterator[Page]:
    context = _context(browser, phone=True)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def shot() -> Shot:
    def take(page: Page, name: str) -> None:
        page.screenshot(path=str(screenshot_path(name)), full_page=True)

    return take
