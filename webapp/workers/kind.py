"""What a worker is, and what one kind of worker (a search, a retraining, a specialisation) adds to
the common life (lifecycle.py): its table, its command, and the handlers that turn its events into
rows."""
from __future__ import annotations

import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field

from ..eta import Pace
from ..extensions import db
from ..measurement_store import save_lut
from ..models import queued, utcnow

log = logging.getLogger(__name__)

NOT_STORED = object()  # a handler's answer for an event passed on without a commit


@dataclass
class Worker:
    kind: "WorkerKind"
    row_id: int
    thread: threading.Thread | None = None
    process: subprocess.Popen | None = None  # or an executor's handle; None while it is launched
    placed: threading.Event = field(default_factory=threading.Event)  # its launch returned
    cancel_requested: bool = False
    error: str | None = None  # the worker's own 'failed' message, even if storing it failed
    last_line: float = field(default_factory=time.monotonic)  # when the worker last said anything
    silent: bool = False  # its row says that it has been silent for too long
    last_progress_commit: float = 0.0  # (a search's progress is stored at most this often)
    pace: Pace | None = None  # (a search's measured pace of each phase, from 'started' on)


class WorkerKind:
    """One kind of worker; the defaults are a kind's that has no more to say."""

    model = None  # the table of its rows: Run, Training, Specialisation
    name = "worker"
    handlers: dict = {}  # event name -> handler(kind, row, event, worker); NOT_STORED: no commit

    def __init__(self, app, on_event=None):
        self.app = app
        self.on_event = on_event

    def queued(self):
        """Its rows waiting for a slot, first in line first."""
        return queued(self.model)

    def queued_at(self, row):
        return row.created_at

    def settings(self, row) -> dict:
        """The settings its worker runs with (what it asks of a node: webapp/executors.py): its
        run's."""
        return row.run.config_data or {}

    def directory(self, row) -> str | None:
        return row.directory

    def prepare(self, row):
        """Write what the worker reads; return its command and the device's token (or None).
        Runs in the worker's thread, after the claim; raising fails the row, saying why."""
        raise NotImplementedError

    def measuring_address(self, row):
        """``(address, token)`` of where the row measures now (a group's members are a pool:
        their addresses, one token); (None, None) where it names no device."""
        devices = row.measuring_devices
        if not devices:
            return None, None
        registry = self.app.extensions["devices"]
        return ",".join(registry.address(device) for device in devices), devices[0].token

    def requeue(self, row):
        """Its fields when it is queued (again)."""

    def launched(self, row):
        """Its fields once its worker runs."""

    def before_exit(self, row):
        """What is kept from the worker's files before its end is recorded."""

    def lost(self, row, lost: str):
        """Its worker's node died, or stopped answering."""
        end(row, "failed", "its worker's node was lost ({}): start it again".format(lost))

    def interrupted(self, row, orphan: int | None):
        """It was left running by a dashboard that stopped (``orphan``: the worker stopped)."""

    def say(self, row, text: str | None):
        """Tell the user something about the worker (its silence, the room it waits for), on its
        row's message where its table has one."""
        if "message" in self.model.__table__.columns and row.message != text:
            row.message = text
            db.session.commit()
            self.publish(row, event_now("message", text=text))

    def publish(self, row, event: dict, stored=None):
        if self.on_event is not None:
            try:
                self.on_event(row, event, stored)
            except Exception:  # noqa: BLE001
                log.exception("%s %s: on_event callback failed", self.name, row.id)

    def on_failed(self, row, event, worker):
        """The worker's own 'failed' event, the same for every kind."""
        if worker is not None:
            worker.error = event.get("error") or "the worker failed"
        cancelled = worker is not None and worker.cancel_requested
        end(row, "cancelled" if cancelled else "failed",
            None if cancelled else event.get("error") or "the worker failed")


def end(row, status: str, error: str | None = None):
    row.status = status
    row.error = error
    row.finished_at = row.finished_at or utcnow()
    row.pid = None


def event_now(name: str, **fields) -> dict:
    return dict(fields, event=name, time=round(time.time(), 3))


def keep_lut(row, event, run_id):
    """A table the worker profiled is kept for its device's next runs with that setting."""
    if not event.get("stored") and row.device_id is not None and isinstance(event.get("lut"), dict):
        save_lut(row.device_id, event["lut"], run_id)
