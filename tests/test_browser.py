"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright) against a
real server (`python -m webapp`) with its local agent: register a device, start a run from the
form, watch samples appear on the Pareto plot without reloading, download the best architecture;
log in with the token, and a page on another origin that posts to the dashboard changes nothing.

The README's pictures come from tests/test_browser_tour.py.
"""
import functools
import http.server
import json
import os
import re
import signal
import threading

import pytest
from playwright.sync_api import expect

from helpers import wait_for
from processes import TOKEN, Agent, Dashboard, free_port
from nano_agent.arch import Architecture

pytestmark = pytest.mark.system

TIMEOUT_MS = 240_000


def test_log_in_and_out(dashboard, visitor):
    assert "?token=" + dashboard.token in dashboard.output()  # printed once, at first start
    visitor.goto(dashboard.url + "/devices")
    visitor.wait_for_url(re.compile(r".*/login\?next=(/|%2F)devices$"))
    expect(visitor.get_by_test_id("nav")).to_have_count(0)  # nothing shown before logging in
    visitor.get_by_test_id("login-token").fill("not-the-token")
    visitor.get_by_test_id("login-submit").click()
    expect(visitor.get_by_test_id("login-error")).to_contain_text("not this dashboard's token")
    visitor.get_by_test_id("login-token").fill(dashboard.token)
    visitor.get_by_test_id("login-submit").click()
    visitor.wait_for_url(dashboard.url + "/devices")
    expect(visitor.locator('[data-testid="device-card"]', has_text="local")).to_be_visible()
    visitor.get_by_test_id("logout").click()
    visitor.wait_for_url(re.compile(r".*/login$"))
    status = visitor.evaluate("fetch('/api/runs').then(r => r.status)")
    assert status == 401


def test_a_form_on_another_origin_changes_nothing(dashboard, page, tmp_path):
    """A page on 127.0.0.1 but another port is the same site, so the browser sends the session
    cookie with its form post (SameSite=Lax allows it): only the Origin check stops it."""
    run = dashboard.http.post(dashboard.url + "/api/runs", json={
        "name": "target", "epochs": 40, "warmup_epochs": 20, "limit": 64}, timeout=30).json()
    attack = tmp_path / "attack.html"
    attack.write_text('<form id="f" method="post" action="{}/api/runs/{}/cancel">'
                      '<input name="x" value="1"></form><script>f.submit()</script>'.format(
                          dashboard.url, run["id"]))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    other = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        page.goto("http://127.0.0.1:{}/attack.html".format(other.server_port))
        page.wait_for_url(re.compile(r".*/cancel$"))
        expect(page.locator("body")).to_contain_text("Origin is not this dashboard's")
    finally:
        other.shutdown()
    url = "{}/api/runs/{}".format(dashboard.url, run["id"])
    assert dashboard.http.get(url, timeout=5).json()["status"] in ("queued", "running")
    assert dashboard.http.post(url + "/cancel", timeout=30).status_code == 200


def test_register_a_device(dashboard, server, page, tmp_path):
    (tmp_path / "second").mkdir()
    agent, second = Agent(tmp_path, timeout=10), Agent(tmp_path / "second", timeout=10)
    try:
        page.goto(server + "/devices")
        form = page.get_by_test_id("device-form")
        form.get_by_test_id("device-name").fill("nano-bench")
        form.get_by_test_id("device-host").fill("127.0.0.1")
        form.get_by_test_id("device-port").fill(str(agent.port))
        form.get_by_test_id("device-token").fill("wrong")
        page.get_by_test_id("register-device").click()
        card = page.locator('[data-testid="device-card"]', has_text="nano-bench")
        expect(card).to_have_attribute("data-status", "offline")  # registered, and says why
        expect(card.get_by_test_id("device-error")).to_contain_text("token")

        form.get_by_test_id("device-name").fill("nano1")  # the form was reset after success
        form.get_by_test_id("device-host").fill("127.0.0.1")
        form.get_by_test_id("device-port").fill(str(agent.port))
        form.get_by_test_id("device-token").fill(TOKEN)
        page.get_by_test_id("register-device").click()
        card = page.locator('[data-testid="device-card"]', has_text="nano1")
        expect(card).to_have_attribute("data-status", "online")
        expect(card.get_by_test_id("device-info")).to_contain_text("torch")
        form.get_by_test_id("device-port").fill("70000")
        page.get_by_test_id("register-device").click()
        expect(page.locator("#derr-port")).to_be_visible()

        # profile a table for 16 px: the card lists it with its calibration fit and error
        card.locator("summary", has_text="profile options").click()
        resolution = card.get_by_test_id("device-profile-resolution")
        expect(resolution).to_have_attribute("max", "512")  # the one table of limits
        resolution.fill("16")
        card.get_by_test_id("device-profile").click()
        table = card.get_by_test_id("device-lut")
        expect(table).to_contain_text("16 px, width 0.5, 10 classes, 1 ch", timeout=120_000)
        expect(card.get_by_test_id("device-lut-fit")).to_contain_text("measured = ")
        expect(card.get_by_test_id("device-lut-fit")).to_contain_text("error median")
        expect(card).to_have_attribute("data-status", "online")

        # a group: devices of two tokens are refused, then two of one token measure as a pool
        form.get_by_test_id("device-name").fill("nano2")
        form.get_by_test_id("device-host").fill("127.0.0.1")
        form.get_by_test_id("device-port").fill(str(second.port))
        form.get_by_test_id("device-token").fill(TOKEN)
        page.get_by_test_id("register-device").click()
        groups = page.get_by_test_id("groups")
        expect(groups.get_by_test_id("group-device")).to_have_count(3)
        groups.get_by_test_id("group-name").fill("nanos")
        for name in ("nano-bench", "nano1"):
            groups.get_by_label(name).check()
        groups.get_by_test_id("create-group").click()
        expect(groups.get_by_test_id("group-error")).to_contain_text("share one token")
        groups.get_by_label("nano-bench").uncheck()
        groups.get_by_label("nano2").check()
        groups.get_by_test_id("create-group").click()
        expect(groups.get_by_test_id("group-row")).to_contain_text("nanos \u00b7 nano1, nano2")
        expect(groups.get_by_test_id("group-device")).to_have_count(1)  # grouped devices leave the list
        page.goto(server + "/runs/new")
        expect(page.get_by_test_id("input-device_id")).to_contain_text("group nanos \u2014 2 devices")
        page.goto(server + "/devices")
        # a run on the group: each member's card shows, live, what it measured in the pool
        group = dashboard.http.get(server + "/api/groups", timeout=5).json()[0]
        run = dashboard.http.post(server + "/api/runs", json={
            "name": "on the pool", "group_id": group["id"], "epochs": 2, "warmup_epochs": 1,
            "limit": 64, "samples_per_epoch": 2, "calibration_archs": 3, "measure_runs": 3,
            "measure_warmup": 1}, timeout=30).json()
        for name in ("nano1", "nano2"):
            pool = page.locator('[data-testid="device-card"]', has_text=name).get_by_test_id("device-pool")
            expect(pool).to_contain_text("In run {}'s pool: ".format(run["id"]), timeout=TIMEOUT_MS)
            expect(pool).to_contain_text(re.compile(r"[1-9]\d* measured"), timeout=TIMEOUT_MS)
        wait_for(lambda: dashboard.http.get("{}/api/runs/{}".format(server, run["id"]), timeout=5)
                 .json()["status"] not in ("queued", "running"), 120, "the pool's run to end")
        page.get_by_test_id("delete-group").click()
        expect(page.get_by_test_id("group-row")).to_have_count(0)
    finally:
        agent.stop()
        second.stop()
    names = [d["name"] for d in dashboard.http.get(server + "/api/devices", timeout=5).json()]
    assert names == ["local", "nano-bench", "nano1", "nano2"]


def test_start_watch_retrain_and_download(dashboard, server, page, tmp_path):
    page.goto(server + "/runs/new")
    form = page.get_by_test_id("new-run-form")
    expect(form).to_have_attribute("data-ready", "true", timeout=30_000)
    page.get_by_test_id("input-name").fill("browser run")
    page.get_by_test_id("input-samples_per_epoch").fill("-1")
    page.get_by_test_id("submit-run").click()
    # the server's message, under its field
    expect(page.get_by_test_id("error-samples_per_epoch")).to_contain_text("must be in [0, 1000]")
    # the form's bounds come from the one table of limits (/api/defaults)
    expect(page.get_by_test_id("input-resolution")).to_have_attribute("min", "8")
    expect(page.get_by_test_id("input-resolution")).to_have_attribute("max", "512")
    assert page.url.endswith("/runs/new")

    page.get_by_test_id("input-epochs").fill("3")
    page.get_by_test_id("input-warmup_epochs").fill("1")
    page.get_by_test_id("input-samples_per_epoch").fill("3")
    page.get_by_test_id("submit-run").click()
    page.wait_for_url(re.compile(r".*/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    plot = page.get_by_test_id("pareto-plot")
    expect(plot).to_have_attribute("data-points", "0")
    expect(page.get_by_test_id("progress-phase")).not_to_be_empty(timeout=TIMEOUT_MS)
    page.wait_for_function(
        "Number(document.getElementById('pareto-plot').dataset.points) >= 1", timeout=TIMEOUT_MS)
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "finished", timeout=TIMEOUT_MS)
    samples = dashboard.http.get("{}/api/runs/{}/samples".format(server, run_id), timeout=5).json()
    expect(plot).to_have_attribute("data-points", str(len(samples)))
    front = dashboard.http.get("{}/api/runs/{}/pareto".format(server, run_id), timeout=5).json()
    expect(plot).to_have_attribute("data-front", str(len(front)))
    expect(plot).to_have_attribute("data-reference", "mobilenetv2")  # the reference point
    assert page.evaluate("window.__sameDocument") is True
    expect(page.get_by_test_id("heatmap")).to_have_attribute("data-epoch", "3")  # shown from 1
    expect(page.get_by_test_id("curves")).to_have_attribute("data-epochs", "3")
    expect(page.get_by_test_id("best-arch").get_by_test_id("op-box")).to_have_count(20)

    with page.expect_download() as download:
        page.get_by_test_id("download-best").click()
    path = tmp_path / "best.json"
    download.value.save_as(path)
    best = json.loads(path.read_text())
    assert best == dashboard.http.get("{}/api/runs/{}/best.json".format(server, run_id), timeout=5).json()
    Architecture.from_dict(best)  # a valid architecture, ready for the device

    retrain_and_download_onnx(page, tmp_path, Architecture.from_dict(best))


def retrain_and_download_onnx(page, tmp_path, best):
    """From the finished run's page to a trained .onnx: retrain the best architecture from the
    form, watch the training finish live, download its ONNX and run it in onnxruntime."""
    import numpy
    import onnxruntime
    import torch
    from nano_agent.builder import build_model

    expect(page.get_by_test_id("retrain-arch")).to_contain_text("best: sample #")
    page.get_by_test_id("retrain-epochs").fill("0")
    page.get_by_test_id("retrain-submit").click()
    expect(page.get_by_test_id("retrain-error")).to_contain_text("epochs: must be an integer in [1, 10000]")
    page.get_by_test_id("retrain-epochs").fill("2")
    page.get_by_test_id("retrain-submit").click()
    row = page.get_by_test_id("training-row")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", "finished", timeout=TIMEOUT_MS)
    expect(row.get_by_test_id("training-test-accuracy")).to_contain_text("%")
    expect(page.get_by_test_id("pareto-plot")).to_have_attribute("data-retrained", "1")
    with page.expect_download() as download:
        row.get_by_test_id("training-onnx").click()
    onnx_path = tmp_path / download.value.suggested_filename
    download.value.save_as(onnx_path)
    assert onnx_path.suffix == ".onnx"
    with page.expect_download() as download:
        row.get_by_test_id("training-pt").click()
    weights = tmp_path / "weights.pt"
    download.value.save_as(weights)
    model = build_model(best).eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["edge-nas.arch_hash"] == best.hash
    x = numpy.random.default_rng(0).standard_normal(best.input_shape).astype("float32")
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert numpy.abs(session.run(None, {"input": x})[0] - expected).max() <= 1e-4


def test_three_runs_submitted_at_once_run_one_at_a_time(dashboard, server, page):
    """--max-runs 1: the first runs, the others are visibly queued in the runs list and on their
    own page, which follows its place in line live until it runs and finishes."""
    tiny = {"epochs": 2, "warmup_epochs": 1, "limit": 64, "samples_per_epoch": 1,
            "calibration_archs": 3, "measure_runs": 3, "measure_warmup": 1}
    ids = [dashboard.http.post(server + "/api/runs", json=dict(tiny, name="queued {}".format(i)),
                               timeout=30).json()["id"] for i in range(3)]
    first = "{}/api/runs/{}".format(server, ids[0])
    wait_for(lambda: dashboard.http.get(first, timeout=5).json()["status"] != "queued", 60,
             "the scheduler to start the first")
    page.goto(server + "/")
    rows = {i: page.locator('[data-testid="run-row"][data-run-id="{}"]'.format(i)) for i in ids}
    expect(rows[ids[2]]).to_have_attribute("data-status", "queued")
    expect(rows[ids[2]].get_by_test_id("run-queue")).to_contain_text("Queued: 1 ahead")
    expect(rows[ids[1]].get_by_test_id("run-queue")).to_contain_text("Queued: next to start")

    page.goto("{}/runs/{}".format(server, ids[2]))
    page.evaluate("window.__sameDocument = true")
    phase = page.get_by_test_id("progress-phase")
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "queued")
    expect(phase).to_have_text("Queued: next to start", timeout=TIMEOUT_MS)  # moved up, live
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "finished", timeout=TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument") is True
    runs = [dashboard.http.get("{}/api/runs/{}".format(server, i), timeout=5).json() for i in ids]
    assert [r["status"] for r in runs] == ["finished"] * 3
    for before, after in zip(runs, runs[1:]):
        assert after["started_at"] >= before["finished_at"]  # one at a time, in order


def test_a_retraining_asked_for_while_a_search_runs_waits_in_the_queue(dashboard, server, page):
    """--max-runs 1: a retraining shares the slot with the searches (it would compete with them
    for the cores). Asked for from a finished run's page while another search runs, its row says
    queued until the search ends, then it trains and finishes, live."""
    tiny = {"epochs": 2, "warmup_epochs": 1, "limit": 64, "samples_per_epoch": 1,
            "calibration_archs": 3, "measure_runs": 3, "measure_warmup": 1}
    done = dashboard.http.post(server + "/api/runs", json=dict(tiny, name="to retrain"),
                               timeout=30).json()
    page.goto("{}/runs/{}".format(server, done["id"]))
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "finished",
                                                                timeout=TIMEOUT_MS)
    busy = dashboard.http.post(server + "/api/runs", json=dict(tiny, name="busy", epochs=300,
                                                               warmup_epochs=300), timeout=30).json()
    busy_url = "{}/api/runs/{}".format(server, busy["id"])
    wait_for(lambda: dashboard.http.get(busy_url, timeout=5).json()["status"] == "running", 120,
             "the busy search to start")
    page.get_by_test_id("retrain-epochs").fill("1")
    page.get_by_test_id("retrain-submit").click()
    row = page.get_by_test_id("training-row")
    expect(row).to_have_attribute("data-status", "queued")
    expect(row.get_by_test_id("training-status")).to_contain_text("Queued")
    assert dashboard.http.get(busy_url, timeout=5).json()["status"] == "running"
    assert dashboard.http.post(busy_url + "/cancel", timeout=30).status_code == 200
    expect(row).to_have_attribute("data-status", "finished", timeout=TIMEOUT_MS)


def test_a_finished_runs_page_specialises_it_and_checks_its_ranking(dashboard, server, page,
                                                                  tmp_path):
    """On a finished run's page: a new T, the device and another runtime; the specialisation runs
    live (its row, then its pick on the scatter), its JSON downloads, and its pick retrains from
    its row, the test accuracy then shown beside it; a front across targets draws its line; every
    pick is measured on both runtimes, cell by cell. Then the ranking check: its retrainings go
    through the queue, and the answer fills in live (the scatter of shared-weight against test
    accuracy, Kendall's tau as the API gives it, the CSV)."""
    tiny = {"epochs": 3, "warmup_epochs": 1, "limit": 64, "samples_per_epoch": 3,
            "calibration_archs": 3, "measure_runs": 3, "measure_warmup": 1}
    done = dashboard.http.post(server + "/api/runs", json=dict(tiny, name="finished"),
                               timeout=30).json()
    page.goto("{}/runs/{}".format(server, done["id"]))
    expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "finished",
                                                                timeout=TIMEOUT_MS)
    run = dashboard.http.get("{}/api/runs/{}".format(server, done["id"]), timeout=5).json()
    target = round(1.5 * (run["resolved"].get("target_latency_ms")
                          or run["config"]["target_latency_ms"]), 3)
    expect(page.get_by_test_id("specialise-submit")).to_be_enabled()
    expect(page.get_by_test_id("specialise-device")).to_have_value("device:{}".format(run["device_id"]))
    page.get_by_test_id("specialise-generations").fill("0")
    page.get_by_test_id("specialise-submit").click()
    expect(page.get_by_test_id("specialise-error")).to_contain_text("generations: must be an integer in")
    page.get_by_test_id("specialise-target").fill(str(target))
    page.get_by_test_id("specialise-generations").fill("1")
    expect(page.get_by_test_id("cross-measure")).to_be_disabled()  # one device and runtime yet
    page.get_by_test_id("specialise-backend").select_option("onnxruntime")
    page.get_by_test_id("specialise-submit").click()
    row = page.get_by_test_id("specialisation-row")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", "finished", timeout=TIMEOUT_MS)
    [listed] = dashboard.http.get("{}/api/runs/{}/specialisations".format(server, done["id"]),
                                  timeout=5).json()
    expect(row.get_by_test_id("specialisation-ratio")).to_have_text(
        "{:.2f}".format(listed["pick"]["latency_ratio"]))
    expect(row.get_by_test_id("specialisation-accuracy")).to_contain_text("%")
    expect(page.get_by_test_id("pareto-plot")).to_have_attribute("data-picks", "1")
    with page.expect_download() as download:
        row.get_by_test_id("specialisation-download").click()
    path = tmp_path / "pick.json"
    download.value.save_as(path)
    assert Architecture.from_dict(json.loads(path.read_text())).hash == listed["pick"]["arch_hash"]

    row.get_by_test_id("specialisation-retrain").click()
    expect(page.get_by_test_id("retrain-arch")).to_have_value("specialisation:{}".format(listed["id"]))
    page.get_by_test_id("retrain-epochs").fill("1")
    page.get_by_test_id("retrain-submit").click()
    training = page.get_by_test_id("training-row")
    expect(training).to_have_attribute("data-status", "finished", timeout=TIMEOUT_MS)
    expect(training).to_contain_text("pick for")
    expect(row.get_by_test_id("specialisation-test-accuracy")).to_contain_text("%")

    # the front across targets: one pick per fraction of the uniform expectation, drawn as a line
    expect(page.get_by_test_id("specialise-front-targets")).to_have_value("7")  # /api/defaults'
    page.get_by_test_id("specialise-front-targets").fill("2")
    page.get_by_test_id("specialise-backend").select_option(run["config"]["backend"])
    page.get_by_test_id("specialise-front").click()
    expect(page.get_by_test_id("specialisation-row")).to_have_count(3)
    expect(page.locator('[data-testid="specialisation-row"][data-status="finished"]')).to_have_count(
        3, timeout=TIMEOUT_MS)
    listed = dashboard.http.get("{}/api/runs/{}/specialisations".format(server, done["id"]),
                                timeout=5).json()
    assert [s["target_latency_fraction"] for s in listed[1:]] == [0.4, 1.0]
    front = []
    for s in sorted(listed[1:], key=lambda s: s["pick"]["latency_ms"]):  # the run's runtime
        if not front or s["pick"]["accuracy"] > front[-1]["pick"]["accuracy"]:
            front.append(s)
    expect(page.get_by_test_id("pareto-plot")).to_have_attribute("data-specialised-front",
                                                                 str(len(front)))

    # across devices: the search's pick and the three, each measured in both runtimes
    page.get_by_test_id("cross-measure").click()
    expect(page.get_by_test_id("cross-column")).to_have_text(
        ["local \u00b7 " + run["config"]["backend"], "local \u00b7 onnxruntime"])
    expect(page.get_by_test_id("cross-row")).to_have_count(4)
    expect(page.locator('[data-testid="cross-cell"][data-within]')).to_have_count(8, timeout=TIMEOUT_MS)
    expect(page.get_by_test_id("cross-measure")).to_be_enabled(timeout=TIMEOUT_MS)  # measured
    table = dashboard.http.get("{}/api/runs/{}/cross_table".format(server, done["id"]),
                               timeout=5).json()
    within = [str(c["within_target"]).lower() for row in table["rows"] for c in row["cells"]]
    assert page.get_by_test_id("cross-cell").evaluate_all(
        "cells => cells.map((c) => c.dataset.within)") == within  # green or red, as the API says

    expect(page.get_by_test_id("ranking-architectures")).to_have_value("8")  # /api/defaults'
    page.get_by_test_id("ranking-architectures").fill("2")
    page.get_by_test_id("ranking-submit").click()
    expect(page.get_by_test_id("ranking-error")).to_contain_text("architectures: must be an integer in [3, 30]")
    page.get_by_test_id("ranking-architectures").fill("3")
    page.get_by_test_id("ranking-epochs").fill("1")
    page.get_by_test_id("ranking-submit").click()
    expect(page.get_by_test_id("training-row")).to_have_count(4)  # the pick's, and the check's
    expect(page.get_by_test_id("ranking-plot")).to_have_attribute("data-points", "3",
                                                                  timeout=TIMEOUT_MS)
    [check] = dashboard.http.get("{}/api/runs/{}/ranking_checks".format(server, done["id"]),
                                 timeout=5).json()
    summary = page.get_by_test_id("ranking-summary")
    if check["kendall_tau"] is None:
        expect(summary).to_contain_text("3 of 3 architectures retrained")
    else:
        expect(summary).to_contain_text("Kendall's tau {:.2f}".format(check["kendall_tau"]))
        assert float(summary.get_attribute("data-tau")) == pytest.approx(check["kendall_tau"])
    expect(summary).to_contain_text("The pick ranks")
    expect(page.get_by_test_id("ranking-csv")).to_have_attribute(
        "href", re.compile(r".*/api/ranking_checks/{}\.csv$".format(check["id"])))


def test_the_runs_list_is_live_without_polling(dashboard, server, page):
    """A run created, cancelled and deleted elsewhere shows in the open runs list as it happens,
    pushed over Socket.IO: the page asks for the list no more once it is live."""
    asked = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/api/runs") else None)
    page.goto(server + "/")
    page.wait_for_function("window.NAS_PAGE && window.NAS_PAGE.live === true")
    asked.clear()
    run = dashboard.http.post(server + "/api/runs", json={"name": "elsewhere", "epochs": 40,
                                                          "warmup_epochs": 20}, timeout=30).json()
    row = page.locator('[data-testid="run-row"][data-run-id="{}"]'.format(run["id"]))
    expect(row).to_contain_text("elsewhere")
    url = "{}/api/runs/{}".format(server, run["id"])
    assert dashboard.http.post(url + "/cancel", timeout=30).status_code == 200
    expect(row).to_have_attribute("data-status", "cancelled")
    assert dashboard.http.delete(url, timeout=30).status_code == 204
    expect(row).to_have_count(0)
    assert asked == []


def _descendants(pid):
    """The pids of every process below ``pid``."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/{}/stat".format(entry)) as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _ray_actor_of(dashboard):
    """The process of the Ray actor that runs the dashboard's worker (its title: ray::NodeWorker)."""
    for pid in _descendants(dashboard.proc.pid):
        try:
            with open("/proc/{}/cmdline".format(pid), "rb") as f:
                if f.read().startswith(b"ray::NodeWorker"):
                    return pid
        except OSError:
            continue
    return None


def test_a_run_on_the_embedded_ray_shows_its_node_and_resumes_when_its_worker_dies(visitor, tmp_path):
    """`python -m webapp --executor ray` with no cluster: a Ray inside the dashboard runs the
    search. Its page shows where; the worker's actor killed, the run resumes by itself, live."""
    ray_dashboard = Dashboard(tmp_path, args=["--executor", "ray"])
    try:
        visitor.goto("{}/?token={}".format(ray_dashboard.url, ray_dashboard.token))
        run = ray_dashboard.http.post(ray_dashboard.url + "/api/runs", json={
            "name": "on ray", "epochs": 6, "warmup_epochs": 3, "limit": 256, "samples_per_epoch": 1,
            "calibration_archs": 3, "measure_runs": 3, "measure_warmup": 1}, timeout=30).json()
        url = "{}/api/runs/{}".format(ray_dashboard.url, run["id"])
        visitor.goto("{}/runs/{}".format(ray_dashboard.url, run["id"]))
        expect(visitor.get_by_test_id("run-node")).to_contain_text("(Ray node ", timeout=TIMEOUT_MS)
        expect(visitor.get_by_test_id("run-retries")).to_be_hidden()
        wait_for(lambda: ray_dashboard.http.get(url + "/metrics", timeout=5).json(), 120,
                 "its first epoch (a checkpoint)", interval=0.05)
        actor = _ray_actor_of(ray_dashboard)
        assert actor is not None
        os.kill(actor, signal.SIGKILL)
        expect(visitor.get_by_test_id("run-retries")).to_have_text(
            "resumed 1 time after a lost worker", timeout=TIMEOUT_MS)
        expect(visitor.get_by_test_id("run-status")).to_have_attribute(
            "data-status", "finished", timeout=TIMEOUT_MS)
        (retry,) = ray_dashboard.http.get(url, timeout=5).json()["retries"]
        assert "ActorDiedError" in retry["error"] or "ActorUnavailableError" in retry["error"]
    finally:
        ray_dashboard.stop()
    assert _ray_actor_of(ray_dashboard) is None
