"""The Flask extensions, created once and bound to an app by ``create_app``."""
import sqlalchemy as sa
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy

# Deterministic constraint names: Alembic can then drop/alter them (SQLite batch mode needs names).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=sa.MetaData(naming_convention=NAMING_CONVENTION))
migrate = Migrate()
socketio = SocketIO()


def checkpoint_wal():
    """Copy SQLite's write-ahead log into the database file now, so that a run's row outlives a
    lost WAL (deleted after a crash, it takes every row since SQLite's last checkpoint with it;
    a run's samples come back from its directory on resume). A no-op on other databases."""
    if db.engine.dialect.name == "sqlite":
        with db.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
