"""A pool of identical devices as one latency source: real agent processes, measurements spread
over the idle ones, a lost one handing its measurement to the others, a search that outlives one."""
import json
import random
import subprocess

import pytest

from nano_agent.space import SearchSpace
from search_core.device_client import DeviceLost, LatencyError
from search_core.latency import open_device
from search_core.pool import DevicePool
from processes import ROOT, TOKEN, Agent, tiny_search, without_token_env

pytestmark = pytest.mark.process

SPACE = SearchSpace(0.5, 32, 10, 1)


def members(count, seed):
    rng = random.Random(seed)
    return [SPACE.architecture([rng.randrange(len(b.ops)) for b in SPACE.blocks]) for _ in range(count)]


@pytest.fixture
def agents(tmp_path):
    started = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        started.append(Agent(tmp_path / str(i), timeout=10))
    yield started
    for agent in started:
        agent.stop()


def test_a_pool_spreads_its_measurements_and_outlives_a_lost_member(agents):
    spec = ",".join("127.0.0.1:{}".format(a.port) for a in agents)
    pool = open_device(spec, warmup=1, runs=3, token=TOKEN, group="nanos")
    try:
        assert isinstance(pool, DevicePool) and pool.device_key == "group:nanos"
        archs = members(8, 0)
        stats = pool.measure_many(archs)
        assert [s["arch_hash"] for s in stats] == [a.hash for a in archs]  # in order
        assert all(s["measured"] > 0 for s in pool.stats())  # both took a share
        agents[0].stop()
        stats = pool.measure_many(members(6, 1))
        assert len(stats) == 6 and all(s["min_ms"] > 0 for s in stats)
        lost, alive = pool.stats()
        assert lost["lost"] >= 1 and alive["lost"] == 0  # tried, then rested
        agents[1].stop()
        with pytest.raises(DeviceLost, match="every device of the pool failed"):
            pool.measure(members(1, 2)[0])
    finally:
        pool.close()


def test_a_search_on_a_pool_finishes_when_one_agent_is_killed(agents, tmp_path):
    """Two agents in one pool; one is killed once the search has started: its pending
    measurement goes to the other, and every sample is there at the end."""
    out = tmp_path / "run"
    device = ",".join("127.0.0.1:{}".format(a.port) for a in agents)
    search = subprocess.Popen(
        tiny_search(out, device, "--samples-per-epoch", "3", "--device-group", "nanos"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=without_token_env())
    events = []
    try:
        for line in search.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "started":
                agents[0].stop()
        assert search.wait(120) == 0, events[-3:]
    finally:
        search.kill()
    finished = events[-1]
    assert finished["event"] == "finished" and events[0]["event"] != "failed"
    samples = [e for e in events if e["event"] == "sample"]
    assert len(samples) == finished["samples"]
    assert {s["epoch"] for s in samples if s["kind"] != "final"} == {1, 2}
    assert all(s["latency_ms"] > 0 for s in samples)
    assert not any(e["event"] == "device_wait" for e in events)  # the other agent served on
    cache = [json.loads(line) for line in (out / "latency_cache.jsonl").read_text().splitlines()]
    assert cache and all(e["key"].startswith("group:nanos|") for e in cache)


class Refusing:
    """A member that refuses a request (as an agent does a bad one), then measures."""

    def __init__(self):
        self.calls = 0

    def measure(self, arch, input_shape=None):
        self.calls += 1
        if self.calls == 1:
            raise LatencyError("measurement failed: out of memory")
        return {"min_ms": 1.0}


def test_a_refused_request_leaves_the_member_in_the_pool():
    """A refusal is the request's fault, not the device's: it reaches the caller, and the member
    is idle again for the next measurement (it would otherwise be lost to the pool for good)."""
    member = Refusing()
    pool = DevicePool([member], ["a:1"], "one")
    try:
        with pytest.raises(LatencyError, match="out of memory"):
            pool.measure(None)
        assert pool.measure(None) == {"min_ms": 1.0}
        assert pool.snapshot() == {"pending": 0, "members": [
            {"address": "a:1", "measured": 1, "lost": 0, "busy_s": pytest.approx(0, abs=1),
             "busy": False}]}
    finally:
        pool.close()
