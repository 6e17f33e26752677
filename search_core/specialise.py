"""Specialise a trained search: the most accurate member of its trained supernet for new targets, on
another device or runtime, with no weight trained (Once-for-All's and BigNAS's "train once,
specialise many times", with the device measuring in the loop).

The parent run's settings and supernet checkpoint; the new device's lookup table (one it has stored
for this space, else profiled and calibrated now); the evolutionary search of strategies.py over
paths scored by shared-weight validation accuracy after batch-norm recalibration, with feasibility
by the calibrated table; each generation's best measured on the device as samples; at the end the
most accurate of them near the target measured again side by side, as a search's are, and the pick
among the samples by the search's own rule (best.py). The directory gets a search's files
(config.json, lut.json, latency_cache.jsonl, samples.jsonl, best_arch.json, summary.json naming
the parent) and no checkpoint: nothing was trained.
"""
import dataclasses
import os
import shutil
import time

from .lut import Lut
from .rundir import CONFIG, LATENCY_CACHE, LUT, RunDirectory
from .search import Search
from .settings import GENERATIONS, GENERATIONS_LIMIT, ConfigError

# what a specialisation may set anew; the rest (data, space, constraint form, seed) is its
# parent's: the supernet was trained on them
OVERRIDES = ("target_latency_ms", "target_latency_fraction", "target_memory_mb", "target_params_m",
             "device", "device_group", "backend", "measure_warmup", "measure_runs",
             "measure_threads", "calibration_archs", "threads", "train_device")


class Specialisation(Search):
    """`run()` specialises the search in `parent_dir` into `run_dir` for `overrides` (OVERRIDES;
    what is not given is the parent's: its T too, unless a target_latency_fraction asks for the
    automatic T of the new device's table), evolving `generations` generations of the parent's
    samples_per_epoch + 1 measured paths each."""

    def __init__(self, parent_dir, run_dir, events, generations=GENERATIONS, **overrides):
        parent = RunDirectory(parent_dir)
        if not parent.exists(CONFIG):
            raise FileNotFoundError("{} holds no search run (no {})".format(parent_dir, CONFIG))
        unknown = sorted(set(overrides) - set(OVERRIDES))
        if unknown:
            raise ConfigError("a specialisation keeps its parent's {}".format(", ".join(unknown)),
                              unknown[0])
        if not isinstance(generations, int) or generations not in GENERATIONS_LIMIT:
            raise ConfigError("generations must be in " + GENERATIONS_LIMIT.describe(),
                              "generations")
        settings = dict(overrides)
        if "target_latency_fraction" in settings:  # the new table's automatic T
            settings.setdefault("target_latency_ms", None)
        config = dataclasses.replace(parent.read_config(), strategy="evolution", **settings)
        super().__init__(config, run_dir, events)
        self.parent, self.generations = parent, generations
        self._scores = {}  # (path, split) -> shared-weight accuracy: the weights never move here

    def _run(self):
        start_time = time.time()
        if self.parent.exists(LATENCY_CACHE) and not self.files.exists(LATENCY_CACHE):
            # measurements are keyed by device and architecture: the parent's serve where the
            # device is the same, and are never read where it is not
            shutil.copyfile(self.parent.path(LATENCY_CACHE), self.files.path(LATENCY_CACHE))
        self.load_supernet()
        self._started(self.generations, 0, 0, parent=self._parent_path())
        for generation in range(self.generations):
            self.files.check_free_space(self.config.min_free_mb * 2 ** 20)
            started = time.time()
            samples = self._sample(generation)
            best = max(samples, key=lambda s: s["objective"], default=None)
            self.events.emit("generation", generation=generation, generations=self.generations,
                             samples=len(samples), duration_s=time.time() - started,
                             best=None if best is None else {
                                 k: best[k] for k in ("arch_hash", "accuracy", "latency_ms",
                                                      "objective", "feasible")})
        self._measure_finalists(self.generations)
        return self._finish(time.time() - start_time)

    def load_supernet(self):
        """Set up (data, space, the device's table) with the parent's trained weights."""
        state = self.parent.load_checkpoint("cpu")  # copied onto the training device below
        if state is None or not state.get("epochs_done"):
            raise ConfigError("{} has no trained supernet (its checkpoint.pt): specialise a run "
                              "that trained".format(self.parent.root))
        self._setup()
        self.net.load_state_dict(state["supernet"])

    def shared_accuracy(self, arch, split):
        """`arch`'s accuracy on `split` under the parent's trained weights (after load_supernet;
        a member of its space), batch norm recalibrated for it as a specialisation scores."""
        return self._shared_accuracy(tuple(self.space.choices(arch)), split)

    def _shared_accuracy(self, path, split):
        """Once per path and split: the survivors that each generation scores again, the samples
        that a converging population repeats and MobileNetV2 each generation score what they
        scored before (a shapes specialisation evaluated 17 distinct paths in its 50 samples)."""
        key = (tuple(path), id(split))
        if key not in self._scores:
            self._scores[key] = super()._shared_accuracy(path, split)
        return self._scores[key]

    def _stored_lut(self, device_key):
        """The device's stored table, else the parent's where it was made on this device (and
        runtime): no profiling again."""
        lut = super()._stored_lut(device_key)
        if lut is None and self.parent.exists(LUT):
            parents = Lut.load(self.parent.path(LUT), self.space)
            if parents.data.get("device_id") == device_key and parents.data.get("calibration"):
                return parents
        return lut

    def _setup_optimizers(self):
        """None: nothing trains (and building torch's optimizers imports its compiler, 2 s)."""

    def _parent_path(self):
        return os.path.abspath(self.parent.root)

    def _summary_extras(self):
        return {"parent": self._parent_path(), "generations": self.generations}

