"""The one table of limits: every bound on a size or a count that the agent, the search, the API and
the dashboard's forms check. Each part reads it from here (the pages through /api/defaults), so a
setting one of them accepts is never refused by another later.

Python 3.6 compatible, standard library only.
"""
from collections import namedtuple


class Limit(namedtuple("Limit", "low high")):
    """An inclusive range [low, high]."""

    __slots__ = ()

    def __contains__(self, value):
        return self.low <= value <= self.high

    def describe(self):
        return "[{}, {}]".format(self.low, self.high)


RESOLUTION = Limit(8, 512)  # input height and width (px): 8 px still leaves the last stage 1x1
WIDTH_MULT = Limit(0.1, 4.0)
NUM_CLASSES = Limit(1, 100000)
IN_CHANNELS = Limit(1, 64)  # channels of the input image
CHANNELS = Limit(1, 4096)  # channels of any layer, expanded ones included
BLOCKS = Limit(0, 64)  # blocks of an architecture
BATCH = Limit(1, 64)  # batch of a measured input
TIMED_RUNS = Limit(1, 1000)  # timed runs of one measurement
WARMUP_RUNS = Limit(0, 1000)  # untimed runs before them
THREADS = Limit(1, 256)  # torch threads
MEMORY_MB = Limit(1, 1024 * 1024)  # an agent's ceiling on estimated inference memory (MiB)
DEFAULT_MAX_MEMORY_MB = 1024
REQUEST_S = Limit(1, 7 * 24 * 3600)  # an agent's ceiling on the time one request holds its lock
DEFAULT_MAX_REQUEST_S = 1800  # a profile of a 224 px space on a Jetson Nano's CPU fits

TABLE = {"resolution": RESOLUTION, "width_mult": WIDTH_MULT, "num_classes": NUM_CLASSES,
         "in_channels": IN_CHANNELS, "channels": CHANNELS, "blocks": BLOCKS, "batch": BATCH,
         "timed_runs": TIMED_RUNS, "warmup_runs": WARMUP_RUNS, "threads": THREADS,
         "memory_mb": MEMORY_MB, "request_s": REQUEST_S}


def as_dict():
    """{name: {"min": low, "max": high}}: the table as JSON."""
    return dict((name, {"min": limit.low, "max": limit.high}) for name, limit in TABLE.items())
