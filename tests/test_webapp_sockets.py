"""Socket.IO: rooms and their validation with Flask-SocketIO's test client, and the real server
(`python -m webapp`) in both async modes, followed by a real Socket.IO client over WebSocket."""
import json
import threading
import time

import engineio
import pytest
import socketio as socketio_client

from helpers import TINY
from processes import Dashboard, socket_client
from webapp.extensions import db
from webapp.models import Run

pytestmark = pytest.mark.unit

DASHBOARD_CONFIG = {"LOCAL_AGENT": False}


def make_run(app, name):
    with app.app_context():
        run = Run(name=name, status="running", config="{}")
        db.session.add(run)
        db.session.commit()
        return run.id


def line(run_id, **event):
    return json.dumps(dict(event, time=time.time()))


@pytest.mark.parametrize("payload", [None, {}, {"run_id": "1"}, {"run_id": True}, [1], "1",
                                     {"run_id": 10 ** 30}, {"run_id": 0}, {"run_id": -1}])
def test_subscribe_validates_its_payload(app, payload):
    sio = socket_client(app)
    reply = sio.emit("subscribe", payload, callback=True)
    assert reply["ok"] is False and "run_id" in reply["error"]
    sio.disconnect()


def test_subscribe_and_unsubscribe_without_a_payload_get_an_answer(app):
    sio = socket_client(app)
    for event in ("subscribe", "unsubscribe"):
        reply = sio.emit(event, callback=True)  # no argument at all, not even null
        assert reply["ok"] is False and "run_id" in reply["error"]
    sio.disconnect()


def test_rooms_keep_runs_apart(app):
    first, second = make_run(app, "first"), make_run(app, "second")
    a, b = socket_client(app), socket_client(app)
    assert a.emit("subscribe", {"run_id": 10 ** 6}, callback=True)["ok"] is False  # unknown run
    assert a.emit("subscribe", {"run_id": first}, callback=True) == {"ok": True}
    assert b.emit("subscribe", {"run_id": second}, callback=True) == {"ok": True}
    workers = app.extensions["workers"]
    with app.app_context():
        workers.handle_line(Run, first, line(first, event="message", text="hello first"))
        workers.handle_line(Run, second, line(second, event="progress", phase="warmup", epoch=0, epochs=4,
                                      step=1, steps=2, loss=2.0, accuracy=0.1))
    got_a = [(e["name"], e["args"][0]) for e in a.get_received()]
    got_b = [(e["name"], e["args"][0]) for e in b.get_received()]
    assert [(name, p["text"]) for name, p in got_a] == [("run_message", "hello first")]
    assert got_a[0][1]["run_id"] == first and got_a[0][1]["time"] > 0
    assert [name for name, _ in got_b] == ["run_progress"]
    assert got_b[0][1]["fraction"] == pytest.approx(0.125)  # (0 + 1/2) / 4
    assert b.emit("unsubscribe", {"run_id": second}, callback=True) == {"ok": True}
    with app.app_context():
        workers.handle_line(Run, second, line(second, event="message", text="after leaving"))
    assert b.get_received() == []
    a.disconnect()
    b.disconnect()


def test_a_lost_device_shows_in_the_runs_progress_until_it_is_back(app):
    run_id = make_run(app, "lost device")
    sio = socket_client(app)
    assert sio.emit("subscribe", {"run_id": run_id}, callback=True) == {"ok": True}
    workers = app.extensions["workers"]
    with app.app_context():
        workers.handle_line(Run, run_id, line(run_id, event="progress", phase="search", epoch=3, epochs=4,
                                      step=10, steps=20, loss=1.0, accuracy=0.5))
        workers.handle_line(Run, run_id, line(run_id, event="device_wait", waiting=True, waited_s=31.0,
                                      limit_s=600.0, error="device agent is unreachable"))
        assert db.session.get(Run, run_id).progress_data["device_wait"]["waited_s"] == 31.0
        workers.handle_line(Run, run_id, line(run_id, event="device_wait", waiting=False, waited_s=45.0,
                                      limit_s=600.0, error=None))
        assert db.session.get(Run, run_id).progress_data["device_wait"] is None
    pushed = [e["args"][0] for e in sio.get_received() if e["name"] == "run_progress"]
    assert [p["device_wait"] for p in pushed] == [
        None, {"error": "device agent is unreachable", "waited_s": 31.0, "limit_s": 600.0,
               "since": pytest.approx(pushed[1]["time"] - 31.0)}, None]
    assert all(p["phase"] == "search" and p["epoch"] == 3 for p in pushed)  # the progress stays
    sio.disconnect()


def test_the_reference_point_is_kept_on_the_run_and_pushed(app):
    run_id = make_run(app, "reference")
    sio = socket_client(app)
    assert sio.emit("subscribe", {"run_id": run_id}, callback=True) == {"ok": True}
    workers = app.extensions["workers"]
    with app.app_context():
        workers.handle_line(Run, run_id, line(run_id, event="reference", name="mobilenetv2", epoch=3,
                                      kind="reference", arch_hash="ab" * 32, ops=["k3_e6"] * 20,
                                      accuracy=0.81, latency_ms=1.5, arch={"blocks": []}))
        reference = db.session.get(Run, run_id).reference_data
    assert reference["name"] == "mobilenetv2" and reference["accuracy"] == 0.81
    assert reference["arch"] == {"blocks": []}  # kept on the run, to retrain it
    pushed = [e["args"][0] for e in sio.get_received() if e["name"] == "run_reference"]
    public = {k: v for k, v in reference.items() if k != "arch"}  # the point, not its JSON
    assert [p["reference"] for p in pushed] == [public]
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + app.config["TOKEN"]
    assert client.get("/api/runs/{}".format(run_id)).get_json()["reference"] == public
    sio.disconnect()


@pytest.mark.process
@pytest.mark.parametrize("mode", ["threading", "eventlet"])
def test_real_server_pushes_a_run_over_websocket(tmp_path, mode):
    dashboard = Dashboard(tmp_path, mode)
    base = dashboard.url
    try:
        events, finished = [], threading.Event()
        client = socketio_client.Client()

        @client.on("*")
        def any_event(name, payload):
            events.append((name, payload))
            if name == "run_status" and payload["run"]["status"] in ("finished", "failed"):
                finished.set()

        client.connect(base, transports=["websocket"], wait_timeout=10, auth={"token": dashboard.token})
        run = dashboard.http.post(base + "/api/runs", json=dict(TINY, name=mode), timeout=30).json()
        assert client.call("subscribe", {"run_id": run["id"]}, timeout=10) == {"ok": True}
        assert finished.wait(120), events[-3:]
        client.disconnect()
        assert events[-1][1]["run"]["status"] == "finished"
        samples = dashboard.http.get(base + "/api/runs/{}/samples".format(run["id"]), timeout=5).json()
        pushed = [p["sample"]["id"] for name, p in events if name == "sample"]
        assert pushed and pushed == [s["id"] for s in samples]
        assert dashboard.http.get(base + "/runs/{}".format(run["id"]), timeout=5).status_code == 200
    finally:
        dashboard.stop()
    assert "Traceback" not in dashboard.output()


@pytest.mark.process
def test_engineio_sessions_that_never_connect_are_capped_and_closed(tmp_path):
    """Plain Engine.IO websockets that answered pings but never sent Socket.IO's CONNECT were
    kept forever, a thread and a descriptor each (200 held 806 threads): an address may hold
    PER_ADDRESS such sessions at once, each for DEADLINE_S at most; a client that connects with
    the token stays."""
    from webapp.sockets import PreAuthGuard
    dashboard = Dashboard(tmp_path)
    member = socketio_client.Client()
    idle = []

    def open_idle():
        client = engineio.Client()
        client.connect(dashboard.url, transports=["websocket"], engineio_path="socket.io")
        idle.append(client)

    try:
        member.connect(dashboard.url, transports=["websocket"], wait_timeout=10,
                       auth={"token": dashboard.token})
        for _ in range(PreAuthGuard.PER_ADDRESS):
            open_idle()
        with pytest.raises(engineio.exceptions.ConnectionError):
            open_idle()
        deadline = time.time() + PreAuthGuard.DEADLINE_S + 20
        while True:  # the server closes them after its deadline: the address has room again
            try:
                open_idle()
                break
            except engineio.exceptions.ConnectionError:
                assert time.time() < deadline, "the idle sessions were kept"
                time.sleep(0.5)
        assert member.connected and member.call("subscribe", {"run_id": 10 ** 6},
                                                timeout=10)["ok"] is False  # still served
    finally:
        member.disconnect()
        dashboard.stop()  # ends the idle sessions too


def test_the_runs_list_hears_every_runs_row_and_its_deletion(app):
    """The runs list's room: a row whenever a run's status, epoch or best changes, and the end of
    a deleted run; a client that did not join hears none of it."""
    run_id = make_run(app, "listed")
    listing, other = socket_client(app), socket_client(app)
    assert listing.emit("subscribe_runs", callback=True) == {"ok": True}
    workers = app.extensions["workers"]
    with app.app_context():
        workers.handle_line(Run, run_id, line(run_id, event="epoch", epoch=0, phase="warmup",
                                      train_loss=2.0, train_accuracy=0.1))
        db.session.get(Run, run_id).status = "failed"  # so that it can be deleted
        db.session.commit()
    rows = [e["args"][0]["run"] for e in listing.get_received() if e["name"] == "run_row"]
    assert [(row["id"], row["name"], row["epoch"]) for row in rows] == [(run_id, "listed", 0)]
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + app.config["TOKEN"]
    listed = next(r for r in client.get("/api/runs").get_json() if r["id"] == run_id)
    assert set(rows[0]) == set(listed)  # the row as the list API gives it
    assert client.delete("/api/runs/{}".format(run_id)).status_code == 204
    assert [(e["name"], e["args"][0]) for e in listing.get_received()] == [
        ("run_deleted", {"run_id": run_id})]
    assert other.get_received() == []
    listing.disconnect()
    other.disconnect()
