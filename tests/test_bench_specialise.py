"""bench/specialise.py --quick, end to end: a smoke test of the instrument (its figures on a tiny
setting mean nothing), checking that it reports what the issue's goals need: the specialisation's
wall time against a new search's, the paired difference of their retrained picks, each specialised
pick re-measured over its T, and each runtime's pick in both runtimes."""
import json
import os
import subprocess
import sys

import pytest

from processes import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
from specialise_generations import order  # noqa: E402

pytestmark = pytest.mark.system


def bench(tmp_path, *flags):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "specialise.py"), "--quick",
                          "--seeds", "0", "--landing-fractions", "0.6", "1.0", "--out",
                          str(tmp_path), *flags], cwd=ROOT, check=True, capture_output=True,
                         text=True, timeout=600).stdout
    [row] = json.loads((tmp_path / "rows.json").read_text())
    return json.loads(out.splitlines()[-1]), row


def test_the_specialisation_bench_compares_with_a_new_search_and_across_runtimes(tmp_path):
    figures, row = bench(tmp_path)
    for key, name in (("specialise_over_search", "wall_s"),
                      ("specialise_over_search_after_profiling", "after_profiling_s")):
        expected = row["specialised"][name] / row["search"][name]
        assert figures[key]["per_seed"] == [pytest.approx(expected, abs=1e-3)]
    # one T for both: the specialisation's, which the new search was given
    assert row["search"]["target_ms"] == row["specialised"]["target_ms"] == \
        row["landing"]["0.6"]["target_ms"]
    both_feasible = int(row["specialised"]["feasible"] and row["search"]["feasible"])
    assert figures["specialised_minus_search"]["n"] == both_feasible
    assert figures["specialised_minus_search_shared"]["n"] == both_feasible
    if both_feasible:
        assert figures["specialised_minus_search_shared"]["mean"] == pytest.approx(100 * (
            row["specialised"]["shared_test_acc"] - row["search"]["shared_test_acc"]), abs=0.01)
    evaluated = row["specialised"]["evaluated"]  # what the specialisation chose among
    assert figures["specialised_evaluated"]["architectures"] == [evaluated["architectures"]]
    if evaluated["architectures"]:
        assert figures["specialised_evaluated"]["best_minus_search_shared"] == [pytest.approx(
            100 * (evaluated["best_shared_test_acc"] - row["search"]["shared_test_acc"]),
            abs=0.01)]
        assert 0 <= evaluated["best_shared_test_acc"] <= 1
        if evaluated["architectures"] == 1:  # no ranking of one
            assert evaluated["val_vs_shared_tau"] is None
    assert figures["test_images"] == row["test_images"] == 200  # held-out, quick size
    assert set(figures["landing"]) == {"0.6", "1.0"} and figures["landed"][1] == 2
    spreads = []
    for fraction, [ratio] in figures["landing"].items():
        pick = row["landing"][fraction]
        assert ratio == pytest.approx(pick["latency_ms"]["pytorch"] / pick["target_ms"], abs=1e-3)
        rounds = pick["rounds_ms"]["pytorch"]
        assert len(rounds) == 2  # --quick's rounds, their median the pick's latency
        assert pick["latency_ms"]["pytorch"] == pytest.approx(sum(rounds) / 2, abs=2e-3)
        spreads.append((max(rounds) - min(rounds)) / pick["latency_ms"]["pytorch"])
    assert figures["landing_round_spread"]["max"] == pytest.approx(max(spreads), abs=2e-3)
    [cross] = figures["cross_runtime"]
    targets = {runtime: cross[runtime]["target_ms"] for runtime in ("pytorch", "onnxruntime")}
    assert targets["pytorch"] == row["specialised"]["target_ms"]
    for pick in cross.values():  # measured in both runtimes, each against that runtime's T
        for runtime, target in targets.items():
            assert pick["over_target"][runtime] == pytest.approx(
                pick["latency_ms"][runtime] / target, abs=1e-3)
        assert pick["within_target_in"] == [r for r in targets if pick["over_target"][r] <= 1]

    # --resume keeps the seed's row (nothing runs or trains again), adds what it lacks and
    # measures the latencies again
    kept = tmp_path / "row-0.json"
    stored = json.loads(kept.read_text())
    shared = {name: stored[name].pop("shared_test_acc") for name in ("specialised", "search")}
    kept.write_text(json.dumps(stored))
    _, again = bench(tmp_path, "--resume")
    for name, accuracy in shared.items():
        assert 0 <= accuracy <= 1
        assert again[name]["shared_test_acc"] == pytest.approx(accuracy, abs=0.01)
        assert again[name]["test_acc"] == row[name]["test_acc"]
        assert again[name]["wall_s"] == row[name]["wall_s"]

    # --respecialise (the specialisation's code changed): each kept parent specialised again and
    # its new pick retrained; the parent and the new search are kept
    def written(name):
        return (tmp_path / "{}-0".format(name) / "summary.json").stat().st_mtime_ns
    before = {name: written(name) for name in ("parent", "search", "specialised-0.6")}
    _, anew = bench(tmp_path, "--resume", "--respecialise")
    assert written("parent") == before["parent"] and written("search") == before["search"]
    assert written("specialised-0.6") > before["specialised-0.6"]
    assert anew["search"]["test_acc"] == row["search"]["test_acc"]
    assert anew["search"]["wall_s"] == row["search"]["wall_s"]
    assert 0 <= anew["specialised"]["test_acc"] <= 1
    assert 0 <= anew["specialised"]["shared_test_acc"] <= 1

    # two generation counts side by side from the kept parent, each judged by it
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "specialise_generations.py"),
                          "--runs", str(tmp_path), "--seeds", "0", "--generations", "1", "2",
                          "--repeats", "1", "--quick"], cwd=ROOT, check=True, capture_output=True,
                         text=True, timeout=600).stdout
    compared = json.loads(out.splitlines()[-1])
    [parent] = compared["parents"]
    assert parent["target_ms"] == anew["specialised"]["target_ms"]
    for runs in (parent["1"], parent["2"]):
        assert len(runs["shared_test_acc"]) == len(runs["wall_s"]) == 1
        assert all(0 <= acc <= 1 for acc in runs["shared_test_acc"])
    [a], [b] = parent["1"]["shared_test_acc"], parent["2"]["shared_test_acc"]
    assert compared["b_minus_a_shared"]["n"] == 1  # one parent: a mean, no interval
    assert compared["b_minus_a_shared"]["mean"] == pytest.approx(100 * (b - a), abs=0.01)
    assert compared["wall_ratio"] == pytest.approx(parent["2"]["wall_s"][0] /
                                                   parent["1"]["wall_s"][0], abs=2e-3)
    assert compared["2"]["over_search"]["mean"] == pytest.approx(
        parent["2"]["wall_s"][0] / row["search"]["wall_s"], abs=2e-3)
    missing = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "specialise_generations.py"),
                              "--runs", str(tmp_path), "--seeds", "7"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no kept row" in missing.stderr


def test_the_generation_counts_take_early_and_late_turns_alike():
    assert order([10, 20], 3) == [10, 20, 20, 10, 10, 20]
