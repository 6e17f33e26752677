"""How long does the run page's "Check this run's ranking" take at its defaults? One real dashboard
(`python -m webapp`, its built-in defaults and local device): the default run on digits, then the
ranking check at its defaults (the architectures and epochs /api/defaults gives), timed from the
check's request until every retraining of it has finished and the answer (Kendall's tau and its
p-value) is there. The goal of the issue "One trained supernet, every target and every device":
under 30 minutes on 2 cores.

    .venv/bin/python bench/ranking_check.py [--architectures K] [--epochs E]

Ends with one JSON line: run_s (the search, from its request to its end), check_s, train_time_s
(the check's retrainings, summed), architectures, epochs, retrained, kendall_tau, p_value,
pick_rank. The retrainings go through the dashboard's queue with its default slots, as a user's.
"""
import argparse
import json
import shutil
import sys
import tempfile
import time

from dashboard_responsiveness import HTTP, start_server

POLL_S = 2.0


def wait(what, check, timeout_s):
    """Poll `check()` until it returns something true; returns it."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL_S)
    sys.exit("waited {} s for {}".format(timeout_s, what))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--architectures", type=int, help="default: the dashboard's")
    p.add_argument("--epochs", type=int, help="default: the dashboard's")
    args = p.parse_args()
    data_dir = tempfile.mkdtemp(prefix="bench-ranking-")
    proc, base = start_server(data_dir, "threading")
    try:
        started = time.time()
        run = HTTP.post(base + "/api/runs", json={"name": "ranking bench"}, timeout=30).json()
        url = "{}/api/runs/{}".format(base, run["id"])
        run = wait("the run to end", lambda: _ended(HTTP.get(url, timeout=10).json()), 3600)
        if run["status"] != "finished":
            sys.exit("the run {}: {}".format(run["status"], run.get("error")))
        run_s = time.time() - started
        body = {k: v for k, v in (("architectures", args.architectures),
                                  ("epochs", args.epochs)) if v is not None}
        started = time.time()
        r = HTTP.post(url + "/ranking_checks", json=body, timeout=30)
        r.raise_for_status()
        check_id = r.json()["id"]
        check = wait("the check's retrainings", lambda: next(
            (c for c in HTTP.get(url + "/ranking_checks", timeout=10).json()
             if c["id"] == check_id and not c["active"]), None), 3 * 3600)
        check_s = time.time() - started
        print(json.dumps({"run_s": round(run_s, 1), "check_s": round(check_s, 1),
                          "train_time_s": check["train_time_s"],
                          "architectures": check["architectures"], "epochs": check["epochs"],
                          "retrained": check["retrained"], "kendall_tau": check["kendall_tau"],
                          "p_value": check["p_value"], "pick_rank": check["pick_rank"]}))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)


def _ended(run):
    return run if run["status"] in ("finished", "failed", "cancelled", "interrupted") else None


if __name__ == "__main__":
    main()
