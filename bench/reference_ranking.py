"""How well does standalone training rank the space's architectures against itself? The
search-quality bench ranks the supernet's shared-weight accuracy against standalone training
(Kendall's tau); this measures the ceiling of that reference, to choose its schedule and seeds.

--archs architectures spread from the fastest to the slowest of the space (as the search-quality
bench picks them: lut.calibration_paths), each retrained from scratch with `train`'s recipe for
each schedule of --epochs, with --seeds training seeds, on one split. Per schedule: Kendall's tau
between two single seeds (the mean over every pair of seeds) and between the means of the seeds'
two halves, on validation accuracy and on shapes' held-out test set (10,000 images); and the
seeds' spread of each architecture's accuracy.

Trainings run --jobs at a time (spawned processes, each on its share of the cores, or all on one
GPU with --train-device cuda), in the order seed by seed, so that a run cut short by --deadline-s
(no training starts after it; those running are stopped) still has whole seeds to rank. Each
training's figures are printed as a JSON line when it ends; the last line is one JSON object:
per schedule, `pair_tau` and `halves_tau` for `val` and `held_out`, `seeds_done`, `std_points`.

    .venv/bin/python bench/reference_ranking.py [--epochs 20 60] [--seeds 4] [--archs 12]
                                                [--jobs 2] [--train-device cuda] [--deadline-s S]
"""
import argparse
import itertools
import json
import multiprocessing
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from nano_agent.space import SearchSpace  # noqa: E402
from search_core import data  # noqa: E402
from search_core.recipe import Recipe  # noqa: E402
from search_core.lut import calibration_paths  # noqa: E402
from search_core.train import accuracy, train_architecture  # noqa: E402

_loaded = {}  # each worker loads the split and the held-out set once


def _datasets(args):
    if not _loaded:
        dataset = data.load_dataset(args.dataset, 32, args.split_seed, limit=args.limit)
        _loaded.update(dataset=dataset, held_out=data.held_out_test(
            dataset, per_class=args.held_out_per_class) if args.dataset == "shapes" else None)
    return _loaded["dataset"], _loaded["held_out"]


def _init(threads):
    torch.set_num_threads(threads)


def train_one(task):
    """One retraining: {epochs, seed, arch, val, held_out, train_s}."""
    args, epochs, seed, index, path = task
    dataset, held_out = _datasets(args)
    space = SearchSpace(0.5, dataset.resolution, dataset.num_classes, dataset.channels)
    result = train_architecture(space.architecture(path), dataset, Recipe(epochs=epochs), seed,
                                args.train_device, progress=False)
    model = result["model"].to(args.train_device).eval()
    return {"epochs": epochs, "seed": seed, "arch": index, "val": result["val_accuracy"],
            "held_out": accuracy(model, held_out, dataset, args.train_device)
            if held_out is not None else None,
            "train_s": round(result["train_time_s"], 1)}


def tasks(args):
    dataset = data.load_dataset(args.dataset, 32, args.split_seed, limit=args.limit)
    space = SearchSpace(0.5, dataset.resolution, dataset.num_classes, dataset.channels)
    paths = calibration_paths(space, args.archs, args.arch_seed)
    return [(args, epochs, seed, index, path) for seed in range(args.seeds)
            for epochs in args.epochs for index, path in enumerate(paths)]


def summarise(results, args):
    """Per schedule: the seeds with every architecture trained, and the taus among them."""
    summary = {}
    for epochs in args.epochs:
        table = {}  # seed -> arch -> result
        for r in results:
            if r["epochs"] == epochs:
                table.setdefault(r["seed"], {})[r["arch"]] = r
        seeds = sorted(s for s, row in table.items() if len(row) == args.archs)
        entry = {"seeds_done": len(seeds)}
        for metric in ("val", "held_out"):
            if table and any(r[metric] is None for row in table.values() for r in row.values()):
                continue
            by_seed = [[table[s][a][metric] for a in range(args.archs)] for s in seeds]
            entry[metric] = {"pair_tau": _mean([_tau(a, b) for a, b in
                                                itertools.combinations(by_seed, 2)]),
                             "halves_tau": _halves_tau(by_seed),
                             "mean_acc": _mean([statistics.mean(s) for s in by_seed])}
            if len(seeds) > 1:  # spread of one architecture's accuracy over the seeds, in points
                entry[metric]["std_points"] = round(100 * statistics.median(
                    statistics.stdev(column) for column in zip(*by_seed)), 2)
        summary[str(epochs)] = entry
    return summary


def _tau(a, b):
    tau = kendalltau(a, b)[0]
    return None if tau != tau else float(tau)


def _halves_tau(by_seed):
    if len(by_seed) < 2:
        return None
    half = len(by_seed) // 2
    means = [[statistics.mean(column) for column in zip(*part)]
             for part in (by_seed[:half], by_seed[half:])]
    return _round(_tau(*means))


def _mean(values):
    values = [v for v in values if v is not None]
    return _round(statistics.mean(values)) if values else None


def _round(value):
    return None if value is None else round(value, 3)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="shapes", choices=("shapes", "digits"))
    p.add_argument("--epochs", type=int, nargs="+", default=[20, 60],
                   help="the schedules compared (epochs of train's recipe)")
    p.add_argument("--seeds", type=int, default=4, help="training seeds per architecture")
    p.add_argument("--archs", type=int, default=12)
    p.add_argument("--arch-seed", type=int, default=0, help="draws the architectures")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--held-out-per-class", type=int, default=1000)
    p.add_argument("--limit", type=int, help="at most this many images per split (smoke tests)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--train-device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--deadline-s", type=float, help="start no training after this many seconds")
    args = p.parse_args(argv)
    if min(args.epochs + [args.seeds, args.archs, args.jobs, args.held_out_per_class]) < 1:
        p.error("--epochs, --seeds, --archs, --jobs and --held-out-per-class must be positive")
    if args.archs < 3:
        p.error("--archs: at least 3 to rank")
    if args.train_device == "cuda" and not torch.cuda.is_available():
        p.error("--train-device cuda: no CUDA device here")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    deadline = started + args.deadline_s if args.deadline_s else None
    work = tasks(args)
    # the held-out set is generated once, here, before the workers read its cache
    _datasets(args)
    results = []
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    # spawn: a forked child of a process that has run torch's thread pool (or CUDA) can hang
    pool = multiprocessing.get_context("spawn").Pool(args.jobs, _init, (threads,))
    try:
        finished = pool.imap_unordered(train_one, work)
        for _ in work:
            try:
                result = finished.next(timeout=None if deadline is None else
                                       max(0.0, deadline - time.time()))
            except multiprocessing.TimeoutError:
                print("deadline: {} of {} trainings finished".format(len(results), len(work)),
                      flush=True)
                break
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        pool.terminate()
        pool.join()
    summary = summarise(results, args)
    summary.update(archs=args.archs, seeds=args.seeds, dataset=args.dataset,
                   train_device=args.train_device, jobs=args.jobs,
                   trainings=len(results), wall_s=round(time.time() - started, 1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
