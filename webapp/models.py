# length: the whole schema in one module, as the migrations (migrations/) and their test see it
"""The dashboard's tables (SQLAlchemy 2.0 style). Schema changes go through migrations/ only.

JSON values are stored in plain Text columns (``json.dumps``) and read through the ``*_data``
properties: the same DDL and the same bytes on SQLite and PostgreSQL, no dialect JSON types.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from search_core.rundir import ONNX, WEIGHTS

from .extensions import db
from .pareto import front_of_sorted

DEVICE_KINDS = ("local", "agent")
DEVICE_STATUSES = ("unknown", "online", "offline")
RUN_STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
RUN_ACTIVE_STATUSES = ("queued", "running")
SAMPLE_KINDS = ("argmax", "sampled", "final")  # final: a finalist measured again at the end
TRAINING_STATUSES = RUN_STATUSES  # a retraining's worker lives as a search's does
TRAINING_FILES = (WEIGHTS, ONNX)  # the trained state_dict and its ONNX export
PHASES = ("warmup", "search")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class json_property:
    """Read/write access to a Text column holding JSON: ``Run.config_data`` for ``Run.config``."""

    def __init__(self, column: str):
        self.column = column

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        text = getattr(obj, self.column)
        return None if text is None else json.loads(text)

    def __set__(self, obj, value):
        setattr(obj, self.column, None if value is None else json.dumps(value, separators=(",", ":")))


class WorkerRow:
    """A row that a worker lives for (a run, a retraining, a specialisation: webapp/workers/)."""

    @property
    def active(self) -> bool:
        return self.status in RUN_ACTIVE_STATUSES


class MeasuresOnDevices:
    """A row that measures on a device or a group (a run, a specialisation)."""

    @property
    def measuring_devices(self) -> list:
        """Its group's members (a pool), else its device, else none."""
        if self.group is not None:
            return list(self.group.devices)
        return [self.device] if self.device is not None else []


class DeviceGroup(db.Model):
    """Identical device agents that measure as one pool (search_core/pool.py): a run on the group
    sends each measurement to whichever member is idle, and their measurements are one device's
    (the identity group:<name>)."""

    __tablename__ = "device_groups"
    __table_args__ = (sa.UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, default=utcnow)

    devices: Mapped[list["Device"]] = relationship(back_populates="group", order_by="Device.id")


class Device(db.Model):
    __tablename__ = "devices"
    __table_args__ = (
        sa.UniqueConstraint("name"),
        sa.CheckConstraint(_in("kind", DEVICE_KINDS), name="kind"),
        sa.CheckConstraint(_in("status", DEVICE_STATUSES), name="status"),
        sa.CheckConstraint("port IS NULL OR (port > 0 AND port < 65536)", name="port"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    host: Mapped[Optional[str]] = mapped_column(sa.String(255))
    port: Mapped[Optional[int]] = mapped_column(sa.Integer)
    token: Mapped[str] = mapped_column(sa.String(255), nullable=False)  # the agent's shared secret
    kind: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="agent")
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="unknown")
    info: Mapped[str] = mapped_column(sa.Text, nullable=False, default="{}")  # JSON
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    checked_at: Mapped[Optional[datetime]] = mapped_column(sa.DateTime(timezone=True))
    error: Mapped[Optional[str]] = mapped_column(sa.Text)  # why the last check failed
    group_id: Mapped[Optional[int]] = mapped_column(
        sa.Integer, sa.ForeignKey("device_groups.id", ondelete="SET NULL"))

    info_data = json_property("info")
    group: Mapped[Optional[DeviceGroup]] = relationship(back_populates="devices")

    runs: Mapped[list["Run"]] = relationship(back_populates="device", passive_deletes=True)
    luts: Mapped[list["DeviceLut"]] = relationship(
        back_populates="device", cascade="all, delete-orphan", passive_deletes=True,
        order_by="DeviceLut.profiled_at.desc()")

    def __repr__(self):
        return f"<Device {self.id} {self.name!r} {self.kind} {self.status}>"


class DeviceLut(db.Model):
    """A device's calibrated latency lookup table for one setting of the space; runs on the device
    with that setting use it instead of profiling again (search_core.search.Search._lut)."""

    __tablename__ = "device_luts"
    __table_args__ = (
        sa.UniqueConstraint("device_id", "device_key", "resolution", "width_mult", "num_classes",
                            "in_channels"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False)
    # the identity the agent measured under (host, cpu/cuda, threads): a restarted agent with
    # another thread count is another measuring device
    device_key: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    resolution: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    width_mult: Mapped[float] = mapped_column(sa.Float, nullable=False)
    num_classes: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    in_channels: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    lut: Mapped[str] = mapped_column(sa.Text, nullable=False)  # JSON: the calibrated table
    profiled_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    # who profiled it: the Devices page (NULL) or a run
    run_id: Mapped[Optional[int]] = mapped_column(sa.Integer, sa.ForeignKey("runs.id", ondelete="SET NULL"))

    lut_data = json_property("lut")

    device: Mapped[Device] = relationship(back_populates="luts")

    @property
    def calibration(self) -> dict | None:
        return (self.lut_data or {}).get("calibration")


class Run(WorkerRow, MeasuresOnDevices, db.Model):
    __tablename__ = "runs"
    __table_args__ = (
        sa.UniqueConstraint("run_dir"),
        sa.CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        sa.CheckConstraint("phase IS NULL OR " + _in("phase", PHASES), name="phase"),
        sa.Index("ix_runs_status", "status"),
        sa.Index("ix_runs_created_at", "created_at"),
        sa.Index("ix_runs_device_id", "device_id"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="queued")
    config: Mapped[str] = mapped_column(sa.Text, nullable=False)  # JSON: every setting, as asked
    # JSON: what its worker resolved of them (the automatic T, the device's address), each once
    resolved: Mapped[Optional[str]] = mapped_column(sa.Text)
    # SET NULL: deleting a device must not delete (or be blocked by) the history measured on it;
    # the run's config keeps the device's description.
    device_id: Mapped[Optional[int]] = mapped_column(
        sa.Integer, sa.ForeignKey("devices.id", ondelete="SET NULL")
    )
    run_dir: Mapped[Optional[str]] = mapped_column(sa.String(1024))
    pid: Mapped[Optional[int]] = mapped_column(sa.Integer)
    epoch: Mapped[Optional[int]] = mapped_column(sa.Integer)  # last epoch reached, 0-based
    epochs: Mapped[Optional[int]] = mapped_column(sa.Integer)
    phase: Mapped[Optional[str]] = mapped_column(sa.String(16))
    error: Mapped[Optional[str]] = mapped_column(sa.Text)
    # runs <-> samples is a cycle: the FK is added after both tables exist (use_alter)
    best_sample_id: Mapped[Optional[int]] = mapped_column(
        sa.Integer,
        sa.ForeignKey("samples.id", ondelete="SET NULL", use_alter=True),
    )
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    started_at: Mapped[Optional[datetime]] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[Optional[datetime]] = mapped_column(sa.DateTime(timezone=True))
    space: Mapped[Optional[str]] = mapped_column(sa.Text)  # JSON: op names per searchable block
    progress: Mapped[Optional[str]] = mapped_column(sa.Text)  # JSON: the latest progress event
    message: Mapped[Optional[str]] = mapped_column(sa.Text)  # the worker's latest message
    # JSON: MobileNetV2 evaluated like a sample at the latest search epoch (the reference point)
    reference: Mapped[Optional[str]] = mapped_column(sa.Text)
    # when it last joined the queue of runs waiting for a slot (created, or resumed)
    queued_at: Mapped[Optional[datetime]] = mapped_column(sa.DateTime(timezone=True))
    # the pool it measures on (its device_id is then the member that holds its lookup tables)
    group_id: Mapped[Optional[int]] = mapped_column(
        sa.Integer, sa.ForeignKey("device_groups.id", ondelete="SET NULL"))
    # where its worker runs, when a cluster runs it (host and Ray node)
    node: Mapped[Optional[str]] = mapped_column(sa.String(255))
    # JSON: the automatic resumes after a lost worker since it was last queued ({time, node, error})
    retries: Mapped[Optional[str]] = mapped_column(sa.Text)
    # images in the validation split (the `started` event): the noise of the pick's accuracy
    val_size: Mapped[Optional[int]] = mapped_column(sa.Integer)

    config_data = json_property("config")
    resolved_data = json_property("resolved")
    space_data = json_property("space")
    progress_data = json_property("progress")
    reference_data = json_property("reference")
    retries_data = json_property("retries")

    device: Mapped[Optional[Device]] = relationship(back_populates="runs")
    group: Mapped[Optional[DeviceGroup]] = relationship()
    samples: Mapped[list["Sample"]] = relationship(
        back_populates="run",
        foreign_keys="Sample.run_id",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Sample.id",
    )
    epoch_metrics: Mapped[list["EpochMetric"]] = relationship(
        back_populates="run",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="EpochMetric.epoch",
    )
    best_sample: Mapped[Optional["Sample"]] = relationship(foreign_keys=[best_sample_id], post_update=True)
    trainings: Mapped[list["Training"]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Training.id")
    specialisations: Mapped[list["Specialisation"]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Specialisation.id")
    ranking_checks: Mapped[list["RankingCheck"]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True,
        order_by="RankingCheck.id")
    cross_measurements: Mapped[list["CrossMeasurement"]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True,
        order_by="CrossMeasurement.id")

    def __repr__(self):
        return f"<Run {self.id} {self.name!r} {self.status}>"


class Sample(db.Model):
    __tablename__ = "samples"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "epoch", "kind", "arch_hash"),
        sa.CheckConstraint(_in("kind", SAMPLE_KINDS), name="kind"),
        # covers the Pareto query: the front is swept from this index alone, in its order
        sa.Index("ix_samples_run_id_latency_ms_accuracy", "run_id", "latency_ms", "accuracy"),
        sa.Index("ix_samples_run_id_id", "run_id", "id"),
        sa.Index("ix_samples_arch_hash", "arch_hash"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    epoch: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    arch_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False)  # sha256 hex
    arch_json: Mapped[str] = mapped_column(sa.Text, nullable=False)
    ops: Mapped[Optional[str]] = mapped_column(sa.Text)  # JSON: the op of each searchable block
    accuracy: Mapped[float] = mapped_column(sa.Float, nullable=False)
    # the latency the search optimised, batch 1: the fastest timed run (the median before 0003)
    latency_ms: Mapped[float] = mapped_column(sa.Float, nullable=False)
    latency_median_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    latency_mean_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    latency_std_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    latency_p90_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    latency_min_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    predicted_latency_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    memory_mb: Mapped[Optional[float]] = mapped_column(sa.Float)
    params: Mapped[Optional[int]] = mapped_column(sa.BigInteger)
    macs: Mapped[Optional[int]] = mapped_column(sa.BigInteger)
    objective: Mapped[Optional[float]] = mapped_column(sa.Float)
    feasible: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)
    # within [0.85 T, T] of every absolute target (search_core.best); null before revision 0005
    uses_budget: Mapped[Optional[bool]] = mapped_column(sa.Boolean)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, default=utcnow)

    arch = json_property("arch_json")
    ops_data = json_property("ops")

    run: Mapped[Run] = relationship(back_populates="samples", foreign_keys=[run_id])

    def __repr__(self):
        return f"<Sample {self.id} run={self.run_id} e{self.epoch} {self.kind} {self.arch_hash[:8]}>"


class Training(WorkerRow, db.Model):
    """An architecture of a run (a sample, or the MobileNetV2 reference) retrained from scratch on
    the run's data by a `train` worker: its test accuracy, and the files for deployment (the
    trained state_dict and its ONNX export) in its directory."""

    __tablename__ = "trainings"
    __table_args__ = (
        sa.CheckConstraint(_in("status", TRAINING_STATUSES), name="status"),
        sa.Index("ix_trainings_run_id_arch_hash", "run_id", "arch_hash"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    # the sample retrained; null for the reference (and when its sample was dropped on resume)
    sample_id: Mapped[Optional[int]] = mapped_column(
        sa.Integer, sa.ForeignKey("samples.id", ondelete="SET NULL"))
    arch_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    arch_json: Mapped[str] = mapped_column(sa.Text, nullable=False)
    label: Mapped[str] = mapped_column(sa.String(64), nullable=False)  # "sample #12", "MobileNetV2"
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="queued")
    epochs: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    seed: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    epoch: Mapped[Optional[int]] = mapped_column(sa.Integer)  # epochs done
    loss: Mapped[Optional[float]] = mapped_column(sa.Float)
    val_accuracy: Mapped[Optional[float]] = mapped_column(sa.Float)
    test_accuracy: Mapped[Optional[float]] = mapped_column(sa.Float)
    train_time_s: Mapped[Optional[float]] = mapped_column(sa.Float)
    directory: Mapped[Optional[str]] = mapped_column(sa.String(1024))
    pid: Mapped[Optional[int]] = mapped_column(sa.Integer)
    node: Mapped[Optional[str]] = mapped_column(sa.String(255))  # where a cluster runs it
    error: Mapped[Optional[str]] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(sa.DateTime(timezone=True))
    # the ranking check it retrains for, if any
    ranking_check_id: Mapped[Optional[int]] = mapped_column(
        sa.Integer, sa.ForeignKey("ranking_checks.id", ondelete="SET NULL"))

    arch = json_property("arch_json")

    run: Mapped[Run] = relationship(back_populates="trainings")
    ranking_check: Mapped[Optional["RankingCheck"]] = relationship(back_populates="trainings")

    def __repr__(self):
        return f"<Training {self.id} run={self.run_id} {self.label!r} {self.status}>"


class RankingCheck(db.Model):
    """Architectures spread across a run's samples, retrained from scratch: does the shared-weight
    accuracy the search ranked them by rank them as standalone training does?"""

    __tablename__ = "ranking_checks"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    architectures: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    epochs: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    seed: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, default=utcnow)

    run: Mapped[Run] = relationship(back_populates="ranking_checks")
    trainings: Mapped[list[Training]] = relationship(back_populates="ranking_check",
                                                     order_by="Training.id")


class Specialisation(WorkerRow, MeasuresOnDevices, db.Model):
    """A finished run's trained supernet searched again, training nothing, for new targets on a
    device or runtime of the user's choice (`search_core specialise`): its pick, kept with the run."""

    __tablename__ = "specialisations"
    __table_args__ = (sa.CheckConstraint(_in("status", RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="queued")
    # T, or the fraction of the new table's uniform expectation that its worker turns into T
    target_latency_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    target_latency_fraction: Mapped[Optional[float]] = mapped_column(sa.Float)
    target_memory_mb: Mapped[Optional[float]] = mapped_column(sa.Float)
    device_id: Mapped[Optional[int]] = mapped_column(
        sa.Integer, sa.ForeignKey("devices.id", ondelete="SET NULL"))
    group_id: Mapped[Optional[int]] = mapped_column(
        sa.Integer, sa.ForeignKey("device_groups.id", ondelete="SET NULL"))
    backend: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    generations: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    generation: Mapped[Optional[int]] = mapped_column(sa.Integer)  # generations done
    pick: Mapped[Optional[str]] = mapped_column(sa.Text)  # JSON: the picked sample (summary's best)
    directory: Mapped[Optional[str]] = mapped_column(sa.String(1024))
    pid: Mapped[Optional[int]] = mapped_column(sa.Integer)
    node: Mapped[Optional[str]] = mapped_column(sa.String(255))
    message: Mapped[Optional[str]] = mapped_column(sa.Text)
    error: Mapped[Optional[str]] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(sa.DateTime(timezone=True))

    pick_data = json_property("pick")

    run: Mapped[Run] = relationship(back_populates="specialisations")
    device: Mapped[Optional[Device]] = relationship()
    group: Mapped[Optional[DeviceGroup]] = relationship()

    def __repr__(self):
        return f"<Specialisation {self.id} run={self.run_id} T={self.target_latency_ms} {self.status}>"


class CrossMeasurement(db.Model):
    """One cell of a run's cross-device table (webapp/cross_devices.py): one of its picks measured
    afresh on one device in one runtime, side by side with the table's other cells."""

    __tablename__ = "cross_measurements"
    __table_args__ = (sa.UniqueConstraint("run_id", "device_id", "backend", "arch_hash"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    # CASCADE: a deleted device's column goes with it (its specialisations keep their own pick)
    device_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False)
    backend: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    arch_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    latency_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    stats: Mapped[Optional[str]] = mapped_column(sa.Text)  # JSON: the agent's figures
    error: Mapped[Optional[str]] = mapped_column(sa.Text)  # why it has no latency
    measured_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, default=utcnow)

    stats_data = json_property("stats")

    run: Mapped[Run] = relationship(back_populates="cross_measurements")


def queued_runs():
    """The runs waiting for a slot, first in line first."""
    return db.session.scalars(sa.select(Run).where(Run.status == "queued")
                              .order_by(Run.queued_at, Run.id)).all()


def take_queued(model, row_id, **values) -> bool:
    """Whether this caller took a queued run or retraining (``values`` set by one UPDATE)."""
    taken = db.session.execute(sa.update(model).where(
        model.id == row_id, model.status == "queued").values(**values)).rowcount
    db.session.commit()
    return bool(taken)


def queued(model):
    """The retrainings or specialisations waiting for a slot, first asked first."""
    return db.session.scalars(sa.select(model).where(model.status == "queued")
                              .order_by(model.created_at, model.id)).all()


def queue_position(run: Run) -> int | None:
    """1 for the next run to start, 2 for the one after, ...; None when not queued."""
    if run.status != "queued":
        return None
    ahead = sa.or_(Run.queued_at < run.queued_at,
                   sa.and_(Run.queued_at == run.queued_at, Run.id < run.id))
    return 1 + db.session.scalar(sa.select(sa.func.count(Run.id)).where(
        Run.status == "queued", ahead if run.queued_at is not None else Run.id < run.id))


def stored_front(run_id: int, exclude_id: int | None = None) -> list:
    """The run's Pareto front as ``(id, latency_ms, accuracy)`` tuples, latency ascending: sorted by
    the database from the covering index and swept once (``exclude_id``: leave that sample out, as
    if it were not stored yet). A finalist's earlier samples are left out: its measurement at the
    end (a sample of kind ``final``) replaces their single ones."""
    of_run = Sample.run_id == run_id
    if exclude_id is not None:
        of_run = sa.and_(of_run, Sample.id != exclude_id)
    finals = sa.select(Sample.arch_hash).where(of_run, Sample.kind == "final")
    replaced = set(db.session.scalars(sa.select(Sample.id).where(
        of_run, Sample.kind != "final", Sample.arch_hash.in_(finals))))
    rows = db.session.execute(sa.select(Sample.id, Sample.latency_ms, Sample.accuracy).where(of_run)
                              .order_by(Sample.latency_ms, Sample.accuracy.desc(), Sample.id))
    return front_of_sorted(row for row in rows if row[0] not in replaced)


class EpochMetric(db.Model):
    __tablename__ = "epoch_metrics"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "epoch"),
        sa.CheckConstraint(_in("phase", PHASES), name="phase"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    epoch: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    phase: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    train_loss: Mapped[Optional[float]] = mapped_column(sa.Float)
    train_accuracy: Mapped[Optional[float]] = mapped_column(sa.Float)
    expected_latency_ms: Mapped[Optional[float]] = mapped_column(sa.Float)
    entropy: Mapped[Optional[float]] = mapped_column(sa.Float)
    arch_probabilities: Mapped[Optional[str]] = mapped_column(sa.Text)  # JSON: per block, per op
    duration_s: Mapped[Optional[float]] = mapped_column(sa.Float)

    arch_probabilities_data = json_property("arch_probabilities")

    run: Mapped[Run] = relationship(back_populates="epoch_metrics")


class LatencyCacheEntry(db.Model):
    __tablename__ = "latency_cache"
    __table_args__ = (sa.UniqueConstraint("device_key", "arch_hash", "input_shape"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    device_key: Mapped[str] = mapped_column(sa.String(255), nullable=False)  # e.g. local:host:cpu:1t
    arch_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    input_shape: Mapped[str] = mapped_column(sa.String(64), nullable=False)  # e.g. 1x1x32x32
    stats: Mapped[str] = mapped_column(sa.Text, nullable=False)  # JSON latency statistics
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False, default=utcnow)

    stats_data = json_property("stats")


