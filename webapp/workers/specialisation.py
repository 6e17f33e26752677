"""A specialisation's worker: a finished run's trained supernet searched again, training nothing,
for new targets on a device or runtime (``python -m search_core specialise RUN --config ...
--events jsonl``), its events turned into the specialisation's row and its pick.

Its directory (search_core/rundir.py: ``specialisations/<id>`` under its run's) holds the settings
it specialises for and what the worker writes: a search's files, without a checkpoint.
"""
from __future__ import annotations

import os
import sys

from search_core.rundir import (BEST_ARCH, SPECIALISATION_SETTINGS, write_json,
                                specialisation_directory)

from ..extensions import db
from ..models import Specialisation
from .kind import NOT_STORED, WorkerKind, end, keep_lut


def specialise_command(specialisation: Specialisation):
    directory = specialisation.directory
    return [sys.executable, "-m", "search_core", "specialise", specialisation.run.run_dir,
            "--config", os.path.join(directory, SPECIALISATION_SETTINGS), "--out", directory,
            "--generations", str(specialisation.generations), "--events", "jsonl"]


def pick_file(specialisation: Specialisation) -> str | None:
    """The pick's architecture file, once the worker wrote it."""
    if specialisation.status != "finished" or not specialisation.directory:
        return None
    path = os.path.join(specialisation.directory, BEST_ARCH)
    return path if os.path.isfile(path) else None


class SpecialisationWorkers(WorkerKind):
    """Specialisations: ``on_event(specialisation, event, stored)`` hears each change once it is
    stored."""

    model = Specialisation
    name = "specialisation"
    _PASSED_ON = ("queued", "launched", "exited", "started", "generation", "message",
                  "device_wait", "finished", "failed")

    def prepare(self, specialisation):
        """Its settings file: the new targets and runtime, and its device's current address."""
        address, token = self.measuring_address(specialisation)
        specialisation.directory = specialisation_directory(specialisation.run.run_dir,
                                                            specialisation.id)
        os.makedirs(specialisation.directory, exist_ok=True)
        settings = {"target_memory_mb": specialisation.target_memory_mb,
                    "backend": specialisation.backend}
        if specialisation.target_latency_ms is None:  # the new table's automatic T
            settings["target_latency_fraction"] = specialisation.target_latency_fraction
        else:
            settings["target_latency_ms"] = specialisation.target_latency_ms
        if address:
            settings["device"] = address
        write_json(os.path.join(specialisation.directory, SPECIALISATION_SETTINGS), settings)
        db.session.commit()
        return specialise_command(specialisation), token

    def launched(self, specialisation):
        specialisation.message = None

    def interrupted(self, specialisation, orphan):
        specialisation.error = "the dashboard restarted while this specialisation ran"

    def publish(self, specialisation, event, stored=None):
        if event["event"] in self._PASSED_ON:
            super().publish(specialisation, event, stored)

    def _on_started(self, specialisation, event, worker):
        specialisation.status = "running"
        specialisation.generation = 0
        resolved = (event.get("config") or {}).get("target_latency_ms")
        if specialisation.target_latency_ms is None and isinstance(resolved, (int, float)):
            specialisation.target_latency_ms = resolved  # the automatic T of its table

    def _on_generation(self, specialisation, event, worker):
        if isinstance(event.get("generation"), int):
            specialisation.generation = event["generation"] + 1

    def _on_message(self, specialisation, event, worker):
        specialisation.message = str(event.get("text"))[:2000]

    def _on_device_wait(self, specialisation, event, worker):
        specialisation.message = "Waiting for the device: {}".format(event.get("error")) \
            if event.get("waiting") else None

    def _on_lut(self, specialisation, event, worker):
        return keep_lut(specialisation, event, specialisation.run_id)

    def _on_finished(self, specialisation, event, worker):
        best = event.get("best")
        specialisation.pick_data = best if isinstance(best, dict) else None
        specialisation.generation = specialisation.generations
        specialisation.message = None
        end(specialisation, "finished")

    handlers = {"started": _on_started, "generation": _on_generation, "message": _on_message,
                "device_wait": _on_device_wait, "lut": _on_lut, "finished": _on_finished,
                "failed": WorkerKind.on_failed,
                "heartbeat": lambda kind, row, event, worker: NOT_STORED}
