"""The one latency measurement routine, shared by the local latency source and the device agent.

Warm-up runs, then N timed runs of batch-1 inference on a random input: eval mode, no autograd, a fixed
thread count, the garbage collector paused, an allocator that reuses memory, CUDA synchronised around
every timed run. Also the per-op lookup-table profiler, which times every op inside whole networks
with the same routine, so that the LUT and the end-to-end figures agree.

Python 3.6 / PyTorch 1.10 compatible: the device agent imports this module.
"""
import ctypes
import gc
import random
import time
from contextlib import contextmanager

import torch

from . import onnx_backend
from .arch import as_architecture
from .builder import build_model
from .complexity import complexity
from .results import LUT_FORMAT, LUT_METHOD, LUT_VERSION, summarize

PROFILE_ARCHS = 21  # three times the most ops a block has: each op is timed in three networks


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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_allocator_steady = False


def steady_allocator():
    """Make glibc's malloc keep freed memory for reuse instead of mapping large tensors afresh on
    every run: otherwise whether a run pays a page fault on every 4 KiB of its activations depends on
    what the process allocated before (about 3,000 faults and +25% latency per run at 224x224 after
    a profile, none before). Process-wide, once; a no-op where libc has no mallopt."""
    global _allocator_steady
    if _allocator_steady:
        return
    _allocator_steady = True
    try:
        # this process's own symbols, libc's among them (ctypes.util.find_library would run
        # `ldconfig -p` in a child process)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 * 2 ** 20)  # the largest glibc allows on 64-bit
    mallopt(_M_TRIM_THRESHOLD, 2 ** 30)


class Aborted(Exception):
    """A measurement stopped between two runs because its `abort()` said so."""


def check_abort(abort):
    """Raise Aborted if `abort` (a callable, or None) says to stop: it returns why (a string), or
    None to go on."""
    why = abort() if abort is not None else None
    if why:
        raise Aborted("the measurement was stopped: " + why)


@contextmanager
def _timing(threads):
    """Inference with a fixed thread count, a steady allocator and the garbage collector paused:
    a collection in the middle of a timed run is noise, not latency."""
    steady_allocator()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with num_threads(threads), torch.no_grad():
            yield
    finally:
        if gc_was_enabled:
            gc.enable()


def time_module(module, input_shape, warmup=10, runs=30, device="cpu", threads=1, abort=None):
    """Per-run wall times (ms) of module(x) for a random x of input_shape; `abort()` is asked
    before each run (see check_abort)."""
    device = torch.device(device)
    module = module.to(device).eval()
    x = torch.randn(*input_shape, device=device)
    times = []
    with _timing(threads):
        for _ in range(warmup):
            check_abort(abort)
            module(x)
        for _ in range(runs):
            check_abort(abort)
            _synchronize(device)
            start = time.perf_counter()
            module(x)
            _synchronize(device)
            times.append((time.perf_counter() - start) * 1000.0)
    return times


def time_layers(model, input_shape, warmup=10, runs=30, device="cpu", threads=1, abort=None):
    """Per-run wall times (ms) of each stage of a whole forward pass of a built network: one list
    per timed run, one time per `model.features` layer, then one for pooling and the classifier.
    Each layer runs on its predecessor's output, with the caches the whole network leaves it."""
    device = torch.device(device)
    model = model.to(device).eval()
    stages = list(model.features) + [model.classify]
    x = torch.randn(*input_shape, device=device)
    times = []
    with _timing(threads):
        for run in range(warmup + runs):
            check_abort(abort)
            row, y = [], x
            _synchronize(device)
            start = time.perf_counter()
            for stage in stages:
                y = stage(y)
                _synchronize(device)
                now = time.perf_counter()
                row.append((now - start) * 1000.0)
                start = now
            if run >= warmup:
                times.append(row)
    return times


def measure_architecture(arch, input_shape=None, warmup=10, runs=30, device="cpu", threads=1,
                         backend="pytorch", abort=None):
    """Build `arch` with random weights and measure it end to end, in PyTorch on `device`, or
    exported to ONNX in onnxruntime (`backend`; its best provider, see onnx_backend).

    Returns the timing summary plus build_ms, params, macs, and memory: measured peak on CUDA, the
    analytical estimate (params + peak activations) elsewhere, with `memory_source` saying which.
    """
    arch = as_architecture(arch)
    start = time.perf_counter()
    model = build_model(arch)
    build_ms = (time.perf_counter() - start) * 1000.0
    shape = tuple(input_shape) if input_shape else arch.input_shape
    cost = complexity(arch)
    result = {"memory_bytes": cost.memory_bytes, "memory_source": "estimated"}
    if backend == "onnxruntime":
        times, provider = onnx_backend.time_onnx(model, shape, warmup, runs, threads,
                                                 before_run=lambda: check_abort(abort))
        result["device"] = "onnxruntime:" + provider
    else:
        device = torch.device(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = time_module(model, shape, warmup, runs, device, threads, abort)
        result["device"] = str(device)
        if device.type == "cuda":
            result.update(memory_bytes=int(torch.cuda.max_memory_allocated(device)),
                          memory_source="measured")
    result.update(summarize(times))
    result.update({"build_ms": build_ms, "params": cost.params, "macs": cost.macs,
                   "input_shape": list(shape), "warmup": warmup, "threads": threads,
                   "backend": backend})
    return result


def profile_paths(space, count=PROFILE_ARCHS, seed=0):
    """`count` architectures (op indices) in which every op of every block appears about equally
    often: each block cycles through its ops in its own shuffled order, so that each op meets
    different neighbours and, with `count` at least k times a block's ops, appears k times."""
    generator = random.Random(seed)
    columns = []
    for sb in space.blocks:
        order = []
        while len(order) < count:
            cycle = list(range(len(sb.ops)))
            generator.shuffle(cycle)
            order += cycle
        columns.append(order[:count])
    return [list(path) for path in zip(*columns)]


def profile_lut(space, warmup=10, runs=30, device="cpu", threads=1, progress=None,
                archs=PROFILE_ARCHS, backend="pytorch", abort=None):
    """Time every candidate op of every searchable block, and the fixed layers, inside whole networks
    of the space (`profile_paths`): each layer of a network is timed in place, as it runs on its
    predecessor's output. An op's entry is the fastest of its times over the networks it appears in
    (the `latency_ms` statistic); a zero op costs nothing. Ops timed alone, with their input and
    weights hot in the cache, miss what they cost inside a network: at 224x224 such a table
    predicted only 27% of architectures within +-10%. Returns the LUT as a JSON-able dict.

    `backend` "onnxruntime": each network exported to ONNX and its layers timed by onnxruntime's
    profiler (onnx_backend.time_layers_onnx), so that the table predicts what that backend
    measures end to end. `progress(done, total)` is called after each network.
    """
    most_ops = max(len(sb.ops) for sb in space.blocks)
    if archs < most_ops:
        raise ValueError("profiling needs at least {} networks to time every op, got {}".format(
            most_ops, archs))
    paths = profile_paths(space, archs)
    fixed = dict((name, []) for name in ("stem", "first_block", "last_block", "head"))
    blocks = [dict((op.name, []) for op in sb.ops) for sb in space.blocks]
    for done, path in enumerate(paths, 1):
        check_abort(abort)
        arch = space.architecture(path)
        if backend == "onnxruntime":
            times = onnx_backend.time_layers_onnx(build_model(arch), arch.input_shape, warmup,
                                                  runs, threads,
                                                  before_run=lambda: check_abort(abort))
        else:
            times = time_layers(build_model(arch), arch.input_shape, warmup, runs, device, threads,
                                abort)
        fastest = iter([min(column) for column in zip(*times)])
        fixed["stem"].append(next(fastest))
        fixed["first_block"].append(next(fastest))
        for sb, choice in zip(space.blocks, path):
            op = sb.ops[choice]
            blocks[sb.index][op.name].append(0.0 if op.is_zero else next(fastest))
        fixed["last_block"].append(next(fastest))
        fixed["head"].append(next(fastest) + next(fastest))  # 1x1 conv, then pool and classifier
        if progress:
            progress(done, len(paths))
    return {"format": LUT_FORMAT, "version": LUT_VERSION, "method": LUT_METHOD, "archs": archs,
            "space": space.config(), "backend": backend,
            "device": ("onnxruntime:" + onnx_backend.default_provider()
                       if backend == "onnxruntime" else str(torch.device(device))),
            "threads": threads,
            "warmup": warmup, "runs": runs,
            "fixed_ms": dict((name, min(values)) for name, values in fixed.items()),
            "blocks": [dict((name, min(values)) for name, values in row.items())
                       for row in blocks]}
