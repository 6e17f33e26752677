"""The fast training path: the same arithmetic as the eager network, laid out for these kernels.

Where a MobileNet training step spends its time on a CPU (bench/training_speed.py measures it):
- the weight gradient of a depthwise convolution in PyTorch's CPU kernel costs 10 to 70x its
  forward in the default (NCHW) layout; in channels_last it costs 1 to 5x, and the whole step
  takes half the time;
- a depthwise kernel larger than its input (a 3x3 or 7x7 kernel on the 1x1 and 2x2 maps of the last
  stages at 32 px) still pays for every tap, although the taps further from the centre than the
  input is wide only ever meet padding: cropping them gives the same output and gradient;
- a 1x1 convolution is a matrix product over the pixels; in channels_last it is one GEMM without
  a copy, forward and backward, which is several times faster than oneDNN's convolution on the
  small maps and few channels of these networks.

`accelerate(model)` converts a network made of builder modules (nano_agent/builder.py) in place:
channels_last, and its 1x1 and depthwise convolutions turned into modules that compute them so,
with the same parameters (same names, same shapes: state_dicts load either way); `plain(model)`
turns it back. The supernet's blocks call `FAST.pointwise` and `FAST.depthwise` on their cut weights. `EAGER` is the reference:
plain `F.conv2d`, for the setting that turns the fast path off and for the test that the two agree.
"""
from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import nn


def pointwise_conv(x, weight):
    """A 1x1 convolution without bias (weight: out x in x 1 x 1) as a matrix product over pixels."""
    return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1)).permute(0, 3, 1, 2)


def depthwise_conv(x, weight, stride):
    """A depthwise k x k convolution with 'same' padding (k // 2), without bias; taps that can only
    ever meet padding (further than the input's extent - 1 from the centre) are cropped off."""
    pad = weight.shape[-1] // 2
    height, width = x.shape[-2:]
    reach = min(pad, max(height, width) - 1)
    if reach < pad:
        weight = weight[:, :, pad - reach:pad + reach + 1, pad - reach:pad + reach + 1]
    if height == width == 1:  # one pixel: only the centre tap remains, a per-channel scale
        return x * weight.reshape(1, -1, 1, 1)
    return F.conv2d(x, weight, None, stride, reach, 1, x.shape[1])


def _eager_pointwise(x, weight):
    return F.conv2d(x, weight)


def _eager_depthwise(x, weight, stride):
    return F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, weight.shape[0])


Convolutions = namedtuple("Convolutions", "pointwise depthwise")
FAST = Convolutions(pointwise_conv, depthwise_conv)
EAGER = Convolutions(_eager_pointwise, _eager_depthwise)


class PointwiseConv2d(nn.Conv2d):
    """nn.Conv2d (1x1, no bias) computed by `pointwise_conv`."""

    def forward(self, x):
        return pointwise_conv(x, self.weight)


class DepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d (depthwise, 'same' padding, no bias) computed by `depthwise_conv`."""

    def forward(self, x):
        return depthwise_conv(x, self.weight, self.stride[0])


def fast_class(conv):
    """The fast module class that computes `conv` exactly, or None."""
    if conv.bias is not None or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        return None
    if conv.kernel_size == (1, 1) and conv.groups == 1 and conv.stride == (1, 1):
        return PointwiseConv2d
    kernel = conv.kernel_size[0]
    if conv.groups == conv.in_channels == conv.out_channels and kernel % 2 == 1 and \
            conv.kernel_size == (kernel, kernel) and conv.padding == (kernel // 2, kernel // 2) and \
            conv.stride[0] == conv.stride[1]:
        return DepthwiseConv2d
    return None


def wanted(fast, device):
    """Whether a step on `device` takes the fast path when the setting `fast` asks for it: on a
    CPU. On a GPU the step of these small networks is bound by launching kernels, not by running
    them, and the fast path's layout changes add launches: on an H200 its child step took 1.23x
    and its supernet step 1.37x the eager one (bench/training_speed.py --device cuda)."""
    return bool(fast) and torch.device(device).type == "cpu"


def accelerate(model):
    """Put `model` on the fast path, in place (and return it): its exactly equivalent 1x1 and
    depthwise convolutions become the fast modules, sharing their parameters; channels_last."""
    for module in model.modules():
        if type(module) is nn.Conv2d:  # not a subclass: those may compute something else
            fast = fast_class(module)
            if fast is not None:
                module.__class__ = fast  # same attributes and parameters, another forward
    # the first convolution's output follows its weight's layout: the input needs no conversion
    return model.to(memory_format=torch.channels_last)


def plain(model):
    """The inverse of `accelerate`, in place: plain nn.Conv2d modules, the default layout (for
    export, and for code that expects the builder's modules)."""
    for module in model.modules():
        if type(module) in (PointwiseConv2d, DepthwiseConv2d):
            module.__class__ = nn.Conv2d
    return model.to(memory_format=torch.contiguous_format)
