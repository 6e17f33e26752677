"""The settings of a search run, each declared once (`setting`): its type, default, bounds, help,
flag and place in the dashboard's form, from which the CLI's flags (cli.py), the dashboard's form
and /api/defaults, and the checks here are all made (the recipe that retrains an architecture is
search_core/recipe.py).

No torch import: the dashboard validates a new run's settings in its web process, and sends the
defaults, choices and limits to the browser's form (/api/defaults). Whatever needs the machine (is
CUDA there?) is checked by the worker when it starts.
"""
import math
import typing
from dataclasses import asdict, dataclass, field, fields
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


POSITIVE = 1e-9  # the least a setting that must be positive may be
SEED = Limit(0, 2 ** 31 - 1)
# the dashboard form's sections, in order (a setting's `form`; None: not in the form)
FORM_SECTIONS = (("run", "Run"), ("data", "Data"), ("targets", "Targets"), ("search", "Search"),
                 ("advanced", "Advanced"))


def setting(default, help="", limit=None, choices=None, flag=None, form=None, label=None,
            placeholder=None, labels=None):
    """A setting, declared once for every interface: its default and bounds (a Limit, or the
    values it may take) for the checks; the help and the flag (default --name-with-dashes; for a
    boolean, the flag that turns the default over) for the CLI; the form's section, label,
    placeholder and the labels of its choices for the dashboard."""
    return field(default=default, metadata={
        "help": help, "limit": limit, "choices": choices, "flag": flag, "form": form,
        "label": label, "placeholder": placeholder, "labels": labels})


@dataclass
class SearchConfig:
    # what to search on
    dataset: str = setting(
        "digits", "the dataset: " + ", ".join(
            n + (" (bundled)" if n in BUNDLED_DATASETS else "") for n in DATASETS),
        choices=DATASETS, form="data", label="Dataset",
        labels={"digits": "digits (bundled, 8x8 digits)",
                "shapes": "shapes (bundled, generated figures)",
                "cifar10": "CIFAR-10 (needs a data directory)",
                "imagefolder": "Image folder (needs a data directory)"})
    data_dir: Optional[str] = setting(
        None, "the dataset's directory (cifar10: its python-format batches, data_batch_1 ...; "
              "imagefolder: one sub-directory per class); the dashboard's must lie under its "
              "dataset roots", form="data", label="Data directory",
        placeholder="cifar-10-batches-py")
    split_seed: Optional[int] = setting(
        None, "the seed that draws the train / validation / test split (default: --seed); fix it "
              "to compare searches with different seeds on the same images", SEED)
    limit: Optional[int] = setting(None, "at most this many images per split (quick runs)",
                                   Limit(1, 10 ** 9))
    # the targets
    target_latency_ms: Optional[float] = setting(
        None, "the latency target T; unset: a share (target_latency_fraction, 0.8 by default) of "
              "the expected latency of a uniformly random architecture, from the lookup table",
        Limit(POSITIVE, 1e6),
        form="targets", label="Target latency (ms)", placeholder="automatic")
    target_memory_mb: Optional[float] = setting(
        None, "inference memory target (MiB: weights and peak activations)", Limit(POSITIVE, 1e6),
        form="targets", label="Target memory (MB)", placeholder="none")
    target_params_m: Optional[float] = setting(None, "parameter count target (millions)",
                                               Limit(POSITIVE, 1e6))
    target_latency_fraction: float = setting(
        0.8, "the automatic T: this share of the expected latency of a uniformly random "
             "architecture", Limit(0.05, 2.0))
    # the search
    strategy: str = setting(
        "gradient", "gradient: ProxylessNAS binary gates; reinforce: MnasNet's reward; "
                    "evolution: SPOS, a population evolved on the shared weights",
        choices=STRATEGIES, form="search", label="Strategy")
    epochs: int = setting(45, "all epochs, warm-up included", Limit(1, 10000), form="search",
                          label="Epochs")
    warmup_epochs: int = setting(
        20, "epochs that train the weights only: the largest member for the first quarter, then "
            "uniformly sampled paths", Limit(0, 10000), form="search", label="Warm-up epochs")
    samples_per_epoch: int = setting(
        4, "architectures drawn and measured after each search epoch, besides the argmax",
        Limit(0, 1000), form="search", label="Samples per epoch")
    seed: int = setting(0, "", SEED, form="search", label="Seed")
    # how the supernet trains
    batch_size: int = setting(64, "", Limit(1, 4096), form="advanced", label="Batch size")
    # with train's recipe: 0.05 left the supernet at chance on shapes
    lr: float = setting(0.02, "weight learning rate", Limit(POSITIVE, 10.0), form="advanced",
                        label="Learning rate (weights)")
    arch_lr: float = setting(0.01, "architecture learning rate", Limit(POSITIVE, 10.0),
                             form="advanced", label="Learning rate (architecture)")
    width_mult: float = setting(0.5, "width multiplier", limits.WIDTH_MULT, flag="--width",
                                form="advanced", label="Width multiplier")
    resolution: int = setting(32, "input resolution (px)", limits.RESOLUTION, form="advanced",
                              label="Input resolution (px)")
    latency_weight: Optional[float] = setting(
        None, "w of the constraints, negative (default per strategy and form: {})".format(
            "; ".join("{} {}".format(strategy, ", ".join(
                "{} {:g}".format(form, w) for form, w in weights.items()))
                for strategy, weights in DEFAULT_WEIGHTS.items())),
        Limit(-10.0, -POSITIVE), form="advanced", label="Latency weight w",
        placeholder="strategy default")
    constraint: str = setting(
        "absolute", "how the targets steer the search: absolute (ACC + w |LAT/T - 1|: toward "
                    "using the budget, TuNAS), soft (MnasNet's ACC x (LAT/T)^w: faster is always "
                    "better) or hard (no reward below T: T is only a ceiling). The pick is the most "
                    "accurate sample within the targets, among those within [0.85 T, T] where any "
                    "is", choices=CONSTRAINT_FORMS, form="advanced", label="Constraint form",
        labels={"absolute": "absolute: use the budget", "soft": "soft: faster is better",
                "hard": "hard: T as a ceiling"})
    loss_form: str = setting(
        "mul", "gradient strategy, soft and hard constraints: CE x (LAT/T)^-w (mul) or "
               "CE + -w x LAT/T (add)", choices=LOSS_FORMS)
    momentum: float = setting(0.9, "SGD momentum of the weights", Limit(0.0, 0.999))
    weight_decay: float = setting(4e-5, "weight decay", Limit(0.0, 1.0))
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy",
                                     Limit(0.0, 0.99))
    shared_weights: bool = setting(
        True, "give every op its own weights (ProxylessNAS) instead of sharing them",
        flag="--independent-weights")
    # the warm-up's weight steps by the sandwich rule (BigNAS): the largest path, the smallest and
    # a uniform one each step, the two others distilled from the largest's predictions (3 paths a
    # step: about 3x the warm-up's time); off: one path a step, the largest first (search.py)
    sandwich: bool = setting(
        False, "warm up by the sandwich rule: the largest, the smallest and a random path each "
               "step, distilled from the largest (BigNAS; about 3x the warm-up)")
    # train on the fast path on a CPU (search_core/fastpath.py: the same arithmetic, a step 2.4x
    # (child) to 2.8x (supernet) faster here: bench/training_speed.py; a GPU trains eager, which is
    # faster there); off: the eager reference
    fast_path: bool = setting(
        True, "train with the eager reference instead of the fast path (the same arithmetic, "
              "several times slower on a CPU; a GPU always trains eager)", flag="--no-fast-path")
    calibration_batches: int = setting(
        8, "batches that recalibrate batch norm before a sample's validation", Limit(1, 1000))
    rl_samples: int = setting(2, "reinforce: architectures sampled per step", Limit(1, 100))
    rl_baseline_decay: float = setting(0.9, "reinforce: the reward baseline's moving-average "
                                            "decay", Limit(0.0, 0.999))
    threads: Optional[int] = setting(None, "torch threads for training (default: all cores)",
                                     limits.THREADS)
    train_device: str = setting("cpu", "", choices=TRAIN_DEVICES)
    # where and how latency is measured
    device: str = setting(
        "local", "where latency is measured: local, a device agent's host:port, or a pool of "
                 "identical agents as host:port,host:port,...")
    # how the device runs the network: PyTorch, or exported to ONNX in onnxruntime (as deployed);
    # the lookup table, its calibration and the cached measurements are the backend's own
    backend: str = setting(
        "pytorch", "how the device runs each network: pytorch, or onnxruntime (exported to ONNX, "
                   "as deployed)", choices=BACKENDS, form="run", label="Runtime",
        labels={"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime"})
    # the name of the pool when `device` lists several identical agents ("host:port,host:port"):
    # their measuring identity is group:<name> (None: the list itself)
    device_group: Optional[str] = setting(
        None, "the pool's name: its measurements and lookup table are kept as group:<name> "
              "(default: the address list)")
    calibration_archs: int = setting(
        10, "architectures measured end to end to calibrate the lookup table", Limit(2, 1000))
    measure_warmup: int = setting(5, "untimed runs before a measurement", limits.WARMUP_RUNS)
    measure_runs: int = setting(20, "timed runs of a measurement", limits.TIMED_RUNS)
    measure_threads: int = setting(1, "torch threads of a local measurement", limits.THREADS)
    # a Jetson Nano reboots in about a minute
    device_wait_s: float = setting(
        600.0, "seconds to wait for a device that stops answering (a reboot, lost Wi-Fi) before "
               "the search fails; it stays resumable", Limit(0.0, 86400.0), form="advanced",
        label="Wait for a lost device (s)")
    min_free_mb: float = setting(
        100.0, "stop cleanly (resumable) when the run directory's disk has less free space than "
               "this", Limit(0.0, 1e9))

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

# the settings of a search that a retraining of one of its architectures takes over (with its seed,
# for the split: `train --config`)
TRAIN_SETTINGS = ("dataset", "data_dir", "split_seed", "threads", "train_device", "fast_path",
                  "limit")
# the bounds of every setting, from its declaration: the values it may take, or its range
CHOICES = {f.name: f.metadata["choices"] for f in fields(SearchConfig) if f.metadata["choices"]}
LIMITS = {f.name: f.metadata["limit"] for f in fields(SearchConfig) if f.metadata["limit"]}
# a specialisation's evolutionary search (specialise.py): its generations, each measuring the
# run's samples per epoch + 1 paths on the device. From 8 shapes parents (4 gradient, 4
# evolution; each setting twice), 20 generations picked +0.78 [+0.10, +1.46] points better than
# 10 as the parent's supernet scores them on 10,000 held-out images, in 1.43x the time (0.094 of
# a new search's; bench/specialise_generations.py)
GENERATIONS, GENERATIONS_LIMIT = 20, Limit(1, 1000)
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
        return "must be " + describe_limit(limit)
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
    if not errors and full["dataset"] not in BUNDLED_DATASETS and full["data_dir"] is None:
        if "data_dir" in settings:
            errors["data_dir"] = "a data directory is needed for " + full["dataset"]
        else:
            errors["dataset"] = "{} needs a data directory (data_dir)".format(full["dataset"])
    if not errors and full["warmup_epochs"] > full["epochs"]:
        if "warmup_epochs" in settings:
            errors["warmup_epochs"] = "must be at most epochs (epochs counts the warm-up too)"
        else:
            errors["epochs"] = "must be at least warmup_epochs ({}), which it counts too".format(
                full["warmup_epochs"])
    return errors


def _raise_first(errors):
    for name, message in errors.items():
        raise ConfigError("{} {}".format(name, message), name)


def describe_limit(limit):
    """The range of a limit in words; POSITIVE stands for an exclusive 0."""
    if limit.low == POSITIVE:
        return "positive (at most {:g})".format(limit.high)
    if limit.high == -POSITIVE:
        return "negative (at least {:g})".format(limit.low)
    return "in " + limit.describe()


def describe_settings():
    """{setting: what an interface needs to show and check it}, from the declarations, in their
    order: type ("int", "float", "str" or "bool"), nullable, default, min and max (from LIMITS) or
    choices (from CHOICES, with their labels), help, and the form's section, label and placeholder
    (section None: not in the form)."""
    described = {}
    for f in fields(SearchConfig):
        kind, nullable = TYPES[f.name]
        meta = f.metadata
        d = {"type": kind.__name__, "nullable": nullable, "default": f.default,
             "help": meta["help"], "section": meta["form"], "label": meta["label"] or f.name,
             "placeholder": meta["placeholder"]}
        if f.name in LIMITS:
            limit = LIMITS[f.name]
            d.update(min=limit.low, max=limit.high, describe=describe_limit(limit))
        if f.name in CHOICES:
            d.update(choices=list(CHOICES[f.name]), labels=dict(
                (c, (meta["labels"] or {}).get(c, c)) for c in CHOICES[f.name]))
        described[f.name] = d
    return described


def form_sections():
    """[(section title, [(setting, its description)...])...]: the dashboard form's layout."""
    described = describe_settings()
    return [(title, [(name, d) for name, d in described.items() if d["section"] == section])
            for section, title in FORM_SECTIONS]
