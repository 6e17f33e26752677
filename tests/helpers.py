"""What the test modules share besides real processes (processes.py) and fixtures (conftest.py):
the tiny search every run in the suite starts from, and waiting for what a test waits on."""
import json
import time
from types import MappingProxyType

# A search of seconds, in SearchConfig's names (the API's and the settings file's); tests override
# what they are about: dict(TINY, epochs=4). tiny_flags() gives the same as the CLI's options.
TINY = MappingProxyType({
    "epochs": 2, "warmup_epochs": 1, "limit": 64, "batch_size": 32, "samples_per_epoch": 2,
    "measure_runs": 3, "measure_warmup": 1, "threads": 1, "calibration_archs": 3, "resolution": 32})


def tiny_flags(**overrides):
    """TINY with `overrides` (None leaves a setting to the CLI's default) as `search` options."""
    flags = []
    for name, value in dict(TINY, **overrides).items():
        if value is not None:
            flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def wait_for(condition, timeout=120, what="the condition", interval=0.1):
    """Polls `condition()` until it returns something true, and returns that; past `timeout` s the
    test fails, naming `what` (a string, or a function of condition's last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            told = what(value) if callable(what) else what
            raise AssertionError("waited {} s for {}".format(timeout, told))
        time.sleep(interval)


def run_reaches(client, run_id, statuses, timeout=120):
    """The run's API row once its status is one of `statuses`."""
    last = {}

    def reached():
        last["run"] = client.get("/api/runs/{}".format(run_id)).get_json()
        return last["run"] if last["run"]["status"] in statuses else None
    return wait_for(reached, timeout, lambda _: "run {} to be one of {}; it is {}".format(
        run_id, statuses, last["run"]["status"]), interval=0.2)


def training_reaches(client, run_id, training_id, statuses=("finished", "failed", "cancelled"),
                     timeout=120):
    """The retraining's API row once its status is one of `statuses`."""
    last = {}

    def reached():
        trainings = client.get("/api/runs/{}/trainings".format(run_id)).get_json()
        last["training"] = next(t for t in trainings if t["id"] == training_id)
        return last["training"] if last["training"]["status"] in statuses else None
    return wait_for(reached, timeout, lambda _: "training {} to be one of {}; it is {}".format(
        training_id, statuses, last["training"]["status"]), interval=0.2)


def received(sio, name=None):
    """The Socket.IO events a test client got since the last call, as (name, payload)."""
    events = [(e["name"], e["args"][0]) for e in sio.get_received()]
    return [e for e in events if name is None or e[0] == name]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def bearer_client(app):
    """A test client that sends the token the way programs do (``Authorization: Bearer``)."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + app.config["TOKEN"]
    return client
