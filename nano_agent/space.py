"""The MobileNetV2-based search space: which blocks are searched and which ops each may take.

Layout (channels before the width multiplier): stem 3x3/2 conv (32) -> fixed k3/e1 block (16) ->
20 searchable blocks in five stages (24, 32, 64, 96, 160; four blocks each; the first block of a stage
has the stage's stride) -> fixed k3/e6 block (320) -> 1x1 conv (1280) -> pool -> classifier.
Each searchable block takes kernel {3, 5, 7} x expansion {3, 6}, or `zero` (skipped) where its
stride is 1 and its channels do not change, i.e. everywhere but the first block of a stage.

Python 3.6 compatible: the device agent profiles every candidate op of this space.
"""
from collections import namedtuple

from . import limits
from .arch import ZERO, Architecture, mbconv, zero

KERNELS = (3, 5, 7)
EXPANSIONS = (3, 6)

STEM_CHANNELS = 32
FIRST_BLOCK_CHANNELS = 16
# (channels, blocks, stride of the first block)
STAGES = ((24, 4, 2), (32, 4, 2), (64, 4, 2), (96, 4, 1), (160, 4, 2))
LAST_BLOCK_CHANNELS = 320
HEAD_CHANNELS = 1280


class Op(namedtuple("Op", "name kernel expand")):
    __slots__ = ()

    @property
    def is_zero(self):
        return self.name == ZERO


MBCONV_OPS = tuple(Op("k{}_e{}".format(k, e), k, e) for k in KERNELS for e in EXPANSIONS)
ZERO_OP = Op(ZERO, None, None)
ALL_OPS = MBCONV_OPS + (ZERO_OP,)


def make_divisible(value, divisor=8):
    """torchvision's channel rounding: nearest multiple of `divisor`, never below 90% of value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


SearchBlock = namedtuple(
    "SearchBlock", "index stage position in_channels out_channels stride ops resolution")
SearchBlock.__doc__ = "A searchable block: its shape, its candidate ops and its input resolution."


class SearchSpace(object):
    """The space for one setting of width multiplier, input resolution, input channels and classes."""

    def __init__(self, width_mult=1.0, resolution=224, num_classes=1000, in_channels=3, dropout=0.2):
        if width_mult not in limits.WIDTH_MULT:
            raise ValueError("width multiplier must be in {}, got {}".format(
                limits.WIDTH_MULT.describe(), width_mult))
        self.width_mult = float(width_mult)
        self.resolution = resolution
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.dropout = dropout
        self.stem_channels = make_divisible(STEM_CHANNELS * width_mult)
        self.first_block_channels = make_divisible(FIRST_BLOCK_CHANNELS * width_mult)
        self.last_block_channels = make_divisible(LAST_BLOCK_CHANNELS * width_mult)
        self.head_channels = make_divisible(HEAD_CHANNELS * max(1.0, width_mult))
        self.blocks = self._search_blocks()
        self.last_block_resolution = self.blocks[-1].resolution // self.blocks[-1].stride

    def _search_blocks(self):
        blocks = []
        channels = self.first_block_channels
        size = _conv_out(self.resolution, 2)  # after the stem; the first block keeps it
        for stage, (stage_channels, count, stage_stride) in enumerate(STAGES):
            out_channels = make_divisible(stage_channels * self.width_mult)
            for i in range(count):
                stride = stage_stride if i == 0 else 1
                can_skip = stride == 1 and channels == out_channels
                ops = ALL_OPS if can_skip else MBCONV_OPS
                blocks.append(SearchBlock(len(blocks), stage, i, channels, out_channels, stride, ops,
                                          size))
                channels = out_channels
                size = _conv_out(size, stride)
        return tuple(blocks)

    @property
    def size(self):
        """The exact number of distinct architectures (each block's choices multiplied)."""
        n = 1
        for b in self.blocks:
            n *= len(b.ops)
        return n

    def config(self):
        return {"width_mult": self.width_mult, "resolution": self.resolution,
                "num_classes": self.num_classes, "in_channels": self.in_channels,
                "dropout": self.dropout}

    def op_index(self, block, name):
        for i, op in enumerate(self.blocks[block].ops):
            if op.name == name:
                return i
        raise ValueError("block {} has no op {!r} (its ops: {})".format(
            block, name, ", ".join(op.name for op in self.blocks[block].ops)))

    def architecture(self, choices):
        """A new Architecture from one choice per searchable block: op names or op indices."""
        if len(choices) != len(self.blocks):
            raise ValueError("expected {} choices, got {}".format(len(self.blocks), len(choices)))
        blocks = [mbconv(self.stem_channels, self.first_block_channels, 1, 3, 1, searchable=False)]
        for sb, choice in zip(self.blocks, choices):
            index = self.op_index(sb.index, choice) if isinstance(choice, str) else int(choice)
            op = sb.ops[index]
            if op.is_zero:
                blocks.append(zero(sb.in_channels))
            else:
                blocks.append(mbconv(sb.in_channels, sb.out_channels, sb.stride, op.kernel, op.expand))
        blocks.append(mbconv(self.blocks[-1].out_channels, self.last_block_channels, 1, 3, 6,
                             searchable=False))
        return Architecture(self.in_channels, self.resolution, self.num_classes, self.stem_channels,
                            blocks, self.head_channels, self.dropout)

    def choices(self, arch):
        """The op index of every searchable block of `arch`; raises ValueError if it is not a member."""
        names = arch.ops
        if len(names) != len(self.blocks):
            raise ValueError("architecture has {} searchable blocks, this space {}".format(
                len(names), len(self.blocks)))
        indices = [self.op_index(i, name) for i, name in enumerate(names)]
        if self.architecture(indices) != arch:
            raise ValueError("architecture is not a member of this search space "
                             "(width {}, resolution {})".format(self.width_mult, self.resolution))
        return indices

    def mobilenet_v2(self):
        """MobileNetV2 (Sandler et al. 2018) as a member: k3/e6 with the blocks it lacks skipped.

        Per stage it has 2, 3, 4, 3, 3 blocks of the four searchable ones.
        """
        used = (2, 3, 4, 3, 3)
        return self.architecture(["k3_e6" if sb.position < used[sb.stage] else ZERO
                                  for sb in self.blocks])

    def describe(self):
        """Human-readable table of stages, blocks and their options, and the exact size."""
        lines = ["Search space: width {:g}, input {}x{}x{}, {} classes".format(
            self.width_mult, self.in_channels, self.resolution, self.resolution, self.num_classes),
            "  stem      conv3x3/2  {:>4} -> {:>4}".format(self.in_channels, self.stem_channels),
            "  fixed     k3_e1      {:>4} -> {:>4}".format(self.stem_channels,
                                                         self.first_block_channels)]
        for b in self.blocks:
            lines.append("  block {:>2}  stage {} stride {} {:>4} -> {:>4} @{:>3}px  {}".format(
                b.index, b.stage + 1, b.stride, b.in_channels, b.out_channels, b.resolution,
                " ".join(op.name for op in b.ops)))
        lines += ["  fixed     k3_e6      {:>4} -> {:>4}".format(self.blocks[-1].out_channels,
                                                             self.last_block_channels),
                  "  head      conv1x1    {:>4} -> {:>4}, pool, linear -> {}".format(
                      self.last_block_channels, self.head_channels, self.num_classes)]
        with_zero = sum(1 for b in self.blocks if ZERO_OP in b.ops)
        lines.append("Size: {} = 6^{} x 7^{} = {:.3e} architectures".format(
            self.size, len(self.blocks) - with_zero, with_zero, float(self.size)))
        return "\n".join(lines)


def _conv_out(size, stride):
    """Output size of a 'same'-padded conv with odd kernel: ceil(size / stride)."""
    return (size + stride - 1) // stride
