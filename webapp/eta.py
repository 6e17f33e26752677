"""How long a run has left, from the measured pace of each of its phases: warm-up epochs, and
search epochs with the evaluation of their samples. A search step costs 1.6 warm-up steps and an
evaluation as much as the epoch's training, so one pace for the whole run is wrong by a factor of
three at the start of the search. The priors below (measured on digits and shapes, 0.5 width,
32x32, gradient strategy) stand in only until a phase has been seen."""
import math

SEARCH_STEP_PRIOR = 1.6  # a search step (a weight step and an architecture step) per warm-up step
FORWARD_SHARE = 0.12  # a batch's forward pass (no gradient) against a warm-up training step
PRIOR_STEPS = 4  # the search's first steps (one holds the checkpoint) weigh against this many prior ones
RECENT_EPOCHS = 3  # a phase's epoch pace: its last few (the load changes; the warm-up starts large)


class Pace:
    """Fed a worker's events (each carries its ``time``); ``remaining_s`` after each progress
    event. ``durations``: (phase, duration_s) of the epochs a resumed run already did."""

    def __init__(self, started: dict, durations=()):
        config = started.get("config") or {}
        self.epochs = int(started["epochs"])
        self.warmup = int(started["warmup_epochs"])
        batch = max(int(config.get("batch_size") or 1), 1)
        self.paths = int(config.get("samples_per_epoch") or 0) + 2  # the argmax and MobileNetV2 too
        self.forward_batches = (int(config.get("calibration_batches") or 0)
                                + math.ceil(int(started.get("val_size") or 0) / batch))
        self.timed_runs = int(config.get("measure_warmup") or 0) + int(config.get("measure_runs") or 0)
        self.target_s = float(config.get("target_latency_ms") or 0.0) / 1000.0
        self.epoch_s = {"warmup": [], "search": []}
        for phase, seconds in durations:
            if phase in self.epoch_s and isinstance(seconds, (int, float)):
                self.epoch_s[phase].append(float(seconds))
        self.steps_s = {"warmup": [0.0, 0], "search": [0.0, 0]}  # seconds, steps
        self.evaluations_s = []
        self.mark = None  # (time, epoch, step) of the last event
        self.trained_at = None  # when the current search epoch's last step ended

    def progress(self, event: dict):
        """Take a progress event; the seconds left, or None before any pace is known."""
        t, phase = float(event["time"]), event["phase"]
        epoch, step, steps = int(event["epoch"]), int(event["step"]), int(event["steps"])
        if phase not in self.steps_s or steps <= 0:
            return None
        if self.mark is not None and self.mark[1] == epoch and step > self.mark[2] and t >= self.mark[0]:
            self.steps_s[phase][0] += t - self.mark[0]
            self.steps_s[phase][1] += step - self.mark[2]
        self.mark = (t, epoch, step)
        if step == steps:
            self.trained_at = t
        return self.remaining_s(phase, epoch, step, steps)

    def epoch(self, event: dict):
        """Take an epoch event: its duration, and a search epoch's evaluation time."""
        t, phase = float(event["time"]), event["phase"]
        if phase not in self.epoch_s:
            return
        if isinstance(event.get("duration_s"), (int, float)):
            self.epoch_s[phase].append(float(event["duration_s"]))
        if phase == "search" and self.trained_at is not None:
            self.evaluations_s.append(t - self.trained_at)
        self.trained_at = None
        self.mark = (t, int(event["epoch"]) + 1, 0)

    def remaining_s(self, phase, epoch, step, steps):
        step_s = self._step_s(phase)
        if step_s is None:
            return None
        left = (steps - step) * step_s + (self._evaluation_s() if phase == "search" else 0.0)
        warmup_left = max(0, self.warmup - epoch - 1)
        search_left = self.epochs - max(epoch + 1, self.warmup)
        if warmup_left:
            left += warmup_left * self._epoch_s("warmup", steps)
        if search_left > 0:
            left += search_left * self._epoch_s("search", steps)
        return round(left, 1)

    def _measured_step_s(self, phase):
        seconds, steps = self.steps_s[phase]
        return seconds / steps if steps else None

    def _step_s(self, phase):
        """A phase's seconds per step: measured, blended with the other phase's pace until it
        has been seen for a few steps."""
        warmup, search = self._measured_step_s("warmup"), self._measured_step_s("search")
        if phase == "warmup":
            return warmup if warmup is not None else (search and search / SEARCH_STEP_PRIOR)
        if warmup is None:
            return search
        seconds, steps = self.steps_s["search"]
        if steps >= PRIOR_STEPS:
            return search
        return (seconds + PRIOR_STEPS * SEARCH_STEP_PRIOR * warmup) / (steps + PRIOR_STEPS)

    def _evaluation_s(self):
        """A search epoch's evaluation: measured once seen, else its forward passes (batch-norm
        calibration and validation) and the device's timed runs at about T, for each path."""
        if self.evaluations_s:
            return _recent_mean(self.evaluations_s)
        warmup_step = self._step_s("warmup") or 0.0
        return self.paths * (self.forward_batches * FORWARD_SHARE * warmup_step
                             + self.timed_runs * self.target_s)

    def _epoch_s(self, phase, steps):
        if self.epoch_s[phase]:
            return _recent_mean(self.epoch_s[phase])
        step_s = self._step_s(phase) or 0.0
        return steps * step_s + (self._evaluation_s() if phase == "search" else 0.0)


def _recent_mean(values):
    recent = values[-RECENT_EPOCHS:]
    return sum(recent) / len(recent)
