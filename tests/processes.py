"""Real processes for the tests: a nano_agent, the dashboard server (`python -m webapp`) and a
PostgreSQL server, each on 127.0.0.1 on a free port; and the dashboard app built in the test
process."""
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

import requests

from helpers import tiny_flags
from nano_agent import protocol as P
from nano_agent.credentials import TOKEN_ENV
from search_core.device_client import DeviceClient
from webapp import create_app, shutdown
from webapp.extensions import db, socketio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "test-token-0123"
AGENT_TIMEOUT = 2.0  # the agent's idle / frame timeout in these tests
FAST = dict(backoff=(0.05, 0.1), connect_timeout=5.0, timeout=60.0)


def tiny_search(out, device, *extra):
    """The command of a tiny headless search (JSON lines on stdout) measuring on the agent(s) at
    `device` with the tests' token; `extra` arguments come last (a repeated option wins)."""
    return [sys.executable, "-m", "search_core", "search", "--out", str(out),
            *tiny_flags(epochs=3), "--device", device, "--device-token", TOKEN,
            "--events", "jsonl", *extra]


def without_token_env():
    """This process's environment without the agent token: the command line gives it."""
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)
    return env


class Agent:
    def __init__(self, tmp_path, timeout=AGENT_TIMEOUT, port=0, args=()):
        self.log_path = str(tmp_path / "agent-{}.log".format(id(self)))
        self.log = open(self.log_path, "w")
        env = dict(os.environ)
        env.pop(TOKEN_ENV, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nano_agent", "--host", "127.0.0.1", "--port", str(port),
             "--token", TOKEN, "--timeout", str(timeout), "--threads", "1",
             "--config", str(tmp_path / "agent-config.json"), *args],
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
        """A hand-written client: a connection after the hello (and the auth, if asked)."""
        sock = socket.create_connection(("127.0.0.1", self.port), 5)
        hello = P.recv_message(sock, 5)
        assert hello["type"] == "hello" and hello["protocol"] == P.PROTOCOL_VERSION
        assert len(bytes.fromhex(hello["challenge"])) == 32
        if not authenticate:
            return RawConnection(sock, hello)
        P.send_message(sock, {"type": "auth", "protocol": protocol,
                              "mac": P.compute_mac(TOKEN, hello["challenge"]),
                              "challenge": "ab" * 32})
        reply = P.recv_message(sock, 5)
        session = P.Session(TOKEN, hello["challenge"], "ab" * 32, "client") \
            if reply.get("type") == "welcome" else None
        return RawConnection(sock, reply, session)

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


class RawConnection:
    """A socket to the agent, its last handshake message (`reply`: the hello, the welcome or the
    refusal) and, once welcomed, the session that every frame is sealed with."""

    def __init__(self, sock, reply, session=None):
        self.sock, self.reply, self.session = sock, reply, session

    def send(self, message):
        P.send_message(self.sock, message, self.session)

    def send_payload(self, payload):
        """Any bytes as one frame, sealed like a message."""
        self.sock.sendall(P.frame(payload, self.session))

    def recv(self, timeout=5):
        return P.recv_message(self.sock, timeout, session=self.session)

    def close(self):
        self.sock.close()


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
                if not self.http.headers.get("Authorization") and self.token:  # not half-written
                    self.http.headers["Authorization"] = "Bearer " + self.token
                devices = self.http.get(self.url + "/api/devices", timeout=2).json()
                if isinstance(devices, list) and devices and devices[0]["status"] == "online":
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


class PostgresServer:
    """A throw-away PostgreSQL cluster (Debian's `postgresql`: initdb, pg_ctl) in a temporary
    directory, on 127.0.0.1 at a free port, trusting local connections; `database()` makes a new
    empty database and returns its SQLAlchemy URL. As root it runs as the `postgres` user, since
    PostgreSQL refuses to run as root."""

    def __init__(self):
        bin_dir = self._bin_dir()
        self.user = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        self.dir = tempfile.mkdtemp(prefix="edge-nas-pg-")
        if self.user:
            shutil.chown(self.dir, "postgres", "postgres")
        self.pg_ctl = os.path.join(bin_dir, "pg_ctl")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self._run(os.path.join(bin_dir, "initdb"), "-D", self.data, "-U", "edge", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        options = "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off " \
                  "-c full_page_writes=off".format(self.port, self.dir)
        self._run(self.pg_ctl, "-D", self.data, "-o", options, "-l",
                  os.path.join(self.dir, "server.log"), "-w", "start")
        self.count = 0

    @staticmethod
    def _bin_dir():
        found = shutil.which("pg_ctl") or next(iter(sorted(glob.glob(
            "/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)), None)
        assert found, "the PostgreSQL tests need Debian's postgresql: apt-get install postgresql"
        return os.path.dirname(os.path.realpath(found))

    def _run(self, *cmd):
        subprocess.run(self.user + list(cmd), check=True, cwd=self.dir, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=120)

    def url(self, name="postgres"):
        return "postgresql+psycopg://edge@127.0.0.1:{}/{}".format(self.port, name)

    def database(self):
        import sqlalchemy as sa
        self.count += 1
        name = "nas{}".format(self.count)
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE {}".format(name))
        engine.dispose()
        return self.url(name)

    def stop(self):
        subprocess.run(self.user + [self.pg_ctl, "-D", self.data, "-m", "immediate", "stop"],
                       cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)
