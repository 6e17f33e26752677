"""Architecture steps: how the logits learn from the held-out split.

gradient (ProxylessNAS): two ops sampled per block run under binary gates; the gates' gradients are
mapped onto the two ops' logits, the LUT's expected latency (and the expected memory) adds its exact
gradient to all logits, and after the update the pair is rescaled so that the unsampled ops keep
their probabilities.

reinforce (MnasNet-style reward, ProxylessNAS's RL variant): sampled architectures are scored by
accuracy x (LAT/T)^w with their end-to-end measured latency; REINFORCE with a moving-average
baseline.

evolution (SPOS, Once-for-All): no architecture steps, the logits stay uniform, so the weights train
on uniform paths throughout; each search epoch evolves a population of paths by one generation
against the current shared weights (crossover and mutation, each child moved into the target's band
by the calibrated table (`into_band`) and kept only where the table predicts it feasible, each
scored by the samples' objective with the table's latency), and its best are the epoch's samples.
"""
import math

import torch
import torch.nn.functional as F

from .objectives import constrained_loss, objective


class GradientStrategy:
    name = "gradient"
    steps_architecture = True  # an architecture step after each weight step of the search

    def __init__(self, supernet, cost_model, constraints, optimizer, generator, loss_form="mul"):
        self.net, self.costs, self.constraints = supernet, cost_model, constraints
        self.optimizer, self.generator, self.loss_form = optimizer, generator, loss_form

    def _sample_pairs(self):
        """Per block: two distinct ops from the softmax, then which of them is active."""
        active, inactive = [], []
        for logits in self.net.arch_logits:
            logits = logits.detach().cpu()
            pair = torch.multinomial(F.softmax(logits, 0), 2, replacement=False,
                                     generator=self.generator)
            first = int(torch.multinomial(F.softmax(logits[pair], 0), 1, generator=self.generator))
            active.append(int(pair[first]))
            inactive.append(int(pair[1 - first]))
        return active, inactive

    def step(self, x, y):
        net = self.net
        active, inactive = self._sample_pairs()
        gates = torch.zeros(len(active), 2, device=x.device)
        gates[:, 0] = 1.0
        gates.requires_grad_(True)
        logits = net.forward_gated(x, active, inactive, gates)
        ce = F.cross_entropy(logits, y)
        expected = self.costs.expected(net.probabilities())
        loss = constrained_loss(ce, expected, self.constraints, self.loss_form)
        if not torch.isfinite(loss):
            raise FloatingPointError("the architecture loss is {} (cross-entropy {}, expected "
                                     "latency {})".format(loss.item(), ce.item(),
                                                          expected["latency_ms"].item()))
        params = net.arch_parameters()
        grads = torch.autograd.grad(loss, [gates] + params, allow_unused=True)
        gate_grads = grads[0].detach()
        for b, (alpha, direct) in enumerate(zip(params, grads[1:])):
            grad = torch.zeros_like(alpha) if direct is None else direct.detach().clone()
            pair = [active[b], inactive[b]]
            pair_probs = F.softmax(alpha.detach()[pair], 0)
            for i in range(2):  # d gate_j / d alpha_i of the binarised softmax over the pair
                for j in range(2):
                    delta = 1.0 if i == j else 0.0
                    grad[pair[i]] += gate_grads[b, j] * pair_probs[j] * (delta - pair_probs[i])
            alpha.grad = grad
        before = [alpha.detach()[[a, i]].clone() for alpha, a, i in zip(params, active, inactive)]
        self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():  # keep the sum of exp over the pair: unsampled ops keep their share
            for alpha, old, a, i in zip(params, before, active, inactive):
                offset = torch.logsumexp(alpha[[a, i]], 0) - torch.logsumexp(old, 0)
                alpha[[a, i]] -= offset
        return {"arch_loss": loss.item(), "arch_ce": ce.item()}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class ReinforceStrategy:
    name = "reinforce"
    steps_architecture = True

    def __init__(self, supernet, metrics_of, constraints, optimizer, generator, samples=2,
                 baseline_decay=0.9):
        """`metrics_of(arch)` returns the architecture's metrics (measured latency_ms, memory_mb,
        params_m)."""
        self.net, self.metrics_of, self.constraints = supernet, metrics_of, constraints
        self.optimizer, self.generator = optimizer, generator
        self.samples, self.baseline_decay = samples, baseline_decay
        self.baseline = None

    def step(self, x, y):
        net = self.net
        rewards, log_probs, latencies = [], [], []
        for _ in range(self.samples):
            path = net.sample_path(self.generator)
            with torch.no_grad():
                accuracy = float((net(x, path).argmax(1) == y).float().mean())
            metrics = self.metrics_of(net.architecture(path))
            rewards.append(objective(accuracy, metrics, self.constraints))
            latencies.append(metrics["latency_ms"])
            log_probs.append(sum(F.log_softmax(alpha, 0)[i]
                                 for alpha, i in zip(net.arch_parameters(), path)))
        mean_reward = sum(rewards) / len(rewards)
        if self.baseline is None:
            self.baseline = mean_reward
        loss = -sum((r - self.baseline) * lp for r, lp in zip(rewards, log_probs)) / len(rewards)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * mean_reward
        return {"arch_loss": loss.item(), "reward": mean_reward, "baseline": self.baseline,
                "sampled_latency_ms": sum(latencies) / len(latencies)}

    def state_dict(self):
        return {"baseline": self.baseline}

    def load_state_dict(self, state):
        self.baseline = state.get("baseline")


REPAIR_STEPS = 200  # single-op changes `into_band` makes at most


def into_band(path, costs, predict, band, generator, steps=REPAIR_STEPS):
    """`path` (op indices) moved into `band` (low, high) of `predict(path)` by single-op changes:
    at a random block, an op the per-block `costs` table says is cheaper (above the band) or
    costlier (below it), chosen at random among those that do not jump past the band (else the
    one that jumps least). Uniform paths cluster around the space's mean latency, so at 40% of it
    a first population drawn that way lay 1.75 T off, and mutations of 10% of the blocks never
    reached the band (a specialisation's generations then had no child at all). Where the band is
    out of reach: the nearest path met."""
    low, high = band
    path, best, best_gap = list(path), tuple(path), math.inf
    for _ in range(steps):
        predicted = predict(path)
        gap = max(0.0, low - predicted, predicted - high)
        if gap < best_gap:
            best, best_gap = tuple(path), gap
        if gap == 0.0:
            break
        block = int(torch.randint(len(path), (1,), generator=generator))
        row, current, above = costs[block], costs[block][path[block]], predicted > high
        trials = [(predict(path[:block] + [op] + path[block + 1:]), op)
                  for op, cost in enumerate(row) if (cost < current if above else cost > current)]
        short = [op for moved, op in trials if (moved >= low if above else moved <= high)]
        if short:
            path[block] = short[int(torch.randint(len(short), (1,), generator=generator))]
        elif trials:
            path[block] = (max if above else min)(trials)[1]
    return best


class EvolutionStrategy:
    name = "evolution"
    steps_architecture = False
    POPULATION = 6  # survivors per generation
    CHILDREN = 6  # new paths per generation
    MUTATION = 0.1  # each block's chance to draw a new op
    TRIES = 50  # crossovers and mutations per child wanted, before a generation makes do with fewer

    def __init__(self, supernet, generator):
        self.net, self.generator = supernet, generator
        self.population = []  # the survivors, best first

    def generation(self, count, fitness, feasible, draw, repair=None):
        """One generation against the current weights: the survivors scored again by
        `fitness(path)` (the weights moved), children by crossover and mutation (then
        `repair(path)`, where given) among those that `feasible(path)` accepts, the best
        POPULATION of both kept. Returns the best `count` paths, best first. `draw()` gives a path
        for a first population."""
        parents = self.population or [draw() for _ in range(self.POPULATION)]
        children = []
        for _ in range(self.CHILDREN * self.TRIES):
            if len(children) == self.CHILDREN:
                break
            first, second = (parents[self._below(len(parents))] for _ in range(2))
            child = self._mutate(self._crossover(first, second))
            if repair is not None:
                child = repair(child)
            if child not in parents and child not in children and feasible(child):
                children.append(child)
        scored = [(fitness(path), index, path)
                  for index, path in enumerate(dict.fromkeys(parents + children))]
        scored.sort(key=lambda t: (-t[0], t[1]))  # ties: the elder first
        self.population = [path for _, _, path in scored[:self.POPULATION]]
        return [path for _, _, path in scored[:count]]

    def _crossover(self, first, second):
        return tuple(a if self._below(2) else b for a, b in zip(first, second))

    def _mutate(self, path):
        return tuple(self._below(len(sb.ops)) if self._chance() < self.MUTATION else op
                     for sb, op in zip(self.net.space.blocks, path))

    def _below(self, n):
        return int(torch.randint(n, (1,), generator=self.generator))

    def _chance(self):
        return float(torch.rand(1, generator=self.generator))

    def step(self, x, y):
        return {}

    def state_dict(self):
        return {"population": [list(path) for path in self.population]}

    def load_state_dict(self, state):
        self.population = [tuple(path) for path in state.get("population", [])]


def entropy(probabilities):
    """Mean entropy of the per-block distributions, normalised to [0, 1] (1 = uniform)."""
    values = [float(-(p * torch.log(p.clamp_min(1e-12))).sum()) / math.log(len(p))
              for p in probabilities]
    return sum(values) / len(values)
