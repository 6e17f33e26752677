"""A retraining's worker: an architecture of a run trained from scratch on the run's data
(``python -m search_core train ... --events jsonl``), its events turned into the training's row.

Each training has a directory under its run's (search_core/rundir.py: ``trainings/<id>``) that
holds the architecture, the run's settings it trains with, the worker's log, and what it leaves
for deployment: the trained state_dict and its ONNX export.
"""
from __future__ import annotations

import json
import os
import sys

from search_core.settings import TRAIN_SETTINGS
from search_core.rundir import ONNX, TRAINING_ARCH, TRAINING_SETTINGS, WEIGHTS, training_directory

from ..extensions import db
from ..models import Training
from .kind import NOT_STORED, WorkerKind, end


def train_command(training: Training):
    """The worker command: the run's settings from the training's settings file (its dataset,
    split, threads and training path: search_core's `train --config`), the training's epochs and
    seed."""
    directory = training.directory
    return [sys.executable, "-m", "search_core", "train", os.path.join(directory, TRAINING_ARCH),
            "--config", os.path.join(directory, TRAINING_SETTINGS), "--epochs",
            str(training.epochs), "--seed", str(training.seed), "--save",
            os.path.join(directory, WEIGHTS), "--onnx", os.path.join(directory, ONNX),
            "--events", "jsonl"]


def write_training_files(training: Training, config: dict):
    """The training's directory: the architecture, and the settings of its run that it trains
    with."""
    os.makedirs(training.directory, exist_ok=True)
    with open(os.path.join(training.directory, TRAINING_ARCH), "w") as f:
        f.write(training.arch_json)
    with open(os.path.join(training.directory, TRAINING_SETTINGS), "w") as f:
        json.dump(dict((k, config[k]) for k in TRAIN_SETTINGS + ("seed",) if k in config), f)


class TrainingWorkers(WorkerKind):
    """Retrainings: ``on_event(training, event, stored)`` hears each change once it is stored."""

    model = Training
    name = "training"
    _PASSED_ON = ("queued", "launched", "exited", "training_started", "training_epoch", "trained",
                  "failed")

    def prepare(self, training):
        training.directory = training_directory(training.run.run_dir, training.id)
        write_training_files(training, self.settings(training))
        db.session.commit()
        return train_command(training), None

    def interrupted(self, training, orphan):
        training.error = "the dashboard restarted while this training ran"

    def publish(self, training, event, stored=None):
        if event["event"] in self._PASSED_ON:
            super().publish(training, event, stored)

    def _on_started(self, training, event, worker):
        training.status = "running"
        training.epoch = 0

    def _on_epoch(self, training, event, worker):
        training.epoch = event.get("epoch")
        training.loss = event.get("loss")

    def _on_trained(self, training, event, worker):
        training.val_accuracy = event.get("val_accuracy")
        training.test_accuracy = event.get("test_accuracy")
        training.train_time_s = event.get("train_time_s")
        end(training, "finished")

    handlers = {"training_started": _on_started, "training_epoch": _on_epoch,
                "trained": _on_trained, "failed": WorkerKind.on_failed,
                "heartbeat": lambda kind, training, event, worker: NOT_STORED}
