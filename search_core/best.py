"""The pick, the one definition behind the search's best architecture and the dashboard's live best.

A sample is a mapping with at least `accuracy` and `objective` (None counts as the lowest),
`feasible` (it meets every target) and `uses_budget` (every absolute target's value is at least
0.85 T; absent counts as true: samples from before it existed).

The user asks which network to deploy: the most accurate one that meets every target. So samples
are ranked by feasible, then uses_budget, then accuracy: the pick is the most accurate sample
within [0.85 T, T] when there is one, else the most accurate that meets the targets. The absolute
form's penalty for budget left unused steers the search's distribution towards T; it has no say in
the pick, where it once chose 52.9% at 0.93 T beside 83.3% at 0.85 T. Only the `soft` form ranks
by its objective ACC x (v/T)^w: with it the user asked to trade accuracy for speed everywhere. When
no sample meets the targets, the objective ranks them, so that the pick misses T by the least its
accuracy allows. A tie goes to the later sample, its supernet having trained longer.

How sure the pick is: shared-weight accuracies are measured on the validation split, so two of them
differ by sampling error alone; `explain` says which runners-up lie within that error of the pick.
"""
import math

Z_95 = 1.96  # two-sided 95% normal quantile


def better(sample, best, constraint="absolute"):
    """Does `sample`, taken after `best`, beat it? `constraint`: the run's constraint form."""
    return best is None or _rank(sample, constraint) >= _rank(best, constraint)


def best_sample(samples, constraint="absolute"):
    """The best of `samples` in the order they were taken (None if there are none)."""
    best = None
    for sample in samples:
        if better(sample, best, constraint):
            best = sample
    return best


def latest(samples):
    """Each architecture's latest evaluation among `samples`, in the order they were taken."""
    last = {}
    for sample in samples:
        last.pop(sample["arch_hash"], None)
        last[sample["arch_hash"]] = sample
    return list(last.values())


def _rank(sample, constraint):
    feasible = bool(sample["feasible"])
    # meeting the targets, the most accurate wins; missing them, the objective weighs the miss
    score = sample["accuracy"] if feasible and constraint != "soft" else sample["objective"]
    return (feasible, sample.get("uses_budget") is not False,
            float("-inf") if score is None else score)


def difference_noise(accuracy, val_size):
    """The 95% half-width of the difference between two accuracies near `accuracy`, each measured
    on `val_size` images (binomial sampling error; None without a size)."""
    if not val_size or accuracy is None:
        return None
    p = min(max(accuracy, 0.0), 1.0)
    return Z_95 * math.sqrt(2.0 * p * (1.0 - p) / val_size)


def explain(samples, pick, val_size=None, constraint="absolute", runners_up=3):
    """Why `pick` is the pick among `samples` (one per architecture: its latest evaluation):
    how many met every target and how many used the budget, the pick's accuracy margin over the
    best other architectures in the pick's group, which of them lie within the sampling noise, and
    the rule in words."""
    if pick is None:
        return None
    seen = latest(samples)  # an architecture evaluated again later counts once, as last seen
    group = [s for s in seen if s["arch_hash"] != pick["arch_hash"] and
             _rank(s, constraint)[:2] == _rank(pick, constraint)[:2]]
    group.sort(key=lambda s: _rank(s, constraint), reverse=True)
    noise = difference_noise(pick["accuracy"], val_size)
    others = []
    for s in group[:runners_up]:
        margin = pick["accuracy"] - s["accuracy"]
        others.append({"id": s.get("id"), "arch_hash": s["arch_hash"], "accuracy": s["accuracy"],
                       "latency_ms": s.get("latency_ms"), "margin": margin,
                       "within_noise": None if noise is None else abs(margin) <= noise})
    why = {"architectures": len(seen),
           "feasible": sum(1 for s in seen if s["feasible"]),
           "in_band": sum(1 for s in seen if s["feasible"] and s.get("uses_budget") is not False),
           "pick_feasible": bool(pick["feasible"]), "pick_in_band": pick.get("uses_budget") is not False,
           "ranked_by": "accuracy" if pick["feasible"] and constraint != "soft" else "objective",
           "val_size": val_size, "noise": noise, "runners_up": others}
    return dict(why, rule=rule(why))


def rule(why):
    """The rule that made the pick, in words: the one wording of the console and the dashboard."""
    if not why["pick_feasible"]:
        return "No architecture met every target: the pick misses them by the least"
    if why["ranked_by"] == "objective":
        return "The best objective (soft form) of the {} architectures that met every target".format(
            why["feasible"])
    if why["pick_in_band"] and why["in_band"] < why["feasible"]:
        return "The most accurate of the {} architectures within [0.85 T, T] ({} of {} met every " \
               "target)".format(why["in_band"], why["feasible"], why["architectures"])
    return "The most accurate of the {} of {} architectures that met every target".format(
        why["feasible"], why["architectures"])


def describe(why):
    """`explain`'s answer in words, one line (None for none)."""
    if why is None:
        return None
    text = why["rule"]
    for other in why["runners_up"][:1]:
        text += "; next best {:.2%} ({:+.2f} points)".format(other["accuracy"], -100 * other["margin"])
        if other["within_noise"] is not None:
            text += ", {} the +-{:.2f}-point noise of {} validation images".format(
                "within" if other["within_noise"] else "beyond", 100 * why["noise"], why["val_size"])
    return text
