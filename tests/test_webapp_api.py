"""The runs API, the workers and their Socket.IO events: real worker subprocesses on tiny
settings, measuring on the dashboard's own local agent process."""
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from webapp.extensions import db
from webapp.models import Run, Sample
from webapp.pareto import pareto_front
from webapp.workers.kind import Worker
from helpers import TINY, read_jsonl, received, run_reaches, wait_for
from processes import dashboard_app, hold_run_directory, socket_client

pytestmark = pytest.mark.process

# what a run stores runs on both; what does not depend on the database (validation, a worker's
# life, the search at other resolutions) on SQLite alone: @pytest.mark.databases("sqlite")
DATABASES = ("sqlite", "postgresql")


def on_server(app, path):
    """A path the API shows relative to the data directory, on the server's disk."""
    return os.path.join(app.config["DATA_DIR"], path)


@pytest.fixture(scope="module")
def finished_run(app, client):
    """A tiny run on the local device, followed by a Socket.IO client in its room."""
    sio = socket_client(app)
    r = client.post("/api/runs", json=dict(TINY, name="tiny"))
    assert r.status_code == 201, r.get_json()
    assert sio.emit("subscribe", {"run_id": r.get_json()["id"]}, callback=True) == {"ok": True}
    run = run_reaches(client, r.get_json()["id"], ("finished", "failed"))
    assert run["status"] == "finished", run
    assert app.extensions["workers"].wait(Run, run["id"], 30)  # the worker exited and its end is stored
    deadline = time.time() + 5
    events = []
    while time.time() < deadline:  # the last events are emitted just after the commit seen above
        events += received(sio)
        if any(name == "run_status" and p["run"]["status"] == "finished" for name, p in events):
            break
        time.sleep(0.05)
    sio.disconnect()
    return run, events


def test_run_completes_and_matches_run_dir(app, client, finished_run):
    finished_run, events = finished_run
    run_id, run_dir = finished_run["id"], on_server(app, finished_run["run_dir"])
    assert finished_run["run_dir"] == os.path.join("runs", str(run_id))  # the server's layout stays private
    reference = finished_run["reference"]  # MobileNetV2, evaluated like a sample
    assert reference["name"] == "mobilenetv2" and reference["epoch"] == 1 and reference["latency_ms"] > 0
    assert finished_run["epochs"] == 2 and finished_run["best"] is not None
    assert finished_run["config"]["calibration_archs"] == 3  # settings without a CLI flag arrive too
    file_samples = read_jsonl(os.path.join(run_dir, "samples.jsonl"))
    assert file_samples
    api_samples = client.get("/api/runs/{}/samples".format(run_id)).get_json()
    assert [s["arch_hash"] for s in api_samples] == [s["arch_hash"] for s in file_samples]
    assert [(s["latency_ms"], s["latency_median_ms"]) for s in api_samples] == \
        [(s["latency_ms"], s["latency"]["median_ms"]) for s in file_samples]
    # the fastest timed run, but for a finalist: the median of its rounds at the end
    assert all(s["latency_ms"] == s["latency"]["min_ms"] for s in file_samples if s["kind"] != "final")
    with app.app_context():
        rows = db.session.scalars(db.select(Sample).where(Sample.run_id == run_id)
                                  .order_by(Sample.id)).all()
        assert [(s.epoch, s.kind, s.arch_hash) for s in rows] == \
            [(s["epoch"], s["kind"], s["arch_hash"]) for s in file_samples]
        assert len(db.session.get(Run, run_id).epoch_metrics) == 2

    # incremental fetch
    after = client.get("/api/runs/{}/samples?after={}".format(run_id, api_samples[0]["id"]))
    assert [s["id"] for s in after.get_json()] == [s["id"] for s in api_samples[1:]]

    # the Pareto front, recomputed over samples.jsonl: a finalist counts by its final sample alone
    finalists = {s["arch_hash"] for s in file_samples if s["kind"] == "final"}
    assert finalists  # measured again at the end: the fronts below count them by their finals
    expected = pareto_front([(i, s["latency_ms"], s["accuracy"]) for i, s in enumerate(file_samples)
                             if s["kind"] == "final" or s["arch_hash"] not in finalists])
    front = client.get("/api/runs/{}/pareto".format(run_id)).get_json()
    assert [p["arch_hash"] for p in front] == [file_samples[i]["arch_hash"] for i, _, _ in expected]
    assert {"id", "latency_ms", "accuracy", "arch_hash"} <= set(front[0])

    # why the best is the pick: the search's explanation, recomputed from the stored samples
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary_why = json.load(f)["why"]
    why = finished_run["why"]
    assert why["val_size"] > 0 and why["architectures"] == len({s["arch_hash"] for s in file_samples})
    assert {k: v for k, v in why.items() if k != "runners_up"} == \
        {k: v for k, v in summary_why.items() if k != "runners_up"}
    assert [r["arch_hash"] for r in why["runners_up"]] == [r["arch_hash"] for r in summary_why["runners_up"]]

    r = client.get("/api/runs/{}/best.json".format(run_id))
    assert r.status_code == 200
    assert "best_arch_{}.json".format(run_id) in r.headers["Content-Disposition"]
    with open(os.path.join(run_dir, "best_arch.json")) as f:
        assert json.loads(r.data) == json.load(f)

    r = client.get("/api/runs/{}/samples.csv".format(run_id))
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(r.data.decode())))
    assert rows[0][:4] == ["id", "epoch", "kind", "arch_hash"]
    assert [row[3] for row in rows[1:]] == [s["arch_hash"] for s in file_samples]

    listing = client.get("/api/runs").get_json()
    assert listing[0]["id"] == run_id and listing[0]["best"]["arch_hash"]
    assert listing[0]["best"]["ops"] in [s["ops"] for s in file_samples]

    # measured through the dashboard's local agent process, not in the worker
    device = client.get("/api/devices/{}".format(finished_run["device_id"])).get_json()
    assert device["kind"] == "local"
    assert finished_run["config"]["device"] == "127.0.0.1:{}".format(device["port"])
    # the settings as asked stay apart from what the worker made of them (its values overwrote
    # the request): the automatic T is resolved; the address, the same, is not
    assert finished_run["config"]["target_latency_ms"] is None
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert finished_run["resolved"] == {"target_latency_ms": summary["target_latency_ms"]}
    assert finished_run["space_blocks"] and len(finished_run["space_blocks"]) == 20

    # every sample arrived over Socket.IO, and the front's deltas rebuild the API's front
    pushed = [p["sample"] for name, p in events if name == "sample"]
    assert [p["id"] for p in pushed] == [p["id"] for p in api_samples]
    on_front = []
    for name, p in events:
        if name == "sample":
            on_front = [i for i in on_front if i not in p["pareto"]["removed"]] + p["pareto"]["added"]
    assert sorted(on_front) == sorted(p["id"] for p in front)
    progress = [p for name, p in events if name == "run_progress"]
    assert progress and all(0 <= p["fraction"] <= 1 for p in progress)
    assert progress[-1]["eta_s"] is not None
    assert [p["metric"]["epoch"] for name, p in events if name == "run_epoch"] == [0, 1]
    assert any(name == "run_message" for name, _ in events)


def test_metrics_and_sample_downloads(client, finished_run):
    run, _ = finished_run
    metrics = client.get("/api/runs/{}/metrics".format(run["id"])).get_json()
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert [m["phase"] for m in metrics] == ["warmup", "search"]
    probabilities = metrics[1]["arch_probabilities"]
    assert len(probabilities) == 20
    assert all(abs(sum(row) - 1) < 1e-3 for row in probabilities)
    assert [len(row) for row in probabilities] == [len(ops) for ops in run["space_blocks"]]

    file_samples = read_jsonl(os.path.join(on_server(client.application, run["run_dir"]), "samples.jsonl"))
    samples = client.get("/api/runs/{}/samples".format(run["id"])).get_json()
    for sample, expected in zip(samples, file_samples):
        r = client.get("/api/runs/{}/samples/{}/arch.json".format(run["id"], sample["id"]))
        assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
        assert json.loads(r.data) == expected["arch"]
        assert sample["ops"] == expected["ops"]
    other = client.get("/api/runs/{}/samples/{}/arch.json".format(run["id"] + 1000, samples[0]["id"]))
    assert other.status_code == 404


def test_measurements_and_lookup_tables_are_shared_between_runs(app, client, finished_run):
    """The first run's measurements and its calibrated table go to the database; a second run on
    the same device and setting gets both: it starts measuring without profiling again, and
    measures only what is new."""
    run, _ = finished_run
    from search_core.measurements import LatencyCache
    from webapp.models import LatencyCacheEntry
    first = dict(LatencyCache(os.path.join(on_server(app, run["run_dir"]), "latency_cache.jsonl")).items())
    assert first
    with app.app_context():
        stored = {"|".join((e.device_key, e.arch_hash, e.input_shape)): e.stats_data
                  for e in db.session.scalars(db.select(LatencyCacheEntry))}
    assert stored == first
    assert all(key.startswith("agent:") for key in stored)  # keyed by the agent's identity

    device = client.get("/api/devices/{}".format(run["device_id"])).get_json()
    [table] = [t for t in device["luts"] if t["run_id"] == run["id"]]
    assert (table["resolution"], table["num_classes"], table["in_channels"]) == (32, 10, 1)
    assert table["calibration"]["archs"] == 3
    with open(os.path.join(on_server(app, run["run_dir"]), "lut.json")) as f:
        profiled = json.load(f)

    r = client.post("/api/runs", json=dict(TINY, name="again"))
    second = run_reaches(client, r.get_json()["id"], ("finished", "failed"))
    assert second["status"] == "finished", second
    with open(os.path.join(on_server(app, second["run_dir"]), "lut.json")) as f:
        assert json.load(f) == profiled  # the stored table, timings and fit alike: no new profile
    with open(os.path.join(on_server(app, second["run_dir"]), "summary.json")) as f:
        summary = json.load(f)
    assert summary["measurements"] < len(first)
    again = dict(LatencyCache(os.path.join(on_server(app, second["run_dir"]), "latency_cache.jsonl")).items())
    assert all(again[key] == stats for key, stats in first.items())  # none measured twice


@pytest.mark.databases("sqlite")
@pytest.mark.parametrize("resolution", [16, 224])
def test_runs_at_a_small_and_a_large_resolution(client, database, resolution):
    """The API, the search and the agent read one table of limits: what the form accepts, the
    agent profiles and measures."""
    if database != "sqlite":
        pytest.skip("the limits are the same whatever the database: checked once, on SQLite")
    # the least work a run does: its profile, calibration and samples are measured once each
    r = client.post("/api/runs", json=dict(TINY, name="{} px".format(resolution), resolution=resolution,
                                         measure_runs=1, measure_warmup=0, calibration_archs=2,
                                         samples_per_epoch=1, limit=32))
    assert r.status_code == 201, r.get_json()
    run = run_reaches(client, r.get_json()["id"], ("finished", "failed"), timeout=300)
    assert run["status"] == "finished", run
    assert client.get("/api/runs/{}/best.json".format(run["id"])).get_json()["input"]["resolution"] \
        == resolution


@pytest.mark.databases("sqlite")
def test_the_eta_at_the_start_of_the_search_is_within_30_percent_of_the_time_left(app, client,
                                                                                   database):
    """Search epochs (steps with architecture steps, then the samples' evaluation) cost several
    warm-up epochs: an estimate at the warm-up's pace was a third of the truth."""
    if database != "sqlite":
        pytest.skip("the estimate does not depend on the database: checked once, on SQLite")
    sio = socket_client(app)
    settings = dict(TINY, name="eta", epochs=5, warmup_epochs=2, limit=384, samples_per_epoch=3,
                    measure_runs=20, measure_warmup=5)
    r = client.post("/api/runs", json=settings)
    assert r.status_code == 201, r.get_json()
    run_id = r.get_json()["id"]
    assert sio.emit("subscribe", {"run_id": run_id}, callback=True) == {"ok": True}
    assert run_reaches(client, run_id, ("finished", "failed"), timeout=300)["status"] == "finished"
    assert app.extensions["workers"].wait(Run, run_id, 30)
    events, deadline = [], time.time() + 10
    while not any(name == "run_status" and p["run"]["status"] == "finished" for name, p in events):
        assert time.time() < deadline, "no finished status pushed"
        events += received(sio)
        time.sleep(0.05)
    sio.disconnect()
    end = next(p["time"] for name, p in events if name == "run_status" and p["run"]["status"] == "finished")
    start = next(p for name, p in events if name == "run_progress" and p["phase"] == "search")
    left = end - start["time"]
    assert abs(start["eta_s"] - left) <= 0.3 * left, (start["eta_s"], left)


@pytest.mark.databases("sqlite")
def test_defaults(client):
    d = client.get("/api/defaults").get_json()
    described = d["described"]
    assert d["settings"]["epochs"] == 45 and "digits" in described["dataset"]["choices"]
    assert described["strategy"]["choices"] == ["gradient", "reinforce", "evolution"]
    assert d["bundled_datasets"] == ["digits", "shapes"]
    from nano_agent import limits
    for name, limit in (("resolution", limits.RESOLUTION), ("measure_runs", limits.TIMED_RUNS)):
        assert (described[name]["min"], described[name]["max"]) == (limit.low, limit.high)
    assert described["target_latency_ms"]["nullable"] and described["epochs"]["type"] == "int"
    assert d["profile"]["limits"]["resolution"] == {"min": limits.RESOLUTION.low,
                                                   "max": limits.RESOLUTION.high}


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "bogus": 1}, "bogus"),
    ({"name": "x", "dataset": "imagenet-22k"}, "dataset"),
    ({"name": "x", "epochs": 2, "warmup_epochs": 3}, "warmup_epochs"),
    ({"name": "x", "target_latency_ms": -1.0}, "target_latency_ms"),
    ({"name": "x", "epochs": "many"}, "epochs"),
    ({"name": 5, "dataset": "digits"}, "name"),  # none is fine (named after its settings), not text is not
    ({"name": "x", "device_id": 424242}, "device_id"),
    ({"name": "x", "device_id": "local"}, "device_id"),
    ({"name": "x", "device": "nano:8765"}, "device"),
])
@pytest.mark.databases("sqlite")
def test_validation(client, body, field):
    r = client.post("/api/runs", json=body)
    assert r.status_code == 400
    assert field in r.get_json()["errors"]


@pytest.mark.databases("sqlite")
def test_data_dir_names_a_directory_under_the_dataset_roots(app, client):
    """Only directories under the dataset roots (default <DATA_DIR>/datasets), named relative to
    them; the same answer for a path elsewhere as for a missing one, so nothing else shows."""
    root = os.path.join(app.config["DATA_DIR"], "datasets")
    os.makedirs(os.path.join(root, "my-cifar"), exist_ok=True)
    answers = set()
    for data_dir in ("/etc", "/nonexistent", "../../..", "my-cifar/../..", "missing", root + "/../runs"):
        r = client.post("/api/runs", json={"name": "x", "dataset": "cifar10", "data_dir": data_dir})
        assert r.status_code == 400, data_dir
        answers.add(r.get_json()["errors"]["data_dir"])
    assert answers == {"no such directory under the dataset roots (a path relative to datasets/)"}
    for data_dir in ("my-cifar", os.path.join(root, "my-cifar")):
        r = client.post("/api/runs", json={"name": "x", "dataset": "cifar10", "data_dir": data_dir,
                                           "epochs": 2, "warmup_epochs": 1})
        assert r.status_code == 201, r.get_json()
        run = run_reaches(client, r.get_json()["id"], ("failed",))  # no CIFAR batches in there
        assert run["config"]["data_dir"] == "my-cifar" and "/" not in run["run_dir"].replace("runs/", "")
        assert root not in json.dumps(run)  # no server path in the answer


@pytest.mark.databases("sqlite")
def test_unknown_run_404(client):
    assert client.get("/api/runs/999999").status_code == 404
    for path in ("cancel", "resume"):
        r = client.post("/api/runs/999999/{}".format(path))
        assert r.status_code == 404 and "error" in r.get_json()
    for path in ("samples", "pareto", "best.json", "samples.csv", "metrics", "samples/1/arch.json"):
        r = client.get("/api/runs/999999/{}".format(path))
        assert r.status_code == 404 and "error" in r.get_json()
    assert client.delete("/api/runs/999999").status_code == 404
    assert client.get("/api/runs/abc").get_json() == {"error": "not found"}


@pytest.mark.databases("sqlite")
@pytest.mark.parametrize("method, path", [("put", "/api/runs"), ("delete", "/api/runs"),
                                          ("patch", "/api/devices"), ("get", "/api/runs/1/cancel")])
def test_a_method_the_api_does_not_have_is_a_json_405(client, method, path):
    r = getattr(client, method)(path)
    assert r.status_code == 405 and r.is_json and "is not allowed here" in r.get_json()["error"]


@pytest.mark.databases("sqlite")
def test_ids_beyond_64_bits_are_not_found(client):
    for path in ("/api/runs/99999999999999999999999", "/api/runs/0", "/api/devices/-1",
                 "/api/runs/1/samples/99999999999999999999999/arch.json"):
        r = client.get(path)
        assert r.status_code == 404 and r.is_json, path
    r = client.get("/api/runs/1/samples?after=99999999999999999999999")
    assert r.status_code in (400, 404) and r.is_json
    r = client.post("/api/runs", json={"name": "x", "device_id": 2 ** 64})
    assert r.status_code == 400 and "device_id" in r.get_json()["errors"]


@pytest.mark.databases("sqlite")
def test_a_bug_answers_in_json_and_logs_its_traceback(client, monkeypatch, caplog):
    import webapp.api.runs

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(webapp.api.runs, "jsonify", broken)  # whether or not there are runs
    with caplog.at_level("ERROR", logger="webapp.api.errors"):
        r = client.get("/api/runs")
    assert r.status_code == 500 and r.get_json()["error"].startswith("internal error: RuntimeError")
    assert "a bug" not in r.get_json()["error"]  # the details stay in the server's log
    assert any("RuntimeError: a bug" in (record.exc_text or "") for record in caplog.records)
    monkeypatch.undo()
    assert client.get("/api/runs").status_code == 200  # and the server goes on


def test_finished_run_conflicts(client, finished_run):
    run, _ = finished_run
    assert client.post("/api/runs/{}/cancel".format(run["id"])).status_code == 409
    assert client.post("/api/runs/{}/resume".format(run["id"])).status_code == 409


@pytest.mark.databases("sqlite")
def test_a_resume_stores_again_the_samples_the_database_lost(app, client, finished_run, tmp_path):
    """A database that lost its WAL after a crash lost the rows written since its last checkpoint;
    the run's directory still holds its samples, and a resume stores them again before its worker
    starts (one that is cancelled here: its checkpoint is no checkpoint)."""
    done, _ = finished_run
    run_dir = tmp_path / "lost-rows"
    run_dir.mkdir()
    shutil.copy(os.path.join(on_server(app, done["run_dir"]), "samples.jsonl"), run_dir)
    on_disk = read_jsonl(run_dir / "samples.jsonl")
    with open(run_dir / "samples.jsonl", "a") as f:
        f.write('{"not": "a sample"}\n')
    for name in ("config.json", "checkpoint.pt"):
        (run_dir / name).write_text("{}")
    with app.app_context():
        run = Run(name="lost rows", status="interrupted", config="{}", run_dir=str(run_dir))
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    assert client.post("/api/runs/{}/resume".format(run_id)).status_code == 200
    stored = wait_for(lambda: client.get("/api/runs/{}/samples".format(run_id)).get_json(), 60,
                      "the samples to be stored again")
    run_reaches(client, run_id, ("running", "failed"))
    client.post("/api/runs/{}/cancel".format(run_id))
    assert on_disk and sorted((s["epoch"], s["kind"], s["arch_hash"], s["accuracy"]) for s in stored) \
        == sorted((s["epoch"], s["kind"], s["arch_hash"], s["accuracy"]) for s in on_disk)


def start_long_run(client):
    """A run that would train for minutes, once it has a checkpoint to resume from."""
    r = client.post("/api/runs", json=dict(TINY, name="long", epochs=300, warmup_epochs=300))
    run_id, run_dir = r.get_json()["id"], on_server(client.application, r.get_json()["run_dir"])

    def trains():
        run = client.get("/api/runs/{}".format(run_id)).get_json()
        assert run["status"] in ("queued", "running"), run
        return run["phase"] and os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    wait_for(trains, 60, "its first checkpoint")
    return run_id


@pytest.mark.databases("sqlite")
def test_cancel_and_resume(app, client):
    run_id = start_long_run(client)
    workers = app.extensions["workers"]
    assert client.post("/api/runs/{}/resume".format(run_id)).status_code == 409  # still running
    assert client.delete("/api/runs/{}".format(run_id)).status_code == 409  # active
    with app.app_context():
        pid = db.session.get(Run, run_id).pid
    r = client.post("/api/runs/{}/cancel".format(run_id))
    assert r.status_code == 200 and r.get_json()["status"] == "cancelled"
    assert not workers.is_alive(Run, run_id)
    with pytest.raises(ProcessLookupError):  # reaped: the process is gone
        os.kill(pid, 0)
    assert client.post("/api/runs/{}/cancel".format(run_id)).status_code == 409

    sio = socket_client(app)
    assert sio.emit("subscribe", {"run_id": run_id}, callback=True) == {"ok": True}
    r = client.post("/api/runs/{}/resume".format(run_id))
    assert r.status_code == 200, r.get_json()
    deadline, progress = time.time() + 60, None
    while progress is None:
        assert time.time() < deadline, "the resumed worker did not train"
        progress = next((p for _, p in received(sio, "run_progress")), None)
        time.sleep(0.05)
    assert progress["epoch"] > 0  # continued from its checkpoint, not from the first epoch
    assert client.post("/api/runs/{}/cancel".format(run_id)).get_json()["status"] == "cancelled"
    sio.disconnect()


@pytest.mark.databases("sqlite")
def test_delete_run(app, client):
    run_id = start_long_run(client)
    run_dir = on_server(app, client.get("/api/runs/{}".format(run_id)).get_json()["run_dir"])
    client.post("/api/runs/{}/cancel".format(run_id))
    assert client.delete("/api/runs/{}".format(run_id)).status_code == 204
    assert client.get("/api/runs/{}".format(run_id)).status_code == 404
    assert not os.path.exists(run_dir)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Sample.id)).where(Sample.run_id == run_id)) == 0


@pytest.mark.databases("sqlite")
def test_garbage_lines_do_not_stop_the_reader(app):
    workers = app.extensions["workers"]
    with app.app_context():
        run = Run(name="synthetic", status="running", config="{}")
        db.session.add(run)
        db.session.commit()
        run_id = run.id
        assert workers.handle_line(Run, run_id, "this is not json\n") is None
        assert workers.handle_line(Run, run_id, "[1, 2]\n") is None
        assert workers.handle_line(Run, run_id, '{"event": "sample", "epoch": 0}\n') is None  # incomplete
        event = workers.handle_line(Run, run_id, json.dumps(
            {"event": "started", "time": 1.0, "epochs": 3, "start_epoch": 0}))
        assert event["event"] == "started"
        db.session.expire_all()
        run = db.session.get(Run, run_id)
        assert run.status == "running" and run.epochs == 3
        run.status = "cancelled"
        db.session.commit()


@pytest.mark.parametrize("constraint, feasible, uses_budget, expected", [
    ("absolute", (True, True, False, True), (True,) * 4, "b"),
    ("soft", (True, True, False, True), (True,) * 4, "d"),
    ("absolute", (False, False, False, False), (True,) * 4, "c"),
    ("absolute", (True, True, False, True), (True, False, True, True), "d")])
def test_best_so_far_follows_the_search_rule(app, client, finished_run, constraint, feasible,
                                             uses_budget, expected):
    """While a run goes on, its best is the search's pick so far (search_core.best: a sample that
    meets the targets first, then one that uses the budget, then the most accurate; the highest
    objective with the soft form or while none is feasible), so that the best architecture can be
    downloaded before the end; the run says why it is the pick."""
    run, _ = finished_run
    arch = read_jsonl(os.path.join(on_server(app, run["run_dir"]), "samples.jsonl"))[0]["arch"]
    workers = app.extensions["workers"]
    with app.app_context():
        synthetic = Run(name="best so far", status="running",
                        config=json.dumps({"constraint": constraint}), val_size=400)
        db.session.add(synthetic)
        db.session.commit()
        for name, accuracy, objective, meets, uses in zip(
                "abcd", (0.5, 0.7, 0.9, 0.6), (0.5, 0.6, 0.9, 0.65), feasible, uses_budget):
            workers.handle_line(Run, synthetic.id, json.dumps({
                "event": "sample", "time": 1.0, "epoch": 0, "kind": "sampled", "arch": arch,
                "arch_hash": name * 64, "ops": [], "accuracy": accuracy, "latency_ms": 1.0,
                "objective": objective, "feasible": meets, "uses_budget": uses}))
        db.session.expire_all()
        synthetic = db.session.get(Run, synthetic.id)
        assert synthetic.best_sample.arch_hash == expected * 64
        run_id = synthetic.id
        synthetic.status = "cancelled"
        db.session.commit()
    why = client.get("/api/runs/{}".format(run_id)).get_json()["why"]
    assert why["architectures"] == 4 and why["feasible"] == sum(feasible)
    assert why["val_size"] == 400 and why["noise"] > 0
    if expected == "b":  # a and d met the target too: d is 10 points behind, beyond the noise
        assert [(r["arch_hash"][0], r["within_noise"]) for r in why["runners_up"]] == \
            [("d", False), ("a", False)]


@pytest.mark.databases("sqlite")
def test_a_restart_stops_an_orphaned_worker_and_resume_waits_for_it(app, client, tmp_path):
    """A worker that outlived the dashboard process that started it still holds its run
    directory: resume is refused while it does, and the next start stops it."""
    run_dir = tmp_path / "orphan-run"
    run_dir.mkdir()
    for name in ("config.json", "checkpoint.pt"):  # resumable, as far as the files go
        (run_dir / name).write_text("{}")
    holder = hold_run_directory(run_dir)
    try:
        with app.app_context():
            run = Run(name="orphan", status="interrupted", config="{}", run_dir=str(run_dir))
            db.session.add(run)
            db.session.commit()
            run_id = run.id
        response = client.post("/api/runs/{}/resume".format(run_id))
        assert response.status_code == 409
        assert "a worker (pid {}) still runs".format(holder.pid) in response.json["error"]
        with app.app_context():
            db.session.get(Run, run_id).status = "running"  # as the dead dashboard left it
            db.session.commit()
            app.extensions["workers"].mark_interrupted()  # what the next start does
            run = db.session.get(Run, run_id)
            assert run.status == "interrupted" and "worker {}".format(holder.pid) in run.message
        assert holder.wait(10) == -signal.SIGTERM
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.databases("sqlite")
def test_a_run_whose_end_cannot_be_stored_yet_fails_once_it_can(app, monkeypatch):
    """A full disk under the database: the worker's 'failed' event cannot be stored, nor its exit
    at first. The run must not stay 'running': the end is stored as soon as the database takes
    it, with the worker's own message."""
    with app.app_context():
        run = Run(name="disk full", status="running", config="{}")
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    failed = json.dumps({"event": "failed", "error": "No space left on device", "time": 1.0})
    process = subprocess.Popen([sys.executable, "-c", "print({!r}); raise SystemExit(1)".format(failed)],
                               stdout=subprocess.PIPE, text=True)
    commit, refusals = db.session.commit, [2]

    def full_disk_commit():
        if refusals[0]:
            refusals[0] -= 1
            raise sa.exc.OperationalError("COMMIT", {}, Exception("database or disk is full"))
        commit()

    monkeypatch.setattr(db.session, "commit", full_disk_commit)
    workers = app.extensions["workers"]
    with app.app_context():  # the worker thread's life once it is launched
        workers._follow(Worker(workers.kinds[Run], run_id, process=process))
    monkeypatch.undo()
    assert refusals == [0]
    with app.app_context():
        run = db.session.get(Run, run_id)
        assert run.status == "failed" and run.error == "No space left on device"


@pytest.mark.databases("sqlite")
def test_a_silent_worker_is_reported_and_cleared_when_it_speaks_again(app, client, monkeypatch):
    """A worker that sends nothing, not even its heartbeat, for WORKER_SILENCE_S: its run says so;
    its next line takes the warning back."""
    monkeypatch.setitem(app.config, "WORKER_SILENCE_S", 1.0)
    started = json.dumps({"event": "started", "time": 1.0, "epochs": 2})
    speaks = json.dumps({"event": "heartbeat", "time": 2.0})
    go = os.path.join(app.config["DATA_DIR"], "speak")  # silent until this file exists
    code = ("import os, time; print({!r}, flush=True)\nwhile not os.path.exists({!r}): "
            "time.sleep(0.05)\nprint({!r}, flush=True); time.sleep(30)").format(started, go, speaks)
    workers = app.extensions["workers"]
    monkeypatch.setattr(workers.kinds[Run], "prepare", lambda run: ([sys.executable, "-c", code],
                                                                     None))
    with app.app_context():
        run = Run(name="frozen", status="queued", config="{}", run_dir=str(app.config["DATA_DIR"]))
        db.session.add(run)
        db.session.flush()
        workers.submit(run)
        run_id = run.id
    try:
        def message():
            return client.get("/api/runs/{}".format(run_id)).get_json()["message"] or ""
        wait_for(lambda: "No word from the worker" in message(), 60, "the silence to be reported")
        assert "it may be frozen" in message()
        open(go, "w").close()
        wait_for(lambda: message() == "", 60, "the warning to be taken back")  # it spoke again
    finally:
        with app.app_context():
            workers.cancel(Run, run_id)


@pytest.mark.databases("sqlite")
def test_active_runs_without_worker_are_interrupted_on_start(app):
    with app.app_context():
        run = Run(name="orphan", status="running", config="{}")
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    # the next start, shut down again at once: two dashboards must not share one queue
    with dashboard_app(app.config["DATA_DIR"], LOCAL_AGENT=False,
                       SQLALCHEMY_DATABASE_URI=app.config["SQLALCHEMY_DATABASE_URI"]) as other:
        with other.app_context():
            assert db.session.get(Run, run_id).status == "interrupted"


def test_two_runs_and_the_web_server_write_at_once_and_lose_nothing(app, client):
    """Two workers' events are stored while the web server registers devices and reads: every
    sample and epoch of both runs is in the database, as in their run directories, and every
    device that was registered is there."""
    ids = [client.post("/api/runs", json=dict(TINY, name="together {}".format(i),
                                               samples_per_epoch=4)).get_json()["id"]
           for i in range(2)]
    names, both_running = [], False
    deadline = time.time() + 240
    while True:
        runs = [client.get("/api/runs/{}".format(i)).get_json() for i in ids]
        both_running = both_running or all(r["status"] == "running" for r in runs)
        if all(r["status"] not in ("queued", "running") for r in runs):
            break
        assert time.time() < deadline, runs
        name = "writer {}".format(len(names))
        r = client.post("/api/devices", json={"name": name, "host": "127.0.0.1", "port": 9,
                                              "token": "t"})
        assert r.status_code == 201, r.get_json()
        names.append(name)
        for run_id in ids:
            assert client.get("/api/runs/{}/samples".format(run_id)).status_code == 200
    assert [r["status"] for r in runs] == ["finished", "finished"], [r["error"] for r in runs]
    assert both_running and names
    for run in runs:
        stored = client.get("/api/runs/{}/samples".format(run["id"])).get_json()
        written = read_jsonl(os.path.join(on_server(app, run["run_dir"]), "samples.jsonl"))
        assert [(s["epoch"], s["kind"], s["arch_hash"], s["accuracy"]) for s in stored] == \
            [(s["epoch"], s["kind"], s["arch_hash"], s["accuracy"]) for s in written]
        assert [m["epoch"] for m in client.get("/api/runs/{}/metrics".format(run["id"])).get_json()] == [0, 1]
    devices = {d["name"]: d["id"] for d in client.get("/api/devices").get_json()}
    assert set(names) <= set(devices)
    for name in names:
        assert client.delete("/api/devices/{}".format(devices[name])).status_code == 204
