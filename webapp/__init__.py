"""The dashboard: Flask application factory, SQLAlchemy models, Alembic migrations in migrations/.

Pages (pages.py) and the JSON API (api/, by resource) are blueprints behind auth.py's token, Origin and Host
checks; searches and retrainings are workers (subprocesses, or Ray actors: executors.py) that live
one life (workers/); devices and the built-in local agent live in devices.py; Socket.IO pushes in sockets.py.
"""
import os
import sqlite3

import sqlalchemy as sa
from alembic import command
from flask import Flask, jsonify, render_template, request

from . import auth, models  # noqa: F401  (models registers the tables on db.metadata)
from .config import Config, sqlite_uri
from .extensions import db, migrate, socketio
from .ids import IdConverter

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")


def _sqlite_pragmas(busy_timeout_ms):
    def on_connect(dbapi_connection, connection_record):
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode=WAL")  # stays 'memory' for :memory: databases
            cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL, far fewer fsyncs
        finally:
            cursor.close()

    return on_connect


def _keep_private(path):
    """The SQLite file (and its -wal and -shm, which SQLite makes with the file's mode) readable
    by the dashboard's user alone: it holds every registered device's token."""
    if not path or path == ":memory:":
        return
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.chmod(name, 0o600)


def upgrade_database(app, revision="head"):
    """Upgrade the app's database to ``revision`` (raises on failure, unlike flask_migrate.upgrade)."""
    with app.app_context():
        config = app.extensions["migrate"].migrate.get_config(MIGRATIONS_DIR)
        config.attributes["skip_logging_config"] = True
        command.upgrade(config, revision)


def create_app(config=None):
    app = Flask(__name__)
    app.url_map.converters["id"] = IdConverter
    app.config.from_object(Config)
    app.config.from_prefixed_env("WEBAPP")  # e.g. WEBAPP_DATA_DIR=/srv/nas (values parsed as JSON when they can be)
    if config:
        app.config.update(config)
    app.config["DATA_DIR"] = os.path.abspath(app.config["DATA_DIR"])
    os.makedirs(app.config["DATA_DIR"], exist_ok=True)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = sqlite_uri(app.config["DATA_DIR"])
    auth.init_app(app)

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)

    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            _keep_private(engine.url.database)
            sa.event.listen(engine, "connect", _sqlite_pragmas(app.config["SQLITE_BUSY_TIMEOUT_MS"]))

    if app.config["AUTO_UPGRADE"]:
        upgrade_database(app)

    from .api import bp as api_bp
    from .cross_devices import CrossTables
    from .devices import DeviceRegistry
    from .executors import make_executor
    from .pages import bp as pages_bp
    from .sockets import (PreAuthGuard, RunPublisher, emit_cross_table, emit_device,
                          emit_specialisation, emit_training)
    from .workers import SearchWorkers, SpecialisationWorkers, TrainingWorkers, Workers

    app.register_blueprint(api_bp)
    app.register_blueprint(pages_bp)
    app.register_error_handler(404, _not_found)
    app.register_error_handler(405, _method_not_allowed)
    socketio.init_app(app, async_mode=app.config["SOCKETIO_ASYNC_MODE"])
    PreAuthGuard(socketio.server)
    publisher = RunPublisher()
    app.extensions["publisher"] = publisher
    executor = make_executor(app.config)
    app.extensions["executor"] = executor
    if app.config["MAX_RUNS"] is None:
        app.config["MAX_RUNS"] = executor.default_max_runs(app.config["LOCAL_AGENT_THREADS"])
    workers = Workers(app, executor, [SearchWorkers(app, on_event=publisher),
                                      TrainingWorkers(app, on_event=emit_training),
                                      SpecialisationWorkers(app, on_event=emit_specialisation)])
    app.extensions["workers"] = workers
    devices = DeviceRegistry(app, publish=emit_device)
    app.extensions["devices"] = devices
    app.extensions["cross_tables"] = CrossTables(app, devices, publish=emit_cross_table)
    with app.app_context():
        try:
            workers.mark_interrupted()  # active in the database, but no worker of this process
        except sa.exc.OperationalError:  # no tables yet (AUTO_UPGRADE off)
            db.session.rollback()
            return app
    devices.start()
    workers.kick()  # the queue a restart left
    return app


def _not_found(e):
    """Unrouted URLs: JSON under /api (programs), the 404 page elsewhere (people)."""
    if request.path.startswith("/api/"):
        return jsonify(error="not found"), 404
    return render_template("404.html", message="There is no page at {}.".format(request.path)), 404


def _method_not_allowed(e):
    """Raised while routing, before any blueprint's handler could answer: JSON under /api too."""
    if request.path.startswith("/api/"):
        return jsonify(error="method {} is not allowed here (allowed: {})".format(
            request.method, ", ".join(sorted(e.valid_methods or ())))), 405
    return e


def shutdown(app):
    """Stop the app's workers and its local agent (tests; the server's exit)."""
    with app.app_context():
        app.extensions["workers"].shutdown()
    app.extensions["devices"].shutdown()
    app.extensions["executor"].close()
