"""Measurement throughput of a device pool with 1, 2 and 3 agents, and what the pool costs.

Real agent processes on loopback (1 torch thread each) measure tiny architectures of the digits
setting (32x32x1, width 0.5; 1 warm-up and 3 timed runs each), so that the agents, not the
machine's cores, bound the throughput as far as that goes: on 2 cores, 3 agents share 2 cores.
Every count measures the same `--archs` random members, fresh (no cache), through
`DevicePool.measure_many`; the pool's own cost per measurement is the time through a pool of one
agent minus the time through that agent's client directly, alternated over `--rounds` rounds.

    .venv/bin/python bench/scale_out.py [--archs 60] [--rounds 6] [--max-agents 3]

Ends with one JSON line: `per_minute` (measurements per minute per agent count), `speedup` over
one agent, `pool_overhead_ms` (per measurement, median over the rounds) and the members' shares.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nano_agent.space import SearchSpace  # noqa: E402
from search_core.device_client import AgentDevice  # noqa: E402
from search_core.pool import DevicePool  # noqa: E402

TOKEN = "bench-token"
SPACE = SearchSpace(0.5, 32, 10, 1)
WARMUP, RUNS = 1, 3


def start_agent(directory):
    proc = subprocess.Popen(
        [sys.executable, "-m", "nano_agent", "--host", "127.0.0.1", "--port", "0", "--token", TOKEN,
         "--threads", "1", "--config", os.path.join(directory, "agent.json")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    return proc, int(line.split("127.0.0.1:")[1].split()[0])


def archs(count, seed):
    rng = random.Random(seed)
    return [SPACE.architecture([rng.randrange(len(b.ops)) for b in SPACE.blocks])
            for _ in range(count)]


def agent(port):
    return AgentDevice("127.0.0.1", port, TOKEN, WARMUP, RUNS)


def timed(call):
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", type=int, default=60)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--max-agents", type=int, default=3)
    args = p.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        agents = []
        for i in range(args.max_agents):
            os.makedirs(os.path.join(tmp, str(i)))
            agents.append(start_agent(os.path.join(tmp, str(i))))
        try:
            ports = [port for _, port in agents]
            batch = archs(args.archs, 0)
            for port in ports:  # every agent builds and times once before the clock starts
                agent(port).measure(batch[0])
            per_minute, shares = {}, {}
            for count in range(1, args.max_agents + 1):
                pool = DevicePool([agent(port) for port in ports[:count]],
                                  ["127.0.0.1:{}".format(port) for port in ports[:count]], "bench")
                seconds = timed(lambda: pool.measure_many(batch))
                per_minute[count] = round(60.0 * len(batch) / seconds, 1)
                shares[count] = [m["measured"] for m in pool.stats()]
                pool.close()
                print("{} agent(s): {:.0f} measurements per minute, shares {}".format(
                    count, per_minute[count], shares[count]), flush=True)
            overheads = []
            small = batch[: max(10, args.archs // 3)]
            for _ in range(args.rounds):
                direct = agent(ports[0])
                pool = DevicePool([agent(ports[0])], ["127.0.0.1:{}".format(ports[0])], "one")
                runs = {"plain": lambda: [direct.measure(a) for a in small],
                        "pooled": lambda: pool.measure_many(small)}
                order = ["plain", "pooled"] if len(overheads) % 2 == 0 else ["pooled", "plain"]
                seconds = {name: timed(runs[name]) for name in order}  # alternately first
                plain, pooled = seconds["plain"], seconds["pooled"]
                overheads.append(1000.0 * (pooled - plain) / len(small))
                direct.close()
                pool.close()
            print("pool overhead per measurement: {:.2f} ms (median of {} rounds)".format(
                statistics.median(overheads), len(overheads)), flush=True)
        finally:
            for proc, _ in agents:
                proc.terminate()
                proc.wait(10)
    print(json.dumps({
        "archs": args.archs, "cpu_count": os.cpu_count(), "per_minute": per_minute,
        "speedup": {n: round(v / per_minute[1], 2) for n, v in per_minute.items()},
        "shares": shares, "pool_overhead_ms": round(statistics.median(overheads), 3),
        "pool_overhead_rounds_ms": [round(x, 3) for x in overheads],
        "wall_s": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
