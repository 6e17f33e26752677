"""How much does the runtime matter? MobileNetV2 and 10 random members of the space at 224x224,
each measured end to end in every backend this machine has (PyTorch, and onnxruntime with its best
provider: the model exported to ONNX, as deployed), alternating backends round by round so that
the machine's drift hits both alike; each backend's latency is the fastest of its rounds' fastest
runs (1 thread, batch 1). Then, per backend, the search's lookup table profiled and calibrated in
that backend (search_core.lut.profile_and_calibrate, as a search run does it) predicts each
architecture's latency.

    .venv/bin/python bench/backends.py [--width 1.0] [--archs 10] [--rounds 3]

Ends with one JSON line: per architecture its latency per backend and the ratio
onnxruntime / pytorch, their median (`median_ratio`), Kendall's tau between the two backends'
latencies (`kendall_tau_between_backends`: does PyTorch rank the architectures as the deployed
runtime does?), the backends and provider used, and per backend in `prediction` the share of
architectures the table predicts within +-10% (goal >= 95%), the median absolute error and the
calibration. Where a GPU device is lent, run it there too (the CUDA provider is then preferred).
About 2 minutes on 2 cores.
"""
import argparse
import json
import random
import statistics
import time

import torch
from scipy.stats import kendalltau

from nano_agent import onnx_backend
from nano_agent.measure import measure_architecture
from nano_agent.results import latency_ms
from nano_agent.space import SearchSpace
from search_core.latency import LocalDevice
from search_core.lut import profile_and_calibrate
from search_core.measurements import Measurer


def random_path(space, rng):
    return [rng.randrange(len(sb.ops)) for sb in space.blocks]


def prediction(space, backend, paths, measured, runs):
    """How well the backend's own calibrated table predicts the `measured` latencies (ms)."""
    device = LocalDevice(1, 5, runs, backend)
    lut = profile_and_calibrate(device, space, Measurer(device))
    errors = [abs(lut.predict(path) - ms) / ms for path, ms in zip(paths, measured)]
    return {"within_10pct": round(sum(e <= 0.10 for e in errors) / len(errors), 3),
            "median_abs_error": round(statistics.median(errors), 4),
            "max_abs_error": round(max(errors), 4),
            "calibration": {k: round(v, 4) for k, v in lut.data["calibration"].items()}}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--archs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    backends = ["pytorch"] + (["onnxruntime"] if onnx_backend.available() else [])
    space = SearchSpace(args.width, args.resolution, 1000, 3)
    rng = random.Random(args.seed)
    paths = [space.choices(space.mobilenet_v2())] + [random_path(space, rng)
                                                      for _ in range(args.archs)]
    names = ["mobilenetv2"] + ["random-{}".format(i) for i in range(args.archs)]
    started, rows = time.time(), []
    torch.set_num_threads(1)
    for name, path in zip(names, paths):
        arch = space.architecture(path)
        best = {b: float("inf") for b in backends}
        for _ in range(args.rounds):
            for backend in backends:
                stats = measure_architecture(arch, None, 5, args.runs, "cpu", 1, backend)
                best[backend] = min(best[backend], latency_ms(stats))
        row = {"arch": name, "hash": arch.short_hash,
               "latency_ms": {b: round(v, 3) for b, v in best.items()}}
        if "onnxruntime" in best:
            row["ratio"] = round(best["onnxruntime"] / best["pytorch"], 3)
        rows.append(row)
        print("{:12s} {}".format(name, "  ".join("{} {:.2f} ms".format(b, v) for b, v in best.items())
                                 + ("  ratio {:.2f}".format(row["ratio"]) if "ratio" in row else "")),
              flush=True)
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    tau = kendalltau([r["latency_ms"]["pytorch"] for r in rows],
                     [r["latency_ms"]["onnxruntime"] for r in rows])[0] if ratios else None
    predictions = {}
    for backend in backends:
        predictions[backend] = prediction(space, backend, paths,
                                          [r["latency_ms"][backend] for r in rows], args.runs)
        print("{}: the calibrated table predicts {:.0%} within +-10%, median error {:.1%}".format(
            backend, predictions[backend]["within_10pct"], predictions[backend]["median_abs_error"]),
            flush=True)
    print(json.dumps({
        "backends": backends,
        "provider": onnx_backend.default_provider() if onnx_backend.available() else None,
        "resolution": args.resolution, "width": args.width, "archs": rows,
        "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
        "kendall_tau_between_backends": None if tau is None else round(float(tau), 3),
        "prediction": predictions,
        "wall_s": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
