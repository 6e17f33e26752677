"""Several search-quality results as one: the paired differences of `search_quality.py` over the
seeds of all of them (say seeds 0-4 and 5-9 of one variant, each run --against the defaults' run
of its seeds), where one run's five seeds leave an interval too wide to tell.

    .venv/bin/python bench/pool_quality.py RESULT.json [RESULT.json ...]

The results must share their splits, T, training seeds and search settings (--set), and no seed
may appear twice; each pair was measured in its own run's rounds (--against measures the other
run's pick again there), so pooling adds seeds without mixing measurements. Ends with one JSON
line: each `pick_minus_*` over the pooled seeds (`{mean, ci95_low, ci95_high, n}`, paired-t),
the same over every seed where both were retrained, T aside (`ignoring_target`), the pick's mean
test accuracy, `pick_over_target` (per seed) and `seeds`. A result of a --reuse-alternatives run
pools with a full run's: its rows carry the alternatives it paired with.
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from search_quality import PAIRED_SETTINGS, paired  # noqa: E402

POOLED_SETTINGS = PAIRED_SETTINGS + ("set",)  # the same variant, on the same footing
OTHERS = ("mobilenetv2", "random", "random_half_budget", "shallowest", "against")


def load(paths):
    """The rows of every result in `paths`, in seed order; ValueError where one cannot be read,
    differs from the first in its settings, or repeats a seed."""
    rows, first = {}, None
    for path in paths:
        try:
            with open(path) as f:
                result = json.load(f)
            settings = {k: result["settings"].get(k) for k in POOLED_SETTINGS}
            kept = [(row["seed"], row) for row in result["rows"]]
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError("{}: not a result of bench/search_quality.py ({})".format(
                path, e)) from None
        first = first or (path, settings)
        differing = [k for k in POOLED_SETTINGS if settings[k] != first[1][k]]
        if differing:
            raise ValueError("{}: other {} than {}: not one variant's seeds".format(
                path, ", ".join(differing), first[0]))
        for seed, row in kept:
            if seed in rows:
                raise ValueError("{}: seed {} is in another result too".format(path, seed))
            rows[seed] = row
    return [rows[seed] for seed in sorted(rows)]


def pool(rows):
    """The figures over all `rows` (contenders a result did not train count as absent)."""
    rows = [dict({name: None for name in OTHERS}, **row) for row in rows]
    figures = {"pick_minus_" + other: paired(rows, "pick", other) for other in OTHERS}
    figures["ignoring_target"] = {other: paired(rows, "pick", other, within_target=False)
                                  for other in OTHERS}
    picks = [r["pick"]["test_acc"] for r in rows if r["pick"]["feasible"]]
    figures.update(pick_test_acc_mean=round(statistics.mean(picks), 4) if picks else None,
                   pick_over_target=[r["pick"]["over_target"] for r in rows],
                   seeds=[r["seed"] for r in rows])
    return figures


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", metavar="RESULT.json")
    args = p.parse_args()
    try:
        rows = load(args.results)
    except ValueError as e:
        p.error(str(e))
    figures = pool(rows)
    for other in OTHERS:
        for d, where in ((figures["pick_minus_" + other], "both within T"),
                         (figures["ignoring_target"][other], "T aside")):
            if d["n"]:
                print("pick minus {}: {} [{}, {}] over {} seeds ({})".format(
                    other, d["mean"], d["ci95_low"], d["ci95_high"], d["n"], where))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
