"""The Ray executor against a real Ray cluster on this machine: a head and two worker nodes, each
with processes of its own (ray.cluster_utils.Cluster, what Ray tests itself with). A run on Ray
ends with the same files and rows as a local run, and its best architecture retrains there; a run
whose worker node is killed, or whose worker dies, resumes from its checkpoint by itself, at most
three times; runs beyond the cluster's room wait in the queue, and settings it cannot use are
refused, saying why."""
import os
import subprocess
import sys
import time
from datetime import datetime

import pytest
import ray
from ray.cluster_utils import Cluster

from processes import ROOT, dashboard_app, free_port
from search_core.rundir import RunDirectory
from helpers import TINY, bearer_client, read_jsonl, run_reaches, training_reaches
from webapp.executors import LOST_AFTER_S, RAY_USAGE_STATS
from webapp.models import Run
from webapp.workers import MAX_RETRIES

pytestmark = pytest.mark.process

SEARCH = dict(TINY, seed=3)
LONGER = dict(SEARCH, epochs=5, warmup_epochs=2)  # epochs enough to be killed in the middle


@pytest.fixture(scope="module")
def cluster():
    """The head takes no work (0 CPUs): every worker runs on one of the two worker nodes."""
    os.environ[RAY_USAGE_STATS] = "0"  # nothing leaves this machine
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def ray_app(cluster, tmp_path_factory):
    with dashboard_app(tmp_path_factory.mktemp("ray-dashboard"), EXECUTOR="ray",
                       RAY_ADDRESS=cluster.address, MAX_RUNS=1) as app:
        yield app


def node_of(cluster, worker):
    """The worker node that runs a run's or a retraining's worker (its node id as they show it)."""
    nodes = [n for n in cluster.worker_nodes if n.node_id[:12] in (worker["node"] or "")]
    assert len(nodes) == 1, (worker["node"], [n.node_id for n in cluster.worker_nodes])
    return nodes[0]


def stored(client, run_id):
    """What the database holds of a run: its samples (epoch, kind, hash) and its epochs."""
    samples = client.get("/api/runs/{}/samples".format(run_id)).get_json()
    metrics = client.get("/api/runs/{}/metrics".format(run_id)).get_json()
    return ([(s["epoch"], s["kind"], s["arch_hash"]) for s in samples],
            [(m["epoch"], m["phase"]) for m in metrics])


def on_disk(app, run):
    run_dir = os.path.join(app.config["DATA_DIR"], run["run_dir"])
    samples = [(s["epoch"], s["kind"], s["arch_hash"])
               for s in read_jsonl(os.path.join(run_dir, "samples.jsonl"))]
    return sorted(os.listdir(run_dir)), samples


def run_to_the_end(client, settings, timeout=240):
    run_id = client.post("/api/runs", json=settings).get_json()["id"]
    return run_reaches(client, run_id, ("finished", "failed", "cancelled"), timeout)


def test_a_run_on_ray_ends_with_the_files_and_rows_of_a_local_run(cluster, ray_app, tmp_path):
    with dashboard_app(tmp_path, MAX_RUNS=1) as local_app:
        local_client = bearer_client(local_app)
        local = run_to_the_end(local_client, dict(SEARCH, name="local"))
        local = local_client.get("/api/runs/{}".format(local["id"])).get_json()
        local_rows, local_files = stored(local_client, local["id"]), on_disk(local_app, local)
    client = bearer_client(ray_app)
    remote = run_to_the_end(client, dict(SEARCH, name="on ray"))
    remote = client.get("/api/runs/{}".format(remote["id"])).get_json()

    assert local["status"] == remote["status"] == "finished", remote["error"]
    assert local["node"] is None and node_of(cluster, remote) is not None
    assert remote["retries"] == [] and remote["best"] is not None
    files, samples = on_disk(ray_app, remote)
    assert files == local_files[0]  # the same files, written on the Ray node
    rows, metrics = stored(client, remote["id"])
    assert sorted(rows) == sorted(samples)  # the database holds what the worker wrote
    # the same shape of run: its epochs, and its samples per epoch and kind (its finalists, as
    # many as came near T by this run's measurements, apart)
    assert metrics == local_rows[1]
    assert sorted(r[:2] for r in rows if r[1] != "final") == \
        sorted(r[:2] for r in local_rows[0] if r[1] != "final")
    assert {r[0] for r in rows if r[1] == "final"} <= {SEARCH["epochs"]}

    # its best architecture retrained on a Ray node too: weights and ONNX come back
    r = client.post("/api/runs/{}/trainings".format(remote["id"]), json={"sample_id": remote["best"]["id"], "epochs": 1})
    assert r.status_code == 201, r.get_json()
    training = training_reaches(client, remote["id"], r.get_json()["id"])
    assert training["status"] == "finished", training["error"]
    assert node_of(cluster, training) and training["files"] == ["weights.pt", "model.onnx"]
    assert client.get("/api/trainings/{}/model.onnx".format(training["id"])).status_code == 200


def wait_for_epoch(client, run_id, epoch, timeout=120):
    """Until the run has finished ``epoch`` (its checkpoint is on disk)."""
    deadline = time.time() + timeout
    while True:
        run = client.get("/api/runs/{}".format(run_id)).get_json()
        metrics = client.get("/api/runs/{}/metrics".format(run_id)).get_json()
        if len(metrics) > epoch:
            return run
        assert run["status"] in ("queued", "running") and time.time() < deadline, run
        time.sleep(0.2)


def test_a_run_whose_worker_node_is_killed_resumes_on_another(cluster, ray_app):
    client = bearer_client(ray_app)
    run_id = client.post("/api/runs", json=dict(LONGER, name="node killed")).get_json()["id"]
    run = wait_for_epoch(client, run_id, 1)
    victim = node_of(cluster, run)
    killed_at = time.time()
    cluster.remove_node(victim, allow_graceful=False)  # its raylet and workers, SIGKILL
    try:
        run = run_reaches(client, run_id, ("finished", "failed", "cancelled"), 240)
        assert run["status"] == "finished", run["error"]
        (retry,) = run["retries"]
        assert victim.node_id[:12] in retry["node"] and "Actor" in retry["error"]
        noticed_s = datetime.fromisoformat(retry["time"]).timestamp() - killed_at
        assert noticed_s < LOST_AFTER_S, noticed_s  # within two heartbeats
        assert node_of(cluster, run) is not victim  # resumed on the node that is left

        rows, metrics = stored(client, run_id)
        files, samples = on_disk(ray_app, run)
        assert sorted(rows) == sorted(samples) and len(set(rows)) == len(rows)
        assert [m[0] for m in metrics] == list(range(LONGER["epochs"]))  # no epoch lost
        assert {r[0] for r in rows if r[1] != "final"} == \
            set(range(LONGER["warmup_epochs"], LONGER["epochs"]))
        assert {r[0] for r in rows if r[1] == "final"} <= {LONGER["epochs"]}  # at the end, once
    finally:
        cluster.add_node(num_cpus=1)  # two worker nodes again
        cluster.wait_for_nodes()


def test_a_run_lost_more_than_three_times_fails_saying_so(ray_app):
    client = bearer_client(ray_app)
    workers = ray_app.extensions["workers"]
    run_id = client.post("/api/runs", json=dict(LONGER, name="lost again")).get_json()["id"]
    killed = []
    deadline = time.time() + 240
    while True:
        run = client.get("/api/runs/{}".format(run_id)).get_json()
        if run["status"] not in ("queued", "running"):
            break
        worker = workers._workers.get((Run, run_id))
        if worker is not None and worker.process is not None and \
                worker.process.pid not in killed and run["phase"]:
            killed.append(worker.process.pid)  # its worker trains: kill its actor's process
            ray.kill(worker.process.actor, no_restart=True)
        assert time.time() < deadline, run
        time.sleep(0.1)
    assert len(killed) == MAX_RETRIES + 1
    assert run["status"] == "failed" and len(run["retries"]) == MAX_RETRIES
    assert "lost {} times".format(MAX_RETRIES + 1) in run["error"]
    run_dir = os.path.join(ray_app.config["DATA_DIR"], run["run_dir"])
    assert RunDirectory(run_dir).worker() is None  # no worker of it is left behind


@pytest.mark.parametrize("args, error", [
    (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:{port}"], "no Ray head answers at 127.0.0.1:"),
])
def test_the_dashboard_refuses_a_ray_setting_it_cannot_use(tmp_path, args, error):
    args = [a.format(port=free_port()) for a in args]
    result = subprocess.run([sys.executable, "-m", "webapp", "--data-dir", str(tmp_path),
                             "--no-local-agent"] + args,
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and error in result.stderr, result.stderr


def test_runs_beyond_the_clusters_room_wait_in_the_queue(ray_app):
    """Each worker node has 1 CPU: of three 1-thread runs two run at once and the third waits in
    the queue, saying for what, until a node frees up; a run of 2 threads, which no node has,
    fails at once saying so."""
    client = bearer_client(ray_app)
    too_big = client.post("/api/runs", json=dict(SEARCH, name="too big", threads=2)).get_json()
    failed = run_reaches(client, too_big["id"], ("finished", "failed", "cancelled"), 30)
    assert failed["status"] == "failed" and "no Ray node has 2 CPU(s) (the largest has 1 CPU(s))" \
        in failed["error"], failed

    ray_app.config["MAX_RUNS"] = 3  # the cluster's room, not the queue's cap, decides
    try:
        ids = [client.post("/api/runs", json=dict(SEARCH, name="room {}".format(i))).get_json()["id"]
               for i in range(3)]
        running_at_once, messages = 0, set()
        deadline = time.time() + 180
        while True:
            runs = [client.get("/api/runs/{}".format(i)).get_json() for i in ids]
            running_at_once = max(running_at_once, sum(r["status"] == "running" for r in runs))
            messages.update(r["message"] for r in runs if r["status"] == "queued")
            if all(r["status"] not in ("queued", "running") for r in runs):
                break
            assert time.time() < deadline, runs
            time.sleep(0.1)
    finally:
        ray_app.config["MAX_RUNS"] = 1
    assert [r["status"] for r in runs] == ["finished"] * 3, [r["error"] for r in runs]
    assert running_at_once == 2 and "Waiting for a Ray node with 1 CPU(s) free." in messages
    last = max(runs, key=lambda r: r["started_at"])
    assert last["started_at"] >= min(r["finished_at"] for r in runs if r is not last)


def test_a_worker_that_cannot_start_on_its_node_says_why(ray_app, tmp_path):
    """A node that lacks the run directory (storage not shared): the error names the cause."""
    executor = ray_app.extensions["executor"]
    missing = str(tmp_path / "not-mounted" / "worker.log")
    with pytest.raises(RuntimeError, match="could not start on the Ray node: FileNotFoundError.*"
                                           "not-mounted.*mounts at the same path"):
        executor.launch([sys.executable, "-c", "print()"], missing, None, {"num_cpus": 1})


def test_a_dashboard_without_a_ray_address_starts_a_ray_of_its_own(cluster):
    """Not the cluster already running on this machine, which a plain ray.init() joins: an
    embedded dashboard's runs then waited for that cluster's room (and died with its nodes)."""
    code = ("import ray; from webapp.executors import RayExecutor; executor = RayExecutor(); "
            "print(ray.get_runtime_context().gcs_address, flush=True); executor.close()")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    own = out.split()[-1]
    assert own.rsplit(":", 1)[1] != cluster.address.rsplit(":", 1)[1], (own, cluster.address)
