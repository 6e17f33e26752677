"""The agent's TCP server: handshake, request dispatch, one measurement at a time.

Python 3.6 / PyTorch 1.10 compatible; torch and this package's own modules only.
"""
import glob
import hmac
import logging
import os
import platform
import select
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time

import torch

from .arch import ArchitectureError, as_architecture, is_int
from .complexity import complexity
from .measure import Aborted, measure_architecture, profile_lut, profile_paths
from .space import SearchSpace

from . import __version__, limits, onnx_backend
from . import protocol as P

log = logging.getLogger("nano_agent")

# An unauthenticated client must not be able to take the device away from its users: only
# authenticated connections hold one of the MAX_CONNECTIONS places; a connection has
# HANDSHAKE_TIMEOUT_S to authenticate; and when the connections authenticating at once are too
# many, a host with fewer of them takes the place of the busiest host's oldest (HandshakeLimit),
# so that a flood from any number of hosts leaves room for everybody else.
MAX_CONNECTIONS = 16  # authenticated connections at once (each is a thread); more get `busy`
WORK = ("measure", "profile")  # the requests that keep a connection its place (serve)
MAX_HANDSHAKES = 256  # connections authenticating at once
HANDSHAKE_TIMEOUT_S = 5.0


class RequestError(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code
        self.message = message


def _int_arg(request, name, default, limit, where=""):
    value = request.get(name, default)
    if not is_int(value) or value not in limit:
        raise RequestError(P.BAD_REQUEST, "{}{} must be an integer in {}, got {!r}".format(
            where, name, limit.describe(), value))
    return value


# ---------------------------------------------------------------------------------------------
# device information


def _read(path):
    try:
        with open(path, "r") as f:
            return f.read()
    except (IOError, OSError, UnicodeDecodeError):
        return None


def cpu_model():
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("model name", "hardware", "processor") and value.strip() \
                and not value.strip().isdigit():
            return value.strip()
    return platform.processor() or platform.machine() or None


def memory_total_bytes():
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            try:
                return int(parts[1]) * 1024  # kB
            except (IndexError, ValueError):
                return None
    return None


def power_mode():
    """`nvpmodel -q` output (Jetson power mode), or None where the command does not exist."""
    exe = shutil.which("nvpmodel")
    if not exe:
        return None
    try:
        out = subprocess.check_output([exe, "-q"], stderr=subprocess.STDOUT, timeout=5,
                                      universal_newlines=True)
    except (OSError, subprocess.SubprocessError) as e:
        return "unavailable: {}".format(e)
    return out.strip()


def temperatures():
    """{zone type (or name): degrees C} from /sys/class/thermal, where readable."""
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        raw = _read(os.path.join(zone, "temp"))
        if raw is None:
            continue
        try:
            value = int(raw.strip()) / 1000.0
        except ValueError:
            continue
        name = (_read(os.path.join(zone, "type")) or "").strip() or os.path.basename(zone)
        if name in temps:
            name = "{} ({})".format(name, os.path.basename(zone))
        temps[name] = value
    return temps


# ---------------------------------------------------------------------------------------------
# the agent


class Agent(object):
    """What the server serves: the token, the measuring device and the measurement lock."""

    def __init__(self, token, device="auto", threads=1, timeout=30.0,
                 max_memory_mb=limits.DEFAULT_MAX_MEMORY_MB, trt_fp16=False,
                 max_request_s=limits.DEFAULT_MAX_REQUEST_S):
        if not token:
            raise ValueError("the agent needs a non-empty token")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise ValueError("device must be auto, cpu or cuda, got {!r}".format(device))
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda, but CUDA is not available to this torch")
        self.token = token
        self.device = device
        self.threads = threads
        self.timeout = timeout
        self.max_memory_bytes = int(max_memory_mb * 2 ** 20)
        self.max_request_s = max_request_s
        self.lock = threading.Lock()  # one measurement at a time, process-wide
        host = platform.node() or "device"
        # FP16 engines measure other latencies: another measuring identity
        self.device_id = "{}:{}".format(host, device) + (":{}t".format(threads)
                                                         if device == "cpu" else "") + \
            (":trt-fp16" if trt_fp16 else "")
        onnx_backend.set_trt_fp16(trt_fp16)

    # -- requests ---------------------------------------------------------------------------

    def info(self):
        cuda = torch.cuda.is_available()
        return {
            "device_id": self.device_id, "agent": __version__, "protocol": P.PROTOCOL_VERSION,
            "hostname": platform.node(), "platform": platform.platform(),
            "machine": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "cuda_available": cuda, "device": self.device, "threads": self.threads,
            "device_name": torch.cuda.get_device_name(0) if cuda else cpu_model(),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "memory_total_bytes": memory_total_bytes(), "power_mode": power_mode(),
            "temperatures_c": temperatures(),
            "backends": ["pytorch"] + (["onnxruntime"] if onnx_backend.available() else []),
            "onnxruntime": onnx_backend.info(),
        }

    def _backend_arg(self, request):
        backend = request.get("backend", "pytorch")
        if backend not in P.BACKENDS:
            raise RequestError(P.BAD_REQUEST, "backend must be one of {}, got {!r}".format(
                ", ".join(P.BACKENDS), backend))
        if backend == "onnxruntime" and not onnx_backend.available():
            raise RequestError(P.BAD_REQUEST, "this agent has no onnxruntime: install it on the "
                                              "device (docs/agent.md), or measure with pytorch")
        return backend

    def _device_arg(self, request):
        device = request.get("device", self.device)
        if device not in ("cpu", "cuda"):
            raise RequestError(P.BAD_REQUEST, "device must be 'cpu' or 'cuda', got {!r}".format(
                device))
        if device == "cuda" and not torch.cuda.is_available():
            raise RequestError(P.BAD_REQUEST, "CUDA is not available on this device")
        return device

    def _stop_when(self, abort):
        """`abort` (its client left) or this agent's time limit, whichever comes first: asked
        between timed runs, from now on (the lock is held), so that no request holds the lock
        for longer than max_request_s, whatever its number of runs."""
        deadline = time.monotonic() + self.max_request_s

        def stop():
            if abort is not None and abort():
                return "its client left"
            if time.monotonic() > deadline:
                return "it ran past this agent's limit of {:g} s per request " \
                       "(nano_agent --max-request-s)".format(self.max_request_s)
            return None
        return stop

    def measure(self, request, abort=None):
        """`abort()`: asked between timed runs; true stops the measurement (its client left)."""
        if "arch" not in request:
            raise RequestError(P.BAD_REQUEST, "measure needs an 'arch' (architecture JSON object)")
        try:
            arch = as_architecture(request["arch"])
        except ArchitectureError as e:
            raise RequestError(P.BAD_ARCHITECTURE, str(e))
        shape = request.get("input_shape")
        if shape is None:
            shape = list(arch.input_shape)
        if not isinstance(shape, list) or len(shape) != 4 or not all(is_int(d) for d in shape):
            raise RequestError(P.BAD_REQUEST, "input_shape must be 4 integers [batch, channels, "
                                              "height, width], got {!r}".format(shape))
        if shape[0] not in limits.BATCH:
            raise RequestError(P.BAD_REQUEST, "batch must be in {}, got {}".format(
                limits.BATCH.describe(), shape[0]))
        if shape[1] != arch.in_channels:
            raise RequestError(P.BAD_REQUEST, "input_shape has {} channels, the architecture takes "
                                              "{}".format(shape[1], arch.in_channels))
        if not all(d in limits.RESOLUTION for d in shape[2:]):
            raise RequestError(P.BAD_REQUEST, "input height and width must be in {}, got "
                               "{}x{}".format(limits.RESOLUTION.describe(), shape[2], shape[3]))
        warmup = _int_arg(request, "warmup", 10, limits.WARMUP_RUNS)
        runs = _int_arg(request, "runs", 30, limits.TIMED_RUNS)
        device = self._device_arg(request)
        backend = self._backend_arg(request)
        self._check_memory(arch, float(shape[0] * shape[2] * shape[3]) /
                           (arch.resolution * arch.resolution))
        with self.lock:
            started = time.time()
            try:
                result = measure_architecture(arch, shape, warmup, runs, device, self.threads,
                                              backend, self._stop_when(abort))
            except (RuntimeError, MemoryError, Aborted) as e:
                raise RequestError(P.MEASURE_FAILED, "measurement failed: {}".format(e))
            finally:
                if device == "cuda":
                    torch.cuda.empty_cache()
            result["started_at"] = started
            result["finished_at"] = time.time()
        result["arch_hash"] = arch.hash
        result["device_id"] = self.device_id
        return {"type": "measurement", "result": result}

    def _check_memory(self, arch, scale=1.0, which=""):
        """RequestError where `arch`'s weights and peak activations (times `scale`, for another
        input size) are estimated over this agent's memory limit; `which` says which network."""
        cost = complexity(arch)
        estimate = cost.params * 4 + cost.activation_peak_bytes * scale
        if estimate > self.max_memory_bytes:
            raise RequestError(P.BAD_ARCHITECTURE, "estimated inference memory {:.0f} MiB{} is "
                               "over this agent's limit of {:.0f} MiB".format(
                                   estimate / 2 ** 20, which, self.max_memory_bytes / 2 ** 20))

    def profile(self, request, send_progress=None, abort=None):
        space_args = request.get("space")
        if not isinstance(space_args, dict):
            raise RequestError(P.BAD_REQUEST, "profile needs a 'space' object (width_mult, "
                                              "resolution, num_classes, in_channels)")
        unknown = sorted(k for k in space_args
                         if k not in ("width_mult", "resolution", "num_classes", "in_channels",
                                      "dropout"))
        if unknown:
            raise RequestError(P.BAD_REQUEST, "space has unknown key(s) {}".format(
                ", ".join(repr(k) for k in unknown)))
        width = space_args.get("width_mult", 1.0)
        if isinstance(width, bool) or not isinstance(width, (int, float)) \
                or width not in limits.WIDTH_MULT:
            raise RequestError(P.BAD_REQUEST, "space.width_mult must be a number in {}, got "
                                              "{!r}".format(limits.WIDTH_MULT.describe(), width))
        resolution = _int_arg(space_args, "resolution", 224, limits.RESOLUTION, "space.")
        num_classes = _int_arg(space_args, "num_classes", 1000, limits.NUM_CLASSES, "space.")
        in_channels = _int_arg(space_args, "in_channels", 3, limits.IN_CHANNELS, "space.")
        dropout = space_args.get("dropout", 0.2)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout < 1:
            raise RequestError(P.BAD_REQUEST, "space.dropout must be in [0, 1)")
        warmup = _int_arg(request, "warmup", 10, limits.WARMUP_RUNS)
        runs = _int_arg(request, "runs", 30, limits.TIMED_RUNS)
        device = self._device_arg(request)
        backend = self._backend_arg(request)
        try:
            space = SearchSpace(width, resolution, num_classes, in_channels, dropout)
            networks = [space.architecture(path) for path in profile_paths(space)]
        except ValueError as e:  # an ArchitectureError too: a network out of every bound
            raise RequestError(P.BAD_REQUEST, "bad search space: {}".format(e))
        for arch in networks:  # what profiling builds, checked as measure checks its network
            self._check_memory(arch, which=" (a network that profiling this space builds)")
        with self.lock:
            started = time.time()
            try:
                lut = profile_lut(space, warmup, runs, device, self.threads, send_progress,
                                  backend=backend, abort=self._stop_when(abort))
            except (RuntimeError, MemoryError, Aborted) as e:
                raise RequestError(P.MEASURE_FAILED, "profiling failed: {}".format(e))
            finally:
                if device == "cuda":
                    torch.cuda.empty_cache()
            finished = time.time()
        lut["device_id"] = self.device_id
        return {"type": "lut", "lut": lut, "started_at": started, "finished_at": finished}


# ---------------------------------------------------------------------------------------------
# connections


class Handler(socketserver.BaseRequestHandler):
    """One client connection: handshake, then requests until the client leaves or breaks framing."""

    def setup(self):
        self.agent = self.server.agent
        self.peer = "{}:{}".format(*self.client_address[:2])
        self.holds_place = False
        self.challenge = self.client_challenge = None  # the handshake's two, as hex
        self.session = None  # from the welcome on: every frame authenticated (P.Session)

    def send(self, message):
        P.send_message(self.request, message, self.session)

    def handle(self):
        try:
            self._handle()
        finally:
            if self.holds_place:
                self.server.connections.release()

    def _handle(self):
        sock = self.request
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self.handshake():
                return
            self.serve()
        except P.FrameTooLarge as e:
            log.warning("%s: %s; closing", self.peer, e)
            self._try_send(P.error(P.FRAME_TOO_LARGE, str(e)))
        except P.ConnectionClosed:
            log.info("%s: disconnected", self.peer)
        except P.FrameError as e:
            log.warning("%s: %s; closing", self.peer, e)
        except (OSError, ValueError) as e:
            log.warning("%s: connection error: %s", self.peer, e)

    def client_gone(self):
        """Whether the client has closed its connection: asked between timed runs, so that a
        client that left does not keep the others waiting for the lock until its runs end."""
        try:
            readable, _, _ = select.select([self.request], [], [], 0)
            return bool(readable) and self.request.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _try_send(self, message):
        try:
            self.request.settimeout(2.0)
            self.send(message)
        except (OSError, ValueError):
            pass

    def handshake(self):
        """Authenticate the client and take one of the places; False: refused (and told why)."""
        host = host_of(self.client_address[0])
        if not self.server.handshakes.enter(host, self.request):
            log.warning("%s: refused, too many connections authenticating", self.peer)
            self._try_send(P.error(P.BUSY, "too many connections are authenticating; try again"))
            return False
        try:
            if not self.authenticate():
                return False
        finally:
            self.server.handshakes.leave(host, self.request)
        if not self.server.connections.acquire(False):
            log.warning("%s: refused, already %d connections", self.peer, MAX_CONNECTIONS)
            self.send(P.error(P.BUSY, "the agent already serves {} connections".format(
                MAX_CONNECTIONS)))
            return False
        self.holds_place = True
        self.send({"ok": True, "type": "welcome", "device_id": self.agent.device_id,
                   "agent": __version__, "protocol": P.PROTOCOL_VERSION,
                   "proof": P.agent_proof(self.agent.token, self.client_challenge)})
        self.session = P.Session(self.agent.token, self.challenge, self.client_challenge, "agent")
        log.info("%s: authenticated", self.peer)
        return True

    def authenticate(self):
        """The hello, then the client's auth message within HANDSHAKE_TIMEOUT_S, checked."""
        self.challenge = os.urandom(32).hex()
        self.send({"type": "hello", "protocol": P.PROTOCOL_VERSION, "agent": __version__,
                   "challenge": self.challenge})
        try:
            reply = P.recv_message(self.request, min(HANDSHAKE_TIMEOUT_S, self.agent.timeout),
                                   P.MAX_AUTH_FRAME)
        except P.BadJson as e:
            self.send(P.error(P.BAD_JSON, "expected the auth message: {}".format(e)))
            return False
        if reply.get("type") != "auth":
            self.send(P.error(P.AUTH_REQUIRED, "authenticate first: expected an 'auth' message, "
                                               "got {!r}".format(reply.get("type"))))
            log.warning("%s: request before authentication; closing", self.peer)
            return False
        if reply.get("protocol") != P.PROTOCOL_VERSION:
            self.send(P.error(P.PROTOCOL_MISMATCH, "agent speaks protocol {}, client {!r}: update "
                              "the {} so that both speak the same version".format(
                                  P.PROTOCOL_VERSION, reply.get("protocol"),
                                  "agent" if is_int(reply.get("protocol")) and
                                  reply.get("protocol") > P.PROTOCOL_VERSION else "client")))
            log.warning("%s: protocol %r refused", self.peer, reply.get("protocol"))
            return False
        expected = P.compute_mac(self.agent.token, self.challenge)
        mac = reply.get("mac")
        if not isinstance(mac, str) or not hmac.compare_digest(
                expected.encode("ascii"), mac.encode("utf-8", "replace")):
            self.send(P.error(P.AUTH_FAILED, "the device refused the token"))
            log.warning("%s: wrong token; closing", self.peer)
            return False
        if not P.is_challenge(reply.get("challenge")):
            self.send(P.error(P.BAD_REQUEST, "the auth message needs the client's 'challenge' (64 "
                                             "hex digits), which the welcome answers"))
            return False
        self.client_challenge = reply["challenge"]
        return True

    def serve(self):
        """Requests until the client leaves, or stays silent for the agent's timeout, or keeps
        only pinging (or asking for info) for that long: pings would otherwise let one token
        holder keep every place without measuring anything."""
        worked = time.monotonic()  # the end of the last measure or profile, or the welcome
        while True:
            payload = P.recv_frame(self.request, self.agent.timeout, session=self.session)
            try:
                request = P.decode(payload)
            except P.BadJson as e:
                self.send(P.error(P.BAD_JSON, str(e)))
                continue
            request_id = request.get("id")
            kind = request.get("type")
            if kind not in WORK and time.monotonic() - worked > self.agent.timeout:
                self.send(P.error(P.IDLE, "no measure or profile for {:g} s: closing, to give the "
                                          "place back (connect again to go on)".format(
                                              self.agent.timeout), request_id))
                log.warning("%s: only %r for %.0f s; closing", self.peer, kind,
                            time.monotonic() - worked)
                return
            start = time.perf_counter()
            try:
                reply = self.dispatch(kind, request, request_id)
            except RequestError as e:
                reply = P.error(e.code, e.message, request_id)
            except Exception as e:  # a bug must not take the agent down; report it to the client
                log.exception("%s: %r failed", self.peer, kind)
                reply = P.error(P.INTERNAL_ERROR, "{}: {}".format(type(e).__name__, e),
                                request_id)
            else:
                reply["ok"] = True
                if request_id is not None:
                    reply["id"] = request_id
            if kind in WORK:
                worked = time.monotonic()
            log.info("%s: %s -> %s in %.1f ms", self.peer, kind,
                     "ok" if reply.get("ok") else reply["error"]["code"],
                     (time.perf_counter() - start) * 1000.0)
            self.send(reply)

    def dispatch(self, kind, request, request_id):
        if kind == "ping":
            return {"type": "pong", "time": time.time()}
        if kind == "info":
            return {"type": "info", "info": self.agent.info()}
        if kind == "measure":
            return self.agent.measure(request, self.client_gone)
        if kind == "profile":
            progress = None
            if request.get("progress"):
                def progress(done, total):
                    message = {"ok": True, "type": "progress", "done": done, "total": total}
                    if request_id is not None:
                        message["id"] = request_id
                    self.send(message)
            return self.agent.profile(request, progress, self.client_gone)
        raise RequestError(P.UNKNOWN_REQUEST, "unknown request type {!r} (known: ping, info, "
                                              "measure, profile)".format(kind))


def host_of(address):
    """Whom a connection counts for: its IPv4 address, or the /64 network of its IPv6 address
    (every IPv6 host has many addresses)."""
    if ":" not in address:
        return address
    try:
        packed = socket.inet_pton(socket.AF_INET6, address.split("%")[0])
    except (OSError, ValueError):
        return address
    if packed[:12] == b"\0" * 10 + b"\xff\xff":  # an IPv4 client of a dual-stack socket
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return packed[:8].hex() + "::/64"


class HandshakeLimit(object):
    """Connections authenticating at once: at most `total`. When all places are taken, a newcomer
    from a host with fewer of them than the busiest host, less one, takes the place of that
    host's oldest, whose connection is shut down; so however many connections some hosts open,
    every other host still gets its turn."""

    def __init__(self, total):
        self.total = total
        self.by_host = {}  # host -> its authenticating sockets, oldest first
        self.lock = threading.Lock()

    def enter(self, host, sock):
        with self.lock:
            if sum(len(socks) for socks in self.by_host.values()) >= self.total:
                busiest = max(self.by_host, key=lambda h: len(self.by_host[h]))
                if len(self.by_host[busiest]) <= len(self.by_host.get(host, ())) + 1:
                    return False
                _shut(self.by_host[busiest].pop(0))
            self.by_host.setdefault(host, []).append(sock)
            return True

    def leave(self, host, sock):
        with self.lock:
            socks = self.by_host.get(host, [])
            if sock in socks:  # not if its place was taken
                socks.remove(sock)
            if not socks:
                self.by_host.pop(host, None)


def _shut(sock):
    """End an evicted connection's handshake: its read fails at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


class AgentServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a burst of connections waits in the kernel instead of being reset

    def __init__(self, address, agent):
        self.agent = agent
        self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.handshakes = HandshakeLimit(MAX_HANDSHAKES)
        socketserver.ThreadingTCPServer.__init__(self, address, Handler)


def serve(agent, host="0.0.0.0", port=8765, out=None):
    """Listen, print the address and token line, and serve until interrupted."""
    out = out or sys.stdout
    server = AgentServer((host, port), agent)
    actual_host, actual_port = server.server_address[:2]
    out.write("nano_agent listening on {}:{} token={}\n".format(actual_host, actual_port,
                                                                agent.token))
    out.flush()
    log.info("device %s (%s, %d torch thread(s)), protocol %d", agent.device_id, agent.device,
             agent.threads, P.PROTOCOL_VERSION)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
