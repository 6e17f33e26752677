"""The browser tests' fixtures (a plugin of conftest.py): Debian's Chromium driven by Playwright, a
page that has not logged in and one that has, and a dashboard server (`python -m webapp`, one run at
a time) for a module that does not start its own."""
import os

import pytest
from playwright.sync_api import expect, sync_playwright

from processes import Dashboard

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    dashboard = Dashboard(tmp_path_factory.mktemp("browser"), args=["--max-runs", "1"])
    yield dashboard
    dashboard.stop()


@pytest.fixture(scope="module")
def server(dashboard):
    return dashboard.url


@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM), "the browser tests need Debian's chromium: apt-get install chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update"])
        yield browser
        browser.close()


@pytest.fixture
def visitor(browser):
    """A page in a browser that has not logged in."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    outside = []  # nothing may come from anywhere but the dashboard itself (no CDN)
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
        ("http://127.0.0.1", "data:", "blob:")) else None)
    yield page
    context.close()
    assert errors == [], errors
    assert outside == [], outside


@pytest.fixture
def page(visitor, dashboard):
    """A page in a browser that has logged in with the login URL the dashboard printed."""
    visitor.goto("{}/?token={}".format(dashboard.url, dashboard.token))
    expect(visitor.get_by_test_id("logout")).to_be_visible()
    return visitor
