"""Train one architecture from scratch (the standalone child, no supernet) and report its accuracy.

The recipe is one for every architecture and dataset, so that retrained accuracies can be compared:
a network retrained with three seeds must agree with itself (see `recipe.Recipe`).
"""
import math
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from nano_agent.builder import InvertedResidual, build_model

from . import data, fastpath
from .recipe import Recipe


class DatasetMismatch(ValueError):
    """The architecture's input or classes do not fit the dataset."""


def check_fits(arch, dataset):
    if arch.in_channels != dataset.channels:
        raise DatasetMismatch("the architecture takes {} input channel(s) but {} images have {}"
                              .format(arch.in_channels, dataset.name, dataset.channels))
    if arch.num_classes != dataset.num_classes:
        raise DatasetMismatch("the architecture has {} classes but {} has {}".format(
            arch.num_classes, dataset.name, dataset.num_classes))


EVALUATION_BATCH = 256  # images per forward where nothing trains


def accuracy(predict, split, dataset, device):
    """Top-1 accuracy of `predict` (a batch in, logits out) on a split, without autograd."""
    correct = 0
    with torch.no_grad():
        for x, y in data.iterate_batches(split, dataset, EVALUATION_BATCH, device=device):
            correct += int((predict(x).argmax(1) == y).sum())
    return correct / max(len(split), 1)


def start_as_identity(residual_batch_norms):
    """Zero the scale of each residual block's last batch norm, so that the block starts as the
    identity: a deep MobileNet then trains several times faster on small data (digits: 77% -> 91%
    train accuracy after 6 epochs standalone; random paths through the supernet, 33% -> 77%)."""
    for bn in residual_batch_norms:
        torch.nn.init.zeros_(bn.weight)


def recalibrate_batch_norm(model, batches, forward=None):
    """Reset the BN statistics of `model` and estimate them again as a cumulative average over
    `batches`, the weights fixed (`forward(x)`: how to run it, by default `model(x)`)."""
    saved = {}
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            saved[m] = m.momentum
            m.reset_running_stats()
            m.momentum = None
    was_training = model.training
    model.train()
    with torch.no_grad():
        for x in batches:
            (forward or model)(x)
    for m, momentum in saved.items():
        m.momentum = momentum
    model.train(was_training)


def lr_factor(done, epochs, steps_per_epoch, warmup_epochs=1.0):
    """The learning rate's multiplier after `done` epochs (a fraction): a linear ramp over the
    first `warmup_epochs`, reaching 1 at their last step (the full rate at once diverges), then a
    cosine to 0."""
    ramp = min(1.0, (done + 1.0 / steps_per_epoch) / warmup_epochs)
    return ramp * 0.5 * (1 + math.cos(math.pi * min(done, epochs) / epochs))


def parameter_groups(parameters, weight_decay):
    """Weight decay on the weights of convolutions and linear layers only: decaying batch norm's
    scale fights the normalisation it exists for."""
    parameters = list(parameters)
    decay = [p for p in parameters if p.dim() > 1]
    rest = [p for p in parameters if p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def sgd(parameters, lr, weight_decay, fast, momentum=0.9, every_step=True):
    """The weight optimizer: SGD with Nesterov momentum. On the fast path, fused into one kernel
    (0.4x the time of the per-tensor loop over a child's 150 parameters) where every parameter gets
    a gradient every step; a supernet's paths leave some without one, which the fused kernel
    cannot skip, so there it runs one multi-tensor kernel per step."""
    return torch.optim.SGD(parameter_groups(parameters, weight_decay), lr=lr, momentum=momentum,
                           nesterov=momentum > 0, fused=(fast and every_step) or None,
                           foreach=(fast and not every_step) or None)


def clip_gradients(parameters, max_norm, fast):
    """Clip the gradients' joint norm; on the fast path with one multi-tensor kernel per step."""
    torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=fast or None)


def train_architecture(arch, dataset, recipe=Recipe(), seed=0, device="cpu", progress=True,
                       on_epoch=None, fast=True):
    """Train `arch` from scratch on `dataset` with `recipe`; returns accuracies and timing, and the
    trained model (builder modules, the default layout). `on_epoch(done, epochs, loss)` hears the
    end of each epoch (its last batch's loss). `fast`: the fast path (fastpath.py), else eager."""
    check_fits(arch, dataset)
    batch_size = min(recipe.batch_size, len(dataset.train))  # a tiny split still trains
    epochs = recipe.epochs
    torch.manual_seed(seed)
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(arch).to(device)
    start_as_identity(m.conv[-1] for m in model.modules()
                      if isinstance(m, InvertedResidual) and m.use_res_connect)
    fast = fastpath.wanted(fast, device)
    if fast:
        fastpath.accelerate(model)
    optimizer = sgd(model.parameters(), recipe.lr, recipe.weight_decay, fast)
    per_epoch = max(1, len(dataset.train) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
        step / per_epoch, epochs, per_epoch, recipe.warmup_epochs))
    started = time.time()
    bar = tqdm(range(epochs), desc="train", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        for x, y in data.iterate_batches(dataset.train, dataset, batch_size, shuffle=True,
                                         generator=generator, augment=True, drop_last=True,
                                         device=device):
            loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(model.parameters(), recipe.clip_norm, fast)
            optimizer.step()
            schedule.step()
        bar.set_postfix(loss="{:.3f}".format(loss.item()))
        if on_epoch:
            on_epoch(epoch + 1, epochs, loss.item())
    # the running statistics trail weights that moved fast: after a short training they give
    # chance accuracy (3 epochs on digits: 10% with them, 89% with the batches' own statistics)
    recalibrate_batch_norm(model, (x for x, _ in data.iterate_batches(
        dataset.train, dataset, batch_size, device=device)))
    model.eval()
    return {"val_accuracy": accuracy(model, dataset.val, dataset, device),
            "test_accuracy": accuracy(model, dataset.test, dataset, device),
            "epochs": epochs, "recipe": recipe.to_dict(), "train_time_s": time.time() - started,
            "model": fastpath.plain(model)}
