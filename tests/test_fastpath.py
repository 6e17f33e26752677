"""The fast training path computes what the eager network computes: outputs, gradients, and the
weights after an optimizer step, for children and for the supernet, on maps smaller than kernels.

The arithmetic is compared in float64, where rounding cannot hide a wrong formula: a freshly
initialised network in training mode amplifies float32 rounding through the batch norms of its
nearly dead channels (the eager step itself differs from its float64 value by 1e-5 to 1e-2 in the
median gradient, depending on the draw), so in float32 only the evaluation forward is compared.
That the fast path trains as well is measured by retraining (bench/training_speed.py)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nano_agent.builder import build_model
from nano_agent.space import SearchSpace
from search_core import fastpath
from search_core.supernet import Supernet
from search_core.train import clip_gradients, sgd

pytestmark = pytest.mark.unit

# 32 px: the last stages run on 2x2 and 1x1 maps, smaller than every 3x3, 5x5 and 7x7 kernel
SPACE = SearchSpace(0.5, 32, 10, 3)
TOLERANCE = dict(rtol=1e-9, atol=1e-11)  # float64


@pytest.fixture(autouse=True)
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def batch(seed, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def random_paths(count, seed):
    g = torch.Generator().manual_seed(seed)
    return [tuple(int(torch.randint(len(sb.ops), (1,), generator=g)) for sb in SPACE.blocks)
            for _ in range(count)]


def assert_close(fast, eager):
    assert fast.shape == eager.shape
    torch.testing.assert_close(fast, eager, **TOLERANCE)


@pytest.mark.parametrize("size, kernel, stride", [
    (1, 3, 1), (1, 7, 2), (2, 3, 1), (2, 7, 1), (2, 5, 2), (3, 7, 2), (4, 7, 1), (8, 5, 2),
    (16, 3, 1)])
def test_depthwise_conv_with_cropped_taps_is_exact(size, kernel, stride):
    g = torch.Generator().manual_seed(size * 100 + kernel * 10 + stride)
    x = torch.randn(4, 6, size, size, generator=g).requires_grad_()
    w = torch.randn(6, 1, kernel, kernel, generator=g).requires_grad_()
    eager = F.conv2d(x, w, None, stride, kernel // 2, 1, 6)
    fast = fastpath.depthwise_conv(x.contiguous(memory_format=torch.channels_last), w, stride)
    assert_close(fast, eager)
    grad = torch.randn(eager.shape, generator=g)
    for a, b in zip(torch.autograd.grad(fast, (x, w), grad), torch.autograd.grad(eager, (x, w), grad)):
        assert_close(a, b)


def test_pointwise_conv_is_a_1x1_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 5, 5, generator=g)
    w = torch.randn(9, 6, 1, 1, generator=g)
    for layout in (torch.contiguous_format, torch.channels_last):
        assert_close(fastpath.pointwise_conv(x.contiguous(memory_format=layout), w), F.conv2d(x, w))


def test_accelerate_swaps_only_what_it_computes_exactly_and_plain_restores_it():
    model = build_model(SPACE.mobilenet_v2())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fastpath.accelerate(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    kinds = set(type(m) for m in convs)
    assert kinds == {nn.Conv2d, fastpath.PointwiseConv2d, fastpath.DepthwiseConv2d}
    stem = model.features[0][0]
    assert type(stem) is nn.Conv2d  # a 3x3 convolution over all channels stays oneDNN's
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in model.parameters() if p.dim() == 4)
    fastpath.plain(model)
    assert set(type(m) for m in model.modules() if isinstance(m, nn.Conv2d)) == {nn.Conv2d}
    assert all(p.is_contiguous() for p in model.parameters())
    assert model.state_dict().keys() == state.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


def sgd_step(model, x, y, fast):
    """One training step as train_architecture takes it; returns the loss."""
    optimizer = sgd(model.parameters(), 0.05, 4e-5, fast)
    torch.manual_seed(0)  # the same dropout mask on both paths
    loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(model.parameters(), 5.0, fast)
    optimizer.step()
    return loss


@pytest.mark.process
@pytest.mark.parametrize("path", random_paths(3, seed=7) + [
    tuple(SPACE.choices(SPACE.mobilenet_v2()))])
def test_a_child_on_the_fast_path_trains_as_the_eager_one(path):
    eager = build_model(SPACE.architecture(path))
    fast = fastpath.accelerate(copy.deepcopy(eager))
    x, y = batch(1)
    eager.train()
    fast.train()
    assert_close(sgd_step(fast, x, y, True), sgd_step(eager, x, y, False))
    for (name, a), (_, b) in zip(fast.named_parameters(), eager.named_parameters()):
        assert_close(a.detach(), b.detach())
    for (name, a), (_, b) in zip(fast.named_buffers(), eager.named_buffers()):
        assert_close(a, b)
    eager.eval()
    fast.eval()
    with torch.no_grad():
        assert_close(fast(x), eager(x))


@pytest.mark.process
def test_the_supernet_on_the_fast_path_computes_the_eager_supernet():
    eager = Supernet(SPACE, fast=False)
    fast = Supernet(SPACE, fast=True)
    fast.load_state_dict(eager.state_dict())
    x, y = batch(2)

    def loss(net, path):
        torch.manual_seed(0)  # the same dropout mask
        return F.cross_entropy(net(x, path), y)

    for path in random_paths(3, seed=11) + [fast.largest_path()]:
        losses = [loss(net, path) for net in (fast, eager)]
        grads = [torch.autograd.grad(loss, net.weight_parameters(), allow_unused=True)
                 for loss, net in zip(losses, (fast, eager))]
        assert_close(losses[0], losses[1])
        for a, b in zip(*grads):
            assert (a is None) == (b is None)
            if a is not None:
                assert_close(a, b)
    active = random_paths(1, seed=3)[0]  # and another op of each block, as the strategy draws
    inactive = [(a + 1) % len(sb.ops) for a, sb in zip(active, SPACE.blocks)]
    gates = [torch.tensor([[1.0, 0.0]] * len(SPACE.blocks), requires_grad=True) for _ in range(2)]
    outs = []
    for net, g in zip((fast, eager), gates):
        torch.manual_seed(0)
        outs.append(net.forward_gated(x, active, inactive, g))
    assert_close(outs[0], outs[1])
    grads = [torch.autograd.grad(F.cross_entropy(out, y), g)[0] for out, g in zip(outs, gates)]
    assert_close(grads[0], grads[1])


def test_in_float32_the_fast_child_evaluates_as_the_eager_one():
    torch.set_default_dtype(torch.float32)
    x, _ = batch(4, n=32)
    for path in random_paths(3, seed=5):
        eager = build_model(SPACE.architecture(path)).eval()
        fast = fastpath.accelerate(copy.deepcopy(eager))
        with torch.no_grad():
            torch.testing.assert_close(fast(x), eager(x), rtol=1e-4, atol=1e-5)


def test_the_fast_path_is_taken_on_a_cpu_only():
    # on a GPU these networks' steps are launch-bound and the fast path's layout changes cost
    # more than they save (bench/training_speed.py --device cuda)
    assert fastpath.wanted(True, "cpu") and fastpath.wanted(True, torch.device("cpu"))
    assert not fastpath.wanted(True, "cuda") and not fastpath.wanted(True, torch.device("cuda:0"))
    assert not fastpath.wanted(False, "cpu")
