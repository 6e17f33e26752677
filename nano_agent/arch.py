"""The architecture JSON: the contract between the search, the device agent and the dashboard.

An architecture lists every layer explicitly (channels, stride, kernel, expansion), so the builder needs
nothing else. Objects are immutable; `to_json()` is canonical (sorted keys, no whitespace), so equal
architectures have equal text and the same `hash`.

Python 3.6 compatible: the device agent (JetPack 4.6) imports this module.
"""
import hashlib
import json
from collections import namedtuple

from . import limits
from .protocol import strict_loads

FORMAT = "edge-nas.architecture"
VERSION = 1

MBCONV = "mbconv"
ZERO = "zero"
KERNELS = (3, 5, 7)
EXPANSIONS = (1, 3, 6)  # 1 only appears in the fixed first block of MobileNetV2


class ArchitectureError(ValueError):
    """An architecture that does not follow the format; the message says where and why."""


class Block(namedtuple("Block", "op in_channels out_channels stride kernel expand searchable")):
    """One inverted-bottleneck block, or `zero` (the block is skipped: its input passes through)."""

    __slots__ = ()

    @property
    def name(self):
        return ZERO if self.op == ZERO else "k{}_e{}".format(self.kernel, self.expand)

    @property
    def residual(self):
        return self.stride == 1 and self.in_channels == self.out_channels

    def to_dict(self):
        d = {"op": self.op, "in_channels": self.in_channels, "out_channels": self.out_channels,
             "stride": self.stride, "searchable": self.searchable}
        if self.op == MBCONV:
            d["kernel"] = self.kernel
            d["expand"] = self.expand
        return d


def mbconv(in_channels, out_channels, stride, kernel, expand, searchable=True):
    return Block(MBCONV, in_channels, out_channels, stride, kernel, expand, searchable)


def zero(channels, searchable=True):
    return Block(ZERO, channels, channels, 1, None, None, searchable)


_ArchFields = namedtuple(
    "_ArchFields", "in_channels resolution num_classes stem_channels blocks head_channels dropout")


class Architecture(_ArchFields):
    """stem conv 3x3/2 -> blocks -> 1x1 conv (head) -> global pool -> dropout -> linear."""

    __slots__ = ()

    def __new__(cls, in_channels, resolution, num_classes, stem_channels, blocks, head_channels,
                dropout=0.2):
        arch = super(Architecture, cls).__new__(
            cls, in_channels, resolution, num_classes, stem_channels, tuple(blocks), head_channels,
            float(dropout))
        validate(arch)
        return arch

    @property
    def ops(self):
        """The op name of every searchable block, in order (`k5_e6`, `zero`, ...)."""
        return [b.name for b in self.blocks if b.searchable]

    @property
    def input_shape(self):
        return (1, self.in_channels, self.resolution, self.resolution)

    def to_dict(self):
        return {
            "format": FORMAT,
            "version": VERSION,
            "input": {"channels": self.in_channels, "resolution": self.resolution},
            "num_classes": self.num_classes,
            "stem": {"out_channels": self.stem_channels, "kernel": 3, "stride": 2},
            "blocks": [b.to_dict() for b in self.blocks],
            "head": {"out_channels": self.head_channels},
            "classifier": {"dropout": self.dropout},
        }

    def to_json(self, indent=None):
        if indent is None:
            return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @property
    def hash(self):
        """sha256 of the canonical JSON: stable across processes, machines and Python versions."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    @property
    def short_hash(self):
        return self.hash[:12]

    @classmethod
    def from_dict(cls, d):
        return _parse(d)

    @classmethod
    def from_json(cls, text):
        try:
            d = strict_loads(text)
        except RecursionError:
            raise ArchitectureError("architecture JSON is nested too deeply")
        except ValueError as e:
            raise ArchitectureError("architecture is not valid JSON: {}".format(e))
        return _parse(d)

    @classmethod
    def load(cls, path):
        try:
            with open(path, "r", encoding="utf-8") as f:
                text = f.read()
        except (IOError, OSError, UnicodeDecodeError) as e:
            raise ArchitectureError("cannot read architecture file {}: {}".format(path, e))
        return cls.from_json(text)

    def save(self, path):
        with open(path, "w") as f:
            f.write(self.to_json(indent=2) + "\n")


def as_architecture(arch):
    """Accept an Architecture, its dict or its JSON text."""
    if isinstance(arch, Architecture):
        return arch
    if isinstance(arch, dict):
        return Architecture.from_dict(arch)
    if isinstance(arch, str):
        return Architecture.from_json(arch)
    raise ArchitectureError("expected an architecture, got {}".format(type(arch).__name__))


# ---------------------------------------------------------------------------------------------
# parsing and validation


def is_int(v):
    """A JSON integer (bool is an int subclass in Python, not in JSON)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _check_int(value, where, limit):
    """The bounds (limits.py) keep a request from a client, or a typo, from building an absurd
    network."""
    if not is_int(value):
        raise ArchitectureError("{} must be an integer, got {!r}".format(where, value))
    if value not in limit:
        raise ArchitectureError("{} = {} is out of bounds {}".format(where, value, limit.describe()))
    return value


def _check_keys(d, where, required, optional=()):
    if not isinstance(d, dict):
        raise ArchitectureError("{} must be a JSON object, got {!r}".format(where, d))
    missing = [k for k in required if k not in d]
    if missing:
        raise ArchitectureError("{} is missing {}".format(where, ", ".join(repr(k) for k in missing)))
    unknown = sorted(k for k in d if k not in required and k not in optional)
    if unknown:
        raise ArchitectureError("{} has unknown key(s) {}".format(
            where, ", ".join(repr(k) for k in unknown)))


def _parse_block(d, where):
    _check_keys(d, where, ("op", "in_channels", "out_channels", "stride", "searchable"),
                ("kernel", "expand"))
    if d["op"] not in (MBCONV, ZERO):
        raise ArchitectureError("{}: unknown op {!r} (known: {!r}, {!r})".format(
            where, d["op"], MBCONV, ZERO))
    if not isinstance(d["searchable"], bool):
        raise ArchitectureError("{}.searchable must be true or false".format(where))
    if d["op"] == ZERO and ("kernel" in d or "expand" in d):
        raise ArchitectureError("{}: a zero block has no kernel or expand".format(where))
    if d["op"] == MBCONV and ("kernel" not in d or "expand" not in d):
        raise ArchitectureError("{}: an mbconv block needs kernel and expand".format(where))
    return Block(d["op"], d["in_channels"], d["out_channels"], d["stride"], d.get("kernel"),
                 d.get("expand"), d["searchable"])


def _parse(d):
    _check_keys(d, "architecture",
                ("format", "version", "input", "num_classes", "stem", "blocks", "head", "classifier"))
    if d["format"] != FORMAT:
        raise ArchitectureError("not an architecture file: format is {!r}, expected {!r}".format(
            d["format"], FORMAT))
    if not is_int(d["version"]) or d["version"] != VERSION:
        raise ArchitectureError("architecture format version {!r} is not supported (this builder "
                                "reads version {})".format(d["version"], VERSION))
    _check_keys(d["input"], "input", ("channels", "resolution"))
    _check_keys(d["stem"], "stem", ("out_channels", "kernel", "stride"))
    if d["stem"]["kernel"] != 3 or d["stem"]["stride"] != 2:
        raise ArchitectureError("stem must be a 3x3 convolution with stride 2")
    _check_keys(d["head"], "head", ("out_channels",))
    _check_keys(d["classifier"], "classifier", ("dropout",))
    if not isinstance(d["blocks"], list):
        raise ArchitectureError("blocks must be a list")
    if len(d["blocks"]) > limits.BLOCKS.high:
        raise ArchitectureError("{} blocks is more than the maximum of {}".format(
            len(d["blocks"]), limits.BLOCKS.high))
    blocks = [_parse_block(b, "blocks[{}]".format(i)) for i, b in enumerate(d["blocks"])]
    dropout = d["classifier"]["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ArchitectureError("classifier.dropout must be a number in [0, 1), got {!r}".format(
            dropout))
    return Architecture(d["input"]["channels"], d["input"]["resolution"], d["num_classes"],
                        d["stem"]["out_channels"], blocks, d["head"]["out_channels"], dropout)


def validate(arch):
    """Raise ArchitectureError unless every size is in bounds and every block fits its neighbours."""
    _check_int(arch.in_channels, "input.channels", limits.IN_CHANNELS)
    _check_int(arch.resolution, "input.resolution", limits.RESOLUTION)
    _check_int(arch.num_classes, "num_classes", limits.NUM_CLASSES)
    _check_int(arch.stem_channels, "stem.out_channels", limits.CHANNELS)
    _check_int(arch.head_channels, "head.out_channels", limits.CHANNELS)
    if not 0 <= arch.dropout < 1:
        raise ArchitectureError("classifier.dropout must be in [0, 1)")
    if len(arch.blocks) > limits.BLOCKS.high:
        raise ArchitectureError("more than {} blocks".format(limits.BLOCKS.high))
    channels = arch.stem_channels
    for i, b in enumerate(arch.blocks):
        where = "blocks[{}]".format(i)
        if not isinstance(b, Block):
            raise ArchitectureError("{} is not a Block".format(where))
        _check_int(b.in_channels, where + ".in_channels", limits.CHANNELS)
        _check_int(b.out_channels, where + ".out_channels", limits.CHANNELS)
        if b.in_channels != channels:
            raise ArchitectureError("{}: channel mismatch, in_channels is {} but the previous layer "
                                    "gives {}".format(where, b.in_channels, channels))
        if not is_int(b.stride) or b.stride not in (1, 2):
            raise ArchitectureError("{}: stride must be 1 or 2, got {!r}".format(where, b.stride))
        if b.op == ZERO:
            if b.stride != 1 or b.in_channels != b.out_channels:
                raise ArchitectureError("{}: a zero block must keep the shape (stride 1 and "
                                        "in_channels == out_channels)".format(where))
        elif b.op == MBCONV:
            if not is_int(b.kernel) or b.kernel not in KERNELS:
                raise ArchitectureError("{}: kernel must be one of {}, got {!r}".format(
                    where, KERNELS, b.kernel))
            if not is_int(b.expand) or b.expand not in EXPANSIONS:
                raise ArchitectureError("{}: expand must be one of {}, got {!r}".format(
                    where, EXPANSIONS, b.expand))
            _check_int(b.in_channels * b.expand, where + " expanded channels", limits.CHANNELS)
        else:
            raise ArchitectureError("{}: unknown op {!r}".format(where, b.op))
        channels = b.out_channels
