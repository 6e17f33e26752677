# length: the whole life of a search worker (queue, launch, follow, watchdog, exit, retries,
# cancel) in one place; retrainings keep a second copy of it (trainings.py) until one worker
# lifecycle serves every worker kind.
"""Search workers: queue, launch (through the app's executor), follow their JSON-lines event
stream, store it, cancel, resume after a lost worker.

At most MAX_RUNS workers run at once: a new or resumed run waits as ``queued``, first in line
first, and one scheduler thread starts the next whenever a worker exits (``submit``, ``kick``).
The queue is the database's: a dashboard that restarts goes on with it.

The web process does I/O only (a crash, a frozen worker or its memory cannot take the dashboard
down): ``python -m search_core search --out RUN_DIR --events jsonl ...`` runs in its own OS process (a
subprocess, or on a Ray node: webapp/executors.py), and one background thread per run reads its
standard output line by line and applies each event (docs/events.md) to the database inside an
app context. ``on_event(run_id, event, stored)``, if given, is called after each event is stored,
with the row it stored (a Sample for ``sample``, an EpochMetric for ``epoch``); the Socket.IO layer
hooks in there. The device's token reaches the worker through its environment (NANO_AGENT_TOKEN),
never through a file in the run directory. A run whose worker was lost with its Ray node resumes
from its checkpoint by itself, first in line, at most MAX_RETRIES times.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from search_core.best import better
from search_core.events import HEARTBEAT_S
from search_core.measurements import LatencyCache
from search_core.rundir import CONFIG, LATENCY_CACHE, STORED_LUTS, RunDirectory

from .devices import AGENT_START_TIMEOUT_S, DeviceError
from .eta import Pace
from .executors import LOST_AFTER_S, worker_resources
from .extensions import checkpoint_wal, db
from .measurements import load_measurements, save_lut, save_measurements, stored_luts
from .models import (RUN_ACTIVE_STATUSES, EpochMetric, Run, Sample, queued_runs,
                     queued_trainings, take_queued, utcnow)
from .serialize import pick_fields, reference_dict

log = logging.getLogger(__name__)

WORKER_LOG = "worker.log"
PROGRESS_COMMIT_S = 0.5
TERMINATE_GRACE_S = 5.0

SETTINGS_FILE = "requested_settings.json"
MAX_RETRIES = 3  # a run whose worker was lost (its Ray node died) resumes by itself this often
ROOM_CHECK_S = 2.0  # how often the first in line looks again for room on a cluster
_NOT_STORED = object()  # a handler's answer for an event passed on without a commit


def search_command(run_dir: str):
    """The worker command of a new run: every setting comes from the run's settings file."""
    return [sys.executable, "-m", "search_core", "search", "--config",
            os.path.join(run_dir, SETTINGS_FILE), "--out", run_dir, "--events", "jsonl"]


def resume_command(run_dir: str, device: str | None = None):
    cmd = [sys.executable, "-m", "search_core", "resume", run_dir, "--events", "jsonl"]
    return cmd + ["--device", device] if device else cmd


@dataclass
class Worker:
    process: subprocess.Popen  # or an executor's process-like handle (webapp/executors.py)
    thread: threading.Thread | None = None
    cancel_requested: bool = False
    error: str | None = None  # the worker's own 'failed' message, even if storing it failed
    last_line: float = field(default_factory=time.monotonic)  # when the worker last said anything
    silent: bool = False  # its run says that it has been silent for too long
    last_progress_commit: float = 0.0
    pace: Pace | None = None  # the measured pace of each phase, from the 'started' event on


_SAMPLE_COLUMNS = {
    "predicted_latency_ms": "predicted_latency_ms", "memory_mb": "memory_mb", "params": "params",
    "macs": "macs", "objective": "objective", "uses_budget": "uses_budget",
}
_LATENCY_COLUMNS = {"median_ms": "latency_median_ms", "mean_ms": "latency_mean_ms",
                    "std_ms": "latency_std_ms", "p90_ms": "latency_p90_ms",
                    "min_ms": "latency_min_ms"}


def stop_orphan(run_dir: str | None, grace_s: float = TERMINATE_GRACE_S) -> int | None:
    """Stop a worker that still holds ``run_dir`` although no process of this dashboard follows
    it (an earlier dashboard process died, or the Ray node that ran it was lost): its events go
    to a pipe nobody reads, and a resumed run would be a second writer. A worker on another host
    cannot be signalled from here: it stops by itself at its next heartbeat (nobody reads it), so
    that is waited for. Returns its pid, or None if none held the directory."""
    if not run_dir:
        return None
    files = RunDirectory(run_dir)
    holder = files.worker()
    if holder is None or not holder[0]:  # no worker, or one that has not written its pid yet
        return None
    pid, host = holder
    if host not in (None, socket.gethostname()):
        if not _released(files, grace_s + LOST_AFTER_S):
            log.error("worker %s on %s still holds %s", pid, host, run_dir)
        return pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return pid
        if _released(files, wait_s):
            return pid
    log.error("worker %s on %s did not stop", pid, run_dir)
    return pid


def _released(files: RunDirectory, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while files.worker_pid() is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def resolved_settings(requested: dict | None, used: dict, before: dict | None) -> dict:
    """What a worker made of the requested settings: each setting it used with another value
    (an automatic T computed, the device's address), over what an earlier start resolved."""
    requested = requested or {}
    return dict(before or {}, **{name: value for name, value in used.items()
                                 if name in requested and requested[name] != value})


def _better(sample: Sample, best: Sample | None, constraint: str | None) -> bool:
    """Does ``sample`` beat the run's best so far? The search's own rule (search_core.best)."""
    return better(pick_fields(sample), pick_fields(best), constraint or "absolute")


def _progress_estimate(event: dict, worker: Worker | None) -> dict:
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


class RunManager:
    """Owns the worker processes of one app (``app.extensions["runs"]``)."""

    def __init__(self, app, executor, on_event=None):
        self.app = app
        self.executor = executor
        self.on_event = on_event
        self._lock = threading.Lock()
        self._workers: dict[int, Worker] = {}
        # runs cancelled while no worker of theirs was registered: one being launched just then
        # is stopped when it registers, not revived (under _lock, with _workers)
        self._cancelled: set[int] = set()
        self._stopping = threading.Event()  # set by shutdown: no more retries, no more watching
        self._watchdog = None
        self._wanted = threading.Event()  # the queue may have a run to start
        self._scheduler = None

    # --- the queue -------------------------------------------------------------------------------

    def submit(self, run: Run):
        """Put a new run, or one to resume from its checkpoint, at the end of the queue. Call in
        an app context."""
        run.status = "queued"
        run.queued_at = utcnow()
        run.error = run.finished_at = run.pid = run.progress = run.message = run.node = None
        run.retries = None  # the automatic resumes of this start
        db.session.commit()
        checkpoint_wal()
        self._publish(run.id, {"event": "queued", "time": round(time.time(), 3)})
        self.kick()

    def kick(self):
        """Ask the scheduler thread to start what the free slots allow."""
        with self._lock:
            if self._scheduler is None:
                self._scheduler = threading.Thread(target=self._schedule_forever,
                                                   name="run-scheduler", daemon=True)
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
                    log.exception("starting queued runs failed")
                    db.session.rollback()
                finally:
                    db.session.remove()  # a fresh session next time: rows others changed

    def _schedule(self) -> bool:
        """Start queued runs and retrainings, first in line first (they share MAX_RUNS's slots:
        each is a worker on the same cores), while a slot is free and the executor has room for
        the next; then tell every run still queued where it stands. Returns whether the first in
        line waits for room."""
        trainings = self.app.extensions.get("trainings")
        waiting = None
        while True:
            with self._lock:
                free = self.app.config["MAX_RUNS"] - len(self._workers)
                busy = set(self._workers)  # a run requeued by its follower, which still winds up
            queue = [(run.queued_at, run) for run in queued_runs() if run.id not in busy]
            if trainings is not None:
                free -= trainings.running()
                queue += [(training.created_at, training) for training in queued_trainings()]
            if free <= 0 or not queue or self._stopping.is_set():
                break
            first = min(queue, key=lambda entry: entry[0].timestamp() if entry[0] else 0.0)[1]
            config = first.config_data if isinstance(first, Run) else first.run.config_data
            waiting = self.executor.waiting_for(worker_resources(config))
            if waiting:
                if isinstance(first, Run) and first.message != waiting:
                    self._say(first.id, waiting)
                break
            if isinstance(first, Run):
                self._start_queued(first)
            else:
                trainings.start(first)
        for run in queued_runs():
            self._publish(run.id, {"event": "queued", "time": round(time.time(), 3)})
        return bool(waiting)

    def _start_queued(self, run: Run):
        """Launch the worker of a queued run on its device's current address: a search, or a
        resume when its directory already holds one. A run that cannot start fails, saying why.
        The run is claimed first (queued -> running in one UPDATE): a run is started once, even
        by two dashboards on one database."""
        if not take_queued(Run, run.id, status="running"):
            return
        checkpoint_wal()  # a run that was running when its WAL was lost comes back interrupted
        try:
            address, token = None, None
            devices = run.measuring_devices
            if devices:  # a group's members are a pool: their addresses, one token
                registry = self.app.extensions["devices"]
                address = ",".join(registry.address(device) for device in devices)
                token = devices[0].token
            if RunDirectory(run.run_dir).exists(CONFIG):
                self.resume(run, device=address, token=token)
            else:
                self.start(run, token, device=address)
        except Exception as e:  # noqa: BLE001  a run that cannot start must not block the queue
            if not isinstance(e, (DeviceError, OSError, RuntimeError)):
                log.exception("run %s: starting its worker failed", run.id)
            db.session.rollback()
            db.session.refresh(run)
            if run.status == "cancelled":  # while it waited for a node: that says it all
                return
            run.status = "failed"
            run.error = "could not start: {}".format(e)
            run.finished_at = utcnow()
            db.session.commit()
            self._publish(run.id, {"event": "exited", "time": round(time.time(), 3)})

    # --- launching -------------------------------------------------------------------------------

    def start(self, run: Run, token: str | None = None, device: str | None = None):
        """Launch a new search for ``run`` at once (its run_dir and config set; ``device``: the
        address to measure at, ``token``: its agent's); ``submit`` queues it instead. Call in an
        app context."""
        files = RunDirectory(run.run_dir).create()
        files.write_json(SETTINGS_FILE, dict(run.config_data, device=device) if device
                         else run.config_data)
        load_measurements(LatencyCache(files.path(LATENCY_CACHE)))
        config = run.config_data
        if run.device_id is not None:  # the device's calibrated tables: no profiling again
            files.write_json(STORED_LUTS, stored_luts(run.device_id, config["resolution"],
                                                      config["width_mult"]))
        self._launch(run, search_command(run.run_dir), token)

    def resume(self, run: Run, device: str | None = None, token: str | None = None):
        """Continue ``run`` from its checkpoint, measuring on ``device`` (host:port) if given."""
        self._restore_samples(run)
        self._launch(run, resume_command(run.run_dir, device), token)

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

    def _launch(self, run: Run, cmd, token=None):
        with self._lock:
            if run.id in self._workers:
                raise RuntimeError("run {} already has a worker".format(run.id))
            self._cancelled.discard(run.id)  # a cancel of an earlier start (the status says it)
        os.makedirs(run.run_dir, exist_ok=True)
        process = self.executor.launch(cmd, os.path.join(run.run_dir, WORKER_LOG), token,
                                       worker_resources(run.config_data))
        db.session.refresh(run)
        worker = Worker(process)
        with self._lock:
            # cancelled while its worker was being placed or started: cancel() found no worker
            # to stop (and its commit may come after our refresh), so it is stopped here
            cancelled = run.status == "cancelled" or run.id in self._cancelled
            self._cancelled.discard(run.id)
            if not cancelled:
                self._workers[run.id] = worker
        if cancelled:
            process.kill()
            for _ in process.stdout:  # to its end: a Ray worker's node is then released
                pass
            process.wait()
            return
        run.pid = process.pid
        run.node = getattr(process, "node", None)  # where a cluster runs it
        run.status = "running"  # its worker starts; the phase comes with its 'started' event
        run.phase = None
        run.error = None
        run.finished_at = None
        run.progress = None
        run.message = None
        db.session.commit()
        self._publish(run.id, {"event": "launched", "time": round(time.time(), 3)})
        worker.thread = threading.Thread(target=self._follow, args=(run.id, worker),
                                         name="run-{}".format(run.id), daemon=True)
        worker.thread.start()
        with self._lock:
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="worker-watchdog",
                                                  daemon=True)
                self._watchdog.start()

    def _watch(self):
        """A live worker silent for WORKER_SILENCE_S (no event, not even its heartbeat) is frozen
        or stuck writing: its run says so, and goes back to normal when the worker speaks again."""
        with self.app.app_context():
            while not self._stopping.wait(1.0):  # a glance at a dict: cheap, and never late
                limit = self.app.config["WORKER_SILENCE_S"]
                with self._lock:
                    workers = list(self._workers.items())
                for run_id, worker in workers:
                    silent_s = time.monotonic() - worker.last_line
                    if silent_s > limit and not worker.silent and worker.process.poll() is None:
                        self._report_silence(run_id, worker, silent_s)

    def _report_silence(self, run_id, worker, silent_s):
        """Say on the run that its worker is silent (`silent_s`), or speaks again (None)."""
        worker.silent = silent_s is not None
        text = None if silent_s is None else (
            "No word from the worker (pid {}) for {:.0f} s, though it sends a heartbeat every "
            "{:g} s: it may be frozen. Cancel the run and resume it.".format(
                worker.process.pid, silent_s, HEARTBEAT_S))
        try:
            self._say(run_id, text)
        except sa.exc.OperationalError:
            db.session.rollback()

    def _say(self, run_id: int, text: str | None):
        """The run's message (None: none), stored and pushed."""
        run = db.session.get(Run, run_id)
        if run is not None:
            run.message = text
            db.session.commit()
        self._publish(run_id, {"event": "message", "time": round(time.time(), 3), "text": text})

    def _publish(self, run_id, event, stored=None):
        if self.on_event is None:
            return
        try:
            self.on_event(run_id, event, stored)
        except Exception:  # noqa: BLE001
            log.exception("run %s: on_event callback failed", run_id)

    # --- following -------------------------------------------------------------------------------

    def _follow(self, run_id: int, worker: Worker):
        with self.app.app_context():
            try:
                for line in worker.process.stdout:
                    worker.last_line = time.monotonic()
                    if worker.silent:
                        self._report_silence(run_id, worker, None)
                    self.handle_line(run_id, line, worker)
            except Exception:  # noqa: BLE001  a broken store must not leave the run 'running'
                log.exception("run %s: reading the worker's events failed", run_id)
                db.session.rollback()
            returncode = worker.process.wait()
            try:
                self._record_exit(run_id, worker, returncode)
            finally:
                with self._lock:
                    self._workers.pop(run_id, None)
                self.kick()  # a slot is free

    def handle_line(self, run_id: int, line: str, worker: Worker | None = None):
        """Parse one line of the stream and apply it; a bad line is logged and skipped.
        Returns the event, or None for a skipped line."""
        line = line.strip()
        if not line:
            return None
        try:
            event = json.loads(line)
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                raise ValueError("not an event object")
        except ValueError as e:
            log.warning("run %s: skipping a line of the worker that is not an event (%s): %.200s",
                        run_id, e, line)
            return None
        try:
            known, stored = self.apply_event(run_id, event, worker)
        except Exception:  # noqa: BLE001  one bad event must not stop the stream
            db.session.rollback()
            log.exception("run %s: could not store event %s", run_id, event.get("event"))
            return None
        if known:
            self._publish(run_id, event, stored)
        return event

    def apply_event(self, run_id: int, event: dict, worker: Worker | None = None):
        """Store one event through its handler. Returns ``(known, stored)``: known is False when
        the run is unknown (nothing to pass on), stored the new row if any. Kinds without a
        handler (added later) are passed on with nothing stored."""
        run = db.session.get(Run, run_id)
        if run is None:
            return False, None
        handler = self._HANDLERS.get(event["event"])
        if handler is None:
            return True, None
        stored = handler(self, run, event, worker)
        if stored is _NOT_STORED:
            return True, None
        db.session.commit()
        return True, stored

    def _on_started(self, run, event, worker):
        start_epoch = int(event.get("start_epoch") or 0)
        # on resume the worker drops the samples of an epoch that did not finish: so do we
        db.session.execute(sa.delete(Sample).where(Sample.run_id == run.id, Sample.epoch >= start_epoch))
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
                return _NOT_STORED
            worker.last_progress_commit = now
        run.epoch = event.get("epoch", run.epoch)
        run.epochs = event.get("epochs", run.epochs)
        run.phase = event.get("phase", run.phase)
        run.progress_data = {k: v for k, v in event.items() if k not in ("event", "time")}

    def _on_reference(self, run, event, worker):
        run.reference_data = reference_dict(event)

    def _on_heartbeat(self, run, event, worker):
        return _NOT_STORED  # its arrival is what counts (worker.last_line)

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
            return _NOT_STORED
        registry = self.app.extensions["devices"]
        by_address = {"{}:{}".format(d.host, d.port): d for d in run.group.devices}
        for member in event["members"]:
            device = by_address.get(member.get("address")) if isinstance(member, dict) else None
            if device is not None:
                registry.set_pool_figures(device, dict(member, run_id=run.id,
                                                       pending=event.get("pending"),
                                                       time=event.get("time")))
        return _NOT_STORED

    def _on_message(self, run, event, worker):
        run.message = str(event.get("text"))[:2000]

    def _on_lut(self, run, event, worker):
        """A table the run profiled is kept for the device's next runs with that setting."""
        if not event.get("stored") and run.device_id is not None and isinstance(event.get("lut"), dict):
            save_lut(run.device_id, event["lut"], run.id)

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
                sa.select(Sample).where(Sample.run_id == run.id, Sample.arch_hash == best["arch_hash"])
                .order_by(Sample.id.desc()).limit(1)).first()
        run.best_sample_id = sample.id if sample else None
        run.status = "finished"
        run.epoch = run.epochs - 1 if run.epochs else run.epoch
        run.finished_at = utcnow()
        run.pid = None

    def _on_failed(self, run, event, worker):
        if worker is not None:
            worker.error = event.get("error") or "the worker failed"
        cancelled = worker is not None and worker.cancel_requested
        run.status = "cancelled" if cancelled else "failed"
        run.error = None if cancelled else (event.get("error") or "the worker failed")
        run.finished_at = utcnow()
        run.pid = None

    _HANDLERS = {"started": _on_started, "progress": _on_progress, "message": _on_message,
                 "device_wait": _on_device_wait, "heartbeat": _on_heartbeat,
                 "reference": _on_reference, "pool": _on_pool,
                 "lut": _on_lut, "sample": _on_sample, "epoch": _on_epoch,
                 "finished": _on_finished, "failed": _on_failed}

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

    def _record_exit(self, run_id: int, worker: Worker, returncode: int):
        """The run's end reaches the database even when the database cannot take it yet (its
        disk is full): retried, with growing pauses, until it does or the app shuts down."""
        pause = 1.0
        while True:
            try:
                return self._on_exit(run_id, worker, returncode)
            except sa.exc.OperationalError:
                db.session.rollback()
                log.exception("run %s: storing the end of its worker failed; retrying in %.0f s",
                              run_id, pause)
            if self._stopping.wait(pause):
                return
            pause = min(2 * pause, 30.0)

    def _on_exit(self, run_id: int, worker: Worker, returncode: int):
        run = db.session.get(Run, run_id)
        if run is None:
            return
        try:
            path = os.path.join(run.run_dir or "", LATENCY_CACHE)
            if os.path.exists(path):
                save_measurements(LatencyCache(path))
        except Exception:  # noqa: BLE001  the run's own end matters more than the shared cache
            db.session.rollback()
            log.exception("run %s: storing its measurements in the latency cache failed", run_id)
            run = db.session.get(Run, run_id)
        run.pid = None
        if worker.cancel_requested:
            if run.status != "finished":
                run.status = "cancelled"
                run.error = None
                run.finished_at = run.finished_at or utcnow()
        elif getattr(worker.process, "lost", None) and run.status in RUN_ACTIVE_STATUSES:
            self._after_lost_worker(run, worker.process.lost)
        elif run.status in RUN_ACTIVE_STATUSES:  # no final event stored: none came, or it failed
            run.status = "failed"
            run.error = worker.error or "the worker exited with code {} without finishing (see " \
                "{})".format(returncode, os.path.join(run.run_dir or "", WORKER_LOG))
            run.finished_at = utcnow()
        db.session.commit()
        self._publish(run_id, {"event": "exited", "time": round(time.time(), 3),
                               "returncode": returncode, "status": run.status})

    def _after_lost_worker(self, run: Run, lost: str):
        """Its worker's node died, or stopped answering: the run resumes from its last checkpoint,
        first in line, at most MAX_RETRIES times, each retry recorded on the run."""
        stop_orphan(run.run_dir)  # never two writers: the old worker may still be ending
        retries = run.retries_data or []
        where = run.node or "its node"
        if len(retries) >= MAX_RETRIES:
            run.status = "failed"
            run.error = "its worker was lost {} times, the last on {} ({}); resume it when the " \
                "cluster is whole again".format(len(retries) + 1, where, lost)
            run.finished_at = utcnow()
            return
        run.retries_data = retries + [{"time": utcnow().isoformat(), "node": run.node,
                                       "error": lost}]
        run.status = "queued"  # its queued_at is kept: first in line
        run.message = "Its worker on {} was lost ({}): resuming from the last checkpoint (retry " \
            "{} of {}).".format(where, lost, len(retries) + 1, MAX_RETRIES)

    # --- control ---------------------------------------------------------------------------------

    def is_alive(self, run_id: int) -> bool:
        with self._lock:
            worker = self._workers.get(run_id)
            return worker is not None and worker.process.poll() is None

    def cancel(self, run_id: int, grace_s: float = TERMINATE_GRACE_S):
        """Terminate the run's worker (SIGTERM, then SIGKILL after ``grace_s``), mark it cancelled.
        Waits for the reader to store the end. Call in an app context."""
        with self._lock:
            worker = self._workers.get(run_id)
            if worker is not None:
                worker.cancel_requested = True
            else:  # none yet, or being launched right now: _launch stops it
                self._cancelled.add(run_id)
        if worker is not None:
            worker.process.terminate()
            try:
                worker.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            if worker.thread is not None and worker.thread is not threading.current_thread():
                worker.thread.join(grace_s + 5)
        db.session.expire_all()
        run = db.session.get(Run, run_id)
        if run is not None and run.status in RUN_ACTIVE_STATUSES:  # a queued run: no worker
            run.status = "cancelled"
            run.pid = None
            run.finished_at = utcnow()
            db.session.commit()
            self._publish(run_id, {"event": "exited", "time": round(time.time(), 3)})
            self.kick()  # the runs behind it move up

    def wait(self, run_id: int, timeout: float | None = None) -> bool:
        """Wait until the run's worker has exited and its end is stored; True if so."""
        with self._lock:
            worker = self._workers.get(run_id)
        if worker is None or worker.thread is None:
            return True
        worker.thread.join(timeout)
        return not worker.thread.is_alive()

    def mark_interrupted(self):
        """Runs left running in the database without a live worker of this process (the app
        restarted): interrupted, their orphaned workers stopped, so that resume is the only
        writer. Queued runs stay queued (``kick`` starts them)."""
        with self._lock:
            live = {rid for rid, w in self._workers.items() if w.process.poll() is None}
        runs = db.session.scalars(sa.select(Run).where(
            Run.status.in_(RUN_ACTIVE_STATUSES),
            sa.or_(Run.status == "running", Run.pid.is_not(None)))).all()
        for run in runs:
            if run.id not in live:
                orphan = stop_orphan(run.run_dir)
                if orphan:
                    run.message = ("The dashboard restarted while worker {} ran this search; it "
                                   "was stopped. Resume continues from the last finished epoch."
                                   .format(orphan))
                run.status = "interrupted"
                run.pid = None
        if runs:
            db.session.commit()

    def shutdown(self, grace_s: float = TERMINATE_GRACE_S):
        """Cancel every live worker (tests, app shutdown). Call in an app context."""
        self._stopping.set()
        self._wanted.set()  # the scheduler thread ends, after the worker it may be starting
        if self._scheduler is not None:
            self._scheduler.join(AGENT_START_TIMEOUT_S)  # a start may wait that long
        with self._lock:
            ids = list(self._workers)
        for run_id in ids:
            self.cancel(run_id, grace_s)

