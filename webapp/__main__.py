"""python -m webapp: the dashboard server, with the built-in local device."""
import argparse
import os
import signal
import sys


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
                   help="SQLAlchemy URL, e.g. postgresql://user@host/nas (default: an SQLite "
                        "file in --data-dir)")
    p.add_argument("--async-mode", choices=("threading", "eventlet"), default="threading",
                   help="Socket.IO server mode (default threading; eventlet's maintainers "
                        "discourage new use of it)")
    p.add_argument("--no-local-agent", action="store_true",
                   help="do not start the built-in local device")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if not 0 < args.port < 65536:
        parser().error("--port must be from 1 to 65535")
    if args.async_mode == "eventlet" and "eventlet" not in sys.modules:
        # eventlet must patch the standard library before anything imports it: start afresh
        code = ("import eventlet; eventlet.monkey_patch(); import runpy, sys; "
                "sys.argv[0] = 'python -m webapp'; runpy.run_module('webapp', run_name='__main__')")
        os.execv(sys.executable, [sys.executable, "-c", code] + list(argv))

    from . import create_app, shutdown
    from .extensions import socketio

    config = {"DATA_DIR": args.data_dir, "SOCKETIO_ASYNC_MODE": args.async_mode,
              "LOCAL_AGENT": not args.no_local_agent}
    if args.database_url:
        config["SQLALCHEMY_DATABASE_URI"] = args.database_url
    try:
        app = create_app(config)
    except Exception as e:  # noqa: BLE001  e.g. an unreachable database: say so, no traceback
        sys.exit("webapp: cannot start: {}".format(e))
    # a plain `kill` stops the workers and the local agent too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print("edge-nas dashboard on http://{}:{}/ (data in {})".format(
        args.host, args.port, app.config["DATA_DIR"]), flush=True)
    try:
        socketio.run(app, host=args.host, port=args.port, use_reloader=False, log_output=False,
                     allow_unsafe_werkzeug=True)
    finally:
        shutdown(app)


if __name__ == "__main__":
    main()
