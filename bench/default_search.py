"""The default search end to end: its wall time, its best architecture's shared-weight accuracy, and
that architecture's test accuracy when retrained from scratch.

Goals (2 CPU cores): the search under 10 minutes; best shared-weight validation accuracy >= 90%;
retrained test accuracy >= 97%.

    .venv/bin/python bench/default_search.py [--out runs/bench-default] [any extra search flags]

Runs `python -m search_core search` with the built-in defaults (plus the extra flags), then
`python -m search_core train best_arch.json`; ends with one JSON line: `search_wall_time_s`,
`best_shared_weight_val_accuracy`, `best_latency_ms`, `target_latency_ms`,
`retrained_test_accuracy`, `retrain_time_s`.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "bench-default"))
    args, extra = parser.parse_known_args()
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    started = time.time()
    subprocess.run([sys.executable, "-m", "search_core", "search", "--out", args.out] + extra,
                   cwd=ROOT, check=True)
    search_time = time.time() - started
    with open(os.path.join(args.out, "summary.json")) as f:
        summary = json.load(f)
    trained = subprocess.run([sys.executable, "-m", "search_core", "train",
                              os.path.join(args.out, "best_arch.json"), "--json"],
                             cwd=ROOT, check=True, capture_output=True, text=True)
    retrain = json.loads(trained.stdout)
    best = summary["best"]
    figures = {
        "search_wall_time_s": round(search_time, 1),
        "best_shared_weight_val_accuracy": round(best["accuracy"], 4),
        "best_latency_ms": round(best["latency_ms"], 3),
        "target_latency_ms": summary["target_latency_ms"],
        "best_ops": best["ops"],
        "retrained_test_accuracy": round(retrain["test_accuracy"], 4),
        "retrain_time_s": round(retrain["train_time_s"], 1),
    }
    print("search {search_wall_time_s:.0f} s (goal < 600), best shared-weight val accuracy "
          "{best_shared_weight_val_accuracy:.2%} (goal >= 90%), retrained test accuracy "
          "{retrained_test_accuracy:.2%} (goal >= 97%)".format(**figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
