"""Train once, specialise many times: does a trained run, specialised to a new T, pick as well as a
new search for that T at a fraction of its cost, land on T, and how do the picks of two runtimes
fare in each other's? (the issue "One trained supernet, every target and every device").

Per seed (one split and one training seed that every pick shares, as in search_quality.py):
1. the parent: the default search at T = --parent-fraction of the uniform expectation;
2. the parent specialised to each of --landing-fractions (`python -m search_core specialise`,
   training nothing), and for --fraction a new search at the specialisation's T: both commands
   timed whole (start-up, profiling where they profile, searching) and from their `started` event
   (tables ready) to `finished`; both picks retrained with `train`'s recipe on the seed's split
   and tested on shapes' held-out test set; and both picks scored by the parent's supernet on
   that test set (shared weights, batch norm recalibrated: what the supernet says of the two,
   without retraining's noise);
3. the parent specialised to --fraction for onnxruntime: the two runtimes' picks each measured in
   both runtimes, against each runtime's T.

Every pick's latency is measured again after all training, in interleaved rounds on this machine's
CPU, in a process of its own (1 thread, as the search measures).

    .venv/bin/python bench/specialise.py [--dataset shapes] [--seeds 0 1 2] [--jobs 2]
                                         [--fraction 0.6] [--landing-fractions 0.4 0.6 0.8 1.0]
                                         [--resume [--respecialise]] [--quick]

--quick runs a tiny setting end to end (a smoke test, not a measurement). Ends with one JSON line:
`specialise_over_search` and `specialise_over_search_after_profiling` ({per_seed, mean}: the
specialisation's wall time over the new search's), `specialised_minus_search` (test accuracy
points, `{mean, ci95_low, ci95_high, n}`, paired over the seeds where both picks run within T),
`specialised_minus_search_shared` (the same with their shared-weight test accuracy),
`specialised_evaluated` (per seed, what the specialisation at --fraction evaluated within
[0.85 T, T]: how many architectures, the best of them under the parent's supernet on the held-out
images minus the new search's pick there, and Kendall's tau between their validation accuracy and
that score: a pick that chose well among paths no better than the new search's needs a wider
search, one that chose badly a better judge), each pick's mean test accuracy, `landing`
({fraction: [re-measured latency / T per seed]}) and `landed` (how many lie in [0.85 T, T] of
how many), `landing_round_spread` (how far one measurement of a pick is from the next: (slowest -
fastest round) / median, the median and the largest over the landing picks), `cross_runtime` (per
seed, each runtime's pick: its latency / T in each runtime, and where it runs within T), `seeds`,
`wall_s`. Goals:
specialise_over_search at most 0.10; specialised_minus_search's lower end at or above -0.5;
every landing within [0.85, 1.0]. Every pick's architecture and figures are kept in
--out/rows.json.
"""
import argparse
import contextlib
import json
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from scipy.stats import kendalltau

from nano_agent.arch import Architecture
from search_core import data
from search_core.best import latest
from search_core.events import Events
from search_core.latency import LocalDevice, measure_interleaved
from search_core.recipe import Recipe
from search_core.rundir import BEST_ARCH, SUMMARY, RunDirectory
from search_core.settings import GENERATIONS, SearchConfig
from search_core.specialise import Specialisation
from search_core.train import accuracy, train_architecture

from search_quality import MEASURING, QUICK_SEARCH, paired, parse_settings, search_settings, \
    test_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIMES = ("pytorch", "onnxruntime")
LANDING = (0.85, 1.0)  # a re-measured pick's latency over T: the landing band
PICKS = ("specialised", "search")


def run_command(command):
    """A search_core command with JSON-lines events: its events by name (the last of each), its
    whole wall time and the seconds from its `started` event to its `finished` one."""
    started = time.time()
    lines = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    wall = time.time() - started
    events, times = {}, {}
    for line in lines.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            events[event["event"]] = event
            times.setdefault(event["event"], event["time"])
    return events, wall, times["finished"] - times["started"]


def search(args, seed, out, **settings):
    """A search as a user runs it (the defaults, the bench's, then `settings`)."""
    shutil.rmtree(out, ignore_errors=True)
    settings = dict(search_settings(args, seed), **settings)
    config = SearchConfig(**{k: v for k, v in settings.items() if v is not None}).validate()
    with open(out + ".json", "w") as f:
        json.dump(config.to_dict(), f)
    return run_command([sys.executable, "-m", "search_core", "search", "--config", out + ".json",
                        "--out", out, "--events", "jsonl"])


def specialise(args, parent, out, **settings):
    """`parent` specialised for `settings` (a target_latency_fraction, a backend): no training."""
    shutil.rmtree(out, ignore_errors=True)
    with open(out + ".json", "w") as f:
        json.dump(dict(settings, threads=args.threads), f)
    return run_command([sys.executable, "-m", "search_core", "specialise", parent, "--config",
                        out + ".json", "--out", out, "--generations", str(args.generations),
                        "--events", "jsonl"])


def pick_of(run_dir):
    """(the pick's architecture, T) of a search or specialisation directory."""
    summary = RunDirectory(run_dir).read_json(SUMMARY)
    return Architecture.load(os.path.join(run_dir, BEST_ARCH)), summary["target_latency_ms"]


def evaluate_seed(args, seed):
    """One seed's parent, its specialisations and the new search: the report's row (each pick's
    architecture and T kept for the latency measured at the end), or with --resume the row kept
    by an earlier run with what it lacks added."""
    torch.set_num_threads(args.threads)
    kept = os.path.join(args.out, "row-{}.json".format(seed))
    if args.resume and os.path.exists(kept):
        with open(kept) as f:
            row = json.load(f)
        if args.respecialise:
            specialise_seed(args, seed, row)
    else:
        row = run_seed(args, seed)
    retrain(args, seed, row)
    if any("shared_test_acc" not in row[name] for name in PICKS) or \
            "evaluated" not in row["specialised"]:
        judge_shared(args, seed, row)
    with open(kept, "w") as f:  # kept before the latency measured at the end
        json.dump(row, f)
    return row


def run_seed(args, seed):
    """The seed's parent, its specialisations, the new search and the onnxruntime
    specialisation: each pick's architecture, T and wall time."""
    search(args, seed, _directory(args, "parent", seed),
           target_latency_fraction=args.parent_fraction)
    row = specialise_seed(args, seed, {"seed": seed})
    target = row["specialised"]["target_ms"]
    _, wall, searching = search(args, seed, _directory(args, "search", seed),
                                target_latency_ms=target)
    arch, _ = pick_of(_directory(args, "search", seed))
    row["search"] = {"arch": arch.to_dict(), "target_ms": target, "wall_s": round(wall, 1),
                     "after_profiling_s": round(searching, 1)}
    return row


def specialise_seed(args, seed, row):
    """The seed's parent specialised to each landing fraction and, at --fraction, for
    onnxruntime: `row` with its specialisations (anew where it had them)."""
    parent = _directory(args, "parent", seed)
    row["landing"] = {}
    for fraction in sorted(set(args.landing_fractions) | {args.fraction}):
        directory = _directory(args, "specialised-{:g}".format(fraction), seed)
        _, wall, searching = specialise(args, parent, directory, target_latency_fraction=fraction)
        arch, target = pick_of(directory)
        row["landing"][str(fraction)] = {"arch": arch.to_dict(), "target_ms": target}
        if fraction == args.fraction:
            row["specialised"] = dict(row["landing"][str(fraction)], wall_s=round(wall, 1),
                                      after_profiling_s=round(searching, 1))
    onnxruntime = _directory(args, "onnxruntime", seed)
    specialise(args, parent, onnxruntime, target_latency_fraction=args.fraction,
               backend="onnxruntime")
    arch, onnx_target = pick_of(onnxruntime)
    row["cross_runtime"] = {"pytorch": dict(arch=row["specialised"]["arch"],
                                            target_ms=row["specialised"]["target_ms"]),
                            "onnxruntime": dict(arch=arch.to_dict(), target_ms=onnx_target)}
    return row


def _directory(args, name, seed):
    return os.path.join(args.out, "{}-{}".format(name, seed))


def retrain(args, seed, row):
    """The picks not tested yet retrained on the seed's split with `train`'s recipe, tested on the
    held-out set."""
    tested = {Architecture.from_dict(row[name]["arch"]).hash: row[name]["test_acc"]
              for name in PICKS if "test_acc" in row[name]}
    if all("test_acc" in row[name] for name in PICKS):
        return
    recipe = Recipe(epochs=2) if args.quick else Recipe()
    first = Architecture.from_dict(row["search"]["arch"])
    dataset = data.load_dataset(args.dataset, first.input_shape[-1], seed,
                                limit=QUICK_SEARCH["limit"] if args.quick else None)
    test = test_split(dataset, args.quick)
    for name in PICKS:
        arch = Architecture.from_dict(row[name]["arch"])
        if arch.hash not in tested:  # the two picks may be one network
            model = train_architecture(arch, dataset, recipe, seed, args.train_device,
                                       progress=False)["model"]
            tested[arch.hash] = accuracy(model, test, dataset, args.train_device)
        row[name]["test_acc"] = round(tested[arch.hash], 4)
    row["test_images"] = len(test)


@contextlib.contextmanager
def supernet_judge(parent, quick):
    """(a Specialisation holding `parent`'s trained weights, the held-out test split): its
    `shared_accuracy(arch, test)` scores any member as a specialisation scores (batch norm
    recalibrated for it), on images that chose no pick and without retraining's noise."""
    with tempfile.TemporaryDirectory() as scratch:
        judge = Specialisation(parent, scratch, Events())
        try:
            judge.load_supernet()
            yield judge, test_split(judge.dataset, quick)
        finally:
            if judge.measurer is not None:  # set up: its measuring process ends here
                judge.measurer.source.close()


def judge_shared(args, seed, row):
    """Both picks' shared-weight accuracy under the parent's trained supernet on the held-out test
    images: what the supernet itself says of the two (the new search chose its pick on weights
    of its own)."""
    with supernet_judge(_directory(args, "parent", seed), args.quick) as (judge, test):
        for name in PICKS:
            arch = Architecture.from_dict(row[name]["arch"])
            row[name]["shared_test_acc"] = round(judge.shared_accuracy(arch, test), 4)
        row["specialised"]["evaluated"] = judge_evaluated(
            judge, test, _directory(args, "specialised-{:g}".format(args.fraction), seed))


def judge_evaluated(judge, test, directory):
    """Did the specialisation choose well among what it evaluated, or never evaluate the better
    paths? Its architectures that met every target within [0.85 T, T] (each as last measured):
    how many, the best of them as the parent's supernet scores them on the held-out images, and
    Kendall's tau between their validation accuracy (what chose) and that score."""
    samples = [s for s in latest(RunDirectory(directory).samples())
               if s["feasible"] and s.get("uses_budget") is not False]
    scores = [judge.shared_accuracy(Architecture.from_dict(s["arch"]), test) for s in samples]
    tau = kendalltau([s["accuracy"] for s in samples], scores)[0] if len(samples) > 1 else None
    return {"architectures": len(samples),
            "best_shared_test_acc": round(max(scores), 4) if scores else None,
            "val_vs_shared_tau": None if tau is None or math.isnan(tau) else round(tau, 2)}


def remeasure(rows, rounds):
    """Every pick measured again after all training, in interleaved rounds in each runtime (a
    process of its own): its latency and its share of T set where it stands in its row."""
    for runtime in RUNTIMES:
        entries = [(entry, runtime) for row in rows for entry in _entries(row, runtime)]
        device = LocalDevice(**MEASURING, backend=runtime, isolated=True)
        times = {}
        try:
            medians = measure_interleaved(device, [Architecture.from_dict(e["arch"])
                                                   for e, _ in entries], rounds, times)
        finally:
            device.close()
        for entry, _ in entries:
            key = Architecture.from_dict(entry["arch"]).hash
            entry.setdefault("latency_ms", {})[runtime] = round(medians[key], 3)
            entry.setdefault("rounds_ms", {})[runtime] = [round(t, 3) for t in times[key]]
    for row in rows:
        for entry in list(row["landing"].values()) + [row[name] for name in PICKS]:
            entry["over_target"] = round(entry["latency_ms"]["pytorch"] / entry["target_ms"], 3)
            entry["feasible"] = entry["over_target"] <= 1.0
        picks = row["cross_runtime"]
        for made_for, pick in picks.items():  # in each runtime, against that runtime's T
            pick["over_target"] = {runtime: round(pick["latency_ms"][runtime] /
                                                  picks[runtime]["target_ms"], 3)
                                   for runtime in RUNTIMES}
            pick["within_target_in"] = [r for r in RUNTIMES if pick["over_target"][r] <= 1.0]


def _entries(row, runtime):
    """The picks of `row` measured in `runtime`: all of them in PyTorch, the cross-runtime pair
    in onnxruntime."""
    if runtime != "pytorch":
        return list(row["cross_runtime"].values())
    return list(row["landing"].values()) + [row[name] for name in PICKS] + \
        list(row["cross_runtime"].values())


def report(rows, args, wall_s):
    def ratio(key):
        per_seed = [round(r["specialised"][key] / r["search"][key], 3) for r in rows]
        return {"per_seed": per_seed, "mean": round(statistics.mean(per_seed), 3)}

    landing = {f: [r["landing"][f]["over_target"] for r in rows]
               for f in sorted(rows[0]["landing"], key=float)}
    ratios = [value for values in landing.values() for value in values]
    spreads = [(max(rounds) - min(rounds)) / statistics.median(rounds) for r in rows
               for rounds in (pick["rounds_ms"]["pytorch"] for pick in r["landing"].values())]
    figures = {
        "specialise_over_search": ratio("wall_s"),
        "specialise_over_search_after_profiling": ratio("after_profiling_s"),
        "specialised_minus_search": paired(rows, "specialised", "search"),
        "specialised_minus_search_shared": paired(rows, "specialised", "search",
                                                  "shared_test_acc"),
        "specialised_evaluated": {
            "architectures": [r["specialised"]["evaluated"]["architectures"] for r in rows],
            "best_minus_search_shared": [_points(r["specialised"]["evaluated"]
                                                 ["best_shared_test_acc"],
                                                 r["search"]["shared_test_acc"]) for r in rows],
            "val_vs_shared_tau": [r["specialised"]["evaluated"]["val_vs_shared_tau"]
                                  for r in rows]},
        "specialised_test_acc_mean": _mean(rows, "specialised"),
        "search_test_acc_mean": _mean(rows, "search"),
        "landing": landing,
        "landed": [sum(LANDING[0] <= value <= LANDING[1] for value in ratios), len(ratios)],
        "landing_round_spread": {"median": round(statistics.median(spreads), 3),
                                 "max": round(max(spreads), 3)},
        "cross_runtime": [{made_for: {k: pick[k] for k in ("target_ms", "latency_ms",
                                                           "over_target", "within_target_in")}
                           for made_for, pick in r["cross_runtime"].items()} for r in rows],
        "test_images": rows[0]["test_images"], "seeds": args.seeds, "wall_s": round(wall_s, 1)}
    for r in rows:
        print("seed {}: T {:.3f} ms; specialised {:.2%} (shared {:.2%}) in {:.0f} s, new search "
              "{:.2%} (shared {:.2%}) in {:.0f} s".format(
                  r["seed"], r["search"]["target_ms"], *(r[name][key] for name in PICKS for key in
                                                         ("test_acc", "shared_test_acc", "wall_s"))))
    print(json.dumps(figures, allow_nan=False))


def _points(accuracy, other):
    return None if accuracy is None else round(100 * (accuracy - other), 2)


def _mean(rows, name):
    accs = [r[name]["test_acc"] for r in rows if r[name]["feasible"]]
    return round(statistics.mean(accs), 4) if accs else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--parent-fraction", type=float, default=1.0,
                   help="the parent search's T as this share of the uniform expectation")
    p.add_argument("--fraction", type=float, default=0.6,
                   help="the new T of the comparison with a new search, as a share of it")
    p.add_argument("--landing-fractions", type=float, nargs="+", default=[0.4, 0.6, 0.8, 1.0])
    p.add_argument("--generations", type=int, default=None,
                   help="generations of each specialisation (default: specialise's)")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds of the latency measured after all training")
    p.add_argument("--train-device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--jobs", type=int, default=1,
                   help="seeds evaluated at once, each on its share of the cores (each seed's "
                        "specialisation and new search then share the machine alike)")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench-specialise"))
    p.add_argument("--quick", action="store_true", help="a tiny setting: checks the bench runs")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows of seeds that an earlier run kept in --out (row-N.json), "
                        "add what they lack, and measure every latency again")
    p.add_argument("--respecialise", action="store_true",
                   help="with --resume: specialise each kept parent again (the specialisation's "
                        "code changed), retrain the new pick; the new search is kept")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a search setting other than the defaults (repeatable)")
    args = p.parse_args()
    try:
        args.set = parse_settings(args.set)
    except ValueError as e:
        p.error(str(e))
    if args.respecialise and not args.resume:
        p.error("--respecialise specialises the parents of kept rows: give --resume too")
    # what search_quality's search_settings reads
    args.split_seed, args.target_fraction = None, None
    args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    if args.generations is None:
        args.generations = 1 if args.quick else GENERATIONS
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    # spawn: a forked child of a process that has run torch's thread pool can hang
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(evaluate_seed, [args] * len(args.seeds), args.seeds))
    remeasure(rows, 2 if args.quick else args.rounds)
    with open(os.path.join(args.out, "rows.json"), "w") as f:  # every pick's architecture
        json.dump(rows, f)
    report(rows, args, time.time() - started)


if __name__ == "__main__":
    main()
