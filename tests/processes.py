"""Real processes for the tests: a nano_agent, and the dashboard server (`python -m webapp`), each
on 127.0.0.1 on a free port; and the dashboard app built in the test process."""
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import requests

from nano_agent import protocol as P
from nano_agent.config import TOKEN_ENV
from search_core.device_client import DeviceClient
from webapp import create_app, shutdown
from webapp.extensions import db, socketio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "test-token-0123"
AGENT_TIMEOUT = 2.0  # the agent's idle / frame timeout in these tests
FAST = dict(backoff=(0.05, 0.1), connect_timeout=5.0, timeout=60.0)


class Agent:
    def __init__(self, tmp_path, timeout=AGENT_TIMEOUT, port=0):
        self.log_path = str(tmp_path / "agent-{}.log".format(id(self)))
        self.log = open(self.log_path, "w")
        env = dict(os.environ)
        env.pop(TOKEN_ENV, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nano_agent", "--host", "127.0.0.1", "--port", str(port),
             "--token", TOKEN, "--timeout", str(timeout), "--threads", "1",
             "--config", str(tmp_path / "agent-config.json")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, env=env, universal_newlines=True)
        line = self._first_line(60)
        assert line.startswith("nano_agent listening on 127.0.0.1:"), line
        self.port = int(line.split("127.0.0.1:")[1].split()[0])
        assert line.rstrip().endswith("token=" + TOKEN)

    def _first_line(self, timeout):
        box = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            self.stop()
            raise AssertionError("agent did not start: " + open(self.log_path).read())
        return box[0]

    def client(self, token=TOKEN, **options):
        return DeviceClient("127.0.0.1", self.port, token, **dict(FAST, **options))

    def raw(self, authenticate=True, protocol=P.PROTOCOL_VERSION):
        """A hand-written client: a socket after the hello (and the auth, if asked)."""
        sock = socket.create_connection(("127.0.0.1", self.port), 5)
        hello = P.recv_message(sock, 5)
        assert hello["type"] == "hello" and hello["protocol"] == P.PROTOCOL_VERSION
        assert len(bytes.fromhex(hello["challenge"])) == 32
        if authenticate:
            P.send_message(sock, {"type": "auth", "protocol": protocol,
                                  "mac": P.compute_mac(TOKEN, hello["challenge"])})
            return sock, P.recv_message(sock, 5)
        return sock, hello

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.log.close()


@contextmanager
def dashboard_app(data_dir, **config):
    """The dashboard's Flask app on `data_dir` (testing, no periodic device checks; `config`
    overrides), shut down afterwards: its runs and agent stopped, its database released."""
    app = create_app(dict({"DATA_DIR": str(data_dir), "TESTING": True,
                           "DEVICE_CHECK_INTERVAL_S": 0, "MAX_RUNS": 4}, **config))
    try:
        yield app
    finally:
        shutdown(app)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


_HOLD = ("import sys, time; from search_core.rundir import RunDirectory; "
         "RunDirectory(sys.argv[1]).lock_worker(); print('held', flush=True); time.sleep(600)")


def hold_run_directory(run_dir):
    """A process that holds `run_dir` as a search worker does (its lock), until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.stdout.close()
    return proc


def socket_client(app, **options):
    """A Socket.IO test client of `app`, connected with its token."""
    return socketio.test_client(app, auth={"token": app.config["TOKEN"]}, **options)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dashboard:
    """`python -m webapp` with its local device; ready once that device is online."""

    def __init__(self, data_dir, mode="threading", timeout=90, args=()):
        self.data_dir = str(data_dir)
        self.log_path = os.path.join(self.data_dir, "server.log")
        self.log = open(self.log_path, "w")
        port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "webapp", "--port", str(port), "--data-dir",
                                      str(data_dir), "--async-mode", mode, *args],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = "http://127.0.0.1:{}".format(port)
        self.http = requests.Session()  # a program's client: the token as a bearer header
        deadline = time.time() + timeout
        while True:
            try:
                if not self.http.headers.get("Authorization"):
                    self.http.headers["Authorization"] = "Bearer " + self.token
                devices = self.http.get(self.url + "/api/devices", timeout=2).json()
                if devices and devices[0]["status"] == "online":
                    return
            except (requests.ConnectionError, FileNotFoundError):  # not listening, no token yet
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise AssertionError("the dashboard did not start: " + self.output())
            time.sleep(0.2)

    @property
    def token(self):
        """The token the dashboard generated at first start, from its data directory."""
        with open(os.path.join(self.data_dir, "token")) as f:
            return f.read().strip()

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.log.close()
