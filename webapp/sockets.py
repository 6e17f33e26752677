"""Socket.IO: the dashboard pushes what happens instead of the browser polling for it.

A client connects with the dashboard's session cookie, ``auth={"token": ...}`` or an
``Authorization: Bearer`` header (webapp/auth.py), then emits ``subscribe`` with
``{"run_id": N}`` to join the run's room (``unsubscribe`` to leave); the server emits
``run_progress``, ``sample``, ``run_epoch``, ``run_message``, ``run_reference``, ``run_status``,
``training`` (a retraining of one of its architectures), ``specialisation`` and ``cross_table``
(its cross-device table, after each cell measured) there, and ``device_status`` to
everyone. ``subscribe_runs`` joins the runs list's room, which hears ``run_row`` (a run's row as
the list shows it, whenever its status, epoch or best sample changes) and ``run_deleted``. The
payloads are in docs/dashboard.md.

The async mode is ``threading`` by default: the web process only reads pipes, writes SQLite and
pushes events, which plain OS threads do well, and eventlet's maintainers discourage new use of it.
``eventlet`` works too (``python -m webapp --async-mode eventlet``): the training runs in worker
processes, so nothing CPU-bound ever runs on its hub.
"""
from __future__ import annotations

import logging
import threading
import time

from flask import request
from flask_socketio import ConnectionRefusedError, join_room, leave_room

from .auth import check_socket
from .extensions import db, socketio
from .ids import is_id
from .models import EpochMetric, Run, Sample, stored_front
from .pareto import front_delta, update_front
from .paths import public_text
from .serialize import (metric_dict, public_reference, reference_dict, run_dict, sample_dict,
                        specialisation_dict, training_dict)

log = logging.getLogger(__name__)


# worker events that change what a run looks like in the runs list
_STATUS_EVENTS = ("queued", "launched", "started", "finished", "failed", "exited")
_PROGRESS_FIELDS = ("phase", "epoch", "epochs", "step", "steps", "loss", "accuracy",
                    "expected_latency_ms", "fraction", "eta_s", "device_wait")


RUNS_ROOM = "runs"  # the runs list's: every run's row


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
    socketio.server.preauth.connected(request.sid)


class PreAuthGuard:
    """Engine.IO sessions that have not connected to Socket.IO with the token yet: at most
    PER_ADDRESS at once from one address, and none kept past DEADLINE_S. A plain Engine.IO
    websocket that answered pings but never connected was kept forever, a thread and a file
    descriptor each (200 of them held 806 threads; 1,012 starved the API under `ulimit -n 1024`)."""

    DEADLINE_S = 5.0  # a browser connects within milliseconds of opening the Engine.IO session
    PER_ADDRESS = 16

    def __init__(self, server):
        self.server, self.lock = server, threading.Lock()
        self.pending = {}  # eio sid -> (since, address)
        handlers = server.eio.handlers
        self._eio_connect, self._eio_disconnect = handlers["connect"], handlers["disconnect"]
        server.eio.on("connect", self._on_connect)
        server.eio.on("disconnect", self._on_disconnect)
        server.preauth = self
        server.start_background_task(self._sweep)

    def _on_connect(self, eio_sid, environ, *args):
        address = environ.get("REMOTE_ADDR")
        with self.lock:
            if sum(1 for _, a in self.pending.values() if a == address) >= self.PER_ADDRESS:
                return False  # refused before it costs a thread
            self.pending[eio_sid] = (time.monotonic(), address)
        return self._eio_connect(eio_sid, environ, *args)

    def _on_disconnect(self, eio_sid, *args):
        with self.lock:
            self.pending.pop(eio_sid, None)
        return self._eio_disconnect(eio_sid, *args)

    def connected(self, sid, namespace="/"):
        """The Socket.IO session `sid` passed the connect guard: its Engine.IO session stays."""
        eio_sid = self.server.manager.eio_sid_from_sid(sid, namespace)
        with self.lock:
            self.pending.pop(eio_sid, None)

    def _sweep(self):
        while True:
            self.server.sleep(1.0)
            now = time.monotonic()
            with self.lock:
                late = [sid for sid, (since, _) in self.pending.items()
                        if now - since > self.DEADLINE_S]
            for eio_sid in late:
                log.warning("closing an Engine.IO session that did not connect with the token "
                            "within %g s", self.DEADLINE_S)
                try:
                    self.server.eio.disconnect(eio_sid)
                except Exception:  # noqa: BLE001  gone meanwhile
                    pass
                with self.lock:
                    self.pending.pop(eio_sid, None)


@socketio.on("subscribe")
def subscribe(data=None):  # None: sent without a payload
    run_id = _run_id(data)
    if run_id is None:
        return {"ok": False, "error": 'subscribe needs {"run_id": <a run id, a positive integer>}'}
    if db.session.get(Run, run_id) is None:
        return {"ok": False, "error": "no run {}".format(run_id)}
    join_room(room(run_id))
    return {"ok": True}


@socketio.on("subscribe_runs")
def subscribe_runs(data=None):
    """The runs list: every run's row as it changes, instead of the page polling for them."""
    join_room(RUNS_ROOM)
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


def emit_specialisation(specialisation, event=None, stored=None):
    """A specialisation's change (webapp/workers/specialisation.py), to its run's room."""
    socketio.emit("specialisation", {"run_id": specialisation.run_id,
                                     "specialisation": specialisation_dict(specialisation)},
                  to=room(specialisation.run_id))


def emit_cross_table(table: dict):
    """A run's cross-device table after each cell measured (webapp/cross_devices.py), to its
    run's room."""
    socketio.emit("cross_table", {"run_id": table["run_id"], "table": table},
                  to=room(table["run_id"]))


def emit_training(training, event=None, stored=None):
    """A retraining's change (its workers' ``on_event``: webapp/workers/training.py), to its
    run's room."""
    socketio.emit("training", {"run_id": training.run_id, "training": training_dict(training)},
                  to=room(training.run_id))


class RunPublisher:
    """Turns each stored search event into its Socket.IO event (the search workers' ``on_event``:
    webapp/workers/search.py).

    Keeps every followed run's Pareto front in memory, so that a new sample costs a merge, not a
    recomputation, and only the ids that joined or left the front are sent.
    """

    def __init__(self):
        self._fronts: dict[int, list] = {}
        self._lock = threading.Lock()

    def __call__(self, run: Run, event: dict, stored=None):
        run_id, kind = run.id, event["event"]
        to = room(run_id)
        # every payload carries the run and the worker's time of the event (Unix seconds)
        head = {"run_id": run_id, "time": event.get("time")}
        if kind in ("progress", "device_wait"):  # its handler merged the wait into the progress
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
        if kind in _STATUS_EVENTS or kind in ("epoch", "sample"):  # the list's row changed
            if kind in _STATUS_EVENTS:
                socketio.emit("run_status", dict(head, run=run_dict(run, full=True)), to=to)
            socketio.emit("run_row", dict(head, run=run_dict(run)), to=RUNS_ROOM)

    def _update_front(self, run_id, sample):
        with self._lock:
            front = self._fronts.get(run_id)
            if front is None:  # first sample seen by this process: start from the stored ones
                front = stored_front(run_id, exclude_id=sample.id)
            if sample.kind == "final":  # it replaces its architecture's earlier samples
                new_front = stored_front(run_id)
                added, removed = front_delta(front, new_front)
            else:
                point = (sample.id, sample.latency_ms, sample.accuracy)
                new_front, added, removed = update_front(front, [point])
            self._fronts[run_id] = new_front
        return added, removed

    def deleted(self, run_id: int):
        """A deleted run: its front forgotten, and the runs list told."""
        with self._lock:
            self._fronts.pop(run_id, None)
        socketio.emit("run_deleted", {"run_id": run_id}, to=RUNS_ROOM)
