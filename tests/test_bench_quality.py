"""bench/search_quality.py --quick, end to end: a smoke test of the instrument (its figures on a
tiny setting mean nothing), checking that it reports what a claim of "better" needs: paired
differences with intervals, random search within its budget, every contender re-measured
against T, test accuracy on the held-out test set."""
import json
import os
import subprocess
import sys

from processes import ROOT


def test_the_search_quality_bench_reports_paired_intervals(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "search_quality.py"), "--quick",
                          "--seeds", "0", "1", "--jobs", "2", "--out", str(tmp_path)],
                         cwd=ROOT, check=True, capture_output=True, text=True, timeout=600).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    rows, figures = lines[:-1], lines[-1]
    assert [row["seed"] for row in rows] == [0, 1] and figures["seeds"] == [0, 1]
    for row in rows:
        assert row["test_images"] == figures["test_images"] == 200  # shapes' held-out set, quick size
        times = [t for t, _ in row["random_anytime"]]
        accuracies = [a for _, a in row["random_anytime"]]
        assert len(times) == row["random_tried"] and all(t <= row["search_s"] for t in times)
        assert accuracies == sorted(accuracies)  # the best so far
        for name in ("pick", "mobilenetv2", "shallowest"):
            contender = row[name]
            assert contender["feasible"] == (contender["latency_ms"] <= row["target_ms"])
            assert abs(contender["over_target"] - contender["latency_ms"] / row["target_ms"]) < 1e-3
    for other in ("mobilenetv2", "random", "random_half_budget", "shallowest"):
        difference = figures["pick_minus_" + other]
        assert 0 <= difference["n"] <= 2
        if difference["n"] == 2:
            assert difference["ci95_low"] <= difference["mean"] <= difference["ci95_high"]
    assert figures["pick_remeasured_over_target"] == [row["pick"]["over_target"] for row in rows]
    assert set(figures["infeasible"]) == {"pick", "random", "random_half_budget", "mobilenetv2",
                                          "shallowest"}
    if figures["kendall_tau"] is not None:  # None where the tiny trainings tie
        assert -1 <= figures["kendall_tau"] <= 1 and 0 <= figures["kendall_tau_p"] <= 1
