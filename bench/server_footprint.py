"""What starting the dashboard costs: `python -m webapp --no-local-agent` started N times, the time
from the process start to its first answered `GET /api/runs`, its resident memory then (VmRSS), and
whether torch was loaded into it (its shared libraries in /proc/PID/maps).

    .venv/bin/python bench/server_footprint.py [--runs 5] [--compare DIR]

`--compare DIR` also starts another checkout's server with this venv (e.g. a worktree of an older
commit: `git worktree add /tmp/before COMMIT`), alternating with this one's, so that both are
measured side by side on the same machine. Ends with one JSON line: start_s and rss_mib (medians),
torch_loaded, and with --compare the same for the other checkout and the ratios this / other.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-token"  # the server's token (WEBAPP_TOKEN), sent as programs do


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    with open("/proc/{}/status".format(pid)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS for pid {}".format(pid))


def torch_loaded(pid):
    with open("/proc/{}/maps".format(pid)) as f:
        return any("libtorch" in line for line in f)


def start_once(root, timeout=60.0):
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "webapp", "--no-local-agent", "--port",
                                    str(port), "--data-dir", data_dir], cwd=root,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env=dict(os.environ, WEBAPP_TOKEN=TOKEN))
        try:
            while True:
                try:
                    if requests.get("http://127.0.0.1:{}/api/runs".format(port), timeout=1,
                                    headers={"Authorization": "Bearer " + TOKEN}).ok:
                        break
                except requests.ConnectionError:
                    pass
                if process.poll() is not None or time.perf_counter() - started > timeout:
                    raise RuntimeError("the server did not start in {}".format(root))
                time.sleep(0.02)
            return time.perf_counter() - started, rss_mib(process.pid), torch_loaded(process.pid)
        finally:
            process.terminate()
            process.wait(30)


def summary(results):
    return {"start_s": round(statistics.median(r[0] for r in results), 3),
            "rss_mib": round(statistics.median(r[1] for r in results), 1),
            "torch_loaded": any(r[2] for r in results)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--compare", help="another checkout whose server to start too, alternately")
    args = p.parse_args()
    roots = [ROOT] + ([os.path.abspath(args.compare)] if args.compare else [])
    results = {root: [] for root in roots}
    for _ in range(args.runs):
        for root in roots:
            results[root].append(start_once(root))
    for root in roots:
        for seconds, rss, torch in results[root]:
            print("{}: {:.2f} s to the first answer, {:.0f} MiB resident, torch {}".format(
                root, seconds, rss, "loaded" if torch else "not loaded"))
    figures = summary(results[ROOT])
    if args.compare:
        other = summary(results[roots[1]])
        figures.update({"other_" + k: v for k, v in other.items()})
        figures["start_ratio"] = round(figures["start_s"] / other["start_s"], 3)
        figures["rss_ratio"] = round(figures["rss_mib"] / other["rss_mib"], 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
