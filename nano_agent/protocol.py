"""The wire protocol between the search server and the device agent (see docs/protocol.md).

Each message is a 4-byte big-endian unsigned length, then that many bytes of one UTF-8 JSON object.
Standard library only and Python 3.6 compatible: the agent (Python 3.6 on the Jetson Nano) and the
server-side client (search_core/device_client.py) both use this module.
"""
import hashlib
import hmac
import json
import socket
import struct
import time

PROTOCOL_VERSION = 2  # 2: the agent proves it knows the token too (agent_proof)
DEFAULT_PORT = 8765
MAX_FRAME = 1024 * 1024  # bytes of JSON in one message
MAX_AUTH_FRAME = 4096  # bytes of the client's auth message: nobody unauthenticated sends more
HEADER = struct.Struct(">I")
# what a measure or profile request may name as its "backend" (the first is the default): PyTorch,
# or the network exported to ONNX and run in onnxruntime, as it will be deployed
BACKENDS = ("pytorch", "onnxruntime")

# error codes (the "code" of an {"ok": false, "error": {...}} reply)
AUTH_FAILED = "auth_failed"
AUTH_REQUIRED = "auth_required"
PROTOCOL_MISMATCH = "protocol_mismatch"
BAD_JSON = "bad_json"
BAD_REQUEST = "bad_request"
BAD_ARCHITECTURE = "bad_architecture"
UNKNOWN_REQUEST = "unknown_request"
FRAME_TOO_LARGE = "frame_too_large"
MEASURE_FAILED = "measure_failed"
INTERNAL_ERROR = "internal_error"
BUSY = "busy"
IDLE = "idle"  # an authenticated connection that only pings: its place goes back (see server)


class FrameError(Exception):
    """The byte stream is broken (oversized length, truncated frame, closed, timed out): the
    connection cannot be used any more."""


class ConnectionClosed(FrameError):
    """The peer closed the connection."""


class FrameTooLarge(FrameError):
    def __init__(self, length, limit=MAX_FRAME):
        FrameError.__init__(self, "announced frame of {} bytes is over the limit of {} "
                                  "bytes".format(length, limit))
        self.length = length


class BadJson(Exception):
    """A complete frame arrived, but it is not one UTF-8 JSON object; the stream is still intact."""


def encode(message):
    """One frame: header + compact UTF-8 JSON."""
    data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(data) > MAX_FRAME:
        raise ValueError("message of {} bytes is over the limit of {} bytes".format(
            len(data), MAX_FRAME))
    return HEADER.pack(len(data)) + data


def send_message(sock, message):
    sock.sendall(encode(message))


def _read_exact(sock, n, deadline, started):
    """n bytes, all before `deadline` (time.monotonic()); `started` says whether part of the frame
    was already read (for the error message)."""
    chunks = []
    remaining = n
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FrameError("timed out {} a frame".format(
                    "in the middle of" if started or chunks else "waiting for"))
            sock.settimeout(left)
        try:
            chunk = sock.recv(min(remaining, 65536))
        except socket.timeout:
            raise FrameError("timed out {} a frame".format(
                "in the middle of" if started or chunks else "waiting for"))
        if not chunk:
            if started or chunks:
                raise ConnectionClosed("connection closed in the middle of a frame")
            raise ConnectionClosed("connection closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock, timeout=None, limit=MAX_FRAME):
    """The payload bytes of the next frame. The whole frame must arrive within `timeout` seconds
    (None: wait forever). Raises FrameTooLarge before reading a payload over `limit` bytes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    header = _read_exact(sock, HEADER.size, deadline, False)
    (length,) = HEADER.unpack(header)
    if length > limit:
        raise FrameTooLarge(length, limit)
    return _read_exact(sock, length, deadline, True) if length else b""


def strict_loads(text):
    """json.loads for what arrives from outside: NaN and Infinity, which are not JSON, raise
    ValueError like any other bad JSON (so does too deep a nesting, as RecursionError)."""
    return json.loads(text, parse_constant=_not_json)


def _not_json(name):
    raise ValueError("{} is not a JSON value".format(name))


def decode(payload):
    """The JSON object in a payload; BadJson if it is not UTF-8 JSON (NaN and Infinity are not,
    and nesting deeper than the parser goes is refused) or not an object."""
    try:
        message = strict_loads(payload.decode("utf-8"))
    except RecursionError:
        raise BadJson("message is nested too deeply")
    except (UnicodeDecodeError, ValueError) as e:
        raise BadJson("message is not UTF-8 JSON: {}".format(e))
    if not isinstance(message, dict):
        raise BadJson("message must be a JSON object, got {}".format(type(message).__name__))
    return message


def recv_message(sock, timeout=None, limit=MAX_FRAME):
    return decode(recv_frame(sock, timeout, limit))


def compute_mac(token, challenge_hex):
    """hex(HMAC-SHA256(key = token as UTF-8, message = the challenge's raw bytes))."""
    return hmac.new(token.encode("utf-8"), bytes(bytearray.fromhex(challenge_hex)),
                    hashlib.sha256).hexdigest()


def agent_proof(token, challenge_hex):
    """hex(HMAC-SHA256(key = token as UTF-8, message = b"agent" + the client's challenge bytes)):
    the welcome's proof that the agent knows the token too. The prefix keeps it apart from a
    client's MAC (over the bare challenge): neither side can be made to compute the other's."""
    return hmac.new(token.encode("utf-8"), b"agent" + bytes(bytearray.fromhex(challenge_hex)),
                    hashlib.sha256).hexdigest()


def is_challenge(value):
    """Whether `value` is a challenge: 64 hex digits (32 bytes)."""
    if not isinstance(value, str) or len(value) != 64:
        return False
    try:
        bytearray.fromhex(value)
    except ValueError:
        return False
    return True


def error(code, message, request_id=None):
    reply = {"ok": False, "error": {"code": code, "message": message}}
    if request_id is not None:
        reply["id"] = request_id
    return reply
