"""Runs: the form's defaults, create (queued), list, show, delete, cancel, resume."""
from __future__ import annotations

import itertools
import os
import shutil

import sqlalchemy as sa
from sqlalchemy.orm import selectinload
from flask import current_app, jsonify

from nano_agent import limits
from search_core.settings import (BUNDLED_DATASETS, GENERATIONS, GENERATIONS_LIMIT, SearchConfig,
                                  describe_settings)
from search_core.rundir import RunDirectory

from ..devices import DeviceError
from ..extensions import db
from ..ids import MAX_ID
from ..models import Device, DeviceGroup, Run
from ..serialize import RESUMABLE, resumable, run_dict

from .devices import PROFILE_DEFAULTS, PROFILE_LIMITS
from .ranking import ARCHITECTURES, CHECK_LIMITS
from .specialisations import FRONT_DEFAULT, FRONT_RANGE, FRONT_TARGETS
from .errors import ApiError, bp, get_run, json_body
from .validation import validate_settings

STOPPING_S = 15.0  # how long a delete waits for a stopped run's worker to record its end


def _run_device(device_id) -> Device:
    """The device of a new run: the one asked for, else the built-in local device."""
    if device_id is None:
        device = db.session.scalars(sa.select(Device).where(Device.kind == "local")).first()
        if device is None:
            raise ApiError(400, errors={"device_id": "no local device: choose a registered device"})
        return device
    device = db.session.get(Device, device_id)
    if device is None:
        raise ApiError(400, errors={"device_id": "no device {}".format(device_id)})
    return device


def _device_address(device: Device) -> str:
    try:
        return current_app.extensions["devices"].address(device)
    except DeviceError as e:
        raise ApiError(409, "device {} cannot be used: {}".format(device.name, e)) from None


def _run_group(group_id) -> DeviceGroup:
    group = db.session.get(DeviceGroup, group_id)
    if group is None or not group.devices:
        raise ApiError(400, errors={"group_id": "no device group {} with devices".format(group_id)})
    return group


@bp.get("/defaults")
def defaults():
    """The forms' defaults, choices and limits (the device side's table, nano_agent/limits.py)."""
    return jsonify(settings=SearchConfig(**current_app.config["RUN_DEFAULTS"]).to_dict(),
                   described=describe_settings(), bundled_datasets=list(BUNDLED_DATASETS),
                   profile={"defaults": PROFILE_DEFAULTS,
                            "limits": {k: {"min": lim.low, "max": lim.high}
                                       for k, (_, lim) in PROFILE_LIMITS.items()}},
                   device_limits=limits.as_dict(), max_id=MAX_ID,
                   specialise={"generations": GENERATIONS, "min": GENERATIONS_LIMIT.low,
                               "max": GENERATIONS_LIMIT.high, "front_targets": FRONT_DEFAULT,
                               "front_min": FRONT_TARGETS.low, "front_max": FRONT_TARGETS.high,
                               "front_range": list(FRONT_RANGE)},
                   ranking_check={"architectures": ARCHITECTURES,
                                  "min": CHECK_LIMITS["architectures"].low,
                                  "max": CHECK_LIMITS["architectures"].high})


@bp.get("/runs")
def list_runs():
    runs = db.session.scalars(sa.select(Run).options(selectinload(Run.best_sample), selectinload(Run.device))
                              .order_by(Run.created_at.desc(), Run.id.desc())).all()
    return jsonify([run_dict(run) for run in runs])


@bp.post("/runs")
def create_run():
    name, device_id, group_id, config = validate_settings(json_body())
    group = _run_group(group_id) if group_id is not None else None
    if group is not None:  # a pool: its members' addresses, one identity (search_core/pool.py)
        device = group.devices[0]  # the member that keeps the group's lookup tables
        config["device"] = ",".join(_device_address(d) for d in group.devices)
        config["device_group"] = group.name
    else:
        device = _run_device(device_id)
        config["device"] = _device_address(device)
    if config["threads"] is None:
        # whatever device measures, the worker trains here: leave the local agent its cores, and
        # share the rest between the runs that may run at once (torch processes on the same
        # cores slow each other down)
        agent = current_app.config["LOCAL_AGENT_THREADS"] if current_app.config["LOCAL_AGENT"] else 0
        spare = (os.cpu_count() or 1) - agent
        config["threads"] = max(1, spare // current_app.config["MAX_RUNS"])
    run = Run(name=name, status="queued", device_id=device.id,
              group_id=group.id if group is not None else None)
    run.config_data = config
    db.session.add(run)
    db.session.flush()
    run.run_dir = _new_run_dir(run.id)
    current_app.extensions["workers"].submit(run)
    return jsonify(run_dict(run, full=True)), 201


def _new_run_dir(run_id: int) -> str:
    """A directory that no run has used, made now: runs/<id>, else runs/<id>-2, -3, ... SQLite
    may give a deleted run's id to a new run (after a lost WAL it did), and a new run in a
    directory that held another's checkpoint resumed that run instead of starting."""
    root = os.path.join(current_app.config["DATA_DIR"], "runs")
    os.makedirs(root, exist_ok=True)
    for n in itertools.count(1):
        path = os.path.join(root, str(run_id) if n == 1 else "{}-{}".format(run_id, n))
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


@bp.get("/runs/<id:run_id>")
def show_run(run_id):
    return jsonify(run_dict(get_run(run_id), full=True))


@bp.delete("/runs/<id:run_id>")
def delete_run(run_id):
    run = get_run(run_id)
    workers = current_app.extensions["workers"]
    # a run cancelled while its worker was being placed is stopped by the placing thread once the
    # executor returns: its end is a moment away, not a reason to refuse
    if run.status == "running" or not workers.wait(Run, run_id, STOPPING_S):
        raise ApiError(409, "run {} is {}: cancel it first".format(run_id, run.status))
    if any(t.active for t in run.trainings):
        raise ApiError(409, "run {} has a retraining in progress: cancel it first".format(run_id))
    if any(s.active for s in run.specialisations):
        raise ApiError(409, "run {} has a specialisation in progress: cancel it first".format(
            run_id))
    run_dir = run.run_dir
    db.session.delete(run)
    db.session.commit()
    runs_root = os.path.join(current_app.config["DATA_DIR"], "runs")
    if run_dir and os.path.dirname(os.path.abspath(run_dir)) == os.path.abspath(runs_root):
        shutil.rmtree(run_dir, ignore_errors=True)  # only a directory the dashboard made
    current_app.extensions["publisher"].deleted(run_id)
    current_app.extensions["workers"].kick()  # the runs queued behind it move up
    return "", 204


@bp.post("/runs/<id:run_id>/cancel")
def cancel_run(run_id):
    run = get_run(run_id)
    if not run.active:
        raise ApiError(409, "run {} is {}, not running".format(run_id, run.status))
    current_app.extensions["workers"].cancel(Run, run_id)
    db.session.expire_all()
    return jsonify(run_dict(get_run(run_id), full=True))


@bp.post("/runs/<id:run_id>/resume")
def resume_run(run_id):
    run = get_run(run_id)
    if not resumable(run):
        raise ApiError(409, "run {} is {}{}: it cannot be resumed".format(
            run_id, run.status, "" if run.status not in RESUMABLE else " without a checkpoint"))
    # a worker that just failed is still exiting
    current_app.extensions["workers"].wait(Run, run_id, 10)
    holder = RunDirectory(run.run_dir).worker_pid()
    if holder is not None:  # e.g. an orphan that did not stop: never two writers
        raise ApiError(409, "a worker (pid {}) still runs on run {}: stop it first".format(
            holder, run_id))
    for device in run.measuring_devices:
        _device_address(device)  # refuse now what would fail in the queue
    current_app.extensions["workers"].submit(run)  # resumed on its device's address at its turn
    return jsonify(run_dict(run, full=True))
