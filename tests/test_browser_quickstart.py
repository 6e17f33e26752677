"""The README's quick start in a real headless Chromium against `python -m webapp`, followed
literally: open the login URL the dashboard printed, New run, Start search with the form untouched,
see the search finish, download the best architecture. The dashboard starts with `--run-defaults`
of a tiny search, so that the untouched form's run takes seconds rather than minutes. Also: a
field the form refuses scrolls into view below the sticky top bar, its label in sight."""
import json
import re

import pytest
from playwright.sync_api import expect

from nano_agent.arch import Architecture
from processes import Dashboard

pytestmark = pytest.mark.system

TINY = {"epochs": 2, "warmup_epochs": 1, "limit": 64, "batch_size": 32, "samples_per_epoch": 2,
        "measure_runs": 3, "measure_warmup": 1, "calibration_archs": 3}


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    defaults = tmp_path_factory.mktemp("lab") / "defaults.json"
    defaults.write_text(json.dumps(TINY))
    dashboard = Dashboard(tmp_path_factory.mktemp("quickstart"),
                          args=["--max-runs", "1", "--run-defaults", str(defaults)])
    yield dashboard
    dashboard.stop()


@pytest.fixture
def page(visitor, dashboard):  # noqa: F811
    visitor.goto("{}/runs/new?token={}".format(dashboard.url, dashboard.token))
    expect(visitor.get_by_test_id("new-run-form")).to_have_attribute("data-ready", "true",
                                                                      timeout=30_000)
    return visitor


def test_the_quick_start_as_the_readme_tells_it(dashboard, visitor):  # noqa: F811
    login = re.search(r"^Log in: (\S+)", dashboard.output(), re.M).group(1)
    assert dashboard.token in login
    visitor.goto(login)
    visitor.get_by_role("link", name="New run").first.click()
    form = visitor.get_by_test_id("new-run-form")
    expect(form).to_have_attribute("data-ready", "true", timeout=30_000)
    assert visitor.get_by_test_id("input-epochs").input_value() == str(TINY["epochs"])  # the lab's
    visitor.get_by_test_id("submit-run").click()  # Start search
    visitor.wait_for_url(re.compile(r".*/runs/\d+$"))
    run = dashboard.http.get("{}/api/runs/{}".format(dashboard.url, visitor.url.rsplit("/", 1)[1]),
                             timeout=5).json()
    assert run["name"] == "digits, automatic T"  # named after its settings
    assert {k: run["config"][k] for k in TINY} == TINY
    expect(visitor.get_by_test_id("run-status")).to_have_attribute("data-status", "finished",
                                                                   timeout=180_000)
    expect(visitor.get_by_test_id("flash-success")).to_contain_text("Search finished")
    with visitor.expect_download() as download:
        visitor.get_by_test_id("download-best").click()  # Best architecture
    with open(download.value.path()) as f:
        arch = json.load(f)
    best = dashboard.http.get("{}/api/runs/{}".format(dashboard.url, run["id"]), timeout=5).json()["best"]
    assert Architecture.from_dict(arch).hash == best["arch_hash"]  # the pick, ready for the device


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
