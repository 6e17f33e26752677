"""The wire protocol between the search server and the device agent (see docs/protocol.md).

Each message is a 4-byte big-endian unsigned length, then that many bytes of one UTF-8 JSON object;
after the welcome, the bytes are a 32-byte tag (an HMAC under the connection's session key) and then
the JSON. Standard library only and Python 3.6 compatible: the agent (Python 3.6 on the Jetson Nano)
and the server-side client (search_core/device_client.py) both use this module.
"""
import hashlib
import hmac
import json
import socket
import struct
import time

PROTOCOL_VERSION = 3  # 2: the agent proves it knows the token too; 3: every frame after the welcome
# is authenticated (Session)
DEFAULT_PORT = 8765
MAX_FRAME = 1024 * 1024  # bytes of JSON in one message
TAG_SIZE = 32  # bytes of a frame's HMAC-SHA256 tag, after the welcome
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


class ForgedFrame(FrameError):
    """A frame after the welcome whose tag is wrong: something between the two ends changed,
    injected, replayed or reordered it. The connection cannot be trusted any more."""


class BadJson(Exception):
    """A complete frame arrived, but it is not one UTF-8 JSON object; the stream is still intact."""


def encode(message, session=None):
    """One frame: header + compact UTF-8 JSON (+ the tag before it, in a session)."""
    data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(data) > MAX_FRAME:
        raise ValueError("message of {} bytes is over the limit of {} bytes".format(
            len(data), MAX_FRAME))
    return frame(data, session)


def frame(payload, session=None):
    """The bytes of one frame carrying `payload` (sealed by `session`, if any)."""
    if session is not None:
        payload = session.seal(payload) + payload
    return HEADER.pack(len(payload)) + payload


def send_message(sock, message, session=None):
    sock.sendall(encode(message, session))


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


def recv_frame(sock, timeout=None, limit=MAX_FRAME, session=None):
    """The payload bytes of the next frame. The whole frame must arrive within `timeout` seconds
    (None: wait forever). Raises FrameTooLarge before reading a payload over `limit` bytes, and
    in a session ForgedFrame for a frame whose tag is wrong."""
    deadline = None if timeout is None else time.monotonic() + timeout
    header = _read_exact(sock, HEADER.size, deadline, False)
    (length,) = HEADER.unpack(header)
    tag_size = 0 if session is None else TAG_SIZE
    if length > limit + tag_size:
        raise FrameTooLarge(length - tag_size, limit)
    data = _read_exact(sock, length, deadline, True) if length else b""
    if session is None:
        return data
    return session.open(data[:TAG_SIZE], data[TAG_SIZE:])  # a frame too short for a tag fails


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


def recv_message(sock, timeout=None, limit=MAX_FRAME, session=None):
    return decode(recv_frame(sock, timeout, limit, session))


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


class Session(object):
    """What authenticates every frame after the welcome, in both directions. The handshake alone
    proved only its two ends: a relay between a client and the real agent could pass the
    challenges on, then inject requests or rewrite replies. Each frame now carries
    HMAC-SHA256(session key, sender + frame number + payload), the key being
    HMAC-SHA256(token, b"session" + the agent's challenge + the client's challenge): fresh for every
    connection, known only to holders of the token, and the numbers refuse a frame replayed,
    reordered, dropped or sent back to its sender. (Frames are not encrypted: a relay still reads
    them, and can only end the connection.)

    side: "agent" or "client", the end that holds this session."""

    SIDES = ("agent", "client")

    def __init__(self, token, agent_challenge_hex, client_challenge_hex, side):
        if side not in self.SIDES:
            raise ValueError("side must be one of {}".format(self.SIDES))
        self._key = hmac.new(token.encode("utf-8"),
                             b"session" + bytes(bytearray.fromhex(agent_challenge_hex))
                             + bytes(bytearray.fromhex(client_challenge_hex)),
                             hashlib.sha256).digest()
        self._mine = side.encode("ascii")
        self._theirs = self.SIDES[1 - self.SIDES.index(side)].encode("ascii")
        self._sent = 0
        self._received = 0

    def _tag(self, sender, number, payload):
        return hmac.new(self._key, sender + struct.pack(">Q", number) + payload,
                        hashlib.sha256).digest()

    def seal(self, payload):
        """The tag of the next frame this side sends."""
        tag = self._tag(self._mine, self._sent, payload)
        self._sent += 1
        return tag

    def open(self, tag, payload):
        """`payload`, if `tag` is the one the other side's next frame must carry; else
        ForgedFrame."""
        if not hmac.compare_digest(tag, self._tag(self._theirs, self._received, payload)):
            raise ForgedFrame("frame {} from the {} failed its authentication: something between "
                              "the client and the agent changed, injected or replayed it".format(
                                  self._received, self._theirs.decode("ascii")))
        self._received += 1
        return payload


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
