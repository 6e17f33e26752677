"""The run's time left (webapp/eta.py), on event streams with known timings."""
import pytest

from webapp.eta import Pace

pytestmark = pytest.mark.unit

STARTED = {"epochs": 4, "warmup_epochs": 2, "val_size": 64,
           "config": {"batch_size": 32, "samples_per_epoch": 2, "calibration_batches": 2,
                      "measure_warmup": 1, "measure_runs": 4, "target_latency_ms": 10.0}}


def progress(t, phase, epoch, step, steps=10):
    return {"time": t, "phase": phase, "epoch": epoch, "step": step, "steps": steps}


def test_each_phase_is_timed_at_its_own_pace():
    """Warm-up steps of 1 s, search steps of 3 s and evaluations of 20 s: once both phases have
    been seen, the estimate is exact."""
    pace, t = Pace(STARTED), 0.0
    for epoch, phase, step_s, evaluation_s in ((0, "warmup", 1, 0), (1, "warmup", 1, 0),
                                               (2, "search", 3, 20)):
        for step in range(1, 11):
            t += step_s
            pace.progress(progress(t, phase, epoch, step))
        t += evaluation_s
        pace.epoch({"time": t, "phase": phase, "epoch": epoch,
                    "duration_s": 10 * step_s + evaluation_s})
    assert pace.progress(progress(t + 3, "search", 3, 1)) == 9 * 3 + 20


def test_a_resumed_run_starts_from_the_epochs_it_already_did():
    """Its epochs' stored durations give the pace before its own first step is timed."""
    pace = Pace(dict(STARTED, epochs=6), [("warmup", 10.0), ("warmup", 10.0), ("search", 50.0)])
    assert pace.remaining_s("search", 3, 0, 10) is None  # no step timed yet: no guess
    pace.progress(progress(100.0, "search", 3, 0))
    assert pace.progress(progress(103.0, "search", 3, 1)) > 2 * 50.0  # two whole epochs after this


def test_the_search_pace_before_it_is_seen_comes_from_the_warmups():
    pace = Pace(STARTED)
    for step in range(11):
        pace.progress(progress(float(step), "warmup", 0, step))
    assert pace.progress(progress(11.0, "warmup", 1, 1)) > 9 + 2 * 10  # search epochs cost more
