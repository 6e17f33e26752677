"""Architecture JSON in, plain `torch.nn.Module` out: no supernet machinery, nothing else needed.

The module layout and parameter names follow torchvision's `mobilenet_v2` (features.N.conv...,
classifier.1), so MobileNetV2 built from its JSON has torchvision's state_dict keys and shapes.

Python 3.6 / PyTorch 1.10 compatible: the device agent imports this module.
"""
import torch
from torch import nn

from .arch import ZERO, as_architecture


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels, out_channels, kernel=3, stride=1, groups=1):
        super(ConvBNReLU, self).__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups,
                      bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand (skipped for expansion 1) -> kxk depthwise -> 1x1 linear projection."""

    def __init__(self, in_channels, out_channels, stride, kernel, expand):
        super(InvertedResidual, self).__init__()
        hidden = in_channels * expand
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers = []
        if expand != 1:
            layers.append(ConvBNReLU(in_channels, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, kernel=kernel, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNet(nn.Module):
    def __init__(self, features, head_channels, num_classes, dropout):
        super(MobileNet, self).__init__()
        self.features = features
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(head_channels, num_classes))

    def forward(self, x):
        return self.classify(self.features(x))

    def classify(self, features):
        """Global average pooling, then the classifier."""
        x = nn.functional.adaptive_avg_pool2d(features, 1)
        return self.classifier(torch.flatten(x, 1))


def build_model(arch):
    """Build the network of an Architecture (or its dict / JSON text) with freshly initialised weights."""
    arch = as_architecture(arch)
    layers = [ConvBNReLU(arch.in_channels, arch.stem_channels, kernel=3, stride=2)]
    for b in arch.blocks:
        if b.op != ZERO:  # a zero block is skipped: its input passes through unchanged
            layers.append(InvertedResidual(b.in_channels, b.out_channels, b.stride, b.kernel, b.expand))
    last = arch.blocks[-1].out_channels if arch.blocks else arch.stem_channels
    layers.append(ConvBNReLU(last, arch.head_channels, kernel=1))
    model = MobileNet(nn.Sequential(*layers), arch.head_channels, arch.num_classes, arch.dropout)
    init_weights(model)
    return model


def init_weights(model):
    """torchvision's MobileNetV2 initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
