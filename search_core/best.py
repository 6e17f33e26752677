"""The best-sample rule, the one definition behind the search's pick and the dashboard's live best.

A sample is a mapping with at least `objective` (None counts as the lowest) and `feasible`.
"""


def better(sample, best, hard=False):
    """Does `sample`, arriving after `best`, beat it? The higher objective; the later sample on a
    tie, its supernet having trained longer; under hard constraints a feasible sample before any
    infeasible one."""
    if best is None:
        return True
    if hard and bool(sample["feasible"]) != bool(best["feasible"]):
        return bool(sample["feasible"])
    return _objective(sample) >= _objective(best)


def best_sample(samples, hard=False):
    """The best of `samples` in the order they were taken (None if there are none)."""
    best = None
    for sample in samples:
        if better(sample, best, hard):
            best = sample
    return best


def _objective(sample):
    return float("-inf") if sample["objective"] is None else sample["objective"]
