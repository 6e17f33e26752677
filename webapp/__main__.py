"""python -m webapp: the dashboard server, with the built-in local device."""
import argparse
import json
import logging
import os
import re
import signal
import sys

from search_core.settings import ConfigError, SearchConfig
from search_core.rundir import LockHeld, hold_lock

from .auth import LOOPBACK_HOSTS
from .executors import EXECUTORS
from .config import SERVER_SETTINGS

LOG_LEVELS = ("debug", "info", "warning", "error")
LOCK_FILE = "dashboard.lock"
TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]+")


def parser():
    p = argparse.ArgumentParser(prog="python -m webapp",
                                description="edge-nas dashboard: start searches, watch them live, "
                                            "manage devices.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument("--data-dir", default="./data",
                   help="run directories, the local agent's files and the default SQLite "
                        "database (default ./data)")
    p.add_argument("--database-url",
                   help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/nas (default: an SQLite "
                        "file in --data-dir)")
    p.add_argument("--async-mode", choices=("threading", "eventlet"), default="threading",
                   help="Socket.IO server mode (default threading; eventlet's maintainers "
                        "discourage new use of it)")
    p.add_argument("--no-local-agent", action="store_true",
                   help="do not start the built-in local device")
    p.add_argument("--allowed-hosts", type=_names, default=(),
                   help="comma-separated host names the dashboard answers to besides IP addresses, "
                        "localhost and this machine's names, e.g. nas.lab.example ('*': any)")
    p.add_argument("--dataset-root", action="append", default=[],
                   help="a directory whose sub-directories runs may read as data_dir (repeat for "
                        "several; default: <data-dir>/datasets)")
    p.add_argument("--max-runs", type=int,
                   help="searches that run at once; later ones wait in a queue (default: one per "
                        "4 cores beside the local agent's, at least 1; on Ray the cluster's CPUs)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where searches and retrainings run: 'local' subprocesses (default), or "
                        "'ray' actors on a Ray cluster (run directories on storage every node "
                        "mounts at the same path)")
    p.add_argument("--ray-address",
                   help="the Ray cluster's head, e.g. 10.0.0.5:6379 (default with --executor ray: "
                        "a Ray started inside the dashboard on this machine)")
    p.add_argument("--no-auth", action="store_true",
                   help="no token: anyone who reaches the port controls the dashboard. Allowed "
                        "only with a loopback --host")
    p.add_argument("--run-defaults", metavar="FILE", type=_run_defaults, default={},
                   help="a JSON object of search settings that new runs start from instead of the "
                        "built-in defaults (the form shows them), e.g. {\"dataset\": \"shapes\", "
                        "\"epochs\": 60} or another run's config.json (its device is left out)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="warning",
                   help="what the server logs: 'info' adds a line per HTTP request; 'warning' "
                        "(default) only problems")
    return p


def _configure_logging(level):
    """The app's logs and werkzeug's request lines at ``level``: a page polling the API would
    otherwise bury the login URL under hundreds of '200' lines."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    requests_log = logging.getLogger("werkzeug")
    requests_log.setLevel(level.upper())
    requests_log.addFilter(_hide_tokens)


def _hide_tokens(record):
    """A request line without the token of a login URL or ``?token=`` call: a log is read by
    more people than the token file."""
    message = record.getMessage()
    if "token=" in message:
        record.msg, record.args = TOKEN_IN_URL.sub(r"\1***", message), ()
    return True


def _run_defaults(path):
    """The settings in ``path``, checked like a run's; the dashboard's own (the device) dropped."""
    try:
        with open(path) as f:
            settings = SearchConfig.from_dict(json.load(f)).validate().to_dict()
    except (OSError, ValueError, ConfigError) as e:
        raise argparse.ArgumentTypeError("{}: {}".format(path, e))
    return {k: v for k, v in settings.items() if k not in SERVER_SETTINGS}


def _hold_data_dir(path):
    """The data directory is one dashboard's: a second one would take over its workers, its local
    agent and its device rows. The lock is a run directory's worker lock (search_core.rundir)."""
    os.makedirs(path, exist_ok=True)
    try:
        return hold_lock(os.path.join(path, LOCK_FILE))
    except LockHeld as e:
        sys.exit("webapp: another dashboard (pid {}) uses the data directory {}: stop it, or "
                 "give this one its own --data-dir".format(e.holder[0] or "?", os.path.abspath(path)))


def _names(text):
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected host names separated by commas")
    return names


def _announce(app, args):
    """Where the dashboard is, and the login URL with its token, at every start: the first
    start's output may be long gone."""
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = "http://{}:{}/".format("[{}]".format(shown) if ":" in shown else shown, args.port)
    print("edge-nas dashboard on {} (data in {})".format(url, app.config["DATA_DIR"]), flush=True)
    if args.no_auth:
        print("WARNING: --no-auth: every program on this machine can start, cancel and delete "
              "runs and devices", flush=True)
    else:
        print("Log in: {}?token={}  (the token is kept in {})".format(
            url, app.config["TOKEN"], app.extensions["auth"]["token_path"]), flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if not 0 < args.port < 65536:
        parser().error("--port must be from 1 to 65535")
    if args.max_runs is not None and not 0 < args.max_runs <= 1000:
        parser().error("--max-runs must be from 1 to 1000")
    if args.ray_address and args.executor != "ray":
        parser().error("--ray-address needs --executor ray")
    if args.no_auth and args.host not in LOOPBACK_HOSTS:
        parser().error("--no-auth is refused with --host {}: without the token anyone on the "
                       "network controls the dashboard (use 127.0.0.1, or keep the token)".format(
                           args.host))
    if args.async_mode == "eventlet" and "eventlet" not in sys.modules:
        # eventlet must patch the standard library before anything imports it: start afresh
        code = ("import eventlet; eventlet.monkey_patch(); import runpy, sys; "
                "sys.argv[0] = 'python -m webapp'; runpy.run_module('webapp', run_name='__main__')")
        os.execv(sys.executable, [sys.executable, "-c", code] + list(argv))

    lock = _hold_data_dir(args.data_dir)  # noqa: F841  held while the process lives
    _configure_logging(args.log_level)
    from . import create_app, shutdown
    from .extensions import socketio

    config = {"DATA_DIR": args.data_dir, "SOCKETIO_ASYNC_MODE": args.async_mode,
              "LOCAL_AGENT": not args.no_local_agent, "AUTH": not args.no_auth,
              "ALLOWED_HOSTS": args.allowed_hosts, "DATASET_ROOTS": tuple(args.dataset_root),
              "RUN_DEFAULTS": args.run_defaults,
              # dashboards on one host but different ports must not overwrite each other's cookie
              "SESSION_COOKIE_NAME": "edge-nas-{}".format(args.port)}
    if args.database_url:
        config["SQLALCHEMY_DATABASE_URI"] = args.database_url
    if args.max_runs:
        config["MAX_RUNS"] = args.max_runs
    config.update(EXECUTOR=args.executor, RAY_ADDRESS=args.ray_address)
    try:
        app = create_app(config)
    except Exception as e:  # noqa: BLE001  e.g. an unreachable database: say so, no traceback
        sys.exit("webapp: cannot start: {}".format(e))
    # a plain `kill` stops the workers and the local agent too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    _announce(app, args)
    try:
        socketio.run(app, host=args.host, port=args.port, use_reloader=False,
                     log_output=args.log_level in ("debug", "info"),  # eventlet's request lines
                     allow_unsafe_werkzeug=True)
    finally:
        shutdown(app)


if __name__ == "__main__":
    main()
