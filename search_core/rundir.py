"""A search run's directory: its settings, samples, checkpoint, lookup table and results.

    config.json          the settings (with the resolved target latency)
    lut.json             the calibrated latency lookup table the run uses
    stored_luts.json     the device's stored tables, offered by the dashboard (optional)
    samples.jsonl        every evaluated architecture, one JSON object a line
    latency_cache.jsonl  the measurements (search_core.measurements.LatencyCache)
    checkpoint.pt        after every epoch, to resume
    best_arch.json, summary.json   at the end
    worker.lock          held (flock) by the worker that runs the search: its pid and host

What the dashboard adds (webapp/workers/):
    requested_settings.json  the settings as the user asked for them (`search --config`)
    worker.log           the worker's standard error
    trainings/<id>/      a retraining: arch.json, settings.json (its run's, for `train --config`),
                         worker.log, and when it finished weights.pt and model.onnx
    specialisations/<id>/  a specialisation (`specialise`): settings.json (its targets, device
                         and runtime, for `specialise --config`), worker.log, and a search's
                         files: lut.json, samples.jsonl, best_arch.json, summary.json

No torch import at module level: the dashboard reads run directories in its web process.
"""
import fcntl
import json
import os
import socket

from .settings import ConfigError, SearchConfig

CONFIG = "config.json"
LUT = "lut.json"
STORED_LUTS = "stored_luts.json"
SAMPLES = "samples.jsonl"
LATENCY_CACHE = "latency_cache.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST_ARCH = "best_arch.json"
SUMMARY = "summary.json"
WORKER_LOCK = "worker.lock"
REQUESTED_SETTINGS = "requested_settings.json"
WORKER_LOG = "worker.log"
TRAINING_ARCH, TRAINING_SETTINGS = "arch.json", "settings.json"
WEIGHTS, ONNX = "weights.pt", "model.onnx"  # what a finished retraining leaves for deployment


SPECIALISATION_SETTINGS = "settings.json"


def training_directory(run_dir, training_id):
    return os.path.join(run_dir, "trainings", str(training_id))


def specialisation_directory(run_dir, specialisation_id):
    return os.path.join(run_dir, "specialisations", str(specialisation_id))


class RunDirectoryBusy(Exception):
    """Another worker holds the run directory: two would write the same files."""


class LockHeld(Exception):
    """Another process holds the lock; `holder` is its (pid, host), either None if unwritten."""

    def __init__(self, holder):
        super().__init__("held by pid {} on {}".format(*holder))
        self.holder = holder


def hold_lock(path):
    """Hold an exclusive flock on `path` for this process's life (the kernel releases it however
    the process ends), its pid and host written inside; returns the open descriptor, or raises
    LockHeld. The host too: on storage that several machines share, a pid means nothing elsewhere."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder_in(fd)
        os.close(fd)
        raise LockHeld(holder) from None
    os.ftruncate(fd, 0)
    os.write(fd, "{} {}".format(os.getpid(), socket.gethostname()).encode("utf-8"))
    return fd


class DiskFull(Exception):
    """Too little free space left for the next checkpoint: stop cleanly, while the last one is whole."""


def _holder_in(fd):
    """(pid, host) written by the worker holding the lock; (None, None) before it wrote them."""
    os.lseek(fd, 0, os.SEEK_SET)
    words = os.read(fd, 300).decode("utf-8", "replace").split()
    pid = int(words[0]) if words and words[0].isdigit() else None
    return pid, (words[1] if len(words) > 1 else None)


class RunDirectory:
    def __init__(self, path):
        self.root = path

    def path(self, name):
        return os.path.join(self.root, name)

    def exists(self, name):
        return os.path.exists(self.path(name))

    def create(self):
        os.makedirs(self.root, exist_ok=True)
        return self

    # --- the one worker ------------------------------------------------------------------------------

    def lock_worker(self):
        """Hold the directory for this process (released when it exits, even killed): a second
        worker on it raises RunDirectoryBusy."""
        try:
            self._lock_fd = hold_lock(self.path(WORKER_LOCK))  # open for the process's life
        except LockHeld as e:
            pid, host = e.holder
            raise RunDirectoryBusy("another worker (pid {} on {}) is running on {}: stop it "
                                   "first".format(pid, host or "this host", self.root)) from None

    def worker_pid(self):
        """The pid of the worker holding the directory (0 if it wrote none yet); None if none does."""
        holder = self.worker()
        return None if holder is None else holder[0] or 0

    def worker(self):
        """(pid, host) of the worker holding the directory (either None before it wrote them);
        None if none holds it."""
        try:
            fd = os.open(self.path(WORKER_LOCK), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _holder_in(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def check_free_space(self, min_bytes):
        """Raise DiskFull unless the directory's disk has `min_bytes` free, and room for two
        checkpoints (the new one is written beside the old before it replaces it)."""
        st = os.statvfs(self.root)
        free = st.f_bavail * st.f_frsize
        checkpoint = os.path.getsize(self.path(CHECKPOINT)) if self.exists(CHECKPOINT) else 0
        needed = max(min_bytes, 2 * checkpoint)
        if free < needed:
            raise DiskFull("the disk of {} has {:.0f} MiB free, under the {:.0f} MiB the next "
                           "checkpoint needs (min_free_mb): free space, then resume the run".format(
                               self.root, free / 2.0 ** 20, needed / 2.0 ** 20))

    @property
    def resumable(self):
        """A checkpoint and the settings to continue from."""
        return self.exists(CHECKPOINT) and self.exists(CONFIG)

    # --- settings ---------------------------------------------------------------------------------

    def read_config(self):
        if not self.exists(CONFIG):
            raise ConfigError("{} is not a run directory (no {})".format(self.root, CONFIG))
        return SearchConfig.from_dict(self.read_json(CONFIG))

    def write_config(self, config):
        self.write_json(CONFIG, config.to_dict())

    # --- samples ----------------------------------------------------------------------------------

    def samples(self):
        """The stored samples (a last line cut short by an interrupted run is skipped)."""
        if not self.exists(SAMPLES):
            return []
        samples = []
        with open(self.path(SAMPLES)) as f:
            for line in f:
                try:
                    samples.append(json.loads(line))
                except ValueError:
                    continue
        return samples

    def append_sample(self, sample):
        with open(self.path(SAMPLES), "a") as f:
            f.write(json.dumps(sample, sort_keys=True) + "\n")

    def keep_samples_before(self, epoch):
        """Drop the samples of epochs from `epoch` on (an epoch that did not finish)."""
        kept = [s for s in self.samples() if s["epoch"] < epoch]
        with open(self.path(SAMPLES), "w") as f:
            f.writelines(json.dumps(s, sort_keys=True) + "\n" for s in kept)

    # --- checkpoint -------------------------------------------------------------------------------

    def save_checkpoint(self, state):
        import torch  # here: only the worker writes checkpoints
        tmp = self.path(CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path(CHECKPOINT))

    def load_checkpoint(self, map_location):
        """The checkpoint's state, or None if there is none."""
        if not self.exists(CHECKPOINT):
            return None
        import torch
        return torch.load(self.path(CHECKPOINT), map_location=map_location, weights_only=True)

    # --- JSON files -------------------------------------------------------------------------------

    def read_json(self, name):
        with open(self.path(name)) as f:
            return json.load(f)

    def write_json(self, name, data):
        write_json(self.path(name), data)


def write_json(path, data):
    """Write atomically, so an interrupted run never leaves half a file behind."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
