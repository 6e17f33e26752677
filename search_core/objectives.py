"""Objectives: how a constraint on a metric (latency_ms, memory_mb or params_m, with a target T and
a weight w < 0) enters the reward and the loss, and the differentiable expected costs.

Three forms:
- absolute (the default; TuNAS, Bender et al. 2020): reward ACC + w |v/T - 1|, loss CE + (-w)
  |E[v]/T - 1|. Being under T costs as much as being over it, so the search spends the budget and
  lands on T in one search, where MnasNet's forms took several (TuNAS, section 3.3).
- soft (MnasNet): the factor (v/T)^w on both sides of T: the user trades accuracy for speed
  everywhere; the search goes as fast as the trade-off says, whatever T.
- hard (MnasNet): no reward below T, (v/T)^-1 above it: T as a ceiling only.
Factors of several constraints multiply; absolute terms add.
"""
from dataclasses import dataclass

import torch

from nano_agent.complexity import FLOAT_BYTES, layer_costs

METRICS = ("latency_ms", "memory_mb", "params_m")
FORMS = ("absolute", "soft", "hard")
HARD_WEIGHT = -1.0
# an absolute target is a budget to use: a value from this share of T up to T uses it
BUDGET_FLOOR = 0.85
MIB = 2.0 ** 20


@dataclass(frozen=True)
class Constraint:
    metric: str
    target: float
    weight: float = -0.07
    form: str = "absolute"

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError("unknown metric {!r} (known: {})".format(self.metric, ", ".join(METRICS)))
        if self.form not in FORMS:
            raise ValueError("unknown constraint form {!r} (known: {})".format(self.form, ", ".join(FORMS)))
        if not self.target > 0:
            raise ValueError("the {} target must be positive, got {}".format(self.metric, self.target))
        if not self.weight < 0:
            raise ValueError("the {} weight w must be negative (it rewards smaller values), got {}"
                             .format(self.metric, self.weight))

    def exponent(self, value):
        """w of MnasNet's factor (v/T)^w at value v (soft and hard forms)."""
        if self.form == "hard":
            return 0.0 if value <= self.target else HARD_WEIGHT
        return self.weight

    def factor(self, value):
        """The reward's multiplier at value v: 1 for the absolute form, whose term adds."""
        if self.form == "absolute":
            return 1.0
        return (value / self.target) ** self.exponent(float(value))

    def term(self, value):
        """The reward's addend at value v: w |v/T - 1| for the absolute form, else 0."""
        if self.form != "absolute":
            return 0.0
        return self.weight * abs(value / self.target - 1.0)

    def satisfied(self, value):
        return value <= self.target

    def uses_budget(self, value):
        """Does `value` use the budget, at least BUDGET_FLOOR x T? Only the absolute form asks it."""
        return self.form != "absolute" or value >= BUDGET_FLOOR * self.target


def objective(accuracy, metrics, constraints):
    """The reward of an architecture: accuracy x the soft and hard factors + the absolute terms."""
    reward = accuracy
    for c in constraints:
        reward *= c.factor(metrics[c.metric])
    return reward + sum(c.term(metrics[c.metric]) for c in constraints)


def constrained_loss(ce, expected, constraints, form="mul"):
    """The gradient strategy's loss on cross-entropy `ce`, with `expected` metric tensors.

    absolute constraints: ce + (-w) x |E/T - 1|, whatever `form`. Soft and hard ones, by `form`:
    mul: ce x (E/T)^-w: the reward's form turned into a loss (lower is better);
    add: ce + (-w) x E/T for soft constraints, ce + (-w) x max(0, E/T - 1) for hard ones.
    """
    if form not in ("mul", "add"):
        raise ValueError("unknown loss form {!r} (mul or add)".format(form))
    loss = ce
    for c in constraints:
        ratio = expected[c.metric] / c.target
        if c.form == "absolute":
            loss = loss + (-c.weight) * torch.abs(ratio - 1.0)
            continue
        w = c.exponent(float(expected[c.metric].detach()))
        if form == "mul":
            loss = loss * ratio ** (-w)
        else:
            penalty = torch.clamp(ratio - 1.0, min=0.0) if c.form == "hard" else ratio
            loss = loss + (-w) * penalty
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
