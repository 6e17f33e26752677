"""What a measurement and a profile return: the timing summary, the latency statistic the search
optimises, and the lookup table's format. Standard library only, so that the search server reads
results without torch. Python 3.6 compatible."""
import math

LUT_FORMAT = "edge-nas.lut"
LUT_VERSION = 1
LUT_METHOD = "in_context"


def summarize(times_ms):
    """median, mean, std, p90, min, max of a list of times in milliseconds (and the raw times)."""
    ordered = sorted(times_ms)
    n = len(ordered)
    mean = sum(ordered) / n
    std = math.sqrt(sum((t - mean) ** 2 for t in ordered) / (n - 1)) if n > 1 else 0.0
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
    return {"median_ms": median, "mean_ms": mean, "std_ms": std,
            "p90_ms": ordered[min(n - 1, int(math.ceil(0.9 * n)) - 1)],
            "min_ms": ordered[0], "max_ms": ordered[-1], "runs": n, "times_ms": list(times_ms)}


def latency_ms(stats):
    """The latency the search optimises and the LUT predicts: the fastest timed run. Whatever else
    runs on the machine only ever adds time, so the minimum is the most repeatable estimate of the
    network's own latency (the reasoning of Python's timeit); median and p90 stay in the stats."""
    return stats["min_ms"]
