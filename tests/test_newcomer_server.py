"""What a newcomer tripped over, on the server side: a run needs no name; samples are numbered
within their run; a lab's --run-defaults start its runs; each retraining's downloads have names of their own; a run cancelled while
queued can be queued again; every start of `python -m webapp` prints the login URL, without a
line per request; the README's usage line lists every option."""
import os
import re
from contextlib import contextmanager

import pytest

from processes import ROOT, Dashboard
from helpers import TINY, run_reaches
from webapp.__main__ import parser
from webapp.extensions import db
from webapp.models import Run, Sample, Training

pytestmark = pytest.mark.process

DASHBOARD_CONFIG = {"MAX_RUNS": 1}


@contextmanager
def held_queue(app):
    """New runs wait in the queue (no slot for them) until the block ends."""
    app.config["MAX_RUNS"] = 0
    try:
        yield
    finally:
        app.config["MAX_RUNS"] = 1
        app.extensions["workers"].kick()


def queue(client, **body):
    r = client.post("/api/runs", json=dict(body, threads=1))
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def cancel(client, run_id):
    assert client.post("/api/runs/{}/cancel".format(run_id)).status_code == 200


def test_a_run_without_a_name_is_named_after_its_settings(app, client):
    with held_queue(app):
        runs = [queue(client), queue(client, name="   "), queue(client, name=None),
                queue(client, target_latency_ms=2.5, target_memory_mb=3),
                queue(client, name="  mine ")]
        for run in runs:
            cancel(client, run["id"])
    assert [run["name"] for run in runs] == ["digits, automatic T"] * 3 + [
        "digits, 2.5 ms, 3 MB", "mine"]
    r = client.post("/api/runs", json={"name": 5})
    assert r.status_code == 400 and "name" in r.get_json()["errors"]


def test_a_run_cancelled_while_queued_can_be_queued_again(app, client):
    with held_queue(app):
        run_id = queue(client, **TINY)["id"]
        cancel(client, run_id)
        assert client.get("/api/runs/{}".format(run_id)).get_json()["resumable"] is True
        r = client.post("/api/runs/{}/resume".format(run_id))
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["status"] == "queued"
    run = run_reaches(client, run_id, ("finished", "failed"))  # from the start: it never began
    assert run["status"] == "finished", run


def store_run(name, run_dir):
    run = Run(name=name, status="finished", run_dir=str(run_dir / name))
    run.config_data = {"dataset": "digits", "seed": 0}
    db.session.add(run)
    db.session.flush()
    return run


def store_sample(run, index):
    sample = Sample(run_id=run.id, epoch=0, kind="sampled", arch_hash="{:064x}".format(index),
                    arch_json="{}", accuracy=0.5 + index / 100, latency_ms=10.0 - index)
    db.session.add(sample)
    db.session.flush()
    return sample


def test_samples_are_numbered_within_their_run(app, client, tmp_path):
    with app.app_context():
        first, second = store_run("first", tmp_path), store_run("second", tmp_path)
        for index in range(6):  # the two runs' samples interleave: their ids do too
            store_sample(first if index % 2 else second, index)
        first.best_sample_id = max(s.id for s in first.samples)
        db.session.commit()
        ids = {run.id: [s.id for s in run.samples] for run in (first, second)}
    for run_id, sample_ids in ids.items():
        samples = client.get("/api/runs/{}/samples".format(run_id)).get_json()
        assert [(s["id"], s["number"]) for s in samples] == list(zip(sample_ids, [1, 2, 3]))
        later = client.get("/api/runs/{}/samples?after={}".format(run_id, sample_ids[0])).get_json()
        assert [s["number"] for s in later] == [2, 3]
        front = client.get("/api/runs/{}/pareto".format(run_id)).get_json()
        assert {s["number"] for s in front} <= {1, 2, 3} and front
    run = client.get("/api/runs/{}".format(min(ids))).get_json()
    assert run["best"]["id"] == ids[min(ids)][-1] and run["best"]["number"] == 3


def test_samples_come_a_page_at_a_time(app, client, tmp_path):
    """Hardening: 200,000 samples in one answer took 23 s and 1 GB of the server's memory. A page
    holds at most SAMPLES_PAGE; pages follow on by `after`, numbered on."""
    with app.app_context():
        run = store_run("paged", tmp_path)
        for index in range(7):
            store_sample(run, index)
        db.session.commit()
        ids = [s.id for s in run.samples]
        url = "/api/runs/{}/samples".format(run.id)
    pages, after = [], 0
    while True:
        page = client.get(url + "?limit=3&after={}".format(after)).get_json()
        pages.append([(s["id"], s["number"]) for s in page])
        if len(page) < 3:
            break
        after = page[-1]["id"]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sum(pages, []) == list(zip(ids, range(1, 8)))
    assert len(client.get(url).get_json()) == 7  # the default page is the largest
    for wrong in ("limit=5001", "limit=-1", "limit=x", "after=1e3"):
        r = client.get(url + "?" + wrong)
        assert r.status_code == 400 and set(r.get_json()["errors"]) <= {"limit", "after"}, wrong


def test_each_retraining_of_a_sample_downloads_under_a_name_of_its_own(app, client, tmp_path,
                                                                       monkeypatch):
    with app.app_context():
        run = store_run("retrained", tmp_path)
        store_sample(store_run("other", tmp_path), 0)  # an id before this run's samples
        sample = [store_sample(run, index) for index in (1, 2)][1]
        db.session.commit()
        run_id, sample_id = run.id, sample.id
    monkeypatch.setattr(app.extensions["workers"], "_claim", lambda kind, row: None)  # no worker
    trainings = [client.post("/api/runs/{}/trainings".format(run_id),
                             json={"sample_id": sample_id, "epochs": epochs}).get_json()
                 for epochs in (3, 10)]
    assert [t["label"] for t in trainings] == ["sample #2", "sample #2"]  # its number in the run
    with app.app_context():
        for t in trainings:  # as a finished worker leaves it
            training = db.session.get(Training, t["id"])
            training.directory = str(tmp_path / "trainings" / str(t["id"]))
            os.makedirs(training.directory)
            with open(os.path.join(training.directory, "weights.pt"), "wb") as f:
                f.write(b"weights")
            training.status = "finished"
        db.session.commit()
    names = []
    for t in trainings:
        r = client.get("/api/trainings/{}/weights.pt".format(t["id"]))
        assert r.status_code == 200 and r.data == b"weights"
        names.append(re.search(r"filename=(\S+)", r.headers["Content-Disposition"]).group(1))
    assert names[0] != names[1]
    for name, t in zip(names, trainings):
        assert name.startswith("sample_2_") and name.endswith("_weights.pt")
        assert "training{}_{}epochs".format(t["id"], t["epochs"]) in name


def test_every_start_prints_the_login_url_and_no_request_lines(tmp_path):
    request_line = re.compile(r'"GET /api/devices HTTP/1\.1" 200')
    first = Dashboard(tmp_path, args=["--log-level", "info"])  # polled /api/devices until ready
    first.http.get(first.url + "/api/runs", params={"token": first.token}, timeout=5)
    first.stop()
    assert request_line.search(first.output())  # info: a line per request ...
    lines = [line for line in first.output().splitlines() if "/api/runs?token=" in line]
    assert lines and not any(first.token in line for line in lines)  # ... without the token
    second = Dashboard(tmp_path)  # the same data directory: the token exists already
    try:
        output = second.output()
        assert "Log in: {}/?token={}".format(second.url, second.token) in output
        assert second.token == first.token
        assert not request_line.search(output), output  # the default: no line per request
    finally:
        second.stop()


def test_the_readme_usage_line_lists_every_option():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    usage = re.search(r"^    python -m webapp \[.*?\n(?:\s+\[.*\n)*", readme, re.M).group(0)
    options = [o for action in parser()._actions for o in action.option_strings
               if o.startswith("--") and o != "--help"]
    missing = [o for o in options if "[" + o not in usage]
    assert not missing, usage
    assert "`build_model`" in readme and "nano_agent/builder.py" in readme


def test_the_labs_run_defaults_start_every_run_and_a_bad_file_is_refused(app, client, tmp_path,
                                                                          capsys):
    """--run-defaults: what the form shows and what a run asked for without a setting gets."""
    app.config["RUN_DEFAULTS"] = {"epochs": 7, "warmup_epochs": 3, "seed": 5}
    try:
        assert client.get("/api/defaults").get_json()["settings"]["epochs"] == 7
        with held_queue(app):
            r = client.post("/api/runs", json={"epochs": 9, "threads": 1})
            assert r.status_code == 201, r.get_json()
            config = r.get_json()["config"]
            assert (config["epochs"], config["warmup_epochs"], config["seed"]) == (9, 3, 5)
            assert client.post("/api/runs/{}/cancel".format(r.get_json()["id"])).status_code == 200
    finally:
        app.config["RUN_DEFAULTS"] = {}
    for content, message in (('{"epochs": 0}', "epochs"), ("[1]", "JSON object"),
                             ('{"epoch": 3}', "unknown setting"), ("{", "")):
        path = tmp_path / "defaults.json"
        path.write_text(content)
        with pytest.raises(SystemExit):
            parser().parse_args(["--run-defaults", str(path)])
        error = capsys.readouterr().err
        assert "--run-defaults: {}: ".format(path) in error and message in error, error
