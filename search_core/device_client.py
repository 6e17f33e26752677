"""Client of the device agent (nano_agent/, docs/protocol.md), and the latency source built on it.

`DeviceClient` speaks the protocol: connect with retries and backoff, HMAC handshake, one request at
a time. `AgentDevice` is the latency source (see latency.py) that measures and profiles on an agent.
Standard library only: the dashboard's web process talks to agents without torch.
"""
import hmac
import os
import select
import socket
import threading
import time

from nano_agent import protocol as P
from nano_agent.arch import as_architecture
from nano_agent.protocol import BACKENDS, DEFAULT_PORT


class LatencyError(RuntimeError):
    """A device could not be reached or could not measure; the message says which and why."""


class DeviceLost(LatencyError):
    """The device did not answer: unreachable, or the connection broke mid-request. Unlike a
    refusal (wrong token, bad request) this may pass: a Jetson that reboots is back in a minute."""


def backend_suffix(backend):
    """What a measuring backend adds to a device's identity: its measurements are cached apart."""
    return "" if backend == "pytorch" else ":" + backend


def backend_of(device_key):
    """The measuring backend of a device identity (`backend_suffix`'s inverse)."""
    return next((b for b in BACKENDS[1:] if device_key.endswith(backend_suffix(b))), BACKENDS[0])


class _HandshakeDropped(DeviceLost):
    """The agent closed or reset the connection during the handshake: it was stopping, or it
    restarts. Retried like a refused connection."""


def parse_address(spec, default_port=DEFAULT_PORT):
    """'host:port', 'host', '[v6]:port' or 'agent:host:port' -> (host, port)."""
    if spec.startswith("agent:"):
        spec = spec[len("agent:"):]
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    else:
        host, port = spec, ""
    if not host:
        raise LatencyError("device address {!r} has no host".format(spec))
    try:
        port = int(port) if port else default_port
    except ValueError:
        raise LatencyError("device address {!r}: port must be a number".format(spec))
    return host, port


class DeviceClient:
    """One connection to a device agent; reconnects when the agent has closed an idle connection.

    connect_timeout: seconds per connection attempt; timeout: seconds to wait for each reply frame
    (a measurement queued behind another client's profile waits that long at most);
    backoff: the delays between connection attempts.
    """

    def __init__(self, host, port=DEFAULT_PORT, token="", connect_timeout=5.0, timeout=900.0,
                 backoff=(0.5, 1.0, 2.0)):
        self.host, self.port, self.token = host, int(port), token or ""
        self.connect_timeout, self.timeout, self.backoff = connect_timeout, timeout, tuple(backoff)
        self.sock = None
        self.session = None  # the connection's P.Session, from the welcome on
        self.welcome = None
        self._lock = threading.Lock()
        self._next_id = 0

    @property
    def address(self):
        return "{}:{}".format(self.host, self.port)

    # -- connection -------------------------------------------------------------------------

    def connect(self):
        """Connect and authenticate (if not connected yet); returns the agent's welcome."""
        with self._lock:
            self._ensure_connected()
            return self.welcome

    def _ensure_connected(self):
        if self.sock is not None and not self._stale():
            return
        self._drop()
        errors = []
        for attempt in range(len(self.backoff) + 1):
            if attempt:
                time.sleep(self.backoff[attempt - 1])
            try:
                sock = socket.create_connection((self.host, self.port), self.connect_timeout)
            except UnicodeError as e:  # a host name IDNA cannot encode: no retry will help
                raise LatencyError("device address {!r} is not a valid host name: {}".format(
                    self.host, e))
            except OSError as e:
                errors.append(e)
                continue
            try:
                self.welcome, self.session = self._handshake(sock)
            except _HandshakeDropped as e:
                sock.close()
                errors.append(e)
                continue
            except BaseException:
                sock.close()
                raise
            self.sock = sock
            return
        raise DeviceLost("device agent at {} is unreachable after {} attempts: {}".format(
            self.address, len(errors), errors[-1]))

    def _handshake(self, sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            hello = P.recv_message(sock, self.connect_timeout)
            if hello.get("ok") is False:
                err = hello.get("error") or {}
                raise self._refusal(err)
            if hello.get("type") != "hello":
                raise LatencyError("{} is not a device agent (first message {!r})".format(
                    self.address, hello.get("type")))
            if hello.get("protocol") != P.PROTOCOL_VERSION:
                raise LatencyError(
                    "device agent at {} speaks protocol {!r}, this client {}: update the {} so "
                    "that both speak the same version".format(
                        self.address, hello.get("protocol"), P.PROTOCOL_VERSION,
                        "client" if isinstance(hello.get("protocol"), int)
                        and hello["protocol"] > P.PROTOCOL_VERSION else "agent"))
            challenge = os.urandom(32).hex()  # the agent proves it knows the token too
            P.send_message(sock, {"type": "auth", "protocol": P.PROTOCOL_VERSION,
                                  "mac": P.compute_mac(self.token, str(hello.get("challenge"))),
                                  "challenge": challenge})
            reply = P.recv_message(sock, self.connect_timeout)
        except (P.ConnectionClosed, ConnectionError) as e:
            raise _HandshakeDropped("handshake with the device agent at {} failed: {}".format(
                self.address, e))
        except (P.FrameError, P.BadJson, OSError, ValueError) as e:
            raise LatencyError("handshake with the device agent at {} failed: {}".format(
                self.address, e))
        if not reply.get("ok"):
            err = reply.get("error") or {}
            if err.get("code") == P.AUTH_FAILED:
                raise LatencyError("device agent at {} refused the token: check the token the "
                                   "agent printed on start (or its config file)".format(
                                       self.address))
            raise self._refusal(err)
        proof = reply.get("proof")
        if not isinstance(proof, str) or not hmac.compare_digest(
                proof.encode("utf-8", "replace"),
                P.agent_proof(self.token, challenge).encode("ascii")):
            raise LatencyError("the device agent at {} could not prove that it knows the token: "
                               "it is not the agent registered there".format(self.address))
        return reply, P.Session(self.token, hello["challenge"], challenge, "client")

    def _refusal(self, err):
        """The error for an agent's refusal: `busy` may pass (DeviceLost), the rest will not."""
        kind = DeviceLost if err.get("code") == P.BUSY else LatencyError
        return kind("device agent at {} refused the connection: {}: {}".format(
            self.address, err.get("code"), err.get("message")))

    def _stale(self):
        """True if the agent has closed this (idle) connection: readable with EOF or an error."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return False
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _drop(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = self.session = None

    def close(self):
        with self._lock:
            self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- requests ---------------------------------------------------------------------------

    def request(self, kind, on_progress=None, **fields):
        """Send one request and return its reply (ok true); raises LatencyError otherwise.
        `on_progress(done, total)` receives the agent's progress messages, if it sends any."""
        with self._lock:
            self._ensure_connected()
            self._next_id += 1
            message = dict(fields, type=kind, id=self._next_id)
            try:
                P.send_message(self.sock, message, self.session)
                while True:
                    reply = P.recv_message(self.sock, self.timeout, session=self.session)
                    if reply.get("type") == "progress" and reply.get("ok"):
                        if on_progress:
                            on_progress(reply.get("done"), reply.get("total"))
                        continue
                    break
            except P.ConnectionClosed:
                self._drop()
                raise DeviceLost("connection closed by the device agent at {} during {!r} "
                                 "(did the agent stop or crash?)".format(self.address, kind))
            except P.ForgedFrame as e:  # not a lost device: someone on the way is tampering
                self._drop()
                raise LatencyError("device agent at {} during {!r}: {}; not measuring through "
                                   "this connection".format(self.address, kind, e))
            except P.FrameError as e:
                self._drop()
                raise DeviceLost("device agent at {} during {!r}: {}".format(
                    self.address, kind, e))
            except P.BadJson as e:
                self._drop()
                raise LatencyError("device agent at {} sent a broken reply to {!r}: {}".format(
                    self.address, kind, e))
            except OSError as e:
                self._drop()
                raise DeviceLost("connection to the device agent at {} failed during {!r}: "
                                 "{}".format(self.address, kind, e))
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise LatencyError("device agent at {} could not {}: {}: {}".format(
                self.address, kind, err.get("code"), err.get("message")))
        return reply

    def ping(self):
        """Round-trip time of a ping, in milliseconds."""
        with self._lock:
            self._ensure_connected()
        start = time.perf_counter()
        self.request("ping")
        return (time.perf_counter() - start) * 1000.0

    def info(self):
        return self.request("info")["info"]

    def measure(self, arch, input_shape=None, warmup=10, runs=30, device=None, backend=None):
        fields = {"arch": as_architecture(arch).to_dict(), "warmup": warmup, "runs": runs}
        if backend is not None:
            fields["backend"] = backend
        if input_shape is not None:
            fields["input_shape"] = [int(d) for d in input_shape]
        if device is not None:
            fields["device"] = device
        return self.request("measure", **fields)["result"]

    def profile(self, space, warmup=10, runs=30, progress=None, device=None, backend=None):
        config = space.config() if hasattr(space, "config") else dict(space)
        fields = {"space": config, "warmup": warmup, "runs": runs, "progress": progress is not None}
        if device is not None:
            fields["device"] = device
        if backend is not None:
            fields["backend"] = backend
        return self.request("profile", on_progress=progress, **fields)["lut"]


class AgentDevice:
    """A device agent as a latency source; `device_key` is "agent:" + the id the agent reports
    (hostname, cuda/cpu and threads), so that cached measurements follow the device, not its IP."""

    def __init__(self, host, port=DEFAULT_PORT, token="", warmup=10, runs=30, backend="pytorch",
                 **client_options):
        self.client = DeviceClient(host, port, token, **client_options)
        self.warmup, self.runs, self.backend = warmup, runs, backend

    @property
    def device_key(self):
        """From the agent's welcome: one handshake on first use, none after (a reconnection
        renews the welcome)."""
        welcome = self.client.welcome or self.client.connect()
        return "agent:" + str(welcome["device_id"]) + backend_suffix(self.backend)

    def measure(self, arch, input_shape=None):
        return self.client.measure(arch, input_shape, self.warmup, self.runs,
                                   backend=self._backend_field())

    def profile(self, space, progress=None):
        return self.client.profile(space, self.warmup, self.runs, progress,
                                   backend=self._backend_field())

    def _backend_field(self):
        """None for pytorch: an agent from before the backends takes no `backend` field."""
        return None if self.backend == "pytorch" else self.backend

    def info(self):
        info = self.client.info()
        info["device_id"] = self.device_key
        info["address"] = self.client.address
        return info

    def close(self):
        self.client.close()
