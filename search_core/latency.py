"""Latency sources behind one interface: this machine's CPU (`LocalDevice`) and device agents
(`device_client.AgentDevice`).

A source has a `device_id` (names the device in caches), `measure(arch, input_shape=None)` (end-to-end
statistics, see nano_agent.measure.measure_architecture), `profile(space, progress=None)` (the per-op
lookup table, see nano_agent.measure.profile_lut) and `info()`.
"""
import os
import platform

import torch

from nano_agent.config import TOKEN_ENV
from nano_agent.measure import measure_architecture, profile_lut

from .device_client import AgentDevice, LatencyError, parse_address


class LocalDevice:
    """This machine's CPU, with a fixed thread count (1 by default: the most repeatable figure)."""

    def __init__(self, threads=1, warmup=10, runs=30):
        self.threads, self.warmup, self.runs = threads, warmup, runs
        self.device_id = "local:{}:cpu:{}t".format(platform.node() or "host", threads)

    def measure(self, arch, input_shape=None):
        return measure_architecture(arch, input_shape, self.warmup, self.runs, "cpu", self.threads)

    def profile(self, space, progress=None):
        return profile_lut(space, self.warmup, self.runs, "cpu", self.threads, progress)

    def info(self):
        return {"device_id": self.device_id, "hostname": platform.node(),
                "platform": platform.platform(), "torch": torch.__version__,
                "cpu_count": os.cpu_count(), "threads": self.threads}


def open_device(spec, threads=1, warmup=10, runs=30, token=None):
    """The latency source named by `spec`: "local" (this machine's CPU, `threads` threads), or a
    device agent as "host:port", "host" (port 8765) or "agent:host:port", authenticated with
    `token` (default: $NANO_AGENT_TOKEN). The agent measures with its own thread setting."""
    if spec == "local":
        return LocalDevice(threads, warmup, runs)
    host, port = parse_address(spec)
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise LatencyError("device {!r} is a device agent: give its token (--device-token or "
                           "${})".format(spec, TOKEN_ENV))
    return AgentDevice(host, port, token, warmup, runs)
