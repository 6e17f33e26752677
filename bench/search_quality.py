"""Does the search keep its promise, the most accurate network within the target, better than the
alternatives? A paired design: each seed fixes one split and one training seed that every
contender shares, on one dataset (default: shapes, which is not saturated); everything is
retrained with `train`'s recipe on the split the search used:

1. the search's pick (the built-in defaults; T from --target-latency-fraction);
2. random search on the same starting line: the search's time after its profiling and
   calibration (which random search does not pay either: it reuses the search's calibrated
   table), random members predicted under T, each trained standalone for --random-epochs; a
   candidate that ends past the budget does not count; the best by validation accuracy is
   retrained, and so is the best of those finished by half the budget; its anytime curve (best
   validation accuracy so far against time) is kept in the seed's row;
3. MobileNetV2 scaled to T (the widest width multiplier, in steps of 0.05, whose median latency
   over --rounds interleaved rounds of every width is under T) and the shallowest member of the
   space;
4. for the first seed, Kendall's tau (and its p-value) between the supernet's shared-weight
   accuracy and standalone accuracy (--random-epochs, the mean over --tau-seeds training seeds)
   over --tau-archs architectures spread across the latency range; with two training seeds or
   more, the tau between the halves of the seeds: how well the reference ranks itself.

With --train-seeds K every contender is retrained K times, with the same K training seeds for all
(the first is the seed's own), and its test accuracy is their mean (`test_accs` keeps each):
retraining one network with other training seeds spreads 1.4 points (std) or more on shapes
(recipe.py), so a paired difference of single trainings carries some 2 points of noise, which
the mean of K trainings divides by about the square root of K.

Test accuracy is measured on shapes' held-out test set (10,000 generated images apart from every
split: 0.3 points of sampling error at 90%; data.held_out_test), else on the split's test set.
Latency is measured again after all training, every contender of every seed in interleaved rounds
on this machine's CPU (1 thread), and reported against T; a contender over T counts as
infeasible and is left out of the differences, never compared silently.

    .venv/bin/python bench/search_quality.py [--dataset shapes] [--seeds 0 1 2 3 4] [--jobs 2]
                                             [--quick] [--resume] [--train-device cuda]
                                             [--train-seeds K] [--against RESULT.json]
                                             [--picks-only] [--reuse-alternatives]
                                             [--set NAME=VALUE ...]

Each finished seed's row is kept in --out (seed-N.json): --resume reuses them, so that a run cut
short loses only the seeds in flight, and seeds can be added later (latency is always measured
again, for all, at the end). The whole result (every row with its latency measured at the end,
the ranking and the figures) is written to --out/result.json; --against FILE, another run's
result.json with the same split, target and training seeds (say the defaults', for a --set
variant, or a kept one from bench/results/), adds `pick_minus_against`: this run's pick minus
that run's, paired seed by seed over the seeds where both meet T. That run's picks are measured
again with this run's contenders, in the same rounds, against this run's T of their seed (the
pairing holds while `train`'s recipe is the one that run retrained with). With --picks-only only
the search's pick is retrained (no random search, baselines or ranking): a variant against a
kept run in about a third of the time. --reuse-alternatives (with --against; implies
--picks-only) aims each seed's search at that run's T of the seed and pairs the pick with that
run's alternatives too (random search, with its budget of that run's search time, MobileNetV2 at
that T, the shallowest member: their accuracy as trained there, their latency measured again
here), so that a variant or a new rule gets every `pick_minus_*` in a third of the time. That T
is scaled first by how much slower this machine runs that run's contenders now than when that
run measured them (`target_scale` in each row): on this VM that changes by tens of % between
days.

--train-device cuda trains every contender on the GPU (the search's and the bench's latency stay
on this machine's CPU). --set NAME=VALUE runs the search with a setting other than its default
(e.g. sandwich=true): a variant measured against the same alternatives, before it becomes a
default.

--quick runs a tiny setting end to end (a smoke test of the bench, not a measurement). Ends with
one JSON line: `pick_minus_mobilenetv2`, `pick_minus_random`, `pick_minus_random_half_budget`
(each `{mean, ci95_low, ci95_high, n}` in points: the paired difference over the seeds where both
are feasible, with a paired-t 95% interval), the same over every seed T aside
(`ignoring_target`), each contender's mean test accuracy, `pick_remeasured_over_target` (per
seed), `mobilenetv2_cut_short` (the seeds where a wider MobileNetV2 than the retrained one
measured under T at the end), `kendall_tau`, `kendall_tau_p`, `reference_self_tau`,
`test_images`, `seeds`, `wall_s`. Goals (issue "Prove that the search finds better networks"):
pick minus MobileNetV2 at least +1.0 with the lower end above 0; pick minus random at least +0.5
with the lower end at or above -0.3; pick minus half-budget random search with the lower end
above 0; tau at least 0.6 against a reference self-tau of at least 0.8; every pick, re-measured,
within [0.85 T, T].
"""
import argparse
import itertools
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch
from scipy.stats import kendalltau, t as student_t

from nano_agent.arch import Architecture
from nano_agent.space import SearchSpace
from search_core import data
from search_core.data import DatasetError
from search_core.settings import ConfigError, SearchConfig
from search_core.latency import LocalDevice, measure_interleaved
from search_core.lut import Lut, calibration_paths
from search_core.rundir import BEST_ARCH, LUT, SUMMARY, RunDirectory
from search_core.supernet import Supernet
from search_core.recipe import Recipe
from search_core.train import accuracy, train_architecture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK_SEARCH = {"limit": 128, "epochs": 4, "warmup_epochs": 1, "samples_per_epoch": 2,
                "measure_runs": 3, "calibration_archs": 3}
WIDTHS = [round(0.1 + 0.05 * i, 2) for i in range(29)]  # 0.1 ... 1.5
MAX_DRAWS = 100000  # random paths drawn in search of one under T before giving up
MEASURING = {"threads": 1, "warmup": 5, "runs": 20}  # this machine's CPU, as the search measures
CONTENDERS = ("pick", "random", "random_half_budget", "mobilenetv2", "shallowest")
ALTERNATIVES = CONTENDERS[1:]
MEASURED = CONTENDERS + ("against",)  # and --against's pick of the seed, where one is given
# the search settings that the bench's own options set (--set may not)
OWN_SETTINGS = ("dataset", "seed", "split_seed", "threads", "train_device",
                "target_latency_fraction", "target_latency_ms")


def run_search(args, seed, out):
    """The search command, as a user runs it; returns its summary and the seconds from its
    'started' event (profiling and calibration done) to its 'finished' one."""
    if os.path.exists(out):
        shutil.rmtree(out)
    own = search_settings(args, seed)
    if args.reuse_alternatives:  # the T that --against's alternatives were chosen for
        own["target_latency_ms"] = scaled_target(args, seed)  # (--set may not set it)
    settings = SearchConfig(**own).validate()
    os.makedirs(args.out, exist_ok=True)
    settings_file = out + ".json"
    with open(settings_file, "w") as f:
        json.dump(settings.to_dict(), f)
    command = [sys.executable, "-m", "search_core", "search", "--config", settings_file, "--out", out,
               "--events", "jsonl"]
    lines = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    times = {}
    for line in lines.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            times.setdefault(event["event"], event["time"])
    return RunDirectory(out).read_json(SUMMARY), times["finished"] - times["started"]


def search_settings(args, seed):
    """The search's settings: the defaults, the bench's own, the tiny ones under --quick, then
    those given with --set."""
    settings = dict(dataset=args.dataset, seed=seed, split_seed=args.split_seed,
                    threads=args.threads, train_device=args.train_device,
                    target_latency_fraction=args.target_fraction)
    settings.update(QUICK_SEARCH if args.quick else {})
    settings.update(args.set)
    return settings


def scaled_target(args, seed):
    """--against's T of `seed`, times how much slower this machine runs that run's contenders
    now than when it measured them (args.target_scale)."""
    return round(args.against_rows[seed]["target_ms"] * args.target_scale, 3)


def machine_drift(rows, device, rounds):
    """How many times as long `device` takes now for `rows`' contenders (an --against run's) as
    when that run measured them at its end: the median ratio over all of them, measured in
    `rounds` interleaved rounds."""
    then = {}
    for row in rows:
        for contender in (row.get(name) for name in MEASURED):
            if contender and contender.get("latency_ms"):
                arch = Architecture.from_dict(contender["arch"])
                then[arch.hash] = (arch, contender["latency_ms"])
    now = measure_interleaved(device, [arch for arch, _ in then.values()], rounds)
    return statistics.median(now[key] / ms for key, (_, ms) in then.items())


def parse_settings(pairs):
    """--set NAME=VALUE pairs as a dict of search settings (VALUE read as JSON, else as text);
    ValueError names the first one that is not a setting the bench leaves to its user."""
    settings = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        if not equals:
            raise ValueError("--set {}: give NAME=VALUE".format(pair))
        if name in OWN_SETTINGS:
            raise ValueError("--set {}: the bench sets it (its own options)".format(name))
        try:
            settings[name] = json.loads(text)
        except ValueError:
            settings[name] = text
    try:
        SearchConfig.from_dict(dict(settings))
    except ConfigError as e:
        raise ValueError("--set: {}".format(e)) from None
    return settings


def random_search(space, lut, target, dataset, budget_s, recipe, seed, device):
    """Random members predicted under `target`, trained for `recipe` while `budget_s` lasts; one
    that ends past it does not count. Returns the candidates that count, in order, as
    (arch, validation accuracy, seconds from the start to its end)."""
    generator = random.Random(seed)
    started, finished = time.time(), []
    while True:
        for _ in range(MAX_DRAWS):
            path = [generator.randrange(len(sb.ops)) for sb in space.blocks]
            if lut.predict(path) <= target:
                break
        else:
            raise RuntimeError("no random member of {} draws is predicted under {:.3f} ms".format(
                MAX_DRAWS, target))
        arch = space.architecture(path)
        val = train_architecture(arch, dataset, recipe, seed, device, progress=False)["val_accuracy"]
        elapsed = time.time() - started
        if elapsed > budget_s:
            return finished
        finished.append((arch, val, elapsed))


def best_by(candidates, budget_s):
    """The most accurate (validation) of the candidates finished within `budget_s`, or None."""
    within = [c for c in candidates if c[2] <= budget_s]
    return max(within, key=lambda c: c[1])[0] if within else None


def anytime(candidates):
    """The best validation accuracy so far after each candidate: [(seconds, accuracy)]."""
    curve, best = [], float("-inf")
    for _, val, elapsed in candidates:
        best = max(best, val)
        curve.append((round(elapsed, 1), round(best, 4)))
    return curve


def mobilenet_v2_at(space, target, device, rounds):
    """MobileNetV2 at the widest width multiplier whose latency, the median of `rounds` rounds
    over every width, is under `target` (the narrowest when none is: its latency in the report
    says so). Every width is measured, in rounds: one slow measurement, while another seed's job
    trains beside this one, must not cut the widths short."""
    widths = mobilenet_v2_widths(space.resolution, space.num_classes, space.in_channels)
    return widest_under(widths, measure_interleaved(device, list(widths.values()), rounds), target)


def mobilenet_v2_widths(resolution, num_classes, in_channels):
    """MobileNetV2 at every width of WIDTHS, narrowest first, by hash (widths whose channels
    round alike are one network)."""
    widths = {}
    for width in WIDTHS:
        arch = SearchSpace(width, resolution, num_classes, in_channels).mobilenet_v2()
        widths.setdefault(arch.hash, arch)
    return widths


def widest_under(widths, medians, target):
    """The widest of `widths` whose median latency is under `target` (else the narrowest)."""
    fitting = [arch for key, arch in widths.items() if medians[key] <= target]
    return fitting[-1] if fitting else next(iter(widths.values()))


def shallowest(space):
    return space.architecture(["zero" if any(op.is_zero for op in sb.ops) else "k3_e3"
                               for sb in space.blocks])


def kendall(run_dir, space, dataset, recipe, seed, count, seeds, device):
    """Kendall's tau between shared-weight and standalone validation accuracy (the mean over
    `seeds` training seeds) of `count` architectures spread from the fastest to the slowest of
    the space, its p-value, the pairs, and the tau between the means of the seeds' two halves:
    how well the reference ranks itself (None for one seed)."""
    files = RunDirectory(run_dir)
    config = files.read_config()
    net = Supernet(space, config.shared_weights, config.fast_path)
    net.load_state_dict(files.load_checkpoint("cpu")["supernet"])
    net.to(device)
    calibration = [x for x, _ in itertools.islice(data.iterate_batches(
        dataset.train, dataset, config.batch_size, device=device), config.calibration_batches)]
    shared, standalone = [], []
    for path in calibration_paths(space, count, seed):
        path = tuple(path)
        net.recalibrate_batch_norm(path, calibration)
        net.eval()
        shared.append(accuracy(lambda x: net(x, path), dataset.val, dataset, device))
        arch = space.architecture(path)
        standalone.append([train_architecture(arch, dataset, recipe, seed + k, device,
                                              progress=False)["val_accuracy"]
                           for k in range(seeds)])
    means = [statistics.mean(accs) for accs in standalone]
    half = seeds // 2
    between = _tau([statistics.mean(a[:half]) for a in standalone],
                   [statistics.mean(a[half:]) for a in standalone])[0] if seeds > 1 else None
    tau, p_value = _tau(shared, means)
    return tau, p_value, list(zip(shared, means)), between


def _tau(a, b):
    """Kendall's tau and its p-value (None, None when either side is constant)."""
    tau, p_value = kendalltau(a, b)
    return (None, None) if tau != tau else (float(tau), float(p_value))


def evaluate_seed(args, seed):
    """One seed's search, random search and baselines, retrained and tested: the report's row
    (each contender's architecture kept for the latency measured at the end); for the first seed
    also the ranking figures of its supernet (kendall's; else None)."""
    torch.set_num_threads(args.threads)
    recipe = Recipe(epochs=2) if args.quick else Recipe()
    short = Recipe(epochs=1 if args.quick else args.random_epochs)
    device = LocalDevice(**MEASURING)
    run_dir = os.path.join(args.out, "search-{}".format(seed))
    summary, search_s = run_search(args, seed, run_dir)
    target = summary["target_latency_ms"]
    split = seed if args.split_seed is None else args.split_seed
    dataset = data.load_dataset(args.dataset, summary["best"]["arch"]["input"]["resolution"], split,
                                limit=QUICK_SEARCH["limit"] if args.quick else None)
    test = test_split(dataset, args.quick)
    space = SearchSpace(RunDirectory(run_dir).read_config().width_mult, dataset.resolution,
                        dataset.num_classes, dataset.channels)
    lut = Lut.load(os.path.join(run_dir, LUT), space)
    pick = Architecture.load(os.path.join(run_dir, BEST_ARCH))
    if args.picks_only:
        candidates, contenders = [], dict(dict.fromkeys(CONTENDERS), pick=pick)
    else:
        candidates = random_search(space, lut, target, dataset, search_s, short, seed,
                                   args.train_device)
        contenders = {"pick": pick,
                      "random": best_by(candidates, search_s),
                      "random_half_budget": best_by(candidates, search_s / 2),
                      "mobilenetv2": mobilenet_v2_at(space, target, device, args.rounds),
                      "shallowest": shallowest(space)}
    row = {"seed": seed, "target_ms": target, "search_s": round(search_s, 1),
           **({"against_target_ms": args.against_rows[seed]["target_ms"],
               "target_scale": args.target_scale} if args.reuse_alternatives else {}),
           "random_tried": len(candidates), "random_anytime": anytime(candidates),
           "test_images": len(test),
           "pick_shared_acc": summary["best"]["accuracy"]}
    tested = {}  # one architecture twice (random search's best at half and whole budget): once
    for name, arch in contenders.items():
        if arch is None:
            row[name] = None
            continue
        if arch.hash not in tested:
            tested[arch.hash] = [accuracy(train_architecture(
                arch, dataset, recipe, training_seed, args.train_device, progress=False)["model"],
                test, dataset, args.train_device) for training_seed in training_seeds(args, seed)]
        accs = tested[arch.hash]
        row[name] = {"arch": arch.to_dict(), "test_acc": round(statistics.mean(accs), 4),
                     "test_accs": [round(acc, 4) for acc in accs]}
    if seed != args.seeds[0] or args.picks_only:
        return row, None
    tau, p_value, pairs, between = kendall(run_dir, space, dataset, short, seed,
                                           4 if args.quick else args.tau_archs, args.tau_seeds,
                                           args.train_device)
    return row, {"tau": tau, "p": p_value, "pairs": pairs, "between_seeds": between}


TRAINING_SEED_STRIDE = 10000  # a seed's further training seeds: far from every seed's own


def training_seeds(args, seed):
    """The --train-seeds training seeds every contender of `seed` shares, the seed's own first."""
    return [seed + TRAINING_SEED_STRIDE * k for k in range(args.train_seeds)]


def test_split(dataset, quick):
    """The held-out test set where the dataset has one (shapes), else the split's own."""
    try:
        return data.held_out_test(dataset, per_class=20 if quick else 1000)
    except DatasetError:
        return dataset.test


def remeasure(rows, rounds):
    """Every contender's latency, measured after all training on one device in interleaved
    rounds (each round measures every contender once; the median of the rounds counts), and its
    share of T and feasibility set in its row; and whether each seed's MobileNetV2 is the widest
    under T in these rounds (every width measured in them too), which its width was chosen to
    be."""
    entries = [(row[name], row["target_ms"], Architecture.from_dict(row[name]["arch"]))
               for row in rows for name in MEASURED if row.get(name) is not None]
    mobilenets = {row["seed"]: Architecture.from_dict(row["mobilenetv2"]["arch"])
                  for row in rows if row.get("mobilenetv2")}
    widths = {seed: mobilenet_v2_widths(arch.resolution, arch.num_classes, arch.in_channels)
              for seed, arch in mobilenets.items()}
    # one architecture, one figure: random search's best may stand twice, widths in every seed
    medians = measure_interleaved(LocalDevice(**MEASURING), [arch for _, _, arch in entries] + [
        arch for networks in widths.values() for arch in networks.values()], rounds)
    for contender, target, arch in entries:
        latency = medians[arch.hash]
        contender.update(latency_ms=round(latency, 3), over_target=round(latency / target, 3),
                         feasible=latency <= target)
    for row in rows:
        if row["seed"] in mobilenets:
            widest = widest_under(widths[row["seed"]], medians, row["target_ms"])
            row["mobilenetv2"]["widest_under_target"] = widest.hash == mobilenets[row["seed"]].hash


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    # retraining one network on the three seeds' splits spread 5 points on shapes, more than the
    # 1-point goal: one split for every seed leaves the seeds' own variation
    p.add_argument("--split-seed", type=int,
                   help="one split for every seed (default: each seed draws its own)")
    p.add_argument("--target-fraction", type=float, default=0.8,
                   help="T as this share of a uniform architecture's expected latency")
    # 8 epochs left shapes' networks at 36-54% validation accuracy, where leaving the plateau at
    # chance decides the ranking more than the architecture does (tau 0.12 against it)
    p.add_argument("--random-epochs", type=int, default=20,
                   help="the standalone schedule of random search and of Kendall's tau")
    p.add_argument("--tau-archs", type=int, default=12)
    # one 20-epoch training ranks the same 12 architectures against another seed's with tau 0.23
    # on shapes: two seeds or more say how far the reference itself can be trusted
    p.add_argument("--tau-seeds", type=int, default=1,
                   help="training seeds per architecture of Kendall's tau (the mean is ranked)")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds of the latency measured after all training (and "
                        "of MobileNetV2's widths, and of --reuse-alternatives' machine drift)")
    p.add_argument("--train-seeds", type=int, default=1,
                   help="trainings per contender, their mean its test accuracy (the same "
                        "training seeds for every contender of a seed)")
    p.add_argument("--train-device", default="cpu", choices=("cpu", "cuda"),
                   help="where every contender trains (latency is measured on this machine's CPU)")
    p.add_argument("--jobs", type=int, default=1,
                   help="seeds evaluated at once, each on its share of the cores")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench-quality"))
    p.add_argument("--quick", action="store_true", help="a tiny setting: checks the bench runs")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a search setting other than the defaults (repeatable), e.g. "
                        "sandwich=true: the search's variant that the bench measures")
    p.add_argument("--resume", action="store_true",
                   help="reuse the seeds that an earlier run with the same settings finished in "
                        "--out (each seed's row is kept there as seed-N.json); latency is "
                        "measured again for all")
    p.add_argument("--picks-only", action="store_true",
                   help="retrain the search's pick alone (no random search, baselines or "
                        "ranking): a variant measured --against another run, in a third of the "
                        "time")
    p.add_argument("--against", metavar="RESULT.json",
                   help="another run's result.json: its pick is paired with this run's, seed by "
                        "seed (pick_minus_against)")
    p.add_argument("--reuse-alternatives", action="store_true",
                   help="with --against: search at its T of each seed and pair the pick with its "
                        "random search, MobileNetV2 and shallowest member too, as trained there "
                        "(implies --picks-only)")
    args = p.parse_args()
    if args.reuse_alternatives and not args.against:
        p.error("--reuse-alternatives: give --against RESULT.json, whose alternatives it reuses")
    args.picks_only = args.picks_only or args.reuse_alternatives
    try:
        args.set = parse_settings(args.set)
        args.against_rows = load_against(args) if args.against else None
        if args.reuse_alternatives:
            check_alternatives(args)
    except ValueError as e:
        p.error(str(e))
    if args.train_seeds < 1:
        p.error("--train-seeds: at least 1")
    args.rounds = 2 if args.quick else args.rounds  # every measurement in rounds
    args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    started, rows, ranking = time.time(), {}, {}
    for seed in args.seeds if args.resume else ():
        kept = load_row(args, seed)
        if kept:
            rows[seed] = kept["row"]
            if seed == args.seeds[0]:
                ranking = kept["ranking"]
    print("seeds kept from an earlier run: {}".format(sorted(rows) or "none"), flush=True)
    if args.reuse_alternatives:  # this VM's speed drifts by tens of % between days
        args.target_scale = machine_drift([args.against_rows[seed] for seed in args.seeds],
                                          LocalDevice(**MEASURING), args.rounds)
        print("this machine runs {}'s contenders {:.3f} times as long as it did then: its T of "
              "each seed scaled by that".format(args.against, args.target_scale), flush=True)
    # spawn: a forked child of a process that has run torch's thread pool can hang
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = {pool.submit(evaluate_seed, args, seed): seed for seed in args.seeds
                if seed not in rows}
        for job in as_completed(jobs):
            row, seed_ranking = job.result()
            rows[jobs[job]] = row
            save_row(args, jobs[job], row, seed_ranking)
            if seed_ranking is not None:
                ranking = seed_ranking
                print("kendall tau {} (p {}) over {} architectures (shared, standalone); the "
                      "reference against itself: {}: {}".format(
                          ranking["tau"], ranking["p"], len(ranking["pairs"]),
                          ranking["between_seeds"],
                          [(round(a, 3), round(b, 3)) for a, b in ranking["pairs"]]), flush=True)
    rows = [rows[seed] for seed in args.seeds]
    for row in rows:  # the other run's pick of the seed, as it was trained and tested there
        other = (args.against_rows or {}).get(row["seed"])
        if other and other.get("pick"):
            row["against"] = {k: other["pick"][k] for k in TRAINED}
        if args.reuse_alternatives:
            reuse_alternatives(row, other)
    remeasure(rows, args.rounds)
    for row in rows:  # each contender by its hash: the architectures are in the run directories
        print(json.dumps({k: dict(v, arch=Architecture.from_dict(v["arch"]).hash)
                          if k in MEASURED and v else v for k, v in row.items()}), flush=True)
    figures = report(rows, ranking, args, time.time() - started)
    with open(os.path.join(args.out, RESULT), "w") as f:
        json.dump({"settings": row_settings(args), "commit": commit(), "rows": rows,
                   "ranking": ranking, "figures": figures}, f)


# a kept row counts for a run with the same settings of these
ROW_SETTINGS = ("dataset", "split_seed", "target_fraction", "random_epochs", "tau_archs",
                "tau_seeds", "train_seeds", "quick", "train_device", "set", "picks_only",
                "reuse_alternatives")
# two runs' picks pair seed by seed where these agree: the same splits, T and training seeds
PAIRED_SETTINGS = ("dataset", "split_seed", "target_fraction", "train_seeds", "quick")
RESULT = "result.json"
TRAINED = ("arch", "test_acc", "test_accs")  # a contender as it was retrained and tested


def row_settings(args):
    return {k: getattr(args, k) for k in ROW_SETTINGS}


def commit():
    """The checkout's commit, where it is a git checkout (None elsewhere)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _row_file(args, seed):
    return os.path.join(args.out, "seed-{}.json".format(seed))


def save_row(args, seed, row, ranking):
    """A finished seed's row (and the first seed's ranking), before the latency measured at the
    end: a later run with --resume reuses it."""
    with open(_row_file(args, seed), "w") as f:
        json.dump({"settings": row_settings(args), "row": row, "ranking": ranking}, f)


def load_against(args):
    """The rows of --against's result, by seed; ValueError where it cannot be read or its
    splits, T or training seeds are not this run's."""
    try:
        with open(args.against) as f:
            result = json.load(f)
        settings, rows = result["settings"], {row["seed"]: row for row in result["rows"]}
        differing = [k for k in PAIRED_SETTINGS if settings.get(k) != getattr(args, k)]
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError("--against {}: not a result of this bench ({})".format(
            args.against, e)) from None
    if differing:
        raise ValueError("--against {}: other {} than this run's: its picks cannot be paired "
                         "with this run's".format(args.against, ", ".join(differing)))
    return rows


def check_alternatives(args):
    """ValueError unless --against's result has every seed's alternatives (a run that retrained
    them, not a --picks-only one)."""
    missing = [seed for seed in args.seeds
               if (args.against_rows.get(seed) or {}).get("shallowest") is None]
    if missing:
        raise ValueError("--reuse-alternatives: {} has no alternatives for seed {} (not in it, or "
                         "a --picks-only run)".format(args.against, ", ".join(map(str, missing))))


def reuse_alternatives(row, other):
    """`other`'s alternatives of the seed (an --against row at this row's T), as trained and
    tested there, set in `row`; random search's budget was that run's search time."""
    row.update({name: other[name] and {k: other[name][k] for k in TRAINED}
                for name in ALTERNATIVES},
               random_tried=other["random_tried"], random_anytime=other["random_anytime"],
               random_budget_s=other["search_s"])


def load_row(args, seed):
    """{row, ranking} of `seed` kept by an earlier run with the same settings, else None (the
    first seed's only with its ranking)."""
    try:
        with open(_row_file(args, seed)) as f:
            kept = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or not isinstance(kept.get("settings"), dict):
        return None
    # kept before --train-seeds (trained once) and --picks-only (every contender)
    settings = dict({"train_seeds": 1, "picks_only": False, "reuse_alternatives": False},
                    **kept["settings"])
    if settings != row_settings(args):
        return None
    if args.reuse_alternatives and kept["row"].get("against_target_ms") != \
            args.against_rows[seed]["target_ms"]:
        return None  # searched for another --against's T
    if seed == args.seeds[0] and not kept.get("ranking") and not args.picks_only:
        return None
    return kept


def paired(rows, name, other, key="test_acc", within_target=True):
    """`name` minus `other` in accuracy points (their `key`) over the seeds where both are
    feasible (with `within_target` False: where both exist): {mean, ci95_low, ci95_high, n} (a
    paired-t interval; None for fewer than two seeds)."""
    diffs = [100 * (r[name][key] - r[other][key]) for r in rows if r[name] and r[other] and
             (not within_target or r[name]["feasible"] and r[other]["feasible"])]
    if not diffs:
        return {"mean": None, "ci95_low": None, "ci95_high": None, "n": 0}
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return {"mean": round(mean, 2), "ci95_low": None, "ci95_high": None, "n": 1}
    half = student_t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return {"mean": round(mean, 2), "ci95_low": round(mean - half, 2),
            "ci95_high": round(mean + half, 2), "n": len(diffs)}


def report(rows, ranking, args, wall_s):
    def mean(name):
        accs = [r[name]["test_acc"] for r in rows if r[name] and r[name]["feasible"]]
        return round(statistics.mean(accs), 4) if accs else None

    figures = {"pick_minus_{}".format(other): paired(rows, "pick", other)
               for other in ("mobilenetv2", "random", "random_half_budget", "shallowest")}
    if args.against_rows is not None:  # each seed's pick beside the other run's
        figures["pick_minus_against"] = paired([r for r in rows if r.get("against")], "pick",
                                               "against")
    # on this machine a contender aimed near T measures over it by a few % in one end's rounds
    # and not in the next: the pairs T leaves out, paired all the same
    figures["ignoring_target"] = {other: paired(rows, "pick", other, within_target=False)
                                  for other in ALTERNATIVES}
    figures.update({"{}_test_acc_mean".format(name): mean(name) for name in CONTENDERS})
    figures.update(
        pick_remeasured_over_target=[r["pick"]["over_target"] for r in rows],
        infeasible={name: sum(1 for r in rows if r[name] and not r[name]["feasible"])
                    for name in CONTENDERS},
        # within T, but a wider MobileNetV2 was too, measured at the end: a handicapped baseline
        mobilenetv2_cut_short=[r["seed"] for r in rows if r["mobilenetv2"] and
                               r["mobilenetv2"]["feasible"] and
                               not r["mobilenetv2"]["widest_under_target"]],
        kendall_tau=_rounded(ranking.get("tau")), kendall_tau_p=_rounded(ranking.get("p")),
        reference_self_tau=_rounded(ranking.get("between_seeds")),
        test_images=rows[0]["test_images"],
        seeds=args.seeds, wall_s=round(wall_s, 1))
    for r in rows:
        print("seed {}: T {:.3f} ms; ".format(r["seed"], r["target_ms"]) + "; ".join(
            "{} {}".format(name, "none" if r[name] is None else "{:.2%} at {:.3f} T{}".format(
                r[name]["test_acc"], r[name]["over_target"], _flag(r[name])))
            for name in CONTENDERS))
    print(json.dumps(figures, allow_nan=False))
    return figures


def _flag(contender):
    if not contender["feasible"]:
        return " (over T)"
    return "" if contender.get("widest_under_target", True) else " (a wider one is under T)"


def _rounded(value):
    return None if value is None else round(value, 3)


if __name__ == "__main__":
    main()
