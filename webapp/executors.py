"""Where workers (searches, retrainings) run: ``local`` subprocesses, or a Ray cluster.

An executor's ``launch(cmd, log_path, token, resources)`` starts ``python -m search_core ...`` and
returns a process-like handle: its JSON-lines ``stdout``, ``pid``, ``poll``, ``wait``,
``terminate``, ``kill``. A worker's thread (webapp/workers/) reads every executor's handle the
same way.

- ``LocalExecutor``: a subprocess of the web server (the default, nothing to install).
- ``RayExecutor``: a ``NodeWorker`` actor on a node with the resources the run asks for (CPUs, a
  GPU) runs the same command there and hands its lines back in batches. Run directories must be on
  storage that every node mounts at the same path. A handle whose actor dies, or does not answer
  for LOST_AFTER_S (two of the worker's heartbeats), ends its stream with ``lost`` set: the node or
  its worker is gone, and the run resumes elsewhere (webapp/workers/search.py).
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

from nano_agent.credentials import TOKEN_ENV
from search_core.events import HEARTBEAT_S

from .config import REPO_ROOT

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
WORKER_NICENESS = 10
LOST_AFTER_S = 2 * HEARTBEAT_S  # a worker's stream is never silent for longer than one heartbeat
READ_WAIT_S = 1.0  # the longest a read of a Ray worker's lines waits for the next one
RAY_USAGE_STATS = "RAY_USAGE_STATS_ENABLED"  # Ray sends usage statistics to its makers unless 0


def _lower_priority(pid: int):
    """Training is batch work: the web server and the device agent's measurements go first."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, WORKER_NICENESS)
    except (AttributeError, OSError):  # not on this platform, or the worker has already exited
        pass


def spawn(cmd, log_path: str, token: str | None = None) -> subprocess.Popen:
    """Start a worker (a search or a training) at low priority: JSON lines on its stdout, its
    stderr appended to ``log_path``, the device agent's ``token`` in its environment only."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop(TOKEN_ENV, None)
    if token:
        env[TOKEN_ENV] = token
    with open(log_path, "ab") as stderr:
        process = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=stderr, env=env, text=True, encoding="utf-8", errors="replace")
    _lower_priority(process.pid)
    return process


def worker_resources(config: dict) -> dict:
    """What a run or a retraining asks of the node that runs it: its threads, a GPU to train on."""
    return {"num_cpus": int(config.get("threads") or 1),
            "num_gpus": 1 if config.get("train_device") == "cuda" else 0}


def _describe(resources: dict) -> str:
    gpus = resources.get("num_gpus") or 0
    return "{:g} CPU(s){}".format(resources.get("num_cpus", 1),
                                  " and {:g} GPU(s)".format(gpus) if gpus else "")


class LocalExecutor:
    def launch(self, cmd, log_path, token=None, resources=None):
        return spawn(cmd, log_path, token)

    def waiting_for(self, resources):
        """Why a worker asking ``resources`` must wait before it starts, or None: never here (the
        queue's MAX_RUNS shares this machine)."""
        return None

    def default_max_runs(self, agent_threads: int) -> int:
        """One search per 4 cores that the local agent leaves, at least one: a search on 2 cores
        already uses them all."""
        return max(1, ((os.cpu_count() or 1) - agent_threads) // 4)

    def close(self):
        pass


# --- Ray ------------------------------------------------------------------------------------------

class NodeWorker:
    """The body of the Ray actor that runs one worker command on its node, in the node's own
    interpreter of the project, and keeps its stdout lines until ``read`` takes them."""

    def __init__(self, cmd, log_path, token=None):
        self.process = spawn([sys.executable] + list(cmd[1:]), log_path, token)
        self._lines = collections.deque()
        self._changed = threading.Condition()
        self._drained = False
        threading.Thread(target=self._pump, name="worker-stdout", daemon=True).start()

    def _pump(self):
        for line in self.process.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        self.process.wait()
        with self._changed:
            self._drained = True
            self._changed.notify_all()

    def where(self):
        import ray
        return {"host": socket.gethostname(), "pid": self.process.pid,
                "node_id": ray.get_runtime_context().get_node_id()}

    def read(self, wait_s):
        """The lines written since the last read (waiting up to ``wait_s`` for one), and the
        return code once the worker has exited and every line has been taken."""
        with self._changed:
            self._changed.wait_for(lambda: self._lines or self._drained, wait_s)
            lines = list(self._lines)
            self._lines.clear()
            done = self._drained and not lines
        return lines, (self.process.returncode if done else None)

    def send_signal(self, signum):
        if self.process.poll() is None:
            self.process.send_signal(signum)


class RayWorker:
    """A worker run by a NodeWorker actor, seen as a process (what a worker's thread reads).
    ``lost``: why its stream ended without an exit code (the actor died or stopped answering)."""

    def __init__(self, ray, actor, start_timeout_s):
        self._ray, self.actor = ray, actor
        self.returncode = None
        self.lost = None
        self._exited = threading.Event()
        try:
            where = ray.get(actor.where.remote(), timeout=start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self._release()
            raise RuntimeError("no Ray node could take the worker within {:.0f} s: the cluster "
                               "lacks the CPUs or GPU it asks for".format(start_timeout_s)) from None
        except ray.exceptions.RayActorError as e:  # e.g. the run directory is not on that node
            raise RuntimeError("its worker could not start on the Ray node: {} (are run "
                               "directories on storage that every node mounts at the same "
                               "path?)".format(_last_line(e))) from None
        self.pid, self.host, self.node_id = where["pid"], where["host"], where["node_id"]
        self.stdout = self._lines()

    @property
    def node(self) -> str:
        return "{} (Ray node {})".format(self.host, self.node_id[:12])

    def _lines(self):
        errors = self._ray.exceptions
        while True:
            try:
                lines, returncode = self._ray.get(self.actor.read.remote(READ_WAIT_S),
                                                  timeout=READ_WAIT_S + LOST_AFTER_S)
            except (errors.RayActorError, errors.GetTimeoutError) as e:
                self._end(None, lost="{}: {}".format(type(e).__name__, _first_line(e)))
                return
            yield from lines
            if returncode is not None:
                self._end(returncode)
                return

    def _end(self, returncode, lost=None):
        self.returncode = -1 if returncode is None else returncode
        self.lost = lost
        self._release()
        self._exited.set()

    def _release(self):
        """The actor holds its node's CPUs until it is killed."""
        try:
            self._ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001  already gone with its node
            pass

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired("ray worker {}".format(self.pid), timeout)
        return self.returncode

    def _signal(self, signum):
        try:
            self._ray.get(self.actor.send_signal.remote(signum), timeout=LOST_AFTER_S)
        except Exception:  # noqa: BLE001  a lost actor: its stream ends by itself
            log.warning("could not signal the Ray worker %s on %s", self.pid, self.host)

    def terminate(self):
        self._signal(signal.SIGTERM)

    def kill(self):
        self._signal(signal.SIGKILL)


_RAY_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU"}  # a request's name -> Ray's resource name


def _within(resources: dict, available: dict) -> bool:
    return all(available.get(_RAY_NAMES[k], 0) >= v for k, v in resources.items())


def _first_line(error):
    return (str(error).strip().splitlines() or ["no answer"])[0]


def _last_line(error):
    """A Ray error's last line: the exception that its traceback ends with."""
    return (str(error).strip().splitlines() or [type(error).__name__])[-1]


class RayExecutor:
    """Workers as Ray actors: on the cluster at ``address``, or on a Ray started inside this
    process when there is none: a new one ("local"), even where another Ray runs on the machine,
    which a plain ``ray.init()`` would join (an embedded dashboard's runs then waited for a
    cluster whose nodes another test killed)."""

    def __init__(self, address=None, start_timeout_s=120.0):
        import ray  # only this executor needs it
        self._ray = ray
        self.start_timeout_s = start_timeout_s
        self._own = not ray.is_initialized()
        if self._own:
            if address:
                _check_reachable(address)
            os.environ.setdefault(RAY_USAGE_STATS, "0")  # a Ray of ours reports to no one
            ray.init(address=address or "local", log_to_driver=False, include_dashboard=False,
                     configure_logging=False)
        # the worker's stream is read concurrently with signals to it
        self._actor_class = ray.remote(max_restarts=0, max_concurrency=4)(NodeWorker)

    def launch(self, cmd, log_path, token=None, resources=None):
        resources = resources or {}
        unfit = self._unfit(resources)
        if unfit:
            raise RuntimeError(unfit)
        actor = self._actor_class.options(**resources).remote(cmd, log_path, token)
        return RayWorker(self._ray, actor, self.start_timeout_s)

    def waiting_for(self, resources):
        """Why a worker asking ``resources`` must wait (the cluster has no room for it now), or
        None: so that queued runs wait in the queue, not in Ray's placement with a deadline. One
        that no node could ever take does not wait: its launch says why."""
        if self._unfit(resources) or _within(resources, self._ray.available_resources()):
            return None
        return "Waiting for a Ray node with {} free.".format(_describe(resources))

    def _unfit(self, resources):
        """Why no live node of the cluster could ever take ``resources``, or None."""
        nodes = [n["Resources"] for n in self._ray.nodes() if n.get("Alive")]
        if any(_within(resources, node) for node in nodes):
            return None
        largest = {k: max([node.get(name, 0) for node in nodes] or [0])
                   for k, name in _RAY_NAMES.items()}
        return "no Ray node has {} (the largest has {})".format(_describe(resources),
                                                                _describe(largest))

    def default_max_runs(self, agent_threads: int) -> int:
        """The cluster's CPUs: every worker asks one at least, and waits in the queue for room."""
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def close(self):
        if self._own:
            self._ray.shutdown()


def _check_reachable(address):
    """A head that does not answer fails the start at once (ray.init itself keeps retrying for
    minutes). Only host:port addresses; others ('auto', 'ray://...') are Ray's to resolve."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise RuntimeError("no Ray head answers at {} ({})".format(address, e)) from None


def make_executor(config) -> LocalExecutor | RayExecutor:
    if config["EXECUTOR"] == "ray":
        return RayExecutor(config.get("RAY_ADDRESS"), config["RAY_START_TIMEOUT_S"])
    if config["EXECUTOR"] != "local":
        raise ValueError("unknown executor {!r} (expected one of {})".format(
            config["EXECUTOR"], ", ".join(EXECUTORS)))
    return LocalExecutor()
