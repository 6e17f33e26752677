"""Does the default search land on its target at full settings? For targets at 40%, 60% and 80% of a
uniformly random architecture's expected latency and each seed, the pick's measured latency over T
(goal: within [0.85, 1.0]). `tests/test_landing.py` checks the same on a tiny setting.

    .venv/bin/python bench/landing.py [--dataset shapes] [--seeds 0 1 2] [--fractions 0.4 0.6 0.8]

The searches share the first one's profiled lookup table and measurement cache, as the dashboard's
runs on one device do. Ends with one JSON line: `ratios` ({fraction: [pick / T per seed]}),
`landed` (how many lie in [0.85, 1.0]), `runs`, `wall_s`.
"""
import argparse
import json
import os
import shutil
import time

from search_core.config import SearchConfig
from search_core.events import Events
from search_core.objectives import BUDGET_FLOOR
from search_core.rundir import LATENCY_CACHE, LUT
from search_core.search import Search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.4, 0.6, 0.8])
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench-landing"))
    args = p.parse_args()
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    started, first, ratios = time.time(), None, {}
    for fraction in args.fractions:
        for seed in args.seeds:
            run_dir = os.path.join(args.out, "{}-{}".format(fraction, seed))
            os.makedirs(run_dir)
            if first is not None:  # one table and cache for the device, as in the dashboard
                for name in (LUT, LATENCY_CACHE):
                    shutil.copy(os.path.join(first, name), os.path.join(run_dir, name))
            config = SearchConfig(dataset=args.dataset, seed=seed, target_latency_fraction=fraction)
            summary = Search(config, run_dir, Events()).run()
            first = first or run_dir
            ratio = summary["best"]["latency_ms"] / summary["target_latency_ms"]
            ratios.setdefault(str(fraction), []).append(round(ratio, 3))
            print("T at {:.0%}, seed {}: T {:.3f} ms, pick {:.3f} ms = {:.3f} T".format(
                fraction, seed, summary["target_latency_ms"], summary["best"]["latency_ms"], ratio),
                flush=True)
    landed = sum(BUDGET_FLOOR <= r <= 1.0 for rs in ratios.values() for r in rs)
    print(json.dumps({"ratios": ratios, "landed": landed, "runs": len(args.fractions) * len(args.seeds),
                      "wall_s": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
