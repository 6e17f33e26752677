"""A pool of identical devices as one latency source: each measurement goes to whichever member is
idle, several at once (`measure_many`), and a member that stops answering hands its measurement to
the others and sits out a while.

The pool has one measuring identity, `group:<name>`: its members are the same hardware, so what one
of them measured stands for all of them (one lookup table, one cache). Only the whole pool being
lost raises `DeviceLost`, which `latency.PatientDevice` then waits out.
"""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .device_client import DeviceLost, backend_suffix

REST_S = 30.0  # how long a member that stopped answering sits out before it is tried again


class Member:
    """One device of a pool and what it did: measurements, losses, busy seconds."""

    def __init__(self, source, address):
        self.source, self.address = source, address
        self.measured = self.lost = 0
        self.busy_s = 0.0
        self.busy = False
        self.resting_until = 0.0

    def stats(self):
        return {"address": self.address, "measured": self.measured, "lost": self.lost,
                "busy_s": round(self.busy_s, 3), "busy": self.busy}


class DevicePool:
    """Latency source over `sources` (one per device, with their `addresses` for people) named
    `name`; `clock` and `rest_s` for tests."""

    def __init__(self, sources, addresses, name, backend="pytorch", rest_s=REST_S,
                 clock=time.monotonic):
        if not sources:
            raise ValueError("a device pool needs at least one device")
        self.members = [Member(s, a) for s, a in zip(sources, addresses)]
        self.device_key = "group:{}{}".format(name, backend_suffix(backend))
        self.rest_s, self.clock = rest_s, clock
        self._idle = list(self.members)
        self._waiting = 0  # calls waiting for an idle member: the pool's queue
        self._changed = threading.Condition()  # guards _idle, _waiting and the members' figures
        self._executor = ThreadPoolExecutor(max_workers=len(self.members),
                                            thread_name_prefix="pool")

    def measure(self, arch, input_shape=None):
        return self._on_a_member(lambda source: source.measure(arch, input_shape))

    def measure_many(self, archs, input_shape=None):
        """Stats of every architecture, in order, measured at once on as many members as are
        idle."""
        return list(self._executor.map(lambda arch: self.measure(arch, input_shape), archs))

    def profile(self, space, progress=None):
        return self._on_a_member(lambda source: source.profile(space, progress))

    def info(self):
        return {"device_id": self.device_key, "members": self.stats()}

    def stats(self):
        """Per member: its address, measurements, losses, busy seconds and whether it measures."""
        return self.snapshot()["members"]

    def snapshot(self):
        """The pool's queue (`pending`: measurements waiting for an idle member) and `members`."""
        with self._changed:
            return {"pending": self._waiting, "members": [m.stats() for m in self.members]}

    def close(self):
        self._executor.shutdown(wait=False)
        for member in self.members:
            close = getattr(member.source, "close", None)
            if close:
                close()

    def _on_a_member(self, call):
        """`call(source)` on an idle member; a member lost during it rests, and the call goes to
        another. DeviceLost once every member has failed it."""
        tried, last_error = set(), None
        while True:
            member = self._take(tried)
            if member is None:
                raise DeviceLost("every device of the pool failed: {}".format(last_error))
            tried.add(id(member))
            started, outcome = self.clock(), "refused"
            try:
                result = call(member.source)
                outcome = "measured"
                return result
            except DeviceLost as e:
                last_error = "{}: {}".format(member.address, e)
                outcome = "lost"
            finally:  # whatever happened (a refusal too), the member is idle again
                self._give_back(member, started, outcome)

    def _take(self, tried):
        """The first idle member not tried yet, preferring those not resting (waiting while the
        ones wanted are busy); None when every member has been tried."""
        with self._changed:
            self._waiting += 1
            try:
                while True:
                    untried = [m for m in self.members if id(m) not in tried]
                    if not untried:
                        return None
                    awake = [m for m in untried if m.resting_until <= self.clock()]
                    idle = [m for m in self._idle if m in (awake or untried)]
                    if idle:
                        self._idle.remove(idle[0])
                        idle[0].busy = True
                        return idle[0]
                    self._changed.wait(0.5)
            finally:
                self._waiting -= 1

    def _give_back(self, member, started, outcome):
        """`outcome`: "measured", "lost" (it rests) or "refused" (a bad request: it stays)."""
        with self._changed:
            member.busy = False
            member.busy_s += self.clock() - started
            if outcome == "lost":
                member.lost += 1
                member.resting_until = self.clock() + self.rest_s
            elif outcome == "measured":
                member.measured += 1
            self._idle.append(member)
            self._changed.notify_all()
