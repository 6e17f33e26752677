"""Does a run survive what goes wrong in a lab? Scripted faults against real processes: a dashboard
(`python -m webapp`), its workers, and a device agent (`python -m nano_agent`) on loopback. Each
fault hits a tiny run mid-way; then the bench checks whether the run recovered (finished, after a
resume where one is needed) or failed with a clear message, and whether samples were lost.

1. worker_killed: kill -9 the search worker; the run must fail clearly; resume; it must finish.
2. dashboard_killed: kill -9 the dashboard; restart it; the run must be `interrupted` (its orphan
   stopped); resume; it must finish.
3. agent_down: kill the run's agent for --agent-down-s seconds (default 60), then restart it on the
   same port; the run must wait for it and finish without a resume.
4. agent_stopped: SIGSTOP the agent for 20 s, then SIGCONT; the run must finish.
5. flood: 100 unauthenticated connections against the agent, reopened as they close, for the rest
   of the run; it must finish.
6. disk_full: the dashboard's data directory on a 256 MiB tmpfs (needs root; skipped otherwise),
   filled mid-run; the run must fail with a message about free space; free it, resume, finish.
7. dashboard_flood: plain Engine.IO websockets that never connect to Socket.IO but answer pings,
   300 from 10 loopback addresses, reopened as the dashboard closes them, for the rest of the run;
   the run must finish, and the API answers a token holder all along (`api_slowest_s`).
8. second_dashboard: a second `python -m webapp` on the same data directory mid-run; it must exit
   with an error naming the first's pid, and the run finish on the first, its local device online.
9. handshake_flood: the agent's handshake places (256) held by two addresses (127.0.0.2 and .3),
   reopened as they close, for the rest of a run on that agent; the run must finish.
10. lost_wal: kill -9 the dashboard and delete its database's WAL (the rows since SQLite's last
   checkpoint go with it), then restart; the run must be there, `interrupted`, and finish after a
   resume with every sample its directory holds (a resume stores them again).

Samples lost: samples stored before the fault that the database no longer holds at the end, plus
any difference between the run directory's samples.jsonl and the database. Goal: 0 for every
fault. Time to recovery: from the fault to the run's next stored sample; for agent_down, from the
agent's return until the run no longer shows that it waits (`showed_waiting`: it did, meanwhile).

    .venv/bin/python bench/fault_injection.py [--faults worker_killed agent_down ...]

Ends with one JSON line: {fault: {"outcome", "samples_lost", "recovery_s", ...}, "wall_s": ...}.
About 4.5 minutes on 2 cores.
"""
import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests
import websocket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from search_core.rundir import RunDirectory  # noqa: E402

TOKEN = "bench-token"  # the dashboard's (WEBAPP_TOKEN)
AGENT_TOKEN = "bench-agent-token"
# a run of a minute or two on 2 cores, measuring at every search epoch
RUN = {"epochs": 8, "warmup_epochs": 2, "limit": 256, "batch_size": 32, "samples_per_epoch": 2,
       "measure_runs": 3, "measure_warmup": 1, "calibration_archs": 3, "threads": 1}
ENDED = ("finished", "failed", "cancelled", "interrupted")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dashboard:
    def __init__(self, data_dir, port=None):
        self.data_dir, self.port = data_dir, port or free_port()
        self.url = "http://127.0.0.1:{}".format(self.port)
        self.http = requests.Session()
        self.http.headers["Authorization"] = "Bearer " + TOKEN
        self.orphans = []
        self.start()

    def start(self):
        log = open(os.path.join(self.data_dir, "server.log"), "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webapp", "--port", str(self.port), "--data-dir", self.data_dir],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, WEBAPP_TOKEN=TOKEN))
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                devices = self.http.get(self.url + "/api/devices", timeout=2).json()
                if devices and devices[0]["status"] == "online":
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the dashboard did not start (see {}/server.log)".format(self.data_dir))

    def kill(self):
        """kill -9: its worker and local agent live on, as they would (stopped at the end)."""
        with open("/proc/{0}/task/{0}/children".format(self.proc.pid)) as f:
            self.orphans.extend(int(pid) for pid in f.read().split())
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        for pid in self.orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def api(self, method, path, **kwargs):
        r = self.http.request(method, self.url + "/api" + path, timeout=60, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError("{} {}: {} {}".format(method, path, r.status_code, r.text[:300]))
        return r.json()


class AgentProcess:
    def __init__(self, port, work_dir):
        self.port, self.work_dir = port, work_dir
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nano_agent", "--host", "127.0.0.1", "--port", str(self.port),
             "--token", AGENT_TOKEN, "--threads", "1", "--config",
             os.path.join(self.work_dir, "agent.json")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if "listening" not in line:
            raise RuntimeError("the agent did not start: {!r}".format(line))

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def sample_keys(samples):
    return {(s["epoch"], s["kind"], s["arch_hash"]) for s in samples}


def file_keys(run_dir):
    path = os.path.join(run_dir, "samples.jsonl")
    with open(path) as f:
        return sample_keys(json.loads(line) for line in f if line.strip())


def wait(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise RuntimeError("timed out waiting for " + what)


class Scenario:
    """One fault on one fresh run."""

    def __init__(self, dash, device_id=None):
        self.dash = dash
        body = dict(RUN, name="fault")
        if device_id is not None:
            body["device_id"] = device_id
        self.run_id = dash.api("POST", "/runs", json=body)["id"]

    @classmethod
    def mid_run(cls, dash, device_id=None):
        """A fresh run with one search epoch's samples stored: where each fault hits it."""
        s = cls(dash, device_id)
        s.wait_for_search_epoch()
        s.before_fault()
        return s

    def run(self):
        return self.dash.api("GET", "/runs/{}".format(self.run_id))

    def samples(self):
        return self.dash.api("GET", "/runs/{}/samples".format(self.run_id))

    def wait_for_search_epoch(self, timeout=600):
        """Block until the run has stored samples of one search epoch at least; returns them."""
        return wait(lambda: self.samples(), timeout, "the first samples")

    def before_fault(self):
        self.kept = sample_keys(self.samples())
        self.fault_time = time.time()

    def wait_end(self, timeout=900):
        return wait(lambda: (lambda r: r if r["status"] in ENDED else None)(self.run()), timeout,
                    "the run to end")

    def next_sample_s(self, since, timeout=900):
        count = len(self.kept)
        wait(lambda: len(self.samples()) > count or self.run()["status"] in ENDED, timeout,
             "a sample after the fault")
        return round(time.time() - since, 1)

    def waiting_for_device(self):
        return bool((self.run().get("progress") or {}).get("device_wait"))

    def outage(self, seconds):
        """Watch the run for `seconds` while its device is away: did it say it waits?"""
        deadline, seen = time.time() + seconds, False
        while time.time() < deadline:
            seen = seen or self.waiting_for_device()
            time.sleep(0.5)
        return seen

    def back_s(self, since, timeout=300):
        """Seconds from `since` (the device is back) until the run no longer waits for it."""
        wait(lambda: not self.waiting_for_device() or self.run()["status"] in ENDED, timeout,
             "the run to see its device again")
        return round(time.time() - since, 1)

    def report(self, outcome, **figures):
        stored = sample_keys(self.samples())
        run_dir = os.path.join(self.dash.data_dir, self.run()["run_dir"])
        on_disk = file_keys(run_dir)
        lost = len(self.kept - stored) + len(on_disk ^ stored)
        return dict(figures, outcome=outcome, samples_lost=lost, samples=len(stored))


def worker_killed(dash, args):
    s = Scenario.mid_run(dash)
    os.kill(RunDirectory(os.path.join(dash.data_dir, s.run()["run_dir"])).worker_pid(),
            signal.SIGKILL)
    failed = s.wait_end()
    clear = failed["status"] == "failed" and bool(failed["error"])
    dash.api("POST", "/runs/{}/resume".format(s.run_id))
    recovery = s.next_sample_s(s.fault_time)
    end = s.wait_end()
    return s.report("recovered" if end["status"] == "finished" and clear else end["status"],
                    failed_clearly=clear, error=failed["error"], recovery_s=recovery)


def dashboard_killed(dash, args):
    s = Scenario.mid_run(dash)
    dash.kill()
    time.sleep(3)
    dash.start()
    run = s.run()
    interrupted = run["status"] == "interrupted"
    dash.api("POST", "/runs/{}/resume".format(s.run_id))
    recovery = s.next_sample_s(s.fault_time)
    end = s.wait_end()
    return s.report("recovered" if end["status"] == "finished" and interrupted else end["status"],
                    interrupted_after_restart=interrupted, message=run.get("message"),
                    recovery_s=recovery)


@contextlib.contextmanager
def on_agent(dash):
    """A run on an agent of its own, registered with the dashboard, just before its fault: yields
    (agent, scenario); the agent is stopped afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        agent = AgentProcess(port, tmp)
        try:
            device = dash.api("POST", "/devices", json={"name": "agent-{}".format(port),
                                                        "host": "127.0.0.1", "port": port,
                                                        "token": AGENT_TOKEN})
            s = Scenario.mid_run(dash, device["id"])
            yield agent, s
        finally:
            agent.kill()


def agent_down(dash, args):
    with on_agent(dash) as (agent, s):
        agent.kill()
        waited = s.outage(args.agent_down_s)
        agent.start()
        recovery = s.back_s(time.time())
        end = s.wait_end()
    return s.report("recovered" if end["status"] == "finished" and waited else end["status"],
                    down_s=args.agent_down_s, showed_waiting=waited, recovery_s=recovery,
                    error=end["error"])


def agent_stopped(dash, args):
    with on_agent(dash) as (agent, s):
        agent.proc.send_signal(signal.SIGSTOP)
        s.outage(20)
        agent.proc.send_signal(signal.SIGCONT)
        recovery = s.next_sample_s(time.time())
        end = s.wait_end()
    return s.report("recovered" if end["status"] == "finished" else end["status"],
                    stopped_s=20, recovery_s=recovery, error=end["error"])


def _hold_connections(port, count, sources, stop):
    """Keep `count` connections to the agent open from the addresses `sources` (in turn), never
    authenticating, reopening each as the agent closes it, until `stop` is set; returns how many
    were opened."""
    socks, opened = [], 0
    while not stop.is_set():
        socks = [x for x in socks if x.fileno() != -1]
        for i in range(count - len(socks)):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), 5,
                                                      source_address=(sources[i % len(sources)], 0)))
                opened += 1
            except OSError:
                break
        for x in socks:  # read the hello; an empty read: the agent closed it, reopen
            x.setblocking(False)
            try:
                if x.recv(4096) == b"":
                    x.close()
            except BlockingIOError:
                pass
        time.sleep(0.2)
    for x in socks:
        x.close()
    return opened


def _flooded(dash, count, sources):
    """A run on an agent of its own that `count` connections from `sources` hold at once."""
    with on_agent(dash) as (agent, s):
        stop, opened = threading.Event(), []
        flooder = threading.Thread(target=lambda: opened.append(
            _hold_connections(agent.port, count, sources, stop)))
        flooder.start()
        try:
            end = s.wait_end()
        finally:
            stop.set()
            flooder.join()
    return s.report("recovered" if end["status"] == "finished" else end["status"],
                    connections_opened=opened[0], error=end["error"])


def flood(dash, args):
    return _flooded(dash, 100, ["127.0.0.1"])


def disk_full(dash_unused, args):
    mount = tempfile.mkdtemp(prefix="edge-nas-tmpfs-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", mount],
                      capture_output=True).returncode != 0:
        os.rmdir(mount)
        return {"outcome": "skipped", "why": "cannot mount a tmpfs here (needs root)"}
    dash = None
    try:
        dash = Dashboard(mount)
        s = Scenario.mid_run(dash)
        filler = os.path.join(mount, "filler")
        subprocess.run(["fallocate", "-l", str(_free_bytes(mount) - 8 * 2 ** 20), filler], check=True)
        failed = s.wait_end()
        error = failed["error"] or ""
        clear = failed["status"] == "failed" and ("free space" in error or "No space left" in error)
        os.remove(filler)
        dash.api("POST", "/runs/{}/resume".format(s.run_id))
        recovery = s.next_sample_s(s.fault_time)
        end = s.wait_end()
        return s.report("recovered" if end["status"] == "finished" and clear else end["status"],
                        failed_clearly=clear, error=failed["error"], recovery_s=recovery)
    finally:
        if dash is not None:
            dash.stop()
        subprocess.run(["umount", "--lazy", mount])  # lazy: a process may still be leaving it
        shutil.rmtree(mount, ignore_errors=True)


def dashboard_flood(dash, args):
    s = Scenario.mid_run(dash)
    url = "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket".format(dash.port)
    stop, opened, api = threading.Event(), [0], {"slowest_s": 0.0, "failed": 0}

    def open_one(address):
        sock = socket.create_connection(("127.0.0.1", dash.port), 5, source_address=(address, 0))
        return websocket.create_connection(url, socket=sock, timeout=5)

    def keep_open():
        sockets = []
        while not stop.is_set():
            sockets = [w for w in sockets if w.connected]
            for i in range(300 - len(sockets)):
                try:
                    sockets.append(open_one("127.0.0.{}".format(2 + i % 10)))
                    opened[0] += 1
                except (OSError, websocket.WebSocketException):
                    break
            readable = select.select([w.sock for w in sockets], [], [], 0.2)[0] if sockets else []
            for w in [w for w in sockets if w.sock in readable]:
                try:  # answer the server's pings: a live client, only one that never connects
                    if w.recv() == "2":
                        w.send("3")
                except (OSError, websocket.WebSocketException):
                    w.shutdown()
        for w in sockets:
            w.shutdown()

    def token_holder():
        while not stop.is_set():
            t = time.time()
            try:
                dash.api("GET", "/runs")
            except (requests.RequestException, RuntimeError):
                api["failed"] += 1
            api["slowest_s"] = max(api["slowest_s"], round(time.time() - t, 2))
            time.sleep(0.5)

    threads = [threading.Thread(target=keep_open), threading.Thread(target=token_holder)]
    for t in threads:
        t.start()
    try:
        end = s.wait_end()
    finally:
        stop.set()
        for t in threads:
            t.join()
    ok = end["status"] == "finished" and api["failed"] == 0
    return s.report("recovered" if ok else end["status"], connections_opened=opened[0],
                    api_slowest_s=api["slowest_s"], api_failures=api["failed"], error=end["error"])


def second_dashboard(dash, args):
    s = Scenario.mid_run(dash)
    second = subprocess.run(
        [sys.executable, "-m", "webapp", "--port", str(free_port()), "--data-dir", dash.data_dir],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ, WEBAPP_TOKEN=TOKEN))
    refused = second.returncode != 0 and "(pid {})".format(dash.proc.pid) in second.stderr
    end = s.wait_end()
    local_online = dash.api("GET", "/devices")[0]["status"] == "online"
    ok = end["status"] == "finished" and refused and local_online
    return s.report("recovered" if ok else end["status"], second_exit=second.returncode,
                    second_said=second.stderr.strip()[-200:], local_device_online=local_online,
                    error=end["error"])


def handshake_flood(dash, args):
    from nano_agent.server import MAX_HANDSHAKES
    return _flooded(dash, MAX_HANDSHAKES, ["127.0.0.2", "127.0.0.3"])


def lost_wal(dash, args):
    s = Scenario.mid_run(dash)
    dash.kill()
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(dash.data_dir, "dashboard.db" + suffix))
    dash.start()
    try:
        run = s.run()
    except RuntimeError as e:  # its row went with the WAL
        return {"outcome": "run lost", "samples_lost": len(s.kept), "error": str(e)[:300]}
    interrupted = run["status"] == "interrupted"
    dash.api("POST", "/runs/{}/resume".format(s.run_id))
    recovery = s.next_sample_s(s.fault_time)
    end = s.wait_end()
    return s.report("recovered" if end["status"] == "finished" and interrupted else end["status"],
                    interrupted_after_restart=interrupted, recovery_s=recovery, error=end["error"])


def _free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


FAULTS = {"worker_killed": worker_killed, "dashboard_killed": dashboard_killed,
          "agent_down": agent_down, "agent_stopped": agent_stopped, "flood": flood,
          "disk_full": disk_full, "dashboard_flood": dashboard_flood,
          "second_dashboard": second_dashboard, "handshake_flood": handshake_flood,
          "lost_wal": lost_wal}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    p.add_argument("--agent-down-s", type=float, default=60.0)
    args = p.parse_args()
    started, results = time.time(), {}
    data_dir = tempfile.mkdtemp(prefix="edge-nas-faults-")
    dash = Dashboard(data_dir)
    try:
        for name in args.faults:
            t = time.time()
            try:
                results[name] = FAULTS[name](dash, args)
            except Exception as e:  # noqa: BLE001  one fault's breakage is a result, not the end
                results[name] = {"outcome": "bench error", "error": "{}: {}".format(
                    type(e).__name__, e)}
            results[name]["wall_s"] = round(time.time() - t, 1)
            print("{}: {}".format(name, json.dumps(results[name])), flush=True)
    finally:
        dash.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    results["wall_s"] = round(time.time() - started, 1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
