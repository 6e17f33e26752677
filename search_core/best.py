"""The pick, the one definition behind the search's best architecture and the dashboard's live best.

A sample is a mapping with at least `objective` (None counts as the lowest), `feasible` (it meets
every target) and `uses_budget` (every absolute target's value is at least 0.85 T; absent counts
as true: samples from before it existed). Samples are ranked by feasible, then uses_budget, then
objective; a tie goes to the later sample, its supernet having trained longer.

So the pick is the most accurate architecture that meets every target, in the sense of the run's
constraint form: with `hard` the objective is the accuracy itself under the targets; with the
default `absolute` form T is a budget to use, so a sample within [0.85 T, T] beats any faster one,
and within that band budget left unused still costs w per unit of T (0.5 points of accuracy for
each 1% of T at w = -0.5). Shared-weight accuracies differ by noise of a few points, on a tiny
setting by ten or more (a 0.81 T sample once beat the band's), and a smaller network that
is no more accurate than the ones at T is not what the user asked for. With `soft`, faster is
better everywhere, as MnasNet's factor says.
"""


def better(sample, best):
    """Does `sample`, taken after `best`, beat it?"""
    return best is None or _rank(sample) >= _rank(best)


def best_sample(samples):
    """The best of `samples` in the order they were taken (None if there are none)."""
    best = None
    for sample in samples:
        if better(sample, best):
            best = sample
    return best


def _rank(sample):
    objective = float("-inf") if sample["objective"] is None else sample["objective"]
    return (bool(sample["feasible"]), sample.get("uses_budget") is not False, objective)
