"""Objectives: MnasNet's `ACC x (LAT/T)^w`, its loss forms, and the differentiable expected costs.

A constraint is a metric (latency_ms, memory_mb or params_m), a target T and a weight w. Soft: the
factor (v/T)^w on both sides of T (w = -0.07: a reward for being faster, a penalty for being slower).
Hard: no reward below T, (v/T)^-1 above it (MnasNet's alpha = 0, beta = -1). Several constraints
multiply.
"""
from dataclasses import dataclass

import torch

from nano_agent.complexity import FLOAT_BYTES, layer_costs

METRICS = ("latency_ms", "memory_mb", "params_m")
HARD_WEIGHT = -1.0
MIB = 2.0 ** 20


@dataclass(frozen=True)
class Constraint:
    metric: str
    target: float
    weight: float = -0.07
    hard: bool = False

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError("unknown metric {!r} (known: {})".format(self.metric, ", ".join(METRICS)))
        if not self.target > 0:
            raise ValueError("the {} target must be positive, got {}".format(self.metric, self.target))
        if not self.weight < 0:
            raise ValueError("the {} weight w must be negative (it rewards smaller values), got {}"
                             .format(self.metric, self.weight))

    def exponent(self, value):
        """w of (v/T)^w at value v."""
        if self.hard:
            return 0.0 if value <= self.target else HARD_WEIGHT
        return self.weight

    def factor(self, value):
        return (value / self.target) ** self.exponent(float(value))

    def satisfied(self, value):
        return value <= self.target


def objective(accuracy, metrics, constraints):
    """MnasNet reward: accuracy x product of (v/T)^w over the constraints."""
    reward = accuracy
    for c in constraints:
        reward *= c.factor(metrics[c.metric])
    return reward


def constrained_loss(ce, expected, constraints, form="mul"):
    """The gradient strategy's loss on cross-entropy `ce`, with `expected` metric tensors.

    mul: ce x (E/T)^-w: the reward's form turned into a loss (lower is better).
    add: ce + (-w) x E/T for soft constraints, ce + (-w) x max(0, E/T - 1) for hard ones.
    """
    loss = ce
    for c in constraints:
        ratio = expected[c.metric] / c.target
        w = c.exponent(float(expected[c.metric].detach()))
        if form == "mul":
            loss = loss * ratio ** (-w)
        elif form == "add":
            penalty = torch.clamp(ratio - 1.0, min=0.0) if c.hard else ratio
            loss = loss + (-w) * penalty
        else:
            raise ValueError("unknown loss form {!r} (mul or add)".format(form))
    return loss


class CostModel:
    """Latency (from a LUT), parameters and memory of the space's architectures: exact for a path,
    and as differentiable expectations under the architecture distribution."""

    def __init__(self, space, lut):
        self.space = space
        self.lut = lut
        some_arch = space.architecture([0] * len(space.blocks))
        costs = layer_costs(some_arch)
        searchable = [b.searchable for b in some_arch.blocks]
        fixed = [costs[0], costs[-1]] + [c for c, s in zip(costs[1:-1], searchable) if not s]
        self.fixed_params = float(sum(c.params for c in fixed))
        self.fixed_peak = float(max(c.peak_elements for c in fixed))
        self.params, self.peaks = [], []
        for sb in space.blocks:
            row = [_op_cost(space, sb, op) for op in sb.ops]
            self.params.append(torch.tensor([p for p, _ in row], dtype=torch.float64))
            self.peaks.append(torch.tensor([a for _, a in row], dtype=torch.float64))
        self.latency = [torch.tensor(row, dtype=torch.float64) for row in lut.table]

    def expected(self, probabilities):
        """Expected latency_ms, params_m, memory_mb under per-block probabilities (differentiable).
        Peak memory is the largest expected block peak: a smooth enough stand-in for E[max]."""
        probs = [p.double().cpu() for p in probabilities]
        latency = self.lut.correct(
            self.lut.fixed_ms + sum((p * t).sum() for p, t in zip(probs, self.latency)))
        params = self.fixed_params + sum((p * t).sum() for p, t in zip(probs, self.params))
        peak = torch.stack([(p * t).sum() for p, t in zip(probs, self.peaks)]).max()
        peak = torch.clamp(peak, min=self.fixed_peak)
        return {"latency_ms": latency, "params_m": params / 1e6,
                "memory_mb": (params + peak) * FLOAT_BYTES / MIB}

    def of_path(self, path):
        """The same metrics for one architecture (op indices), as floats."""
        one_hot = [torch.nn.functional.one_hot(torch.tensor(i), len(sb.ops)).double()
                   for i, sb in zip(path, self.space.blocks)]
        return dict((k, float(v)) for k, v in self.expected(one_hot).items())


def _op_cost(space, search_block, op):
    """(params, peak activation elements) of one candidate op, from the complexity formulas."""
    if op.is_zero:
        return 0, 0
    choices = [0] * len(space.blocks)
    choices[search_block.index] = space.op_index(search_block.index, op.name)
    cost = layer_costs(space.architecture(choices))[search_block.index + 2]  # stem, fixed first block
    return cost.params, cost.peak_elements
