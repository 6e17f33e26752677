"""The /api blueprint and the RunManager, with real worker subprocesses on tiny settings."""
import csv
import io
import json
import os
import time

import pytest

from webapp import create_app, db
from webapp.models import Run, Sample
from webapp.pareto import pareto_front

TINY = {"epochs": 2, "warmup_epochs": 1, "limit": 64, "batch_size": 32, "samples_per_epoch": 2,
        "measure_runs": 3, "measure_warmup": 1, "threads": 1, "calibration_archs": 3,
        "resolution": 32}
EVENTS = []


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("webapp_api")
    app = create_app({"DATA_DIR": str(data_dir), "TESTING": True,
                      "RUNS_ON_EVENT": lambda run_id, event: EVENTS.append((run_id, event))})
    yield app
    with app.app_context():
        app.extensions["runs"].shutdown(grace_s=2)
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def wait_for(client, run_id, statuses, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = client.get("/api/runs/{}".format(run_id)).get_json()
        if run["status"] in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError("run {} still {} after {} s".format(run_id, run["status"], timeout))


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def finished_run(client):
    r = client.post("/api/runs", json=dict(TINY, name="tiny"))
    assert r.status_code == 201, r.get_json()
    run = wait_for(client, r.get_json()["id"], ("finished", "failed"))
    assert run["status"] == "finished", run
    return run


def test_run_completes_and_matches_run_dir(app, client, finished_run):
    run_id, run_dir = finished_run["id"], finished_run["run_dir"]
    assert finished_run["epochs"] == 2 and finished_run["best"] is not None
    assert finished_run["config"]["calibration_archs"] == 3  # settings without a CLI flag arrive too
    file_samples = read_jsonl(os.path.join(run_dir, "samples.jsonl"))
    assert file_samples
    api_samples = client.get("/api/runs/{}/samples".format(run_id)).get_json()
    assert [s["arch_hash"] for s in api_samples] == [s["arch_hash"] for s in file_samples]
    with app.app_context():
        rows = db.session.scalars(db.select(Sample).where(Sample.run_id == run_id)
                                  .order_by(Sample.id)).all()
        assert [(s.epoch, s.kind, s.arch_hash) for s in rows] == \
            [(s["epoch"], s["kind"], s["arch_hash"]) for s in file_samples]
        assert len(db.session.get(Run, run_id).epoch_metrics) == 2

    # incremental fetch
    after = client.get("/api/runs/{}/samples?after={}".format(run_id, api_samples[0]["id"]))
    assert [s["id"] for s in after.get_json()] == [s["id"] for s in api_samples[1:]]

    # the Pareto front, recomputed over samples.jsonl
    expected = pareto_front([(i, s["latency_ms"], s["accuracy"]) for i, s in enumerate(file_samples)])
    front = client.get("/api/runs/{}/pareto".format(run_id)).get_json()
    assert [p["arch_hash"] for p in front] == [file_samples[i]["arch_hash"] for i, _, _ in expected]
    assert {"id", "latency_ms", "accuracy", "arch_hash"} <= set(front[0])

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
    kinds = [e["event"] for rid, e in EVENTS if rid == run_id]
    assert kinds[0] in ("message", "started") and "finished" in kinds


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "bogus": 1}, "bogus"),
    ({"name": "x", "dataset": "imagenet-22k"}, "dataset"),
    ({"name": "x", "epochs": 2, "warmup_epochs": 3}, "warmup_epochs"),
    ({"name": "x", "target_latency_ms": -1.0}, "target_latency_ms"),
    ({"name": "x", "epochs": "many"}, "epochs"),
    ({"dataset": "digits"}, "name"),
])
def test_validation(client, body, field):
    r = client.post("/api/runs", json=body)
    assert r.status_code == 400
    assert field in r.get_json()["errors"]


def test_unknown_run_404(client):
    assert client.get("/api/runs/999999").status_code == 404
    for path in ("cancel", "resume"):
        r = client.post("/api/runs/999999/{}".format(path))
        assert r.status_code == 404 and "error" in r.get_json()
    for path in ("samples", "pareto", "best.json", "samples.csv"):
        r = client.get("/api/runs/999999/{}".format(path))
        assert r.status_code == 404 and "error" in r.get_json()


def test_finished_run_conflicts(client, finished_run):
    assert client.post("/api/runs/{}/cancel".format(finished_run["id"])).status_code == 409
    assert client.post("/api/runs/{}/resume".format(finished_run["id"])).status_code == 409


def test_cancel_and_resume(app, client):
    r = client.post("/api/runs", json=dict(TINY, name="long", epochs=300, warmup_epochs=300))
    run_id, run_dir = r.get_json()["id"], r.get_json()["run_dir"]
    runs = app.extensions["runs"]
    deadline = time.time() + 60
    while time.time() < deadline:  # the first progress stored, and a checkpoint to resume from
        run = client.get("/api/runs/{}".format(run_id)).get_json()
        assert run["status"] in ("queued", "running"), run
        if run["phase"] and os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no progress stored")
    assert client.post("/api/runs/{}/resume".format(run_id)).status_code == 409  # still running
    with app.app_context():
        pid = db.session.get(Run, run_id).pid
    r = client.post("/api/runs/{}/cancel".format(run_id))
    assert r.status_code == 200 and r.get_json()["status"] == "cancelled"
    assert not runs.is_alive(run_id)
    with pytest.raises(ProcessLookupError):  # reaped: the process is gone
        os.kill(pid, 0)
    assert client.post("/api/runs/{}/cancel".format(run_id)).status_code == 409

    r = client.post("/api/runs/{}/resume".format(run_id))
    assert r.status_code == 200, r.get_json()
    run = wait_for(client, run_id, ("running", "failed"), timeout=60)
    assert run["status"] == "running", run
    deadline = time.time() + 5  # on_event runs just after the commit the client saw
    while not [e for rid, e in EVENTS if rid == run_id and e["event"] == "started"
               and e["start_epoch"] > 0]:  # continued from the checkpoint
        assert time.time() < deadline, "the resumed worker did not start from its checkpoint"
        time.sleep(0.05)
    assert client.post("/api/runs/{}/cancel".format(run_id)).get_json()["status"] == "cancelled"


def test_garbage_lines_do_not_stop_the_reader(app):
    runs = app.extensions["runs"]
    with app.app_context():
        run = Run(name="synthetic", status="queued", config="{}")
        db.session.add(run)
        db.session.commit()
        run_id = run.id
        assert runs.handle_line(run_id, "this is not json\n") is None
        assert runs.handle_line(run_id, "[1, 2]\n") is None
        assert runs.handle_line(run_id, '{"event": "sample", "epoch": 0}\n') is None  # incomplete
        event = runs.handle_line(run_id, json.dumps(
            {"event": "started", "time": 1.0, "epochs": 3, "start_epoch": 0}))
        assert event["event"] == "started"
        db.session.expire_all()
        run = db.session.get(Run, run_id)
        assert run.status == "running" and run.epochs == 3
        run.status = "cancelled"
        db.session.commit()


def test_active_runs_without_worker_are_interrupted_on_start(app):
    with app.app_context():
        run = Run(name="orphan", status="running", config="{}")
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    other = create_app({"DATA_DIR": app.config["DATA_DIR"], "TESTING": True})
    with other.app_context():
        assert db.session.get(Run, run_id).status == "interrupted"
        db.session.remove()
