"""Specialising from the dashboard: a tiny run's trained supernet searched again for a new target
by a real `specialise` worker through the queue, training nothing; its pick downloaded, retrained,
and its test accuracy shown with it."""
import json
import os

import pytest

from helpers import TINY, received, run_reaches, training_reaches, wait_for
from processes import free_port, socket_client
from webapp.extensions import db
from webapp.models import Device, Run, Specialisation

pytestmark = pytest.mark.process

DASHBOARD_CONFIG = {"MAX_RUNS": 1}  # one slot: a specialisation waits its turn as a run does

RUN = {}


@pytest.fixture(scope="module", autouse=True)
def finished(app, client):
    r = client.post("/api/runs", json=dict(TINY, name="to specialise"))
    assert r.status_code == 201, r.get_json()
    RUN.update(run_reaches(client, r.get_json()["id"], ("finished", "failed")))
    assert RUN["status"] == "finished", RUN


def run_target():
    return RUN["resolved"].get("target_latency_ms") or RUN["config"]["target_latency_ms"]


def specialise(client, **body):
    r = client.post("/api/runs/{}/specialisations".format(RUN["id"]), json=body)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def specialisation_reaches(client, specialisation_id, statuses=("finished", "failed", "cancelled"),
                           timeout=180):
    last = {}

    def reached():
        last["s"] = client.get("/api/specialisations/{}".format(specialisation_id)).get_json()
        return last["s"] if last["s"]["status"] in statuses else None
    return wait_for(reached, timeout, lambda _: "specialisation {} to be one of {}: {}".format(
        specialisation_id, statuses, last["s"]), interval=0.2)


def test_a_run_is_specialised_for_a_new_target_and_its_pick_is_retrained(app, client):
    sio = socket_client(app)
    assert sio.emit("subscribe", {"run_id": RUN["id"]}, callback=True) == {"ok": True}
    samples_before = client.get("/api/runs/{}/samples".format(RUN["id"])).get_json()
    target = round(1.5 * run_target(), 3)
    queued = specialise(client, target_latency_ms=target, generations=2)
    assert queued["status"] == "queued" and queued["device_id"] == RUN["device_id"]
    assert queued["backend"] == RUN["config"]["backend"] and queued["pick"] is None
    done = specialisation_reaches(client, queued["id"])
    assert done["status"] == "finished", done
    pick = done["pick"]
    assert pick["latency_ms"] > 0 and 0 < pick["accuracy"] <= 1 and pick["test_accuracy"] is None
    assert pick["latency_ratio"] == pytest.approx(pick["latency_ms"] / target)
    assert done["generation"] == done["generations"] == 2
    pushed = [p["specialisation"]["status"] for _, p in received(sio, "specialisation")]
    assert pushed[0] == "queued" and pushed[-1] == "finished"  # live, in its run's room
    sio.disconnect()

    # the worker's own record: trained nothing, named its parent, wrote the pick it reported
    with app.app_context():
        run_dir = db.session.get(Run, RUN["id"]).run_dir
    directory = os.path.join(run_dir, "specialisations", str(done["id"]))
    with open(os.path.join(directory, "summary.json")) as f:
        summary = json.load(f)
    assert summary["parent"] == os.path.abspath(run_dir) and summary["generations"] == 2
    assert not os.path.exists(os.path.join(directory, "checkpoint.pt"))
    assert summary["best"]["arch_hash"] == pick["arch_hash"]
    r = client.get("/api/specialisations/{}/best_arch.json".format(done["id"]))
    assert r.status_code == 200 and r.get_json() == summary["best"]["arch"]
    # the run itself is as it was: its samples and its pick
    assert client.get("/api/runs/{}/samples".format(RUN["id"])).get_json() == samples_before
    assert client.get("/api/runs/{}".format(RUN["id"])).get_json()["best"] == RUN["best"]

    r = client.post("/api/runs/{}/trainings".format(RUN["id"]),
                    json={"specialisation_id": done["id"], "epochs": 1})
    assert r.status_code == 201, r.get_json()
    training = r.get_json()
    assert training["arch_hash"] == pick["arch_hash"]
    assert training["label"] == "pick for {:g} ms".format(target)
    trained = training_reaches(client, RUN["id"], training["id"])
    assert trained["status"] == "finished", trained
    [listed] = [s for s in client.get("/api/runs/{}/specialisations".format(RUN["id"])).get_json()
                if s["id"] == done["id"]]
    assert listed["pick"]["test_accuracy"] == trained["test_accuracy"]


def test_a_specialisation_waits_in_the_queue_and_leaves_it_when_cancelled(app, client):
    busy = client.post("/api/runs", json=dict(TINY, name="busy", epochs=300,
                                              warmup_epochs=300)).get_json()
    run_reaches(client, busy["id"], ("running",))
    waiting = specialise(client, target_latency_ms=run_target(), generations=1)
    try:
        assert specialisation_reaches(client, waiting["id"], ("queued", "running"))["status"] == \
            "queued"
        r = client.post("/api/specialisations/{}/cancel".format(waiting["id"]))
        assert r.status_code == 200 and r.get_json()["status"] == "cancelled"
    finally:
        assert client.post("/api/runs/{}/cancel".format(busy["id"])).status_code == 200
    dropped = client.get("/api/specialisations/{}".format(waiting["id"])).get_json()
    assert dropped["status"] == "cancelled" and dropped["generation"] is None  # never started
    assert client.post("/api/specialisations/{}/cancel".format(waiting["id"])).status_code == 409


def test_a_front_across_targets_picks_for_each_fraction_of_the_uniform_expectation(client):
    r = client.post("/api/runs/{}/specialisations/front".format(RUN["id"]),
                    json={"fractions": [0.6, 1.0], "generations": 1})
    assert r.status_code == 201, r.get_json()
    asked = r.get_json()
    assert [(s["target_latency_fraction"], s["target_latency_ms"]) for s in asked] == \
        [(0.6, None), (1.0, None)]  # each worker turns its fraction into T, on its device's table
    done = [specialisation_reaches(client, s["id"]) for s in asked]
    assert [s["status"] for s in done] == ["finished", "finished"], done
    low, high = (s["target_latency_ms"] for s in done)
    assert high / low == pytest.approx(1.0 / 0.6, rel=1e-2)  # one table, two fractions of it
    assert all(s["pick"]["latency_ratio"] == pytest.approx(s["pick"]["latency_ms"] /
                                                           s["target_latency_ms"]) for s in done)
    r = client.post("/api/runs/{}/specialisations/front".format(RUN["id"]),
                    json={"targets": 4, "generations": 1})
    assert [s["target_latency_fraction"] for s in r.get_json()] == [0.4, 0.6, 0.8, 1.0]
    for s in r.get_json():  # the fractions were the point here: not their picks
        assert client.post("/api/specialisations/{}/cancel".format(s["id"])).status_code == 200
    for body, field in (({"fractions": []}, "fractions"), ({"fractions": "all"}, "fractions"),
                        ({"targets": 1}, "targets"), ({"targets": 21}, "targets"),
                        ({"fractions": [0]}, "target_latency_fraction"),
                        ({"fractions": [0.5], "target_latency_ms": 2}, "target_latency_ms")):
        r = client.post("/api/runs/{}/specialisations/front".format(RUN["id"]), json=body)
        assert r.status_code == 400 and field in r.get_json()["errors"], (body, r.get_json())


def table_measured(client, sio):
    """The run's cross-device table once the measuring asked for last ended."""
    def ended():
        pushed = [p["table"] for _, p in received(sio, "cross_table")]
        return next((t for t in pushed if not t["measuring"]), None)
    wait_for(ended, 120, "the cross-device table's measuring to end")
    table = client.get("/api/runs/{}/cross_table".format(RUN["id"])).get_json()
    assert not table["measuring"]
    return table


def test_every_pick_is_measured_on_every_device_and_runtime_it_was_picked_for(app, client):
    r = client.post("/api/runs/{}/cross_table".format(RUN["id"]))
    assert r.status_code == 409 and "one device and runtime" in r.get_json()["error"]
    onnx = specialisation_reaches(client, specialise(
        client, backend="onnxruntime", target_latency_fraction=1.0, generations=1)["id"])
    assert onnx["status"] == "finished", onnx
    sio = socket_client(app)
    assert sio.emit("subscribe", {"run_id": RUN["id"]}, callback=True) == {"ok": True}
    r = client.post("/api/runs/{}/cross_table".format(RUN["id"]))
    assert r.status_code == 202 and r.get_json()["measuring"], r.get_json()
    table = table_measured(client, sio)
    assert [(c["device_id"], c["backend"]) for c in table["columns"]] == \
        [(RUN["device_id"], "pytorch"), (RUN["device_id"], "onnxruntime")]
    first, last = table["rows"][0], table["rows"][-1]
    assert first["specialisation_id"] is None and first["arch_hash"] == RUN["best"]["arch_hash"]
    assert (first["own_column"], last["specialisation_id"], last["own_column"]) == \
        (0, onnx["id"], 1)
    finished = [s for s in client.get("/api/runs/{}/specialisations".format(RUN["id"])).get_json()
                if s["status"] == "finished"]
    assert len(table["rows"]) == 1 + len(finished)  # the search's pick and every finished one
    for row in table["rows"]:
        for cell in row["cells"]:
            assert cell["error"] is None and cell["latency_ms"] > 0, row
            assert cell["latency_ratio"] == pytest.approx(cell["latency_ms"] /
                                                          row["target_latency_ms"])
            assert cell["within_target"] == (cell["latency_ratio"] <= 1)
    # the same network in two runtimes: two measurements, not one copied
    assert first["cells"][0]["latency_ms"] != first["cells"][1]["latency_ms"]

    # a device that cannot be reached: its cells say why, the others are measured as before
    with app.app_context():
        gone = Device(name="unplugged", host="127.0.0.1", port=free_port(), token="t")
        db.session.add(gone)
        db.session.flush()
        db.session.add(Specialisation(run_id=RUN["id"], status="finished", device_id=gone.id,
                                      backend="pytorch", generations=1,
                                      target_latency_ms=run_target(),
                                      pick=db.session.get(Specialisation, onnx["id"]).pick))
        db.session.commit()
        gone_id = gone.id
    assert client.post("/api/runs/{}/cross_table".format(RUN["id"])).status_code == 202
    table = table_measured(client, sio)
    assert table["columns"][-1]["device"] == "unplugged"
    for row in table["rows"]:
        assert row["cells"][-1]["latency_ms"] is None and row["cells"][-1]["error"], row
        assert all(cell["latency_ms"] > 0 for cell in row["cells"][:-1]), row
    with app.app_context():  # a device that a specialisation measures on stays
        measuring = db.session.scalars(db.select(Specialisation).filter_by(device_id=gone_id)).one()
        measuring.status = "running"
        db.session.commit()
        r = client.delete("/api/devices/{}".format(gone_id))
        assert r.status_code == 409 and "active specialisation" in r.get_json()["error"]
        measuring.status = "finished"
        db.session.commit()
    assert client.delete("/api/devices/{}".format(gone_id)).status_code == 204
    table = client.get("/api/runs/{}/cross_table".format(RUN["id"])).get_json()
    assert len(table["columns"]) == 2 and all(len(row["cells"]) == 2 for row in table["rows"])
    sio.disconnect()


@pytest.mark.parametrize("body, field", [
    ({"target_latency_ms": -1}, "target_latency_ms"),
    ({"target_latency_ms": "fast"}, "target_latency_ms"),
    ({"backend": "tvm"}, "backend"),
    ({"target_memory_mb": 0}, "target_memory_mb"),
    ({"generations": 0}, "generations"),
    ({"generations": True}, "generations"),
    ({"device_id": 999999}, "device_id"),
    ({"group_id": 999999}, "group_id"),
    ({"device_id": None}, "device_id"),
    ({"epochs": 3}, "epochs"),
])
def test_bad_specialisation_requests_are_refused_per_field(client, body, field):
    r = client.post("/api/runs/{}/specialisations".format(RUN["id"]), json=body)
    assert r.status_code == 400 and field in r.get_json()["errors"], r.get_json()


def test_only_a_finished_run_with_its_supernet_is_specialised(app, client):
    with app.app_context():
        run = Run(name="never trained", status="failed", config=json.dumps(dict(TINY)))
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    r = client.post("/api/runs/{}/specialisations".format(run_id), json={"target_latency_ms": 1})
    assert r.status_code == 409 and "finished run" in r.get_json()["error"]
    assert client.get("/api/specialisations/999999").status_code == 404
    assert client.post("/api/runs/999999/specialisations", json={}).status_code == 404
    assert client.post("/api/runs/999999/specialisations/front", json={}).status_code == 404
    r = client.post("/api/runs/{}/trainings".format(RUN["id"]), json={"specialisation_id": 999999})
    assert r.status_code == 400 and "specialisation_id" in r.get_json()["errors"]
