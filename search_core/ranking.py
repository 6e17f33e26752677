"""Does a run's shared-weight accuracy rank its architectures as standalone training does? Which
architectures to retrain for the check, and how well the two rankings agree.

No torch import: the dashboard chooses the architectures and computes the agreement in its web
process.
"""
import math

MIN_ARCHITECTURES = 3  # fewer cannot be ranked against each other with any meaning


def spread(samples, count, pick_hash=None):
    """`count` distinct architectures of `samples` (dicts with `arch_hash` and `accuracy`, the
    shared-weight one; the last evaluation of an architecture stands for it) evenly spread over
    their ranking, the most and the least accurate among them, and the pick (`pick_hash`) always
    one of them. Fewer where there are fewer. Most accurate first."""
    latest = {}
    for sample in samples:
        latest[sample["arch_hash"]] = sample
    ranked = sorted(latest.values(), key=lambda s: (-s["accuracy"], s["arch_hash"]))
    if len(ranked) <= count:
        return ranked
    chosen = sorted({round(i * (len(ranked) - 1) / (count - 1)) for i in range(count)})
    hashes = [s["arch_hash"] for s in ranked]
    if pick_hash in latest and hashes.index(pick_hash) not in chosen:
        where = hashes.index(pick_hash)  # it takes the place of the nearest chosen but an end
        inner = chosen[1:-1] or chosen
        chosen[chosen.index(min(inner, key=lambda i: abs(i - where)))] = where
    return [ranked[i] for i in sorted(chosen)]


def agreement(shared, standalone):
    """Kendall's tau between the two accuracies of the same architectures, and its two-sided
    p-value (scipy's; tau-b, ties allowed); (None, None) under MIN_ARCHITECTURES or where either
    ranking is constant."""
    if len(shared) < MIN_ARCHITECTURES:
        return None, None
    from scipy.stats import kendalltau  # here: only a check's answer needs it
    tau, p_value = kendalltau(shared, standalone)
    if tau is None or math.isnan(tau):
        return None, None
    return float(tau), float(p_value)
