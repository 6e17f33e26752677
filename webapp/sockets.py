"""Socket.IO: the dashboard pushes what happens instead of the browser polling for it.

A client connects with the dashboard's session cookie, ``auth={"token": ...}`` or an
``Authorization: Bearer`` header (webapp/auth.py), then emits ``subscribe`` with
``{"run_id": N}`` to join the run's room (``unsubscribe`` to leave); the server emits
``run_progress``, ``sample``, ``run_epoch``, ``run_message``, ``run_reference``, ``run_status``
and ``training`` (a retraining of one of its architectures) there, and ``device_status`` to
everyone. The payloads are in docs/dashboard.md.

The async mode is ``threading`` by default: the web process only reads pipes, writes SQLite and
pushes events, which plain OS threads do well, and eventlet's maintainers discourage new use of it.
``eventlet`` works too (``python -m webapp --async-mode eventlet``): the training runs in worker
processes, so nothing CPU-bound ever runs on its hub.
"""
from __future__ import annotations

import logging
import threading

from flask_socketio import ConnectionRefusedError, join_room, leave_room

from .auth import check_socket
from .extensions import db, socketio
from .ids import is_id
from .models import EpochMetric, Run, Sample, stored_front
from .pareto import update_front
from .serialize import (metric_dict, public_reference, public_text, reference_dict, run_dict,
                        sample_dict, training_dict)

log = logging.getLogger(__name__)


# worker events that change what a run looks like in the runs list
_STATUS_EVENTS = ("queued", "launched", "started", "finished", "failed", "exited")
_PROGRESS_FIELDS = ("phase", "epoch", "epochs", "step", "steps", "loss", "accuracy",
                    "expected_latency_ms", "fraction", "eta_s", "device_wait")


def room(run_id: int) -> str:
    return "run:{}".format(run_id)


def _run_id(data):
    value = data.get("run_id") if isinstance(data, dict) else None
    return value if is_id(value) else None


@socketio.on("connect")
def connect(auth=None):
    """The same guard as HTTP's: a known Host, then the session cookie or the token."""
    refused = check_socket(auth)
    if refused:
        raise ConnectionRefusedError(refused)


@socketio.on("subscribe")
def subscribe(data=None):  # None: sent without a payload
    run_id = _run_id(data)
    if run_id is None:
        return {"ok": False, "error": 'subscribe needs {"run_id": <a run id, a positive integer>}'}
    if db.session.get(Run, run_id) is None:
        return {"ok": False, "error": "no run {}".format(run_id)}
    join_room(room(run_id))
    return {"ok": True}


@socketio.on("unsubscribe")
def unsubscribe(data=None):
    run_id = _run_id(data)
    if run_id is None:
        return {"ok": False, "error": 'unsubscribe needs {"run_id": <a run id, a positive integer>}'}
    leave_room(room(run_id))
    return {"ok": True}


def emit_device(device_payload: dict):
    socketio.emit("device_status", {"device": device_payload})


def emit_training(training):
    """A retraining's change (TrainingManager's ``on_event``), to its run's room."""
    socketio.emit("training", {"run_id": training.run_id, "training": training_dict(training)},
                  to=room(training.run_id))


class RunPublisher:
    """Turns each stored worker event into its Socket.IO event (RunManager's ``on_event``).

    Keeps every followed run's Pareto front in memory, so that a new sample costs a merge, not a
    recomputation, and only the ids that joined or left the front are sent.
    """

    def __init__(self):
        self._fronts: dict[int, list] = {}
        self._lock = threading.Lock()

    def __call__(self, run_id: int, event: dict, stored=None):
        kind = event["event"]
        to = room(run_id)
        # every payload carries the run and the worker's time of the event (Unix seconds)
        head = {"run_id": run_id, "time": event.get("time")}
        if kind in ("progress", "device_wait"):  # the runner merged the wait into the progress
            payload = {name: event.get(name) for name in _PROGRESS_FIELDS}
            socketio.emit("run_progress", dict(payload, **head), to=to)
        elif kind == "sample" and isinstance(stored, Sample):
            added, removed = self._update_front(run_id, stored)
            socketio.emit("sample", dict(head, sample=sample_dict(stored),
                                         pareto={"added": added, "removed": removed}), to=to)
        elif kind == "epoch" and isinstance(stored, EpochMetric):
            socketio.emit("run_epoch", dict(head, metric=metric_dict(stored)), to=to)
        elif kind == "reference":
            socketio.emit("run_reference", dict(head, reference=public_reference(
                reference_dict(event))), to=to)
        elif kind == "message":
            socketio.emit("run_message", dict(head, text=public_text(event.get("text"))), to=to)
        if kind == "started":  # a resumed run dropped its unfinished epoch's samples
            with self._lock:
                self._fronts.pop(run_id, None)
        if kind in _STATUS_EVENTS:
            run = db.session.get(Run, run_id)
            if run is not None:
                socketio.emit("run_status", dict(head, run=run_dict(run, full=True)), to=to)

    def _update_front(self, run_id, sample):
        point = (sample.id, sample.latency_ms, sample.accuracy)
        with self._lock:
            front = self._fronts.get(run_id)
            if front is None:  # first sample seen by this process: start from the stored ones
                front = stored_front(run_id, exclude_id=sample.id)
            front, added, removed = update_front(front, [point])
            self._fronts[run_id] = front
        return added, removed

    def forget(self, run_id: int):
        with self._lock:
            self._fronts.pop(run_id, None)
