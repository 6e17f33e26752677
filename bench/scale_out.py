"""Measurement throughput of a device pool with 1, 2 and 3 agents, what the pool costs, and how
long a run on the Ray executor takes to come back after its worker node is killed.

Real agent processes on loopback (1 torch thread each) measure tiny architectures of the digits
setting (32x32x1, width 0.5; 1 warm-up and 3 timed runs each), so that the agents, not the
machine's cores, bound the throughput as far as that goes: on 2 cores, 3 agents share 2 cores.
Every count measures the same `--archs` random members, fresh (no cache), through
`DevicePool.measure_many`, in each of `--rounds` rounds, the counts in a rotated order (each count
first in turn: no count gains from going first or warm), and the figure is the rounds' median;
the pool's own cost per measurement is the time through a pool of one
agent minus the time through that agent's client directly, alternated over `--rounds` rounds.

Ray: a real cluster on this machine (a head without CPUs and two worker nodes of 1 CPU, each its
own processes) runs a dashboard's search (the digits setting, 1 thread); after each of
`--ray-kills` finished epochs the node that runs it is killed (SIGKILL to its raylet and workers)
and a fresh node joins. Per kill: `noticed_s` (the retry recorded on the run), `placed_s` (the
resumed worker runs on the other node), `training_s` (its first progress event stored) and
`next_epoch_s` (the next finished epoch stored), all from the kill.

    .venv/bin/python bench/scale_out.py [--archs 60] [--rounds 6] [--max-agents 3] [--ray-kills 3]

Ends with one JSON line: `per_minute` (measurements per minute per agent count, the median of the
rounds; `per_minute_range` their slowest and fastest), `speedup` over
one agent, `pool_overhead_ms` (per measurement, median over the rounds), the members' shares, and
`ray_recovery` (the figures above per kill, and their medians).
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nano_agent.space import SearchSpace  # noqa: E402
from search_core.device_client import AgentDevice  # noqa: E402
from search_core.pool import DevicePool  # noqa: E402
from webapp.workers import MAX_RETRIES  # noqa: E402

TOKEN = "bench-token"
SPACE = SearchSpace(0.5, 32, 10, 1)
WARMUP, RUNS = 1, 3


def start_agent(directory):
    proc = subprocess.Popen(
        [sys.executable, "-m", "nano_agent", "--host", "127.0.0.1", "--port", "0", "--token", TOKEN,
         "--threads", "1", "--config", os.path.join(directory, "agent.json")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    return proc, int(line.split("127.0.0.1:")[1].split()[0])


def archs(count, seed):
    rng = random.Random(seed)
    return [SPACE.architecture([rng.randrange(len(b.ops)) for b in SPACE.blocks])
            for _ in range(count)]


def agent(port):
    return AgentDevice("127.0.0.1", port, TOKEN, WARMUP, RUNS)


def timed(call):
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def pool_figures(args):
    with tempfile.TemporaryDirectory() as tmp:
        agents = []
        for i in range(args.max_agents):
            os.makedirs(os.path.join(tmp, str(i)))
            agents.append(start_agent(os.path.join(tmp, str(i))))
        try:
            ports = [port for _, port in agents]
            batch = archs(args.archs, 0)
            for port in ports:  # every agent builds and times once before the clock starts
                agent(port).measure(batch[0])
            counts = list(range(1, args.max_agents + 1))
            seconds, shares = {count: [] for count in counts}, {}
            for r in range(args.rounds):  # each count first, second, ... in turn: no order's luck
                for count in counts[r % len(counts):] + counts[:r % len(counts)]:
                    pool = DevicePool([agent(port) for port in ports[:count]],
                                      ["127.0.0.1:{}".format(port) for port in ports[:count]],
                                      "bench")
                    seconds[count].append(timed(lambda: pool.measure_many(batch)))
                    shares[count] = [m["measured"] for m in pool.stats()]
                    pool.close()
            per_minute = {count: round(60.0 * len(batch) / statistics.median(seconds[count]), 1)
                          for count in counts}
            spread = {count: [round(60.0 * len(batch) / max(seconds[count]), 1),
                              round(60.0 * len(batch) / min(seconds[count]), 1)] for count in counts}
            for count in counts:
                print("{} agent(s): {:.0f} measurements per minute (median of {} rounds; {} to {}),"
                      " shares {}".format(count, per_minute[count], args.rounds, *spread[count],
                                          shares[count]), flush=True)
            overheads = []
            small = batch[: max(10, args.archs // 3)]
            for _ in range(args.rounds):
                direct = agent(ports[0])
                pool = DevicePool([agent(ports[0])], ["127.0.0.1:{}".format(ports[0])], "one")
                runs = {"plain": lambda: [direct.measure(a) for a in small],
                        "pooled": lambda: pool.measure_many(small)}
                order = ["plain", "pooled"] if len(overheads) % 2 == 0 else ["pooled", "plain"]
                seconds = {name: timed(runs[name]) for name in order}  # alternately first
                plain, pooled = seconds["plain"], seconds["pooled"]
                overheads.append(1000.0 * (pooled - plain) / len(small))
                direct.close()
                pool.close()
            print("pool overhead per measurement: {:.2f} ms (median of {} rounds)".format(
                statistics.median(overheads), len(overheads)), flush=True)
        finally:
            for proc, _ in agents:
                proc.terminate()
                proc.wait(10)
    return {"archs": args.archs, "rounds": args.rounds, "per_minute": per_minute,
            "per_minute_range": spread,
            "speedup": {n: round(v / per_minute[1], 2) for n, v in per_minute.items()},
            "shares": shares, "pool_overhead_ms": round(statistics.median(overheads), 3),
            "pool_overhead_rounds_ms": [round(x, 3) for x in overheads]}


RAY_RUN = {"name": "killed", "epochs": 8, "warmup_epochs": 1, "limit": 64, "batch_size": 32,
           "samples_per_epoch": 2, "measure_runs": 3, "measure_warmup": 1, "threads": 1,
           "calibration_archs": 3, "resolution": 32}


def ray_recovery(kills):
    """Kill the node of a running search `kills` times; the times until it is back, per kill."""
    from ray.cluster_utils import Cluster

    from webapp import create_app, shutdown
    from webapp.executors import RAY_USAGE_STATS
    os.environ[RAY_USAGE_STATS] = "0"  # nothing leaves this machine
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    figures = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            app = create_app({"DATA_DIR": tmp, "EXECUTOR": "ray", "RAY_ADDRESS": cluster.address,
                              "MAX_RUNS": 1, "DEVICE_CHECK_INTERVAL_S": 0})
            try:
                client = app.test_client()
                client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + app.config["TOKEN"]
                run_id = client.post("/api/runs", json=RAY_RUN).get_json()["id"]
                for kill in range(kills):
                    figures.append(_kill_and_time(client, cluster, run_id, 2 * kill + 1))
                    print("kill {}: {}".format(kill + 1, figures[-1]), flush=True)
            finally:
                shutdown(app)
    finally:
        cluster.shutdown()
    keys = ("noticed_s", "placed_s", "training_s", "next_epoch_s")
    return {"kills": figures,
            "median": {k: round(statistics.median(f[k] for f in figures), 2) for k in keys}}


def _kill_and_time(client, cluster, run_id, epoch):
    """After `epoch` finished epochs, kill the run's node; seconds until each sign of recovery."""
    def state():
        run = client.get("/api/runs/{}".format(run_id)).get_json()
        assert run["status"] in ("queued", "running"), run
        return run, len(client.get("/api/runs/{}/metrics".format(run_id)).get_json())

    run, done = state()
    while done < epoch or not run["node"]:
        time.sleep(0.05)
        run, done = state()
    victim = next(n for n in cluster.worker_nodes if n.node_id[:12] in run["node"])
    killed = time.time()
    cluster.remove_node(victim, allow_graceful=False)
    cluster.add_node(num_cpus=1)  # the cluster is whole again, as an autoscaler would make it
    times, retries = {}, len(run["retries"])
    while "next_epoch_s" not in times:
        run, now_done = state()
        signs = {"noticed_s": len(run["retries"]) > retries,
                 "placed_s": run["status"] == "running" and run["node"]
                 and victim.node_id[:12] not in run["node"],
                 "training_s": bool(run["phase"]) and "placed_s" in times,
                 "next_epoch_s": now_done > done}
        for key, seen in signs.items():
            if seen and key not in times:
                times[key] = round(time.time() - killed, 2)
        time.sleep(0.05)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", type=int, default=60)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--max-agents", type=int, default=3)
    p.add_argument("--ray-kills", type=int, default=3, help="0: no Ray part")
    args = p.parse_args()
    started = time.time()
    figures = {"cpu_count": os.cpu_count()}
    figures.update(pool_figures(args))
    if args.ray_kills:
        figures["ray_recovery"] = ray_recovery(min(args.ray_kills, MAX_RETRIES))
    figures["wall_s"] = round(time.time() - started, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
