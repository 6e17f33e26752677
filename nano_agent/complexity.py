"""Parameters, multiply-accumulates and inference memory of an architecture, computed analytically.

Counts follow the layers `builder.build_model` creates (convs without bias, batch norm with weight and
bias, the classifier with bias). FLOPs are reported as multiply-accumulates (MACs), the convention of
the MobileNet papers and torchvision (MobileNetV2 at 224x224: 300M).

Python 3.6 compatible: the device agent reports these alongside its measurements.
"""
from collections import namedtuple

from .arch import ZERO, as_architecture

FLOAT_BYTES = 4

Complexity = namedtuple("Complexity", "params macs activation_peak_bytes memory_bytes")
Complexity.__doc__ = """params: learnable parameters; macs: multiply-accumulates of one image;
activation_peak_bytes: the most activation memory alive at once during batch-1 inference;
memory_bytes: parameters plus that peak (float32), the estimated inference memory."""


def _conv(cin, cout, kernel, groups, out_size):
    params = cout * (cin // groups) * kernel * kernel
    return params, params * out_size * out_size


def _conv_bn(cin, cout, kernel, groups, out_size):
    params, macs = _conv(cin, cout, kernel, groups, out_size)
    return params + 2 * cout, macs


def block_complexity(in_channels, out_channels, stride, kernel, expand, in_size):
    """(params, macs, peak activation elements, output size) of one MBConv block at batch 1."""
    hidden = in_channels * expand
    out_size = (in_size + stride - 1) // stride
    params = macs = 0
    if expand != 1:
        p, m = _conv_bn(in_channels, hidden, 1, 1, in_size)
        params, macs = params + p, macs + m
    p, m = _conv_bn(hidden, hidden, kernel, hidden, out_size)
    params, macs = params + p, macs + m
    p, m = _conv_bn(hidden, out_channels, 1, 1, out_size)
    params, macs = params + p, macs + m
    x = in_channels * in_size * in_size
    expanded = hidden * in_size * in_size
    depthwise = hidden * out_size * out_size
    out = out_channels * out_size * out_size
    kept = x if stride == 1 and in_channels == out_channels else 0  # the residual input stays alive
    peak = max(x + expanded if expand != 1 else 0, kept + expanded + depthwise,
               kept + depthwise + out)
    return params, macs, peak, out_size


LayerCost = namedtuple("LayerCost", "params macs peak_elements")


def layer_costs(arch):
    """Cost of every layer at batch 1: [stem] + [one per block, zeros for a zero block] + [head]."""
    arch = as_architecture(arch)
    size = (arch.resolution + 1) // 2
    params, macs = _conv_bn(arch.in_channels, arch.stem_channels, 3, 1, size)
    costs = [LayerCost(params, macs,
                       arch.in_channels * arch.resolution ** 2 + arch.stem_channels * size ** 2)]
    channels = arch.stem_channels
    for b in arch.blocks:
        if b.op == ZERO:
            costs.append(LayerCost(0, 0, 0))
            continue
        params, macs, peak, size = block_complexity(b.in_channels, b.out_channels, b.stride,
                                                    b.kernel, b.expand, size)
        costs.append(LayerCost(params, macs, peak))
        channels = b.out_channels
    params, macs = _conv_bn(channels, arch.head_channels, 1, 1, size)
    costs.append(LayerCost(params + arch.head_channels * arch.num_classes + arch.num_classes,
                           macs + arch.head_channels * arch.num_classes,
                           (channels + arch.head_channels) * size * size))
    return costs


def complexity(arch):
    """Complexity of a whole architecture (an Architecture, its dict or JSON)."""
    costs = layer_costs(arch)
    params = sum(c.params for c in costs)
    peak_bytes = max(c.peak_elements for c in costs) * FLOAT_BYTES
    return Complexity(params, sum(c.macs for c in costs), peak_bytes,
                      params * FLOAT_BYTES + peak_bytes)
