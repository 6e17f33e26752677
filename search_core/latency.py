"""Latency sources behind one interface: this machine's CPU (`LocalDevice`) and device agents
(`device_client.AgentDevice`).

A source has a `device_key` (names the device in caches), `measure(arch, input_shape=None)` (end-to-end
statistics, see nano_agent.measure.measure_architecture), `profile(space, progress=None)` (the per-op
lookup table, see nano_agent.measure.profile_lut) and `info()`.
"""
import multiprocessing
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

from nano_agent.credentials import TOKEN_ENV
from nano_agent.measure import measure_architecture, profile_lut
from nano_agent.results import latency_ms

from .device_client import AgentDevice, DeviceLost, LatencyError, backend_suffix, parse_address
from .pool import DevicePool


class LocalDevice:
    """This machine's CPU, with a fixed thread count (1 by default: the most repeatable figure).

    `isolated`: measure in a process of its own (spawned on first use; `close()` ends it), as a
    device agent does, for a process that also trains: inside a search's process the same
    network measured 4 to 10% slower than in a fresh one, so that its picks, measured again
    afterwards, landed lower under the target than they were chosen at (bench/landing.py)."""

    def __init__(self, threads=1, warmup=10, runs=30, backend="pytorch", isolated=False):
        self.threads, self.warmup, self.runs, self.backend = threads, warmup, runs, backend
        self.isolated = isolated
        self._worker = None
        self.device_key = "local:{}:cpu:{}t".format(platform.node() or "host",
                                                   threads) + backend_suffix(backend)

    def measure(self, arch, input_shape=None):
        return self._call(measure_architecture, arch, input_shape, self.warmup, self.runs, "cpu",
                          self.threads, self.backend)

    def profile(self, space, progress=None):
        # a callback cannot cross into an isolated worker: there the table is one step of progress
        table = self._call(profile_lut, space, self.warmup, self.runs, "cpu", self.threads,
                           None if self.isolated else progress, backend=self.backend)
        if progress and self.isolated:
            progress(1, 1)
        return table

    def _call(self, function, *args, **kwargs):
        if not self.isolated:
            return function(*args, **kwargs)
        if self._worker is None:
            # spawn: a forked child of a process that has run torch's thread pool can hang
            self._worker = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return self._worker.submit(function, *args, **kwargs).result()
        except BrokenProcessPool:
            self._worker = None  # the next call starts another
            raise LatencyError("the process measuring on this machine's CPU died (out of "
                               "memory?)") from None

    def close(self):
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None

    def info(self):
        return {"device_id": self.device_key, "hostname": platform.node(),
                "platform": platform.platform(), "torch": torch.__version__,
                "cpu_count": os.cpu_count(), "threads": self.threads}


class PatientDevice:
    """A latency source that outlasts a lost device: while it does not answer (`DeviceLost`), each
    call is retried with growing pauses for up to `wait_s` seconds, and `on_wait(waiting, error,
    waited_s)` hears when the wait starts, at each retry and when the device is back. A refusal
    (wrong token, bad request) fails at once, as does a wait past `wait_s`."""

    PAUSES_S = (1.0, 2.0, 4.0, 8.0, 15.0)  # then every 15 s

    def __init__(self, source, wait_s, on_wait=None, clock=time.monotonic, sleep=time.sleep):
        self.source, self.wait_s = source, wait_s
        self.on_wait = on_wait or (lambda waiting, error, waited_s: None)
        self.clock, self.sleep = clock, sleep
        self._device_key = None

    @property
    def device_key(self):
        if self._device_key is None:  # an agent's comes from its welcome: a network call
            self._device_key = self._patiently(lambda: self.source.device_key)
        return self._device_key

    def measure(self, arch, input_shape=None):
        return self._patiently(self.source.measure, arch, input_shape)

    def measure_many(self, archs):
        """At once where the source can (a device pool), else one after another."""
        if hasattr(self.source, "measure_many"):
            return self._patiently(self.source.measure_many, archs)
        return [self.measure(arch) for arch in archs]

    def profile(self, space, progress=None):
        return self._patiently(self.source.profile, space, progress)

    def info(self):
        return self._patiently(self.source.info)

    def pool_stats(self):
        """A device pool's queue and members (pool.DevicePool.snapshot), None for one device."""
        snapshot = getattr(self.source, "snapshot", None)
        return snapshot() if snapshot else None

    def close(self):
        close = getattr(self.source, "close", None)
        if close:
            close()

    def _patiently(self, call, *args):
        started, tries = None, 0
        while True:
            try:
                result = call(*args)
            except DeviceLost as e:
                now = self.clock()
                started = now if started is None else started
                waited = now - started
                if waited >= self.wait_s:
                    raise DeviceLost("{} (waited {:.0f} s for it, the limit is {:g} s: resume the "
                                     "run once the device is back)".format(e, waited, self.wait_s))
                self.on_wait(True, str(e), waited)
                self.sleep(min(self.PAUSES_S[min(tries, len(self.PAUSES_S) - 1)],
                               self.wait_s - waited))
                tries += 1
                continue
            if started is not None:
                self.on_wait(False, None, self.clock() - started)
            return result


def open_device(spec, threads=1, warmup=10, runs=30, token=None, backend="pytorch", group=None,
                isolated=False):
    """The latency source named by `spec`: "local" (this machine's CPU, `threads` threads, in a
    process of its own if `isolated`: see LocalDevice), a
    device agent as "host:port", "host" (port 8765) or "agent:host:port", or a pool of identical
    agents as those addresses separated by commas (named `group`, default `spec`: see pool.py);
    agents authenticate with `token` (default: $NANO_AGENT_TOKEN) and measure with their own
    thread setting. `backend`: "pytorch", or "onnxruntime" (the model exported to ONNX, as it will
    be deployed)."""
    if spec == "local":
        return LocalDevice(threads, warmup, runs, backend, isolated)
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise LatencyError("device {!r} is a device agent: give its token (--device-token or "
                           "${})".format(spec, TOKEN_ENV))
    addresses = [a.strip() for a in spec.split(",")]
    agents = [AgentDevice(*parse_address(a), token, warmup, runs, backend) for a in addresses]
    if len(agents) == 1:
        return agents[0]
    return DevicePool(agents, addresses, group or spec, backend)


def measure_interleaved(device, archs, rounds, times=None):
    """Each distinct architecture's latency (the fastest timed run), measured in `rounds` rounds
    that each measure every one once, so that a change in the machine's load falls on all alike:
    {hash: the median of its rounds}. `times`, a dict where given, gets every round's figure
    ({hash: [ms per round]})."""
    distinct = {arch.hash: arch for arch in archs}
    times = {} if times is None else times
    times.update({key: [] for key in distinct})
    for _ in range(rounds):
        for key, arch in distinct.items():
            times[key].append(latency_ms(device.measure(arch)))
    return {key: statistics.median(times[key]) for key in distinct}
