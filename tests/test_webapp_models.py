"""The dashboard's database: app factory upgrade, migrations vs models, SQLite settings, constraints;
on SQLite and on a real PostgreSQL server."""
import json

import flask_migrate
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from webapp import MIGRATIONS_DIR, create_app
from webapp.extensions import db
from webapp.models import Device, EpochMetric, LatencyCacheEntry, Run, Sample, stored_front

pytestmark = pytest.mark.unit

TABLES = {"devices", "runs", "samples", "epoch_metrics", "latency_cache", "trainings"}
HASH = "ab" * 32
DATABASES = ("sqlite", "postgresql")


@pytest.fixture
def app(tmp_path, request, database):
    """An app on a new empty database of each kind: its factory upgrades it to the head."""
    config = {"DATA_DIR": str(tmp_path / "data"), "TESTING": True, "LOCAL_AGENT": False,
              "DEVICE_CHECK_INTERVAL_S": 0}
    if database == "postgresql":
        config["SQLALCHEMY_DATABASE_URI"] = request.getfixturevalue("postgres").database()
    app = create_app(config)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def head_revision():
    return ScriptDirectory(MIGRATIONS_DIR).get_current_head()


def table_names():
    return set(sa.inspect(db.engine).get_table_names())


def test_factory_upgrades_empty_database_to_head(app, tmp_path, database):
    if database == "sqlite":
        assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'data' / 'dashboard.db'}"
        assert (tmp_path / "data" / "dashboard.db").exists()
    else:
        assert db.engine.dialect.name == "postgresql"
    assert TABLES <= table_names()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()


def test_downgrade_to_base_and_upgrade_again(app):
    flask_migrate.downgrade(revision="base")
    assert table_names() & TABLES == set()
    flask_migrate.upgrade()
    assert TABLES <= table_names()
    # a second app on the same (already current) database starts fine
    create_app({"SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                "DATA_DIR": app.config["DATA_DIR"], "LOCAL_AGENT": False, "DEVICE_CHECK_INTERVAL_S": 0})


def test_upgrade_and_downgrade_keep_stored_rows(app):
    """0001 -> head adds columns to tables that already hold runs and samples; nothing is lost, and
    the stored latency (a median until 0003) is copied into the new median column."""
    flask_migrate.downgrade(revision="0001")
    with db.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO runs (id, name, status, config, created_at) "
                             "VALUES (7, 'kept', 'finished', '{}', '2026-01-01 00:00:00')"))
        conn.execute(sa.text(
            "INSERT INTO samples (run_id, epoch, kind, arch_hash, arch_json, accuracy, latency_ms, "
            "feasible, created_at) VALUES (7, 0, 'argmax', :hash, '{}', 0.9, 1.5, :yes, "
            "'2026-01-01 00:00:00')"), {"hash": HASH, "yes": True})
    flask_migrate.upgrade()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT name, progress FROM runs").all() == [("kept", None)]
        assert conn.exec_driver_sql("SELECT accuracy, ops, latency_ms, latency_median_ms "
                                    "FROM samples").all() == [(0.9, None, 1.5, 1.5)]
    flask_migrate.downgrade(revision="0001")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT name FROM runs").all() == [("kept",)]
        assert conn.exec_driver_sql("SELECT latency_ms FROM samples").all() == [(1.5,)]
    flask_migrate.upgrade()


def test_a_devices_table_moves_to_device_luts_and_back(app):
    """0004: the one uncalibrated table a device kept becomes its table for that setting."""
    lut = {"format": "edge-nas.lut", "device_id": "nano:cuda", "blocks": [],
           "space": {"resolution": 64, "width_mult": 0.75, "num_classes": 5, "in_channels": 3}}
    flask_migrate.downgrade(revision="0003")
    with db.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO devices (id, name, kind, status, token, info, lut, lut_profiled_at, "
            "created_at) VALUES (3, 'nano', 'agent', 'online', 't', '{}', :lut, "
            "'2026-02-01 00:00:00', '2026-01-01 00:00:00')"), {"lut": json.dumps(lut)})
    flask_migrate.upgrade()
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT device_id, device_key, resolution, width_mult, num_classes, in_channels, lut, "
            "profiled_at FROM device_luts").all()
    assert [row[:6] for row in rows] == [(3, "agent:nano:cuda", 64, 0.75, 5, 3)]
    assert json.loads(rows[0][6]) == lut and str(rows[0][7]).startswith("2026-02-01")
    flask_migrate.downgrade(revision="0003")
    with db.engine.connect() as conn:
        [(text,)] = conn.exec_driver_sql("SELECT lut FROM devices WHERE id = 3").all()
    assert json.loads(text) == lut
    flask_migrate.upgrade()


def test_models_match_latest_revision(app):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []


def test_sqlite_pragmas(app, database):
    if database != "sqlite":
        pytest.skip("SQLite's own settings")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_a_queued_run_is_in_the_database_file_itself(app, database, tmp_path):
    """Its row outlives a lost WAL (deleted after a crash): submit copies the WAL into the file.
    The file is read alone, as it would be left, through a copy."""
    if database != "sqlite":
        pytest.skip("SQLite's write-ahead log")
    import shutil
    import sqlite3
    with db.engine.connect() as conn:  # what the factory wrote is in the file already
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    run = Run(name="kept", status="queued", config=json.dumps({"dataset": "digits"}))
    db.session.add(run)
    db.session.commit()
    copy = str(tmp_path / "without-its-wal.db")
    with app.app_context():
        app.extensions["workers"]._stopping.set()  # no scheduler: nothing may start the run here
        app.extensions["workers"].submit(run)
        shutil.copy(db.engine.url.database, copy)
    with sqlite3.connect(copy) as alone:
        assert alone.execute("SELECT name, status FROM runs").fetchall() == [("kept", "queued")]


def make_run(name="r", **kw):
    run = Run(name=name, config=json.dumps({"dataset": "mnist"}), **kw)
    db.session.add(run)
    db.session.flush()
    return run


def make_sample(run, epoch=0, kind="argmax", arch_hash=HASH, **kw):
    values = dict(arch_json='{"blocks": []}', accuracy=0.9, latency_ms=1.5, feasible=True)
    values.update(kw)
    sample = Sample(run_id=run.id, epoch=epoch, kind=kind, arch_hash=arch_hash, **values)
    db.session.add(sample)
    db.session.flush()
    return sample


def test_unique_device_name(app):
    db.session.add(Device(name="pi", token="secret", kind="agent", host="10.0.0.2", port=7777))
    db.session.commit()
    db.session.add(Device(name="pi", token="other"))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_device_token_required_and_checks(app):
    db.session.add(Device(name="x", token=None))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()
    db.session.add(Device(name="y", token="t", kind="gpu-farm"))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_unique_sample_key(app):
    run = make_run()
    make_sample(run)
    make_sample(run, kind="sampled")  # same arch, other kind: fine
    make_sample(run, epoch=1)  # other epoch: fine
    db.session.commit()
    with pytest.raises(sa.exc.IntegrityError):
        make_sample(run)
    db.session.rollback()


def test_a_final_sample_is_stored_and_a_downgrade_keeps_it_as_sampled(app):
    """0016: a finalist measured again at the end is a sample of kind final; an unknown kind is
    refused; downgraded, the final row stays as a sampled one, the run's pick still on it."""
    run = make_run()
    make_sample(run, epoch=3, kind="final")
    db.session.commit()
    run.best_sample_id = db.session.scalar(sa.select(Sample.id).where(Sample.kind == "final"))
    db.session.commit()
    with pytest.raises(sa.exc.IntegrityError):
        make_sample(run, kind="remeasured")
        db.session.commit()
    db.session.rollback()
    db.session.remove()
    flask_migrate.downgrade(revision="0015")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT s.epoch, s.kind FROM runs r JOIN samples s "
                                    "ON r.best_sample_id = s.id").all() == [(3, "sampled")]
    flask_migrate.upgrade()


def test_the_stored_front_counts_a_finalist_by_its_measurement_at_the_end(app):
    """A finalist's earlier samples leave the front once its final sample is stored (their
    single measurements, here faster, are replaced); left out, the final is as if not stored."""
    run, other = make_run(), make_run("other")
    early = make_sample(run, arch_hash="a" * 64, latency_ms=1.0, accuracy=0.8)
    late = make_sample(run, epoch=1, kind="sampled", arch_hash="a" * 64, latency_ms=1.1,
                       accuracy=0.85)
    wide = make_sample(run, arch_hash="b" * 64, latency_ms=2.0, accuracy=0.9)
    make_sample(other, arch_hash="b" * 64, kind="final", latency_ms=0.5, accuracy=0.95)
    db.session.commit()
    points = [(early.id, 1.0, 0.8), (late.id, 1.1, 0.85), (wide.id, 2.0, 0.9)]
    assert stored_front(run.id) == points
    final = make_sample(run, epoch=2, kind="final", arch_hash="a" * 64, latency_ms=1.4,
                        accuracy=0.85)
    db.session.commit()
    assert stored_front(run.id) == [(final.id, 1.4, 0.85), (wide.id, 2.0, 0.9)]
    assert stored_front(run.id, exclude_id=final.id) == points


def test_unique_epoch_metric_and_cache_key(app):
    run = make_run()
    db.session.add(EpochMetric(run_id=run.id, epoch=0, phase="warmup"))
    db.session.commit()
    db.session.add(EpochMetric(run_id=run.id, epoch=0, phase="search"))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()
    key = dict(device_key="local:host:cpu:1t", arch_hash=HASH, input_shape="1x1x32x32")
    db.session.add(LatencyCacheEntry(stats='{"median_ms": 1.0}', **key))
    db.session.commit()
    db.session.add(LatencyCacheEntry(stats="{}", **key))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_delete_run_cascades(app):
    device = Device(name="local", token="t", kind="local")
    db.session.add(device)
    db.session.flush()
    run = make_run(device_id=device.id)
    other = make_run("other")
    best = make_sample(run)
    make_sample(run, kind="sampled")
    make_sample(other)
    db.session.add_all(
        [EpochMetric(run_id=run.id, epoch=e, phase="search", arch_probabilities="[[0.5, 0.5]]") for e in range(3)]
    )
    run.best_sample = best
    db.session.commit()
    assert run.best_sample_id == best.id
    assert run.config_data == {"dataset": "mnist"}

    db.session.delete(run)
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Sample)) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EpochMetric)) == 0

    # at the database level too (no ORM cascade involved)
    with db.engine.begin() as conn:
        conn.execute(sa.delete(Run.__table__).where(Run.__table__.c.id == other.id))
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Sample)) == 0


def test_delete_device_keeps_runs_and_best_sample_set_null(app):
    device = Device(name="pi", token="t")
    db.session.add(device)
    db.session.flush()
    run = make_run(device_id=device.id)
    sample = make_sample(run)
    run.best_sample_id = sample.id
    db.session.commit()
    with db.engine.begin() as conn:
        conn.execute(sa.delete(Device.__table__))
        conn.execute(sa.delete(Sample.__table__))
    db.session.expire_all()
    assert run.device_id is None and run.best_sample_id is None
