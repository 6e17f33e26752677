"""Generated bodies thrown at every POST endpoint of the API (Hypothesis): never a 500, always a
JSON answer, and every 400 names the fields it refuses."""
import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from processes import free_port
from search_core.settings import CHOICES, LIMITS, TYPES
from webapp.extensions import db
from webapp.ids import MAX_ID
from webapp.models import Run

pytestmark = pytest.mark.unit

DASHBOARD_CONFIG = {"LOCAL_AGENT": False}
EXAMPLES = 200  # derandomized: the same bodies every run
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children,
                                                                       max_size=3),
    max_leaves=8)


def plausible(name):
    """Values near what a setting takes, so that bodies get past the type checks too."""
    kind, _ = TYPES[name]
    limit = LIMITS.get(name)
    near = []
    if limit is not None:
        near.append(st.sampled_from([limit.low, limit.high]))
        near.append(st.integers(int(limit.low) - 2, int(limit.high) + 2) if kind is int
                    else st.floats(limit.low - 1, limit.high + 1))
    if name in CHOICES:
        near.append(st.sampled_from(CHOICES[name]))
    return st.one_of(json_values, *near) if near else json_values


def valid(name):
    """Values a setting accepts."""
    kind, optional = TYPES[name]
    limit = LIMITS.get(name)
    if name in CHOICES:
        values = st.sampled_from(CHOICES[name])
    elif kind is bool:
        values = st.booleans()
    elif kind is int:
        values = st.integers(limit.low, min(limit.high, limit.low + 50))
    elif kind is float:
        values = st.floats(limit.low, limit.high)
    else:
        values = st.text(st.characters(min_codepoint=32, max_codepoint=0xFFFF, exclude_categories=["Cs"]),
                         max_size=20)
    return st.one_of(st.none(), values) if optional else values


ids = st.one_of(st.integers(-3, 5), st.integers(MAX_ID - 1, 2 ** 70), json_values)
run_bodies = st.fixed_dictionaries({}, optional=dict(
    {name: plausible(name) for name in TYPES},
    name=st.one_of(st.text(max_size=300), json_values), device_id=ids,
    junk=json_values)).map(lambda d: {k.replace("junk", "colour"): v for k, v in d.items()})
SERVER_SETTINGS = ("device", "measure_threads")
valid_run_bodies = st.fixed_dictionaries(
    {"name": st.text("abc xyz", min_size=1, max_size=20).filter(str.strip)},
    optional=dict({name: valid(name) for name in TYPES if name not in SERVER_SETTINGS}, device_id=ids))
device_bodies = st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.sampled_from(["nano", "nano2"]), st.text(max_size=200), json_values),
    # a valid host is always this machine: a registration checks the device at once
    "host": st.one_of(st.just("127.0.0.1"), st.text(max_size=20).map(lambda t: t + " x"),
                      json_values),
    "port": st.one_of(st.integers(-2, 70000), st.text(max_size=6), json_values),
    "token": st.one_of(st.text(max_size=300), json_values),
    "colour": json_values})
profile_bodies = st.fixed_dictionaries({}, optional={
    "resolution": st.one_of(st.integers(-10, 600), json_values),
    "width_mult": st.one_of(st.floats(-1, 5), json_values),
    "num_classes": st.one_of(st.integers(-1, 200000), json_values),
    "in_channels": st.one_of(st.integers(-1, 70), json_values),
    "colour": json_values})


def parsed(body):
    """What the server parses out of a body (None for what is not JSON, or nested too deep)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def any_body(bodies):
    """A body as bytes: mostly a generated object, sometimes any JSON value or not JSON at all."""
    return st.one_of(bodies.map(json.dumps), json_values.map(json.dumps),
                     st.binary(max_size=30), st.just("[" * 100000 + "]" * 100000))


@pytest.fixture(scope="module")
def device_id(client):
    """A registered device whose port nothing listens on: checks and profiles fail fast."""
    r = client.post("/api/devices", json={"name": "closed", "host": "127.0.0.1",
                                          "port": free_port(), "token": "t"})
    assert r.status_code == 201
    return r.get_json()["id"]


@pytest.fixture(scope="module")
def run_id(app):
    with app.app_context():
        run = Run(name="finished", status="finished", config="{}")
        db.session.add(run)
        db.session.commit()
        return run.id


def check(response, body, allowed=(400, 404, 409)):
    """A JSON reply; a refusal with the status it may have, naming every field it refuses."""
    assert response.status_code < 500, response.data[:300]
    assert response.is_json, response.data[:300]
    reply = response.get_json()
    if response.status_code >= 400:
        assert response.status_code in allowed, reply
        assert reply.get("error") or reply.get("errors"), reply
    if response.status_code == 400:
        if not isinstance(parsed(body), dict):
            assert set(reply["errors"]) == {"body"}, reply
    return reply


@FUZZ
@given(body=any_body(st.one_of(run_bodies, valid_run_bodies)))
def test_create_run(client, device_id, body):
    """No local device here and never the registered one: a valid body is still refused, for its
    device, so every reply is a 400 that names fields of the body or the required name."""
    sent = parsed(body)
    if isinstance(sent, dict) and sent.get("device_id") == device_id:
        sent["device_id"] = device_id + 1
        body = json.dumps(sent)
    reply = check(client.post("/api/runs", data=body, content_type="application/json"), body,
                  allowed=(400,))
    if isinstance(sent, dict):
        assert set(reply["errors"]) <= set(sent) | {"name", "device_id"}, reply
    event("refused for: " + ", ".join(sorted(reply["errors"]))[:40])


@FUZZ
@given(body=any_body(device_bodies))
def test_register_device(client, body):
    r = client.post("/api/devices", data=body, content_type="application/json")
    reply = check(r, body, allowed=(400,))
    sent = parsed(body)
    if r.status_code == 400 and isinstance(sent, dict):
        assert set(reply["errors"]) <= set(sent) | {"name", "host", "token"}, reply
    if r.status_code == 201:
        assert reply["status"] == "offline"  # nothing listens there


@FUZZ
@given(body=any_body(profile_bodies), target=st.one_of(st.none(), st.integers(-1, 3)))
def test_profile_device(client, device_id, body, target):
    r = client.post("/api/devices/{}/profile".format(device_id if target is None else target),
                    data=body, content_type="application/json")
    reply = check(r, body)
    if r.status_code == 400 and isinstance(parsed(body), dict):
        assert set(reply["errors"]) <= set(parsed(body)), reply


@FUZZ
@given(path=st.sampled_from(["runs/{}/cancel", "runs/{}/resume", "devices/{}/check"]),
       target=st.one_of(st.integers(-5, 2 ** 70), st.text(max_size=8)), body=any_body(json_values))
def test_actions_on_ids(client, run_id, path, target, body):
    r = client.post("/api/" + path.format(target), data=body, content_type="application/json")
    check(r, body)


def test_the_finished_run_is_a_conflict_not_an_error(client, run_id):
    for action in ("cancel", "resume"):
        assert client.post("/api/runs/{}/{}".format(run_id, action)).status_code == 409


GET_PATHS = ["runs", "runs/{}", "runs/{}/samples", "runs/{}/metrics", "runs/{}/pareto",
             "runs/{}/best.json", "runs/{}/samples/{}/arch.json", "runs/{}/samples.csv",
             "devices", "devices/{}", "devices/{}/luts/{}.json", "defaults", "{}"]
segments = st.one_of(st.integers(-5, 2 ** 70), st.text(st.characters(
    min_codepoint=33, max_codepoint=0x2FFF, exclude_categories=["Cs"]), max_size=8))
queries = st.dictionaries(st.sampled_from(["after", "limit", "status", "kind", "x"]),
                          st.one_of(segments, st.just("")), max_size=3)


@FUZZ
@given(path=st.sampled_from(GET_PATHS), first=segments, second=segments, query=queries)
def test_every_get_answers_json(client, run_id, path, first, second, query):
    """Any id, any text in a path segment, any query: a JSON answer, never a 500. The text is
    percent-encoded, as a client sends it ('?' would start the query)."""
    url = "/api/" + path.format(*(quote(str(s), safe="") for s in (first, second)))
    r = client.get(url, query_string={k: str(v) for k, v in query.items()})
    assert r.status_code < 500, (url, r.data[:300])
    if r.status_code != 308:  # a trailing-slash redirect by the router, before any handler
        assert r.is_json, (url, r.data[:300])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(name=st.sampled_from(["subscribe", "unsubscribe", "no_such_event"]), payload=json_values)
def test_socketio_events_always_get_an_answer(app, name, payload):
    from processes import socket_client
    sio = socket_client(app)
    try:
        reply = sio.emit(name, payload, callback=True)
        if name != "no_such_event":
            assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
            assert reply["ok"] or reply["error"]
        assert sio.is_connected()
    finally:
        sio.disconnect()
