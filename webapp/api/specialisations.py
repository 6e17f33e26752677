"""Specialising a finished run's trained supernet for new targets, devices and runtimes, training
nothing: create, list, cancel, download the pick."""
from __future__ import annotations

from flask import current_app, jsonify, send_file

from search_core.rundir import CHECKPOINT, RunDirectory
from nano_agent.limits import Limit
from search_core.settings import GENERATIONS, GENERATIONS_LIMIT, setting_errors

from ..cross_devices import CrossTableError, cross_table_dict
from ..extensions import db
from ..ids import is_id
from ..models import Device, DeviceGroup, Run, Specialisation
from ..serialize import specialisation_dict
from ..workers.specialisation import pick_file

from .errors import ApiError, bp, get_row, get_run, json_body
from .validation import integer_error

TARGETS = ("target_latency_ms", "target_memory_mb", "backend")
# a front's targets: fractions of the uniform expectation spread evenly over this range
FRONT_RANGE, FRONT_TARGETS = (0.4, 1.0), Limit(2, 20)
FRONT_DEFAULT = 7  # 40, 50, ... 100%


def front_fractions(count: int) -> list:
    low, high = FRONT_RANGE
    return [round(low + (high - low) * i / (count - 1), 3) for i in range(count)]


def validate_specialisation(run: Run, body: dict) -> dict:
    """The new targets (T in ms, or ``target_latency_fraction`` of the new table's uniform
    expectation; memory; the run's where not given), where to measure (``device_id`` or
    ``group_id``; the run's where neither is given), the runtime (``backend``) and the
    ``generations`` of the evolutionary search, or ApiError(400) per field."""
    errors = {name: "unknown field" for name in sorted(
        set(body) - set(TARGETS) - {"target_latency_fraction", "device_id", "group_id",
                                    "generations"})}
    config = dict(run.config_data or {}, **(run.resolved_data or {}))
    values = {name: body.get(name, config.get(name)) for name in TARGETS}
    if "target_latency_fraction" in body:
        values.update(target_latency_ms=None,
                      target_latency_fraction=body["target_latency_fraction"])
        if "target_latency_ms" in body:
            errors["target_latency_ms"] = "give a T in ms or a target_latency_fraction, not both"
    errors.update(setting_errors(values))
    if not errors.get("target_latency_ms") and values["target_latency_ms"] is None and \
            values.get("target_latency_fraction") is None:
        errors["target_latency_ms"] = "a latency target in ms is required"
    generations = body.get("generations", GENERATIONS)
    if message := integer_error(generations, GENERATIONS_LIMIT):
        errors["generations"] = message
    where = {"device_id": run.device_id, "group_id": run.group_id}
    if "device_id" in body or "group_id" in body:
        where = {"device_id": body.get("device_id"), "group_id": body.get("group_id")}
        errors.update(_where_errors(**where))
    if errors:
        raise ApiError(400, errors=errors)
    if where["group_id"] is not None:  # its first member keeps the group's lookup tables
        where["device_id"] = db.session.get(DeviceGroup, where["group_id"]).devices[0].id
    return dict(values, generations=generations, **where)


def _where_errors(device_id, group_id) -> dict:
    if (device_id is None) == (group_id is None):
        return {"device_id": "give a device (device_id) or a group (group_id) to measure on"}
    if device_id is not None and not (is_id(device_id) and db.session.get(Device, device_id)):
        return {"device_id": "must be the id of a registered device"}
    group = db.session.get(DeviceGroup, group_id) if is_id(group_id) else None
    if group_id is not None and (group is None or not group.devices):
        return {"group_id": "must be the id of a device group with members"}
    return {}


@bp.get("/runs/<id:run_id>/specialisations")
def list_specialisations(run_id):
    return jsonify([specialisation_dict(s) for s in get_run(run_id).specialisations])


@bp.post("/runs/<id:run_id>/specialisations")
def create_specialisation(run_id):
    """Pick from the run's trained supernet for other targets, on another device or runtime: a
    worker of its own, through the queue."""
    run = get_run(run_id)
    _check_specialisable(run)
    specialisation = Specialisation(run_id=run.id, **validate_specialisation(run, json_body()))
    db.session.add(specialisation)
    db.session.flush()
    current_app.extensions["workers"].submit(specialisation)
    return jsonify(specialisation_dict(specialisation)), 201


@bp.post("/runs/<id:run_id>/specialisations/front")
def create_front(run_id):
    """One specialisation per fraction of the new table's uniform expectation: ``fractions``, or
    ``targets`` of them spread evenly over FRONT_RANGE (default FRONT_DEFAULT): the run's picks
    across targets, its specialised front."""
    run = get_run(run_id)
    _check_specialisable(run)
    body = json_body()
    targets = body.pop("targets", None if "fractions" in body else FRONT_DEFAULT)
    if targets is not None:
        if message := integer_error(targets, FRONT_TARGETS):
            raise ApiError(400, errors={"targets": message})
        body["fractions"] = front_fractions(targets)
    fractions = body.pop("fractions")
    if not isinstance(fractions, list) or not 1 <= len(fractions) <= FRONT_TARGETS.high:
        raise ApiError(400, errors={"fractions": "a list of 1 to {} fractions".format(
            FRONT_TARGETS.high)})
    asked = [validate_specialisation(run, dict(body, target_latency_fraction=f))
             for f in fractions]
    created = [Specialisation(run_id=run.id, **values) for values in asked]
    db.session.add_all(created)
    db.session.flush()
    for specialisation in created:
        current_app.extensions["workers"].submit(specialisation)
    return jsonify([specialisation_dict(s) for s in created]), 201


@bp.get("/runs/<id:run_id>/cross_table")
def show_cross_table(run_id):
    """Each pick of the run (its search's and its specialisations') as last measured on every
    device and runtime one of them was picked for."""
    run = get_run(run_id)
    return jsonify(cross_table_dict(run, current_app.extensions["cross_tables"].measuring(run.id)))


@bp.post("/runs/<id:run_id>/cross_table")
def measure_cross_table(run_id):
    """Measure every pick on every device and runtime of the table afresh, side by side, in the
    background; the table comes back at once and, cell by cell, on the run's room."""
    run = get_run(run_id)
    tables = current_app.extensions["cross_tables"]
    try:
        tables.start(run)
    except CrossTableError as e:
        raise ApiError(409, str(e)) from None
    return jsonify(cross_table_dict(run, tables.measuring(run.id))), 202


def _check_specialisable(run: Run):
    if run.status != "finished" or not run.run_dir or \
            not RunDirectory(run.run_dir).exists(CHECKPOINT):
        raise ApiError(409, "run {} is {}: specialise a finished run, whose supernet is "
                            "trained".format(run.id, run.status))


def get_specialisation(specialisation_id) -> Specialisation:
    return get_row(Specialisation, specialisation_id, "specialisation")


@bp.get("/specialisations/<id:specialisation_id>")
def show_specialisation(specialisation_id):
    return jsonify(specialisation_dict(get_specialisation(specialisation_id)))


@bp.post("/specialisations/<id:specialisation_id>/cancel")
def cancel_specialisation(specialisation_id):
    specialisation = get_specialisation(specialisation_id)
    if not specialisation.active:
        raise ApiError(409, "specialisation {} is {}, not running".format(
            specialisation_id, specialisation.status))
    current_app.extensions["workers"].cancel(Specialisation, specialisation_id)
    db.session.expire_all()
    return jsonify(specialisation_dict(get_specialisation(specialisation_id)))


@bp.get("/specialisations/<id:specialisation_id>/best_arch.json")
def specialisation_pick(specialisation_id):
    """The pick's architecture JSON (the builder's input, as a search's best_arch.json)."""
    specialisation = get_specialisation(specialisation_id)
    path = pick_file(specialisation)
    if path is None:
        raise ApiError(404, "specialisation {} has no pick ({})".format(specialisation_id,
                                                                        specialisation.status))
    return send_file(path, as_attachment=True, mimetype="application/json",
                     download_name="run{}_specialisation{}_{:g}ms_best_arch.json".format(
                         specialisation.run_id, specialisation.id,
                         specialisation.target_latency_ms or 0))
