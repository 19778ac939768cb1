"""Headless Chromium for the page tests: one browser per module, a fresh context per test.

Uses the system Chromium (``/usr/bin/chromium``, or ``GATEHOUSE_CHROMIUM``) through Playwright's
sync API; nothing is downloaded. Without Playwright or Chromium the tests skip locally and
fail in CI (``missing_component``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import missing_component

CHROMIUM = os.environ.get("GATEHOUSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def chromium():
    """One Chromium per test module, not per session: while Playwright's sync API is started it
    leaves its event loop marked as running in this thread, so ``asyncio.run`` and async tests
    (pytest-asyncio) fail until it stops. Modules here hold sync tests only; stopping at the end
    of each module keeps the rest of the suite unaffected."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        missing_component(f"playwright is not installed: {exc}")
    if not Path(CHROMIUM).is_file():
        missing_component(f"Chromium not found at {CHROMIUM}")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    except Exception as exc:  # noqa: BLE001 - a browser that cannot start is a missing component
        playwright.stop()
        missing_component(f"Chromium at {CHROMIUM} did not start: {exc}")
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def new_context(chromium):
    """``new_context(**options)`` opens an isolated browser profile, closed after the test."""
    opened = []

    def open_context(**options):
        context = chromium.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        opened.append(context)
        return context

    yield open_context
    for context in opened:
        context.close()


@pytest.fixture
def page(new_context):
    return new_context(viewport={"width": 1024, "height": 768}).new_page()


@pytest.fixture
def screenshot(live_as):
    """``screenshot(page, name)`` saves a full-page PNG as ``screenshots/<name>-<store>.png``."""
    SCREENSHOTS.mkdir(exist_ok=True)
    store = "sqlite" if live_as.settings.database_url.startswith("sqlite") else "postgresql"

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}-{store}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
