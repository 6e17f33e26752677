"""Alembic environment of the dashboard (Flask-Migrate layout, Flask-SQLAlchemy 3).

Runs inside a Flask app context: the engine and the metadata come from ``webapp.db``.
"""
import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

config = context.config

# The `flask db` commands configure logging from alembic.ini; the app's own upgrade on start
# sets ``skip_logging_config`` so that it leaves the application's logging alone.
if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

target_db = current_app.extensions["migrate"].db


def get_engine():
    return target_db.engine


def get_metadata():
    return target_db.metadata


def _configure_args(dialect_name):
    args = dict(current_app.extensions["migrate"].configure_args)
    # SQLite cannot ALTER most things: let autogenerate emit batch (copy-and-move) operations.
    args.setdefault("render_as_batch", dialect_name == "sqlite")
    args.setdefault("compare_type", True)
    return args


def run_migrations_offline():
    url = get_engine().url.render_as_string(hide_password=False)
    context.configure(
        url=url,
        target_metadata=get_metadata(),
        literal_binds=True,
        **_configure_args(get_engine().dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    def process_revision_directives(context, revision, directives):
        # no empty revision when autogenerate finds no change
        if getattr(config.cmd_opts, "autogenerate", False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.info("No changes in schema detected.")

    engine = get_engine()
    args = _configure_args(engine.dialect.name)
    args.setdefault("process_revision_directives", process_revision_directives)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch operations recreate tables (copy, drop, rename): with foreign keys enforced the
            # drop would cascade into child rows. Off for the migration, checked afterwards.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            context.configure(connection=connection, target_metadata=get_metadata(), **args)
            with context.begin_transaction():
                context.run_migrations()
            if sqlite:
                connection.commit()
                problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise RuntimeError(f"foreign key violations after migration: {problems[:10]}")
        finally:
            if sqlite:
                connection.rollback()
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
