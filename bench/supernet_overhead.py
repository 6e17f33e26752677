"""What one supernet weight step costs against the standalone child network it samples.

Side by side in one run, at the search's default setting (width 0.5, 32x32x1 input, 10 classes,
batch 64, the search's SGD (Nesterov momentum 0.9, weight decay 4e-5 off batch norm) and gradient
clipping, label smoothing 0.1):

* time per weight step (forward, cross-entropy, backward, optimizer step) of `Supernet` running one
  fixed sampled path, against `build_model(supernet.architecture(path))` on the same batch, for
  several seeded paths. After warm-up the two steps alternate (A/B, then B/A, ...) so machine noise
  hits both alike; each takes its median, the ratio is supernet / child per path, and
  `step_time_ratio` is the median over paths (goal: at most 1.15); `step_time_ratio_paired`, the
  median of each round's own ratio, is steadier on a loaded machine;
* activation memory of a step: the peak of bytes allocated during the step minus what was
  allocated when it started (weights, optimizer state: see `profiled_step_memory`), against the
  child's (`activation_memory_ratio`, goal: at most 1.2), and for contrast an all-paths DARTS-style
  step over the same supernet (`darts_activation_memory_ratio`).

    .venv/bin/python bench/supernet_overhead.py [--width 0.5] [--resolution 32] [--batch-size 64]
        [--steps 20] [--paths 5] [--threads N] [--independent] [--eager]

A readable table first; the last line of output is one line of JSON with every figure.
"""
import argparse
import gc
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nano_agent.builder import build_model  # noqa: E402
from nano_agent.space import SearchSpace  # noqa: E402
from search_core import fastpath  # noqa: E402
from search_core.settings import SearchConfig  # noqa: E402
from search_core.recipe import Recipe  # noqa: E402
from search_core.supernet import Supernet  # noqa: E402
from search_core.train import clip_gradients, sgd  # noqa: E402

try:
    from torch._C._profiler import _EventType
except ImportError:  # pragma: no cover - very old or very new torch
    _EventType = None

# the search's weight optimizer and loss: SearchConfig's defaults
_SEARCH = SearchConfig()
LR, MOMENTUM, WEIGHT_DECAY, LABEL_SMOOTHING = (_SEARCH.lr, _SEARCH.momentum, _SEARCH.weight_decay,
                                               _SEARCH.label_smoothing)
CLIP_NORM = Recipe().clip_norm  # the search's (search.py: RECIPE.clip_norm)
NUM_CLASSES, IN_CHANNELS = 10, 1
WARMUP_STEPS = 3
DARTS_TIMED_STEPS = 3
MIB = float(1 << 20)
ROW = "{:>4}  {:<59} {:>9.2f} {:>9.2f} {:>6.3f}  {:>9.2f} {:>9.2f} {:>6.3f}  {:>8.2f} {:>8.2f}"


class WeightStep(object):
    """forward, cross-entropy, backward, gradient clipping, SGD step: one weight step of `forward`
    over `params`, with the search's own optimizer (search_core.train.sgd: Nesterov momentum, no
    decay on batch norm, fused on the fast path where every parameter gets a gradient each step,
    `every_step`; multi-tensor where a path leaves some without) and its clipping.

    The gradients are released (set to None) at the start of the step, not between forward and
    backward as the search loop does: then what is allocated when a step starts is exactly the
    resident weights and optimizer state, and the gradients the step creates count as its own.
    """

    def __init__(self, forward, params, fast, every_step):
        self.forward = forward
        self.params = list(params)
        self.fast = fast
        self.optimizer = sgd(self.params, LR, WEIGHT_DECAY, fast, MOMENTUM, every_step)

    def __call__(self, x, y):
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.forward(x), y, label_smoothing=LABEL_SMOOTHING)
        loss.backward()
        clip_gradients(self.params, CLIP_NORM, self.fast)
        self.optimizer.step()

    def grad_bytes(self):
        return sum(p.grad.nbytes for p in self.params if p.grad is not None)


def darts_forward(net, x):
    """DARTS's continuous relaxation over the supernet's own blocks: every op of every block runs,
    mixed by the softmax of the block's logits, sum_i p_i * op_i(x); the zero op adds nothing and
    the residual is added once where the block has one (with sum_i p_i = 1 this equals
    sum_i p_i * block(x, i)). The probabilities stay differentiable as in DARTS's own code, so every
    op's output is kept for backward too."""
    x = net.first_block(net.stem(x))
    for block, probs in zip(net.blocks, net.probabilities()):
        mixed = None
        for i, op in enumerate(block.ops):
            out = block.branch(x, op)
            if out is None:
                continue
            term = probs[i] * out
            mixed = term if mixed is None else mixed + term
        x = x + mixed if block.residual else mixed
    return net._tail(x)


# --- memory --------------------------------------------------------------------------------------
#
# The ratio keys use the profiler (`profiled_step_memory`): with profile_memory=True every CPU
# allocation and free through c10's allocator is recorded with the allocator's running total of
# bytes allocated (`total_allocated`, kept under a lock, so its maximum is the true peak even with
# intra-op threads). Peak minus the total when the step starts is everything the step allocates
# on top of the resident weights and optimizer state: activations saved for backward, temporaries
# (non-in-place ops, weight-slice copies, the backward's scratch) and the gradients. That is the
# memory a step needs, which is what the goal is about. A block allocated while no profiler runs
# is not tracked and its free is not reported (one allocated in an earlier window is), which is
# why the previous gradients are released before the window opens and the batch made beforehand.
# Not seen: memory oneDNN allocates on its own, outside c10 (scratchpads; small here).
#
# For the breakdown, `saved_tensor_bytes` sums the unique storages autograd saves for backward
# (saved_tensors_hooks), excluding parameters, buffers and the input: the activations proper,
# without temporaries or gradients.


def _allocation_events(prof):
    if _EventType is None:
        raise RuntimeError("this torch has no torch._C._profiler._EventType: cannot read the "
                           "profiler's allocation events")
    events = []

    def walk(node):
        if node.tag == _EventType.Allocation:
            fields = node.extra_fields
            if str(fields.device).startswith("cpu"):
                events.append((node.start_time_ns, fields.alloc_size, fields.total_allocated))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    events.sort()
    return events


def profiled_step_memory(step, x, y):
    """(peak bytes allocated during one step beyond what was allocated at its start,
    bytes still held at its end beyond that). The step must have run before (optimizer state)."""
    # release the previous gradients before the window: a block allocated while an earlier window
    # was open is reported when freed, one from outside a window is not, so freeing them inside
    # would make the figure depend on when they were made
    step.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        marker = torch.empty(16)  # anchors the allocator's total at the start of the window
        del marker
        step(x, y)
    events = _allocation_events(prof)
    if not events:
        raise RuntimeError("the profiler reported no CPU allocations (profile_memory unsupported?)")
    _, size, total = events[0]
    start = total - size
    peak = max(t for _, _, t in events)
    return peak - start, events[-1][2] - start


def saved_tensor_bytes(forward, module, x, y):
    """Bytes of the unique storages autograd saves for backward in one forward + loss."""
    excluded = set(t.untyped_storage().data_ptr()
                   for t in list(module.parameters()) + list(module.buffers()))
    excluded.add(x.untyped_storage().data_ptr())
    seen = {}

    def pack(t):
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # opaque tensors (e.g. mkldnn): count nbytes
            seen[("opaque", id(t))] = t.numel() * t.element_size()
            return t
        ptr = storage.data_ptr()
        if ptr not in excluded:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(forward(x), y, label_smoothing=LABEL_SMOOTHING)
    del loss  # frees the graph; no backward, no optimizer step
    module.zero_grad(set_to_none=True)
    return sum(seen.values())


# --- timing --------------------------------------------------------------------------------------

def timed(step, x, y):
    start = time.perf_counter()
    step(x, y)
    return time.perf_counter() - start


def interleaved_medians(step_a, step_b, x, y, warmup, rounds):
    """Median seconds per step of a and b, alternating which runs first each round, and the
    median over rounds of a's time / b's (the two steps of a round share the machine's load)."""
    for _ in range(warmup):
        step_a(x, y)
        step_b(x, y)
    times_a, times_b = [], []
    for r in range(rounds):
        if r % 2 == 0:
            times_a.append(timed(step_a, x, y))
            times_b.append(timed(step_b, x, y))
        else:
            times_b.append(timed(step_b, x, y))
            times_a.append(timed(step_a, x, y))
    return (statistics.median(times_a), statistics.median(times_b),
            statistics.median(a / b for a, b in zip(times_a, times_b)))


# --- the run -------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=float, default=0.5, help="width multiplier (default 0.5)")
    p.add_argument("--resolution", type=int, default=32, help="input resolution (default 32)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--steps", type=int, default=20,
                   help="timed steps per model and path after %d warm-up steps (default 20)"
                   % WARMUP_STEPS)
    p.add_argument("--paths", type=int, default=5, help="sampled paths (default 5)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: all cores, as the search)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, batch and paths")
    p.add_argument("--independent", action="store_true",
                   help="a supernet whose ops have their own weights (default: shared weights)")
    p.add_argument("--eager", action="store_true",
                   help="both on the eager reference (default: both on the fast path, as trained)")
    p.add_argument("--no-darts", action="store_true", help="skip the DARTS-style contrast")
    args = p.parse_args(argv)
    if args.steps < 1 or args.paths < 1 or args.batch_size < 1:
        p.error("--steps, --paths and --batch-size must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    space = SearchSpace(width_mult=args.width, resolution=args.resolution, num_classes=NUM_CLASSES,
                        in_channels=IN_CHANNELS)
    net = Supernet(space, shared_weights=not args.independent, fast=not args.eager)
    net.train()
    super_step = WeightStep(None, net.weight_parameters(), not args.eager, every_step=False)

    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch_size, IN_CHANNELS, args.resolution, args.resolution, generator=g)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=g)
    x2 = torch.cat([x, x])  # for the batch-scaling check of the memory figures
    y2 = torch.cat([y, y])
    path_generator = torch.Generator().manual_seed(args.seed + 1)
    paths = [net.sample_path(path_generator, uniform=True) for _ in range(args.paths)]

    print("Supernet weight step vs standalone child: width {:g}, {}x{}x{} input, batch {}, "
          "{} thread(s), {} weights, {} paths, {} timed steps each".format(
              args.width, IN_CHANNELS, args.resolution, args.resolution, args.batch_size, threads,
              "independent" if args.independent else "shared", args.paths, args.steps))
    header = "{:>4}  {:<59} {:>9} {:>9} {:>6}  {:>9} {:>9} {:>6}  {:>8} {:>8}".format(
        "path", "ops of blocks 0-19 (kernel, expansion; z = zero)", "super ms", "child ms", "ratio",
        "super MiB", "child MiB", "ratio", "sv super", "sv child")
    print(header)
    print("-" * len(header))

    per_path = []
    phase_s = {"timing": 0.0, "memory": 0.0, "darts": 0.0}
    for n, path in enumerate(paths):
        t0 = time.perf_counter()
        super_step.forward = lambda inp, path=path: net(inp, path)
        child = build_model(net.architecture(path))
        if not args.eager:
            fastpath.accelerate(child)
        child.train()
        child_step = WeightStep(child, child.parameters(), not args.eager, every_step=True)
        super_s, child_s, paired = interleaved_medians(super_step, child_step, x, y, WARMUP_STEPS,
                                               args.steps)
        t1 = time.perf_counter()
        super_peak, super_held = profiled_step_memory(super_step, x, y)
        child_peak, child_held = profiled_step_memory(child_step, x, y)
        row = {"path": list(path),
               "ops": [net.blocks[i].ops[j].name for i, j in enumerate(path)],
               "supernet_ms": super_s * 1e3, "child_ms": child_s * 1e3,
               "step_time_ratio": super_s / child_s, "step_time_ratio_paired": paired,
               "supernet_step_bytes": super_peak, "child_step_bytes": child_peak,
               "activation_memory_ratio": super_peak / float(child_peak),
               "supernet_grad_bytes": super_step.grad_bytes(),
               "child_grad_bytes": child_step.grad_bytes(),
               "supernet_held_after_step_bytes": super_held,
               "child_held_after_step_bytes": child_held,
               "supernet_saved_bytes": saved_tensor_bytes(super_step.forward, net, x, y),
               "child_saved_bytes": saved_tensor_bytes(child, child, x, y)}
        row["saved_tensor_ratio"] = row["supernet_saved_bytes"] / float(row["child_saved_bytes"])
        if n == 0:  # sanity check of both memory methods: a doubled batch about doubles them
            row["batch_x2_step_bytes_scaling"] = {
                "supernet": profiled_step_memory(super_step, x2, y2)[0] / float(super_peak),
                "child": profiled_step_memory(child_step, x2, y2)[0] / float(child_peak)}
            row["batch_x2_saved_bytes_scaling"] = {
                "supernet": saved_tensor_bytes(super_step.forward, net, x2, y2)
                / float(row["supernet_saved_bytes"]),
                "child": saved_tensor_bytes(child, child, x2, y2) / float(row["child_saved_bytes"])}
        per_path.append(row)
        phase_s["timing"] += t1 - t0
        phase_s["memory"] += time.perf_counter() - t1
        short = " ".join("z" if name == "zero" else name.replace("_e", "").replace("k", "")
                         for name in row["ops"])
        print(ROW.format(n, short, row["supernet_ms"], row["child_ms"], row["step_time_ratio"],
                         super_peak / MIB, child_peak / MIB, row["activation_memory_ratio"],
                         row["supernet_saved_bytes"] / MIB, row["child_saved_bytes"] / MIB))
        del child, child_step
        gc.collect()

    def med(key):
        return statistics.median(r[key] for r in per_path)

    result = {
        "bench": "supernet_overhead",
        "step_time_ratio": med("step_time_ratio"),
        "activation_memory_ratio": med("activation_memory_ratio"),
        "darts_activation_memory_ratio": None,
        "goals": {"step_time_ratio": 1.15, "activation_memory_ratio": 1.2},
        "memory_method": "torch.profiler profile_memory: peak of c10 CPU bytes allocated during "
                         "one step minus bytes allocated at its start (activations, temporaries "
                         "and gradients; not weights, optimizer state or the input batch)",
        "saved_tensor_ratio": med("saved_tensor_ratio"),
        "supernet_ms": med("supernet_ms"),
        "child_ms": med("child_ms"),
        "step_time_ratio_paired": med("step_time_ratio_paired"),
        "step_time_ratio_of_sums": sum(r["supernet_ms"] for r in per_path)
        / sum(r["child_ms"] for r in per_path),
        "supernet_step_bytes": med("supernet_step_bytes"),
        "child_step_bytes": med("child_step_bytes"),
        "supernet_saved_bytes": med("supernet_saved_bytes"),
        "child_saved_bytes": med("child_saved_bytes"),
        "batch_x2_step_bytes_scaling": per_path[0]["batch_x2_step_bytes_scaling"],
        "batch_x2_saved_bytes_scaling": per_path[0]["batch_x2_saved_bytes_scaling"],
    }

    print("-" * len(header))
    print(ROW.format("med", "(goal: time <= 1.15, memory <= 1.2)", result["supernet_ms"],
                     result["child_ms"], result["step_time_ratio"],
                     result["supernet_step_bytes"] / MIB, result["child_step_bytes"] / MIB,
                     result["activation_memory_ratio"], result["supernet_saved_bytes"] / MIB,
                     result["child_saved_bytes"] / MIB))
    print("MiB: peak allocated during the step beyond weights and optimizer state (profiler; the "
          "ratio keys); sv: bytes saved for backward (saved_tensors_hooks)")
    print("batch x2 scales step memory by {:.2f} (supernet) / {:.2f} (child), saved bytes by "
          "{:.2f} / {:.2f}".format(result["batch_x2_step_bytes_scaling"]["supernet"],
                                   result["batch_x2_step_bytes_scaling"]["child"],
                                   result["batch_x2_saved_bytes_scaling"]["supernet"],
                                   result["batch_x2_saved_bytes_scaling"]["child"]))

    if not args.no_darts:
        t0 = time.perf_counter()
        darts_step = WeightStep(lambda inp: darts_forward(net, inp), net.weight_parameters(),
                                not args.eager, every_step=True)
        darts_step(x, y)  # optimizer state
        darts_ms = statistics.median(timed(darts_step, x, y)
                                     for _ in range(DARTS_TIMED_STEPS)) * 1e3
        darts_peak, _ = profiled_step_memory(darts_step, x, y)
        darts_saved = saved_tensor_bytes(darts_step.forward, net, x, y)
        result.update({
            "darts_activation_memory_ratio": statistics.median(
                darts_peak / float(r["child_step_bytes"]) for r in per_path),
            "darts_saved_tensor_ratio": statistics.median(
                darts_saved / float(r["child_saved_bytes"]) for r in per_path),
            "darts_ms": darts_ms, "darts_step_bytes": darts_peak, "darts_saved_bytes": darts_saved,
        })
        phase_s["darts"] = time.perf_counter() - t0
        print("DARTS-style all-paths step: {:.2f} ms, {:.2f} MiB step memory ({:.2f}x the child), "
              "{:.2f} MiB saved ({:.2f}x)".format(
                  darts_ms, darts_peak / MIB, result["darts_activation_memory_ratio"],
                  darts_saved / MIB, result["darts_saved_tensor_ratio"]))

    result.update({
        "settings": {"width_mult": args.width, "resolution": args.resolution,
                     "batch_size": args.batch_size, "steps": args.steps,
                     "warmup_steps": WARMUP_STEPS, "paths": args.paths, "threads": threads,
                     "seed": args.seed, "shared_weights": not args.independent,
                     "num_classes": NUM_CLASSES, "in_channels": IN_CHANNELS,
                     "optimizer": {"type": "SGD", "lr": LR, "momentum": MOMENTUM, "nesterov": True,
                                   "weight_decay": WEIGHT_DECAY},
                     "label_smoothing": LABEL_SMOOTHING, "torch": torch.__version__},
        "per_path": per_path,
        "wall_s": time.perf_counter() - started,
        "phase_s": phase_s,
    })
    print("goals: step_time_ratio {:.3f} {} 1.15 (paired per round: {:.3f}), "
          "activation_memory_ratio {:.3f} {} 1.2".format(
        result["step_time_ratio"], "<=" if result["step_time_ratio"] <= 1.15 else "MISSES >",
        result["step_time_ratio_paired"],
        result["activation_memory_ratio"],
        "<=" if result["activation_memory_ratio"] <= 1.2 else "MISSES >"))
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
