"""How much does the runtime matter? MobileNetV2 and 10 random members of the space at 224x224,
each measured end to end in every backend this machine has (PyTorch, and onnxruntime with its best
provider: the model exported to ONNX, as deployed), alternating backends round by round so that
the machine's drift hits both alike; each backend's latency is the fastest of its rounds' fastest
runs (1 thread, batch 1).

    .venv/bin/python bench/backends.py [--width 1.0] [--archs 10] [--rounds 3]

Ends with one JSON line: per architecture its latency per backend and the ratio
onnxruntime / pytorch, their median (`median_ratio`), Kendall's tau between the two backends'
latencies (`kendall_tau_between_backends`: does PyTorch rank the architectures as the deployed
runtime does?), and the backends and provider used. Where a
GPU device is lent, run it there too (the CUDA provider is then preferred). About 30 seconds on 2
cores.
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


def random_member(space, rng):
    return space.architecture([rng.choice([op.name for op in sb.ops]) for sb in space.blocks])


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
    archs = [("mobilenetv2", space.mobilenet_v2())] + [
        ("random-{}".format(i), random_member(space, rng)) for i in range(args.archs)]
    started, rows = time.time(), []
    torch.set_num_threads(1)
    for name, arch in archs:
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
    print(json.dumps({
        "backends": backends,
        "provider": onnx_backend.default_provider() if onnx_backend.available() else None,
        "resolution": args.resolution, "width": args.width, "archs": rows,
        "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
        "kendall_tau_between_backends": None if tau is None else round(float(tau), 3),
        "wall_s": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
