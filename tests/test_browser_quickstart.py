"""The README's quick start in a real headless Chromium against `python -m webapp`: New run, then
Start search with the form untouched, starts a run; a field the form refuses scrolls into view
below the sticky top bar, its label in sight."""
import re

import pytest
from playwright.sync_api import expect

from processes import Dashboard
from test_browser import browser, visitor  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    dashboard = Dashboard(tmp_path_factory.mktemp("quickstart"), args=["--max-runs", "1"])
    yield dashboard
    dashboard.stop()


@pytest.fixture
def page(visitor, dashboard):  # noqa: F811
    visitor.goto("{}/runs/new?token={}".format(dashboard.url, dashboard.token))
    expect(visitor.get_by_test_id("new-run-form")).to_have_attribute("data-ready", "true",
                                                                      timeout=30_000)
    return visitor


def test_new_run_then_start_search_with_the_defaults_starts_a_run(dashboard, page):
    page.get_by_test_id("submit-run").click()
    page.wait_for_url(re.compile(r".*/runs/\d+$"))
    url = "{}/api/runs/{}".format(dashboard.url, page.url.rsplit("/", 1)[1])
    run = dashboard.http.get(url, timeout=5).json()
    try:
        assert run["name"] == "digits, automatic T"  # named after its settings
        expect(page.get_by_test_id("run-status")).to_have_attribute(
            "data-status", re.compile("queued|running"))
    finally:
        assert dashboard.http.post(url + "/cancel", timeout=30).status_code == 200


@pytest.mark.parametrize("width", [1400, 400])  # on a narrow screen the top bar wraps, taller
def test_a_refused_field_is_not_hidden_under_the_top_bar(page, width):
    page.set_viewport_size({"width": width, "height": 600})
    page.get_by_test_id("input-target_latency_ms").fill("-1")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # at the Start button
    page.get_by_test_id("submit-run").click()
    expect(page.get_by_test_id("error-target_latency_ms")).to_contain_text("must be positive")
    expect(page.get_by_test_id("input-target_latency_ms")).to_be_focused()
    # the field, its label included, lies between the top bar and the bottom of the window
    page.wait_for_function("""() => {
        const bar = document.querySelector(".topbar").getBoundingClientRect();
        const label = document.querySelector("label[for=f-target_latency_ms]").getBoundingClientRect();
        const field = document.getElementById("f-target_latency_ms").getBoundingClientRect();
        return label.top >= bar.bottom && field.bottom <= window.innerHeight;
    }""", timeout=5000)
