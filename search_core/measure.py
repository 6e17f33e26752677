"""The one latency measurement routine, shared by the local latency source and the device agent.

Warm-up runs, then N timed runs of batch-1 inference on a random input: eval mode, no autograd, a fixed
thread count, the garbage collector paused, CUDA synchronised around every timed run. Also the per-op
lookup-table profiler, so that the LUT and the end-to-end figures come from the same routine.

Python 3.6 / PyTorch 1.10 compatible: the device agent imports this module.
"""
import gc
import math
import time
from contextlib import contextmanager

import torch

from .arch import as_architecture
from .builder import ConvBNReLU, InvertedResidual, build_model
from .complexity import complexity

LUT_FORMAT = "edge-nas.lut"
LUT_VERSION = 1


def summarize(times_ms):
    """median, mean, std, p90, min, max of a list of times in milliseconds (and the raw times)."""
    ordered = sorted(times_ms)
    n = len(ordered)
    mean = sum(ordered) / n
    std = math.sqrt(sum((t - mean) ** 2 for t in ordered) / (n - 1)) if n > 1 else 0.0
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
    return {"median_ms": median, "mean_ms": mean, "std_ms": std,
            "p90_ms": ordered[min(n - 1, int(math.ceil(0.9 * n)) - 1)],
            "min_ms": ordered[0], "max_ms": ordered[-1], "runs": n, "times_ms": list(times_ms)}


@contextmanager
def num_threads(threads):
    """Run with a fixed intra-op thread count, restoring the previous one afterwards."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_module(module, input_shape, warmup=10, runs=30, device="cpu", threads=1):
    """Per-run wall times (ms) of module(x) for a random x of input_shape."""
    device = torch.device(device)
    module = module.to(device).eval()
    x = torch.randn(*input_shape, device=device)
    times = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of a timed run is noise, not latency
    try:
        with num_threads(threads), torch.no_grad():
            for _ in range(warmup):
                module(x)
            for _ in range(runs):
                _synchronize(device)
                start = time.perf_counter()
                module(x)
                _synchronize(device)
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def measure_architecture(arch, input_shape=None, warmup=10, runs=30, device="cpu", threads=1):
    """Build `arch` with random weights and measure it end to end.

    Returns the timing summary plus build_ms, params, macs, and memory: measured peak on CUDA, the
    analytical estimate (params + peak activations) elsewhere, with `memory_source` saying which.
    """
    arch = as_architecture(arch)
    device = torch.device(device)
    start = time.perf_counter()
    model = build_model(arch)
    build_ms = (time.perf_counter() - start) * 1000.0
    shape = tuple(input_shape) if input_shape else arch.input_shape
    cost = complexity(arch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = summarize(time_module(model, shape, warmup, runs, device, threads))
    if device.type == "cuda":
        result["memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
        result["memory_source"] = "measured"
    else:
        result["memory_bytes"] = cost.memory_bytes
        result["memory_source"] = "estimated"
    result.update({"build_ms": build_ms, "params": cost.params, "macs": cost.macs,
                   "input_shape": list(shape), "warmup": warmup, "threads": threads,
                   "device": str(device)})
    return result


class _Head(torch.nn.Module):
    """The fixed tail of every network: 1x1 conv, global pool, classifier."""

    def __init__(self, in_channels, head_channels, num_classes):
        super(_Head, self).__init__()
        self.conv = ConvBNReLU(in_channels, head_channels, kernel=1)
        self.classifier = torch.nn.Linear(head_channels, num_classes)

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1)
        return self.classifier(torch.flatten(x, 1))


def profile_lut(space, warmup=10, runs=30, device="cpu", threads=1, progress=None):
    """Time every candidate op of every searchable block alone, at its input shape, plus the fixed
    layers; blocks of identical shape share one measurement. Returns the LUT as a JSON-able dict.

    `progress(done, total)` is called after each measurement.
    """
    first_size = (space.resolution + 1) // 2
    fixed = [
        ("stem", ConvBNReLU(space.in_channels, space.stem_channels, 3, 2), space.in_channels,
         space.resolution),
        ("first_block", InvertedResidual(space.stem_channels, space.first_block_channels, 1, 3, 1),
         space.stem_channels, first_size),
        ("last_block", InvertedResidual(space.blocks[-1].out_channels, space.last_block_channels,
                                        1, 3, 6), space.blocks[-1].out_channels,
         space.last_block_resolution),
        ("head", _Head(space.last_block_channels, space.head_channels, space.num_classes),
         space.last_block_channels, space.last_block_resolution),
    ]
    jobs = {}
    for sb in space.blocks:
        for op in sb.ops:
            if not op.is_zero:
                jobs[(sb.in_channels, sb.out_channels, sb.stride, op.kernel, op.expand,
                      sb.resolution)] = None
    total = len(fixed) + len(jobs)
    done = [0]

    def timed(module, channels, size):
        median = summarize(time_module(module, (1, channels, size, size), warmup, runs, device,
                                       threads))["median_ms"]
        done[0] += 1
        if progress:
            progress(done[0], total)
        return median

    fixed_ms = dict((name, timed(m, c, s)) for name, m, c, s in fixed)
    for key in jobs:
        cin, cout, stride, kernel, expand, size = key
        jobs[key] = timed(InvertedResidual(cin, cout, stride, kernel, expand), cin, size)
    blocks = []
    for sb in space.blocks:
        blocks.append(dict((op.name, 0.0 if op.is_zero else jobs[(
            sb.in_channels, sb.out_channels, sb.stride, op.kernel, op.expand, sb.resolution)])
            for op in sb.ops))
    return {"format": LUT_FORMAT, "version": LUT_VERSION, "space": space.config(),
            "device": str(torch.device(device)), "threads": threads, "warmup": warmup, "runs": runs,
            "fixed_ms": fixed_ms, "blocks": blocks}
