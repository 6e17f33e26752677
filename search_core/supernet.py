"""The single-path supernet: one mixed op per searchable block, architecture logits, binary gates.

A weight step runs one sampled path (one op per block), so it costs what that child network costs.
The architecture step (ProxylessNAS) runs two sampled ops per block under binary gates: the active
op carries gate 1, the inactive one gate 0 with its output detached; the gates' gradients are mapped
onto the logits of the two ops only (see `strategies.py`).

By default a block's candidates share weights (Single-Path NAS's superkernel, Once-for-All's elastic
kernel and width): k3 and k5 are the centre of the k7 depthwise kernel, e3 uses the first half of the
channels of e6. `shared_weights=False` gives every op its own weights, as in ProxylessNAS.

`fast=True` (the default) computes every step on the fast path (fastpath.py): the same arithmetic,
several times faster on a CPU; `fast=False` is the eager reference.
"""
import torch
import torch.nn.functional as F
from torch import nn

from nano_agent.builder import ConvBNReLU, InvertedResidual, build_model, init_weights

from . import fastpath
from .train import recalibrate_batch_norm, start_as_identity


def _first(tensor, count, dim=0):
    """The first `count` entries of `tensor` along `dim`; the tensor itself when that is all of
    it (a slice's backward scatters into a zero tensor even when it covers everything)."""
    return tensor if tensor.shape[dim] == count else tensor.narrow(dim, 0, count)


def _batch_norm(x, bn, channels):
    """nn.BatchNorm2d's forward on the first `channels` channels of `bn` (updates those statistics)."""
    factor = 0.0
    if bn.training:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return F.batch_norm(x, _first(bn.running_mean, channels), _first(bn.running_var, channels),
                        _first(bn.weight, channels), _first(bn.bias, channels), bn.training,
                        factor, bn.eps)


class SearchableBlock(nn.Module):
    """Common forward of a searchable block: `branch(x, op)` is the op's conv path, None for zero."""

    def __init__(self, search_block):
        super(SearchableBlock, self).__init__()
        self.ops = search_block.ops
        self.residual = search_block.stride == 1 and \
            search_block.in_channels == search_block.out_channels

    def branch(self, x, op):
        raise NotImplementedError

    def forward(self, x, index):
        out = self.branch(x, self.ops[index])
        if out is None:
            return x
        return x + out if self.residual else out

    def forward_gated(self, x, active, inactive, gates):
        """gates[0] * active(x) + gates[1] * inactive(x), the inactive output a constant.
        The two ops differ, so at most one is zero (contributing nothing, as in ProxylessNAS)."""
        active_out = self.branch(x, self.ops[active])
        with torch.no_grad():
            inactive_out = self.branch(x, self.ops[inactive])
        if active_out is None:
            out = gates[1] * inactive_out
        elif inactive_out is None:
            out = gates[0] * active_out
        else:
            out = gates[0] * active_out + gates[1] * inactive_out
        return x + out if self.residual else out


class SharedMBConv(SearchableBlock):
    """Every k/e candidate of one block, cut out of one k7/e6 set of weights; `convs` computes the
    cut 1x1 and depthwise convolutions (fastpath.FAST or fastpath.EAGER)."""

    def __init__(self, search_block, convs=fastpath.FAST):
        super(SharedMBConv, self).__init__(search_block)
        self.convs = convs
        conv_ops = [op for op in self.ops if not op.is_zero]
        self.max_kernel = max(op.kernel for op in conv_ops)
        self.in_channels = search_block.in_channels
        hidden = search_block.in_channels * max(op.expand for op in conv_ops)
        self.expand_conv = nn.Conv2d(search_block.in_channels, hidden, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(hidden)
        self.depthwise_conv = nn.Conv2d(hidden, hidden, self.max_kernel, search_block.stride,
                                        self.max_kernel // 2, groups=hidden, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(hidden)
        self.project_conv = nn.Conv2d(hidden, search_block.out_channels, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(search_block.out_channels)
        self.stride = search_block.stride

    def last_batch_norms(self):
        return [self.project_bn]

    def _cut(self, op):
        """The op's part of the shared weights: hidden channels, expand, depthwise, project."""
        hidden = self.in_channels * op.expand
        start = (self.max_kernel - op.kernel) // 2
        depthwise = _first(self.depthwise_conv.weight, hidden)
        if op.kernel < self.max_kernel:
            depthwise = depthwise[:, :, start:start + op.kernel, start:start + op.kernel]
        return (hidden, _first(self.expand_conv.weight, hidden), depthwise,
                _first(self.project_conv.weight, hidden, dim=1))

    def branch(self, x, op):
        if op.is_zero:
            return None
        hidden, expand, depthwise, project = self._cut(op)
        h = self.convs.pointwise(x, expand)
        h = F.relu6(_batch_norm(h, self.expand_bn, hidden), inplace=True)
        h = self.convs.depthwise(h, depthwise, self.stride)
        h = F.relu6(_batch_norm(h, self.depthwise_bn, hidden), inplace=True)
        return _batch_norm(self.convs.pointwise(h, project), self.project_bn,
                           self.project_bn.num_features)

    def child_state(self, op):
        """The op's weights as a standalone InvertedResidual's state_dict (inherited weights)."""
        hidden, expand, depthwise, project = self._cut(op)
        state = {"conv.0.0.weight": expand, "conv.1.0.weight": depthwise, "conv.2.weight": project}
        for prefix, bn, channels in (("conv.0.1.", self.expand_bn, hidden),
                                     ("conv.1.1.", self.depthwise_bn, hidden),
                                     ("conv.3.", self.project_bn, self.project_bn.num_features)):
            for key in ("weight", "bias", "running_mean", "running_var"):
                state[prefix + key] = getattr(bn, key)[:channels]
            state[prefix + "num_batches_tracked"] = bn.num_batches_tracked
        return dict((k, v.detach().clone()) for k, v in state.items())


class IndependentMBConv(SearchableBlock):
    """Every candidate with weights of its own (ProxylessNAS's mixed op)."""

    def __init__(self, search_block):
        super(IndependentMBConv, self).__init__(search_block)
        self.candidates = nn.ModuleDict(
            (op.name, InvertedResidual(search_block.in_channels, search_block.out_channels,
                                       search_block.stride, op.kernel, op.expand))
            for op in self.ops if not op.is_zero)

    def last_batch_norms(self):
        return [candidate.conv[-1] for candidate in self.candidates.values()]

    def branch(self, x, op):
        return None if op.is_zero else self.candidates[op.name].conv(x)

    def child_state(self, op):
        return dict((k, v.detach().clone()) for k, v in self.candidates[op.name].state_dict().items())


class Supernet(nn.Module):
    """The whole search space in one network; `forward(x, path)` runs the child `path` picks."""

    def __init__(self, space, shared_weights=True, fast=True):
        super(Supernet, self).__init__()
        self.space = space
        self.shared_weights = shared_weights
        last_searched = space.blocks[-1].out_channels
        self.stem = ConvBNReLU(space.in_channels, space.stem_channels, 3, 2)
        self.first_block = InvertedResidual(space.stem_channels, space.first_block_channels, 1, 3, 1)
        convs = fastpath.FAST if fast else fastpath.EAGER
        self.blocks = nn.ModuleList(SharedMBConv(sb, convs) if shared_weights else
                                    IndependentMBConv(sb) for sb in space.blocks)
        self.last_block = InvertedResidual(last_searched, space.last_block_channels, 1, 3, 6)
        self.head = ConvBNReLU(space.last_block_channels, space.head_channels, 1)
        self.classifier = nn.Sequential(nn.Dropout(space.dropout),
                                        nn.Linear(space.head_channels, space.num_classes))
        init_weights(self)
        start_as_identity(bn for block in self.blocks if block.residual
                          for bn in block.last_batch_norms())
        # zero logits: every op starts equally likely
        self.arch_logits = nn.ParameterList(nn.Parameter(torch.zeros(len(sb.ops)))
                                            for sb in space.blocks)
        if fast:
            fastpath.accelerate(self)

    def weight_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("arch_logits.")]

    def arch_parameters(self):
        return list(self.arch_logits)

    def _tail(self, x):
        x = self.head(self.last_block(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x, path):
        x = self.first_block(self.stem(x))
        for block, index in zip(self.blocks, path):
            x = block(x, index)
        return self._tail(x)

    def forward_gated(self, x, active, inactive, gates):
        """Forward with two ops per block under binary gates (`gates`: blocks x 2, [active, inactive])."""
        x = self.first_block(self.stem(x))
        for i, block in enumerate(self.blocks):
            x = block.forward_gated(x, active[i], inactive[i], gates[i])
        return self._tail(x)

    # --- the distribution over architectures ------------------------------------------------------

    def probabilities(self):
        """Softmax of each block's logits (differentiable)."""
        return [F.softmax(logits, dim=0) for logits in self.arch_logits]

    def argmax_path(self):
        return tuple(int(torch.argmax(logits.detach())) for logits in self.arch_logits)

    def sample_path(self, generator, uniform=False):
        """One op per block, drawn from the live softmax (or uniformly, for the warm-up)."""
        path = []
        for logits in self.arch_logits:
            probs = torch.ones(len(logits)) if uniform else F.softmax(logits.detach().cpu(), dim=0)
            path.append(int(torch.multinomial(probs, 1, generator=generator)))
        return tuple(path)

    def largest_path(self):
        """Every block's costliest op: the largest kernel at the largest expansion."""
        return tuple(max(range(len(sb.ops)), key=lambda i: (0, 0) if sb.ops[i].is_zero else
                         (sb.ops[i].kernel, sb.ops[i].expand)) for sb in self.space.blocks)

    def smallest_path(self):
        """Every block's cheapest op: skipped where it may be, else the smallest kernel at the
        smallest expansion."""
        return tuple(min(range(len(sb.ops)), key=lambda i: (0, 0) if sb.ops[i].is_zero else
                         (sb.ops[i].kernel, sb.ops[i].expand)) for sb in self.space.blocks)

    def sample_paths(self, generator, count):
        """`count` paths drawn independently from the live softmax, at once."""
        columns = [torch.multinomial(F.softmax(logits.detach().cpu(), dim=0), count,
                                     replacement=True, generator=generator)
                   for logits in self.arch_logits]
        return [tuple(int(column[i]) for column in columns) for i in range(count)]

    def architecture(self, path):
        """A new Architecture object for `path` (op indices)."""
        return self.space.architecture(path)

    def derive(self):
        """The most likely architecture, computed afresh from the live logits every call."""
        return self.architecture(self.argmax_path())

    def export_child(self, path):
        """The standalone network of `path` (builder.build_model) with the supernet's weights."""
        model = build_model(self.architecture(path))
        features = iter(model.features)
        for module in [self.stem, self.first_block]:
            next(features).load_state_dict(module.state_dict())
        for block, index in zip(self.blocks, path):
            op = block.ops[index]
            if not op.is_zero:
                next(features).load_state_dict(block.child_state(op))
        for module in [self.last_block, self.head]:
            next(features).load_state_dict(module.state_dict())
        model.classifier.load_state_dict(self.classifier.state_dict())
        return model

    def recalibrate_batch_norm(self, path, batches):
        """Re-estimate the BN statistics for `path`: shared BN statistics are a mixture over
        paths, wrong for any single one."""
        recalibrate_batch_norm(self, batches, lambda x: self(x, path))
