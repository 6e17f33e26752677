"""The one life of every worker, whatever its kind: queued, claimed, launched through the app's
executor, followed, watched for silence, cancelled, its exit recorded.

At most MAX_RUNS workers run at once, searches, retrainings and specialisations alike (each is a
process on the same cores, or a Ray node's): the others wait as ``queued``, first in line first,
and one scheduler thread starts the next whenever a slot frees (``submit``, ``kick``). The queue
is the database's: a dashboard that restarts goes on with it. A claimed worker holds its slot from
the claim to its recorded exit; one thread of its own launches it (the scheduler waits until it is
placed, so that the executor's room counts it), reads its JSON-lines event stream and applies each
event to the database through its kind's handler (search.py, training.py, specialisation.py).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time

import sqlalchemy as sa

from search_core.events import HEARTBEAT_S
from search_core.rundir import WORKER_LOG

from ..devices import AGENT_START_TIMEOUT_S, DeviceError
from ..executors import worker_resources
from ..extensions import checkpoint_wal, db
from ..models import RUN_ACTIVE_STATUSES, take_queued, utcnow
from .kind import NOT_STORED, Worker, WorkerKind, end, event_now
from .orphans import TERMINATE_GRACE_S, stop_orphan

log = logging.getLogger(__name__)

ROOM_CHECK_S = 2.0  # how often the first in line looks again for room on a cluster


class Workers:
    """Owns the worker processes of one app (``app.extensions["workers"]``), of every kind."""

    def __init__(self, app, executor, kinds):
        self.app = app
        self.executor = executor
        self.kinds = {kind.model: kind for kind in kinds}
        self._lock = threading.Lock()
        self._workers: dict[tuple, Worker] = {}  # (model, row id) -> its worker, claim to exit
        self._stopping = threading.Event()  # set by shutdown: no more starts, no more watching
        self._wanted = threading.Event()  # the queue may have a row to start
        self._scheduler = None
        self._watchdog = None

    # --- the queue --------------------------------------------------------------------------------

    def submit(self, row):
        """Put a row (new, or to resume) at the end of the queue. Call in an app context."""
        kind = self.kinds[type(row)]
        row.status = "queued"
        row.error = row.finished_at = row.pid = row.node = None
        kind.requeue(row)
        db.session.commit()
        checkpoint_wal()
        kind.publish(row, event_now("queued"))
        self.kick()

    def kick(self):
        """Ask the scheduler thread to start what the free slots allow."""
        with self._lock:
            if self._scheduler is None:
                self._scheduler = threading.Thread(target=self._schedule_forever,
                                                   name="worker-scheduler", daemon=True)
                self._scheduler.start()
        self._wanted.set()

    def _schedule_forever(self):
        with self.app.app_context():
            waiting_for_room = False
            while not self._stopping.is_set():
                # the cluster's room frees up without a kick of ours (other users' work ends)
                self._wanted.wait(ROOM_CHECK_S if waiting_for_room else None)
                self._wanted.clear()
                if self._stopping.is_set():
                    return
                try:
                    waiting_for_room = self._schedule()
                except Exception:  # noqa: BLE001  the next kick tries again
                    log.exception("starting queued workers failed")
                    db.session.rollback()
                finally:
                    db.session.remove()  # a fresh session next time: rows others changed

    def _schedule(self) -> bool:
        """Start queued rows, first in line first, while a slot is free and the executor has
        room for the next; then tell every row still queued where it stands. Returns whether the
        first in line waits for room."""
        waiting = None
        while not self._stopping.is_set():
            with self._lock:
                free = self.app.config["MAX_RUNS"] - len(self._workers)
                busy = set(self._workers)  # a row requeued by its worker's thread, still winding up
            queue = [(kind.queued_at(row), kind, row) for kind in self.kinds.values()
                     for row in kind.queued() if (kind.model, row.id) not in busy]
            if free <= 0 or not queue:
                break
            _, kind, first = min(queue, key=lambda e: (e[0].timestamp() if e[0] else 0.0))
            waiting = self.executor.waiting_for(worker_resources(kind.settings(first)))
            if waiting:
                kind.say(first, waiting)
                break
            self._until_placed(self._claim(kind, first))
        for kind in self.kinds.values():
            for row in kind.queued():
                kind.publish(row, event_now("queued"))
        return bool(waiting)

    def _until_placed(self, worker: Worker | None):
        """The executor's room counts a worker once it is placed: the next in line waits."""
        while worker is not None and not worker.placed.wait(0.5) and not self._stopping.is_set():
            pass

    def _claim(self, kind: WorkerKind, row) -> Worker | None:
        """Take the row (queued -> running in one UPDATE: started once, even by two dashboards on
        one database) and give it a slot and a thread; under the lock that cancel() takes, so a
        cancel lands before the claim, or finds the worker."""
        with self._lock:
            if not take_queued(kind.model, row.id, status="running"):
                return None
            worker = Worker(kind, row.id)
            worker.thread = threading.Thread(target=self._live, args=(worker,), daemon=True,
                                             name="{}-{}".format(kind.name, row.id))
            self._workers[(kind.model, row.id)] = worker
        checkpoint_wal()  # a row that was running when its WAL was lost comes back interrupted
        worker.thread.start()
        return worker

    # --- one worker's life, in its own thread -----------------------------------------------------

    def _live(self, worker: Worker):
        try:
            with self.app.app_context():
                try:
                    if self._place(worker):
                        self._follow(worker)
                finally:
                    db.session.remove()
        finally:
            worker.placed.set()  # whatever went wrong: the scheduler goes on
            with self._lock:
                self._workers.pop((worker.kind.model, worker.row_id), None)
            self.kick()  # a slot is free

    def _place(self, worker: Worker) -> bool:
        """Launch the worker through the executor; whether it runs (not cancelled meanwhile, and
        started)."""
        kind = worker.kind
        row = db.session.get(kind.model, worker.row_id)
        try:
            cmd, token = kind.prepare(row)
            os.makedirs(kind.directory(row), exist_ok=True)
            process = self.executor.launch(cmd, os.path.join(kind.directory(row), WORKER_LOG),
                                           token, worker_resources(kind.settings(row)))
        except Exception as e:  # noqa: BLE001  a row that cannot start must not block the queue
            worker.placed.set()
            if not isinstance(e, (DeviceError, OSError, RuntimeError)):
                log.exception("%s %s: starting its worker failed", kind.name, worker.row_id)
            self._not_started(worker, e)
            return False
        with self._lock:  # cancelled while it was placed: cancel() had no process to stop
            worker.process = process
            cancelled = worker.cancel_requested
        worker.placed.set()
        if cancelled:
            process.kill()
            for _ in process.stdout:  # to its end: a Ray worker's node is then released
                pass
            self._record_exit(worker, process.wait())
            return False
        db.session.refresh(row)
        row.pid = process.pid
        row.node = getattr(process, "node", None)  # where a cluster runs it
        kind.launched(row)
        db.session.commit()
        kind.publish(row, event_now("launched"))
        self._watch_silence()
        return True

    def _not_started(self, worker: Worker, error: Exception):
        db.session.rollback()
        row = db.session.get(worker.kind.model, worker.row_id)
        if row is None:
            return
        db.session.refresh(row)
        if row.status in RUN_ACTIVE_STATUSES:  # not cancelled while it waited for a node
            end(row, "failed", "could not start: {}".format(error))
            db.session.commit()
            worker.kind.publish(row, event_now("exited"))

    def _follow(self, worker: Worker):
        try:
            for line in worker.process.stdout:
                worker.last_line = time.monotonic()
                if worker.silent:
                    self._report_silence(worker, None)
                self.handle_line(worker.kind.model, worker.row_id, line, worker)
        except Exception:  # noqa: BLE001  a broken store must not leave the row 'running'
            log.exception("%s %s: reading the worker's events failed", worker.kind.name,
                          worker.row_id)
            db.session.rollback()
        self._record_exit(worker, worker.process.wait())

    def handle_line(self, model, row_id: int, line: str, worker: Worker | None = None):
        """Parse one line of a worker's stream and apply it; a bad line is logged and skipped.
        Returns the event, or None for a skipped line."""
        kind = self.kinds[model]
        line = line.strip()
        if not line:
            return None
        try:
            event = json.loads(line)
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                raise ValueError("not an event object")
        except ValueError as e:
            log.warning("%s %s: skipping a line of the worker that is not an event (%s): %.200s",
                        kind.name, row_id, e, line)
            return None
        try:
            row, stored = self._apply(kind, row_id, event, worker)
        except Exception:  # noqa: BLE001  one bad event must not stop the stream
            db.session.rollback()
            log.exception("%s %s: could not store event %s", kind.name, row_id, event["event"])
            return None
        if row is not None:
            kind.publish(row, event, stored)
        return event

    def _apply(self, kind: WorkerKind, row_id: int, event: dict, worker: Worker | None):
        """Store one event through its kind's handler. Returns (its row, the new row stored if
        any); no row when the row is unknown or the event is the kind's own business (None:
        nothing to pass on). Kinds of event without a handler are passed on, nothing stored."""
        row = db.session.get(kind.model, row_id)
        if row is None:
            return None, None
        handler = kind.handlers.get(event["event"])
        if handler is None:
            return row, None
        stored = handler(kind, row, event, worker)
        if stored is NOT_STORED:
            return row, None
        db.session.commit()
        return row, stored

    # --- silence ----------------------------------------------------------------------------------

    def _watch_silence(self):
        with self._lock:
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="worker-watchdog",
                                                  daemon=True)
                self._watchdog.start()

    def _watch(self):
        """A live worker silent for WORKER_SILENCE_S (no event, not even its heartbeat) is frozen
        or stuck writing: its row says so, and goes back to normal when the worker speaks again."""
        with self.app.app_context():
            while not self._stopping.wait(1.0):  # a glance at a dict: cheap, and never late
                limit = self.app.config["WORKER_SILENCE_S"]
                with self._lock:
                    workers = [w for w in self._workers.values() if w.process is not None]
                for worker in workers:
                    silent_s = time.monotonic() - worker.last_line
                    if silent_s > limit and not worker.silent and worker.process.poll() is None:
                        self._report_silence(worker, silent_s)

    def _report_silence(self, worker: Worker, silent_s: float | None):
        worker.silent = silent_s is not None
        text = None if silent_s is None else (
            "No word from the worker (pid {}) for {:.0f} s, though it sends a heartbeat every "
            "{:g} s: it may be frozen. Cancel it, then resume it or start it again.".format(
                worker.process.pid, silent_s, HEARTBEAT_S))
        try:
            row = db.session.get(worker.kind.model, worker.row_id)
            if row is not None:
                worker.kind.say(row, text)
        except sa.exc.OperationalError:
            db.session.rollback()

    # --- the end ----------------------------------------------------------------------------------

    def _record_exit(self, worker: Worker, returncode: int):
        """The end reaches the database even when the database cannot take it yet (its disk is
        full): retried, with growing pauses, until it does or the app shuts down."""
        pause = 1.0
        while True:
            try:
                return self._on_exit(worker, returncode)
            except sa.exc.OperationalError:
                db.session.rollback()
                log.exception("%s %s: storing the end of its worker failed; retrying in %.0f s",
                              worker.kind.name, worker.row_id, pause)
            if self._stopping.wait(pause):
                return
            pause = min(2 * pause, 30.0)

    def _on_exit(self, worker: Worker, returncode: int):
        kind = worker.kind
        row = db.session.get(kind.model, worker.row_id)
        if row is None:
            return
        kind.before_exit(row)
        row = db.session.get(kind.model, worker.row_id)
        row.pid = None
        lost = getattr(worker.process, "lost", None)
        if worker.cancel_requested:
            if row.status != "finished":
                end(row, "cancelled")
        elif lost and row.status in RUN_ACTIVE_STATUSES:
            kind.lost(row, lost)
        elif row.status in RUN_ACTIVE_STATUSES:  # no final event stored: none came, or it failed
            end(row, "failed", worker.error or "the worker exited with code {} without "
                "finishing (see {})".format(returncode, os.path.join(kind.directory(row) or "",
                                                                    WORKER_LOG)))
        db.session.commit()
        kind.publish(row, event_now("exited", returncode=returncode, status=row.status))

    # --- control ----------------------------------------------------------------------------------

    def is_alive(self, model, row_id: int) -> bool:
        """Whether the row has a worker: being launched, or running."""
        with self._lock:
            worker = self._workers.get((model, row_id))
            return worker is not None and (worker.process is None or worker.process.poll() is None)

    def cancel(self, model, row_id: int, grace_s: float = TERMINATE_GRACE_S):
        """Stop the row's worker (SIGTERM, then SIGKILL after ``grace_s``) and wait until its end
        is stored; a queued row leaves the queue. Call in an app context."""
        kind = self.kinds[model]
        with self._lock:
            dequeued = take_queued(model, row_id, status="cancelled", finished_at=utcnow())
            worker = self._workers.get((model, row_id))
            if worker is not None:  # running, or being launched: _launch stops it then
                worker.cancel_requested = True
            process = worker.process if worker is not None else None
        if process is not None:
            process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if worker.thread is not threading.current_thread():
                worker.thread.join(grace_s + 5)
        db.session.expire_all()
        row = db.session.get(model, row_id)
        if row is not None and (dequeued or row.status in RUN_ACTIVE_STATUSES):
            if row.status in RUN_ACTIVE_STATUSES:  # no worker yet, or one still being placed
                end(row, "cancelled")
                db.session.commit()
            kind.publish(row, event_now("exited"))
            self.kick()  # the rows behind it move up

    def wait(self, model, row_id: int, timeout: float | None = None) -> bool:
        """Wait until the row's worker has exited and its end is stored; True if so."""
        with self._lock:
            worker = self._workers.get((model, row_id))
        if worker is None:
            return True
        worker.thread.join(timeout)
        return not worker.thread.is_alive()

    def mark_interrupted(self):
        """Rows left running in the database without a live worker of this process (the app
        restarted): interrupted, their orphaned workers stopped, so that a resume is the only
        writer. Queued rows stay queued (``kick`` starts them)."""
        with self._lock:
            live = set(self._workers)
        for model, kind in self.kinds.items():
            rows = db.session.scalars(sa.select(model).where(
                model.status.in_(RUN_ACTIVE_STATUSES),
                sa.or_(model.status == "running", model.pid.is_not(None)))).all()
            for row in rows:
                if (model, row.id) not in live:
                    orphan = stop_orphan(kind.directory(row))
                    row.status = "interrupted"
                    row.pid = None
                    kind.interrupted(row, orphan)
            if rows:
                db.session.commit()

    def shutdown(self, grace_s: float = TERMINATE_GRACE_S):
        """Cancel every worker (tests, app shutdown). Call in an app context."""
        self._stopping.set()
        self._wanted.set()  # the scheduler thread ends
        if self._scheduler is not None:
            self._scheduler.join(30)
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            self.cancel(worker.kind.model, worker.row_id, grace_s)
        for worker in workers:  # one being launched ends once its launch returns (then killed)
            worker.thread.join(AGENT_START_TIMEOUT_S + grace_s)
