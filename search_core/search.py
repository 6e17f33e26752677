"""The search run: warm-up (weights only, uniform paths), then weight steps on the train split alternate
with architecture steps on the validation split; after every search epoch the argmax architecture
and K sampled ones are evaluated with the shared weights and measured on the device.

A run lives in a directory: config.json, lut.json, samples.jsonl, latency_cache.jsonl,
checkpoint.pt (after every epoch, to resume), best_arch.json and summary.json at the end.
"""
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from typing import Optional

import torch
import torch.nn.functional as F

from . import data
from .arch import Architecture
from .latency import LatencyCache, Lut, Measurer, open_device
from .measure import latency_ms
from .objectives import Constraint, CostModel, objective
from .space import SearchSpace
from .strategies import GradientStrategy, ReinforceStrategy, entropy
from .supernet import Supernet
from .train import accuracy

CHECKPOINT = "checkpoint.pt"
STRATEGIES = ("gradient", "reinforce")
# default w per strategy: MnasNet's soft -0.07 for the reward; the loss needs a stronger pull,
# since the cross-entropy's gradient through the binary gates dwarfs that of a 0.07 exponent
DEFAULT_WEIGHTS = {"gradient": -0.5, "reinforce": -0.07}
AUTO_TARGET_FRACTION = 0.8


class ConfigError(ValueError):
    """A search setting out of range; `field` names the setting (None: not one setting)."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


@dataclass
class SearchConfig:
    dataset: str = "digits"
    data_dir: Optional[str] = None
    resolution: int = 32
    width_mult: float = 0.5
    seed: int = 0
    warmup_epochs: int = 20
    epochs: int = 45  # all epochs, warm-up included
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    strategy: str = "gradient"
    loss_form: str = "mul"
    arch_lr: float = 0.01
    target_latency_ms: Optional[float] = None  # None: 80% of the uniform distribution's expectation
    latency_weight: Optional[float] = None  # None: DEFAULT_WEIGHTS[strategy]
    hard_constraint: bool = False
    target_memory_mb: Optional[float] = None
    target_params_m: Optional[float] = None
    samples_per_epoch: int = 4
    calibration_archs: int = 10  # measured end to end to correct the lookup table
    calibration_batches: int = 8
    rl_samples: int = 2
    rl_baseline_decay: float = 0.9
    shared_weights: bool = True
    device: str = "local"
    measure_warmup: int = 5
    measure_runs: int = 20
    measure_threads: int = 1
    threads: Optional[int] = None  # None: all cores
    train_device: str = "cpu"
    limit: Optional[int] = None  # at most this many images per split (quick tests)

    def validate(self):
        if self.dataset not in data.DATASETS:
            raise ConfigError("dataset must be one of {}, got {!r}".format(
                ", ".join(data.DATASETS), self.dataset), "dataset")
        _require("resolution", 8 <= self.resolution <= 512, "resolution must be in [8, 512]")
        _require("width_mult", 0.1 <= self.width_mult <= 4.0, "width_mult must be in [0.1, 4.0]")
        _require("epochs", self.epochs >= 1, "epochs must be at least 1")
        _require("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs,
                 "warmup_epochs must be in [0, epochs] (epochs counts the warm-up too)")
        _require("batch_size", 1 <= self.batch_size <= 4096, "batch_size must be in [1, 4096]")
        _require("lr", self.lr > 0, "lr must be positive")
        _require("arch_lr", self.arch_lr > 0, "arch_lr must be positive")
        _require("strategy", self.strategy in STRATEGIES, "strategy must be one of " + ", ".join(STRATEGIES))
        _require("loss_form", self.loss_form in ("mul", "add"), "loss_form must be mul or add")
        _require("samples_per_epoch", self.samples_per_epoch >= 0, "samples_per_epoch must be >= 0")
        _require("calibration_batches", self.calibration_batches >= 1, "calibration_batches must be >= 1")
        _require("calibration_archs", self.calibration_archs >= 2, "calibration_archs must be >= 2")
        _require("rl_samples", self.rl_samples >= 1, "rl_samples must be >= 1")
        _require("measure_runs", self.measure_runs >= 1, "measure_runs must be >= 1")
        _require("measure_warmup", self.measure_warmup >= 0, "measure_warmup must be >= 0")
        _require("threads", self.threads is None or self.threads >= 1, "threads must be >= 1")
        _require("train_device", self.train_device in ("cpu", "cuda"), "train_device must be cpu or cuda")
        if self.train_device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train_device is cuda but no CUDA device is available here",
                              "train_device")
        for name in ("target_latency_ms", "target_memory_mb", "target_params_m"):
            value = getattr(self, name)
            _require(name, value is None or value > 0, name + " must be positive")
        _require("latency_weight", self.latency_weight is None or self.latency_weight < 0,
                 "latency_weight (w) must be negative")
        return self

    @property
    def weight(self):
        return DEFAULT_WEIGHTS[self.strategy] if self.latency_weight is None else self.latency_weight

    def constraints(self):
        targets = (("latency_ms", self.target_latency_ms), ("memory_mb", self.target_memory_mb),
                   ("params_m", self.target_params_m))
        return [Constraint(metric, target, self.weight, self.hard_constraint)
                for metric, target in targets if target is not None]

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = set(f.name for f in fields(cls))
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError("unknown setting(s): " + ", ".join(unknown))
        return cls(**d).validate()


def _require(field, condition, message):
    if not condition:
        raise ConfigError(message, field)


class Search:
    """One search run in `run_dir`; `run()` does (or continues) the whole thing."""

    def __init__(self, config, run_dir, events):
        self.config = config.validate()
        self.run_dir = run_dir
        self.events = events
        os.makedirs(run_dir, exist_ok=True)
        self.path = lambda name: os.path.join(run_dir, name)

    # --- set-up -----------------------------------------------------------------------------------

    def _setup(self):
        c = self.config
        torch.manual_seed(c.seed)
        torch.set_num_threads(c.threads or os.cpu_count() or 1)
        self.device = torch.device(c.train_device)
        self.dataset = data.load_dataset(c.dataset, c.resolution, c.seed, c.data_dir, limit=c.limit)
        self.space = SearchSpace(c.width_mult, c.resolution, self.dataset.num_classes,
                                 self.dataset.channels)
        self.net = Supernet(self.space, c.shared_weights).to(self.device)
        self.weight_optimizer = torch.optim.SGD(
            self.net.weight_parameters(), lr=c.lr, momentum=c.momentum, nesterov=True,
            weight_decay=c.weight_decay)
        # ProxylessNAS: Adam without momentum for the logits
        self.arch_optimizer = torch.optim.Adam(self.net.arch_parameters(), lr=c.arch_lr,
                                               betas=(0.0, 0.999), eps=1e-8)
        self.data_generator = torch.Generator().manual_seed(c.seed)
        self.path_generator = torch.Generator().manual_seed(c.seed + 1)
        source = open_device(c.device, c.measure_threads, c.measure_warmup, c.measure_runs)
        self.measurer = Measurer(source, LatencyCache(self.path("latency_cache.jsonl")))
        self.lut = self._lut()
        self.costs = CostModel(self.space, self.lut)
        if c.target_latency_ms is None:
            uniform = [torch.full((len(sb.ops),), 1.0 / len(sb.ops)) for sb in self.space.blocks]
            expected = float(self.costs.expected(uniform)["latency_ms"])
            c.target_latency_ms = round(AUTO_TARGET_FRACTION * expected, 3)
        self.constraints = c.constraints()
        self.strategy = self._strategy()

    def _lut(self):
        """Profile the per-op table on the device and calibrate it end to end (once per run)."""
        path = self.path("lut.json")
        if os.path.exists(path):
            return Lut.load(path, self.space)
        source = self.measurer.source
        self.events.emit("message", text="Profiling the latency lookup table on {} ...".format(
            source.device_id))
        lut = Lut(source.profile(self.space), self.space)
        fit = lut.calibrate(self.space, self.measurer, self.config.calibration_archs,
                            self.config.seed)
        self.events.emit("message", text="Calibrated: measured = {a:.3f} x table + {b:.3f} ms, "
                         "median error {median_abs_error:.1%} on {archs} architectures, the fastest "
                         "of {rounds} rounds each".format(**fit))
        lut.save(path)
        return lut

    def _strategy(self):
        c = self.config
        if c.strategy == "gradient":
            return GradientStrategy(self.net, self.costs, self.constraints, self.arch_optimizer,
                                    self.path_generator, c.loss_form)
        return ReinforceStrategy(self.net, self.metrics_of, self.constraints, self.arch_optimizer,
                                 self.path_generator, c.rl_samples, c.rl_baseline_decay)

    def metrics_of(self, arch):
        """Device-measured latency (through the cache) plus memory and parameters."""
        stats = self.measurer.measure(arch)
        return {"latency_ms": latency_ms(stats), "memory_mb": stats["memory_bytes"] / 2.0 ** 20,
                "params_m": stats["params"] / 1e6, "stats": stats}

    # --- the run ----------------------------------------------------------------------------------

    def run(self):
        start_time = time.time()
        self._setup()
        start_epoch, wall_before = self._restore()
        c = self.config
        with open(self.path("config.json"), "w") as f:  # with the resolved target latency
            json.dump(c.to_dict(), f, indent=2, sort_keys=True)
        self.events.emit(
            "started", run_dir=os.path.abspath(self.run_dir), dataset=c.dataset, epochs=c.epochs,
            warmup_epochs=c.warmup_epochs, strategy=c.strategy, device=c.device,
            device_id=self.measurer.source.device_id, start_epoch=start_epoch,
            constraints=[asdict(x) for x in self.constraints], config=c.to_dict(),
            space={"size": self.space.size, "blocks": [[op.name for op in sb.ops]
                                                       for sb in self.space.blocks]},
            train_size=len(self.dataset.train), val_size=len(self.dataset.val))
        for epoch in range(start_epoch, c.epochs):
            self._epoch(epoch)
            self._checkpoint(epoch + 1, wall_before + time.time() - start_time)
        return self._finish(wall_before + time.time() - start_time)

    def _phase(self, epoch):
        return "warmup" if epoch < self.config.warmup_epochs else "search"

    def _epoch(self, epoch):
        c, net = self.config, self.net
        phase = self._phase(epoch)
        started = time.time()
        batch_size = min(c.batch_size, len(self.dataset.train))  # a tiny split still trains
        steps = len(self.dataset.train) // batch_size
        batches = data.iterate_batches(
            self.dataset.train, self.dataset, batch_size, shuffle=True,
            generator=self.data_generator, augment=True, drop_last=True, device=self.device)
        arch_batches = self._arch_batches() if phase == "search" else None
        total_loss = total_correct = total_seen = 0.0
        arch_stats = {}
        last_emit = 0.0
        for step, (x, y) in enumerate(batches):
            self._set_lr(epoch, step, steps)
            net.train()
            path = net.sample_path(self.path_generator, uniform=phase == "warmup")
            out = net(x, path)
            loss = F.cross_entropy(out, y, label_smoothing=c.label_smoothing)
            self.weight_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.weight_optimizer.step()
            total_loss += loss.item() * len(y)
            total_correct += float((out.argmax(1) == y).sum())
            total_seen += len(y)
            if arch_batches is not None:
                arch_stats = self.strategy.step(*next(arch_batches))
            now = time.time()
            if now - last_emit > 0.5 or step == steps - 1:
                last_emit = now
                self.events.emit(
                    "progress", phase=phase, epoch=epoch, epochs=c.epochs, step=step + 1,
                    steps=steps, loss=total_loss / total_seen,
                    accuracy=total_correct / total_seen,
                    expected_latency_ms=self._expected_latency(), **arch_stats)
        samples = self._sample(epoch) if phase == "search" else []
        argmax = next((s for s in samples if s["kind"] == "argmax"), None)
        with torch.no_grad():
            probabilities = net.probabilities()
        self.events.emit(
            "epoch", phase=phase, epoch=epoch, epochs=c.epochs,
            train_loss=total_loss / max(total_seen, 1),
            train_accuracy=total_correct / max(total_seen, 1),
            expected_latency_ms=self._expected_latency(),
            arch_probabilities=[[round(float(p), 5) for p in probs] for probs in probabilities],
            entropy=entropy(probabilities),
            argmax=None if argmax is None else {k: argmax[k] for k in (
                "arch_hash", "ops", "accuracy", "latency_ms", "objective")},
            duration_s=time.time() - started, **arch_stats)

    def _arch_batches(self):
        """Validation batches for the architecture steps, reshuffled whenever they run out."""
        c = self.config
        while True:
            for batch in data.iterate_batches(self.dataset.val, self.dataset, c.batch_size,
                                              shuffle=True, generator=self.data_generator,
                                              device=self.device):
                yield batch

    def _set_lr(self, epoch, step, steps):
        """Linear ramp over the first epoch (the full rate at once diverges), then cosine, per step."""
        done = epoch + step / steps
        ramp = min(1.0, done + 1.0 / steps)
        cosine = 0.5 * (1 + math.cos(math.pi * done / self.config.epochs))
        for group in self.weight_optimizer.param_groups:
            group["lr"] = ramp * cosine * self.config.lr

    def _expected_latency(self):
        with torch.no_grad():
            return float(self.costs.expected(self.net.probabilities())["latency_ms"])

    # --- samples for the Pareto front ---------------------------------------------------------------

    def _sample(self, epoch):
        """Evaluate the argmax architecture and K drawn ones (distinct) with the shared weights."""
        paths = [("argmax", self.net.argmax_path())]
        for _ in range(self.config.samples_per_epoch):
            paths.append(("sampled", self.net.sample_path(self.path_generator)))
        seen, samples = set(), []
        for kind, path in paths:
            if path in seen:
                continue
            seen.add(path)
            sample = self._evaluate(epoch, kind, path)
            with open(self.path("samples.jsonl"), "a") as f:
                f.write(json.dumps(sample, sort_keys=True) + "\n")
            self.events.emit("sample", **sample)
            samples.append(sample)
        return samples

    def _evaluate(self, epoch, kind, path):
        c, net = self.config, self.net
        arch = net.architecture(path)
        batches = data.iterate_batches(self.dataset.train, self.dataset, c.batch_size,
                                       device=self.device)
        calibration = [x for x, _ in itertools.islice(batches, c.calibration_batches)]
        net.recalibrate_batch_norm(path, calibration)
        net.eval()
        val_accuracy = accuracy(lambda x: net(x, path), self.dataset.val, self.dataset, self.device)
        metrics = self.metrics_of(arch)
        stats = metrics.pop("stats")
        return {"epoch": epoch, "kind": kind, "arch_hash": arch.hash, "ops": arch.ops,
                "arch": arch.to_dict(), "accuracy": val_accuracy, "latency_ms": metrics["latency_ms"],
                "latency": {k: stats[k] for k in ("median_ms", "mean_ms", "std_ms", "p90_ms",
                                                   "min_ms", "max_ms", "runs")},
                "cached": stats["cached"],
                "predicted_latency_ms": self.lut.predict(path), "memory_mb": metrics["memory_mb"],
                "memory_source": stats["memory_source"], "params": stats["params"],
                "macs": stats["macs"], "objective": objective(val_accuracy, metrics, self.constraints),
                "feasible": all(x.satisfied(metrics[x.metric]) for x in self.constraints)}

    # --- checkpoints, resume, the end ------------------------------------------------------------

    def _checkpoint(self, epochs_done, wall_time):
        state = {"epochs_done": epochs_done, "wall_time_s": wall_time,
                 "supernet": self.net.state_dict(),
                 "weight_optimizer": self.weight_optimizer.state_dict(),
                 "arch_optimizer": self.arch_optimizer.state_dict(),
                 "strategy": self.strategy.state_dict(),
                 "data_generator": self.data_generator.get_state(),
                 "path_generator": self.path_generator.get_state(),
                 "torch_rng": torch.get_rng_state()}
        tmp = self.path(CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path(CHECKPOINT))

    def _restore(self):
        """Load the checkpoint if there is one; drop samples of an epoch that did not finish."""
        path = self.path(CHECKPOINT)
        if not os.path.exists(path):
            return 0, 0.0
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.net.load_state_dict(state["supernet"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        self.data_generator.set_state(state["data_generator"])
        self.path_generator.set_state(state["path_generator"])
        torch.set_rng_state(state["torch_rng"])
        done = state["epochs_done"]
        kept = [s for s in read_samples(self.path("samples.jsonl")) if s["epoch"] < done]
        with open(self.path("samples.jsonl"), "w") as f:
            f.writelines(json.dumps(s, sort_keys=True) + "\n" for s in kept)
        return done, state["wall_time_s"]

    def _finish(self, wall_time):
        samples = read_samples(self.path("samples.jsonl"))
        final = self.net.derive()  # derived afresh from the final logits
        best = best_sample(samples, self.config.hard_constraint)
        if best is None:  # no search epoch ran (warm-up only): evaluate the final argmax
            best = self._evaluate(self.config.epochs - 1, "argmax", self.net.argmax_path())
        best_arch = Architecture.from_dict(best["arch"])
        best_arch.save(self.path("best_arch.json"))
        summary = {"best": best, "final_argmax": {"arch_hash": final.hash, "ops": final.ops},
                   "samples": len(samples), "measurements": self.measurer.misses,
                   "cache_hits": self.measurer.hits, "wall_time_s": wall_time,
                   "best_arch_path": os.path.abspath(self.path("best_arch.json")),
                   "target_latency_ms": self.config.target_latency_ms}
        with open(self.path("summary.json"), "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
        self.events.emit("finished", **summary)
        return summary


def read_samples(path):
    """The samples of a run directory (an interrupted last line is skipped)."""
    if not os.path.exists(path):
        return []
    samples = []
    with open(path) as f:
        for line in f:
            try:
                samples.append(json.loads(line))
            except ValueError:
                continue
    return samples


def best_sample(samples, hard=False):
    """Highest objective; with hard constraints, among the samples that meet them (if any does).
    The later sample wins a tie, its supernet having trained longer."""
    if not samples:
        return None
    pool = [s for s in samples if s["feasible"]] if hard else []
    return max(reversed(pool or samples), key=lambda s: s["objective"])


def load_config(run_dir):
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise ConfigError("{} is not a run directory (no config.json)".format(run_dir))
    with open(path) as f:
        return SearchConfig.from_dict(json.load(f))
