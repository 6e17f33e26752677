"""Retraining workers: an architecture of a run trained from scratch on the run's data, as its own
process (``python -m search_core train ... --events jsonl``), followed like a search.

Each training has a directory under its run's (``trainings/<id>``) that holds the architecture, the
run's settings it trains with, the worker's log, and what it leaves for deployment: the trained
state_dict (``weights.pt``) and its ONNX export (``model.onnx``). ``on_event(training)`` hears each
change once it is stored; the Socket.IO layer hooks in there.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

from search_core.config import TRAIN_SETTINGS

from .extensions import db
from .models import ONNX_FILE, WEIGHTS_FILE, Training, take_queued, utcnow
from .executors import worker_resources
from .runner import TERMINATE_GRACE_S, WORKER_LOG

log = logging.getLogger(__name__)

ARCH_FILE = "arch.json"
SETTINGS_FILE = "settings.json"  # its run's settings (search_core's train --config)


def train_command(training: Training):
    """The worker command: the run's settings from the training's settings file (its dataset,
    split, threads and training path: search_core's `train --config`), the training's epochs and
    seed."""
    directory = training.directory
    return [sys.executable, "-m", "search_core", "train", os.path.join(directory, ARCH_FILE),
            "--config", os.path.join(directory, SETTINGS_FILE), "--epochs", str(training.epochs),
            "--seed", str(training.seed), "--save", os.path.join(directory, WEIGHTS_FILE),
            "--onnx", os.path.join(directory, ONNX_FILE), "--events", "jsonl"]


def write_training_files(training: Training, config: dict):
    """The training's directory: the architecture, and the settings of its run that it trains
    with."""
    os.makedirs(training.directory, exist_ok=True)
    with open(os.path.join(training.directory, ARCH_FILE), "w") as f:
        f.write(training.arch_json)
    with open(os.path.join(training.directory, SETTINGS_FILE), "w") as f:
        json.dump(dict((k, config[k]) for k in TRAIN_SETTINGS + ("seed",) if k in config), f)


class TrainingManager:
    """Owns the training workers of one app (``app.extensions["trainings"]``)."""

    def __init__(self, app, executor, on_event=None, on_slot_free=None):
        self.app = app
        self.executor = executor
        self.on_event = on_event
        self.on_slot_free = on_slot_free  # a worker slot is free again: the queue's next may start
        self._lock = threading.Lock()
        self._workers: dict[int, subprocess.Popen] = {}
        self._cancelled: set[int] = set()
        self._threads: dict[int, threading.Thread] = {}
        self._holding: set[int] = set()  # trainings that hold one of MAX_RUNS's worker slots

    def running(self) -> int:
        """The worker slots retrainings hold (their workers run, or are being placed)."""
        with self._lock:
            return len(self._holding)

    def start(self, training: Training):
        """Start the worker of a queued training (its run's directory and settings) from a thread
        of its own: a Ray executor may wait for a node with room. The runs' scheduler calls it
        when a slot is free (RunManager: searches and retrainings share MAX_RUNS). The training is
        claimed (queued -> running in one UPDATE) and its thread registered under the lock that
        cancel() takes: a cancel lands before the claim, or finds the thread. Call in an app
        context."""
        with self._lock:
            if not take_queued(Training, training.id, status="running"):
                return
            db.session.refresh(training)
            training.directory = os.path.join(training.run.run_dir, "trainings", str(training.id))
            config = training.run.config_data
            write_training_files(training, config)
            db.session.commit()
            thread = threading.Thread(
                target=self._run, name="training-{}".format(training.id), daemon=True,
                args=(training.id, train_command(training),
                      os.path.join(training.directory, WORKER_LOG), worker_resources(config)))
            self._threads[training.id] = thread
            self._holding.add(training.id)
            thread.start()

    def _run(self, training_id: int, cmd, log_path: str, resources: dict):
        try:
            with self.app.app_context():
                self._launch_and_follow(training_id, cmd, log_path, resources)
        finally:
            with self._lock:
                self._holding.discard(training_id)
            if self.on_slot_free is not None:
                self.on_slot_free()

    def _launch_and_follow(self, training_id: int, cmd, log_path: str, resources: dict):
        try:
            process = self.executor.launch(cmd, log_path, resources=resources)
        except Exception as e:  # noqa: BLE001  e.g. no Ray node could take it
            log.warning("training %s: its worker did not start: %s", training_id, e)
            self._stored_end(training_id, "failed", "could not start: {}".format(e))
            return
        with self._lock:
            self._workers[training_id] = process
            cancelled = training_id in self._cancelled
        if cancelled:  # while its worker was being placed
            process.kill()
        training = db.session.get(Training, training_id)
        if training is not None and not cancelled:
            training.pid = process.pid
            training.node = getattr(process, "node", None)
            db.session.commit()
            self._publish(training)
        self._follow(training_id, process)

    def _follow(self, training_id: int, process: subprocess.Popen):
        try:
            for line in process.stdout:
                self._apply_line(training_id, line)
        except Exception:  # noqa: BLE001  a broken store must not leave it 'running'
            log.exception("training %s: reading the worker's events failed", training_id)
            db.session.rollback()
        returncode = process.wait()
        try:
            self._on_exit(training_id, returncode, getattr(process, "lost", None))
        finally:
            with self._lock:
                self._workers.pop(training_id, None)
                self._cancelled.discard(training_id)

    def _apply_line(self, training_id: int, line: str):
        try:
            event = json.loads(line)
            kind = event["event"]
        except (ValueError, KeyError, TypeError):
            log.warning("training %s: skipping a line that is not an event: %.200s", training_id, line)
            return
        training = db.session.get(Training, training_id)
        if training is None or kind == "heartbeat":
            return
        if kind == "training_started":
            training.status = "running"
            training.epoch = 0
        elif kind == "training_epoch":
            training.epoch = event.get("epoch")
            training.loss = event.get("loss")
        elif kind == "trained":
            training.val_accuracy = event.get("val_accuracy")
            training.test_accuracy = event.get("test_accuracy")
            training.train_time_s = event.get("train_time_s")
            training.status = "finished"
            training.finished_at = utcnow()
        elif kind == "failed":
            self._end(training, "failed", event.get("error") or "the worker failed")
        else:
            return
        db.session.commit()
        self._publish(training)

    def _stored_end(self, training_id: int, status: str, error: str | None):
        training = db.session.get(Training, training_id)
        if training is not None:
            self._end(training, status, error)
            db.session.commit()
            self._publish(training)

    def _end(self, training: Training, status: str, error: str | None):
        with self._lock:
            cancelled = training.id in self._cancelled
        training.status = "cancelled" if cancelled else status
        training.error = None if cancelled else error
        training.finished_at = training.finished_at or utcnow()
        training.pid = None

    def _on_exit(self, training_id: int, returncode: int, lost: str | None = None):
        training = db.session.get(Training, training_id)
        if training is None:
            return
        training.pid = None
        if training.active and lost:
            self._end(training, "failed", "its worker's node was lost ({}): start it again".format(
                lost))
        elif training.active:
            self._end(training, "failed", "the worker exited with code {} without finishing (see "
                      "{})".format(returncode, WORKER_LOG))
        db.session.commit()
        self._publish(training)

    def _publish(self, training: Training):
        if self.on_event is not None:
            try:
                self.on_event(training)
            except Exception:  # noqa: BLE001
                log.exception("training %s: on_event callback failed", training.id)

    def cancel(self, training_id: int, grace_s: float = TERMINATE_GRACE_S):
        """Stop the training's worker and wait until its end is stored; a queued one leaves the
        queue (under the lock start() claims with: it is never started after). Call in an app
        context."""
        with self._lock:
            dequeued = take_queued(Training, training_id, status="cancelled",
                                   finished_at=utcnow())
            process = self._workers.get(training_id)
            thread = self._threads.get(training_id)
            if thread is not None and thread.is_alive():  # its worker, or one being placed
                self._cancelled.add(training_id)
        if process is not None:
            process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if thread is not None and thread is not threading.current_thread():
                thread.join(grace_s + 5)
        db.session.expire_all()
        training = db.session.get(Training, training_id)
        if training is not None and training.active:
            self._end(training, "cancelled", None)
            db.session.commit()
            self._publish(training)
        elif training is not None and dequeued:
            self._publish(training)

    def wait(self, training_id: int, timeout: float | None = None) -> bool:
        with self._lock:
            thread = self._threads.get(training_id)
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def mark_interrupted(self):
        """Trainings left active by an earlier dashboard process: their workers wrote to a pipe
        nobody reads any more (they die on their next write); start them again to retrain."""
        with self._lock:
            live = set(self._workers)
        stale = db.session.scalars(db.select(Training).where(  # the queued wait on
            Training.status == "running")).all()
        for training in stale:
            if training.id not in live:
                training.status = "interrupted"
                training.pid = None
                training.error = "the dashboard restarted while this training ran"
        if stale:
            db.session.commit()

    def shutdown(self, grace_s: float = TERMINATE_GRACE_S):
        with self._lock:
            ids = [i for i, thread in self._threads.items() if thread.is_alive()]
        for training_id in ids:
            self.cancel(training_id, grace_s)
