"""The pick, the one definition behind the search's best architecture and the dashboard's live best.

A sample is a mapping with at least `objective` (None counts as the lowest) and `feasible` (it
meets every target). A feasible sample beats any infeasible one; among samples alike in that, the
higher objective wins; a tie goes to the later sample, its supernet having trained longer.

So the pick is the most accurate architecture that meets every target, in the sense of the run's
constraint form: with `hard` the objective is the accuracy itself under the targets; with the
default `absolute` form, budget left unused costs w per unit of T as well (0.5 points of accuracy
for each 1% of T at w = -0.5), because T is a budget to use: a smaller network that is no more
accurate than the ones at T is not what the user asked for, and shared-weight accuracies differ
by noise of a few points (a 0.68 T argmax beat the band's samples by 2 points on a tiny setting).
With `soft`, faster is better everywhere, as MnasNet's factor says.
"""


def better(sample, best):
    """Does `sample`, taken after `best`, beat it?"""
    if best is None:
        return True
    if bool(sample["feasible"]) != bool(best["feasible"]):
        return bool(sample["feasible"])
    return _objective(sample) >= _objective(best)


def best_sample(samples):
    """The best of `samples` in the order they were taken (None if there are none)."""
    best = None
    for sample in samples:
        if better(sample, best):
            best = sample
    return best


def _objective(sample):
    return float("-inf") if sample["objective"] is None else sample["objective"]
