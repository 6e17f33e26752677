"""The settings of a search run: names, types, defaults, limits and their validation (the recipe
that retrains an architecture is search_core/recipe.py).

No torch import: the dashboard validates a new run's settings in its web process, and sends the
defaults, choices and limits to the browser's form (/api/defaults). Whatever needs the machine (is
CUDA there?) is checked by the worker when it starts.
"""
import math
import typing
from dataclasses import asdict, dataclass
from typing import Optional

from nano_agent import limits
from nano_agent.limits import Limit
from nano_agent.protocol import BACKENDS

DATASETS = ("digits", "shapes", "cifar10", "imagefolder")
BUNDLED_DATASETS = ("digits", "shapes")  # nothing to download or point at
STRATEGIES = ("gradient", "reinforce", "evolution")
LOSS_FORMS = ("mul", "add")
CONSTRAINT_FORMS = ("absolute", "soft", "hard")  # objectives.py says what each does
TRAIN_DEVICES = ("cpu", "cuda")
# default w per strategy and constraint form: MnasNet's soft -0.07 for the reward; the loss needs a
# stronger pull, since the cross-entropy's gradient through the binary gates dwarfs that of a 0.07
# exponent; the absolute form's w is what a miss of the whole target costs (accuracy for the
# reward, cross-entropy for the loss); evolution's w only ranks samples, by the reward's objective
DEFAULT_WEIGHTS = {"gradient": {"absolute": -0.5, "soft": -0.5, "hard": -0.5},
                   "reinforce": {"absolute": -0.2, "soft": -0.07, "hard": -0.07},
                   "evolution": {"absolute": -0.2, "soft": -0.07, "hard": -0.07}}


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
    # the seed that draws the train / validation / test split (None: seed); fixed, it lets searches
    # with different seeds be compared on the same images
    split_seed: Optional[int] = None
    warmup_epochs: int = 20
    epochs: int = 45  # all epochs, warm-up included
    batch_size: int = 64
    lr: float = 0.02  # with train's recipe: 0.05 left the supernet at chance on shapes
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    strategy: str = "gradient"
    loss_form: str = "mul"
    arch_lr: float = 0.01
    target_latency_ms: Optional[float] = None  # None: target_latency_fraction x uniform's expectation
    # the automatic target: this share of the expected latency of a uniformly random architecture
    target_latency_fraction: float = 0.8
    latency_weight: Optional[float] = None  # None: DEFAULT_WEIGHTS[strategy][constraint]
    constraint: str = "absolute"
    target_memory_mb: Optional[float] = None
    target_params_m: Optional[float] = None
    samples_per_epoch: int = 4
    calibration_archs: int = 10  # measured end to end to correct the lookup table
    calibration_batches: int = 8
    rl_samples: int = 2
    rl_baseline_decay: float = 0.9
    shared_weights: bool = True
    # the warm-up's weight steps by the sandwich rule (BigNAS): the largest path, the smallest and
    # a uniform one each step, the two others distilled from the largest's predictions (3 paths a
    # step: about 3x the warm-up's time); off: one path a step, the largest first (search.py)
    sandwich: bool = False
    # train on the fast path on a CPU (search_core/fastpath.py: the same arithmetic, a step 2.4x
    # (child) to 2.8x (supernet) faster here: bench/training_speed.py; a GPU trains eager, which is
    # faster there); off: the eager reference
    fast_path: bool = True
    device: str = "local"
    # how the device runs the network: PyTorch, or exported to ONNX in onnxruntime (as deployed);
    # the lookup table, its calibration and the cached measurements are the backend's own
    backend: str = "pytorch"
    # the name of the pool when `device` lists several identical agents ("host:port,host:port"):
    # their measuring identity is group:<name> (None: the list itself)
    device_group: Optional[str] = None
    measure_warmup: int = 5
    measure_runs: int = 20
    measure_threads: int = 1
    # how long the search waits for a device that stopped answering before it fails (resumable);
    # a Jetson Nano reboots in about a minute
    device_wait_s: float = 600.0
    # the search stops cleanly (resumable) when its disk has less free space than this
    min_free_mb: float = 100.0
    threads: Optional[int] = None  # None: all cores
    train_device: str = "cpu"
    limit: Optional[int] = None  # at most this many images per split (quick tests)

    def validate(self):
        """self, or ConfigError naming the first setting that is wrong."""
        _raise_first(setting_errors(asdict(self)))
        return self

    @property
    def weight(self):
        if self.latency_weight is None:
            return DEFAULT_WEIGHTS[self.strategy][self.constraint]
        return self.latency_weight

    def constraints(self):
        from .objectives import Constraint  # objectives needs torch; the settings do not
        targets = (("latency_ms", self.target_latency_ms), ("memory_mb", self.target_memory_mb),
                   ("params_m", self.target_params_m))
        return [Constraint(metric, target, self.weight, self.constraint)
                for metric, target in targets if target is not None]

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ConfigError("settings must be a JSON object")
        if "hard_constraint" in d:  # the settings of runs from before the constraint forms
            d = dict(d)
            hard = d.pop("hard_constraint")
            d.setdefault("constraint", "hard" if hard is True else "soft")
        unknown = sorted(set(d) - set(TYPES))
        if unknown:
            raise ConfigError("unknown setting(s): " + ", ".join(unknown), unknown[0])
        _raise_first(setting_errors(d))
        return cls(**d)


# (type, optional) of every setting, from the dataclass's own annotations
TYPES = {}
for _name, _hint in typing.get_type_hints(SearchConfig).items():
    _args = [a for a in typing.get_args(_hint) if a is not type(None)]
    TYPES[_name] = (_args[0], True) if typing.get_origin(_hint) is typing.Union else (_hint, False)

CHOICES = {"dataset": DATASETS, "strategy": STRATEGIES, "loss_form": LOSS_FORMS,
           "constraint": CONSTRAINT_FORMS, "train_device": TRAIN_DEVICES, "backend": BACKENDS}
POSITIVE = 1e-9  # the least a setting that must be positive may be
LIMITS = {
    "resolution": limits.RESOLUTION, "width_mult": limits.WIDTH_MULT,
    "seed": Limit(0, 2 ** 31 - 1), "split_seed": Limit(0, 2 ** 31 - 1), "warmup_epochs": Limit(0, 10000), "epochs": Limit(1, 10000),
    "batch_size": Limit(1, 4096), "lr": Limit(POSITIVE, 10.0), "momentum": Limit(0.0, 0.999),
    "weight_decay": Limit(0.0, 1.0), "label_smoothing": Limit(0.0, 0.99),
    "arch_lr": Limit(POSITIVE, 10.0), "target_latency_ms": Limit(POSITIVE, 1e6),
    "target_latency_fraction": Limit(0.05, 2.0),
    "latency_weight": Limit(-10.0, -POSITIVE), "target_memory_mb": Limit(POSITIVE, 1e6),
    "target_params_m": Limit(POSITIVE, 1e6), "samples_per_epoch": Limit(0, 1000),
    "calibration_archs": Limit(2, 1000), "calibration_batches": Limit(1, 1000),
    "rl_samples": Limit(1, 100), "rl_baseline_decay": Limit(0.0, 0.999),
    "measure_warmup": limits.WARMUP_RUNS, "measure_runs": limits.TIMED_RUNS,
    "measure_threads": limits.THREADS, "device_wait_s": Limit(0.0, 86400.0),
    "min_free_mb": Limit(0.0, 1e9),
    "threads": limits.THREADS, "limit": Limit(1, 10 ** 9),
}
TEXT_LIMIT = 4096  # characters of a string setting


def type_error(name, value):
    """What is wrong with the JSON type of `value` for setting `name`, or None."""
    kind, optional = TYPES[name]
    if value is None:
        return None if optional else "must not be null"
    if kind is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else \
            "must be an integer"
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if kind is str:
        if not isinstance(value, str):
            return "must be a string"
        if len(value) > TEXT_LIMIT:
            return "at most {} characters".format(TEXT_LIMIT)
        return None if is_text(value) else "must be text without control characters"
    raise TypeError("setting {} has a type this check does not know: {}".format(name, kind))


def is_text(value):
    """Printable UTF-8 text: no control characters, no lone surrogates (which no database or file
    name can hold)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 32 or ord(c) == 127 for c in value)


def value_error(name, value):
    """What is wrong with a well-typed `value` for setting `name` on its own, or None."""
    if value is None:
        return None
    if name in CHOICES and value not in CHOICES[name]:
        return "must be one of " + ", ".join(CHOICES[name])
    limit = LIMITS.get(name)
    if limit is not None and value not in limit:
        return "must be " + _describe(limit)
    return None


def setting_errors(settings):
    """{setting: message} for every unknown, mistyped or out-of-range setting of a dict (settings
    left out take their defaults), then the rules between settings; empty when they are valid."""
    errors = {}
    for name, value in settings.items():
        if name not in TYPES:
            errors[name] = "unknown setting"
            continue
        message = type_error(name, value) or value_error(name, value)
        if message:
            errors[name] = message
    full = dict(asdict(SearchConfig()), **settings)  # the defaults for what is left out
    if not errors and full["warmup_epochs"] > full["epochs"]:
        if "warmup_epochs" in settings:
            errors["warmup_epochs"] = "must be at most epochs (epochs counts the warm-up too)"
        else:
            errors["epochs"] = "must be at least warmup_epochs ({}), which it counts too".format(
                full["warmup_epochs"])
    return errors


def _raise_first(errors):
    for field, message in errors.items():
        raise ConfigError("{} {}".format(field, message), field)


def _describe(limit):
    """The range of a limit in words; POSITIVE stands for an exclusive 0."""
    if limit.low == POSITIVE:
        return "positive (at most {:g})".format(limit.high)
    if limit.high == -POSITIVE:
        return "negative (at least {:g})".format(limit.low)
    return "in " + limit.describe()


def limits_dict():
    """{setting: {"min", "max"}} for the dashboard's form (a bound of POSITIVE is exclusive 0)."""
    return dict((name, {"min": limit.low, "max": limit.high}) for name, limit in LIMITS.items())
