"""The device agent (nano_agent/) and its client (search_core/device_client.py), end to end: real
agent processes on 127.0.0.1, a free port each, tiny architectures."""
import json
import os
import select
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

import pytest

from nano_agent import protocol as P
from nano_agent.credentials import TOKEN_ENV, resolve_token
from search_core.device_client import AgentDevice, DeviceClient, parse_address
from search_core.device_client import LatencyError
from search_core.lut import Lut
from search_core.measurements import Measurer
from nano_agent.space import SearchSpace

from helpers import wait_for
from processes import (AGENT_TIMEOUT, FAST, ROOT, TOKEN, Agent, free_port, tiny_search,
                       without_token_env)

pytestmark = pytest.mark.process

SPACE = SearchSpace(0.5, 32, 10, 1)


@pytest.fixture
def fresh_agent(tmp_path):
    a = Agent(tmp_path)
    yield a
    a.stop()


def closed_or_error(conn, timeout=5):
    """Read until the agent closes the connection; returns the error codes it sent before."""
    codes = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            codes.append(conn.recv(max(0.1, deadline - time.monotonic()))["error"]["code"])
        except (P.ConnectionClosed, ConnectionResetError):
            return codes


# ---------------------------------------------------------------------------------------------


def test_handshake_ping_and_info(agent):
    with agent.client() as c:
        welcome = c.connect()
        assert welcome["ok"] and welcome["type"] == "welcome"
        assert welcome["protocol"] == P.PROTOCOL_VERSION
        assert welcome["device_id"].endswith(":cpu:1t")
        assert 0 < c.ping() < 1000
        info = c.info()
    for key in ("hostname", "platform", "python", "torch", "cuda", "cuda_available",
                "device_name", "cpu_count", "memory_total_bytes", "power_mode",
                "temperatures_c", "device_id"):
        assert key in info, key
    assert info["device"] == "cpu" and info["cpu_count"] >= 1
    assert isinstance(info["temperatures_c"], dict)


def test_measure_returns_sane_statistics(agent):
    arch = SPACE.mobilenet_v2()
    with agent.client() as c:
        stats = c.measure(arch, warmup=1, runs=5)
    assert stats["runs"] == 5 and len(stats["times_ms"]) == 5 and stats["warmup"] == 1
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    assert stats["memory_bytes"] > 0 and stats["memory_source"] == "estimated"
    assert stats["params"] > 0 and stats["macs"] > 0 and stats["arch_hash"] == arch.hash
    assert stats["input_shape"] == [1, 1, 32, 32]
    assert stats["started_at"] <= stats["finished_at"]


def test_the_agent_measures_in_onnxruntime_when_asked(agent):
    """The same architecture through the onnxruntime backend: exported to ONNX in the agent and
    timed in its CPU provider; its measurements are keyed apart from PyTorch's."""
    arch = SPACE.mobilenet_v2()
    with agent.client() as c:
        info = c.info()
        assert info["backends"] == ["pytorch", "onnxruntime"]
        stats = c.measure(arch, warmup=1, runs=5, backend="onnxruntime")
        assert "CPUExecutionProvider" in c.info()["onnxruntime"]["providers"]  # loaded now
        assert stats["backend"] == "onnxruntime" and stats["device"] == "onnxruntime:CPUExecutionProvider"
        assert stats["runs"] == 5 and 0 < stats["min_ms"] <= stats["median_ms"]
        assert c.measure(arch, warmup=1, runs=2)["backend"] == "pytorch"
        for kind, fields in (("measure", {"arch": arch.to_dict()}), ("profile", {"space": SPACE.config()})):
            with pytest.raises(LatencyError, match="backend must be one of pytorch, onnxruntime"):
                c.request(kind, backend="tvm", **fields)
    device = AgentDevice("127.0.0.1", agent.port, TOKEN, warmup=1, runs=2, backend="onnxruntime")
    try:
        assert device.device_key.endswith(":onnxruntime")  # its cache entries stay apart
        assert device.measure(arch)["backend"] == "onnxruntime"
    finally:
        device.close()


def test_a_search_measures_through_the_agents_onnxruntime_backend(agent, tmp_path):
    """--backend onnxruntime end to end against a real agent: the table is profiled by
    onnxruntime's own profiler in the agent, every sample is measured there, and the cache keeps
    them under the backend's own device id."""
    out = tmp_path / "run"
    done = subprocess.run(
        tiny_search(out, "127.0.0.1:{}".format(agent.port), "--backend", "onnxruntime"),
        cwd=ROOT, capture_output=True, text=True, env=without_token_env(), timeout=300)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and events[-1]["event"] == "finished", events[-3:]
    lut = next(e["lut"] for e in events if e["event"] == "lut")
    assert lut["backend"] == "onnxruntime" and lut["device"] == "onnxruntime:CPUExecutionProvider"
    assert all(ms > 0 for block in lut["blocks"] for op, ms in block.items() if op != "zero")
    assert lut["device_id"].endswith(":onnxruntime") and lut["calibration"]["a"] > 0
    samples = [e for e in events if e["event"] == "sample"]
    assert samples and all(s["latency_ms"] > 0 and s["predicted_latency_ms"] > 0 for s in samples)
    cache = [json.loads(line) for line in (out / "latency_cache.jsonl").read_text().splitlines()]
    assert cache and all(e["stats"]["backend"] == "onnxruntime" for e in cache)
    assert all(e["key"].startswith(lut["device_id"] + "|") for e in cache)
    assert json.loads((out / "config.json").read_text())["backend"] == "onnxruntime"


def test_profile_returns_a_lut_of_the_space(agent):
    seen = []
    with agent.client() as c:
        lut = c.profile(SPACE, warmup=1, runs=3, progress=lambda done, total: seen.append(done))
    assert len(lut["blocks"]) == 20 and lut["space"] == SPACE.config()
    assert seen and seen == sorted(seen)
    assert Lut(lut, SPACE).predict([0] * 20) > 0


def test_agent_device_is_a_latency_source(agent):
    source = AgentDevice("127.0.0.1", agent.port, TOKEN, warmup=1, runs=3, **FAST)
    try:
        assert source.device_key.startswith("agent:") and source.device_key.endswith(":cpu:1t")
        measurer = Measurer(source)
        arch = SPACE.architecture([0] * 20)
        first, second = measurer.measure(arch), measurer.measure(arch)
        assert not first["cached"] and second["cached"] and first["runs"] == 3
        assert source.info()["address"] == "127.0.0.1:{}".format(agent.port)
    finally:
        source.close()


def test_wrong_token_is_refused_and_the_agent_keeps_serving(agent):
    with agent.client(token="wrong") as c:
        with pytest.raises(LatencyError, match="refused the token"):
            c.ping()
    conn = agent.raw(authenticate=False)
    conn.send({"type": "auth", "protocol": P.PROTOCOL_VERSION, "mac": "00" * 32,
               "challenge": "00" * 32})
    assert conn.recv()["error"]["code"] == "auth_failed"
    assert closed_or_error(conn) == []
    conn.close()
    with agent.client() as c:
        assert c.ping() > 0


def test_no_request_before_authentication(agent):
    conn = agent.raw(authenticate=False)
    conn.send({"type": "measure", "arch": SPACE.mobilenet_v2().to_dict()})
    assert closed_or_error(conn) == ["auth_required"]
    conn.close()


def test_protocol_mismatch_is_refused_by_the_agent(agent):
    newer = P.PROTOCOL_VERSION + 1
    conn = agent.raw(protocol=newer)
    assert not conn.reply["ok"] and conn.reply["error"]["code"] == "protocol_mismatch"
    assert "agent speaks protocol {}, client {}".format(P.PROTOCOL_VERSION, newer) \
        in conn.reply["error"]["message"]
    assert closed_or_error(conn) == []
    conn.close()


def test_client_refuses_an_agent_of_another_protocol():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def fake_agent():
        conn, _ = listener.accept()
        P.send_message(conn, {"type": "hello", "protocol": P.PROTOCOL_VERSION + 1, "agent": "9",
                              "challenge": "00"})
        time.sleep(0.5)
        conn.close()

    t = threading.Thread(target=fake_agent, daemon=True)
    t.start()
    with DeviceClient("127.0.0.1", listener.getsockname()[1], TOKEN, **FAST) as c:
        with pytest.raises(LatencyError, match="speaks protocol {}, this client {}".format(
                P.PROTOCOL_VERSION + 1, P.PROTOCOL_VERSION)):
            c.ping()
    t.join(5)
    listener.close()


def test_the_client_refuses_an_agent_that_cannot_prove_it_knows_the_token():
    """The handshake authenticated only the client: anything listening at a device's address
    could welcome it and answer as the device. The agent's welcome now proves it knows the token
    (an HMAC of the client's own challenge); one without a right proof is refused."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def impostor():
        conn, _ = listener.accept()
        P.send_message(conn, {"type": "hello", "protocol": P.PROTOCOL_VERSION, "agent": "1.0.0",
                              "challenge": "00" * 32})
        auth = P.recv_message(conn, 5)
        assert P.is_challenge(auth["challenge"])
        P.send_message(conn, {"ok": True, "type": "welcome", "device_id": "nano:cuda",
                              "agent": "1.0.0", "protocol": P.PROTOCOL_VERSION,
                              "proof": P.compute_mac(TOKEN, auth["challenge"])})  # not the proof
        conn.recv(1)  # until the client leaves
        conn.close()

    t = threading.Thread(target=impostor, daemon=True)
    t.start()
    with DeviceClient("127.0.0.1", listener.getsockname()[1], TOKEN, **FAST) as c:
        with pytest.raises(LatencyError, match="could not prove that it knows the token"):
            c.ping()
    t.join(5)
    listener.close()


class Relay:
    """A relay at a device's address: it passes every frame between one client and the real
    agent (the handshake too, so both ends pass each other's check), changing the agent's frames
    with `tamper`, and records what went each way; it may inject frames of its own upstream."""

    def __init__(self, agent, tamper=lambda frame: frame):
        self.agent_port, self.tamper = agent.port, tamper
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.from_client, self.from_agent = [], []
        self.agent_closed = threading.Event()
        self.upstream = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        client, _ = self.listener.accept()
        self.upstream = socket.create_connection(("127.0.0.1", self.agent_port), 5)
        threading.Thread(target=self._pass, args=(self.upstream, client, self.from_agent,
                                                  self.tamper), daemon=True).start()
        self._pass(client, self.upstream, self.from_client, lambda frame: frame)

    def _pass(self, source, sink, record, tamper):
        try:
            while True:
                header = source.recv(P.HEADER.size, socket.MSG_WAITALL)
                if len(header) < P.HEADER.size:
                    break
                (length,) = P.HEADER.unpack(header)
                frame = header + source.recv(length, socket.MSG_WAITALL)
                record.append(frame)
                sink.sendall(tamper(frame) if len(record) > 2 else frame)  # after the welcome
        except OSError:
            pass
        finally:
            if source is self.upstream:
                self.agent_closed.set()
            sink.close()

    def close(self):
        self.listener.close()


@pytest.mark.parametrize("injected", ["a request of its own", "the client's request again"])
def test_a_relay_between_client_and_agent_cannot_inject_a_request(agent, injected):
    """A relay at a registered device's address passed the real agent's challenge to the client
    and got an authenticated session on the real agent. Every frame after the welcome is now
    sealed with a key bound to both challenges: the agent closes the connection on a frame the
    client did not send, or sent before, and answers nothing."""
    refusals = open(agent.log_path).read().count("failed its authentication")
    relay = Relay(agent)
    with DeviceClient("127.0.0.1", relay.port, TOKEN, **FAST) as c:
        assert c.ping() > 0  # passed on unchanged, the session works through the relay
        answered = len(relay.from_agent)
        forged = P.encode({"type": "ping", "id": "relay"}) if injected.startswith("a request") \
            else relay.from_client[-1]
        relay.upstream.sendall(forged)
        wait_for(relay.agent_closed.is_set, 30, lambda _: "the agent to close the connection "
                 "(it answered {})".format(relay.from_agent[answered:]))
        assert len(relay.from_agent) == answered
    relay.close()
    assert open(agent.log_path).read().count("failed its authentication") == refusals + 1


def test_a_relay_cannot_change_what_the_agent_answers(agent):
    relay = Relay(agent, tamper=lambda frame: frame.replace(b'"pong"', b'"gnop"'))
    with DeviceClient("127.0.0.1", relay.port, TOKEN, **FAST) as c:
        with pytest.raises(LatencyError, match="failed its authentication"):
            c.request("ping")
        assert c.sock is None  # dropped: nothing more goes through this connection
    relay.close()


def test_oversized_frame_closes_the_connection(agent):
    conn = agent.raw()
    conn.sock.sendall(struct.pack(">I", P.MAX_FRAME + P.TAG_SIZE + 1))
    assert closed_or_error(conn) in ([], ["frame_too_large"])
    conn.close()


def test_truncated_frame_closes_the_connection(agent):
    conn = agent.raw()
    conn.sock.sendall(struct.pack(">I", 100) + b'{"type": ')
    start = time.monotonic()
    assert closed_or_error(conn, AGENT_TIMEOUT + 5) == []
    assert time.monotonic() - start < AGENT_TIMEOUT + 3
    conn.close()


def test_bad_json_gets_an_error_and_the_connection_keeps_serving(agent):
    conn = agent.raw()
    deep = b'{"a":' * 100000 + b"1" + b"}" * 100000  # under the frame limit, past the parser's depth
    for payload in (b"not json {", b"[1, 2]", b"\xff\xfe", b"", b'{"type": "ping", "id": NaN}',
                    b'{"type": "ping", "id": -Infinity}', deep):
        conn.send_payload(payload)
        reply = conn.recv()
        assert not reply["ok"] and reply["error"]["code"] == "bad_json", payload
    conn.send({"type": "ping", "id": 7})
    reply = conn.recv()
    assert reply["ok"] and reply["type"] == "pong" and reply["id"] == 7
    conn.close()


def test_unknown_request_type(agent):
    conn = agent.raw()
    conn.send({"type": "format_disk", "id": "x1"})
    reply = conn.recv()
    assert reply["error"]["code"] == "unknown_request" and reply["id"] == "x1"
    conn.close()


def _request(agent, message):
    conn = agent.raw()
    try:
        conn.send(message)
        return conn.recv(30)
    finally:
        conn.close()


def test_bad_architectures_and_arguments_are_refused(agent):
    good = SPACE.mobilenet_v2().to_dict()
    unknown_op = json.loads(json.dumps(good))
    unknown_op["blocks"][3]["op"] = "rm -rf"
    absurd = json.loads(json.dumps(good))
    absurd["head"]["out_channels"] = 10 ** 7
    for arch in (unknown_op, absurd, "not an object", [1, 2]):
        reply = _request(agent, {"type": "measure", "arch": arch, "runs": 1, "warmup": 0})
        assert reply["error"]["code"] == "bad_architecture", arch
    # in bounds, but ~3 GiB estimated: over the agent's memory limit, refused before building it
    huge = SearchSpace(3.0, 512, 10, 3).architecture(["k7_e6"] * 20).to_dict()
    reply = _request(agent, {"type": "measure", "arch": huge, "input_shape": [16, 3, 512, 512]})
    assert reply["error"]["code"] == "bad_architecture"
    assert "over this agent's limit" in reply["error"]["message"]
    for extra in ({"input_shape": [1, 3, 32, 32]}, {"input_shape": [1, 1, 4, 32]},
                  {"input_shape": [1000, 1, 32, 32]}, {"input_shape": "1x1x32x32"},
                  {"runs": 0}, {"runs": 10 ** 6}, {"warmup": -1}, {"runs": True},
                  {"device": "tpu"}):
        reply = _request(agent, dict({"type": "measure", "arch": good}, **extra))
        assert reply["error"]["code"] == "bad_request", extra
    for space in ({"width_mult": 100}, {"resolution": 10 ** 6}, {"num_classes": 0},
                  {"in_channels": "3"}, {"colour": "blue"}, None):
        reply = _request(agent, {"type": "profile", "space": space, "runs": 1, "warmup": 0})
        assert reply["error"]["code"] == "bad_request", space
    # profiling builds whole networks of the space: the memory limit holds for them as for measure
    wide = {"width_mult": 2.5, "resolution": 224, "num_classes": 100000, "in_channels": 3}
    reply = _request(agent, {"type": "profile", "space": wide, "runs": 1, "warmup": 0})
    assert reply["error"]["code"] == "bad_architecture"
    assert "over this agent's limit" in reply["error"]["message"]
    reply = _request(agent, {"type": "profile", "space": {"width_mult": 4.0}, "runs": 1})
    assert reply["error"]["code"] == "bad_request"  # its head would be wider than any network's


def closed_by_peer(sock):
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""


def test_an_idle_connection_closed_by_the_agent_is_reopened(agent):
    with agent.client() as c:
        c.ping()
        dropped = c.sock
        wait_for(lambda: closed_by_peer(dropped), AGENT_TIMEOUT + 30,
                 "the agent to close the idle connection")
        assert c.ping() > 0
        assert c.sock is not dropped and not closed_by_peer(c.sock)


def test_authenticated_connections_beyond_the_limit_are_refused(agent):
    from nano_agent.server import MAX_CONNECTIONS
    held = [agent.raw(authenticate=True) for _ in range(MAX_CONNECTIONS)]
    assert all(conn.reply["type"] == "welcome" for conn in held)
    try:
        with agent.client() as c:
            with pytest.raises(LatencyError, match="busy"):
                c.ping()
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.2)
    with agent.client() as c:
        assert c.ping() > 0


def test_a_connection_that_only_pings_gives_its_place_back(agent):
    """One token holder kept all 16 places by pinging forever; pings now hold a place for the
    agent's timeout at most, measurements keep it."""
    with agent.client() as c:
        started = time.monotonic()
        with pytest.raises(LatencyError, match="idle"):
            while time.monotonic() - started < 4 * AGENT_TIMEOUT:
                c.ping()
                time.sleep(AGENT_TIMEOUT / 4)
        assert time.monotonic() - started < 2 * AGENT_TIMEOUT
    with agent.client() as c:  # one that measures keeps its place between its pings
        started = time.monotonic()
        while time.monotonic() - started < 2 * AGENT_TIMEOUT:
            c.measure(SPACE.mobilenet_v2(), warmup=0, runs=1)
            c.ping()
            time.sleep(AGENT_TIMEOUT / 4)


def test_a_client_that_leaves_mid_measurement_does_not_keep_the_others_waiting(agent):
    """A measure of 1,000 + 1,000 runs whose client left kept another client's 1-run measure
    waiting until all its runs were done (188 s at 224 px): the agent now stops between runs once
    the client is gone. A profile that reports its progress holds the lock from its first
    network's report on (its next report, to the closed connection, would end it too); side by
    side: the wait against the time one of its networks takes."""
    conn = agent.raw(authenticate=True)
    started = time.monotonic()
    conn.send({"type": "profile", "runs": 500, "warmup": 0, "progress": True,
               "space": {"width_mult": 0.5, "resolution": 32, "num_classes": 10, "in_channels": 1}})
    first = conn.recv(120)
    assert first["type"] == "progress" and first["done"] == 1
    network_s = time.monotonic() - started
    conn.close()  # gone, its second network under way
    with agent.client() as c:
        started = time.monotonic()
        c.measure(SPACE.mobilenet_v2(), warmup=0, runs=1)
        waited_s = time.monotonic() - started
    assert waited_s < network_s / 4, (waited_s, network_s)


def test_no_request_holds_the_measuring_lock_past_the_agents_limit(tmp_path):
    """A connected client asked for 1,000 + 1,000 runs at 224 px (minutes): it is stopped at the
    agent's --max-request-s, saying so, and the next client measures at once after it."""
    agent = Agent(tmp_path, timeout=60, args=["--max-request-s", "1"])
    try:
        big = SearchSpace(1.0, 224, 1000, 3).mobilenet_v2()
        with agent.client() as c, agent.client() as other:
            with pytest.raises(LatencyError, match=r"limit of 1 s per request \(nano_agent "
                                                   r"--max-request-s\)"):
                c.measure(big, warmup=1000, runs=1000)
            result = other.measure(SPACE.mobilenet_v2(), warmup=0, runs=1)
            assert result["runs"] == 1
            assert c.ping() > 0  # the stopped client's connection serves on
    finally:
        agent.stop()


def test_connections_that_never_authenticate_hold_no_place(agent):
    from nano_agent.server import MAX_CONNECTIONS
    idle = [agent.raw(authenticate=False).sock for _ in range(2 * MAX_CONNECTIONS)]
    try:
        with agent.client() as c:
            assert c.ping() > 0
        idle[-1].settimeout(AGENT_TIMEOUT + 2)  # the agent closes them itself, after its deadline
        assert idle[-1].recv(1024) == b""
    finally:
        for sock in idle:
            sock.close()


def test_an_auth_message_over_the_limit_closes_the_connection(agent):
    conn = agent.raw(authenticate=False)
    with conn.sock:
        conn.sock.sendall(P.HEADER.pack(P.MAX_AUTH_FRAME + 1))
        assert conn.recv()["error"]["code"] == "frame_too_large"
        assert conn.sock.recv(1) == b""


def test_hosts_flooding_the_handshakes_leave_every_other_host_its_turn(tmp_path):
    """Two addresses holding all 256 handshake places (128 each) left a real client 5 welcomes
    in 18: a host with fewer handshakes under way now takes the place of the busiest host's
    oldest, and the flooding hosts get no more."""
    from nano_agent.server import MAX_HANDSHAKES
    agent = Agent(tmp_path, timeout=60)  # the flood's handshakes outlast the test
    flood = []
    try:
        for i in range(MAX_HANDSHAKES):
            sock = socket.create_connection(("127.0.0.1", agent.port), 5,
                                            source_address=("127.0.0.{}".format(2 + i % 2), 0))
            flood.append(sock)
            assert P.recv_message(sock, 5)["type"] == "hello"
        with socket.create_connection(("127.0.0.1", agent.port), 5,
                                      source_address=("127.0.0.2", 0)) as more:
            assert P.recv_message(more, 5)["error"]["code"] == "busy"
        for _ in range(5):  # from 127.0.0.1, one after another
            with agent.client() as c:
                assert c.ping() > 0
    finally:
        for sock in flood:
            sock.close()
        agent.stop()


def test_the_agent_keeps_serving_through_a_flood(agent):
    """100 connections that never authenticate, reopened as the agent drops them, while a client
    with the token pings and measures."""
    stop, opened = threading.Event(), [0]

    def flood():
        socks = []
        while not stop.is_set():
            socks = [s for s in socks if s.fileno() != -1]
            while len(socks) < 100 and not stop.is_set():
                try:
                    socks.append(socket.create_connection(("127.0.0.1", agent.port), 5))
                    opened[0] += 1
                except OSError:
                    break
            readable, _, _ = select.select(socks, [], [], 0)
            for s in readable:  # read the hello; an empty read: the agent closed it, reopen
                if not s.recv(4096):
                    s.close()
            time.sleep(0.05)
        for s in socks:
            s.close()

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        time.sleep(1.0)
        arch = SPACE.mobilenet_v2()
        deadline = time.monotonic() + 2 * AGENT_TIMEOUT + 1  # past the flood's first deadline
        with agent.client() as c:
            while time.monotonic() < deadline:
                assert c.ping() > 0
                assert c.measure(arch, warmup=0, runs=2)["median_ms"] > 0
                c.close()  # a new connection, and so a new handshake, every round
    finally:
        stop.set()
        flooder.join()
    assert opened[0] > 100  # the agent dropped flood connections and the flood reopened them


def test_a_good_client_works_after_all_that_abuse(agent):
    assert agent.proc.poll() is None
    with agent.client() as c:
        assert c.measure(SPACE.mobilenet_v2(), warmup=0, runs=2)["runs"] == 2


def test_concurrent_measurements_are_serialised(agent):
    arch = SPACE.architecture(["k7_e6"] * 20)
    barrier = threading.Barrier(3)
    results, errors = [], []

    def worker():
        try:
            with agent.client() as c:
                c.connect()
                barrier.wait(10)
                results.append(c.measure(arch, input_shape=[1, 1, 64, 64], warmup=1, runs=15))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 3
    intervals = sorted((r["started_at"], r["finished_at"]) for r in results)
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        assert end <= start, intervals
    # ping does not wait for the measurement lock: one is sent and answered while it is held
    with agent.client() as c, agent.client() as busy:
        c.connect()
        busy.connect()
        measured, pings = [], []
        t = threading.Thread(target=lambda: measured.append(
            busy.measure(arch, [1, 1, 128, 128], 0, 20)))
        t.start()
        while t.is_alive():
            sent = time.time()
            c.ping()
            pings.append((sent, time.time()))
        t.join()
        held = (measured[0]["started_at"], measured[0]["finished_at"])
        assert any(held[0] <= sent and answered <= held[1] for sent, answered in pings), (held, pings)


def test_agent_killed_mid_request_is_a_clear_error(fresh_agent):
    client = fresh_agent.client()
    client.ping()
    box = []

    def measure():
        try:
            client.measure(SPACE.mobilenet_v2(), input_shape=[1, 1, 224, 224], warmup=0,
                           runs=1000)
        except Exception as e:
            box.append(e)

    t = threading.Thread(target=measure, daemon=True)
    t.start()
    time.sleep(1.0)
    fresh_agent.proc.kill()
    t.join(20)
    assert not t.is_alive() and box
    assert isinstance(box[0], LatencyError)
    assert "connection closed by the device agent" in str(box[0]) and "'measure'" in str(box[0])
    start = time.monotonic()
    with pytest.raises(LatencyError, match="unreachable"):
        client.ping()
    assert time.monotonic() - start < FAST["connect_timeout"]  # refused at once, never waited out
    client.close()


def test_unreachable_port_fails_quickly():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    start = time.monotonic()
    with pytest.raises(LatencyError, match=r"127\.0\.0\.1:{} is unreachable after 3 attempts"
                       .format(port)):
        DeviceClient("127.0.0.1", port, TOKEN, **FAST).ping()
    assert time.monotonic() - start < FAST["connect_timeout"]  # refused at once, never waited out


def test_address_parsing():
    assert parse_address("nano.local:9000") == ("nano.local", 9000)
    assert parse_address("agent:10.0.0.5:8765") == ("10.0.0.5", 8765)
    assert parse_address("nano") == ("nano", 8765)
    assert parse_address("[::1]:9") == ("::1", 9)
    with pytest.raises(LatencyError):
        parse_address("nano:http")


def test_token_is_generated_once_and_kept_private(tmp_path):
    path = str(tmp_path / "sub" / "config.json")
    token, where = resolve_token(None, path, environ={})
    assert len(token) == 32 and "generated" in where
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert resolve_token(None, path, environ={}) == (token, path)
    assert resolve_token(None, path, environ={TOKEN_ENV: "e"})[0] == "e"
    assert resolve_token("cli", path, environ={TOKEN_ENV: "e"})[0] == "cli"


def test_agent_is_python36_compatible():
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    result = subprocess.run([vermin, "--no-tips", "--violations", "-t=3.6-", "--eval-annotations",
                             os.path.join(ROOT, "nano_agent")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    assert result.returncode == 0, result.stdout


def test_search_measures_on_the_agent(agent, tmp_path):
    """The headless search with --device host:port: latency comes from the agent, and the token
    never lands in the run directory."""
    out = tmp_path / "run"
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)
    result = subprocess.run(
        [sys.executable, "-m", "search_core", "search", "--out", str(out), "--epochs", "2",
         "--warmup-epochs", "1", "--limit", "64", "--samples-per-epoch", "1", "--threads", "1",
         "--measure-runs", "3", "--measure-warmup", "1", "--device",
         "127.0.0.1:{}".format(agent.port), "--device-token", TOKEN, "--events", "jsonl"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    started = next(json.loads(line) for line in result.stdout.splitlines()
                   if json.loads(line)["event"] == "started")
    assert started["device_id"].startswith("agent:")
    keys = [json.loads(line)["key"] for line in
            (out / "latency_cache.jsonl").read_text().splitlines()]
    assert keys and all(key.startswith(started["device_id"] + "|") for key in keys)
    for path in out.iterdir():
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            assert TOKEN not in path.read_text(), path.name


def test_a_search_waits_for_its_lost_device_and_finishes(tmp_path):
    """The agent is killed after the search's set-up and restarted on the same port once the
    search has said it waits: the search goes on and finishes with every sample."""
    port = free_port()
    first = Agent(tmp_path, port=port)
    out = tmp_path / "run"
    search = subprocess.Popen(
        tiny_search(out, "127.0.0.1:{}".format(port)), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env=without_token_env())
    second, events = None, []
    try:
        for line in search.stdout:
            events.append(json.loads(line))
            kind = events[-1]["event"]
            if kind == "started":
                first.stop()
            elif kind == "device_wait" and events[-1]["waiting"] and second is None:
                time.sleep(3.0)  # down for a while: several retries
                second = Agent(tmp_path, port=port)
        assert search.wait(60) == 0, events[-3:]
    finally:
        search.kill()
        first.stop()
        if second:
            second.stop()
    waits = [e for e in events if e["event"] == "device_wait"]
    assert waits[0]["waiting"] and waits[0]["limit_s"] == 600 and "unreachable" in waits[0]["error"]
    assert not waits[-1]["waiting"] and waits[-1]["waited_s"] >= 3.0
    assert any("is back after" in e.get("text", "") for e in events)
    finished = events[-1]
    assert finished["event"] == "finished"
    samples = [e for e in events if e["event"] == "sample"]
    assert len(samples) == finished["samples"]
    assert {s["epoch"] for s in samples if s["kind"] != "final"} == {1, 2}
    assert all(s["latency_ms"] > 0 for s in samples)


def test_the_cache_key_does_no_network_io_per_measurement(agent):
    """A device's identity comes from the agent's welcome: one handshake, then none."""
    device = AgentDevice("127.0.0.1", agent.port, TOKEN, **FAST)
    first = device.device_key
    assert first.startswith("agent:")
    device.client.close()  # no connection any more: reading the id again must not open one
    assert device.device_key == first and device.client.sock is None


def test_tensorrt_fp16_is_an_agent_option_and_a_measuring_identity_of_its_own():
    """--trt-fp16 lets the TensorRT provider build FP16 engines; the agent's id says so, so that
    its measurements never mix with FP32 ones. The other providers are left as they are."""
    from nano_agent import onnx_backend
    from nano_agent.server import Agent
    tensorrt = "TensorrtExecutionProvider"
    try:
        agent = Agent("t", "cpu", 1, trt_fp16=True)
        assert agent.device_id.endswith(":cpu:1t:trt-fp16")
        assert onnx_backend.providers(tensorrt) == [(tensorrt, {"trt_fp16_enable": True})]
        assert onnx_backend.providers("CPUExecutionProvider") == ["CPUExecutionProvider"]
        assert agent.info()["onnxruntime"]["trt_fp16"] is True
    finally:
        onnx_backend.set_trt_fp16(False)
    assert onnx_backend.providers(tensorrt) == [tensorrt]
    assert not Agent("t", "cpu", 1).device_id.endswith("fp16")
