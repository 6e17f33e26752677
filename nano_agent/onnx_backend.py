"""The onnxruntime measurement backend: the network exported to ONNX in memory and timed in an
onnxruntime session, the way a deployed model runs (the CPU provider here; CUDA or TensorRT where
the device's onnxruntime has them). Optional: without onnxruntime the agent measures with PyTorch
alone and says so in `info`. Imported on first use only: onnxruntime-gpu loads CUDA and TensorRT,
hundreds of MiB on a 4 GiB Nano, and a PyTorch measurement should run in a process that has not.

Python 3.6 / PyTorch 1.10 compatible: the device agent imports this module.
"""
import importlib
import importlib.util
import inspect
import io
import json
import os
import re
import shutil
import tempfile
import time
import warnings

import torch

# opset 13: what JetPack 4.6's TensorRT 8.0 reads; PyTorch's TorchScript-based exporter (the
# torch.export-based one writes 18 and above)
OPSET = 13
INPUT, OUTPUT = "input", "logits"
# the providers a measurement prefers, fastest first; the CPU provider is always there
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


_loaded = []  # [onnxruntime module] once imported
_settings = {"trt_fp16": False}  # the agent's --trt-fp16


def set_trt_fp16(enabled):
    """Let the TensorRT provider build FP16 engines (a Jetson Nano's GPU runs FP16 about twice as
    fast as FP32); the other providers run FP32 either way."""
    _settings["trt_fp16"] = bool(enabled)


def providers(provider):
    """onnxruntime's `providers` argument for `provider`, with its options."""
    if provider == "TensorrtExecutionProvider" and _settings["trt_fp16"]:
        return [(provider, {"trt_fp16_enable": True})]
    return [provider]


def available():
    """Whether onnxruntime is installed (without importing it)."""
    return bool(_loaded) or importlib.util.find_spec("onnxruntime") is not None


def _runtime():
    if not _loaded:
        _loaded.append(importlib.import_module("onnxruntime"))
    return _loaded[0]


def info():
    """None where onnxruntime is not installed; else its version and providers once it has been
    loaded (by a measurement), null until then."""
    if not available():
        return None
    if not _loaded:
        return {"version": None, "providers": None, "loaded": False,
                "trt_fp16": _settings["trt_fp16"]}
    runtime = _loaded[0]
    return {"version": runtime.__version__, "providers": list(runtime.get_available_providers()),
            "loaded": True, "trt_fp16": _settings["trt_fp16"]}


def default_provider():
    have = _runtime().get_available_providers()
    return next(p for p in PREFERRED_PROVIDERS + tuple(have) if p in have)


def export(model, input_shape, target, dynamic_batch=False):
    """Write `model` as ONNX to `target` (a path or a binary file): opset 13, input "input",
    output "logits", the batch axis dynamic if asked."""
    options = {"opset_version": OPSET, "input_names": [INPUT], "output_names": [OUTPUT]}
    if dynamic_batch:
        options["dynamic_axes"] = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:  # PyTorch 2.x; 1.10 has none
        options["dynamo"] = False
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # "the TorchScript-based exporter"
        torch.onnx.export(model.eval(), (torch.zeros(*input_shape),), target, **options)


def onnx_bytes(model, input_shape):
    buffer = io.BytesIO()
    export(model, input_shape, buffer)
    return buffer.getvalue()


def _session(model, input_shape, threads, provider, profile_prefix=None):
    """An onnxruntime session of `model` and a random input for it."""
    onnxruntime = _runtime()
    numpy = importlib.import_module("numpy")  # installed with onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime's own choice
    options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    session = onnxruntime.InferenceSession(onnx_bytes(model, input_shape), options,
                                           providers=providers(provider))
    return session, {INPUT: numpy.random.randn(*input_shape).astype(numpy.float32)}


def _nothing():
    pass


def time_onnx(model, input_shape, warmup=10, runs=30, threads=1, provider=None,
              before_run=_nothing):
    """Per-run wall times (ms) of `model` in an onnxruntime session on a random input, and the
    provider that ran it. `before_run()` is called before each run (it may raise, to stop)."""
    provider = provider or default_provider()
    session, x = _session(model, input_shape, threads, provider)
    for _ in range(warmup):
        before_run()
        session.run(None, x)
    times = []
    for _ in range(runs):
        before_run()
        start = time.perf_counter()
        session.run(None, x)
        times.append((time.perf_counter() - start) * 1000.0)
    return times, provider


_FEATURE = re.compile(r"^/features/features\.(\d+)/")


def time_layers_onnx(model, input_shape, warmup=10, runs=30, threads=1, provider=None,
                     before_run=_nothing):
    """time_layers (nano_agent.measure) in onnxruntime: per timed run, the time (ms) of each
    `model.features` layer, then of pooling and the classifier, from onnxruntime's own profile of
    whole runs. A node belongs to the layer its exported name says (/features/features.3/...); the
    layout reorders onnxruntime inserts have no such name and count with the node before them;
    the rest (pooling, the classifier) is the last stage. `before_run()`: as in time_onnx."""
    provider = provider or default_provider()
    stages = len(model.features) + 1
    directory = tempfile.mkdtemp(prefix="edge-nas-profile-")
    try:
        session, x = _session(model, input_shape, threads, provider,
                              os.path.join(directory, "run"))
        for _ in range(warmup + runs):
            before_run()
            session.run(None, x)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return [row for _, row in _layer_times(events, warmup, stages)]


def _layer_times(events, warmup, stages):
    """From an onnxruntime profile: (the run's time, its time per stage), in ms, per timed run."""
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")[warmup:]
    nodes = sorted((e["ts"], e["dur"], e["name"]) for e in events
                   if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"))
    times = []
    for start, end in windows:
        row, stage = [0.0] * stages, 0
        for ts, dur, name in nodes:
            if start <= ts <= end:
                match = _FEATURE.match(name)
                if match:
                    stage = int(match.group(1))
                elif name.startswith("/"):
                    stage = stages - 1
                row[stage] += dur / 1000.0  # microseconds
        times.append(((end - start) / 1000.0, row))
    return times
