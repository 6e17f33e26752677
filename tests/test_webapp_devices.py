"""The device registry: the dashboard's own local agent process, a second real agent registered
over the API, checks, profiles, Socket.IO device_status events, bad input."""
import json
import os

import pytest

from helpers import TINY, run_reaches, wait_for
from processes import TOKEN, Agent, dashboard_app, socket_client
from webapp import create_app
from webapp.extensions import db

pytestmark = pytest.mark.process

AGENT_TIMEOUT = 10
# a profile measures as this dashboard's runs do: a quick routine here (the built-in one: 10
# calibration architectures, 5 warm-up and 20 timed runs each)
DASHBOARD_CONFIG = {"RUN_DEFAULTS": {"calibration_archs": 4, "measure_runs": 3, "measure_warmup": 1}}
TINY_RUN = dict(TINY, samples_per_epoch=1)


def finished(client, run_id):
    run = run_reaches(client, run_id, ("finished", "failed", "cancelled"))
    assert run["status"] == "finished", run
    return run


def local_device(client):
    def online():
        local = [d for d in client.get("/api/devices").get_json() if d["kind"] == "local"]
        return local[0] if local and local[0]["status"] == "online" else None
    return wait_for(online, 60, "the local device to come online")


def device_events(sio):
    return [e["args"][0]["device"] for e in sio.get_received() if e["name"] == "device_status"]


def test_local_device_is_a_real_agent_process(app, client):
    device = local_device(client)
    assert device["host"] == "127.0.0.1" and device["port"]
    assert device["info"]["device"] == "cpu" and device["info"]["threads"] == 1
    assert "token" not in device
    assert client.delete("/api/devices/{}".format(device["id"])).status_code == 409

    # the agent dies: a check reports it, starts it again on a new port, and it is online again
    registry = app.extensions["devices"]
    old_pid = registry.local.process.pid
    registry.local.process.kill()
    registry.local.process.wait()
    r = client.post("/api/devices/{}/check".format(device["id"]))
    assert r.status_code == 200
    assert r.get_json()["status"] == "online"
    assert registry.local.process.pid != old_pid


def test_an_agent_left_by_a_killed_dashboard_is_stopped(tmp_path):
    """SIGKILL gives the dashboard no chance to stop its agent: the next start does."""
    first = create_app({"DATA_DIR": str(tmp_path), "DEVICE_CHECK_INTERVAL_S": 0})
    with first.app_context():
        first.extensions["devices"].address(local_row(first))  # waits until the agent is up
    orphan = first.extensions["devices"].local.process
    first.extensions["devices"].local = None  # as if the dashboard had died without stopping it
    with dashboard_app(tmp_path) as second:
        with second.app_context():
            second.extensions["devices"].address(local_row(second))
        assert orphan.wait(10) is not None  # the stale agent was terminated
        assert second.extensions["devices"].local.alive()


def test_a_local_agent_that_died_comes_back_on_its_port(tmp_path):
    """A running search keeps the address it was given: a local agent that died is started again
    by the dashboard's device checks, on the same port, where the search's wait for it ends (it
    came back on a new port, and the search waited on the old one until it failed)."""
    with dashboard_app(tmp_path, DEVICE_CHECK_INTERVAL_S=0.2) as app:
        registry = app.extensions["devices"]
        with app.app_context():
            address = registry.address(local_row(app))
        died = registry.local.process
        died.kill()
        died.wait()
        wait_for(lambda: registry.local is not None and registry.local.process is not died
                 and registry.local.port is not None,  # its port is set once it listens
                 60, "the local agent to be started again")
        with app.app_context():
            assert registry.address(local_row(app)) == address
            client = registry.client(local_row(app))
            assert client.ping() > 0  # it answers there
            client.close()


def local_row(app):
    from webapp.models import Device
    return db.session.scalars(db.select(Device).where(Device.kind == "local")).one()


def test_register_check_profile_delete(app, client, agent):
    sio = socket_client(app)  # device_status goes to every client, no subscription needed
    r = client.post("/api/devices", json={"name": "nano1", "host": "127.0.0.1", "port": agent.port,
                                          "token": TOKEN})
    assert r.status_code == 201, r.get_json()
    device = r.get_json()
    assert device["status"] == "online" and device["error"] is None
    assert device["info"]["torch"] and device["info"]["hostname"]
    assert "token" not in device
    statuses = [d["status"] for d in device_events(sio) if d["id"] == device["id"]]
    assert statuses == ["checking", "online"]

    assert client.post("/api/devices", json={"name": "nano1", "host": "h", "port": 1,
                                             "token": "t"}).get_json()["errors"]["name"]

    r = client.post("/api/devices/{}/profile".format(device["id"]), json={"resolution": 32})
    assert r.status_code == 202 and r.get_json()["status"] == "profiling"
    assert client.post("/api/devices/{}/profile".format(device["id"])).status_code == 409  # busy
    done = wait_for(lambda: next((d for d in device_events(sio)
                                  if d["id"] == device["id"] and d["luts"]), None),
                    120, "the profile to finish")
    assert done["status"] == "online"
    [table] = done["luts"]
    assert (table["resolution"], table["width_mult"], table["num_classes"]) == (32, 0.5, 10)
    fit = table["calibration"]  # profiled and calibrated, as a run does
    assert fit["a"] > 0 and fit["archs"] == 4 and 0 <= fit["median_abs_error"] <= fit["max_abs_error"]
    r = client.get("/api/devices/{}/luts/{}.json".format(device["id"], table["id"]))
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    lut = json.loads(r.data)
    assert lut["format"] == "edge-nas.lut" and len(lut["blocks"]) == 20
    assert lut["calibration"] == fit and lut["device_id"] == table["device_key"]

    # a run on the profiled device, with that setting, uses the table instead of profiling again
    # its worker trains here with the threads a run on the local device gets (not all cores)
    unset = {k: v for k, v in TINY_RUN.items() if k != "threads"}
    r = client.post("/api/runs", json=dict(unset, name="on nano1", device_id=device["id"]))
    assert r.status_code == 201, r.get_json()
    threads = r.get_json()["config"]["threads"]
    spare = (os.cpu_count() or 1) - app.config["LOCAL_AGENT_THREADS"]
    assert threads == max(1, spare // app.config["MAX_RUNS"])
    run = finished(client, r.get_json()["id"])
    with open(os.path.join(app.config["DATA_DIR"], run["run_dir"], "lut.json")) as f:
        assert json.load(f) == lut  # its timings and fit alike: nothing was profiled
    after = client.get("/api/devices/{}".format(device["id"])).get_json()["luts"]
    assert [t["id"] for t in after] == [table["id"]] and after[0]["run_id"] is None
    assert client.get("/api/devices/{}/luts/{}.json".format(device["id"], table["id"] + 1)).status_code == 404
    assert table["backend"] == "pytorch"

    # the same setting in the onnxruntime backend: a table of its own, kept beside PyTorch's
    r = client.post("/api/devices/{}/profile".format(device["id"]), json={"backend": "tvm"})
    assert r.status_code == 400 and "backend" in r.get_json()["errors"]
    r = client.post("/api/devices/{}/profile".format(device["id"]),
                    json={"resolution": 32, "backend": "onnxruntime"})
    assert r.status_code == 202
    wait_for(lambda: len(client.get("/api/devices/{}".format(device["id"])).get_json()["luts"]) >= 2,
             120, "profiling in onnxruntime to finish")
    onnx, pytorch = client.get("/api/devices/{}".format(device["id"])).get_json()["luts"]
    assert pytorch == after[0] and onnx["backend"] == "onnxruntime"
    assert onnx["device_key"] == table["device_key"] + ":onnxruntime" and onnx["calibration"]["a"] > 0

    # the agent goes away: a check says offline, and why
    agent.stop()
    r = client.post("/api/devices/{}/check".format(device["id"]))
    assert r.get_json()["status"] == "offline" and r.get_json()["error"]

    assert client.delete("/api/devices/{}".format(device["id"])).status_code == 204
    assert client.get("/api/devices/{}".format(device["id"])).status_code == 404
    assert all(d["id"] != device["id"] for d in client.get("/api/devices").get_json())
    sio.disconnect()


def test_wrong_token_is_registered_offline_with_the_reason(client, tmp_path):
    other = Agent(tmp_path, timeout=10)
    try:
        r = client.post("/api/devices", json={"name": "wrong-token", "host": "127.0.0.1",
                                              "port": other.port, "token": "not-the-token"})
        assert r.status_code == 201
        device = r.get_json()
        assert device["status"] == "offline"
        assert "token" in device["error"].lower()
    finally:
        other.stop()
    assert client.post("/api/devices/{}/profile".format(device["id"])).status_code == 202
    wait_for(lambda: client.get("/api/devices/{}".format(device["id"])).get_json()["status"]
             != "profiling", 30, "the profile to fail")
    assert "profiling failed" in client.get("/api/devices/{}".format(device["id"])).get_json()["error"]
    assert client.get("/api/devices/{}".format(device["id"])).get_json()["luts"] == []


@pytest.mark.parametrize("body, fields", [
    ({}, {"name", "host", "token"}),
    ({"name": "a", "host": "h", "port": 70000, "token": "t"}, {"port"}),
    ({"name": "a", "host": "h", "port": True, "token": "t"}, {"port"}),
    ({"name": "a", "host": "two words", "token": "t"}, {"host"}),
    ({"name": " ", "host": "h", "token": ""}, {"name", "token"}),
    ({"name": "a", "host": "h", "token": "t", "extra": 1}, {"extra"}),
])
def test_registration_validation(client, body, fields):
    r = client.post("/api/devices", json=body)
    assert r.status_code == 400
    assert set(r.get_json()["errors"]) == fields


def test_bad_requests(client):
    assert client.post("/api/devices", data="not json", content_type="application/json").status_code == 400
    assert client.get("/api/devices/999").status_code == 404
    assert client.post("/api/devices/999/check").status_code == 404
    assert client.post("/api/devices/999/profile").status_code == 404
    assert client.delete("/api/devices/999").status_code == 404
    device = local_device(client)
    r = client.post("/api/devices/{}/profile".format(device["id"]), json={"resolution": 4})
    assert r.status_code == 400 and "resolution" in r.get_json()["errors"]
    r = client.post("/api/devices/{}/profile".format(device["id"]), json={"width_mult": "wide"})
    assert r.status_code == 400 and "width_mult" in r.get_json()["errors"]


def test_a_run_on_a_group_of_two_agents_outlives_one_of_them(app, client, tmp_path):
    """Two agents with one token form a group; a run measures on it, one agent is killed once
    the run measures, and the run finishes on the other with every sample stored."""
    agents = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        agents.append(Agent(tmp_path / str(i), timeout=AGENT_TIMEOUT))
    try:
        ids = [client.post("/api/devices", json={"name": "pool{}".format(i), "host": "127.0.0.1",
                                                 "port": a.port, "token": TOKEN}).get_json()["id"]
               for i, a in enumerate(agents)]
        other = client.post("/api/devices", json={"name": "other-token", "host": "127.0.0.1",
                                                  "port": agents[0].port, "token": "x"}).get_json()
        twin = client.post("/api/devices", json={"name": "pool0-again", "host": "127.0.0.1",
                                                 "port": agents[0].port, "token": TOKEN}).get_json()
        local = local_device(client)
        for body, field, message in (
                ({"name": "nanos", "device_ids": ids[:1]}, "device_ids", "two or more"),
                ({"name": "nanos", "device_ids": [ids[0], local["id"]]}, "device_ids", "local device"),
                ({"name": "nanos", "device_ids": [ids[0], other["id"]]}, "device_ids", "one token"),
                ({"name": "nanos", "device_ids": [ids[0], twin["id"]]}, "device_ids", "one agent"),
                ({"name": "", "device_ids": ids}, "name", "required")):
            r = client.post("/api/groups", json=body)
            assert r.status_code == 400 and message in r.get_json()["errors"][field], r.get_json()
        group = client.post("/api/groups", json={"name": "nanos", "device_ids": ids}).get_json()
        assert group["device_ids"] == ids and client.get("/api/groups").get_json() == [group]
        r = client.post("/api/groups", json={"name": "again", "device_ids": ids})
        assert "in group nanos already" in r.get_json()["errors"]["device_ids"]
        r = client.post("/api/groups", json={"name": " nanos ", "device_ids": [other["id"], twin["id"]]})
        assert r.get_json()["errors"]["name"] == "a group with this name exists"
        r = client.post("/api/devices", json={"name": "pool0", "host": "127.0.0.1", "port": 1,
                                               "token": TOKEN})
        assert r.status_code == 400 and r.get_json()["errors"] == {
            "name": "a device with this name exists"}
        assert client.post("/api/runs", json=dict(TINY_RUN, name="x", group_id=group["id"],
                                                  device_id=ids[0])).status_code == 400

        r = client.post("/api/runs", json=dict(TINY_RUN, name="on the pool", group_id=group["id"],
                                               samples_per_epoch=3))
        assert r.status_code == 201, r.get_json()
        run = r.get_json()
        assert run["device"] == "group nanos" and run["config"]["device_group"] == "nanos"
        def pool_of(device_id):
            return client.get("/api/devices/{}".format(device_id)).get_json()["pool"]
        wait_for(lambda: (pool_of(ids[0]) or {}).get("measured"), 120,
                 "the first agent to measure for the run")
        agents[0].stop()  # mid-run: the other agent measures the rest
        assert client.delete("/api/groups/{}".format(group["id"])).status_code == 409
        done = finished(client, run["id"])
        stored = client.get("/api/runs/{}/samples".format(run["id"])).get_json()
        with open(os.path.join(app.config["DATA_DIR"], done["run_dir"], "samples.jsonl")) as f:
            assert len(stored) == len(f.readlines()) == done["samples"] > 0
        with open(os.path.join(app.config["DATA_DIR"], done["run_dir"], "lut.json")) as f:
            assert json.load(f)["device_id"] == "group:nanos"  # one identity for the pool
        killed, alive = (pool_of(i) for i in ids)
        assert killed["run_id"] == alive["run_id"] == run["id"]  # the Devices page shows them
        assert killed["measured"] > 0 and killed["lost"] > 0  # it was tried after its end
        assert alive["measured"] > 0 and alive["lost"] == 0 and alive["pending"] == 0
    finally:
        for agent in agents:
            agent.stop()
    assert client.delete("/api/groups/{}".format(group["id"])).status_code == 204
    assert all(client.get("/api/devices/{}".format(i)).get_json()["group_id"] is None for i in ids)
    assert client.get("/api/runs/{}".format(run["id"])).get_json()["device"] == "pool0"
