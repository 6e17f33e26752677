"""The run queue: at most MAX_RUNS workers (searches and retrainings) run at once, the others wait
as `queued`, first in line first; a queued run or retraining can be cancelled, a queued run
deleted; a restarted dashboard goes on with its queue. Real workers on the dashboard's local
agent."""
import os
import threading
import time

import pytest
import sqlalchemy as sa

from nano_agent.space import SearchSpace
from processes import dashboard_app, socket_client
from search_core.settings import SearchConfig
from webapp.extensions import db
from webapp.models import Run
from helpers import TINY, bearer_client, received, run_reaches, training_reaches, wait_for

pytestmark = pytest.mark.process

DASHBOARD_CONFIG = {"MAX_RUNS": 1}
DATABASES = ("sqlite", "postgresql")


def test_runs_wait_their_turn_one_at_a_time_in_order(app, client):
    sio = socket_client(app)
    ids = [client.post("/api/runs", json=dict(TINY, name="q{}".format(i))).get_json()["id"]
           for i in range(4)]
    for run_id in ids:
        assert sio.emit("subscribe", {"run_id": run_id}, callback=True) == {"ok": True}
    run_reaches(client, ids[0], ("running", "finished", "failed"))  # the scheduler's turn
    runs = [client.get("/api/runs/{}".format(i)).get_json() for i in ids]
    assert [r["queue_position"] for r in runs] == [None, 1, 2, 3]
    cancelled = client.post("/api/runs/{}/cancel".format(ids[2])).get_json()
    assert cancelled["status"] == "cancelled" and cancelled["queue_position"] is None
    assert client.delete("/api/runs/{}".format(ids[3])).status_code == 204
    assert client.get("/api/runs/{}".format(ids[1])).get_json()["queue_position"] in (1, None)

    running_at_once = 0
    deadline = time.time() + 240
    while True:
        statuses = [client.get("/api/runs/{}".format(i)).get_json()["status"] for i in ids[:2]]
        running_at_once = max(running_at_once, statuses.count("running"))
        if all(s not in ("queued", "running") for s in statuses):
            break
        assert time.time() < deadline, statuses
        time.sleep(0.1)
    assert statuses == ["finished", "finished"] and running_at_once == 1
    first, second = (client.get("/api/runs/{}".format(i)).get_json() for i in ids[:2])
    assert second["started_at"] >= first["finished_at"]  # in order, one at a time
    assert client.get("/api/runs/{}".format(ids[2])).get_json()["started_at"] is None  # never ran

    pushed = [p["run"] for _, p in received(sio, "run_status") if p["run_id"] == ids[1]]
    queued = [r["queue_position"] for r in pushed if r["status"] == "queued"]
    assert queued and queued[-1] == 1  # it heard itself move up the line
    assert [r["status"] for r in pushed][-1] == "finished"
    sio.disconnect()


def test_a_retraining_waits_for_a_slot_as_a_run_does(app, client, database):
    """One slot: a retraining asked for while a search runs waits as queued (it would compete with
    the search for the cores) and starts once the search ends."""
    if database != "sqlite":
        pytest.skip("the queue's, whatever the database")
    arch = SearchSpace(0.5, 32, 10, 1).mobilenet_v2()  # a finished run's reference, to retrain
    with app.app_context():
        run = Run(name="to retrain", status="finished", run_dir=app.config["DATA_DIR"])
        run.config_data = SearchConfig(**TINY).to_dict()
        run.reference_data = {"name": "mobilenetv2", "arch": arch.to_dict(), "arch_hash": arch.hash}
        db.session.add(run)
        db.session.commit()
        done = {"id": run.id}
    busy = client.post("/api/runs", json=dict(TINY, name="busy", epochs=300,
                                              warmup_epochs=300)).get_json()
    run_reaches(client, busy["id"], ("running",))
    training = client.post("/api/runs/{}/trainings".format(done["id"]),
                           json={"reference": True, "epochs": 1}).get_json()
    url = "/api/runs/{}".format(busy["id"])
    wait_for(lambda: (client.get(url).get_json()["progress"] or {}).get("step"), 120,
             "the search to train while the retraining waits")
    waiting = training_reaches(client, done["id"], training["id"], ("queued", "running"))
    assert waiting["status"] == "queued"
    dropped = client.post("/api/runs/{}/trainings".format(done["id"]),
                          json={"reference": True, "epochs": 1}).get_json()
    r = client.post("/api/trainings/{}/cancel".format(dropped["id"]))  # it leaves the queue
    assert r.status_code == 200 and r.get_json()["status"] == "cancelled"
    assert client.post(url + "/cancel").get_json()["status"] == "cancelled"
    trained = training_reaches(client, done["id"], training["id"])
    assert trained["status"] == "finished", trained
    dropped = training_reaches(client, done["id"], dropped["id"])
    assert dropped["status"] == "cancelled" and dropped["epoch"] is None  # never started


@pytest.mark.parametrize("when", ["while it is placed", "once it is placed"])
def test_a_cancel_that_lands_while_the_worker_starts_is_not_lost(app, client, database,
                                                                  monkeypatch, when):
    """Regression: a cancel that found no worker while the runner was registering one (after its
    last look at the status) was acknowledged, and the run went on to finish. The cancel lands
    while the executor places the worker (a Ray node may take a while), or just after, before the
    worker is registered."""
    if database != "sqlite":
        pytest.skip("the race is the lifecycle's, whatever the database")
    workers = app.extensions["workers"]
    launch, cancelled, started, created = workers.executor.launch, [], [], threading.Event()

    def cancel_now():
        created.wait(30)  # its id is known
        answer = threading.Thread(target=lambda: cancelled.append(bearer_client(app).post(
            "/api/runs/{}/cancel".format(run_id)).get_json()))
        answer.start()
        answer.join()

    def cancelled_meanwhile(*args, **kwargs):
        if when == "while it is placed":
            cancel_now()
        process = launch(*args, **kwargs)
        started.append(process)
        if when == "once it is placed":
            cancel_now()
        return process

    monkeypatch.setattr(workers.executor, "launch", cancelled_meanwhile)
    run_id = client.post("/api/runs", json=dict(TINY, name="cancelled at launch")).get_json()["id"]
    created.set()
    run_reaches(client, run_id, ("cancelled", "finished", "failed"))
    assert cancelled and cancelled[0]["status"] == "cancelled"
    assert workers.wait(Run, run_id, 60)
    [process] = started
    assert process.poll() is not None  # stopped, not left to run
    run = client.get("/api/runs/{}".format(run_id)).get_json()
    assert run["status"] == "cancelled" and run["best"] is None


@pytest.mark.databases("sqlite")  # the lifecycle's, whatever the database
def test_a_run_cancelled_while_its_worker_is_placed_is_deleted_at_once(app, client, monkeypatch):
    """Seen in a browser test: a run cancelled while the executor placed its worker showed
    "cancelled", and a delete then was refused (409) until the placing thread had stopped it."""
    workers = app.extensions["workers"]
    launch, placing, release = workers.executor.launch, threading.Event(), threading.Event()

    def slow_launch(*args, **kwargs):
        placing.set()
        release.wait(60)
        return launch(*args, **kwargs)

    monkeypatch.setattr(workers.executor, "launch", slow_launch)
    run_id = client.post("/api/runs", json=dict(TINY, name="deleted at launch")).get_json()["id"]
    assert placing.wait(60)
    assert client.post("/api/runs/{}/cancel".format(run_id)).get_json()["status"] == "cancelled"
    deleted = []
    deleting = threading.Thread(target=lambda: deleted.append(
        bearer_client(app).delete("/api/runs/{}".format(run_id)).status_code))
    deleting.start()
    release.set()  # the worker is placed now, and stopped by its own thread
    deleting.join(60)
    assert deleted == [204]
    assert client.get("/api/runs/{}".format(run_id)).status_code == 404


def test_a_new_run_never_takes_over_a_directory_left_by_another(app, client, database):
    """SQLite gave a deleted run's id to a new run after a lost WAL, and the new run resumed the
    checkpoint left in runs/<id>: a new run's directory is now one that no run has used."""
    if database != "sqlite":
        pytest.skip("the directory is the dashboard's, whatever the database")
    with app.app_context():
        next_id = (db.session.scalar(sa.select(sa.func.max(Run.id))) or 0) + 1
    left = os.path.join(app.config["DATA_DIR"], "runs", str(next_id))
    os.makedirs(left)
    with open(os.path.join(left, "config.json"), "w") as f:
        f.write("{}")  # another run's, in the directory the new run's id would name
    run = client.post("/api/runs", json=dict(TINY, name="fresh")).get_json()
    try:
        assert run["id"] == next_id
        assert os.path.basename(run["run_dir"]) == "{}-2".format(next_id)
        with open(os.path.join(left, "config.json")) as f:
            assert f.read() == "{}"
    finally:
        client.post("/api/runs/{}/cancel".format(run["id"]))
        run_reaches(client, run["id"], ("cancelled", "finished", "failed"))


def test_a_restarted_dashboard_goes_on_with_its_queue(tmp_path, request, database):
    config = {"MAX_RUNS": 1}
    if database == "postgresql":  # a database of its own: the module's app must not see it
        config["SQLALCHEMY_DATABASE_URI"] = request.getfixturevalue("postgres").database()
    with dashboard_app(tmp_path, **config) as app:
        client = bearer_client(app)
        long = client.post("/api/runs", json=dict(TINY, name="long", epochs=300,
                                                   warmup_epochs=300)).get_json()["id"]
        waiting = client.post("/api/runs", json=dict(TINY, name="waiting")).get_json()["id"]
        wait_for(lambda: client.get("/api/runs/{}".format(long)).get_json()["phase"], 60,
                 "the long run to train")
        assert client.get("/api/runs/{}".format(waiting)).get_json()["queue_position"] == 1
    # the dashboard stopped: its running search with it; the queued one waits in the database
    with dashboard_app(tmp_path, **config) as app:
        client = bearer_client(app)
        assert client.get("/api/runs/{}".format(long)).get_json()["status"] == "cancelled"
        assert run_reaches(client, waiting, ("finished", "failed"))["status"] == "finished"
