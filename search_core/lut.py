"""The per-op latency lookup table (LUT) of a search space and its end-to-end calibration.

The table comes from a device's profile (nano_agent.measure.profile_lut); `Lut.calibrate` measures
architectures from the fastest to the slowest of the space and fits `measured = a x table + b`.
`profile_and_calibrate` is the one routine for both a search run and the dashboard's Devices page.
No torch import: the dashboard's web process profiles devices too.
"""
import json
import random
import statistics

from nano_agent.results import LUT_FORMAT, LUT_VERSION, latency_ms

from .rundir import write_json

CALIBRATION_ARCHS = 10
CALIBRATION_ROUNDS = 3


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
        if isinstance(corrected, (int, float)):
            return max(corrected, 0.1 * raw)
        return corrected.maximum(0.1 * raw)  # a tensor: the search's differentiable expectation

    def predict(self, path):
        """Predicted end-to-end latency (ms) of the architecture with op indices `path`."""
        return self.correct(self.raw(path))

    def calibrate(self, space, measurer, count=CALIBRATION_ARCHS, seed=0, rounds=CALIBRATION_ROUNDS):
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
        write_json(path, self.data)


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


def profile_and_calibrate(source, space, measurer, count=CALIBRATION_ARCHS, seed=0, progress=None):
    """Profile `space` on `source`, then calibrate the table end to end through `measurer` (whose
    cache keeps the calibration measurements). Returns the calibrated Lut."""
    lut = Lut(source.profile(space, progress), space)
    lut.data["device_id"] = source.device_key  # the id its measurements are cached under
    lut.calibrate(space, measurer, count, seed)
    return lut
