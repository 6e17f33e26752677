"""Devices: the registered agents, the built-in local agent, their checks and lookup-table profiles.

The local device is a real ``python -m nano_agent`` process on loopback that the dashboard starts
itself (measuring on this machine's CPU), so a fresh install runs a whole search with no Jetson. It
gets its own thread budget (LOCAL_AGENT_THREADS) and runs on the local device get the other cores:
two torch processes each using every core slow each other down many times over.

Every change of a device's state is passed to ``publish(device_dict)`` (Socket.IO's device_status).
"""
from __future__ import annotations

import atexit
import logging
import os
import secrets
import signal
import select
import subprocess
import sys
import threading

import sqlalchemy as sa

from nano_agent.credentials import TOKEN_ENV
from nano_agent.space import SearchSpace
from search_core.settings import SearchConfig
from search_core.device_client import AgentDevice, DeviceClient, LatencyError
from search_core.lut import profile_and_calibrate
from search_core.measurements import LatencyCache, Measurer

from .config import REPO_ROOT
from .extensions import db
from .measurement_store import load_measurements, save_lut, save_measurements
from .models import Device, utcnow
from .serialize import device_dict

log = logging.getLogger(__name__)

LOCAL_NAME = "local"
AGENT_START_TIMEOUT_S = 60.0
CHECK_TIMEOUT_S = 5.0


class DeviceError(Exception):
    """A device cannot be used now (the local agent did not start, ...)."""


class LocalAgent:
    """A nano_agent subprocess listening on 127.0.0.1 on a free port."""

    def __init__(self, data_dir: str, token: str, threads: int = 1):
        self.dir = os.path.join(data_dir, "local_agent")
        self.token, self.threads = token, threads
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self, port: int = 0, timeout: float = AGENT_START_TIMEOUT_S) -> int:
        """Start the agent on ``port`` (0: a free one); returns the port it listens on."""
        os.makedirs(self.dir, exist_ok=True)
        self._stop_stale()
        cmd = [sys.executable, "-m", "nano_agent", "--host", "127.0.0.1", "--port", str(port),
               "--threads", str(self.threads), "--device", "cpu",
               "--config", os.path.join(self.dir, "agent.json"), "--log-level", "WARNING"]
        env = dict(os.environ, **{TOKEN_ENV: self.token})  # not in argv, which `ps` shows
        with open(os.path.join(self.dir, "agent.log"), "ab") as stderr:
            self.process = subprocess.Popen(cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, env=env,
                                            stdout=subprocess.PIPE, stderr=stderr, text=True)
        # first line: "nano_agent listening on 127.0.0.1:PORT token=..."
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        try:
            self.port = int(line.split()[3].rsplit(":", 1)[1])
        except (IndexError, ValueError):
            self.stop()
            raise DeviceError("the local agent did not start (see {})".format(
                os.path.join(self.dir, "agent.log"))) from None
        threading.Thread(target=self.process.stdout.read, name="local-agent-stdout",
                         daemon=True).start()  # keep its stdout drained
        atexit.register(self.stop)  # no agent left behind when the dashboard exits
        with open(self.pid_path, "w") as f:
            f.write(str(self.process.pid))
        return self.port

    @property
    def pid_path(self) -> str:
        return os.path.join(self.dir, "agent.pid")

    def _stop_stale(self):
        """An agent left running by a dashboard that was killed (no atexit then): stop it."""
        try:
            with open(self.pid_path) as f:
                pid = int(f.read().strip())
            with open("/proc/{}/cmdline".format(pid), "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError):
            return  # none recorded, already gone, or no /proc here
        if b"nano_agent" in cmdline and self.dir.encode() in cmdline:
            os.kill(pid, signal.SIGTERM)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class DeviceRegistry:
    """Owns the local agent and talks to every device (``app.extensions["devices"]``)."""

    def __init__(self, app, publish=None):
        self.app = app
        self.publish = publish
        self.local: LocalAgent | None = None
        self._local_ready = threading.Event()
        self._local_lock = threading.Lock()
        self._activity: dict[int, str] = {}  # device id -> 'checking' / 'profiling'
        self._pool: dict[int, dict] = {}  # device id -> its latest figures as a pool member
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # --- the local device ------------------------------------------------------------------------

    def start(self):
        """Start the local agent (in the background) and the periodic checks."""
        if self.app.config["LOCAL_AGENT"]:
            with self.app.app_context():
                self._local_row()  # there at once: a run may be started before the agent is up
            threading.Thread(target=self._start_local, name="local-agent", daemon=True).start()
        interval = self.app.config["DEVICE_CHECK_INTERVAL_S"]
        if interval:
            threading.Thread(target=self._monitor, args=(interval,), name="device-monitor",
                             daemon=True).start()

    def _start_local(self):
        with self.app.app_context():
            try:
                self.ensure_local()
            except Exception:  # noqa: BLE001  the dashboard keeps serving without it
                log.exception("the local device agent did not start")
            finally:
                self._local_ready.set()

    def ensure_local(self) -> Device:
        """The local device row, its agent (re)started if it is not running. In an app context."""
        with self._local_lock:
            device = self._local_row()
            if self.local is None or not self.local.alive():
                self.local = LocalAgent(self.app.config["DATA_DIR"], device.token,
                                        self.app.config["LOCAL_AGENT_THREADS"])
                try:
                    device.port = self._start_local_agent(device.port)
                except DeviceError as e:
                    device.status, device.error = "offline", str(e)
                    db.session.commit()
                    self._emit(device)
                    raise
                db.session.commit()
        self.check(device)
        return device

    def _start_local_agent(self, port: int | None) -> int:
        """The local agent started again on its last port, where it is free: a running search
        keeps the address it was given, and finds the agent there again; else on a new one."""
        if port:
            try:
                return self.local.start(port)
            except DeviceError as e:
                if self._stop.is_set():  # stopped by shutdown() while it started
                    raise
                log.warning("the local agent did not start on its port %s (%s): it starts on "
                            "another", port, e)
        return self.local.start()

    def _local_row(self) -> Device:
        device = db.session.scalars(sa.select(Device).where(Device.kind == "local")).first()
        if device is None:
            device = Device(name=LOCAL_NAME, kind="local", host="127.0.0.1",
                            token=secrets.token_urlsafe(24), status="unknown")
            db.session.add(device)
            db.session.commit()
        return device

    def address(self, device: Device) -> str:
        """'host:port' to give a worker; the local agent is started first if need be."""
        if device.kind == "local":
            if not self.app.config["LOCAL_AGENT"]:
                raise DeviceError("the local device is switched off (--no-local-agent)")
            self._local_ready.wait(AGENT_START_TIMEOUT_S)
            db.session.refresh(device)  # its port was set by the thread that started it
            if self.local is None or not self.local.alive():
                device = self.ensure_local()
        return "{}:{}".format(device.host, device.port)

    # --- checks and profiles ---------------------------------------------------------------------

    def client(self, device: Device, timeout: float = CHECK_TIMEOUT_S) -> DeviceClient:
        return DeviceClient(device.host, device.port, device.token, connect_timeout=timeout,
                            timeout=timeout, backoff=(0.2,))

    def activity(self, device_id: int) -> str | None:
        with self._lock:
            return self._activity.get(device_id)

    def as_dict(self, device: Device) -> dict:
        return dict(device_dict(device, self.activity(device.id)), pool=self.pool_figures(device.id))

    def set_pool_figures(self, device: Device, figures: dict):
        """What a run's pool says of this member (its run, measurements, losses, busy seconds,
        the pool's queue), shown on the Devices page until the dashboard restarts."""
        with self._lock:
            self._pool[device.id] = figures
        self._emit(device)

    def pool_figures(self, device_id: int) -> dict | None:
        with self._lock:
            return self._pool.get(device_id)

    def _set_activity(self, device: Device, activity: str | None):
        with self._lock:
            if activity is None:
                self._activity.pop(device.id, None)
            else:
                self._activity[device.id] = activity
        self._emit(device)

    def _emit(self, device: Device):
        if self.publish is not None:
            try:
                self.publish(self.as_dict(device))
            except Exception:  # noqa: BLE001
                log.exception("device %s: publishing its status failed", device.id)

    def check(self, device: Device, quiet: bool = False) -> Device:
        """Handshake and ``info``: online with its details, or offline with the reason. In an app
        context. ``quiet``: publish only when the status changes (periodic checks)."""
        before = (device.status, device.error)
        if not quiet:
            self._set_activity(device, "checking")
        try:
            try:
                with self.client(device) as client:
                    info = client.info()
                device.status, device.error, device.info_data = "online", None, info
            except (LatencyError, OSError) as e:
                device.status, device.error = "offline", str(e)
            device.checked_at = utcnow()
            db.session.commit()
        finally:  # whatever happened, the device is not 'checking' any more
            if quiet:
                if (device.status, device.error) != before:
                    self._emit(device)
            else:
                self._set_activity(device, None)
        return device

    def start_profile(self, device: Device, space: SearchSpace, backend: str = "pytorch"):
        """Profile and calibrate the device's lookup table for ``space`` in ``backend`` in the
        background, with a run's routine and measurement settings; the table lands in
        ``device.luts``."""
        with self._lock:
            if device.id in self._activity:
                raise DeviceError("device {} is busy ({})".format(device.name, self._activity[device.id]))
            self._activity[device.id] = "profiling"
        self._emit(device)
        threading.Thread(target=self._profile, args=(device.id, space, backend),
                         name="profile-{}".format(device.id), daemon=True).start()

    def _profile(self, device_id, space, backend):
        with self.app.app_context():
            device = db.session.get(Device, device_id)
            defaults = SearchConfig(**self.app.config["RUN_DEFAULTS"])  # as this dashboard's runs
            source = AgentDevice(device.host, device.port, device.token, defaults.measure_warmup,
                                 defaults.measure_runs, backend, connect_timeout=CHECK_TIMEOUT_S,
                                 timeout=900.0, backoff=(0.5,))
            measurer = Measurer(source, load_measurements(LatencyCache()))
            try:
                lut = profile_and_calibrate(source, space, measurer, defaults.calibration_archs)
                save_lut(device.id, lut.data)
                save_measurements(measurer.cache)
                device.status, device.error = "online", None
            except (LatencyError, OSError) as e:
                device.error = "profiling failed: {}".format(e)
            except Exception as e:  # noqa: BLE001  report it on the device, keep serving
                log.exception("device %s: profiling failed", device_id)
                device.error = "profiling failed: {}".format(e)
            finally:
                source.close()
            db.session.commit()
            self._set_activity(device, None)

    def _monitor(self, interval: float):
        """Check every device now and then, so that the pages show who went offline; a local
        agent that died is started again (on its port: see _start_local_agent)."""
        while not self._stop.wait(interval):
            with self.app.app_context():
                try:
                    local = self.local
                    if local is not None and not local.alive() and not self._stop.is_set():
                        self.ensure_local()
                    for device in db.session.scalars(sa.select(Device)).all():
                        if self.activity(device.id) is None and device.port:
                            self.check(device, quiet=True)
                except Exception:  # noqa: BLE001
                    log.exception("periodic device check failed")
                    db.session.rollback()

    def shutdown(self):
        self._stop.set()
        if self.local is not None:
            self.local.stop()
