"""The JSON shapes of runs, samples, epoch metrics and devices: one place for the API and Socket.IO."""
from __future__ import annotations

import os
from datetime import timezone

import sqlalchemy as sa
from flask import current_app

from search_core.best import explain
from search_core.device_client import backend_of
from search_core.ranking import agreement
from search_core.rundir import CONFIG, RunDirectory

from .extensions import db
from .models import (TRAINING_FILES, Device, DeviceGroup, DeviceLut, EpochMetric, RankingCheck,
                     Run, Sample, Specialisation, Training, queue_position)
from .paths import dataset_roots, public_path, public_text

SAMPLE_FIELDS = ("id", "epoch", "kind", "arch_hash", "accuracy", "latency_ms", "latency_median_ms",
                 "latency_mean_ms", "latency_std_ms", "latency_p90_ms", "latency_min_ms",
                 "predicted_latency_ms", "memory_mb", "params", "macs", "objective", "feasible",
                 "uses_budget")
METRIC_FIELDS = ("epoch", "phase", "train_loss", "train_accuracy", "expected_latency_ms", "entropy",
                 "duration_s")
RESUMABLE = ("failed", "cancelled", "interrupted")
# what a run keeps of its worker's `reference` event (MobileNetV2, docs/events.md)
REFERENCE_FIELDS = ("name", "epoch", "arch_hash", "ops", "accuracy", "latency_ms",
                    "predicted_latency_ms", "memory_mb", "params", "macs", "objective", "feasible",
                    "uses_budget")


def iso(value):
    """ISO 8601 in UTC with its offset (SQLite hands back naive datetimes: they are UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


def sample_numbers(run_id: int) -> dict[int, int]:
    """Each sample's number within its run (1, 2, ... in the order the run made them): ids count
    across all runs, so a 25-sample run's best may be id 132 but is at most number 25."""
    ids = db.session.scalars(sa.select(Sample.id).where(Sample.run_id == run_id).order_by(Sample.id))
    return {sample_id: number for number, sample_id in enumerate(ids, 1)}


def sample_number(sample: Sample) -> int:
    """One sample's number within its run (see sample_numbers)."""
    return db.session.scalar(sa.select(sa.func.count(Sample.id)).where(
        Sample.run_id == sample.run_id, Sample.id <= sample.id))


def sample_dict(sample: Sample, number: int | None = None) -> dict:
    """``number``: the sample's number within its run, if the caller knows it already."""
    d = {name: getattr(sample, name) for name in SAMPLE_FIELDS}
    d["number"] = sample_number(sample) if number is None else number
    d["ops"] = sample.ops_data
    d["created_at"] = iso(sample.created_at)
    return d


def metric_dict(metric: EpochMetric) -> dict:
    d = {name: getattr(metric, name) for name in METRIC_FIELDS}
    d["arch_probabilities"] = metric.arch_probabilities_data
    return d


def reference_dict(event: dict) -> dict:
    """The reference point as stored: the event's fields and its architecture (to retrain it)."""
    return {name: event.get(name) for name in REFERENCE_FIELDS + ("arch",)}


def public_reference(reference: dict | None) -> dict | None:
    """The reference point as the API shows it: its fields, not its architecture's JSON."""
    return None if reference is None else {name: reference.get(name) for name in REFERENCE_FIELDS}


TRAINING_FIELDS = ("id", "run_id", "sample_id", "arch_hash", "label", "status", "epochs", "seed",
                   "epoch", "loss", "val_accuracy", "test_accuracy", "train_time_s", "node",
                   "ranking_check_id")


def training_dict(training: Training) -> dict:
    d = {name: getattr(training, name) for name in TRAINING_FIELDS}
    d.update(error=public_text(training.error), created_at=iso(training.created_at),
             finished_at=iso(training.finished_at),
             files=[name for name in TRAINING_FILES
                    if training.status == "finished" and training.directory
                    and os.path.exists(os.path.join(training.directory, name))])
    return d


SPECIALISATION_FIELDS = ("id", "run_id", "status", "target_latency_ms", "target_latency_fraction",
                         "target_memory_mb", "device_id", "group_id", "backend", "generations",
                         "generation", "node")
SPECIALISED_PICK_FIELDS = ("arch_hash", "accuracy", "latency_ms", "memory_mb", "feasible", "params",
                           "macs", "predicted_latency_ms")


def specialisation_dict(specialisation: Specialisation) -> dict:
    """A specialisation and its pick: the shared-weight accuracy, the measured latency and its
    ratio to T, and the test accuracy of its best finished retraining in the run, if any."""
    d = {name: getattr(specialisation, name) for name in SPECIALISATION_FIELDS}
    pick = specialisation.pick_data
    if pick is not None:
        pick = {name: pick.get(name) for name in SPECIALISED_PICK_FIELDS}
        if isinstance(pick["latency_ms"], (int, float)) and specialisation.target_latency_ms:
            pick["latency_ratio"] = pick["latency_ms"] / specialisation.target_latency_ms
        trained = [t.test_accuracy for t in specialisation.run.trainings
                   if t.arch_hash == pick["arch_hash"] and t.status == "finished"
                   and t.test_accuracy is not None]
        pick["test_accuracy"] = max(trained) if trained else None
    d.update(pick=pick, device=_device_label(specialisation), message=public_text(
        specialisation.message), error=public_text(specialisation.error),
        created_at=iso(specialisation.created_at), finished_at=iso(specialisation.finished_at))
    return d


def ranking_check_dict(check: RankingCheck) -> dict:
    """A ranking check: each architecture's shared-weight and (once retrained) test accuracy,
    Kendall's tau between the two over those retrained with its p-value, where the pick stands
    by each, and what the retrainings cost."""
    run = check.run
    numbers = sample_numbers(run.id)
    pick = run.best_sample.arch_hash if run.best_sample is not None else None
    points = []
    for training in check.trainings:
        sample = db.session.get(Sample, training.sample_id) if training.sample_id else None
        points.append({
            "training_id": training.id, "status": training.status,
            "number": numbers.get(training.sample_id), "arch_hash": training.arch_hash,
            "shared_weight_accuracy": sample.accuracy if sample else None,
            "latency_ms": sample.latency_ms if sample else None,
            "test_accuracy": training.test_accuracy if training.status == "finished" else None,
            "train_time_s": training.train_time_s, "pick": training.arch_hash == pick})
    done = [p for p in points if p["test_accuracy"] is not None
            and p["shared_weight_accuracy"] is not None]
    tau, p_value = agreement([p["shared_weight_accuracy"] for p in done],
                             [p["test_accuracy"] for p in done])
    return {"id": check.id, "run_id": check.run_id, "architectures": check.architectures,
            "epochs": check.epochs, "seed": check.seed, "created_at": iso(check.created_at),
            "active": any(t.active for t in check.trainings), "points": points,
            "retrained": len(done), "kendall_tau": tau, "p_value": p_value,
            "pick_rank": _rank_of_pick(done, "test_accuracy"),
            "pick_shared_rank": _rank_of_pick(done, "shared_weight_accuracy"),
            "train_time_s": sum(p["train_time_s"] or 0.0 for p in done)}


def _rank_of_pick(points, key) -> int | None:
    """1 for the most accurate of ``points`` by ``key``; None when the pick is not among them."""
    pick = next((p for p in points if p["pick"]), None)
    return None if pick is None else 1 + sum(p[key] > pick[key] for p in points)


def resumable(run: Run) -> bool:
    """Can the run be queued again: from its checkpoint, or afresh when its worker never began
    (cancelled while queued, or it could not start): there is nothing to lose."""
    if run.status not in RESUMABLE or not run.run_dir:
        return False
    files = RunDirectory(run.run_dir)
    return files.resumable or not files.exists(CONFIG)


def _public_config(config: dict | None) -> dict | None:
    if not config or not config.get("data_dir"):
        return config
    return dict(config, data_dir=public_path(config["data_dir"], dataset_roots()))


def _device_label(row: Run | Specialisation) -> str | None:
    if row.group is not None:
        return "group " + row.group.name
    if row.device is not None:
        return row.device.name
    if isinstance(row, Specialisation):
        return None  # its device was deleted
    return (row.resolved_data or {}).get("device") or (row.config_data or {}).get("device")


# what the pick's rule (search_core.best) reads of a stored sample
PICK_FIELDS = ("id", "arch_hash", "accuracy", "latency_ms", "objective", "feasible", "uses_budget")


def pick_fields(sample: Sample | None) -> dict | None:
    return None if sample is None else {name: getattr(sample, name) for name in PICK_FIELDS}


def pick_explanation(run: Run) -> dict | None:
    """Why the run's best is the pick: search_core.best.explain over its stored samples."""
    if run.best_sample is None:
        return None
    columns = [getattr(Sample, name) for name in PICK_FIELDS]
    rows = db.session.execute(sa.select(*columns).where(Sample.run_id == run.id).order_by(Sample.id))
    samples = [row._asdict() for row in rows]
    return explain(samples, pick_fields(run.best_sample), run.val_size,
                   (run.config_data or {}).get("constraint") or "absolute")


def run_dict(run: Run, full=False) -> dict:
    best = run.best_sample
    d = {
        "id": run.id, "name": run.name, "status": run.status, "epoch": run.epoch,
        "epochs": run.epochs, "phase": run.phase, "device_id": run.device_id,
        "group_id": run.group_id, "device": _device_label(run),
        "created_at": iso(run.created_at), "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at), "error": public_text(run.error),
        "queue_position": queue_position(run), "node": run.node,
        "retries": run.retries_data or [],
        "best": None if best is None else {
            "id": best.id, "number": sample_number(best), "arch_hash": best.arch_hash,
            "accuracy": best.accuracy, "latency_ms": best.latency_ms, "objective": best.objective,
            "ops": best.ops_data},
    }
    if full:
        count = db.session.scalar(sa.select(sa.func.count(Sample.id)).where(Sample.run_id == run.id))
        d.update(config=_public_config(run.config_data), resolved=run.resolved_data or {},
                 run_dir=public_path(run.run_dir, [os.path.realpath(current_app.config["DATA_DIR"])]),
                 resumable=resumable(run),
                 samples=count, space_blocks=run.space_data, progress=run.progress_data,
                 message=public_text(run.message), reference=public_reference(run.reference_data),
                 why=pick_explanation(run))
    return d


def device_lut_dict(lut: DeviceLut) -> dict:
    """A stored table's setting and its calibration fit (measured = a x table + b) and errors."""
    return {"id": lut.id, "device_key": lut.device_key, "resolution": lut.resolution,
            "width_mult": lut.width_mult, "num_classes": lut.num_classes,
            "in_channels": lut.in_channels, "profiled_at": iso(lut.profiled_at),
            "run_id": lut.run_id, "calibration": lut.calibration,
            "backend": backend_of(lut.device_key)}


def device_dict(device: Device, activity: str | None = None) -> dict:
    """``activity`` ('checking', 'profiling') overrides the stored status while it lasts.
    The token never leaves the server."""
    return {
        "id": device.id, "name": device.name, "kind": device.kind, "host": device.host,
        "port": device.port, "status": activity or device.status, "info": device.info_data or {},
        "error": device.error, "checked_at": iso(device.checked_at), "created_at": iso(device.created_at),
        "luts": [device_lut_dict(lut) for lut in device.luts], "group_id": device.group_id,
    }


def group_dict(group: DeviceGroup) -> dict:
    return {"id": group.id, "name": group.name, "device_ids": [d.id for d in group.devices],
            "created_at": iso(group.created_at)}
