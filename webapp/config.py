"""Configuration of the dashboard.

Overrides: environment variables prefixed WEBAPP_ (WEBAPP_DATA_DIR=...), then the dict given to
``create_app(config)``.
"""
import os

# where workers run from (`python -m search_core ...`, `python -m nano_agent ...`)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# search settings the dashboard decides: where to measure comes from a run's device_id
SERVER_SETTINGS = ("device", "device_group", "measure_threads")


def sqlite_uri(data_dir):
    """The default database: an SQLite file in the data directory."""
    return "sqlite:///" + os.path.join(os.path.abspath(data_dir), "dashboard.db")


class Config:
    # where the dashboard keeps its database, run directories and the local agent's files
    DATA_DIR = os.path.abspath("./data")
    # None: derived from DATA_DIR by create_app (sqlite:///<DATA_DIR>/dashboard.db)
    SQLALCHEMY_DATABASE_URI = None
    SQLALCHEMY_TRACK_MODIFICATIONS = False
    # milliseconds an SQLite connection waits for a lock before "database is locked"
    SQLITE_BUSY_TIMEOUT_MS = 5000
    # upgrade the database to the latest Alembic revision when the app starts
    AUTO_UPGRADE = True
    TESTING = False
    # start the built-in local device: a nano_agent process on loopback measuring on this CPU
    LOCAL_AGENT = True
    # torch threads of the local agent; runs on the local device get the other cores
    LOCAL_AGENT_THREADS = 1
    # seconds between background checks of every device (0: never)
    DEVICE_CHECK_INTERVAL_S = 30
    # Socket.IO server: "threading" (default) or "eventlet" (see webapp/sockets.py)
    SOCKETIO_ASYNC_MODE = "threading"
    # every page, API call and Socket.IO connection needs the token (webapp/auth.py); off only on
    # loopback (python -m webapp --no-auth)
    AUTH = True
    # None: the token kept in <DATA_DIR>/token, generated at first start
    TOKEN = None
    # None: the session-signing key kept in <DATA_DIR>/secret_key, generated at first start
    SECRET_KEY = None
    # host names the server answers to besides IP addresses, localhost and this machine's names
    # ("*": any name; DNS-rebinding pages then reach it)
    ALLOWED_HOSTS = ()
    # the only directories a run's data_dir may name (a path relative to one of them); empty:
    # <DATA_DIR>/datasets
    DATASET_ROOTS = ()
    # search settings a new run starts from instead of the built-in ones (the form's defaults;
    # python -m webapp --run-defaults FILE): a lab's dataset, target, epochs
    RUN_DEFAULTS = {}
    # the largest request body read (bytes): the API's bodies are settings, far smaller
    MAX_CONTENT_LENGTH = 1024 * 1024
    # seconds without a line from a worker (it sends a heartbeat every HEARTBEAT_S,
    # search_core/events.py) before its run says that the worker may be frozen
    WORKER_SILENCE_S = 60
    # workers (searches, retrainings) that run at once; later ones wait as 'queued'
    # (webapp/workers/). None: the executor's default (webapp/executors.py): locally one per 4
    # cores the local agent leaves, at least one (a search on 2 cores already uses them all); on
    # Ray the cluster's CPUs
    MAX_RUNS = None
    # where workers run (webapp/executors.py): "local" subprocesses, or "ray" actors on the Ray
    # cluster at RAY_ADDRESS (None: a Ray started inside this process)
    EXECUTOR = "local"
    RAY_ADDRESS = None
    # seconds a Ray worker may wait to be placed once the queue saw room for it (others' work may
    # take that room first) before its run fails
    RAY_START_TIMEOUT_S = 120.0
