"""Workers that outlived the dashboard process that followed them: found by the lock they hold on
their directory (search_core/rundir.py), and stopped, so that a resumed run is the only writer."""
from __future__ import annotations

import logging
import os
import signal
import socket
import time

from search_core.rundir import RunDirectory

from ..executors import LOST_AFTER_S

log = logging.getLogger(__name__)

TERMINATE_GRACE_S = 5.0


def stop_orphan(directory: str | None, grace_s: float = TERMINATE_GRACE_S) -> int | None:
    """Stop a worker that still holds ``directory`` although no process of this dashboard follows
    it (an earlier dashboard process died, or the Ray node that ran it was lost): its events go
    to a pipe nobody reads, and a resumed run would be a second writer. A worker on another host
    cannot be signalled from here: it stops by itself at its next heartbeat (nobody reads it), so
    that is waited for. Returns its pid, or None if none held the directory."""
    if not directory:
        return None
    files = RunDirectory(directory)
    holder = files.worker()
    if holder is None or not holder[0]:  # no worker, or one that has not written its pid yet
        return None
    pid, host = holder
    if host not in (None, socket.gethostname()):
        if not _released(files, grace_s + LOST_AFTER_S):
            log.error("worker %s on %s still holds %s", pid, host, directory)
        return pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return pid
        if _released(files, wait_s):
            return pid
    log.error("worker %s on %s did not stop", pid, directory)
    return pid


def _released(files: RunDirectory, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while files.worker_pid() is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
