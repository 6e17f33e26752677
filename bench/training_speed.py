"""Where a training step's time goes, and how much the fast path (search_core/fastpath.py) saves.

Side by side in one run, at the search's default setting (width 0.5, 32x32x1 input, 10 classes,
batch 64, label smoothing 0.1, SGD with Nesterov momentum, gradient clipping, as `train` and the
search take a step), every variant's step timed in interleaved rounds (one step of each, in turn,
so that the machine's noise hits all alike), its median taken:

* the ceilings of this machine: a 1024x1024 float32 matrix product (GFLOP/s) and a 200 MB copy
  (GB/s, read + write);
* the child (MobileNetV2) step: `eager` (as before the fast path: NCHW, per-tensor SGD), the fast
  path's parts alone (`channels_last`; `channels_last` with the 1x1 convolutions as GEMMs), the
  whole fast path (`fast`), `eager` and `fast` under bf16 autocast (AMP), and with `--compile`
  both compiled by torch.compile (inductor; compilation timed apart; on a GPU also `fast` with CUDA
  graphs, mode reduce-overhead). Each figure is a ratio to `eager`;
* the forward alone (with autograd, as in a step) of `eager` and `fast`: backward + optimizer
  over forward;
* the supernet's weight step on MobileNetV2's path (against the child on the same path) and on
  uniformly drawn paths, fast and eager;
* the evaluation forward (a batch of 256 under inference_mode), fast and eager;
* a per-op-family profile of the fast child step and the fast supernet step: milliseconds per
  step, share, GFLOP/s where the profiler counts FLOPs, GB/s of the inputs the ops read.

With `--commands`, the whole `python -m search_core train` of MobileNetV2 on digits for 12 epochs
(start-up and all), fast and `--no-fast-path`, alternated `--command-rounds` times. With
`--accuracy`, MobileNetV2 and the shallowest member retrained on shapes with the full recipe, fast
and eager, `--accuracy-seeds` training seeds each on one split: test accuracies, means and spreads.

    .venv/bin/python bench/training_speed.py [--rounds 30] [--compile] [--commands] [--accuracy]
                                             [--device cuda]

`--device cuda` takes every step, the ceilings, the commands (`--train-device cuda`) and the
retrainings on the GPU, timing each step until its kernels have run.

Run it on an otherwise idle machine: another job on these 2 cores slows a step by up to 7x. A
readable table first; the last line of output is one line of JSON with every figure.
"""
import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nano_agent.builder import build_model  # noqa: E402
from nano_agent.space import SearchSpace  # noqa: E402
from search_core import data, fastpath  # noqa: E402
from search_core.recipe import Recipe  # noqa: E402
from search_core.supernet import Supernet  # noqa: E402
from search_core.train import clip_gradients, sgd, train_architecture  # noqa: E402
from search_quality import shallowest  # noqa: E402

RECIPE = Recipe()
NUM_CLASSES, IN_CHANNELS = 10, 1
WARMUP_ROUNDS = 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Step(object):
    """One training step as `train` and the search take it: forward, cross-entropy, backward,
    clipping, SGD. `every_step`: every parameter gets a gradient (a child, not a supernet)."""

    def __init__(self, forward, params, fast, every_step=True, autocast=False, device="cpu"):
        self.forward, self.params, self.fast, self.autocast = forward, list(params), fast, autocast
        self.device_type = torch.device(device).type
        self.optimizer = sgd(self.params, RECIPE.lr, RECIPE.weight_decay, fast,
                             every_step=every_step)

    def __call__(self, x, y):
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.autocast):
            loss = F.cross_entropy(self.forward(x), y, label_smoothing=RECIPE.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(self.params, RECIPE.clip_norm, self.fast)
        self.optimizer.step()


def forward_only(model):
    def run(x, y):
        F.cross_entropy(model(x), y)
    return run


def evaluation(model):
    def run(x, y):
        with torch.inference_mode():
            model(x)
    return run


def interleaved_ms(variants, rounds, device):
    """{name: median ms} of `variants` ({name: (fn, x, y)}), one call of each per round; on a GPU
    each call is timed until its kernels have run."""
    times = dict((name, []) for name in variants)
    for r in range(WARMUP_ROUNDS + rounds):
        for name, (fn, x, y) in variants.items():
            synchronize(device)
            start = time.perf_counter()
            fn(x, y)
            synchronize(device)
            if r >= WARMUP_ROUNDS:
                times[name].append(time.perf_counter() - start)
    return dict((name, 1000 * statistics.median(t)) for name, t in times.items())


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ceilings(device):
    """float32 matrix product GFLOP/s and copy GB/s (read + write) on `device`: 1024 and 200 MB on
    a CPU, 8192 and 2 GB on a GPU (sizes that fill each)."""
    n, numel = (8192, 250_000_000) if device.type == "cuda" else (1024, 25_000_000)
    a = torch.randn(n, n, device=device)
    src, dst = torch.randn(numel, device=device), torch.empty(numel, device=device)
    matmul = statistics.median(_timed(lambda: a @ a, device) for _ in range(20))
    copy_s = statistics.median(_timed(lambda: dst.copy_(src), device) for _ in range(10))
    return {"matmul_gflops": 2 * n ** 3 / matmul / 1e9, "copy_gbs": 2 * src.nbytes / copy_s / 1e9}


def _timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


# --- the per-op profile ---------------------------------------------------------------------------

def op_family(name, shapes):
    """The family an aten op belongs to, for the profile's table."""
    if name in ("aten::mkldnn_convolution", "aten::cudnn_convolution", "aten::_conv_depthwise2d",
                "aten::convolution_backward", "aten::_convolution", "aten::convolution"):
        weight = shapes[1] if name != "aten::convolution_backward" else shapes[2]
        depthwise = len(weight) == 4 and weight[1] == 1 and weight[0] > 1
        kind = "depthwise conv" if depthwise else "dense conv"
        return kind + (" backward" if name.endswith("backward") else "")
    if name in ("aten::mm", "aten::addmm", "aten::bmm"):
        return "matrix product (1x1 convs, classifier)"
    if "batch_norm" in name:
        return "batch norm" + (" backward" if "backward" in name else "")
    if "hardtanh" in name or "clamp" in name or "relu" in name:
        return "relu6" + (" backward" if "backward" in name else "")
    if "sgd" in name or "_foreach" in name or "norm" in name:
        return "optimizer and clipping"
    if name in ("aten::copy_", "aten::add", "aten::add_", "aten::mul", "aten::mul_",
                "aten::div_", "aten::sum", "aten::fill_", "aten::zero_"):
        return "elementwise and copies"
    if "bernoulli" in name or "dropout" in name:
        return "dropout"
    return "dispatch, views, allocation, loss"


def profile_step(step, x, y, steps=5):
    """{family: {ms, share, gflops, gbs}} per step, from the profiler's self CPU time, or on a GPU
    the self time of the kernels each op launched (its bookkeeping makes a profiled step slower
    than a timed one)."""
    on_gpu = x.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    for _ in range(2):
        step(x, y)
    synchronize(x.device)
    with profile(activities=activities, record_shapes=True, with_flops=True) as prof:
        for _ in range(steps):
            step(x, y)
        synchronize(x.device)
    families = {}
    for event in prof.key_averages(group_by_input_shape=True):
        if not event.key.startswith("aten::"):
            continue
        shapes = [s for s in event.input_shapes if isinstance(s, list)]
        family = families.setdefault(op_family(event.key, shapes),
                                     {"us": 0.0, "flops": 0, "bytes": 0})
        family["us"] += event.self_device_time_total if on_gpu else event.self_cpu_time_total
        family["flops"] += event.flops or 0
        family["bytes"] += event.count * sum(4 * _numel(s) for s in shapes)
    total = sum(f["us"] for f in families.values()) or 1.0
    return dict((name, {"ms": round(f["us"] / 1000 / steps, 3),
                        "share": round(f["us"] / total, 3),
                        "gflops": round(f["flops"] / f["us"] / 1e3, 2)
                        if f["flops"] and f["us"] else None,
                        "gbs": round(f["bytes"] / f["us"] / 1e3, 2) if f["us"] else None})
                for name, f in sorted(families.items(), key=lambda kv: -kv[1]["us"]))


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


# --- whole commands and accuracy -------------------------------------------------------------------

def train_commands(rounds, epochs, device):
    """Wall seconds of `python -m search_core train` (MobileNetV2, digits), fast and eager, alternated."""
    with tempfile.TemporaryDirectory() as tmp:
        arch = os.path.join(tmp, "mobilenetv2.json")
        subprocess.run([sys.executable, "-m", "search_core", "baseline", "mobilenetv2",
                        "--channels", str(IN_CHANNELS), "--classes", str(NUM_CLASSES),
                        "--width", "0.5", "--resolution", "32",
                        "--out", arch], check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
        walls = {"fast": [], "eager": []}
        for _ in range(rounds):
            for name, extra in (("eager", ["--no-fast-path"]), ("fast", [])):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "search_core", "train", arch, "--dataset",
                                "digits", "--epochs", str(epochs), "--json",
                                "--train-device", device.type] + extra,
                               check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
                walls[name].append(time.perf_counter() - start)
    return dict((name, statistics.median(w)) for name, w in walls.items())


def retrained_accuracy(seeds, epochs, device):
    """Test accuracy of MobileNetV2 and the shallowest member on shapes, fast and eager."""
    dataset = data.load_dataset("shapes", 32, 0)
    space = SearchSpace(0.5, 32, dataset.num_classes, dataset.channels)
    members = {"mobilenetv2": space.mobilenet_v2(), "shallowest": shallowest(space)}
    recipe = Recipe(epochs=epochs) if epochs else RECIPE
    results = {}
    for name, arch in members.items():
        for fast in (True, False):
            accuracies = [train_architecture(arch, dataset, recipe, seed, device, progress=False,
                                             fast=fast)["test_accuracy"] for seed in range(seeds)]
            results["{}_{}".format(name, "fast" if fast else "eager")] = {
                "test_accuracy": accuracies, "mean": statistics.mean(accuracies),
                "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0}
            print("  {:<12} {:<5} test accuracy {}".format(
                name, "fast" if fast else "eager",
                ", ".join("{:.2%}".format(a) for a in accuracies)), flush=True)
    return results


# --- the run -------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores, as training)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the steps run (cuda: also AMP and CUDA graphs under --compile)")
    p.add_argument("--compile", action="store_true",
                   help="also torch.compile the eager and the fast child (minutes of compiling)")
    p.add_argument("--commands", action="store_true",
                   help="also time the whole `train` command on digits, fast and eager")
    p.add_argument("--command-rounds", type=int, default=2)
    p.add_argument("--command-epochs", type=int, default=12)
    p.add_argument("--accuracy", action="store_true",
                   help="also retrain on shapes, fast and eager (an hour or more on 2 cores)")
    p.add_argument("--accuracy-seeds", type=int, default=3)
    p.add_argument("--accuracy-epochs", type=int, help="default: the recipe's")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.command_rounds < 1 or args.accuracy_seeds < 1:
        p.error("--rounds, --command-rounds and --accuracy-seeds must be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    return args


def children(space, device):
    """The child variants: the eager reference, the fast path's parts, the fast path."""
    torch.manual_seed(0)
    eager = build_model(space.mobilenet_v2()).to(device).train()
    channels_last = copy.deepcopy(eager).to(memory_format=torch.channels_last)
    gemm = copy.deepcopy(eager)
    for module in gemm.modules():
        if type(module) is torch.nn.Conv2d and \
                fastpath.fast_class(module) is fastpath.PointwiseConv2d:
            module.__class__ = fastpath.PointwiseConv2d
    gemm.to(memory_format=torch.channels_last)
    fast = fastpath.accelerate(copy.deepcopy(eager))
    return eager, channels_last, gemm, fast


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    space = SearchSpace(0.5, 32, NUM_CLASSES, IN_CHANNELS)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(RECIPE.batch_size, IN_CHANNELS, 32, 32, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (RECIPE.batch_size,), generator=g).to(device)
    x_eval = torch.randn(256, IN_CHANNELS, 32, 32, generator=g).to(device)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "threads": threads, "torch": torch.__version__, "batch_size": RECIPE.batch_size}
    result.update(ceilings(device))

    eager, channels_last, gemm, fast = children(space, device)
    steps = {"child_eager": Step(eager, eager.parameters(), False, device=device),
             "child_channels_last": Step(channels_last, channels_last.parameters(), False,
                                         device=device),
             "child_channels_last_gemm": Step(gemm, gemm.parameters(), False, device=device),
             "child_fast": Step(fast, fast.parameters(), True, device=device)}
    variants = dict((name, (step, x, y)) for name, step in steps.items())
    for name, model, is_fast in (("child_eager_bf16", eager, False),
                                 ("child_fast_bf16", fast, True)):
        bf16 = copy.deepcopy(model)
        variants[name] = (Step(bf16, bf16.parameters(), is_fast, autocast=True, device=device),
                          x, y)
    variants["forward_eager"] = (forward_only(eager), x, y)
    variants["forward_fast"] = (forward_only(fast), x, y)
    variants["eval_eager"] = (evaluation(copy.deepcopy(eager).eval()), x_eval, None)
    variants["eval_fast"] = (evaluation(copy.deepcopy(fast).eval()), x_eval, None)

    mobilenet_path = tuple(space.choices(space.mobilenet_v2()))
    path_generator = torch.Generator().manual_seed(1)
    for fast_path in (True, False):
        net = Supernet(space, fast=fast_path).to(device).train()
        suffix = "fast" if fast_path else "eager"
        variants["supernet_mobilenetv2_" + suffix] = (
            supernet_step(net, fast_path, lambda: mobilenet_path), x, y)
        variants["supernet_uniform_" + suffix] = (supernet_step(
            net, fast_path, lambda net=net: net.sample_path(path_generator, uniform=True)), x, y)

    if args.compile:
        compiled_variants = [("child_eager_compiled", eager, False, "default"),
                             ("child_fast_compiled", fast, True, "default")]
        if device.type == "cuda":  # a launch-bound step: CUDA graphs replay its kernels at once
            compiled_variants.append(("child_fast_compiled_cudagraphs", fast, True,
                                      "reduce-overhead"))
        for name, model, is_fast, mode in compiled_variants:
            compiled = copy.deepcopy(model)
            step = Step(torch.compile(compiled, mode=mode), compiled.parameters(), is_fast,
                        device=device)
            start = time.perf_counter()
            for _ in range(3):  # CUDA graphs record on the third call
                step(x, y)
            synchronize(device)
            result[name + "_compile_s"] = round(time.perf_counter() - start, 1)
            variants[name] = (step, x, y)

    ms = interleaved_ms(variants, args.rounds, device)
    base = ms["child_eager"]
    result["step_ms"] = dict((name, round(v, 2)) for name, v in ms.items())
    result["ratio_to_eager_step"] = dict((name, round(v / base, 3)) for name, v in ms.items()
                                         if name.startswith("child_"))
    result["child_fast_ratio"] = round(ms["child_fast"] / base, 3)
    result["backward_over_forward_eager"] = round((base - ms["forward_eager"]) /
                                                  ms["forward_eager"], 2)
    result["backward_over_forward_fast"] = round((ms["child_fast"] - ms["forward_fast"]) /
                                                 ms["forward_fast"], 2)
    result["supernet_over_fast_child"] = round(ms["supernet_mobilenetv2_fast"] / ms["child_fast"], 3)
    result["supernet_uniform_fast_over_eager"] = round(ms["supernet_uniform_fast"] /
                                                       ms["supernet_uniform_eager"], 3)
    result["eval_fast_over_eager"] = round(ms["eval_fast"] / ms["eval_eager"], 3)
    result["profile_child_fast"] = profile_step(steps["child_fast"], x, y)
    result["profile_supernet_fast"] = profile_step(variants["supernet_mobilenetv2_fast"][0], x, y)
    report(result)

    if args.commands:
        walls = train_commands(args.command_rounds, args.command_epochs, device)
        result["train_command_s"] = dict((k, round(v, 1)) for k, v in walls.items())
        result["train_command_ratio"] = round(walls["fast"] / walls["eager"], 3)
        print("\n`train` MobileNetV2 on digits, {} epochs, whole command: eager {:.1f} s, fast {:.1f} "
              "s ({:.2f}x)".format(args.command_epochs, walls["eager"], walls["fast"],
                                   result["train_command_ratio"]))
    if args.accuracy:
        print("\nRetrained on shapes ({} seeds, {} epochs):".format(
            args.accuracy_seeds, args.accuracy_epochs or RECIPE.epochs), flush=True)
        result["accuracy"] = retrained_accuracy(args.accuracy_seeds, args.accuracy_epochs, device)
    result["wall_s"] = round(time.time() - started, 1)
    print(json.dumps(result))


def supernet_step(net, fast, path):
    """A supernet weight step on the path that `path()` gives each time."""
    step = Step(None, net.weight_parameters(), fast, every_step=False)

    def run(x, y):
        chosen = path()
        step.forward = lambda inp: net(inp, chosen)
        step(x, y)
    return run


def report(result):
    print("Training step on {}, width 0.5, 32x32x1, batch {}, {} thread(s); ceilings: matmul {:.0f} "
          "GFLOP/s, copy {:.1f} GB/s".format(result["device"], result["batch_size"],
                                             result["threads"], result["matmul_gflops"],
                                             result["copy_gbs"]))
    print("\n{:<34} {:>9} {:>8}".format("variant", "ms", "x eager"))
    base = result["step_ms"]["child_eager"]
    for name, ms in result["step_ms"].items():
        print("{:<34} {:>9.2f} {:>8.3f}".format(name, ms, ms / base))
    print("\nbackward + optimizer over forward: eager {}, fast {}; supernet (MobileNetV2's path) "
          "over the fast child: {}".format(result["backward_over_forward_eager"],
                                          result["backward_over_forward_fast"],
                                          result["supernet_over_fast_child"]))
    for key in ("profile_child_fast", "profile_supernet_fast"):
        print("\n{} (per step)".format(key))
        print("{:<42} {:>7} {:>6} {:>8} {:>7}".format("op family", "ms", "share", "GFLOP/s",
                                                      "GB/s in"))
        for name, f in result[key].items():
            print("{:<42} {:>7.2f} {:>6.1%} {:>8} {:>7}".format(
                name, f["ms"], f["share"],
                "" if f["gflops"] is None else "{:.1f}".format(f["gflops"]),
                "" if f["gbs"] is None else "{:.1f}".format(f["gbs"])))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
