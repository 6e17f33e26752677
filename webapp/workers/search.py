"""A search's worker: ``python -m search_core search --config ... --events jsonl`` (or ``resume``),
its events (docs/events.md) turned into the run's rows: samples, epoch metrics, progress.

The device's token reaches the worker through its environment (NANO_AGENT_TOKEN), never through a
file in the run directory. A run whose worker was lost with its Ray node resumes from its
checkpoint by itself, first in line, at most MAX_RETRIES times.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

import sqlalchemy as sa

from search_core.best import better
from search_core.measurements import LatencyCache
from search_core.rundir import (CONFIG, LATENCY_CACHE, REQUESTED_SETTINGS, STORED_LUTS,
                                RunDirectory)

from ..eta import Pace
from ..extensions import db
from ..measurement_store import load_measurements, save_measurements, stored_luts
from ..models import EpochMetric, Run, Sample, queued_runs, utcnow
from ..serialize import pick_fields, reference_dict
from .kind import NOT_STORED, WorkerKind, end, keep_lut
from .orphans import stop_orphan

log = logging.getLogger(__name__)

PROGRESS_COMMIT_S = 0.5
MAX_RETRIES = 3  # a run whose worker was lost (its Ray node died) resumes by itself this often

_SAMPLE_COLUMNS = {
    "predicted_latency_ms": "predicted_latency_ms", "memory_mb": "memory_mb", "params": "params",
    "macs": "macs", "objective": "objective", "uses_budget": "uses_budget",
}
_LATENCY_COLUMNS = {"median_ms": "latency_median_ms", "mean_ms": "latency_mean_ms",
                    "std_ms": "latency_std_ms", "p90_ms": "latency_p90_ms",
                    "min_ms": "latency_min_ms"}


def search_command(run_dir: str):
    """The worker command of a new run: every setting comes from the run's settings file."""
    return [sys.executable, "-m", "search_core", "search", "--config",
            os.path.join(run_dir, REQUESTED_SETTINGS), "--out", run_dir, "--events", "jsonl"]


def resume_command(run_dir: str, device: str | None = None):
    cmd = [sys.executable, "-m", "search_core", "resume", run_dir, "--events", "jsonl"]
    return cmd + ["--device", device] if device else cmd


def resolved_settings(requested: dict | None, used: dict, before: dict | None) -> dict:
    """What a worker made of the requested settings: each setting it used with another value
    (an automatic T computed, the device's address), over what an earlier start resolved."""
    requested = requested or {}
    return dict(before or {}, **{name: value for name, value in used.items()
                                 if name in requested and requested[name] != value})


def _better(sample: Sample, best: Sample | None, constraint: str | None) -> bool:
    """Does ``sample`` beat the run's best so far? The search's own rule (search_core.best)."""
    return better(pick_fields(sample), pick_fields(best), constraint or "absolute")


def _progress_estimate(event: dict, worker) -> dict:
    """How much of the whole run is done, and the seconds left at each phase's measured pace."""
    try:
        epochs = int(event["epochs"])
        fraction = (int(event["epoch"]) + int(event["step"]) / int(event["steps"])) / epochs
        eta = worker.pace.progress(event) if worker is not None and worker.pace else None
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return {"fraction": None, "eta_s": None}
    return {"fraction": round(min(max(fraction, 0.0), 1.0), 4), "eta_s": eta}


def _pace(run: Run, started: dict) -> Pace | None:
    """A pace for a worker that started, seeded with the epochs its run already did (resume)."""
    done = db.session.execute(sa.select(EpochMetric.phase, EpochMetric.duration_s).where(
        EpochMetric.run_id == run.id).order_by(EpochMetric.epoch)).all()
    try:
        return Pace(started, [tuple(row) for row in done])
    except (KeyError, TypeError, ValueError):
        return None


class SearchWorkers(WorkerKind):
    """Searches: ``on_event(run, event, stored)`` hears each event once stored, with the row it
    stored (a Sample for ``sample``, an EpochMetric for ``epoch``); the Socket.IO layer hooks in
    there."""

    model = Run
    name = "run"

    def queued(self):
        return queued_runs()

    def queued_at(self, run):
        return run.queued_at

    def settings(self, run):
        return run.config_data or {}

    def directory(self, run):
        return run.run_dir

    def requeue(self, run):
        run.queued_at = utcnow()
        run.progress = run.message = None
        run.retries = None  # the automatic resumes of this start

    def prepare(self, run):
        """A search, or a resume when the directory already holds one, on the current address
        of its device."""
        address, token = self.measuring_address(run)
        files = RunDirectory(run.run_dir)
        if files.exists(CONFIG):
            self._restore_samples(run)
            return resume_command(run.run_dir, address), token
        files.create()
        config = run.config_data
        files.write_json(REQUESTED_SETTINGS, dict(config, device=address) if address else config)
        load_measurements(LatencyCache(files.path(LATENCY_CACHE)))
        if run.device_id is not None:  # the device's calibrated tables: no profiling again
            files.write_json(STORED_LUTS, stored_luts(run.device_id, config["resolution"],
                                                      config["width_mult"]))
        return search_command(run.run_dir), token

    def _restore_samples(self, run: Run):
        """Store again the samples of ``run``'s directory that the database no longer holds: the
        directory is the run's record (a database that lost its WAL lost the rows written since
        its last checkpoint)."""
        restored = 0
        for event in RunDirectory(run.run_dir).samples():
            try:
                restored += self._on_sample(run, event, None) is not None
            except (KeyError, TypeError, ValueError):  # a line no worker wrote: not a sample
                continue
        if restored:
            db.session.commit()
            log.warning("run %s: %d samples of its directory restored to the database", run.id,
                        restored)

    def launched(self, run):
        run.phase = None  # it comes with the 'started' event
        run.progress = run.message = None

    def before_exit(self, run):
        """The run's measurements go to the shared latency cache (webapp/measurement_store.py)."""
        try:
            path = os.path.join(run.run_dir or "", LATENCY_CACHE)
            if os.path.exists(path):
                save_measurements(LatencyCache(path))
        except Exception:  # noqa: BLE001  the run's own end matters more than the shared cache
            db.session.rollback()
            log.exception("run %s: storing its measurements in the latency cache failed", run.id)

    def lost(self, run, lost):
        """Its worker's node died, or stopped answering: the run resumes from its last checkpoint,
        first in line, at most MAX_RETRIES times, each retry recorded on the run."""
        stop_orphan(run.run_dir)  # never two writers: the old worker may still be ending
        retries = run.retries_data or []
        where = run.node or "its node"
        if len(retries) >= MAX_RETRIES:
            end(run, "failed", "its worker was lost {} times, the last on {} ({}); resume it when "
                "the cluster is whole again".format(len(retries) + 1, where, lost))
            return
        run.retries_data = retries + [{"time": utcnow().isoformat(), "node": run.node,
                                       "error": lost}]
        run.status = "queued"  # its queued_at is kept: first in line
        run.message = "Its worker on {} was lost ({}): resuming from the last checkpoint (retry " \
            "{} of {}).".format(where, lost, len(retries) + 1, MAX_RETRIES)

    def interrupted(self, run, orphan):
        if orphan:
            run.message = ("The dashboard restarted while worker {} ran this search; it was "
                           "stopped. Resume continues from the last finished epoch."
                           .format(orphan))

    # --- the events (docs/events.md) --------------------------------------------------------------

    def _on_started(self, run, event, worker):
        start_epoch = int(event.get("start_epoch") or 0)
        # on resume the worker drops the samples of an epoch that did not finish: so do we
        db.session.execute(sa.delete(Sample).where(Sample.run_id == run.id,
                                                   Sample.epoch >= start_epoch))
        db.session.execute(sa.delete(EpochMetric).where(EpochMetric.run_id == run.id,
                                                        EpochMetric.epoch >= start_epoch))
        run.status = "running"
        run.epochs = event.get("epochs", run.epochs)
        run.epoch = start_epoch
        run.started_at = run.started_at or utcnow()
        if isinstance(event.get("config"), dict):  # the automatic T, the device's address
            run.resolved_data = resolved_settings(run.config_data, event["config"],
                                                  run.resolved_data)
        if isinstance(event.get("space"), dict):
            run.space_data = event["space"].get("blocks")
        if isinstance(event.get("val_size"), int):
            run.val_size = event["val_size"]
        if worker is not None:
            worker.pace = _pace(run, event)

    def _on_progress(self, run, event, worker):
        """Stored at most every PROGRESS_COMMIT_S, always passed on with ``fraction`` (of the
        whole run) and ``eta_s``."""
        event.update(_progress_estimate(event, worker))
        if worker is not None:
            now = time.monotonic()
            if now - worker.last_progress_commit < PROGRESS_COMMIT_S:
                return NOT_STORED
            worker.last_progress_commit = now
        run.epoch = event.get("epoch", run.epoch)
        run.epochs = event.get("epochs", run.epochs)
        run.phase = event.get("phase", run.phase)
        run.progress_data = {k: v for k, v in event.items() if k not in ("event", "time")}

    def _on_reference(self, run, event, worker):
        run.reference_data = reference_dict(event)

    def _on_heartbeat(self, run, event, worker):
        return NOT_STORED  # its arrival is what counts (worker.last_line)

    def _on_device_wait(self, run, event, worker):
        """The device stopped answering, or is back: the run's progress carries the wait (until
        the next progress event replaces it), passed on like a progress event."""
        wait = None
        if event.get("waiting"):
            wait = {k: event.get(k) for k in ("error", "waited_s", "limit_s")}
            numbers = [event.get("time"), wait["waited_s"]]
            if all(isinstance(x, (int, float)) for x in numbers):  # when it stopped answering
                wait["since"] = round(numbers[0] - numbers[1], 3)
        progress = dict(run.progress_data or {}, device_wait=wait)
        run.progress_data = progress
        event.update({k: v for k, v in progress.items() if k not in ("event", "time")})

    def _on_pool(self, run, event, worker):
        """A pool's figures: each member's measurements, losses and busy seconds, and the queue,
        kept by the device registry for the Devices page (by the member's address)."""
        if run.group is None or not isinstance(event.get("members"), list):
            return NOT_STORED
        registry = self.app.extensions["devices"]
        by_address = {"{}:{}".format(d.host, d.port): d for d in run.group.devices}
        for member in event["members"]:
            device = by_address.get(member.get("address")) if isinstance(member, dict) else None
            if device is not None:
                registry.set_pool_figures(device, dict(member, run_id=run.id,
                                                       pending=event.get("pending"),
                                                       time=event.get("time")))
        return NOT_STORED

    def _on_message(self, run, event, worker):
        run.message = str(event.get("text"))[:2000]

    def _on_lut(self, run, event, worker):
        return keep_lut(run, event, run.id)

    def _on_sample(self, run, event, worker):
        stored = self._store_sample(run.id, event)
        if stored is not None and _better(stored, run.best_sample,
                                          (run.config_data or {}).get("constraint")):
            db.session.flush()
            run.best_sample_id = stored.id  # the best so far; the worker's final word at the end
        return stored

    def _on_epoch(self, run, event, worker):
        if worker is not None and worker.pace is not None:
            try:
                worker.pace.epoch(event)
            except (KeyError, TypeError, ValueError):
                pass  # a malformed event: the estimate goes on without it
        stored = self._store_epoch(run.id, event)
        run.epoch = event.get("epoch", run.epoch)
        run.phase = event.get("phase", run.phase)
        return stored

    def _on_finished(self, run, event, worker):
        best = event.get("best") or {}
        sample = None
        if best.get("arch_hash"):
            sample = db.session.scalars(
                sa.select(Sample).where(Sample.run_id == run.id,
                                        Sample.arch_hash == best["arch_hash"])
                .order_by(Sample.id.desc()).limit(1)).first()
        run.best_sample_id = sample.id if sample else None
        run.epoch = run.epochs - 1 if run.epochs else run.epoch
        end(run, "finished")

    handlers = {"started": _on_started, "progress": _on_progress, "message": _on_message,
                "device_wait": _on_device_wait, "heartbeat": _on_heartbeat,
                "reference": _on_reference, "pool": _on_pool,
                "lut": _on_lut, "sample": _on_sample, "epoch": _on_epoch,
                "finished": _on_finished, "failed": WorkerKind.on_failed}

    def _store_sample(self, run_id: int, event: dict):
        key = (Sample.run_id == run_id, Sample.epoch == event["epoch"],
               Sample.kind == event["kind"], Sample.arch_hash == event["arch_hash"])
        if db.session.scalar(sa.select(Sample.id).where(*key)) is not None:
            return None  # already stored (a resumed run repeats nothing, but be safe)
        latency = event.get("latency") or {}
        values = {col: event.get(name) for name, col in _SAMPLE_COLUMNS.items()}
        values.update({col: latency.get(name) for name, col in _LATENCY_COLUMNS.items()})
        sample = Sample(
            run_id=run_id, epoch=event["epoch"], kind=event["kind"], arch_hash=event["arch_hash"],
            arch_json=json.dumps(event["arch"], separators=(",", ":")),
            accuracy=event["accuracy"], latency_ms=event["latency_ms"],
            feasible=bool(event.get("feasible", True)), **values)
        sample.ops_data = event.get("ops")
        db.session.add(sample)
        return sample

    def _store_epoch(self, run_id: int, event: dict):
        metric = db.session.scalars(sa.select(EpochMetric).where(
            EpochMetric.run_id == run_id, EpochMetric.epoch == event["epoch"])).first()
        if metric is None:
            metric = EpochMetric(run_id=run_id, epoch=event["epoch"])
            db.session.add(metric)
        metric.phase = event["phase"]
        metric.train_loss = event.get("train_loss")
        metric.train_accuracy = event.get("train_accuracy")
        metric.expected_latency_ms = event.get("expected_latency_ms")
        metric.entropy = event.get("entropy")
        metric.arch_probabilities_data = event.get("arch_probabilities")
        metric.duration_s = event.get("duration_s")
        return metric
