"""The CUDA paths, on a machine with an NVIDIA GPU: measurement in the agent and training in the search.

1. A real agent process measuring on the GPU (`--device cuda`), over loopback:
   - MobileNetV2 at 224x224 (ImageNet), batch 1 and batch 32: the agent's median wall time against
     an in-process timing of the same network with CUDA events. The agent's figure includes the
     kernel launches and the synchronisation (what an application waits for), the events' only the
     GPU's span, so a ratio of 1 or a little above is expected, and one far below 1 would mean an
     unsynchronised timer. Also its measured peak memory and the CV of 5 repeated measurements.
   On an H200 both batches are bound by launching kernels, not by the GPU (agent 2.96 and 3.00 ms,
   events 4.17 and 3.83 ms: ratios 0.71 and 0.78, the agent's process launching faster), so
   there the ratio cannot tell; a GPU-bound batch would;
   - the calibrated lookup table on the GPU: profiled there, fitted on 10 random architectures,
     tested on 20 others (within +-10%, median error, and the measured and predicted ranges).
2. A short search with `--train-device cuda` (digits, 1 warm-up + 2 search epochs) and a `train`
   of its best architecture on the GPU: both finish, with their wall times and accuracies.

    python bench/cuda_paths.py [--device cuda] [--resolution 224]

Ends with one JSON line of figures.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from nano_agent.builder import build_model  # noqa: E402
from search_core.device_client import AgentDevice  # noqa: E402
from search_core.lut import Lut  # noqa: E402
from nano_agent.space import SearchSpace  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "bench"))
from latency_prediction import TOKEN, random_paths  # noqa: E402


def start_agent(config_dir, device):
    proc = subprocess.Popen(
        [sys.executable, "-m", "nano_agent", "--host", "127.0.0.1", "--port", "0", "--token", TOKEN,
         "--device", device, "--log-level", "WARNING", "--max-memory-mb", "4096",
         "--config", os.path.join(config_dir, "agent.json")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    return proc, int(line.split()[3].rsplit(":", 1)[1])


def event_timing_ms(arch, device, batch=1, warmup=10, runs=30):
    """Median latency of the same network timed in-process with CUDA events (or perf_counter)."""
    model = build_model(arch).to(device).eval()
    x = torch.randn(batch, arch.in_channels, arch.resolution, arch.resolution, device=device)
    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(x)
                end.record()
                torch.cuda.synchronize()
                elapsed = start.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                model(x)
                elapsed = (time.perf_counter() - t0) * 1000
            if i >= warmup:
                times.append(elapsed)
    return statistics.median(times)


def agent_figures(device, space):
    with tempfile.TemporaryDirectory() as config_dir:
        proc, port = start_agent(config_dir, device)
        try:
            agent = AgentDevice("127.0.0.1", port, TOKEN, warmup=10, runs=30)
            info = agent.info()
            arch = space.mobilenet_v2()
            results = [agent.client.measure(arch, warmup=10, runs=30) for _ in range(5)]
            medians = [r["median_ms"] for r in results]
            reference = event_timing_ms(arch, device)
            # batch 32: GPU-bound, so a missing synchronise would show as a far lower agent time
            shape = [32, arch.in_channels, arch.resolution, arch.resolution]
            batched = agent.client.measure(arch, input_shape=shape, warmup=5, runs=20)["median_ms"]
            batched_reference = event_timing_ms(arch, device, batch=32, warmup=5, runs=20)
            lut = Lut(agent.profile(space), space)
            fit_paths, test_paths = random_paths(space, 10, seed=1), random_paths(space, 20, seed=2)
            fit = lut.fit(fit_paths, [agent.measure(space.architecture(p))["median_ms"] for p in fit_paths])
            errors, measured_ms = [], []
            for path in test_paths:
                measured = agent.measure(space.architecture(path))["median_ms"]
                measured_ms.append(measured)
                errors.append(abs(lut.predict(path) - measured) / measured)
            predicted_ms = [lut.predict(p) for p in test_paths]
            agent.close()
        finally:
            proc.terminate()
            proc.wait()
    return {
        "agent_device": info.get("device"), "agent_device_name": info.get("device_name"),
        "mbv2_median_ms": round(statistics.median(medians), 3),
        "mbv2_event_median_ms": round(reference, 3),
        "agent_vs_events_ratio": round(statistics.median(medians) / reference, 3),
        "mbv2_batch32_median_ms": round(batched, 3),
        "mbv2_batch32_event_median_ms": round(batched_reference, 3),
        "batch32_agent_vs_events_ratio": round(batched / batched_reference, 3),
        "mbv2_memory_mb": round(results[0].get("memory_bytes", 0) / 2 ** 20, 1),
        "mbv2_build_ms": round(results[0].get("build_ms", float("nan")), 1),
        "repeat_cv": round(statistics.stdev(medians) / statistics.mean(medians), 4),
        "lut_within_10pct": round(sum(e <= 0.10 for e in errors) / len(errors), 3),
        "lut_median_abs_error": round(statistics.median(errors), 4),
        "lut_test_measured_ms": [round(min(measured_ms), 3), round(max(measured_ms), 3)],
        "lut_test_predicted_ms": [round(min(predicted_ms), 3), round(max(predicted_ms), 3)],
        "lut_fit_a": round(fit["a"], 3), "lut_fit_b": round(fit["b"], 3),
    }


def search_figures(train_device):
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "search_core", "search", "--out", run_dir,
                               "--train-device", train_device, "--warmup-epochs", "1",
                               "--epochs", "3", "--samples-per-epoch", "2", "--events", "jsonl"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            sys.exit("the search failed:\n" + done.stderr[-3000:])
        search_s = time.perf_counter() - t0
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "search_core", "train",
                              os.path.join(run_dir, "best_arch.json"), "--epochs", "3",
                              "--train-device", train_device, "--json"],
                             cwd=ROOT, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True).stdout
        train_s = time.perf_counter() - t0
    trained = json.loads(out)
    best = summary.get("best") or {}
    return {"search_s": round(search_s, 1), "search_best_accuracy": best.get("accuracy"),
            "train_s": round(train_s, 1), "train_test_accuracy": trained.get("test_accuracy")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--resolution", type=int, default=224)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here")
    figures = {"torch": torch.__version__}
    figures.update(agent_figures(args.device, SearchSpace(1.0, args.resolution, 1000, 3)))
    print(json.dumps(figures), flush=True)
    figures.update(search_figures(args.device))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
