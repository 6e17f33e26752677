"""The measurement cache and the measurer that goes through it.

Measurements are keyed by (device, architecture hash, input shape): an architecture is measured once
per device. No torch import: the dashboard seeds and collects the cache files of its runs.
"""
import json
import os
import random
import threading

from nano_agent.results import latency_ms


class LatencyCache:
    """Measurements keyed by (device, architecture hash, input shape), appended to a JSON-lines file
    (one {"key", "stats"} object a line) so that a long search never rewrites what it stored."""

    def __init__(self, path=None):
        self.path = path
        self._lock = threading.Lock()
        self._entries = {}
        if path and os.path.exists(path):
            _end_with_newline(path)
            with open(path) as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self._entries[entry["key"]] = entry["stats"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by an interrupted run: measure again

    @staticmethod
    def key(device_key, arch_hash, input_shape):
        return "{}|{}|{}".format(device_key, arch_hash, "x".join(str(d) for d in input_shape))

    def get(self, key):
        with self._lock:
            return self._entries.get(key)

    def put(self, key, stats):
        with self._lock:
            self._entries[key] = stats
            if self.path:
                with open(self.path, "a") as f:
                    f.write(json.dumps({"key": key, "stats": stats}, sort_keys=True) + "\n")

    def __len__(self):
        return len(self._entries)

    def items(self):
        """(key, stats) of every measurement held."""
        with self._lock:
            return list(self._entries.items())


class Measurer:
    """Measures architectures on one source through the cache; counts hits for the summary."""

    def __init__(self, source, cache=None):
        self.source = source
        self.cache = cache if cache is not None else LatencyCache()
        self.hits = self.misses = 0
        self._fresh = set()  # keys measure_many measured that measure has not returned yet

    def key(self, arch, input_shape=None):
        """The cache key of `arch` on this source (at its own input shape by default)."""
        return LatencyCache.key(self.source.device_key, arch.hash, input_shape or arch.input_shape)

    def measure(self, arch, input_shape=None):
        shape = tuple(input_shape or arch.input_shape)
        key = self.key(arch, shape)
        stats = self.cache.get(key)
        if stats is not None and key in self._fresh:  # measured just now, for this call
            self._fresh.discard(key)
            self.misses += 1
            return dict(stats, cached=False)
        if stats is not None:
            self.hits += 1
            return dict(stats, cached=True)
        self.misses += 1
        stats = self.source.measure(arch, shape)
        self.cache.put(key, stats)
        return dict(stats, cached=False)

    def prefetch(self, archs):
        """Measure the architectures not cached yet at once where the source can (a device
        pool: `measure_many`), else one after another; `measure` then returns each (counted, and
        marked not cached, as if it had measured it itself)."""
        keys = {}
        for arch in archs:
            key = self.key(arch)
            if self.cache.get(key) is None:
                keys.setdefault(key, arch)
        for key, stats in zip(keys, self._measure_all(list(keys.values()))):
            self.cache.put(key, stats)
            self._fresh.add(key)

    def _measure_all(self, archs):
        measure_many = getattr(self.source, "measure_many", None)
        return measure_many(archs) if measure_many else [self.source.measure(a) for a in archs]

    def measure_rounds(self, archs, rounds=3, seed=0):
        """Stats of each architecture: from the cache, or else the fastest of `rounds` measurements
        taken in rounds over all of those not cached (a new order each round), then cached. A
        machine that slows down for seconds at a time (a shared host) disturbs one round, rarely
        all of them."""
        keys = [self.key(arch) for arch in archs]
        results = [self.cache.get(key) for key in keys]
        self.hits += sum(stats is not None for stats in results)
        order = [i for i, stats in enumerate(results) if stats is None]
        generator = random.Random(seed)
        for _ in range(rounds):
            for i, stats in zip(order, self._measure_all([archs[i] for i in order])):
                if results[i] is None or latency_ms(stats) < latency_ms(results[i]):
                    results[i] = stats
            generator.shuffle(order)
        for i in order:
            self.misses += 1
            self.cache.put(keys[i], results[i])
        return results


def _end_with_newline(path):
    """Terminate a last line cut short, so the next appended entry starts on a line of its own."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")
