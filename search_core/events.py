"""Where a search reports what it does: JSON lines for machines, progress bars for people.

Every event is a flat JSON object with `event` (its type) and `time` (Unix seconds); the types and
their fields are documented in docs/events.md. The dashboard consumes the JSON-lines stream.
"""
import json
import os
import signal
import sys
import threading
import time

from tqdm import tqdm

from .best import describe

HEARTBEAT_S = 10.0  # a worker's JSON-lines stream is never silent for longer (docs/events.md)


class Events:
    """Base sink: `emit(event_type, **fields)` builds the event and hands it to `write`."""

    def emit(self, event_type, /, **fields):
        event = {"event": event_type, "time": round(time.time(), 3)}
        event.update(fields)
        self.write(event)
        return event

    def write(self, event):
        pass

    def close(self):
        pass


class JsonLinesEvents(Events):
    """One JSON object per line, flushed at once (the stream a dashboard follows). With
    `heartbeat_s`, a `heartbeat` event whenever that long passed without another: the follower's
    sign that the process is alive and its stream flows (a frozen process sends none)."""

    def __init__(self, stream=None, heartbeat_s=None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._closed = threading.Event()
        if heartbeat_s:
            threading.Thread(target=self._beat, args=(heartbeat_s,), name="heartbeat",
                             daemon=True).start()

    def write(self, event):
        line = json.dumps(event, sort_keys=True, allow_nan=False) + "\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()
            self._last = time.monotonic()

    def _beat(self, every_s):
        while not self._closed.wait(every_s / 4.0):
            if time.monotonic() - self._last >= every_s:
                try:
                    self.emit("heartbeat")
                except (OSError, ValueError):
                    # nobody reads the stream any more (its follower died with its node or its
                    # dashboard): a worker whose results reach no one stops, freeing its run
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

    def close(self):
        self._closed.set()


class ConsoleEvents(Events):
    """A progress bar per epoch with live loss, accuracy and expected latency; summaries as text."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None

    def _print(self, text):
        (self.bar or tqdm).write(text, file=self.stream)

    def write(self, event):
        kind = event["event"]
        if kind == "started":
            self._print("Search {run_dir}: {dataset}, {epochs} epochs ({warmup_epochs} warm-up), "
                        "{strategy} strategy on device {device}".format(**event))
            for c in event["constraints"]:
                self._print("  constraint: {metric} <= {target:g} ({form}, w = {weight:g})".format(**c))
        elif kind == "progress":
            self._progress(event)
        elif kind == "epoch":
            self._close_bar()
            self._print(_epoch_line(event))
        elif kind == "generation":
            self._print(_generation_line(event))
        elif kind == "finished":
            self._close_bar()
            self._print(_summary(event))
        elif kind == "failed":
            self._close_bar()
            self._print("error: {}".format(event["error"]))
        elif kind == "message":
            self._print(event["text"])

    def _progress(self, event):
        if self.bar is None or self.bar.desc != _bar_title(event):
            self._close_bar()
            self.bar = tqdm(total=event["steps"], desc=_bar_title(event), file=self.stream,
                            leave=False, dynamic_ncols=True)
        self.bar.update(event["step"] - self.bar.n)
        postfix = {"loss": "{:.3f}".format(event["loss"]), "acc": "{:.1%}".format(event["accuracy"])}
        if event.get("expected_latency_ms") is not None:
            postfix["E[lat]"] = "{:.2f}ms".format(event["expected_latency_ms"])
        self.bar.set_postfix(postfix, refresh=True)

    def _close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self):
        self._close_bar()


def _bar_title(event):
    return "{} epoch {}/{}".format(event["phase"], event["epoch"] + 1, event["epochs"])


def _epoch_line(e):
    line = "epoch {:>3}/{} {:<7} loss {:.3f} train acc {:.1%}".format(
        e["epoch"] + 1, e["epochs"], e["phase"], e["train_loss"], e["train_accuracy"])
    if e.get("argmax") is not None:
        a = e["argmax"]
        line += " | argmax: val acc {:.1%}, {:.2f} ms, E[lat] {:.2f} ms".format(
            a["accuracy"], a["latency_ms"], e["expected_latency_ms"])
    return line + " ({:.0f} s)".format(e["duration_s"])


def _generation_line(e):
    line = "generation {:>3}/{}".format(e["generation"] + 1, e["generations"])
    b = e.get("best")
    if b is not None:
        line += ": best val acc {:.1%}, {:.2f} ms{}".format(
            b["accuracy"], b["latency_ms"], "" if b["feasible"] else " (infeasible)")
    return line + " ({} samples, {:.0f} s)".format(e["samples"], e["duration_s"])


def _summary(e):
    b = e["best"]
    return "\n".join([
        "Best architecture ({}), epoch {}: {}".format(b["arch_hash"][:12], b["epoch"] + 1,
                                                     " ".join(b["ops"])),
        "  shared-weight val accuracy {:.2%}, latency {:.3f} ms (predicted {:.3f} ms), "
        "objective {:.4f}".format(b["accuracy"], b["latency_ms"], b["predicted_latency_ms"],
                                  b["objective"]),
        "  why: {}".format(describe(e.get("why")) or "no search epoch ran: the final argmax"),
        "  {:.3f} M params, {:.1f} M FLOPs (multiply-adds), {:.2f} MiB inference memory".format(
            b["params"] / 1e6, b["macs"] / 1e6, b["memory_mb"]),
        "  {} samples, {} latency measurements ({} from cache), wall time {:.0f} s".format(
            e["samples"], e["measurements"], e["cache_hits"], e["wall_time_s"]),
        "  written: {}".format(e["best_arch_path"]),
    ])
