"""Is the dashboard responsive while a search trains? One real server (`python -m webapp`) with its
local device, driven over HTTP and a real Socket.IO client.

1. p95 latency of `GET /api/runs` while a search trains, and the same request on the idle server
   once that run was stopped and the machine settled, so that both list the same runs (goal: ratio
   at most 2, p95 under 50 ms). The phases alternate in blocks, so that a slow drift hits both alike.
2. The delay from a sample event in the worker (its `time` field) to its arrival at a Socket.IO
   client subscribed to the run (goal: under 1 s; the maximum is reported).
3. `GET /api/runs/<id>/pareto` on a run with 100,000 stored samples (goal: under 200 ms; the median
   of 10 requests).

    .venv/bin/python bench/dashboard_responsiveness.py [--async-mode threading|eventlet]

Ends with one JSON line: p95_ratio, p95_ms, event_delay_s, pareto_100k_ms.
"""
import argparse
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

import requests
import socketio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a search that trains for minutes: warm-up epochs, then search epochs with samples every epoch
TRAINING = {"name": "bench", "epochs": 60, "warmup_epochs": 1, "samples_per_epoch": 4,
            "limit": 512, "measure_runs": 5, "measure_warmup": 2, "calibration_archs": 3}
# seconds between stopping a run and measuring the idle server: right after a stop, requests were
# up to 1.5 times slower for about 20 s here, which would flatter the ratio
SETTLE_S = 20.0
# the server's token (WEBAPP_TOKEN), sent by every request as programs do
TOKEN = "bench-token"
HTTP = requests.Session()
HTTP.headers["Authorization"] = "Bearer " + TOKEN


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir, mode):
    port = free_port()
    log = open(os.path.join(data_dir, "server.log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "webapp", "--port", str(port), "--data-dir",
                             data_dir, "--async-mode", mode], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ, WEBAPP_TOKEN=TOKEN))
    base = "http://127.0.0.1:{}".format(port)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            devices = HTTP.get(base + "/api/devices", timeout=2).json()
            if devices and devices[0]["status"] == "online":
                return proc, base
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    proc.terminate()
    sys.exit("the dashboard did not start (see {})".format(log.name))


def latencies_ms(session, url, count):
    times = []
    for _ in range(count):
        start = time.perf_counter()
        session.get(url, timeout=10).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return times


def p95(values):
    return statistics.quantiles(values, n=20)[-1]


def wait_for(base, run_id, predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = HTTP.get("{}/api/runs/{}".format(base, run_id), timeout=10).json()
        if predicate(run):
            return run
        if run["status"] not in ("queued", "running"):
            sys.exit("the bench run ended early: {}".format(run.get("error")))
        time.sleep(0.2)
    sys.exit("the bench run did not reach the expected state in {} s".format(timeout))


def insert_samples(db_path, count, seed=0):
    """A finished run with ``count`` samples, written straight into the server's SQLite file."""
    rng = random.Random(seed)
    arch = json.dumps({"format": "edge-nas.architecture", "note": "bench row"})
    with sqlite3.connect(db_path, timeout=30) as conn:
        cur = conn.execute("INSERT INTO runs (name, status, config, created_at) VALUES "
                           "('pareto-100k', 'finished', '{}', datetime('now'))")
        run_id = cur.lastrowid
        rows = []
        for i in range(count):
            latency = rng.uniform(1.0, 10.0)
            accuracy = min(1.0, max(0.0, 0.5 + 0.05 * latency + rng.gauss(0, 0.05)))
            rows.append((run_id, i // 100, "sampled", "{:064x}".format(i), arch, accuracy,
                         latency, 1, "2026-01-01 00:00:00"))
        conn.executemany("INSERT INTO samples (run_id, epoch, kind, arch_hash, arch_json, accuracy, "
                         "latency_ms, feasible, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return run_id


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--async-mode", choices=("threading", "eventlet"), default="threading")
    parser.add_argument("--requests", type=int, default=300, help="requests per phase")
    parser.add_argument("--blocks", type=int, default=3, help="idle/busy alternations")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        proc, base = start_server(data_dir, args.async_mode)
        try:
            figures = run_bench(base, data_dir, args)
        finally:
            proc.terminate()
            proc.wait(30)
    print(json.dumps(figures))


def run_bench(base, data_dir, args):
    session = HTTP
    runs_url = base + "/api/runs"
    latencies_ms(session, runs_url, 20)  # warm the connection and the server
    per_block = max(1, args.requests // args.blocks)
    idle, busy, delays = [], [], []

    client = socketio.Client()

    @client.on("sample")
    def on_sample(payload):
        delays.append(time.time() - payload["time"])

    client.connect(base, transports=["websocket"], wait_timeout=10, auth={"token": TOKEN})
    for block in range(args.blocks):
        run = session.post(runs_url, json=dict(TRAINING, name="bench-{}".format(block)), timeout=60).json()
        assert client.call("subscribe", {"run_id": run["id"]}, timeout=10)["ok"]
        # training: past the profiling and calibration, into the weight steps
        wait_for(base, run["id"], lambda r: r["progress"] is not None, 300)
        busy += latencies_ms(session, runs_url, per_block)
        if block == args.blocks - 1:  # the last run goes on until it has pushed samples
            wait_for(base, run["id"], lambda r: r["samples"] >= 10, 600)
            time.sleep(1.0)
        session.post("{}/{}/cancel".format(runs_url, run["id"]), timeout=60)
        time.sleep(SETTLE_S)  # the machine settles after a run (its memory freed, ...)
        idle += latencies_ms(session, runs_url, per_block)  # the same list of runs, nothing training
    client.disconnect()

    run_id = insert_samples(os.path.join(data_dir, "dashboard.db"), 100_000)
    pareto_url = "{}/{}/pareto".format(runs_url, run_id)
    front = session.get(pareto_url, timeout=30).json()
    pareto_times = latencies_ms(session, pareto_url, 10)

    figures = {
        "async_mode": args.async_mode,
        "p95_idle_ms": round(p95(idle), 2), "p95_ms": round(p95(busy), 2),
        "p95_ratio": round(p95(busy) / p95(idle), 2),
        "median_idle_ms": round(statistics.median(idle), 2),
        "median_busy_ms": round(statistics.median(busy), 2),
        "samples_pushed": len(delays),
        "event_delay_median_s": round(statistics.median(delays), 3) if delays else None,
        "event_delay_s": round(max(delays), 3) if delays else None,
        "pareto_front_size": len(front), "pareto_100k_ms": round(statistics.median(pareto_times), 1),
    }
    print("GET /api/runs p95: idle {p95_idle_ms} ms, while training {p95_ms} ms (ratio {p95_ratio}); "
          "sample event delay: median {event_delay_median_s} s, max {event_delay_s} s over "
          "{samples_pushed}; pareto of 100k samples: {pareto_100k_ms} ms".format(**figures),
          file=sys.stderr)
    return figures


if __name__ == "__main__":
    main()
