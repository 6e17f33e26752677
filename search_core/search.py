"""The search run: warm-up (weights only, uniform paths), then weight steps on the train split alternate
with architecture steps on the validation split; after every search epoch the argmax architecture
and K sampled ones are evaluated with the shared weights and measured on the device.

A run lives in a directory (rundir.py); the settings are in settings.py.
"""
import os
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F

from nano_agent.arch import Architecture
from nano_agent.complexity import complexity
from nano_agent.results import latency_ms
from nano_agent.space import SearchSpace

from . import data, fastpath
from .best import best_sample, explain
from .settings import ConfigError
from .recipe import Recipe
from .latency import PatientDevice, measure_interleaved, open_device
from .lut import Lut, profile_and_calibrate
from .measurements import LatencyCache, Measurer
from .objectives import BUDGET_FLOOR, CostModel, objective
from .rundir import BEST_ARCH, LATENCY_CACHE, LUT, STORED_LUTS, SUMMARY, RunDirectory
from .strategies import (EvolutionStrategy, GradientStrategy, ReinforceStrategy, entropy,
                         into_band)
from .supernet import Supernet
from .train import EVALUATION_BATCH, accuracy, clip_gradients, lr_factor, sgd


# With an absolute latency target, the architectures sampled after each epoch are drawn from the
# distribution among those whose predicted latency is within this band of T: the pick, the most
# accurate sample that meets T, then uses the budget. The factorised distribution's mode (the argmax)
# can lie far from its mean, which the absolute form lands on T, so neither the argmax nor a plain
# draw does (digits, tiny setting: argmax at 0.46-0.91 T). The band's top leaves room for the
# table's error (its median error against measured latency: bench/latency_prediction.py).
TARGET_BAND = (0.88, 0.98)
CANDIDATES = 256  # drawn per sample, the first inside the band is taken (else the nearest)
# the band's predictions are scaled by the median measured / predicted latency of the run's last
# samples: the measurements correct the table where it drifts (a busy device, a rough calibration)
DRIFT_SAMPLES = 20
# The warm-up's first quarter trains the largest member alone (Once-for-All's first stage), then
# uniform paths share what it learnt. On shapes, uniform paths from the start had barely left
# chance after 8 epochs (18% train accuracy); with 5 epochs of the largest member first, a random
# member reached 51% shared-weight validation accuracy after 10 (bench/search_quality.py measures
# what the whole search gains).
LARGEST_FIRST = 0.25
# evolution scores a path on this many validation images (of 1,200 on shapes and digits): a
# generation scores 12 paths each search epoch; the samples are then scored on all of them
FITNESS_IMAGES = 512
# At the end the FINALISTS most accurate architectures measured within NEAR of [0.85 T, T] are
# measured again in FINAL_ROUNDS rounds side by side; their median is their latency, and they
# meet T when their slowest round does (a pick at a median of 0.999 T had a round at 1.003 T;
# of the defaults' ten picks on shapes, six measured over T again after all training:
# bench/results/search-quality-defaults*.json). One measurement,
# taken at whatever moment its epoch came, moved a pick's latency by up to 15% here (one measured
# 0.94 T at a slow moment and 0.81-0.82 T in three later measurements; of 40 specialisations'
# picks, 6 measured 1.01-1.13 T in these rounds).
FINALISTS = 4
FINAL_ROUNDS = 3
NEAR = 0.1
# Where every finalist misses T in its rounds (a slow spell), the pick would fall to an
# architecture measured once, at another moment (on shapes, 0.97 T once beside four finalists at
# 1.02-1.59 T): the next most accurate near the band are measured too, up to FINAL_BATCHES
# batches, until the pick is one measured in rounds.
FINAL_BATCHES = 3
# the weight steps follow the retraining recipe where it is not a setting: its learning-rate ramp,
# its gradient clipping, and no weight decay on batch norm and biases
RECIPE = Recipe()


class Search:
    """One search run in `run_dir`; `run()` does (or continues) the whole thing."""

    def __init__(self, config, run_dir, events):
        self.config = config.validate()
        self.files = RunDirectory(run_dir).create()
        self.events = events
        self.measurer = None  # set up by run()

    # --- set-up -----------------------------------------------------------------------------------

    def _setup(self):
        c = self.config
        if c.train_device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train_device is cuda but no CUDA device is available here",
                              "train_device")
        torch.manual_seed(c.seed)
        torch.set_num_threads(c.threads or os.cpu_count() or 1)
        self.device = torch.device(c.train_device)
        split_seed = c.seed if c.split_seed is None else c.split_seed
        self.dataset = data.load_dataset(c.dataset, c.resolution, split_seed, c.data_dir,
                                         limit=c.limit)
        val = self.dataset.val
        self.fitness_split = data.Split(val.images[:FITNESS_IMAGES], val.labels[:FITNESS_IMAGES])
        # the batch-norm recalibration's images: the training split's first calibration_batches
        # batches, the same for every path evaluated, so read once; run as batches of
        # EVALUATION_BATCH (one forward of 256 costs less than four of 64)
        count = min(c.calibration_batches * c.batch_size, len(self.dataset.train))
        first = data.Split(self.dataset.train.images[:count], self.dataset.train.labels[:count])
        self.calibration = [x for x, _ in data.iterate_batches(
            first, self.dataset, EVALUATION_BATCH, device=self.device)]
        self.space = SearchSpace(c.width_mult, c.resolution, self.dataset.num_classes,
                                 self.dataset.channels)
        self.fast = fastpath.wanted(c.fast_path, self.device)
        self.net = Supernet(self.space, c.shared_weights, self.fast).to(self.device)
        self.weights = self.net.weight_parameters()
        self.largest_path = self.net.largest_path()
        self.smallest_path = self.net.smallest_path()
        self._setup_optimizers()
        self.data_generator = torch.Generator().manual_seed(c.seed)
        self.path_generator = torch.Generator().manual_seed(c.seed + 1)
        # this process trains: the local CPU measures in a process of its own, as an agent would
        source = PatientDevice(open_device(c.device, c.measure_threads, c.measure_warmup,
                                           c.measure_runs, backend=c.backend,
                                           group=c.device_group, isolated=True),
                               c.device_wait_s, self._device_wait)
        self.measurer = Measurer(source, LatencyCache(self.files.path(LATENCY_CACHE)))
        self.lut = self._lut()
        self.costs = CostModel(self.space, self.lut)
        if c.target_latency_ms is None:
            uniform = [torch.full((len(sb.ops),), 1.0 / len(sb.ops)) for sb in self.space.blocks]
            expected = float(self.costs.expected(uniform)["latency_ms"])
            c.target_latency_ms = round(c.target_latency_fraction * expected, 3)
        self.constraints = c.constraints()
        self.strategy = self._strategy()

    def _setup_optimizers(self):
        c = self.config
        self.weight_optimizer = sgd(self.weights, c.lr, c.weight_decay, self.fast, c.momentum,
                                    every_step=False)
        # ProxylessNAS: Adam without momentum for the logits
        self.arch_optimizer = torch.optim.Adam(self.net.arch_parameters(), lr=c.arch_lr,
                                               betas=(0.0, 0.999), eps=1e-8)

    def _device_wait(self, waiting, error, waited_s):
        """The device stopped answering (or came back): say so, in text and as an event."""
        limit = self.config.device_wait_s
        if waiting and waited_s == 0:
            self.events.emit("message", text="The device does not answer ({}); waiting for it, for "
                             "up to {:g} s".format(error, limit))
        elif not waiting:
            self.events.emit("message", text="The device is back after {:.0f} s".format(waited_s))
        self.events.emit("device_wait", waiting=waiting, error=error, waited_s=round(waited_s, 1),
                         limit_s=limit)

    def _lut(self):
        """The run's table: its own (resumed), else one the device has stored for this space,
        else one profiled and calibrated on the device now."""
        if self.files.exists(LUT):
            return Lut.load(self.files.path(LUT), self.space)
        source = self.measurer.source
        lut = self._stored_lut(source.device_key)
        stored = lut is not None
        if not stored:
            self.events.emit("message", text="Profiling the latency lookup table on {} ...".format(
                source.device_key))
            lut = profile_and_calibrate(source, self.space, self.measurer,
                                        self.config.calibration_archs, self.config.seed)
            self._pool_event()
        self.events.emit("message", text="{} lookup table: measured = {a:.3f} x table + {b:.3f} ms, "
                         "median error {median_abs_error:.1%} on {archs} architectures".format(
                             "Using the device's stored" if stored else "Calibrated",
                             **lut.data["calibration"]))
        self.events.emit("lut", stored=stored, lut=lut.data)
        lut.save(self.files.path(LUT))
        return lut

    def _stored_lut(self, device_key):
        """A calibrated table stored for this device and exactly this space, if one was offered."""
        if not self.files.exists(STORED_LUTS):
            return None
        for table in self.files.read_json(STORED_LUTS):
            if table.get("device_id") == device_key and table.get("calibration"):
                try:
                    return Lut(table, self.space)
                except (ValueError, KeyError, TypeError):
                    continue  # another space (classes, channels), or not a table
        return None

    def _strategy(self):
        c = self.config
        if c.strategy == "gradient":
            return GradientStrategy(self.net, self.costs, self.constraints, self.arch_optimizer,
                                    self.path_generator, c.loss_form)
        if c.strategy == "evolution":
            return EvolutionStrategy(self.net, self.path_generator)
        return ReinforceStrategy(self.net, self.metrics_of, self.constraints, self.arch_optimizer,
                                 self.path_generator, c.rl_samples, c.rl_baseline_decay)

    def metrics_of(self, arch):
        """Device-measured latency (through the cache) plus memory and parameters."""
        stats = self.measurer.measure(arch)
        return {"latency_ms": latency_ms(stats), "memory_mb": stats["memory_bytes"] / 2.0 ** 20,
                "params_m": stats["params"] / 1e6, "stats": stats}

    # --- the run ----------------------------------------------------------------------------------

    def run(self):
        try:
            return self._run()
        finally:
            if self.measurer is not None:
                self.measurer.source.close()  # a local device's measuring process ends with it

    def _run(self):
        start_time = time.time()
        self._setup()
        start_epoch, wall_before = self._restore()
        c = self.config
        self._started(c.epochs, c.warmup_epochs, start_epoch)
        for epoch in range(start_epoch, c.epochs):
            self.files.check_free_space(c.min_free_mb * 2 ** 20)
            self._epoch(epoch)
            self._checkpoint(epoch + 1, wall_before + time.time() - start_time)
        self._measure_finalists(c.epochs)
        return self._finish(wall_before + time.time() - start_time)

    def _started(self, epochs, warmup_epochs, start_epoch, **extra):
        """The settings written, with the resolved target latency; the `started` event."""
        c = self.config
        self.files.write_config(c)
        self.events.emit(
            "started", run_dir=os.path.abspath(self.files.root), dataset=c.dataset, epochs=epochs,
            warmup_epochs=warmup_epochs, strategy=c.strategy, device=c.device,
            device_id=self.measurer.source.device_key, start_epoch=start_epoch,
            constraints=[asdict(x) for x in self.constraints], config=c.to_dict(),
            space={"size": self.space.size, "blocks": [[op.name for op in sb.ops]
                                                       for sb in self.space.blocks]},
            train_size=len(self.dataset.train), val_size=len(self.dataset.val), **extra)

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
        arch_batches = self._arch_batches() \
            if phase == "search" and self.strategy.steps_architecture else None
        total_loss = total_correct = total_seen = 0.0
        arch_stats = {}
        last_emit = 0.0
        for step, (x, y) in enumerate(batches):
            self._set_lr(epoch, step, steps)
            net.train()
            loss, out = self._weight_step(x, y, epoch + step / steps)
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

    def _weight_step(self, x, y, done):
        """One step of the supernet's weights after `done` epochs: (its loss, its logits). On one
        path; in the warm-up with the sandwich rule (BigNAS), on the largest path, the smallest
        and a uniform one, the two others learning the largest's predictions (in-place
        distillation), each path's backward before the next one's forward: one path's
        activations in memory at a time."""
        c, net = self.config, self.net
        sandwich = c.sandwich and done < c.warmup_epochs
        self.weight_optimizer.zero_grad(set_to_none=True)
        out = net(x, self.largest_path if sandwich else self._weight_path(done))
        loss = F.cross_entropy(out, y, label_smoothing=c.label_smoothing)
        loss.backward()
        if sandwich:
            teacher = F.softmax(out.detach(), dim=1)
            for path in (self.smallest_path, net.sample_path(self.path_generator, uniform=True)):
                F.cross_entropy(net(x, path), teacher).backward()
        clip_gradients(self.weights, RECIPE.clip_norm, self.fast)
        self.weight_optimizer.step()
        return loss, out

    def _weight_path(self, done):
        """The path a weight step trains after `done` epochs (a fraction): the largest member in
        the warm-up's first LARGEST_FIRST, then uniform ones; from the distribution in the search."""
        warmup = self.config.warmup_epochs
        if done < LARGEST_FIRST * warmup:
            return self.largest_path
        return self.net.sample_path(self.path_generator, uniform=done < warmup)

    def _arch_batches(self):
        """Validation batches for the architecture steps, reshuffled whenever they run out."""
        c = self.config
        while True:
            for batch in data.iterate_batches(self.dataset.val, self.dataset, c.batch_size,
                                              shuffle=True, generator=self.data_generator,
                                              device=self.device):
                yield batch

    def _set_lr(self, epoch, step, steps):
        factor = lr_factor(epoch + step / steps, self.config.epochs, steps, RECIPE.warmup_epochs)
        for group in self.weight_optimizer.param_groups:
            group["lr"] = factor * self.config.lr

    def _expected_latency(self):
        with torch.no_grad():
            return float(self.costs.expected(self.net.probabilities())["latency_ms"])

    # --- samples for the Pareto front ---------------------------------------------------------------

    def _sample(self, epoch):
        """Evaluate the argmax architecture and K drawn ones (distinct) with the shared weights;
        under evolution, the best K + 1 of the epoch's generation."""
        drift = self._drift()
        if self.strategy.name == "evolution":
            paths = [("sampled", path) for path in self.strategy.generation(
                self.config.samples_per_epoch + 1, lambda path: self._fitness(path, drift),
                lambda path: self._in_band(path, drift),
                lambda: self._into_band(self._draw(drift), drift),
                lambda path: self._into_band(path, drift))]
        else:
            paths = [("argmax", self.net.argmax_path())]
            paths += [("sampled", self._draw(drift)) for _ in range(self.config.samples_per_epoch)]
        unique = []
        for kind, path in paths:
            if all(path != seen for _, seen in unique):
                unique.append((kind, path))
        paths = unique
        reference = tuple(self.space.choices(self.space.mobilenet_v2()))
        # measured at once where the device is a pool; each evaluation then reads the cache
        self.measurer.prefetch([self.net.architecture(p) for _, p in paths + [("", reference)]])
        self._pool_event()
        samples = []
        for kind, path in paths:
            sample = self._evaluate(epoch, kind, path)
            self.files.append_sample(sample)
            self.events.emit("sample", **sample)
            samples.append(sample)
        self.events.emit("reference", name="mobilenetv2",
                         **self._evaluate(epoch, "reference", reference))
        return samples

    def _pool_event(self):
        """Where the device is a pool: what each member has measured (the dashboard shows it)."""
        stats = self.measurer.source.pool_stats()
        if stats is not None:
            self.events.emit("pool", **stats)

    def _drift(self):
        """The median measured / predicted latency of the run's last DRIFT_SAMPLES samples."""
        ratios = sorted(s["latency_ms"] / s["predicted_latency_ms"]
                        for s in self.files.samples()[-DRIFT_SAMPLES:] if s["predicted_latency_ms"])
        return ratios[len(ratios) // 2] if ratios else 1.0

    def _draw(self, drift=1.0):
        """A path from the distribution; with an absolute latency target, one whose predicted
        latency (times `drift`) lies in TARGET_BAND of it (the nearest of CANDIDATES draws when
        none does)."""
        if self._absolute_target() is None:
            return self.net.sample_path(self.path_generator)
        return min(self.net.sample_paths(self.path_generator, CANDIDATES),
                   key=lambda path: self._outside_band(path, drift))

    def _into_band(self, path, drift=1.0):
        """`path` moved into TARGET_BAND of an absolute latency target by the table (times
        `drift`) where it is not (strategies.into_band); as it is where there is no such target."""
        target = self._absolute_target()
        if target is None:
            return path
        return into_band(path, self.lut.table, lambda p: drift * self.lut.predict(p),
                         [fraction * target for fraction in TARGET_BAND], self.path_generator)

    def _in_band(self, path, drift=1.0):
        """Whether `path`'s predicted latency (times `drift`) lies in TARGET_BAND of an absolute
        latency target (any path where there is none)."""
        return self._absolute_target() is None or self._outside_band(path, drift) == 0.0

    def _outside_band(self, path, drift):
        low, high = (fraction * self._absolute_target() for fraction in TARGET_BAND)
        predicted = drift * self.lut.predict(path)
        return max(0.0, low - predicted, predicted - high)

    def _absolute_target(self):
        return next((x.target for x in self.constraints
                     if x.metric == "latency_ms" and x.form == "absolute"), None)

    def _fitness(self, path, drift=1.0):
        """Evolution's score of a path: the samples' objective of its shared-weight accuracy on the
        first FITNESS_IMAGES of the validation split (batch norm recalibrated as for a sample),
        with its latency predicted by the table (times `drift`) and its memory and parameters
        computed."""
        shared = self._shared_accuracy(path, self.fitness_split)
        cost = complexity(self.net.architecture(path))
        metrics = {"latency_ms": drift * self.lut.predict(path),
                   "memory_mb": cost.memory_bytes / 2.0 ** 20, "params_m": cost.params / 1e6}
        return objective(shared, metrics, self.constraints)

    def _shared_accuracy(self, path, split):
        """`path`'s accuracy on `split` with the shared weights, batch norm recalibrated for it."""
        self._recalibrate(path)
        return accuracy(lambda x: self.net(x, path), split, self.dataset, self.device)

    def _recalibrate(self, path):
        self.net.recalibrate_batch_norm(path, self.calibration)
        self.net.eval()

    def _evaluate(self, epoch, kind, path):
        arch = self.net.architecture(path)
        val_accuracy = self._shared_accuracy(path, self.dataset.val)
        metrics = self.metrics_of(arch)
        stats = metrics.pop("stats")
        return {"epoch": epoch, "kind": kind, "arch_hash": arch.hash, "ops": arch.ops,
                "arch": arch.to_dict(), "accuracy": val_accuracy, "latency_ms": metrics["latency_ms"],
                "latency": {k: stats[k] for k in ("median_ms", "mean_ms", "std_ms", "p90_ms",
                                                   "min_ms", "max_ms", "runs")},
                "cached": stats["cached"],
                "predicted_latency_ms": self.lut.predict(path), "memory_mb": metrics["memory_mb"],
                "memory_source": stats["memory_source"], "params": stats["params"],
                "macs": stats["macs"], **self._verdict(val_accuracy, metrics)}

    def _verdict(self, val_accuracy, metrics):
        """What the pick ranks a sample by, for its accuracy and metrics (best.py)."""
        return {"objective": objective(val_accuracy, metrics, self.constraints),
                "feasible": all(x.satisfied(metrics[x.metric]) for x in self.constraints),
                "uses_budget": all(x.uses_budget(metrics[x.metric]) for x in self.constraints)}

    def _measure_finalists(self, epoch):
        """The FINALISTS measured again (see there), each as a sample of kind "final" at `epoch`
        (after the last: a resume drops it with the unfinished epochs), a copy of the
        architecture's most accurate evaluation whose latency is the median of the rounds (each
        round's in `latency["rounds_ms"]`); further batches while the pick is not one of them
        (FINAL_BATCHES)."""
        target = self._absolute_target()
        if target is None:
            return
        for batch in range(FINAL_BATCHES):
            samples = self.files.samples()
            best = best_sample(self._candidates(samples), self.config.constraint)
            finalists = self._finalists(samples, target)
            if not finalists or best["kind"] == "final":
                return
            self.events.emit("message", text="{} {} finalists again, {} rounds side by side".format(
                "The pick is not one measured in rounds yet: measuring the next" if batch
                else "Measuring the", len(finalists), FINAL_ROUNDS))
            self._measure_in_rounds(finalists, epoch)

    def _measure_in_rounds(self, finalists, epoch):
        rounds = {}
        medians = measure_interleaved(self.measurer.source,
                                      [Architecture.from_dict(s["arch"]) for s in finalists],
                                      FINAL_ROUNDS, rounds)
        for sample in finalists:
            latency, its_rounds = medians[sample["arch_hash"]], rounds[sample["arch_hash"]]
            verdict = self._verdict(sample["accuracy"], _metrics(sample, latency))
            # within T only in every round: the rounds' spread, the device's own noise, is the
            # margin (a quiet device's costs it nothing)
            verdict["feasible"] = self._verdict(sample["accuracy"],
                                                _metrics(sample, max(its_rounds)))["feasible"]
            final = dict(sample, kind="final", epoch=epoch, latency_ms=latency, cached=False,
                         latency=dict(sample["latency"], rounds_ms=its_rounds), **verdict)
            self.files.append_sample(final)
            self.events.emit("sample", **final)

    def _finalists(self, samples, target):
        """The FINALISTS most accurate architectures measured within NEAR of [0.85 T, T] (and
        within every other target) that are not measured in rounds yet: each as its most accurate
        evaluation."""
        low, high = BUDGET_FLOOR * target / (1 + NEAR), target * (1 + NEAR)
        finals = {s["arch_hash"] for s in samples if s["kind"] == "final"}
        near = [s for s in samples if s["arch_hash"] not in finals and
                low <= s["latency_ms"] <= high and
                self._verdict(s["accuracy"], _metrics(s, target))["feasible"]]  # memory too
        finalists = {}
        for sample in sorted(near, key=lambda s: -s["accuracy"]):
            finalists.setdefault(sample["arch_hash"], sample)
        return list(finalists.values())[:FINALISTS]

    # --- checkpoints, resume, the end ------------------------------------------------------------

    def _checkpoint(self, epochs_done, wall_time):
        self.files.save_checkpoint({
            "epochs_done": epochs_done, "wall_time_s": wall_time, "supernet": self.net.state_dict(),
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "strategy": self.strategy.state_dict(), "data_generator": self.data_generator.get_state(),
            "path_generator": self.path_generator.get_state(), "torch_rng": torch.get_rng_state()})

    def _restore(self):
        """Load the checkpoint if there is one; drop samples of an epoch that did not finish."""
        state = self.files.load_checkpoint(self.device)
        if state is None:
            return 0, 0.0
        self.net.load_state_dict(state["supernet"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        self.data_generator.set_state(state["data_generator"])
        self.path_generator.set_state(state["path_generator"])
        torch.set_rng_state(state["torch_rng"])
        self.files.keep_samples_before(state["epochs_done"])
        return state["epochs_done"], state["wall_time_s"]

    def _summary_extras(self):
        """What a kind of run adds to its summary (specialise.py: its parent)."""
        return {}

    def _candidates(self, samples):
        """The samples the pick is made among: every evaluation, each as its weights then were,
        except that a finalist counts only as measured at the end."""
        finals = {s["arch_hash"] for s in samples if s["kind"] == "final"}
        return [s for s in samples if s["kind"] == "final" or s["arch_hash"] not in finals]

    def _finish(self, wall_time):
        samples = self.files.samples()
        final = self.net.derive()  # derived afresh from the final logits
        best = best_sample(self._candidates(samples), self.config.constraint)
        why = explain(samples, best, len(self.dataset.val), self.config.constraint)
        if best is None:  # no search epoch ran (warm-up only): evaluate the final argmax
            best = self._evaluate(self.config.epochs - 1, "argmax", self.net.argmax_path())
        Architecture.from_dict(best["arch"]).save(self.files.path(BEST_ARCH))
        summary = {"best": best,
                   "why": why,
                   "final_argmax": {"arch_hash": final.hash, "ops": final.ops},
                   "samples": len(samples), "measurements": self.measurer.misses,
                   "cache_hits": self.measurer.hits, "wall_time_s": wall_time,
                   "best_arch_path": os.path.abspath(self.files.path(BEST_ARCH)),
                   "target_latency_ms": self.config.target_latency_ms}
        summary.update(self._summary_extras())
        self.files.write_json(SUMMARY, summary)
        self.events.emit("finished", **summary)
        return summary


def _metrics(sample, latency_ms):
    """A sample's metrics (as constraints read them) with `latency_ms` for its latency."""
    return {"latency_ms": latency_ms, "memory_mb": sample["memory_mb"],
            "params_m": sample["params"] / 1e6}
