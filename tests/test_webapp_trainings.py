"""Retraining from the dashboard: real `train` workers on a tiny run's data, followed over
Socket.IO; the trained weights and their ONNX export downloaded and run."""
import io
import json
from types import SimpleNamespace

import numpy
import onnxruntime
import pytest
import torch

from nano_agent.arch import Architecture
from nano_agent.builder import build_model
from webapp.extensions import db
from webapp.models import Run, Training
from webapp.workers.training import train_command, write_training_files
from processes import socket_client
from helpers import TINY, received, run_reaches, training_reaches, wait_for

pytestmark = pytest.mark.process


RUN = {}


@pytest.fixture(scope="module", autouse=True)
def finished(app, client):
    r = client.post("/api/runs", json=dict(TINY, name="to retrain"))
    assert r.status_code == 201, r.get_json()
    RUN.update(run_reaches(client, r.get_json()["id"], ("finished", "failed")))
    assert RUN["status"] == "finished", RUN
    assert RUN["reference"]["arch_hash"] and "arch" not in RUN["reference"]  # its JSON stays stored


def retrain(client, **body):
    r = client.post("/api/runs/{}/trainings".format(RUN["id"]), json=body)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def test_retraining_the_best_sample_gives_weights_and_an_onnx_that_runs(app, client):
    sio = socket_client(app)
    assert sio.emit("subscribe", {"run_id": RUN["id"]}, callback=True) == {"ok": True}
    best = RUN["best"]
    training = retrain(client, sample_id=best["id"], epochs=2, seed=3)
    # queued, or already taken by the scheduler when the answer is written (a free slot)
    assert training["status"] in ("queued", "running")
    assert training["label"] == "sample #{}".format(best["number"])
    done = training_reaches(client, RUN["id"], training["id"], ("finished", "failed"))
    assert done["status"] == "finished", done
    assert 0 <= done["test_accuracy"] <= 1 and done["epoch"] == 2 and done["seed"] == 3
    assert done["files"] == ["weights.pt", "model.onnx"]
    pushed = []

    def finished_pushed():  # the last event is emitted just after the row seen above
        pushed.extend(p["training"] for _, p in received(sio, "training"))
        return pushed and pushed[-1]["status"] == "finished"
    wait_for(finished_pushed, 30, lambda _: "the training's last event; got {}".format(pushed))
    sio.disconnect()
    assert [t["status"] for t in pushed][-1] == "finished"
    assert "running" in [t["status"] for t in pushed] and pushed[-1]["test_accuracy"] == done["test_accuracy"]

    arch = Architecture.from_dict(client.get("/api/runs/{}/best.json".format(RUN["id"])).get_json())
    r = client.get("/api/trainings/{}/weights.pt".format(training["id"]))
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    model = build_model(arch).eval()
    model.load_state_dict(torch.load(io.BytesIO(r.data), weights_only=True))  # strict: it fits
    r = client.get("/api/trainings/{}/model.onnx".format(training["id"]))
    assert r.status_code == 200 and r.headers["Content-Disposition"].endswith(".onnx")
    session = onnxruntime.InferenceSession(r.data, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["edge-nas.arch_hash"] == best["arch_hash"]
    x = numpy.random.default_rng(0).standard_normal((2,) + tuple(arch.input_shape[1:])).astype("float32")
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert numpy.abs(session.run(None, {"input": x})[0] - expected).max() <= 1e-4


def test_the_reference_is_retrainable_like_any_sample(client):
    training = retrain(client, reference=True, epochs=1)
    assert training["label"] == "MobileNetV2" and training["sample_id"] is None
    assert training["arch_hash"] == RUN["reference"]["arch_hash"]
    assert training["seed"] == RUN["config"]["seed"]  # the run's, when not given
    assert training_reaches(client, RUN["id"], training["id"], ("finished", "failed"))["status"] == "finished"


@pytest.mark.parametrize("body, field", [
    ({"sample_id": 10 ** 9}, "sample_id"), ({}, "sample_id"),
    ({"reference": True, "sample_id": 1}, "sample_id"), ({"reference": "yes"}, "sample_id"),
    ({"reference": True, "epochs": 0}, "epochs"), ({"reference": True, "epochs": 1.5}, "epochs"),
    ({"reference": True, "seed": -1}, "seed"), ({"reference": True, "lr": 1}, "lr"),
])
def test_bad_retraining_requests_are_refused_per_field(client, body, field):
    before = client.get("/api/runs/{}/trainings".format(RUN["id"])).get_json()
    r = client.post("/api/runs/{}/trainings".format(RUN["id"]), json=body)
    assert r.status_code == 400 and field in r.get_json()["errors"], r.get_json()
    assert client.get("/api/runs/{}/trainings".format(RUN["id"])).get_json() == before


def test_files_of_a_training_that_did_not_finish_are_not_found(client):
    assert client.get("/api/trainings/999999/model.onnx").status_code == 404
    assert client.post("/api/runs/999999/trainings", json={"reference": True}).status_code == 404
    training = retrain(client, reference=True, epochs=5000)
    r = client.get("/api/trainings/{}/weights.pt".format(training["id"]))
    error = r.get_json()["error"]
    assert r.status_code == 404 and ("queued" in error or "running" in error)
    assert client.delete("/api/runs/{}".format(RUN["id"])).status_code == 409  # its training runs
    r = client.post("/api/trainings/{}/cancel".format(training["id"]))
    assert r.status_code == 200 and r.get_json()["status"] == "cancelled"
    assert client.post("/api/trainings/{}/cancel".format(training["id"])).status_code == 409
    assert client.get("/api/trainings/{}/model.onnx".format(training["id"])).status_code == 404


def test_a_dataset_that_does_not_fit_fails_the_training_and_keeps_the_run(app, client, tmp_path):
    """The run's data changed under it (here: its settings name an image folder of 3 RGB
    classes): the training fails with what does not fit; the run and its samples stay."""
    from PIL import Image
    for name in ("red", "green", "blue"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / name / "{}.png".format(i))
    with app.app_context():
        run = db.session.get(Run, RUN["id"])
        config = run.config_data
        run.config_data = dict(config, dataset="imagefolder", data_dir=str(tmp_path))
        db.session.commit()
    samples = client.get("/api/runs/{}/samples".format(RUN["id"])).get_json()
    try:
        training = retrain(client, sample_id=samples[0]["id"], epochs=1)
        failed = training_reaches(client, RUN["id"], training["id"], ("finished", "failed"))
    finally:
        with app.app_context():
            db.session.get(Run, RUN["id"]).config_data = config
            db.session.commit()
    assert failed["status"] == "failed" and "imagefolder images have 3" in failed["error"], failed
    assert client.get("/api/runs/{}/samples".format(RUN["id"])).get_json() == samples


def test_trainings_left_running_by_a_dead_dashboard_are_interrupted(app):
    with app.app_context():
        stale = Training(run_id=RUN["id"], arch_hash="0" * 64, arch_json=json.dumps({}),
                         label="sample #0", status="running", epochs=1, seed=0, pid=1)
        db.session.add(stale)
        db.session.commit()
        app.extensions["workers"].mark_interrupted()
        db.session.refresh(stale)
        assert stale.status == "interrupted" and stale.pid is None and "restarted" in stale.error


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_retraining_trains_on_the_path_its_run_trained_on(tmp_path, fast_path):
    from search_core import cli
    training = SimpleNamespace(directory=str(tmp_path), epochs=3, seed=0, arch_json="{}")
    write_training_files(training, {"dataset": "digits", "seed": 0, "fast_path": fast_path,
                                    "strategy": "evolution"})  # what it does not take is left
    args = cli._train_settings(cli.parser().parse_args(train_command(training)[3:]))
    assert args.fast_path is fast_path and args.dataset == "digits"
