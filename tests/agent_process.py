"""A real nano_agent process on 127.0.0.1 for the tests (a free port each)."""
import os
import socket
import subprocess
import sys
import threading

from nano_agent import protocol as P
from nano_agent.config import TOKEN_ENV
from search_core.device_client import DeviceClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "test-token-0123"
AGENT_TIMEOUT = 2.0  # the agent's idle / frame timeout in these tests
FAST = dict(backoff=(0.05, 0.1), connect_timeout=5.0, timeout=60.0)


class Agent:
    def __init__(self, tmp_path, timeout=AGENT_TIMEOUT):
        self.log_path = str(tmp_path / "agent-{}.log".format(id(self)))
        self.log = open(self.log_path, "w")
        env = dict(os.environ)
        env.pop(TOKEN_ENV, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nano_agent", "--host", "127.0.0.1", "--port", "0",
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
