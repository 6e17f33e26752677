"""Generated frames thrown at a real agent after authentication, and generated files at the CLI
(Hypothesis): the agent answers every complete frame and keeps the connection, as
docs/protocol.md promises; the CLI answers every file with a message, never a traceback."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nano_agent import protocol as P
from search_core import cli
from search_core.settings import ConfigError, SearchConfig

pytestmark = pytest.mark.process
# the frames are mostly not work (pings, info, garbage), and an agent closes a connection that only
# pings for its timeout (test_agent checks that): the fuzz must not run into it on a loaded machine
AGENT_TIMEOUT = 600
# a request can be valid work: {"type": "profile", "space": {}} profiles the default space (224 px,
# 1,000 classes: 17 s); the agent stops it at its limit per request, as it would any long request
AGENT_ARGS = ["--max-request-s", "1"]

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children,
                                                                       max_size=3),
    max_leaves=8)
# requests of every kind the agent knows (and some it does not), with arbitrary fields
requests = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["ping", "info", "measure", "profile", "nope"]), json_values)},
    optional={"id": json_values, "arch": json_values, "input_shape": json_values,
              "warmup": json_values, "runs": json_values, "device": json_values,
              "space": json_values, "progress": json_values})
payloads = st.one_of(
    requests.map(lambda r: json.dumps(r).encode()),
    st.binary(max_size=64),
    st.sampled_from([b'{"type": "ping", "id": NaN}', b"[" * 5000 + b"]" * 5000, b"\xff"]))


@pytest.fixture(scope="module")
def connection(agent):
    conn = agent.raw()
    assert conn.reply["type"] == "welcome"
    yield conn
    conn.close()


@FUZZ
@given(payload=payloads)
def test_the_agent_answers_every_frame_and_keeps_the_connection(connection, payload):
    connection.send_payload(payload)
    reply = connection.recv(30)
    assert isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        assert reply["error"]["code"] in (P.BAD_JSON, P.BAD_REQUEST, P.BAD_ARCHITECTURE,
                                          P.UNKNOWN_REQUEST, P.MEASURE_FAILED), reply
    try:
        sent = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        sent = None
    if isinstance(sent, dict) and reply.get("id") is not None:
        assert reply["id"] == sent.get("id")


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_the_cli_answers_every_file_with_a_message(tmp_path, capsys, content):
    path = tmp_path / "input.json"
    path.write_bytes(content)
    assert cli.main(["info", str(path)]) in (0, 2)  # anything unexpected propagates and fails
    assert "Traceback" not in capsys.readouterr().err
    try:  # what `search --config FILE` reads before it searches
        assert isinstance(cli._config_file(str(path)), SearchConfig)
    except ConfigError as e:
        assert str(path) in str(e) or "setting" in str(e) or " must " in str(e), e
