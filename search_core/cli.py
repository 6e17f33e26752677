"""Command line: `python -m search_core COMMAND ...` (see `--help` of each command)."""
import argparse
import json
import os
import sys
import traceback

import torch

from nano_agent.arch import Architecture, ArchitectureError
from nano_agent.complexity import complexity
from nano_agent.config import TOKEN_ENV
from nano_agent.onnx_backend import OPSET
from nano_agent.protocol import BACKENDS
from nano_agent.results import latency_ms
from nano_agent.space import SearchSpace

from .config import (BUNDLED_DATASETS, CONSTRAINT_FORMS, DATASETS, DEFAULT_WEIGHTS, LOSS_FORMS,
                     STRATEGIES, TRAIN_DEVICES, ConfigError, SearchConfig)
from .data import DatasetError, load_dataset
from .device_client import LatencyError
from .events import HEARTBEAT_S, ConsoleEvents, JsonLinesEvents
from .export import WeightsMismatch, export_model, export_onnx
from .latency import open_device
from .lut import Lut, profile_and_calibrate
from .measurements import Measurer
from .recipe import Recipe
from .rundir import CONFIG, DiskFull, RunDirectory, RunDirectoryBusy
from .search import Search
from .train import DatasetMismatch, train_architecture

USER_ERRORS = (ArchitectureError, ConfigError, DatasetError, DatasetMismatch, LatencyError,
               FileExistsError, FileNotFoundError, RunDirectoryBusy, DiskFull, WeightsMismatch)
DATASET_HELP = ", ".join(name + (" (bundled)" if name in BUNDLED_DATASETS else "") for name in DATASETS)


def _space_arguments(p, width=1.0, resolution=224, classes=1000, channels=3):
    p.add_argument("--width", type=float, default=width, help="width multiplier (default %(default)s)")
    p.add_argument("--resolution", type=int, default=resolution,
                   help="input resolution (default %(default)s)")
    p.add_argument("--classes", type=int, default=classes, help="classes (default %(default)s)")
    p.add_argument("--channels", type=int, default=channels,
                   help="input channels (default %(default)s)")


def _space(args):
    return SearchSpace(args.width, args.resolution, args.classes, args.channels)


def _search_arguments(p):
    d = SearchConfig()
    p.add_argument("--dataset", default=d.dataset, help=DATASET_HELP)
    p.add_argument("--data-dir", help="dataset directory (cifar10: the python-format batches; "
                                      "imagefolder: one sub-directory per class)")
    p.add_argument("--out", required=True, help="run directory (must not hold a run yet)")
    p.add_argument("--config", help="take every setting from this JSON file (e.g. another run's "
                                    "config.json) instead of the flags below")
    p.add_argument("--resolution", type=int, default=d.resolution)
    p.add_argument("--width", type=float, default=d.width_mult, help="width multiplier")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--split-seed", type=int,
                   help="the seed that draws the train / validation / test split (default: --seed); "
                        "fix it to compare searches with different seeds on the same images")
    p.add_argument("--epochs", type=int, default=d.epochs, help="all epochs, warm-up included")
    p.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="weight learning rate")
    p.add_argument("--arch-lr", type=float, default=d.arch_lr, help="architecture learning rate")
    p.add_argument("--strategy", choices=STRATEGIES, default=d.strategy)
    p.add_argument("--constraint", choices=CONSTRAINT_FORMS, default=d.constraint,
                   help="how the targets steer the search: absolute (default: ACC + w |LAT/T - 1|, "
                        "the search uses the budget), soft (MnasNet's ACC x (LAT/T)^w: faster is "
                        "always better) or hard (no reward below T). The pick is the most accurate "
                        "sample within the targets, among those within [0.85 T, T] where any is")
    p.add_argument("--hard-constraint", dest="constraint", action="store_const", const="hard",
                   help="the same as --constraint hard")
    p.add_argument("--loss-form", choices=LOSS_FORMS, default=d.loss_form,
                   help="gradient strategy, soft and hard constraints: CE x (LAT/T)^-w (mul) or "
                        "CE + -w x LAT/T (add)")
    p.add_argument("--target-latency-ms", type=float,
                   help="latency target T (default: --target-latency-fraction of the expected "
                        "latency of a uniformly random architecture, from the lookup table)")
    p.add_argument("--target-latency-fraction", type=float, default=d.target_latency_fraction,
                   help="the automatic target's share of that expectation (default %(default)s)")
    p.add_argument("--latency-weight", type=float,
                   help="w of the constraints, negative (default per strategy and form: {})".format(
                       "; ".join("{} {}".format(strategy, ", ".join(
                           "{} {:g}".format(form, w) for form, w in weights.items()))
                           for strategy, weights in DEFAULT_WEIGHTS.items())))
    p.add_argument("--target-memory-mb", type=float, help="inference memory target (MiB)")
    p.add_argument("--target-params-m", type=float, help="parameter count target (millions)")
    p.add_argument("--samples-per-epoch", type=int, default=d.samples_per_epoch,
                   help="architectures drawn per epoch besides the argmax")
    p.add_argument("--independent-weights", action="store_true",
                   help="give every op its own weights (ProxylessNAS) instead of sharing them")
    p.add_argument("--sandwich", action="store_true",
                   help="warm up by the sandwich rule: the largest, the smallest and a random path "
                        "each step, distilled from the largest (BigNAS; about 3x the warm-up)")
    p.add_argument("--device", default=d.device,
                   help="where latency is measured: local, a device agent's host:port, or a pool "
                        "of identical agents as host:port,host:port,...")
    p.add_argument("--device-group", help="the pool's name: its measurements and lookup table "
                                          "are kept as group:<name> (default: the address list)")
    _token_argument(p)
    _backend_argument(p)
    p.add_argument("--calibration-archs", type=int, default=d.calibration_archs,
                   help="architectures measured end to end to calibrate the lookup table "
                        "(default %(default)s)")
    p.add_argument("--measure-runs", type=int, default=d.measure_runs)
    p.add_argument("--measure-warmup", type=int, default=d.measure_warmup)
    p.add_argument("--measure-threads", type=int, default=d.measure_threads)
    p.add_argument("--device-wait-s", type=float, default=d.device_wait_s,
                   help="seconds to wait for a device that stops answering (a reboot, lost "
                        "Wi-Fi) before the search fails; it stays resumable (default %(default)g)")
    p.add_argument("--min-free-mb", type=float, default=d.min_free_mb,
                   help="stop cleanly (resumable) when the run directory's disk has less free "
                        "space than this (default %(default)g)")
    p.add_argument("--threads", type=int, help="torch threads for training (default: all cores)")
    p.add_argument("--train-device", choices=TRAIN_DEVICES, default=d.train_device)
    _fast_path_argument(p)
    p.add_argument("--limit", type=int, help="at most this many images per split (quick runs)")


def _fast_path_argument(p):
    p.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                   help="train with the eager reference instead of the fast path (the same "
                        "arithmetic, several times slower on a CPU; a GPU always trains eager)")


def _token_argument(p):
    p.add_argument("--device-token", default=os.environ.get(TOKEN_ENV),
                   help="the device agent's token (default ${}); never stored in the run "
                        "directory".format(TOKEN_ENV))


def _backend_argument(p):
    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0],
                   help="how the device runs the network: pytorch, or onnxruntime (exported to "
                        "ONNX, as deployed); default %(default)s")


def _export_token(args):
    if args.device_token:
        os.environ[TOKEN_ENV] = args.device_token


def _config(args):
    return SearchConfig(
        dataset=args.dataset, data_dir=args.data_dir, resolution=args.resolution,
        width_mult=args.width, seed=args.seed, split_seed=args.split_seed, epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        batch_size=args.batch_size, lr=args.lr, arch_lr=args.arch_lr, strategy=args.strategy,
        loss_form=args.loss_form, target_latency_ms=args.target_latency_ms,
        target_latency_fraction=args.target_latency_fraction,
        latency_weight=args.latency_weight, constraint=args.constraint,
        target_memory_mb=args.target_memory_mb, target_params_m=args.target_params_m,
        samples_per_epoch=args.samples_per_epoch, shared_weights=not args.independent_weights,
        sandwich=args.sandwich,
        device=args.device, device_group=args.device_group, backend=args.backend,
        calibration_archs=args.calibration_archs, measure_runs=args.measure_runs,
        measure_warmup=args.measure_warmup,
        measure_threads=args.measure_threads, device_wait_s=args.device_wait_s,
        min_free_mb=args.min_free_mb,
        threads=args.threads, train_device=args.train_device, fast_path=args.fast_path,
        limit=args.limit).validate()


def _events(args):
    if getattr(args, "events", None) == "jsonl":
        return JsonLinesEvents(heartbeat_s=HEARTBEAT_S)
    return ConsoleEvents()


def _config_file(path):
    try:
        with open(path, encoding="utf-8") as f:
            settings = json.load(f)
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise ConfigError("cannot read settings from {}: {}".format(path, e))
    except RecursionError:
        raise ConfigError("cannot read settings from {}: nested too deeply".format(path))
    if not isinstance(settings, dict):
        raise ConfigError("{} must hold a JSON object of settings".format(path))
    return SearchConfig.from_dict(settings)


def cmd_search(args, events):
    _export_token(args)  # Search opens the device itself; the token stays out of config.json
    config = _config_file(args.config) if args.config else _config(args)
    files = RunDirectory(args.out).create()
    files.lock_worker()  # before the check: two workers started at once cannot both pass it
    if files.exists(CONFIG):
        raise FileExistsError("{} already holds a run: continue it with `python -m search_core "
                              "resume {}` or choose another --out".format(args.out, args.out))
    Search(config, args.out, events).run()


def cmd_resume(args, events):
    _export_token(args)
    files = RunDirectory(args.run_dir)
    config = files.read_config()
    files.lock_worker()
    if args.device:  # the same device at a new address (a restarted agent); the cache keys on its identity
        config.device = args.device
    Search(config, args.run_dir, events).run()


def cmd_space(args, events):
    space = _space(args)
    if args.json:
        print(json.dumps({"config": space.config(), "size": space.size,
                          "blocks": [{"index": b.index, "stage": b.stage, "stride": b.stride,
                                      "in_channels": b.in_channels, "out_channels": b.out_channels,
                                      "resolution": b.resolution,
                                      "ops": [op.name for op in b.ops]} for b in space.blocks]},
                         indent=2))
    else:
        print(space.describe())


def cmd_baseline(args, events):
    arch = _space(args).mobilenet_v2()
    if args.out:
        arch.save(args.out)
        print("wrote {} ({})".format(args.out, arch.short_hash), file=sys.stderr)
    else:
        print(arch.to_json(indent=2))


def cmd_info(args, events):
    arch = Architecture.load(args.arch)
    cost = complexity(arch)
    info = {"arch_hash": arch.hash, "ops": arch.ops, "input_shape": list(arch.input_shape),
            "num_classes": arch.num_classes, "params": cost.params, "macs": cost.macs,
            "activation_peak_bytes": cost.activation_peak_bytes, "memory_bytes": cost.memory_bytes}
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print("architecture {}  input {}  {} classes".format(
        arch.short_hash, "x".join(str(d) for d in arch.input_shape), arch.num_classes))
    print("searchable blocks: {}".format(" ".join(arch.ops) or "-"))
    print("params            {:,} ({:.3f} M)".format(cost.params, cost.params / 1e6))
    print("FLOPs (mult-adds) {:,} ({:.1f} M)".format(cost.macs, cost.macs / 1e6))
    print("memory (estimate) {:.2f} MiB: {:.2f} MiB weights + {:.2f} MiB peak activations".format(
        cost.memory_bytes / 2 ** 20, cost.params * 4 / 2 ** 20,
        cost.activation_peak_bytes / 2 ** 20))


def cmd_measure(args, events):
    arch = Architecture.load(args.arch)
    source = open_device(args.device, args.threads, args.warmup, args.runs, args.device_token,
                         args.backend)
    stats = source.measure(arch)
    if args.json:
        print(json.dumps(stats, indent=2))
        return
    print("{} on {}: latency {:.3f} ms (the fastest run); median {:.3f} ms, mean {:.3f} +- {:.3f} "
          "ms, p90 {:.3f} ms ({} runs after {} warm-up)".format(
              arch.short_hash, source.device_id, latency_ms(stats), stats["median_ms"],
              stats["mean_ms"], stats["std_ms"], stats["p90_ms"], stats["runs"], stats["warmup"]))


def cmd_profile(args, events):
    space = _space(args)
    source = open_device(args.device, args.threads, args.warmup, args.runs, args.device_token,
                         args.backend)
    if args.calibrate:
        lut = profile_and_calibrate(source, space, Measurer(source), args.calibrate)
    else:
        lut = Lut(source.profile(space), space)
    message = "wrote {}: {} blocks, fixed layers {:.3f} ms".format(
        args.out, len(lut.table), lut.fixed_ms)
    if args.calibrate:
        message += "; calibrated on {archs} architectures ({rounds} rounds): measured = {a:.3f} x " \
                   "table + {b:.3f} ms, median error {median_abs_error:.1%}, max " \
                   "{max_abs_error:.1%}".format(**lut.data["calibration"])
    lut.save(args.out)
    print(message, file=sys.stderr)


def cmd_train(args, events):
    arch = Architecture.load(args.arch)
    split_seed = args.seed if args.split_seed is None else args.split_seed
    dataset = load_dataset(args.dataset, arch.resolution, split_seed, args.data_dir, limit=args.limit)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    events.emit("training_started", arch_hash=arch.hash, dataset=dataset.name, epochs=recipe.epochs,
                seed=args.seed, split_seed=split_seed)
    result = train_architecture(
        arch, dataset, recipe, seed=args.seed, device=args.train_device, fast=args.fast_path,
        progress=args.events != "jsonl",
        on_epoch=lambda done, epochs, loss: events.emit("training_epoch", epoch=done,
                                                        epochs=epochs, loss=loss))
    model = result.pop("model").cpu()
    if args.save:
        torch.save(model.state_dict(), args.save)
    if args.onnx:
        export_model(model, arch, args.onnx)
    result.update(arch_hash=arch.hash, dataset=dataset.name)
    events.emit("trained", **{k: v for k, v in result.items() if k != "recipe"})
    if args.events == "jsonl":
        return
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("{} on {}: test accuracy {:.2%} (validation {:.2%}), {} epochs in {:.0f} s".format(
            arch.short_hash, dataset.name, result["test_accuracy"], result["val_accuracy"],
            result["epochs"], result["train_time_s"]))


def cmd_export(args, events):
    arch = Architecture.load(args.arch)
    export_onnx(arch, args.out, args.weights)
    print("{}: {} (opset {}, input {}, weights {})".format(
        arch.short_hash, args.out, OPSET, "x".join(str(d) for d in arch.input_shape),
        args.weights or "random"))


def parser():
    root = argparse.ArgumentParser(prog="python -m search_core",
                                   description="Hardware-aware neural architecture search.")
    sub = root.add_subparsers(dest="command", required=True)

    p = sub.add_parser("search", help="run a latency-aware architecture search")
    _search_arguments(p)
    p.add_argument("--events", choices=("console", "jsonl"), default="console",
                   help="progress bars for people, or JSON lines on stdout for programs")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("resume", help="continue an interrupted search from its last checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--device", help="measure here instead of the run's device (e.g. its new "
                                    "host:port); cached measurements follow the device's identity")
    _token_argument(p)
    p.add_argument("--events", choices=("console", "jsonl"), default="console")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("space", help="print the search space and its exact size")
    _space_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_space)

    p = sub.add_parser("baseline", help="write a reference architecture's JSON")
    p.add_argument("name", choices=("mobilenetv2",))
    _space_arguments(p)
    p.add_argument("--out", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("info", help="params, FLOPs and estimated memory of an architecture")
    p.add_argument("arch")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("measure", help="measure an architecture's latency on a device")
    p.add_argument("arch")
    p.add_argument("--device", default="local", help="local, or a device agent's host:port")
    _token_argument(p)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    _backend_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("profile", help="profile the per-op latency lookup table of a space")
    _space_arguments(p, width=0.5, resolution=32, classes=10, channels=1)
    p.add_argument("--device", default="local", help="local, or a device agent's host:port")
    _token_argument(p)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    _backend_argument(p)
    p.add_argument("--calibrate", type=int, default=10, metavar="N",
                   help="measure N random architectures end to end and fit the table's "
                        "correction (0: none; default %(default)s)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("train", help="train an architecture from scratch, report test accuracy")
    p.add_argument("arch")
    p.add_argument("--dataset", default="digits", help=DATASET_HELP)
    p.add_argument("--data-dir")
    recipe = Recipe()
    p.add_argument("--epochs", type=int, default=recipe.epochs)
    p.add_argument("--batch-size", type=int, default=recipe.batch_size)
    p.add_argument("--lr", type=float, default=recipe.lr)
    p.add_argument("--seed", type=int, default=0, help="the training's seed (and the split's, unless "
                                                       "--split-seed)")
    p.add_argument("--split-seed", type=int,
                   help="the seed that draws the train / validation / test split (default: --seed); "
                        "fix it to compare architectures or seeds on the same test images")
    p.add_argument("--threads", type=int)
    p.add_argument("--train-device", choices=TRAIN_DEVICES, default="cpu")
    _fast_path_argument(p)
    p.add_argument("--limit", type=int, help="at most this many images per split")
    p.add_argument("--save", help="write the trained weights (state_dict) here")
    p.add_argument("--onnx", help="write the trained model as ONNX here (as `export` does)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--events", choices=("console", "jsonl"), default="console",
                   help="text for people, or JSON lines on stdout for programs (the dashboard)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="write an architecture (and its trained weights) as ONNX "
                                      "for onnxruntime or TensorRT")
    p.add_argument("arch")
    p.add_argument("--weights", help="the trained state_dict (`train --save`); default: random "
                                     "weights, enough to measure latency")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.set_defaults(func=cmd_export)
    return root


def main(argv=None):
    args = parser().parse_args(argv)
    events = _events(args)
    try:
        args.func(args, events)
        return 0
    except USER_ERRORS as e:
        events.emit("failed", error=str(e), type=type(e).__name__)
        return 2
    except KeyboardInterrupt:
        events.emit("failed", error="interrupted", type="KeyboardInterrupt")
        return 130
    except Exception as e:  # the worker's crash must still reach whoever follows the stream
        events.emit("failed", error=str(e) or type(e).__name__, type=type(e).__name__,
                    traceback=traceback.format_exc())
        raise
    finally:
        events.close()
