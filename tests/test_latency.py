"""Latency sources, the measurement routine, the lookup table and the measurement cache."""
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys

import pytest
import torch

from nano_agent.builder import build_model
from nano_agent.measure import PROFILE_ARCHS, profile_lut, profile_paths, time_layers
from nano_agent.onnx_backend import time_layers_onnx
from nano_agent.results import summarize
from nano_agent.space import SearchSpace
from search_core.device_client import DeviceLost, LatencyError
from search_core.latency import LocalDevice, PatientDevice, open_device
from search_core.lut import Lut, calibration_paths, fit_line
from search_core.measurements import LatencyCache, Measurer

pytestmark = pytest.mark.unit

SPACE = SearchSpace(0.5, 32, 10, 1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_summarize_statistics():
    stats = summarize([4.0, 1.0, 3.0, 2.0, 10.0])
    assert stats["median_ms"] == 3.0 and stats["min_ms"] == 1.0 and stats["max_ms"] == 10.0
    assert stats["mean_ms"] == 4.0 and stats["p90_ms"] == 10.0
    assert stats["std_ms"] == pytest.approx(3.5355, rel=1e-4)
    assert summarize([1.0, 2.0])["median_ms"] == 1.5


def test_local_device_measures_end_to_end():
    device = open_device("local", threads=1, warmup=2, runs=7)
    arch = SPACE.mobilenet_v2()
    stats = device.measure(arch)
    assert stats["runs"] == 7 and len(stats["times_ms"]) == 7 and stats["median_ms"] > 0
    assert stats["input_shape"] == [1, 1, 32, 32] and stats["threads"] == 1
    assert stats["memory_source"] == "estimated" and stats["memory_bytes"] > 0
    assert stats["build_ms"] > 0
    assert device.info()["threads"] == 1 and device.device_key.startswith("local:")


def test_agent_device_needs_a_token(monkeypatch):
    monkeypatch.delenv("NANO_AGENT_TOKEN", raising=False)
    with pytest.raises(LatencyError, match="give its token"):
        open_device("nano1.lan:8765")


def test_measurements_are_cached_per_device_hash_and_shape(tmp_path):
    path = str(tmp_path / "cache.jsonl")
    measurer = Measurer(LocalDevice(threads=1, warmup=1, runs=3), LatencyCache(path))
    arch = SPACE.mobilenet_v2()
    first = measurer.measure(arch)
    second = measurer.measure(arch)
    assert not first["cached"] and second["cached"]
    assert second["median_ms"] == first["median_ms"]
    other_shape = measurer.measure(arch, (1, 1, 40, 40))
    assert not other_shape["cached"] and other_shape["input_shape"] == [1, 1, 40, 40]
    assert (measurer.hits, measurer.misses) == (1, 2)
    # a new process finds them in the file
    again = Measurer(LocalDevice(threads=1, warmup=1, runs=3), LatencyCache(path))
    assert again.measure(arch)["cached"] and len(again.cache) == 2


def test_cache_survives_a_line_cut_short(tmp_path):
    path = tmp_path / "cache.jsonl"
    good = json.dumps({"key": "a", "stats": {"median_ms": 1.0}})
    path.write_text(good + "\n" + good[:20])  # the last write was interrupted
    cache = LatencyCache(str(path))
    assert cache.get("a") == {"median_ms": 1.0} and len(cache) == 1
    cache.put("b", {"median_ms": 2.0})
    assert LatencyCache(str(path)).get("b") == {"median_ms": 2.0}


def test_profile_networks_time_every_op_about_equally_often():
    paths = profile_paths(SPACE, PROFILE_ARCHS)
    assert len(paths) == PROFILE_ARCHS and paths == profile_paths(SPACE, PROFILE_ARCHS)
    for sb in SPACE.blocks:
        counts = [sum(path[sb.index] == i for path in paths) for i in range(len(sb.ops))]
        assert min(counts) >= PROFILE_ARCHS // 7 and max(counts) - min(counts) <= 1, counts
    assert len({tuple(p) for p in paths}) == PROFILE_ARCHS  # different neighbours each time
    with pytest.raises(ValueError, match="at least 7 networks"):
        profile_lut(SPACE, warmup=0, runs=1, archs=6)


def test_layer_timing_runs_the_whole_network():
    """The profiler times the network's own stages in order: together they are its forward pass."""
    arch = SPACE.architecture(profile_paths(SPACE, 7)[3])
    model = build_model(arch).eval()
    x = torch.randn(*arch.input_shape)
    with torch.no_grad():
        y = x
        for stage in list(model.features) + [model.classify]:
            y = stage(y)
        assert torch.equal(y, model(x))
    times = time_layers(model, arch.input_shape, warmup=1, runs=3)
    assert len(times) == 3 and all(len(row) == len(model.features) + 1 for row in times)
    assert all(t > 0 for row in times for t in row)


def test_profile_times_ops_inside_networks():
    seen = []
    data = profile_lut(SPACE, warmup=1, runs=2, progress=lambda done, total: seen.append((done, total)))
    assert data["method"] == "in_context" and data["archs"] == PROFILE_ARCHS
    assert seen == [(i, PROFILE_ARCHS) for i in range(1, PROFILE_ARCHS + 1)]
    assert set(data["fixed_ms"]) == {"stem", "first_block", "last_block", "head"}
    for sb, row in zip(SPACE.blocks, data["blocks"]):
        assert set(row) == {op.name for op in sb.ops}
        assert all((row[op.name] == 0.0) == op.is_zero for op in sb.ops)


FAULTS_PER_RUN = """
import random, resource, statistics, threading
from nano_agent.builder import build_model
from nano_agent.measure import time_module
from nano_agent.space import SearchSpace
space = SearchSpace(1.0, 224, 1000, 3)
rng = random.Random(2)
faults = []
def measure_all():  # in a thread, as the agent measures: glibc gives it an arena of its own
    for _ in range(12):
        arch = space.architecture([rng.randrange(len(sb.ops)) for sb in space.blocks])
        model = build_model(arch)
        time_module(model, arch.input_shape, warmup=5, runs=1)
        runs = []
        for _ in range(5):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            time_module(model, arch.input_shape, warmup=0, runs=1)
            runs.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        faults.append(statistics.median(runs))
thread = threading.Thread(target=measure_all)
thread.start()
thread.join()
print(max(faults))
"""


@pytest.mark.process
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_timed_runs_reuse_memory_instead_of_faulting_it_in():
    """Depending on what the process allocated before, glibc handed some networks fresh pages on
    every run (3,000 page faults and +25% at 224x224); the measurement keeps freed memory. The
    median run of each network counts: a heap that grows once, in one run, is not that fault."""
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_RUN], cwd=ROOT, check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    assert float(out) < 100, "page faults per timed run: {}".format(out)


def test_lut_predicts_and_refuses_another_space():
    data = LocalDevice(threads=1, warmup=1, runs=2).profile(SPACE)
    lut = Lut(data, SPACE)
    path = SPACE.choices(SPACE.mobilenet_v2())
    expected = sum(data["fixed_ms"].values()) + sum(
        data["blocks"][i][SPACE.blocks[i].ops[c].name] for i, c in enumerate(path))
    assert lut.predict(path) == pytest.approx(expected)
    with pytest.raises(ValueError, match="profiled for space"):
        Lut(data, SearchSpace(1.0, 32, 10, 1))
    with pytest.raises(ValueError, match="not a latency lookup table"):
        Lut({"format": "other"}, SPACE)


class LinearDevice:
    """A fake device whose end-to-end latency (the fastest run) is exactly 2 x table + 1 ms."""

    device_key = "linear"

    def __init__(self, lut):
        self.lut = lut

    def measure(self, arch):
        fastest = 2.0 * self.lut.raw(SPACE.choices(arch)) + 1.0
        return {"min_ms": fastest, "median_ms": 1.5 * fastest}


def test_calibration_fits_the_end_to_end_line():
    lut = Lut(LocalDevice(threads=1, warmup=1, runs=2).profile(SPACE), SPACE)
    path = SPACE.choices(SPACE.mobilenet_v2())
    raw = lut.raw(path)
    fit = lut.calibrate(SPACE, Measurer(LinearDevice(lut)), count=6)
    assert fit["a"] == pytest.approx(2.0) and fit["b"] == pytest.approx(1.0)
    assert fit["median_abs_error"] < 1e-9
    assert lut.predict(path) == pytest.approx(2.0 * raw + 1.0)
    assert Lut(lut.data, SPACE).predict(path) == pytest.approx(2.0 * raw + 1.0)  # stored


class SlowFirstDevice(LinearDevice):
    """Like LinearDevice, but the machine is three times slower the first time it measures each
    architecture (something else ran)."""

    def __init__(self, lut):
        LinearDevice.__init__(self, lut)
        self.seen = set()
        self.calls = 0

    def measure(self, arch):
        self.calls += 1
        stats = LinearDevice.measure(self, arch)
        if arch.hash not in self.seen:
            self.seen.add(arch.hash)
            stats = {k: 3.0 * v for k, v in stats.items()}
        return stats


def test_calibration_takes_each_architectures_fastest_round():
    lut = Lut(LocalDevice(threads=1, warmup=1, runs=2).profile(SPACE), SPACE)
    measurer = Measurer(SlowFirstDevice(lut))
    fit = lut.calibrate(SPACE, measurer, count=6)
    assert fit["rounds"] == 3 and fit["a"] == pytest.approx(2.0) and fit["b"] == pytest.approx(1.0)
    assert (measurer.misses, measurer.hits, len(measurer.cache)) == (6, 0, 6)  # the fastest, cached
    lut.calibrate(SPACE, measurer, count=6)
    assert measurer.hits == 6 and measurer.source.calls == 6 * 3  # 3 rounds once, then the cache
    fit = lut.calibrate(SPACE, Measurer(SlowFirstDevice(lut)), count=6, rounds=1)
    assert fit["a"] == pytest.approx(6.0)  # one round alone sees only the disturbed measurements


def test_calibration_architectures_span_the_space():
    paths = calibration_paths(SPACE, 10, seed=0)
    assert paths == calibration_paths(SPACE, 10, seed=0) and len(paths) == 10
    skipped = [[SPACE.blocks[b].ops[i].is_zero for b, i in enumerate(p)] for p in paths]
    assert not any(skipped[0])  # the slowest end: no block skipped
    assert skipped[-1] == [any(op.is_zero for op in sb.ops) for sb in SPACE.blocks]  # the fastest
    assert sum(skipped[4]) not in (0, sum(skipped[-1]))  # and between them


def test_line_fit_shrugs_off_a_disturbed_measurement():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    y = [2 * v + 1 for v in x]
    y[4] = 60.0  # something else ran on the machine during this one
    a, b = fit_line(x, y)
    assert a == pytest.approx(2.0) and b == pytest.approx(1.0)
    a, b = fit_line([1.0, 2.0, 3.0], [3.0, 2.0, 1.5])  # noise without signal: no negative slope
    assert a > 0 and b == 0.0


def test_corrected_latency_stays_positive():
    data = LocalDevice(threads=1, warmup=1, runs=2).profile(SPACE)
    data["calibration"] = {"a": 6.0, "b": -1000.0}
    lut = Lut(data, SPACE)
    path = SPACE.choices(SPACE.mobilenet_v2())
    assert lut.predict(path) == pytest.approx(0.1 * lut.raw(path))


class FlakySource:
    """A source whose device is lost for its first `lost` calls; `refuse` raises a refusal."""
    device_key = "agent:flaky"

    def __init__(self, lost, refuse=False):
        self.lost, self.refuse, self.calls = lost, refuse, 0

    def measure(self, arch, input_shape=None):
        self.calls += 1
        if self.refuse:
            raise LatencyError("device agent refused the token")
        if self.calls <= self.lost:
            raise DeviceLost("device agent is unreachable")
        return {"median_ms": 1.0}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def patient(source, wait_s):
    clock, heard = FakeClock(), []
    device = PatientDevice(source, wait_s, lambda *wait: heard.append(wait), clock, clock.sleep)
    return device, heard


def test_a_patient_device_waits_for_a_lost_device_with_growing_pauses():
    device, heard = patient(FlakySource(lost=6), wait_s=600)
    assert device.measure(None) == {"median_ms": 1.0}
    assert [round(w) for _, _, w in heard] == [0, 1, 3, 7, 15, 30, 45]  # pauses 1 2 4 8 15 15
    assert [waiting for waiting, _, _ in heard] == [True] * 6 + [False]
    assert heard[0][1] == "device agent is unreachable" and heard[-1][1] is None


def test_a_patient_device_fails_past_its_limit_and_at_once_on_a_refusal():
    source = FlakySource(lost=10 ** 6)
    device, heard = patient(source, wait_s=20)
    with pytest.raises(DeviceLost, match=r"waited 20 s for it, the limit is 20 s: resume"):
        device.measure(None)
    assert max(w for _, _, w in heard) < 20 and source.calls == len(heard) + 1
    refusing = FlakySource(lost=0, refuse=True)
    device, heard = patient(refusing, wait_s=600)
    with pytest.raises(LatencyError, match="token"):
        device.measure(None)
    assert refusing.calls == 1 and heard == []


@pytest.mark.process
def test_the_local_device_measures_in_onnxruntime_apart_from_pytorch(monkeypatch):
    import onnxruntime
    sessions = []  # the models onnxruntime was given to run

    class CountedSession(onnxruntime.InferenceSession):
        def __init__(self, *args, **kwargs):
            sessions.append(args[0])
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(onnxruntime, "InferenceSession", CountedSession)
    space = SearchSpace(0.5, 32, 10, 1)
    arch = space.mobilenet_v2()
    pytorch, onnx = LocalDevice(1, 1, 3), LocalDevice(1, 1, 3, backend="onnxruntime")
    assert onnx.device_key == pytorch.device_key + ":onnxruntime"
    stats = onnx.measure(arch)
    assert stats["backend"] == "onnxruntime" and stats["runs"] == 3 and stats["min_ms"] > 0
    assert len(sessions) == 1
    assert stats["params"] == pytorch.measure(arch)["params"]
    lut = Lut(onnx.profile(space), space)  # onnxruntime's profiler times each layer in place
    assert lut.data["backend"] == "onnxruntime" and lut.data["device"].startswith("onnxruntime:")
    assert all(ms > 0 for row, sb in zip(lut.table, space.blocks)
               for ms, op in zip(row, sb.ops) if not op.is_zero)
    profiled = len(sessions)
    assert profiled > 1  # the profile's networks ran in onnxruntime
    Lut(pytorch.profile(space), space)
    assert len(sessions) == profiled  # and pytorch's in pytorch


def test_onnxruntime_layer_times_add_up_to_the_whole_run(monkeypatch):
    """time_layers_onnx splits each run among the network's layers: one time per `features`
    layer and one for the classifier, all positive, and they sum to at most the profiled run
    itself (the kernels run one after another) and to the bulk of it (about 60%: the rest is the
    session's own work)."""
    from nano_agent import onnx_backend
    split, runs = onnx_backend._layer_times, []
    monkeypatch.setattr(onnx_backend, "_layer_times", lambda *args: runs.extend(split(*args)) or runs)
    space = SearchSpace(0.5, 32, 10, 1)
    arch = space.architecture([len(sb.ops) - 1 for sb in space.blocks])  # some blocks skipped
    model = build_model(arch)
    rows = time_layers_onnx(model, arch.input_shape, warmup=2, runs=5)
    assert len(rows) == 5 and all(len(row) == len(model.features) + 1 for row in rows)
    assert all(ms > 0 for row in rows for ms in row)
    assert [row for _, row in runs] == rows
    assert all(sum(row) <= run_ms for run_ms, row in runs), runs
    # a pause (a loaded machine) can stretch one run's window, not most of them
    assert statistics.median(sum(row) / run_ms for run_ms, row in runs) > 0.3, runs


@pytest.mark.process
def test_an_isolated_local_device_measures_in_a_process_of_its_own():
    """As a search's local device: the figures of an in-process one, from a spawned process that
    a crash does not take the caller down with, and that close() ends."""
    arch = SPACE.mobilenet_v2()
    before = set(multiprocessing.active_children())
    device = LocalDevice(threads=1, warmup=1, runs=3, isolated=True)
    stats = device.measure(arch)
    assert set(stats) == set(LocalDevice(threads=1, warmup=1, runs=3).measure(arch))
    assert stats["params"] > 0 and stats["median_ms"] > 0
    [worker] = set(multiprocessing.active_children()) - before
    assert worker.pid != os.getpid()
    progress = []
    table = device.profile(SPACE, progress=lambda done, total: progress.append((done, total)))
    assert len(table["blocks"]) == len(SPACE.blocks) and progress == [(1, 1)]
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(LatencyError, match="died"):
        device.measure(arch)
    assert device.measure(arch)["params"] == stats["params"]  # another process took over
    device.close()
    assert set(multiprocessing.active_children()) == before
