"""A run's cross-device table, ProxylessNAS's specialisation table for the user's own hardware: each
pick of the run (its search's, and each finished specialisation's) measured afresh on every device
and runtime one of them was picked for. "The pick for A, measured on B": does a network picked for
one device run within its T on another, and how much faster is each device's own pick there?

Every cell of one measuring is taken in the same sitting, so a row compares side by side; the
diagonal is each pick measured again after its search. The measuring is the agents' work: a
thread of the dashboard asks each device in turn, as a profile does, and stores every figure as it
comes (``cross_measurements``), publishing the table after each.
"""
from __future__ import annotations

import json
import logging
import threading

import sqlalchemy as sa

from nano_agent.arch import Architecture
from nano_agent.results import latency_ms
from search_core.device_client import AgentDevice, LatencyError
from search_core.settings import SearchConfig

from .devices import CHECK_TIMEOUT_S, DeviceError
from .extensions import db
from .models import CrossMeasurement, Device, Run, utcnow
from .serialize import iso

log = logging.getLogger(__name__)

MEASURE_TIMEOUT_S = 300.0  # one architecture's measurement on a slow device


class CrossTableError(Exception):
    """The table cannot be measured now (too few columns, measuring already)."""


def picks(run: Run) -> list[dict]:
    """The table's rows: the search's pick, then each finished specialisation's, each with its T,
    its architecture and the column it was picked for ((device id, runtime), None where its
    device is gone)."""
    rows = []
    config = dict(run.config_data or {}, **(run.resolved_data or {}))
    if run.best_sample is not None:
        rows.append(_row(None, config.get("target_latency_ms"), run.best_sample.arch_hash,
                         json.loads(run.best_sample.arch_json), _device_of(run),
                         config.get("backend", "pytorch")))
    for specialisation in run.specialisations:
        pick = specialisation.pick_data
        if specialisation.status == "finished" and pick and isinstance(pick.get("arch"), dict):
            rows.append(_row(specialisation.id, specialisation.target_latency_ms,
                             pick["arch_hash"], pick["arch"], specialisation.device_id,
                             specialisation.backend))
    return rows


def _row(specialisation_id, target, arch_hash, arch, device_id, backend) -> dict:
    return {"specialisation_id": specialisation_id, "target_latency_ms": target,
            "arch_hash": arch_hash, "arch": arch,
            "column": None if device_id is None else (device_id, backend)}


def _device_of(run: Run) -> int | None:
    """The device a run measured on: its own, or its group's first member (the one that keeps the
    group's tables, as for a specialisation)."""
    if run.device_id is None and run.group is not None and run.group.devices:
        return run.group.devices[0].id
    return run.device_id


def columns(rows: list[dict]) -> list[tuple]:
    """(device id, runtime) of each device and runtime some pick was picked for, in row order."""
    return list(dict.fromkeys(row["column"] for row in rows if row["column"] is not None))


def cross_table_dict(run: Run, measuring: bool = False) -> dict:
    """The table: its columns, and per pick one cell per column (the latency measured there, its
    ratio to the pick's own T, whether it runs within it; or why it has no figure)."""
    rows = picks(run)
    table_columns = columns(rows)
    stored = {(m.device_id, m.backend, m.arch_hash): m for m in run.cross_measurements}
    return {"run_id": run.id, "measuring": measuring,
            "columns": [{"device_id": device_id, "device": db.session.get(Device, device_id).name,
                         "backend": backend} for device_id, backend in table_columns],
            "rows": [_row_dict(row, table_columns, stored) for row in rows]}


def _row_dict(row: dict, table_columns: list[tuple], stored: dict) -> dict:
    own = row["column"]
    return {"specialisation_id": row["specialisation_id"],
            "target_latency_ms": row["target_latency_ms"], "arch_hash": row["arch_hash"],
            "own_column": None if own is None else table_columns.index(own),
            "cells": [_cell(stored.get(column + (row["arch_hash"],)), row["target_latency_ms"])
                      for column in table_columns]}


def _cell(measurement: CrossMeasurement | None, target: float | None) -> dict | None:
    if measurement is None:
        return None
    latency = measurement.latency_ms
    ratio = latency / target if latency is not None and target else None
    return {"latency_ms": latency, "latency_ratio": ratio,
            "within_target": None if ratio is None else ratio <= 1.0,
            "error": measurement.error, "measured_at": iso(measurement.measured_at)}


class CrossTables:
    """Measures runs' cross-device tables, one thread per run (``app.extensions["cross_tables"]``);
    ``publish(table_dict)`` hears the table after every cell."""

    def __init__(self, app, devices, publish=None):
        self.app, self.devices, self.publish = app, devices, publish
        self._measuring: set[int] = set()
        self._lock = threading.Lock()

    def measuring(self, run_id: int) -> bool:
        with self._lock:
            return run_id in self._measuring

    def start(self, run: Run):
        """Measure every pick of ``run`` on every column of its table, in the background."""
        if len(columns(picks(run))) < 2:
            raise CrossTableError(
                "run {}'s picks were made for one device and runtime: specialise it for another "
                "device or runtime first, then measure each pick on each".format(run.id))
        with self._lock:
            if run.id in self._measuring:
                raise CrossTableError("run {}'s table is being measured".format(run.id))
            self._measuring.add(run.id)
        threading.Thread(target=self._measure, args=(run.id,), name="cross-table-{}".format(run.id),
                         daemon=True).start()

    def _measure(self, run_id: int):
        with self.app.app_context():
            try:
                run = db.session.get(Run, run_id)
                rows = picks(run)
                settings = self._measuring_settings(run)
                for column in columns(rows):
                    self._measure_column(run, column, rows, settings)
            except Exception:  # noqa: BLE001  the dashboard keeps serving
                log.exception("run %s: measuring its cross-device table failed", run_id)
                db.session.rollback()
            finally:
                with self._lock:
                    self._measuring.discard(run_id)
                self._publish(db.session.get(Run, run_id))

    def _measuring_settings(self, run: Run) -> tuple:
        """(warm-up runs, timed runs): the run's, as its search measured."""
        defaults = SearchConfig(**self.app.config["RUN_DEFAULTS"])
        config = run.config_data or {}
        return (config.get("measure_warmup", defaults.measure_warmup),
                config.get("measure_runs", defaults.measure_runs))

    def _measure_column(self, run: Run, column: tuple, rows: list[dict], settings: tuple):
        device_id, backend = column
        archs = {row["arch_hash"]: row["arch"] for row in rows}
        left = list(archs)
        source = None
        try:
            device = db.session.get(Device, device_id)
            host, port = self.devices.address(device).rsplit(":", 1)
            source = AgentDevice(host, int(port), device.token, *settings, backend,
                                 connect_timeout=CHECK_TIMEOUT_S, timeout=MEASURE_TIMEOUT_S,
                                 backoff=(0.5,))
            while left:
                stats = source.measure(Architecture.from_dict(archs[left[0]]))
                self._store(run, column, left.pop(0), stats=stats)
        except (LatencyError, OSError, DeviceError) as e:
            for arch_hash in left:  # the device is not there: every cell left says why
                self._store(run, column, arch_hash, error=str(e))
        finally:
            if source is not None:
                source.close()

    def _store(self, run: Run, column: tuple, arch_hash: str, stats=None, error=None):
        device_id, backend = column
        cell = db.session.scalars(sa.select(CrossMeasurement).filter_by(
            run_id=run.id, device_id=device_id, backend=backend, arch_hash=arch_hash)).first()
        if cell is None:
            cell = CrossMeasurement(run_id=run.id, device_id=device_id, backend=backend,
                                    arch_hash=arch_hash)
            db.session.add(cell)
        cell.stats_data, cell.error = stats, error
        cell.latency_ms = None if stats is None else latency_ms(stats)
        cell.measured_at = utcnow()
        db.session.commit()
        self._publish(run)

    def _publish(self, run: Run | None):
        if self.publish is not None and run is not None:
            db.session.expire(run, ["cross_measurements"])
            self.publish(cross_table_dict(run, self.measuring(run.id)))
