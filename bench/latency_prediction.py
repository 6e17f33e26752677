"""How well the calibrated lookup table predicts end-to-end latency, measured by a real device agent.

One run against an agent process on loopback (1 measurement thread), at two settings: the digits
default (32x32x1, width 0.5, 10 classes) and the ImageNet setting Jetson users run (224x224x3,
width 1.0, 1000 classes). Per setting: profile the LUT on the agent, calibrate it on random
architectures, then predict and measure *other* random architectures (seeded, disjoint).
Goals: >= 95% within +-10% and median absolute error <= 5% at both settings. Also the repeatability
of one architecture measured 5 times (coefficient of variation, goal <= 3%) and the ping round
trip on loopback (goal < 2 ms).

    .venv/bin/python bench/latency_prediction.py [--test-32 50] [--test-224 30] [--calibrate 20]

Ends with one JSON line: within_10pct_32, median_abs_error_32, within_10pct_224,
median_abs_error_224, rmse_ms_224 (and the same for 32), repeat_cv, ping_ms.
"""
import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from search_core.device_client import AgentDevice  # noqa: E402
from search_core.latency import Lut  # noqa: E402
from search_core.space import SearchSpace  # noqa: E402

TOKEN = "bench-token"
SETTINGS = {"32": SearchSpace(0.5, 32, 10, 1), "224": SearchSpace(1.0, 224, 1000, 3)}


def start_agent(config_dir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "nano_agent", "--host", "127.0.0.1", "--port", "0", "--token", TOKEN,
         "--threads", "1", "--log-level", "WARNING",
         "--config", os.path.join(config_dir, "agent.json")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    port = int(line.split()[3].rsplit(":", 1)[1])
    return proc, port


def random_paths(space, count, seed):
    rng = random.Random(seed)
    return [[rng.randrange(len(sb.ops)) for sb in space.blocks] for _ in range(count)]


def evaluate(device, space, calibrate, tests):
    """Calibration and test architectures are measured interleaved, so that a slow drift of the
    machine hits both alike and the figures say how well the table models the network."""
    lut = Lut(device.profile(space), space)
    fit_paths = random_paths(space, calibrate, seed=1)
    test_paths = random_paths(space, tests, seed=2)  # other architectures than the calibration's
    order = sorted([(i / calibrate, "fit", p) for i, p in enumerate(fit_paths)] +
                   [(i / tests, "test", p) for i, p in enumerate(test_paths)], key=lambda t: t[0])
    measured = {"fit": [], "test": []}
    for _, kind, path in order:
        measured[kind].append(device.measure(space.architecture(path))["median_ms"])
    fit = lut.fit(fit_paths, measured["fit"])
    errors, squared = [], []
    for path, m in zip(test_paths, measured["test"]):
        predicted = lut.predict(path)
        errors.append(abs(predicted - m) / m)
        squared.append((predicted - m) ** 2)
    return {"within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
            "median_abs_error": statistics.median(errors), "max_abs_error": max(errors),
            "rmse_ms": math.sqrt(sum(squared) / len(squared)), "a": fit["a"], "b": fit["b"],
            "calibration_error": fit["median_abs_error"], "tests": tests}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test-32", type=int, default=50)
    parser.add_argument("--test-224", type=int, default=30)
    parser.add_argument("--calibrate", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as config_dir:
        proc, port = start_agent(config_dir)
        try:
            device = AgentDevice("127.0.0.1", port, TOKEN, args.warmup, args.runs)
            figures = {}
            for name, tests in (("32", args.test_32), ("224", args.test_224)):
                result = evaluate(device, SETTINGS[name], args.calibrate, tests)
                print("{:>3}x{:<3}: {:.0%} within +-10%, median error {:.1%}, max {:.1%}, RMSE "
                      "{:.3f} ms (measured = {:.3f} x table + {:.3f} ms, {} test architectures)"
                      .format(name, name, result["within_10pct"], result["median_abs_error"],
                              result["max_abs_error"], result["rmse_ms"], result["a"], result["b"],
                              tests), flush=True)
                for key in ("within_10pct", "median_abs_error", "rmse_ms"):
                    figures["{}_{}".format(key, name)] = round(result[key], 4)
            arch = SETTINGS["32"].mobilenet_v2()
            medians = [device.measure(arch)["median_ms"] for _ in range(5)]
            figures["repeat_cv"] = round(statistics.stdev(medians) / statistics.mean(medians), 4)
            pings = [device.client.ping() for _ in range(50)]
            figures["ping_ms"] = round(statistics.median(pings), 3)
            print("repeatability: CV {:.2%} over 5 measurements; ping {:.3f} ms (median of 50)"
                  .format(figures["repeat_cv"], figures["ping_ms"]))
            device.close()
        finally:
            proc.terminate()
            proc.wait()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
