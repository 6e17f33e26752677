"""How many generations should a specialisation run? Two settings side by side from the same
trained parents, each run more than once per parent, alternating (A B B A ...), since two
specialisations of one parent with the same settings differed by up to 5.5 points here.

The parents are those `bench/specialise.py` kept (each DIR of --runs holds its `parent-N`
directories and `row-N.json` rows); each is specialised to the T of its row's comparison with a new
search (`specialised.target_ms`). Each pick is scored by its parent's supernet on shapes' held-out
test images (shared weights, batch norm recalibrated: bench/specialise.py's judge), without
retraining's noise.

    .venv/bin/python bench/specialise_generations.py --runs runs/bench-specialise [--seeds 0 1 2 3]
                                                     [--generations 10 20] [--repeats 2]
                                                     [--quick]

Ends with one JSON line: `b_minus_a_shared` (the second setting's mean score minus the first's per
parent, in points: `{mean, ci95_low, ci95_high, n}`, a paired-t interval over the parents),
`wall_ratio` (the second's mean wall time over the first's), per setting `over_search` (wall time
over the row's new search: the mean over parents and the largest) and `minus_search_shared` (score
minus the new search's pick, points, mean over parents), `parents` (each parent's runs), `wall_s`.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from nano_agent.arch import Architecture

from search_quality import paired
from specialise import run_command, supernet_judge

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def order(settings, repeats):
    """A B, then B A, and so on: each setting takes the early and the late turns alike."""
    turns = []
    for repeat in range(repeats):
        turns += settings if repeat % 2 == 0 else settings[::-1]
    return turns


def specialise_to(parent, target, generations, threads):
    """(pick, wall time in s): `parent` specialised to `target` ms with `generations`."""
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "specialised")
        _, wall, _ = run_command([sys.executable, "-m", "search_core", "specialise", parent,
                                  "--out", out, "--target-latency-ms", repr(target),
                                  "--generations", str(generations), "--threads", str(threads),
                                  "--events", "jsonl"])
        return Architecture.load(os.path.join(out, "best_arch.json")), wall


def compare_parent(directory, seed, args):
    """One parent's runs of each setting: their scores and wall times, and its row's new search."""
    with open(os.path.join(directory, "row-{}.json".format(seed))) as f:
        row = json.load(f)
    parent = os.path.join(directory, "parent-{}".format(seed))
    target = row["specialised"]["target_ms"]
    runs = [(generations,) + specialise_to(parent, target, generations, args.threads)
            for generations in order(args.generations, args.repeats)]
    with supernet_judge(parent, args.quick) as (judge, test):
        scored = [(generations, judge.shared_accuracy(arch, test), wall)
                  for generations, arch, wall in runs]
    result = {"parent": parent, "target_ms": target, "search_wall_s": row["search"]["wall_s"],
              "search_shared_test_acc": row["search"]["shared_test_acc"]}
    for generations in args.generations:
        mine = [(acc, wall) for g, acc, wall in scored if g == generations]
        result[str(generations)] = {"shared_test_acc": [round(acc, 4) for acc, _ in mine],
                                    "wall_s": [round(wall, 1) for _, wall in mine]}
    return result


def report(parents, args, wall_s):
    a, b = (str(g) for g in args.generations)
    # each parent's mean score per setting (`feasible` for search_quality.paired)
    means = [{name: {"mean": statistics.mean(p[name]["shared_test_acc"]), "feasible": True}
              for name in (a, b)} for p in parents]
    figures = {"b_minus_a_shared": paired(means, b, a, "mean"),
               "wall_ratio": round(statistics.mean(w for p in parents for w in p[b]["wall_s"]) /
                                   statistics.mean(w for p in parents for w in p[a]["wall_s"]), 3)}
    for name in (a, b):
        over = [statistics.mean(p[name]["wall_s"]) / p["search_wall_s"] for p in parents]
        figures[name] = {
            "over_search": {"mean": round(statistics.mean(over), 3), "max": round(max(over), 3)},
            "minus_search_shared": round(statistics.mean(
                100 * (m[name]["mean"] - p["search_shared_test_acc"])
                for p, m in zip(parents, means)), 2)}
    figures.update(generations=args.generations, repeats=args.repeats, parents=parents,
                   wall_s=round(wall_s, 1))
    for p in parents:
        print("{}: T {:.3f} ms; ".format(p["parent"], p["target_ms"]) + "; ".join(
            "{} generations {} in {} s".format(name, ", ".join("{:.2%}".format(x) for x in
                                                              p[name]["shared_test_acc"]),
                                               p[name]["wall_s"]) for name in (a, b)))
    print(json.dumps(figures, allow_nan=False))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True,
                   help="directories of bench/specialise.py's kept parents and rows")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--generations", type=int, nargs=2, default=[10, 20], metavar=("A", "B"))
    p.add_argument("--repeats", type=int, default=2, help="runs of each setting per parent")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quick", action="store_true",
                   help="judge on a few held-out images (bench/specialise.py --quick's parents)")
    args = p.parse_args()
    if args.generations[0] == args.generations[1] or min(args.generations) < 1:
        p.error("--generations: two different positive counts")
    if args.repeats < 1:
        p.error("--repeats: at least 1")
    missing = [os.path.join(d, "row-{}.json".format(s)) for d in args.runs for s in args.seeds
               if not os.path.exists(os.path.join(d, "row-{}.json".format(s)))]
    if missing:
        p.error("no kept row (run bench/specialise.py first): " + ", ".join(missing))
    started = time.time()
    parents = [compare_parent(directory, seed, args) for directory in args.runs
               for seed in args.seeds]
    report(parents, args, time.time() - started)


if __name__ == "__main__":
    main()
