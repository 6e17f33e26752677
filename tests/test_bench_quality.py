"""bench/search_quality.py --quick, end to end: a smoke test of the instrument (its figures on a
tiny setting mean nothing), checking that it reports what a claim of "better" needs: paired
differences with intervals, random search within its budget, every contender re-measured
against T, test accuracy on the held-out test set."""
import argparse
import json
import os
import subprocess
import sys

import pytest

from nano_agent.space import SearchSpace
from processes import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
from search_quality import (PAIRED_SETTINGS, ROW_SETTINGS, check_alternatives,  # noqa: E402
                            load_against, load_row, machine_drift, mobilenet_v2_at,
                            parse_settings, scaled_target, shallowest)
from pool_quality import load, pool  # noqa: E402

pytestmark = pytest.mark.system


def bench(out_dir, *extra):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "search_quality.py"), "--quick",
                          "--seeds", "0", "1", "--jobs", "2", "--train-seeds", "2",
                          "--out", str(out_dir)] + list(extra),
                         cwd=ROOT, check=True, capture_output=True, text=True, timeout=600).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return out, lines[:-1], lines[-1]


def test_the_search_quality_bench_reports_paired_intervals(tmp_path):
    _, rows, figures = bench(tmp_path)
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
            # --train-seeds 2: two trainings, their mean the contender's accuracy
            assert len(contender["test_accs"]) == 2
            assert contender["test_acc"] == pytest.approx(sum(contender["test_accs"]) / 2, abs=1e-4)
            assert abs(contender["over_target"] - contender["latency_ms"] / row["target_ms"]) < 1e-3
    for other in ("mobilenetv2", "random", "random_half_budget", "shallowest"):
        difference = figures["pick_minus_" + other]
        assert 0 <= difference["n"] <= figures["ignoring_target"][other]["n"] <= 2
        assert figures["ignoring_target"][other]["n"] == sum(1 for row in rows if row[other])
        if difference["n"] == 2:
            assert difference["ci95_low"] <= difference["mean"] <= difference["ci95_high"]
    assert figures["pick_remeasured_over_target"] == [row["pick"]["over_target"] for row in rows]
    assert figures["mobilenetv2_cut_short"] == [  # measured again beside every other width
        row["seed"] for row in rows if row["mobilenetv2"]["feasible"] and
        row["mobilenetv2"]["widest_under_target"] is False]
    assert set(figures["infeasible"]) == {"pick", "random", "random_half_budget", "mobilenetv2",
                                          "shallowest"}
    if figures["kendall_tau"] is not None:  # None where the tiny trainings tie
        assert -1 <= figures["kendall_tau"] <= 1 and 0 <= figures["kendall_tau_p"] <= 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["figures"] == figures and result["settings"]["train_seeds"] == 2
    assert [(r["seed"], r["pick"]["test_acc"], r["pick"]["over_target"]) for r in result["rows"]] \
        == [(r["seed"], r["pick"]["test_acc"], r["pick"]["over_target"]) for r in rows]

    # a second run with --resume keeps both seeds' rows (no search run again, the same
    # accuracies and ranking) and measures every contender's latency again; against the first
    # run's result, its picks (the same ones, measured again in the same rounds) differ by nothing
    summaries = [tmp_path / "search-{}".format(seed) / "summary.json" for seed in (0, 1)]
    written = [path.stat().st_mtime_ns for path in summaries]
    first = tmp_path / "first.json"
    first.write_text(json.dumps(result))
    out, kept_rows, kept_figures = bench(tmp_path, "--resume", "--against", str(first))
    for row, kept in zip(rows, kept_rows):
        assert kept["against"]["test_acc"] == row["pick"]["test_acc"]
        assert kept["against"]["latency_ms"] == kept["pick"]["latency_ms"]
    both = sum(1 for kept in kept_rows if kept["pick"]["feasible"])
    assert kept_figures["pick_minus_against"]["n"] == both
    assert kept_figures["pick_minus_against"]["mean"] == (0 if both else None)

    # --reuse-alternatives (--picks-only): the search, aimed at the first run's T of each seed,
    # and its pick's retraining alone, paired with the first run's pick and alternatives as they
    # were trained there, all measured again here
    _, variant_rows, variant = bench(tmp_path / "variant", "--reuse-alternatives", "--against",
                                     str(first))
    for row, kept in zip(rows, variant_rows):  # T scaled by the machine's drift since then
        assert kept["against_target_ms"] == row["target_ms"]
        assert kept["target_ms"] == round(row["target_ms"] * kept["target_scale"], 3)
        assert kept["random_budget_s"] == row["search_s"] and \
            kept["random_tried"] == row["random_tried"]
        for name in ("random", "random_half_budget", "mobilenetv2", "shallowest"):
            trained = [c and c["test_accs"] for c in (kept[name], row[name])]
            assert trained[0] == trained[1]
            if kept[name]:
                assert kept[name]["feasible"] == (kept[name]["latency_ms"] <= kept["target_ms"])
        assert len(kept["pick"]["test_accs"]) == 2 and kept["against"]["test_acc"] == \
            row["pick"]["test_acc"]
        assert kept["against"]["feasible"] == (kept["against"]["latency_ms"] <= kept["target_ms"])
    assert variant["kendall_tau"] is None
    for other in ("against", "mobilenetv2", "shallowest"):
        assert variant["pick_minus_" + other]["n"] == sum(
            1 for kept in variant_rows if kept["pick"]["feasible"] and kept[other]["feasible"])
    assert "seeds kept from an earlier run: [0, 1]" in out
    assert [path.stat().st_mtime_ns for path in summaries] == written
    for row, kept in zip(rows, kept_rows):
        for name in ("pick", "mobilenetv2", "shallowest"):
            assert kept[name]["test_acc"] == row[name]["test_acc"]
            assert kept[name]["feasible"] == (kept[name]["latency_ms"] <= kept["target_ms"])
    assert kept_figures["kendall_tau"] == figures["kendall_tau"]


class SpikyDevice:
    """Latency grows with a network's channels; the first measurement of `spiked` is 3x slow (as
    when another seed's job trains beside the bench)."""

    def __init__(self, spiked):
        self.spiked, self.measured = spiked, []

    def measure(self, arch):
        slow = arch.hash == self.spiked and arch.hash not in self.measured
        self.measured.append(arch.hash)
        return {"min_ms": (3 if slow else 1) * channels(arch) / 100}


def channels(arch):
    return sum(block["out_channels"] for block in arch.to_dict()["blocks"])


def test_mobilenet_v2_at_t_is_the_widest_whose_median_round_is_under_t():
    space = SearchSpace(0.5, 32, 10, 1)
    narrow, wide = (SearchSpace(w, 32, 10, 1).mobilenet_v2() for w in (0.3, 0.6))
    device = SpikyDevice(narrow.hash)  # a spike on a narrower width cuts nothing short
    picked = mobilenet_v2_at(space, channels(wide) / 100, device, 3)  # wide fits, just
    assert picked.hash == wide.hash and device.measured.count(narrow.hash) == 3
    narrowest = SearchSpace(0.1, 32, 10, 1).mobilenet_v2()
    assert mobilenet_v2_at(space, 0.001, SpikyDevice(None), 1).hash == narrowest.hash  # none fits


def test_the_bench_runs_a_variant_of_the_search_given_with_set():
    assert parse_settings(["sandwich=true", "arch_lr=0.02", "strategy=reinforce"]) == \
        {"sandwich": True, "arch_lr": 0.02, "strategy": "reinforce"}
    for wrong, says in ((["seed=3"], "the bench sets it"), (["sandwich"], "NAME=VALUE"),
                        (["no_such=1"], "unknown setting"), (["epochs=-1"], "epochs")):
        with pytest.raises(ValueError, match=says):
            parse_settings(wrong)


def test_against_pairs_only_a_result_of_the_same_splits_target_and_training_seeds(tmp_path):
    args = argparse.Namespace(dataset="shapes", split_seed=None, target_fraction=0.8,
                              train_seeds=1, quick=False, against=str(tmp_path / "result.json"))
    settings = {k: getattr(args, k) for k in PAIRED_SETTINGS}
    rows = [{"seed": 3, "pick": {"test_acc": 0.9, "feasible": True}}]
    (tmp_path / "result.json").write_text(json.dumps({"settings": settings, "rows": rows}))
    assert load_against(args) == {3: rows[0]}
    args.target_fraction = 0.6
    with pytest.raises(ValueError, match="other target_fraction"):
        load_against(args)
    (tmp_path / "result.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a result of this bench"):
        load_against(args)


def row_args(tmp_path, **changed):
    return argparse.Namespace(**dict(dict(
        out=str(tmp_path), seeds=[0], dataset="shapes", split_seed=None, target_fraction=0.8,
        random_epochs=20, tau_archs=12, tau_seeds=1, train_seeds=1, quick=False,
        train_device="cpu", set={}, picks_only=False, reuse_alternatives=False), **changed))


def test_a_row_kept_before_train_seeds_counts_as_trained_once(tmp_path):
    args = row_args(tmp_path)
    before = {k: getattr(args, k) for k in ROW_SETTINGS
              if k not in ("train_seeds", "reuse_alternatives")}
    (tmp_path / "seed-0.json").write_text(json.dumps(
        {"settings": before, "row": {"seed": 0}, "ranking": {"tau": 0.3}}))
    assert load_row(args, 0)["row"] == {"seed": 0}
    args.train_seeds = 2  # its accuracies are of one training each: not reused
    assert load_row(args, 0) is None


def test_reused_alternatives_come_from_a_run_that_trained_them_at_the_kept_rows_t(tmp_path):
    alternatives = {"random": None, "random_half_budget": None, "mobilenetv2": {"test_acc": 0.8},
                    "shallowest": {"test_acc": 0.7}}
    full, picks_only = dict(alternatives, target_ms=2.0), dict.fromkeys(alternatives)
    args = row_args(tmp_path, seeds=[0, 1, 2], picks_only=True, reuse_alternatives=True,
                    against="kept.json", against_rows={0: full, 1: picks_only})
    with pytest.raises(ValueError, match="no alternatives for seed 1, 2"):
        check_alternatives(args)
    args.seeds = [0]
    check_alternatives(args)
    kept = {k: getattr(args, k) for k in ROW_SETTINGS}
    (tmp_path / "seed-0.json").write_text(json.dumps({"settings": kept, "row": {
        "seed": 0, "target_ms": 2.4, "against_target_ms": 2.0}, "ranking": None}))
    assert load_row(args, 0)["row"]["target_ms"] == 2.4
    args.against_rows[0]["target_ms"] = 2.1  # searched for another --against's T
    assert load_row(args, 0) is None


class SlowerDevice:
    """Takes 1.25 times as long as the latencies in `then` (1.5 times for one architecture)."""

    def __init__(self, then, outlier):
        self.then, self.outlier = then, outlier

    def measure(self, arch):
        return {"min_ms": self.then[arch.hash] * (1.5 if arch.hash == self.outlier else 1.25)}


def test_reused_alternatives_scale_t_by_how_much_slower_the_machine_runs_their_contenders():
    space = SearchSpace(0.5, 32, 10, 1)
    archs = [space.mobilenet_v2(), SearchSpace(0.3, 32, 10, 1).mobilenet_v2(), shallowest(space)]
    rows = [{"pick": {"arch": archs[0].to_dict(), "latency_ms": 2.0},
             "mobilenetv2": {"arch": archs[1].to_dict(), "latency_ms": 1.6},
             "shallowest": {"arch": archs[2].to_dict(), "latency_ms": 0.8}, "random": None}]
    then = dict(zip((arch.hash for arch in archs), (2.0, 1.6, 0.8)))
    assert machine_drift(rows, SlowerDevice(then, archs[2].hash), 3) == pytest.approx(1.25)
    args = argparse.Namespace(against_rows={4: {"target_ms": 2.0}}, target_scale=1.25)
    assert scaled_target(args, 4) == 2.5


def test_pool_pairs_the_seeds_of_several_results_of_one_variant(tmp_path):
    settings = {"dataset": "shapes", "split_seed": None, "target_fraction": 0.8, "train_seeds": 1,
                "quick": False, "set": {"strategy": "evolution"}}

    def result(name, seeds, **changed):
        rows = [{"seed": seed, "pick": {"test_acc": 0.90 + seed / 100, "feasible": seed != 3,
                                        "over_target": 0.9},
                 "against": {"test_acc": 0.90, "feasible": True}} for seed in seeds]
        (tmp_path / name).write_text(json.dumps({"settings": dict(settings, **changed),
                                                 "rows": rows}))
        return str(tmp_path / name)

    first, second = result("a.json", [0, 1, 2]), result("b.json", [3, 4, 5])
    figures = pool(load([second, first]))
    assert figures["seeds"] == [0, 1, 2, 3, 4, 5]
    # seed 3's pick is over T: the five others pair, 0, 1, 2, 4 and 5 points above
    against = figures["pick_minus_against"]
    assert against["n"] == 5 and against["mean"] == pytest.approx(12 / 5, abs=0.01)
    assert against["ci95_low"] < 12 / 5 < against["ci95_high"]
    assert figures["pick_minus_mobilenetv2"]["n"] == 0  # trained by neither
    # T aside, seed 3's pick pairs too: 0, 1, 2, 3, 4 and 5 points above
    assert figures["ignoring_target"]["against"]["n"] == 6
    assert figures["ignoring_target"]["against"]["mean"] == pytest.approx(15 / 6, abs=0.01)
    with pytest.raises(ValueError, match="seed 3 is in another result"):
        load([second, result("c.json", [3])])
    with pytest.raises(ValueError, match="other set"):
        load([first, result("d.json", [6], set={})])
    (tmp_path / "e.json").write_text("[]")
    with pytest.raises(ValueError, match="not a result"):
        load([first, str(tmp_path / "e.json")])
