"""Latency sources behind one interface, the per-op lookup table (LUT), and the measurement cache.

A source measures an architecture end to end and profiles a LUT for a search space. `local` is this
machine's CPU, measured with the routine the device agent uses (`measure.py`). Measurements are cached
per (device, architecture hash, input shape): an architecture is measured once per device.
"""
import json
import os
import platform
import random
import statistics
import threading

import torch

from .measure import LUT_FORMAT, LUT_VERSION, latency_ms, measure_architecture, profile_lut


class LatencyError(RuntimeError):
    """A device could not be reached or could not measure; the message says which and why."""


class LatencySource:
    """Interface: `device_id` names the device in caches; `measure` and `profile` do the work."""

    device_id = "abstract"

    def measure(self, arch, input_shape=None):
        """End-to-end statistics of `arch` (see measure.measure_architecture for the keys)."""
        raise NotImplementedError

    def profile(self, space, progress=None):
        """The per-op LUT of `space` as a dict (see measure.profile_lut)."""
        raise NotImplementedError

    def info(self):
        raise NotImplementedError


class LocalDevice(LatencySource):
    """This machine's CPU, with a fixed thread count (1 by default: the most repeatable figure)."""

    def __init__(self, threads=1, warmup=10, runs=30):
        self.threads, self.warmup, self.runs = threads, warmup, runs
        self.device_id = "local:{}:cpu:{}t".format(platform.node() or "host", threads)

    def measure(self, arch, input_shape=None):
        return measure_architecture(arch, input_shape, self.warmup, self.runs, "cpu", self.threads)

    def profile(self, space, progress=None):
        return profile_lut(space, self.warmup, self.runs, "cpu", self.threads, progress)

    def info(self):
        return {"device_id": self.device_id, "hostname": platform.node(),
                "platform": platform.platform(), "torch": torch.__version__,
                "cpu_count": os.cpu_count(), "threads": self.threads}


TOKEN_ENV = "NANO_AGENT_TOKEN"


def open_device(spec, threads=1, warmup=10, runs=30, token=None):
    """The latency source named by `spec`: "local" (this machine's CPU, `threads` threads), or a
    device agent as "host:port", "host" (port 8765) or "agent:host:port", authenticated with
    `token` (default: $NANO_AGENT_TOKEN). The agent measures with its own thread setting."""
    if spec == "local":
        return LocalDevice(threads, warmup, runs)
    from .device_client import AgentDevice, parse_address  # the client needs nano_agent.protocol
    host, port = parse_address(spec)
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise LatencyError("device {!r} is a device agent: give its token (--device-token or "
                           "${})".format(spec, TOKEN_ENV))
    return AgentDevice(host, port, token, warmup, runs)


class Lut:
    """A per-op latency lookup table for one search space: predicted latency = fixed + sum of ops."""

    def __init__(self, data, space):
        if not isinstance(data, dict) or data.get("format") != LUT_FORMAT:
            raise ValueError("not a latency lookup table (format {!r})".format(
                data.get("format") if isinstance(data, dict) else None))
        if data.get("version") != LUT_VERSION:
            raise ValueError("LUT version {!r} is not supported (expected {})".format(
                data.get("version"), LUT_VERSION))
        if data.get("space") != space.config():
            raise ValueError("LUT was profiled for space {} but the search uses {}".format(
                data.get("space"), space.config()))
        self.data = data
        self.fixed_ms = float(sum(data["fixed_ms"].values()))
        # table[block][op index] in the space's op order
        self.table = [[float(data["blocks"][sb.index][op.name]) for op in sb.ops]
                      for sb in space.blocks]

    def raw(self, path):
        """The table's sum for the architecture with op indices `path` (ms), uncorrected."""
        return self.fixed_ms + sum(row[i] for row, i in zip(self.table, path))

    def correct(self, raw):
        """The device's linear correction a x raw + b (floats or tensors): the table's sum of
        per-layer times misses what the whole network costs beyond them (the timing itself, the
        call overhead), and an older table of ops timed alone misses their cache effects too.
        Never below a tenth of the raw sum: a latency must stay positive for (LAT/T)^w."""
        calibration = self.data.get("calibration") or {"a": 1.0, "b": 0.0}
        corrected = calibration["a"] * raw + calibration["b"]
        if isinstance(corrected, torch.Tensor):
            return torch.maximum(corrected, 0.1 * raw)
        return max(corrected, 0.1 * raw)

    def predict(self, path):
        """Predicted end-to-end latency (ms) of the architecture with op indices `path`."""
        return self.correct(self.raw(path))

    def calibrate(self, space, measurer, count=10, seed=0, rounds=3):
        """Measure `count` architectures (`calibration_paths`) end to end through `measurer`, each
        the fastest of `rounds` rounds (`Measurer.measure_rounds`), fit measured = a x raw + b and
        keep it in the table; returns the fit and its errors on those architectures."""
        paths = calibration_paths(space, count, seed)
        results = measurer.measure_rounds([space.architecture(p) for p in paths], rounds, seed)
        fit = self.fit(paths, [latency_ms(stats) for stats in results])
        fit["rounds"] = rounds
        return fit

    def fit(self, paths, measured):
        """Fit and keep the correction from architectures (op indices) and their measured ms."""
        raw = [self.raw(path) for path in paths]
        a, b = fit_line(raw, measured)
        errors = [abs(a * r + b - m) / m for r, m in zip(raw, measured)]
        self.data["calibration"] = {"a": a, "b": b, "archs": len(paths),
                                    "median_abs_error": statistics.median(errors),
                                    "max_abs_error": max(errors)}
        return self.data["calibration"]

    @classmethod
    def load(cls, path, space):
        with open(path) as f:
            return cls(json.load(f), space)

    def save(self, path):
        _write_json(path, self.data)


def calibration_paths(space, count, seed=0):
    """`count` random architectures (op indices) from the fastest to the slowest of the space: the
    i-th skips each block that may be skipped with probability i / (count - 1) and gives the others
    a random kernel and expansion. Uniformly random architectures all cost about the same, so a
    line fitted on them alone mispredicted the mostly skipped ones a search converges to (by 20% in
    a default dashboard run)."""
    generator = random.Random(seed)
    paths = []
    for i in range(count):
        skip = i / max(1.0, count - 1.0)
        path = []
        for sb in space.blocks:
            convs = [j for j, op in enumerate(sb.ops) if not op.is_zero]
            zeros = [j for j, op in enumerate(sb.ops) if op.is_zero]
            path.append(zeros[0] if zeros and generator.random() < skip else generator.choice(convs))
        paths.append(path)
    return paths


def fit_line(x, y):
    """a, b of y = a x + b by Theil-Sen (median of the pairwise slopes, then median intercept):
    one disturbed measurement among ten must not tilt the line. A slope that is not positive
    (noise drowning the signal) falls back to the median ratio through the origin."""
    slopes = [(y[j] - y[i]) / (x[j] - x[i])
              for i in range(len(x)) for j in range(i + 1, len(x)) if x[j] != x[i]]
    a = statistics.median(slopes) if slopes else 0.0
    if a <= 0:
        return statistics.median(v / u for u, v in zip(x, y)), 0.0
    return a, statistics.median(v - a * u for u, v in zip(x, y))


class LatencyCache:
    """Measurements keyed by (device, architecture hash, input shape), appended to a JSON-lines file
    (one {"key", "stats"} object a line) so that a long search never rewrites what it stored."""

    def __init__(self, path=None):
        self.path = path
        self._lock = threading.Lock()
        self._entries = {}
        if path and os.path.exists(path):
            _end_with_newline(path)
            with open(path) as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self._entries[entry["key"]] = entry["stats"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by an interrupted run: measure again

    @staticmethod
    def key(device_id, arch_hash, input_shape):
        return "{}|{}|{}".format(device_id, arch_hash, "x".join(str(d) for d in input_shape))

    def get(self, key):
        with self._lock:
            return self._entries.get(key)

    def put(self, key, stats):
        with self._lock:
            self._entries[key] = stats
            if self.path:
                with open(self.path, "a") as f:
                    f.write(json.dumps({"key": key, "stats": stats}, sort_keys=True) + "\n")

    def __len__(self):
        return len(self._entries)

    def items(self):
        """(key, stats) of every measurement held."""
        with self._lock:
            return list(self._entries.items())


class Measurer:
    """Measures architectures on one source through the cache; counts hits for the summary."""

    def __init__(self, source, cache=None):
        self.source = source
        self.cache = cache if cache is not None else LatencyCache()
        self.hits = self.misses = 0

    def key(self, arch, input_shape=None):
        """The cache key of `arch` on this source (at its own input shape by default)."""
        return LatencyCache.key(self.source.device_id, arch.hash, input_shape or arch.input_shape)

    def measure(self, arch, input_shape=None):
        shape = tuple(input_shape or arch.input_shape)
        key = self.key(arch, shape)
        stats = self.cache.get(key)
        if stats is not None:
            self.hits += 1
            return dict(stats, cached=True)
        self.misses += 1
        stats = self.source.measure(arch, shape)
        self.cache.put(key, stats)
        return dict(stats, cached=False)

    def measure_rounds(self, archs, rounds=3, seed=0):
        """Stats of each architecture: from the cache, or else the fastest of `rounds` measurements
        taken in rounds over all of those not cached (a new order each round), then cached. A
        machine that slows down for seconds at a time (a shared host) disturbs one round, rarely
        all of them."""
        keys = [self.key(arch) for arch in archs]
        results = [self.cache.get(key) for key in keys]
        self.hits += sum(stats is not None for stats in results)
        order = [i for i, stats in enumerate(results) if stats is None]
        generator = random.Random(seed)
        for _ in range(rounds):
            for i in order:
                stats = self.source.measure(archs[i])
                if results[i] is None or latency_ms(stats) < latency_ms(results[i]):
                    results[i] = stats
            generator.shuffle(order)
        for i in order:
            self.misses += 1
            self.cache.put(keys[i], results[i])
        return results


def _write_json(path, data):
    """Write atomically, so an interrupted run never leaves half a file behind."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _end_with_newline(path):
    """Terminate a last line cut short, so the next appended entry starts on a line of its own."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")
