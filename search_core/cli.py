"""Command line: `python -m search_core COMMAND ...` (see `--help` of each command)."""
import argparse
import json
import os
import sys
import traceback
from dataclasses import fields

import torch

from nano_agent.arch import Architecture, ArchitectureError
from nano_agent.complexity import complexity
from nano_agent.credentials import TOKEN_ENV
from nano_agent.onnx_backend import OPSET
from nano_agent.protocol import BACKENDS
from nano_agent.results import latency_ms
from nano_agent.space import SearchSpace

from .settings import (CHOICES, GENERATIONS, LIMITS, TRAIN_SETTINGS, TYPES, ConfigError,
                       SearchConfig, describe_limit)
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
from .specialise import OVERRIDES, Specialisation
from .train import DatasetMismatch, train_architecture

USER_ERRORS = (ArchitectureError, ConfigError, DatasetError, DatasetMismatch, LatencyError,
               FileExistsError, FileNotFoundError, RunDirectoryBusy, DiskFull, WeightsMismatch)


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
    p.add_argument("--out", required=True, help="run directory (must not hold a run yet)")
    p.add_argument("--config", help="take every setting from this JSON file (e.g. another run's "
                                    "config.json) instead of the flags below")
    _setting_arguments(p, *(f.name for f in fields(SearchConfig)))
    p.add_argument("--hard-constraint", dest="constraint", action="store_const", const="hard",
                   help="the same as --constraint hard")
    _token_argument(p)


def _setting_arguments(p, *names, inherited=None):
    """A flag for each of these settings, from its declaration (settings.py); `inherited`: whose
    value a flag not given leaves (its default is then None)."""
    declared = dict((f.name, f) for f in fields(SearchConfig))
    for name in names:
        _setting_argument(p, declared[name], inherited)


def _setting_argument(p, f, inherited=None):
    """The flag of one setting: its type, choices, default and range in the help."""
    meta = f.metadata
    flag = meta["flag"] or "--" + f.name.replace("_", "-")
    kind, _ = TYPES[f.name]
    if kind is bool:  # the flag turns the default over
        p.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true",
                       help=meta["help"])
        return
    told = [meta["help"].replace("%", "%%")] if meta["help"] else []
    if inherited:
        told.append("default: " + inherited)
    elif f.default is not None and f.name not in CHOICES:
        told.append("default %(default)s")
    if f.name in LIMITS:
        told.append(describe_limit(LIMITS[f.name]))
    # the choices in the usage, not argparse's own check: every wrong value is refused alike, by
    # the settings' check (a `failed` event on the event stream)
    metavar = "{" + ",".join(CHOICES[f.name]) + "}" if f.name in CHOICES else None
    p.add_argument(flag, dest=f.name, type=kind, default=None if inherited else f.default,
                   metavar=metavar, help="; ".join(told))


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
    return SearchConfig(**dict((f.name, getattr(args, f.name))
                               for f in fields(SearchConfig))).validate()


def _events(args):
    if getattr(args, "events", None) == "jsonl":
        return JsonLinesEvents(heartbeat_s=HEARTBEAT_S)
    return ConsoleEvents()


def _settings_object(path):
    try:
        with open(path, encoding="utf-8") as f:
            settings = json.load(f)
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise ConfigError("cannot read settings from {}: {}".format(path, e))
    except RecursionError:
        raise ConfigError("cannot read settings from {}: nested too deeply".format(path))
    if not isinstance(settings, dict):
        raise ConfigError("{} must hold a JSON object of settings".format(path))
    return settings


def _config_file(path):
    return SearchConfig.from_dict(_settings_object(path))


def _new_run_directory(out, advice):
    """`out` made and locked for this worker; FileExistsError, giving `advice`, if it holds a run."""
    files = RunDirectory(out).create()
    files.lock_worker()  # before the check: two workers started at once cannot both pass it
    if files.exists(CONFIG):
        raise FileExistsError("{} already holds a run: {}".format(out, advice))


def cmd_search(args, events):
    _export_token(args)  # Search opens the device itself; the token stays out of config.json
    config = _config_file(args.config) if args.config else _config(args)
    _new_run_directory(args.out, "continue it with `python -m search_core resume {}` or choose "
                                 "another --out".format(args.out))
    Search(config, args.out, events).run()


def cmd_resume(args, events):
    _export_token(args)
    files = RunDirectory(args.run_dir)
    config = files.read_config()
    files.lock_worker()
    if args.device:  # the same device at a new address (a restarted agent); the cache keys on its identity
        config.device = args.device
    Search(config, args.run_dir, events).run()


def cmd_specialise(args, events):
    _export_token(args)
    _new_run_directory(args.out, "choose another --out")
    overrides = _settings_object(args.config) if args.config else {}
    overrides.update((name, getattr(args, name)) for name in OVERRIDES
                     if getattr(args, name) is not None)
    Specialisation(args.run_dir, args.out, events, args.generations, **overrides).run()


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
              arch.short_hash, source.device_key, latency_ms(stats), stats["median_ms"],
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


def _train_settings(args):
    """`args` with the data and training settings of `--config`'s run, if given: its dataset and
    split (its split_seed, else its seed), threads, device and training path."""
    if args.config:
        run = _config_file(args.config)
        for name in TRAIN_SETTINGS:
            setattr(args, name, getattr(run, name))
        args.split_seed = run.seed if run.split_seed is None else run.split_seed
    return args


def cmd_train(args, events):
    args = _train_settings(args)
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

    p = sub.add_parser("specialise", help="pick for new targets, another device or runtime from "
                                          "a run's trained supernet, training nothing")
    p.add_argument("run_dir", help="a search's run directory (its checkpoint holds the supernet)")
    p.add_argument("--out", required=True, help="the specialisation's directory (must not hold a "
                                                "run yet)")
    p.add_argument("--config", help="take the new targets, device and runtime from this JSON "
                                    "object (any of the settings below; a flag given wins)")
    _setting_arguments(p, *OVERRIDES, inherited="the run's")
    p.add_argument("--generations", type=int, default=GENERATIONS,
                   help="generations of the evolutionary search, each measuring the run's "
                        "samples per epoch + 1 paths on the device (default %(default)s)")
    _token_argument(p)
    p.add_argument("--events", choices=("console", "jsonl"), default="console")
    p.set_defaults(func=cmd_specialise)

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
    _setting_arguments(p, *TRAIN_SETTINGS)
    p.add_argument("--config", help="take the settings above from this search settings file (a "
                                    "run's config.json): the run's data, split, threads and "
                                    "training path, as the dashboard's retrainings do")
    recipe = Recipe()
    p.add_argument("--epochs", type=int, default=recipe.epochs)
    p.add_argument("--batch-size", type=int, default=recipe.batch_size)
    p.add_argument("--lr", type=float, default=recipe.lr)
    p.add_argument("--seed", type=int, default=0, help="the training's seed (and the split's, unless "
                                                       "--split-seed)")
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
