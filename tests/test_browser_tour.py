"""A screenshot tour of the dashboard, taken in Chromium from a real search: every page as a
newcomer meets it. In the suite it runs a small search and keeps the pictures in a temporary
directory (each page must draw, without a script error); with TOUR_DIR set it runs the default
search and retraining (minutes) and refreshes the README's pictures:

    TOUR_DIR=docs/tour .venv/bin/python -m pytest tests/test_browser_tour.py
"""
import json
import os
import re

import pytest
from playwright.sync_api import expect

from processes import Dashboard

pytestmark = pytest.mark.system

TOUR_DIR = os.environ.get("TOUR_DIR")
SMALL = {"epochs": 6, "warmup_epochs": 2, "limit": 256, "samples_per_epoch": 4,
         "measure_runs": 5, "measure_warmup": 2, "calibration_archs": 3}
SEARCH_S, RETRAIN_EPOCHS = (1800, 60) if TOUR_DIR else (240, 2)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    args = ["--max-runs", "1"]
    if not TOUR_DIR:
        defaults = tmp_path_factory.mktemp("lab") / "defaults.json"
        defaults.write_text(json.dumps(SMALL))
        args += ["--run-defaults", str(defaults)]
    dashboard = Dashboard(tmp_path_factory.mktemp("tour"), args=args)
    yield dashboard
    dashboard.stop()


def test_a_tour_of_every_page(dashboard, visitor, tmp_path):  # noqa: F811
    out = TOUR_DIR or str(tmp_path)
    os.makedirs(out, exist_ok=True)
    shots = []

    def shot(name, full_page=False):
        path = os.path.join(out, name + ".png")
        visitor.screenshot(path=path, full_page=full_page)
        shots.append(path)

    visitor.goto(re.search(r"^Log in: (\S+)", dashboard.output(), re.M).group(1))
    visitor.get_by_role("link", name="New run").first.click()
    expect(visitor.get_by_test_id("new-run-form")).to_have_attribute("data-ready", "true",
                                                                      timeout=30_000)
    shot("new-run")
    visitor.get_by_test_id("submit-run").click()
    visitor.wait_for_url(re.compile(r".*/runs/\d+$"))
    run_url = visitor.url
    # live: once the search has evaluated samples (a small run may be finishing by then)
    expect(visitor.get_by_test_id("best-arch")).not_to_have_attribute("data-sample-id", "",
                                                                      timeout=SEARCH_S * 1000)
    shot("run-live")
    expect(visitor.get_by_test_id("run-status")).to_have_attribute("data-status", "finished",
                                                                   timeout=SEARCH_S * 1000)
    visitor.get_by_test_id("retrain-epochs").fill(str(RETRAIN_EPOCHS))
    visitor.get_by_test_id("retrain-submit").click()
    expect(visitor.get_by_test_id("training-row").first).to_have_attribute(
        "data-status", "finished", timeout=SEARCH_S * 1000)
    expect(visitor.get_by_test_id("best-why")).to_be_visible()
    shot("run", full_page=True)

    visitor.get_by_role("link", name="Runs").first.click()
    expect(visitor.get_by_test_id("runs-body").locator("tr")).to_have_count(1)
    shot("runs")
    visitor.get_by_role("link", name="Devices").first.click()
    expect(visitor.get_by_test_id("devices-list")).to_contain_text("Online")
    shot("devices")
    visitor.goto("{}/compare?runs={}".format(dashboard.url, run_url.rsplit("/", 1)[1]))
    expect(visitor.get_by_test_id("compare-plot")).not_to_have_attribute("data-points", "0")
    shot("compare")
    assert all(os.path.getsize(path) > 10_000 for path in shots), shots
